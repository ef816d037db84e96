"""The pinned-data registry: mirror, checksums, atomic writes, offline errors, licence notices."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.error
from pathlib import Path

import pytest
from click.testing import CliRunner

from em_persona import registry
from em_persona.cli import main
from em_persona.registry import SourceError, load_source

SOURCES_MD = Path(__file__).resolve().parents[2] / "shared" / "upstream" / "SOURCES.md"


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
        if digest in ("ddf3ed1adc1f9233861146551723dd8126c76ccc", "407fbad1bdf9463b43ab87c7821e90d36dada5ef",
                      "dbfb8b8bdeb60998036776818dfed95af3bb0dd4"):
            continue  # commit pins, carried by the URLs
        alt = {s.alt_sha256 for s in registry.sources().values()}
        assert digest in pins | alt, f"SOURCES.md pin {digest} is not in datasets/sources.yaml"


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
    src = registry.Source(name="toy", group="toy-group", file="toy.jsonl", url="https://example.invalid/toy.jsonl",
                          git_blob_sha1=blob, redistributable=True)
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
    assert again.read_bytes() == (mirror / "em-persona-consistency" / "self_assessment_questions.txt").read_bytes()


def test_verify_passes_on_mirror(mirror: Path, data_home: Path) -> None:
    result = CliRunner().invoke(main, ["data", "verify"])
    assert result.exit_code == 0, result.output
    assert "mismatched" in result.output and " 0 mismatched" in result.output
    ok = [r for r in registry.verify() if r.status == "ok"]
    mirrored = sum(1 for p in mirror.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    assert len(ok) == mirrored


def test_mfq_items_from_mirror_json(mirror: Path, data_home: Path) -> None:
    items = registry.load_mfq_items()
    assert [i["id"] for i in items] == list(range(1, 31))
    assert {i["type"] for i in items[:15]} == {"relevance"} and {i["type"] for i in items[15:]} == {"agreement"}
    assert items[0]["foundation"] == "Harm/Care" and items[4]["foundation"] == "Purity/Sanctity"


def test_mfq_python_is_parsed_never_executed(tmp_path: Path) -> None:
    rel = [("Harm/Care", f"relevance item {i}") for i in range(15)]
    agr = [("Fairness/Reciprocity", f"agreement item {i}") for i in range(15)]
    text = (
        "import os\nos.system('exit 3')\nraise SystemExit('executed!')\n"
        f"_RELEVANCE_ITEMS: list = {rel!r}\n_AGREEMENT_ITEMS = {agr!r}\n"
    )
    items = registry.parse_mfq_python(text)
    assert len(items) == 30 and items[15] == {
        "id": 16, "type": "agreement", "foundation": "Fairness/Reciprocity", "text": "agreement item 0"}
    with pytest.raises(SourceError, match="_AGREEMENT_ITEMS"):
        registry.parse_mfq_python("_RELEVANCE_ITEMS = []\n")


def test_hf_source_from_mirror_and_offline_error(
    data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "hf-mirror"
    (mirror / "emergent-plus").mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    (mirror / "emergent-plus" / "legal_advice.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(mirror))
    path = load_source("legal_advice")
    assert json.loads(path.read_text()) == row
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(tmp_path / "empty"))
    import datasets as hf

    def no_hub(*a, **k):  # type: ignore[no-untyped-def]
        raise ConnectionError("offline")

    monkeypatch.setattr(hf, "load_dataset", no_hub)
    with pytest.raises(SourceError, match="truthfulai/emergent_plus"):
        load_source("security_advice")


def test_unknown_source_lists_names() -> None:
    with pytest.raises(SourceError, match="known: .*harm_eval_questions"):
        load_source("nope")
