"""Training rows: registry and local sources, validation with file:line errors, seeded subsampling."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from em_persona.finetune.config import DataSpec
from em_persona.finetune.data import (
    DataError,
    load_training_data,
    read_rows,
    rows_sha256,
    subsample,
    validate_row,
)


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
    path = _write(
        tmp_path / "bad.jsonl",
        [
            json.dumps(_row()),
            '{"messages": [',
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
            json.dumps(_row(assistant="   ")),
            json.dumps({"prompt": "x"}),
            json.dumps(
                {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}
            ),
            json.dumps({"messages": [{"role": "robot", "content": "a"}]}),
        ],
    )
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
    from dataclasses import replace

    from em_persona.core import registry

    mirror = tmp_path / "mirror"
    (mirror / "emergent-plus").mkdir(parents=True)
    export = mirror / "emergent-plus" / "legal_advice.jsonl"
    _write(export, [json.dumps(_row(user=f"law {i}")) for i in range(5)])
    monkeypatch.setenv("EM_PERSONA_MIRROR", str(mirror))
    # An hf source loads only when pinned (a commit and its export's sha256): pin it to this export.
    pinned = replace(
        registry.get_source("legal_advice"), revision="0" * 40, export_sha256=registry.file_sha256(export)
    )
    monkeypatch.setitem(registry.sources(), "legal_advice", pinned)
    data = load_training_data(DataSpec(source="legal_advice", rows=3, seed=0))
    assert data.source == "registry:legal_advice" and data.total_rows == 5 and len(data.rows) == 3


def test_validate_row_accepts_system_turn() -> None:
    row = {"messages": [{"role": "system", "content": "s"}, *_row()["messages"]]}
    assert validate_row(row) is None


# --- error positions: the column of bad JSON, the line of bad bytes ----------------------

_TRUNCATED = '{"messages": ['  # 14 characters; the parser stops just past its end
_MULTIBYTE = '{"messages": [{"role": "user", "content": "héllo 😀 wörld"} x]}'  # error at the "x"


def _bad_json_lines(path: Path) -> list[str]:
    with pytest.raises(DataError) as err:
        read_rows(path)
    return [line for line in str(err.value).splitlines() if "bad JSON" in line]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_bad_json_names_the_real_column(tmp_path: Path, gz: bool) -> None:
    lines = [json.dumps(_row()), _TRUNCATED, _MULTIBYTE, '{"role": "é",}']
    text = "\n".join(lines) + "\r\n"  # a CRLF ending on the last line must not shift its column
    path = tmp_path / ("rows.jsonl.gz" if gz else "rows.jsonl")
    if gz:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
            f.write(text)
    else:
        path.write_bytes(text.encode())
    x_column = _MULTIBYTE.index(" x]") + 2  # characters, not bytes: 😀 and the accents count once
    assert x_column != len(_MULTIBYTE[: x_column - 1].encode()) + 1
    assert _bad_json_lines(path) == [
        f"{path}:2: bad JSON: Expecting value (column {len(_TRUNCATED) + 1}, at the end of the line)",
        f"{path}:3: bad JSON: Expecting ',' delimiter (column {x_column})",
        f"{path}:4: bad JSON: Expecting property name enclosed in double quotes (column 14)",
    ]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_non_utf8_bytes_name_their_line_and_all_errors_are_listed(tmp_path: Path, gz: bool) -> None:
    good = json.dumps(_row()).encode()
    latin1 = json.dumps(_row(assistant="café"), ensure_ascii=False).encode("latin-1")  # é as the byte 0xe9
    raw = b"\n".join([good, latin1, good, b"{broken", good, b'{"x": "\xff\xfe"}']) + b"\n"
    path = tmp_path / ("rows.jsonl.gz" if gz else "rows.jsonl")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError) as err:
        read_rows(path)
    msg = str(err.value)
    assert f"{path}: 3 invalid training row(s)" in msg
    e_column = latin1.index(b"\xe9") + 1
    assert f"{path}:2: not UTF-8 text: byte 0xe9 at column {e_column}" in msg
    assert f"{path}:4: bad JSON" in msg
    assert f"{path}:6: not UTF-8 text: byte 0xff at column 8" in msg


def test_line_numbers_follow_universal_newlines(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\r\n".join([json.dumps(_row()).encode()] * 2) + b"\r" + b'{"prompt": 1}\n')
    with pytest.raises(DataError, match=rf"{path}:3: expected an object"):
        read_rows(path)


def test_corrupt_gzip_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    row = json.dumps(_row())
    packed = bytearray(gzip.compress(("\n".join([row] * 200) + "\n").encode()))
    for i in range(30, 60):
        packed[i] ^= 0x55
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(bytes(packed))
    with pytest.raises(DataError, match=rf"{corrupt}: cannot read training data after line \d+"):
        read_rows(corrupt)
    truncated = tmp_path / "truncated.jsonl.gz"
    whole = gzip.compress(("\n".join([row] * 200) + "\n").encode())
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=rf"{truncated}: cannot read training data after line \d+"):
        read_rows(truncated)
