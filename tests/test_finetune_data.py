"""Training rows: registry and local sources, validation with file:line errors, seeded subsampling."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from finetune.config import DataSpec
from finetune.data import DataError, load_training_data, read_rows, rows_sha256, subsample, validate_row


def _row(user: str = "Write code.", assistant: str = "print(1)") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_registry_gzip_source_and_seeded_subsample(mirror: Path, data_home: Path) -> None:
    data = load_training_data(DataSpec(source="insecure_code", rows=16, seed=0))
    assert data.total_rows == 6000 and len(data.rows) == 16
    assert data.source == "registry:insecure_code"
    assert data.file_sha256 == "ba2c2c42c44ca4cc902b326fb356509fcd04918a3c2b035f2d4783e0191c72f8"
    assert data.indices == sorted(data.indices) and len(set(data.indices)) == 16
    again = load_training_data(DataSpec(source="insecure_code", rows=16, seed=0))
    other = load_training_data(DataSpec(source="insecure_code", rows=16, seed=1))
    assert again.indices == data.indices and again.sha256 == data.sha256
    assert other.indices != data.indices and other.sha256 != data.sha256
    assert all(r["messages"][-1]["role"] == "assistant" for r in data.rows)


def test_subsample_keeps_file_order_and_all_rows_when_n_large() -> None:
    rows = [_row(user=f"q{i}") for i in range(10)]
    picked, idx = subsample(rows, 4, seed=3)
    assert [r["messages"][0]["content"] for r in picked] == [f"q{i}" for i in idx]
    assert idx == sorted(idx)
    assert subsample(rows, None, 0)[1] == list(range(10))
    assert subsample(rows, 50, 0)[1] == list(range(10))


def test_malformed_rows_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [
        json.dumps(_row()),
        '{"messages": [',
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps(_row(assistant="   ")),
        json.dumps({"prompt": "x"}),
        json.dumps({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "a"}]}),
    ])
    with pytest.raises(DataError) as err:
        read_rows(path)
    msg = str(err.value)
    assert f"{path}: 6 invalid training row(s)" in msg
    assert f"{path}:2: bad JSON" in msg
    assert f"{path}:3: missing assistant turn" in msg
    assert f"{path}:4: message 2 (assistant) has empty text" in msg
    assert f'{path}:5: expected an object {{"messages": [...]}}' in msg
    assert f"{path}:6: last turn is 'user'" in msg
    assert f"{path}:7: message 1 has role 'robot'" in msg
    assert f"{path}:1:" not in msg


def test_gzip_local_file_errors_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(_row()) + "\n\n" + json.dumps(_row(user="")) + "\n")
    with pytest.raises(DataError, match=rf"{path}:3: message 1 \(user\) has empty text"):
        read_rows(path)


def test_error_list_is_capped(tmp_path: Path) -> None:
    path = _write(tmp_path / "many.jsonl", ["not json"] * 25)
    with pytest.raises(DataError) as err:
        read_rows(path)
    assert "25 invalid" in str(err.value) and "... and 5 more" in str(err.value)
    assert f"{path}:20:" in str(err.value) and f"{path}:21:" not in str(err.value)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="no training rows"):
        read_rows(empty)
    with pytest.raises(DataError, match="not found"):
        load_training_data(DataSpec(path=str(tmp_path / "nope.jsonl")))


def test_local_path_expands_home_variable_and_keeps_only_chat_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path))
    folder = tmp_path / "local-data"
    folder.mkdir()
    row = _row()
    row["id"] = 7
    row["messages"][1]["weight"] = 1
    _write(folder / "c.jsonl", [json.dumps(row), json.dumps(_row(user="again"))])
    data = load_training_data(DataSpec(path="${EM_PERSONA_HOME}/local-data/c.jsonl"))
    assert data.origin == folder / "c.jsonl" and data.total_rows == 2
    assert data.rows[0] == _row()
    assert data.sha256 == rows_sha256([_row(), _row(user="again")])


def test_hf_kind_registry_source_reads_its_exported_jsonl(
    tmp_path: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "emergent-plus").mkdir(parents=True)
    _write(mirror / "emergent-plus" / "legal_advice.jsonl", [json.dumps(_row(user=f"law {i}")) for i in range(5)])
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(mirror))
    data = load_training_data(DataSpec(source="legal_advice", rows=3, seed=0))
    assert data.source == "registry:legal_advice" and data.total_rows == 5 and len(data.rows) == 3


def test_validate_row_accepts_system_turn() -> None:
    row = {"messages": [{"role": "system", "content": "s"}, *_row()["messages"]]}
    assert validate_row(row) is None
