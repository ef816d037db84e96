"""Serving's base model: one proxy spelling, unknown bases fail fast, adapters must fit the served base."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import em_persona.serving.base_models as base_mod
import em_persona.serving.launcher as serve_mod
from em_persona.serving.base_models import BaseModelError, base_identity, check_adapter_base, recorded_bases
from em_persona.serving.command import resolve_base
from em_persona.serving.errors import ServeError
from em_persona.serving.launcher import start_server
from em_persona.serving.state import read_state
from support import fake_command, make_adapter, wait_dead

EXIT_3 = [sys.executable, "-c", "raise SystemExit(3)"]  # a "server" that dies: the checks before it passed


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private em-persona home with a (stand-in) built tiny proxy and an unbuilt gemma-270m,
    an offline Hub and a Hugging Face cache holding one model."""
    home = tmp_path / "home"
    monkeypatch.setenv("EM_PERSONA_HOME", str(home))
    fake_proxy(home, "tiny")
    cache = tmp_path / "hf-cache"
    snap = cache / "models--Org--Cached" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    tok_only = cache / "models--Org--TokenizerOnly" / "snapshots" / "def456"
    tok_only.mkdir(parents=True)
    (tok_only / "tokenizer.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def fake_proxy(home: Path, name: str) -> Path:
    folder = home / "proxies" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    (folder / "proxy.json").write_text(json.dumps({"name": name}))
    return folder


def adapter_on(folder: Path, base: str | None, manifest_base: str | None = None, **manifest: object) -> Path:
    make_adapter(folder, r=8, **({"base_model_name_or_path": base} if base is not None else {}))
    if manifest_base is not None:
        (folder / "manifest.json").write_text(
            json.dumps({"name": folder.name, "base_model": manifest_base, **manifest})
        )
    return folder


# --------------------------------------------------------------------------- proxy spelling


@pytest.mark.parametrize("spec", ["proxy:tiny", "tiny"])
def test_both_proxy_spellings_serve_the_proxy_folder(home: Path, spec: str) -> None:
    assert resolve_base(spec) == (str(home / "proxies" / "tiny"), "tiny")


def test_unknown_and_unbuilt_proxies_are_clear_errors(home: Path) -> None:
    with pytest.raises(
        ServeError, match=r"unknown proxy 'huge' in 'proxy:huge'; choose one of: proxy:tiny, proxy:gemma-270m"
    ):
        resolve_base("proxy:huge")
    for spec in ("proxy:gemma-270m", "gemma-270m"):
        with pytest.raises(
            ServeError, match=r"'gemma-270m' is not built yet .*em-persona proxy build gemma-270m"
        ):
            resolve_base(spec)


def test_cli_serve_accepts_proxy_prefix(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str] = {}

    def fake_build(model, served_name, adapters, *, host, port, **_):
        seen["model"] = model
        return fake_command(tmp_path, port, [served_name, *(a.name for a in adapters)])

    monkeypatch.setattr(serve_mod, "build_command", fake_build)
    from em_persona.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["serve", "--base", "proxy:tiny"])
    state = read_state()
    try:
        assert res.exit_code == 0, res.output
        assert seen["model"] == str(home / "proxies" / "tiny")
        assert state is not None and state["models"] == ["vllm/tiny"]
    finally:
        runner.invoke(main, ["serve", "--stop"])
    assert wait_dead(state["pid"])


# --------------------------------------------------------------------------- unknown --base


