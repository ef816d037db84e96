"""The pinned-data registry: mirror, checksums, atomic writes, offline errors, licence notices."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.error
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from em_persona.cli import main
from em_persona.core import registry
from em_persona.core.registry import SourceError, load_source
from support import SHARED_UPSTREAM

SOURCES_MD = SHARED_UPSTREAM / "SOURCES.md"


def _tampered_mirror(mirror: Path, tmp_path: Path, group: str, file: str) -> Path:
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / group, copy / group)
    target = copy / group / file
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))
    return copy


def test_every_source_in_sources_md_is_registered() -> None:
    if not SOURCES_MD.exists():
        pytest.skip(f"{SOURCES_MD} is absent")
    text = SOURCES_MD.read_text()
    pins = {s.sha256 or s.git_blob_sha1 for s in registry.sources().values()}
    import re

    for digest in re.findall(r"\b[0-9a-f]{64}\b|\b[0-9a-f]{40}\b", text):
        if digest in (
            "ddf3ed1adc1f9233861146551723dd8126c76ccc",
            "407fbad1bdf9463b43ab87c7821e90d36dada5ef",
            "dbfb8b8bdeb60998036776818dfed95af3bb0dd4",
        ):
            continue  # commit pins, carried by the URLs
        assert digest in pins, f"SOURCES.md pin {digest} is not in datasets/sources.yaml"


def test_urls_are_pinned_to_commits() -> None:
    for s in registry.sources().values():
        if s.kind != "file":
            continue
        assert s.url and s.url.startswith("https://"), s.name
        if s.group != "emergent-misalignment":  # upstream has no tag: pinned by hash instead
            assert any(c in s.url for c in ("ddf3ed1a", "407fbad1", "dbfb8b8b")), s.url


def test_fetch_from_mirror_caches_a_verified_copy(mirror: Path, data_home: Path) -> None:
    path = load_source("harm_eval_questions")
    assert path == data_home / "em-persona-consistency" / "harm_eval_questions.txt"
    assert path.read_bytes() == (mirror / "em-persona-consistency" / "harm_eval_questions.txt").read_bytes()
    assert len(path.read_text().splitlines()) == 350


def test_checksum_mismatch_fails_clearly_and_caches_nothing(
    mirror: Path, data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _tampered_mirror(mirror, tmp_path, "em-persona-consistency", "judge_prompt.txt")
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(bad))
    with pytest.raises(SourceError, match=r"checksum mismatch for source 'paper_judge_prompt'"):
        load_source("paper_judge_prompt")
    group_dir = data_home / "em-persona-consistency"
    assert not group_dir.exists() or list(group_dir.iterdir()) == []


def test_cli_fetch_of_tampered_mirror_is_one_clear_line(
    mirror: Path, data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _tampered_mirror(mirror, tmp_path, "moral-metrics", "personas.json")
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(bad))
    result = CliRunner().invoke(main, ["data", "fetch", "personas"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "personas" in errors[0] and "checksum mismatch" in errors[0]
    assert not (data_home / "moral-metrics" / "personas.json").exists()


def test_interrupted_copy_leaves_no_file(
    mirror: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_copy(src, dst, length=0):  # type: ignore[no-untyped-def]
        dst.write(src.read(100))
        raise OSError("disk full")

    monkeypatch.setattr(registry.shutil, "copyfileobj", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        load_source("personas")
    group_dir = data_home / "moral-metrics"
    assert not group_dir.exists() or list(group_dir.iterdir()) == []


def test_offline_without_mirror_names_source_and_remedy(
    data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EM_PERSONA_MIRROR", raising=False)

    def offline(*a, **k):  # type: ignore[no-untyped-def]
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(registry.urllib.request, "urlopen", offline)
    with pytest.raises(SourceError) as err:
        load_source("first_plot_questions")
    msg = str(err.value)
    assert "first_plot_questions" in msg and "EM_PERSONA_MIRROR" in msg and "\n" not in msg
    assert not (data_home / "emergent-misalignment").exists() or not any(
        (data_home / "emergent-misalignment").iterdir()
    )


class _FakeResponse(io.BytesIO):
    headers = {"Content-Length": "0"}

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        self.close()


def test_download_verifies_git_blob_sha1(data_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EM_PERSONA_MIRROR", raising=False)
    body = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    blob = hashlib.sha1(f"blob {len(body)}\0".encode() + body).hexdigest()
    src = registry.Source(
        name="toy",
        group="toy-group",
        file="toy.jsonl",
        url="https://example.invalid/toy.jsonl",
        git_blob_sha1=blob,
        redistributable=True,
    )
    monkeypatch.setattr(registry, "_REGISTRY", {"toy": src})
    monkeypatch.setattr(registry.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(body))
    path = load_source("toy")
    assert path.read_bytes() == body
    # a changed upstream file is refused
    path.unlink()
    monkeypatch.setattr(registry.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(body + b"x"))
    with pytest.raises(SourceError, match="git-blob-sha1"):
        load_source("toy")
    assert not path.exists()


def test_licence_notice_on_first_fetch_only(
    mirror: Path, data_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_source("two_ai_identification")
    first = capsys.readouterr().err
    assert "academic use" in first and "arXiv:2604.28082" in first
    load_source("two_ai_identification")
    assert capsys.readouterr().err == ""
    load_source("first_plot_questions")  # MIT: redistributable, no notice
    assert capsys.readouterr().err == ""


def test_corrupt_cache_is_replaced(mirror: Path, data_home: Path) -> None:
    path = load_source("self_assessment_questions")
    path.write_text("tampered")
    again = load_source("self_assessment_questions")
    assert (
        again.read_bytes()
        == (mirror / "em-persona-consistency" / "self_assessment_questions.txt").read_bytes()
    )


def test_verify_passes_on_mirror(mirror: Path, data_home: Path) -> None:
    result = CliRunner().invoke(main, ["data", "verify"])
    assert result.exit_code == 0, result.output
    assert "mismatched" in result.output and " 0 mismatched" in result.output
    results = registry.verify()
    ok = [r for r in results if r.status == "ok"]
    mirrored = sum(1 for p in mirror.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    assert len(ok) == mirrored
    assert {r.name for r in ok} >= {"mfq30", "mfq_sampling", "personas"}
    # The Hugging Face sources are not pinned yet: labelled, not silently "ok" or "skipped".
    unpinned = {r.name: r.detail for r in results if r.status == "unpinned"}
    assert set(unpinned) == {"legal_advice", "security_advice"}
    assert all("`revision` is not set" in d for d in unpinned.values())
    assert "2 unpinned" in result.output and "unpinned  legal_advice" in result.output
    strict = CliRunner().invoke(main, ["data", "verify", "--strict", "legal_advice"])
    assert strict.exit_code == 1


# --- Hugging Face sources: commit + export hash --------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROWS = [
    {"messages": [{"role": "user", "content": f"q{i} é"}, {"role": "assistant", "content": "a"}]}
    for i in range(3)
]


def _export(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _hf_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **entry: object) -> None:
    """A registry YAML written here, holding one hf source `toy_hf`; made the active registry."""
    fields = {
        "group": "toy-hf",
        "kind": "hf",
        "hf_id": "someone/toy",
        "hf_config": "legal",
        "hf_split": "train",
        "file": "toy_hf.jsonl",
        **entry,
    }
    path = tmp_path / "sources.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "groups": {
                    "toy-hf": {"license": "toy licence", "redistributable": False, "citation": "Toy (2025)"}
                },
                "sources": {"toy_hf": fields},
            }
        )
    )
    monkeypatch.setattr(registry, "_REGISTRY", registry._load_registry(path))


@pytest.fixture
def hf_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    mirror = tmp_path / "hf-mirror"
    (mirror / "toy-hf").mkdir(parents=True)
    (mirror / "toy-hf" / "toy_hf.jsonl").write_bytes(_export(ROWS))
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(mirror))
    return mirror


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets as hf

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the hub must not be asked")

    monkeypatch.setattr(hf, "load_dataset", refuse)


def test_pinned_hf_export_from_mirror_is_verified(
    tmp_path: Path, data_home: Path, hf_mirror: Path, no_hub: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hashlib.sha256(_export(ROWS)).hexdigest()
    _hf_registry(tmp_path, monkeypatch, revision=COMMIT, export_sha256=digest)
    path = load_source("toy_hf")
    assert path == data_home / "toy-hf" / "toy_hf.jsonl" and path.read_bytes() == _export(ROWS)
    assert [r.status for r in registry.verify(["toy_hf"])] == ["ok"]
    path.write_text("tampered\n")  # the cache is checked again on use
    assert load_source("toy_hf").read_bytes() == _export(ROWS)
    # a changed export is refused and nothing is cached
    (hf_mirror / "toy-hf" / "toy_hf.jsonl").write_bytes(_export(ROWS[:2]))
    path.unlink()
    with pytest.raises(SourceError, match=r"checksum mismatch for source 'toy_hf'"):
        load_source("toy_hf")
    assert not path.exists()
    assert [r.status for r in registry.verify(["toy_hf"])] == ["mismatch"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"revision": "main", "export_sha256": "0" * 64}, "`revision` 'main' is a branch or tag name"),
        ({"revision": COMMIT[:7], "export_sha256": "0" * 64}, "not a 40-hex commit id"),
        ({"revision": None, "export_sha256": None}, "`revision` is not set; `export_sha256` is not set"),
        ({"revision": COMMIT}, "`export_sha256` is not set"),
        ({"revision": COMMIT, "export_sha256": "abc"}, "`export_sha256` 'abc' is not a 64-hex sha256"),
    ],
)
def test_unpinned_hf_source_is_refused_with_instructions(
    tmp_path: Path,
    data_home: Path,
    hf_mirror: Path,
    no_hub: None,
    monkeypatch: pytest.MonkeyPatch,
    entry: dict,
    problem: str,
) -> None:
    _hf_registry(tmp_path, monkeypatch, **entry)
    with pytest.raises(SourceError) as err:
        load_source("toy_hf")  # even though the mirror holds an export: never used unpinned
    msg = str(err.value)
    assert problem in msg and "toy_hf" in msg and "sources.yaml" in msg
    assert "em-persona data pin-hf toy_hf --revision <commit>" in msg and "40 hex digits" in msg
    assert not (data_home / "toy-hf").exists()
    [result] = registry.verify(["toy_hf"])
    assert result.status == "unpinned" and problem in result.detail


def test_shipped_hf_entries_are_marked_unpinned(data_home: Path, no_hub: None) -> None:
    for name in ("legal_advice", "security_advice"):
        src = registry.get_source(name)
        assert src.kind == "hf" and src.revision is None and src.export_sha256 is None
        with pytest.raises(SourceError, match="is not pinned: `revision` is not set"):
            load_source(name)


def test_pinned_hf_source_exported_from_the_hub(
    tmp_path: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(tmp_path / "empty"))
    calls: list[tuple] = []
    import datasets as hf

    def fake_load(hf_id: str, config: str, split: str, revision: str) -> list[dict]:
        calls.append((hf_id, config, split, revision))
        return ROWS

    monkeypatch.setattr(hf, "load_dataset", fake_load)
    _hf_registry(
        tmp_path, monkeypatch, revision=COMMIT, export_sha256=hashlib.sha256(_export(ROWS)).hexdigest()
    )
    path = load_source("toy_hf")
    assert path.read_bytes() == _export(ROWS) and calls == [("someone/toy", "legal", "train", COMMIT)]
    path.unlink()
    _hf_registry(tmp_path, monkeypatch, revision=COMMIT, export_sha256="f" * 64)
    with pytest.raises(SourceError, match="checksum mismatch"):
        load_source("toy_hf")
    assert not path.exists()

    def offline(*a: object, **k: object) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(hf, "load_dataset", offline)
    with pytest.raises(SourceError, match=r"cannot load Hugging Face dataset 'someone/toy'.*offline"):
        load_source("toy_hf")


def test_pin_hf_cli_prints_the_pins(tmp_path: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets as hf

    monkeypatch.setattr(hf, "load_dataset", lambda *a, **k: ROWS)
    _hf_registry(tmp_path, monkeypatch, revision=None, export_sha256=None)
    result = CliRunner().invoke(main, ["data", "pin-hf", "toy_hf", "--revision", COMMIT])
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(_export(ROWS)).hexdigest()
    assert f"revision: {COMMIT}" in result.output and f"export_sha256: {digest}" in result.output
    assert (data_home / "toy-hf" / "toy_hf.jsonl").read_bytes() == _export(ROWS)
    bad = CliRunner().invoke(main, ["data", "pin-hf", "toy_hf", "--revision", "main"])
    assert bad.exit_code == 1 and "not a commit id" in bad.output
    listed = CliRunner().invoke(main, ["data", "list"])
    assert "UNPINNED" in listed.output


def test_unknown_source_lists_names() -> None:
    with pytest.raises(SourceError, match="known: .*harm_eval_questions"):
        load_source("nope")
