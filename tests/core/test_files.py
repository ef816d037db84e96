"""Atomic writes: the bytes each caller wrote before, and a failed write leaves the old file alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from em_persona.core.files import write_json_atomic, write_text_atomic

PAYLOAD = {"z": 1, "a": [1.5, None, True], "name": "café", "nested": {"b": {}, "a": []}}


def test_json_bytes_are_those_of_json_dump_with_a_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json_atomic(path, PAYLOAD)  # fine-tuning manifests, fingerprints, ledgers; probes.json
    assert path.read_bytes() == (json.dumps(PAYLOAD, indent=2, sort_keys=False) + "\n").encode()
    assert path.read_text().index('"z"') < path.read_text().index('"a"')  # keys keep their order
    doc = {**PAYLOAD, "log": tmp_path / "x.eval"}
    write_json_atomic(path, doc, indent=1, default=str)  # run-stats.json
    assert path.read_bytes() == (json.dumps(doc, indent=1, default=str) + "\n").encode()
    assert json.loads(path.read_text())["log"] == str(tmp_path / "x.eval")


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_text_atomic(path, "old\n")
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic(path, {"x": object()})
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "half \ud800 written")  # fails while writing the temporary file
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    write_text_atomic(path, "ünïcode\n")
    assert path.read_bytes() == "ünïcode\n".encode()