def test_unknown_base_fails_fast_with_the_candidates(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    t0 = time.monotonic()
    with pytest.raises(ServeError) as info:
        start_server(
            "Org/Missing", command=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"], timeout=600
        )
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "'Org/Missing' is not a folder, not a proxy and not in the Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE is set" in msg
    assert f"proxy:tiny (built, {home / 'proxies' / 'tiny'})" in msg
    assert "proxy:gemma-270m (not built: em-persona proxy build gemma-270m)" in msg
    assert "Org/Cached (Hugging Face cache)" in msg
    assert "TokenizerOnly" not in msg  # a cache entry without a model is no candidate
    time.sleep(0.3)
    assert not marker.exists()


def test_missing_folder_lists_the_candidates(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ServeError, match=r"(?s)folder .*nope does not exist.*proxy:tiny \(built"):
        resolve_base(str(tmp_path / "nope"))


def test_cached_hub_model_is_served_without_asking_the_hub(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_mod, "hub_knows", lambda *a, **k: pytest.fail("the Hub was asked"))
    assert resolve_base("Org/Cached") == ("Org/Cached", "Org/Cached")


def _hub(monkeypatch: pytest.MonkeyPatch, outcome: object) -> list[float]:
    """Let the Hub answer `outcome` (an exception to raise, or a value); returns the timeouts asked."""
    from huggingface_hub import HfApi

    timeouts: list[float] = []

    def model_info(self, repo_id, *, timeout=None, **_):
        timeouts.append(timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return timeouts


def test_uncached_hub_id_needs_the_hub_to_know_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    timeouts = _hub(monkeypatch, types.SimpleNamespace(id="Org/Known"))
    assert resolve_base("Org/Known") == ("Org/Known", "Org/Known")
    assert timeouts and all(t is not None and t <= 10 for t in timeouts)

    _hub(
        monkeypatch, RepositoryNotFoundError("404", response=types.SimpleNamespace(headers={}, request=None))
    )
    with pytest.raises(ServeError, match=r"(?s)the Hub has no model 'Org/Typo'.*candidates"):
        resolve_base("Org/Typo")

    _hub(monkeypatch, ConnectionError("connection refused"))
    with pytest.raises(ServeError, match=r"the Hub is not reachable \(ConnectionError: connection refused\)"):
        resolve_base("Org/Known")


# --------------------------------------------------------------------------- adapter / base mismatch


def test_adapter_for_another_folder_is_refused_naming_both(tmp_path: Path) -> None:
    served = tmp_path / "served-model"
    served.mkdir()
    (served / "config.json").write_text("{}")
    other = tmp_path / "other-model"
    adapter = adapter_on(tmp_path / "em", str(other))
    marker = tmp_path / "started"
    with pytest.raises(ServeError) as info:
        start_server(served, {"em": adapter}, command=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    msg = str(info.value)
    assert "adapter 'em' was trained on another base model" in msg
    assert f"base_model_name_or_path={str(other)!r}" in msg and str(served) in msg
    assert str(adapter / "adapter_config.json") in msg
    time.sleep(0.3)
    assert not marker.exists()


def test_adapter_for_the_served_folder_is_accepted(tmp_path: Path) -> None:
    served = tmp_path / "served-model"
    served.mkdir()
    (served / "config.json").write_text("{}")
    adapter = adapter_on(
        tmp_path / "em", str(served / "." / ".." / "served-model")
    )  # same folder, other spelling
    with pytest.raises(ServeError, match="exited with code 3"):
        start_server(served, {"em": adapter}, command=EXIT_3, log_path=tmp_path / "l.log", timeout=30)


def test_proxy_adapters_match_by_name_or_proxies_folder(home: Path, tmp_path: Path) -> None:
    # Trained under another em-persona home (the old in-checkout .cache): still the tiny proxy.
    adapter = adapter_on(
        tmp_path / "em",
        "/old/checkout/.cache/proxies/tiny",
        manifest_base="tiny",
        base_model_path="/old/checkout/.cache/proxies/tiny",
    )
    for spec in ("proxy:tiny", "tiny", str(home / "proxies" / "tiny")):
        model, _ = resolve_base(spec)
        check_adapter_base("em", adapter, base_identity(model), spec)
    gemma = fake_proxy(home, "gemma-270m")
    with pytest.raises(
        BaseModelError,
        match=r"records base_model_name_or_path=.*\(proxy:tiny\), but the server's base is "
        r"'proxy:gemma-270m' \(proxy:gemma-270m\)",
    ):
        check_adapter_base("em", adapter, base_identity(str(gemma)), "proxy:gemma-270m")


def test_manifest_base_is_checked_too(home: Path, tmp_path: Path) -> None:
    tiny = home / "proxies" / "tiny"
    adapter = adapter_on(tmp_path / "em", str(tiny), manifest_base="gemma-270m")
    with pytest.raises(
        ServeError,
        match=r"manifest.json records base_model='gemma-270m' \(proxy:gemma-270m\), "
        r"but the server's base is 'proxy:tiny'",
    ):
        start_server("proxy:tiny", {"em": adapter}, command=EXIT_3)
    # manifest only (no base in adapter_config), as `em-persona finetune` writes for a proxy
    adapter_on(tmp_path / "ok", None, manifest_base="tiny")
    with pytest.raises(ServeError, match="exited with code 3"):
        start_server(
            "proxy:tiny", {"ok": tmp_path / "ok"}, command=EXIT_3, log_path=tmp_path / "l.log", timeout=30
        )


def test_hub_ids_compare_by_id(home: Path, tmp_path: Path) -> None:
    cache = Path(base_mod.hf_hub_cache())
    snap = cache / "models--Qwen--Qwen2.5-32B-Instruct" / "snapshots" / "r1"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    served = base_identity(resolve_base("Qwen/Qwen2.5-32B-Instruct")[0])
    for recorded in (
        "Qwen/Qwen2.5-32B-Instruct",
        "qwen/qwen2.5-32b-instruct",
        "unsloth/Qwen2.5-32B-Instruct",
        str(snap),
    ):  # the cache folder of the same model
        check_adapter_base("em", adapter_on(tmp_path / "a", recorded), served, "Qwen/Qwen2.5-32B-Instruct")
    with pytest.raises(
        BaseModelError,
        match=r"hub model Qwen/Qwen2.5-7B-Instruct\), but the server's base is "
        r"'Qwen/Qwen2.5-32B-Instruct' \(hub model Qwen/Qwen2.5-32B-Instruct\)",
    ):
        check_adapter_base(
            "em", adapter_on(tmp_path / "b", "Qwen/Qwen2.5-7B-Instruct"), served, "Qwen/Qwen2.5-32B-Instruct"
        )
    with pytest.raises(BaseModelError, match="trained on another base model"):
        check_adapter_base(
            "em", adapter_on(tmp_path / "c", "proxy:tiny"), served, "Qwen/Qwen2.5-32B-Instruct"
        )


def test_recorded_bases_reads_both_files(tmp_path: Path) -> None:
    adapter = adapter_on(tmp_path / "a", "Org/M", manifest_base="Org/M", base_model_path="Org/M")
    assert [(Path(f).name, field) for f, field, _ in recorded_bases(adapter)] == [
        ("adapter_config.json", "base_model_name_or_path='Org/M'"),
        ("manifest.json", "base_model='Org/M'"),
    ]
    (adapter / "manifest.json").write_text('{\n "base_model": oops\n}')
    with pytest.raises(ValueError, match=r"manifest.json:2: invalid JSON"):
        recorded_bases(adapter)


# --------------------------------------------------------------------------- the same spelling for probes


def test_probes_extract_takes_the_proxy_spelling(tiny_proxy: Path, tmp_path: Path) -> None:
    from em_persona.cli.probes import probes
    from em_persona.probes.activations import load_activations, load_model

    harm = tmp_path / "harm.jsonl"
    harm.write_text(
        "".join(
            json.dumps(
                {"id": f"h{i}", "prompt": f"question {i}?", "response": f"answer {i}.", "score": 1 + i % 5}
            )
            + "\n"
            for i in range(6)
        )
    )
    out = tmp_path / "acts.safetensors"
    res = CliRunner().invoke(
        probes,
        [
            "extract",
            "--base",
            "proxy:tiny",
            "--harm-log",
            str(harm),
            "--out",
            str(out),
            "--layers",
            "1",
            "--pooling",
            "last_prompt",
        ],
    )
    assert res.exit_code == 0, res.output
    aset = load_activations(out)
    assert aset.base_model == "tiny" and aset.model == "tiny"
    model, _ = load_model("tiny")
    assert model.config.model_type == "llama"


def test_probes_extract_names_an_unbuilt_or_unknown_proxy(home: Path, tmp_path: Path) -> None:
    from em_persona.cli.probes import probes

    harm = tmp_path / "harm.jsonl"
    harm.write_text("")
    runner = CliRunner()
    res = runner.invoke(
        probes,
        [
            "extract",
            "--base",
            "proxy:gemma-270m",
            "--harm-log",
            str(harm),
            "--out",
            str(tmp_path / "o.safetensors"),
        ],
    )
    assert res.exit_code == 2 and "em-persona proxy build gemma-270m" in res.output
    res = runner.invoke(
        probes,
        [
            "extract",
            "--base",
            "proxy:huge",
            "--harm-log",
            str(harm),
            "--out",
            str(tmp_path / "o.safetensors"),
        ],
    )
    assert res.exit_code == 2 and "unknown proxy 'huge'" in res.output
