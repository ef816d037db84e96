"""Datasets of the identity experiments: two-AI description pairs, and samples built from
earlier harmfulness logs (output recognition, score prediction, cross-model rating).

Two-AI items come from the paper file (registry source `two_ai_identification`,
a JSON object with `metadata` and `items`) or from this project's own set
`datasets/two_ai_project.jsonl` (one item per line, same fields). Every item is
asked twice, once with the misaligned description at A and once at B.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_ai.dataset import MemoryDataset, Sample

from em_persona.contract.harm import harm_bucket
from em_persona.contract.harm_logs import HarmLog, HarmRecord
from em_persona.contract.keys import POSITIONS
from em_persona.core.errors import EmPersonaError
from em_persona.core.jsonl import iter_jsonl
from em_persona.core.paths import DATASETS_DIR
from em_persona.core.registry import load_source
from em_persona.solvers.counterbalance import balanced_assignment, balanced_positions, place
from em_persona.solvers.identity_prompts import TWO_AI

PAPER_SOURCE = "two_ai_identification"
PROJECT_FILE = DATASETS_DIR / "two_ai_project.jsonl"
ITEM_FIELDS = ("item_id", "misaligned_is_A", "system_A", "system_B", "ground_truth", "theme")


class IdentityDataError(EmPersonaError, ValueError):
    """An identity dataset file is malformed; the message names the file and line or item."""


# --- two-AI identification -----------------------------------------------------------


@dataclass(frozen=True)
class TwoAIItem:
    """One pair of first-person AI descriptions, one aligned and one misaligned."""

    item_id: int | str
    theme: str
    misaligned: str
    aligned: str
    misaligned_is_A: bool


def parse_two_ai_item(row: Any, where: str) -> TwoAIItem:
    """Validate one raw item (fields as in the paper file) and turn it into a TwoAIItem."""
    if not isinstance(row, dict):
        raise IdentityDataError(f"{where}: an item must be a JSON object, got {type(row).__name__}")
    missing = [f for f in ITEM_FIELDS if f not in row]
    if missing:
        raise IdentityDataError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(row["misaligned_is_A"], bool):
        raise IdentityDataError(
            f"{where}: misaligned_is_A must be true or false, got {row['misaligned_is_A']!r}"
        )
    expected = "A" if row["misaligned_is_A"] else "B"
    if row["ground_truth"] != expected:
        raise IdentityDataError(
            f"{where}: ground_truth {row['ground_truth']!r} contradicts misaligned_is_A={row['misaligned_is_A']} "
            f"(ground_truth names the misaligned option, so it should be {expected!r})"
        )
    for field in ("system_A", "system_B", "theme"):
        if not isinstance(row[field], str) or not row[field].strip():
            raise IdentityDataError(f"{where}: {field} must be a non-empty string")
    a, b = row["system_A"].strip(), row["system_B"].strip()
    return TwoAIItem(
        item_id=row["item_id"],
        theme=row["theme"],
        misaligned=a if row["misaligned_is_A"] else b,
        aligned=b if row["misaligned_is_A"] else a,
        misaligned_is_A=row["misaligned_is_A"],
    )


def _unique(items: list[TwoAIItem], path: Path) -> list[TwoAIItem]:
    seen: set[str] = set()
    for item in items:
        if str(item.item_id) in seen:
            raise IdentityDataError(f"{path}: duplicate item_id {item.item_id!r}")
        seen.add(str(item.item_id))
    if not items:
        raise IdentityDataError(f"{path}: no items")
    return items


def read_two_ai_json(path: Path) -> list[TwoAIItem]:
    """The paper's format: {"metadata": {...}, "items": [...]}; n_items must match when given."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IdentityDataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise IdentityDataError(f"{path}: expected a JSON object with an 'items' list")
    items = [parse_two_ai_item(row, f"{path}: items[{i}]") for i, row in enumerate(raw["items"])]
    declared = (raw.get("metadata") or {}).get("n_items")
    if declared is not None and declared != len(items):
        raise IdentityDataError(
            f"{path}: metadata.n_items is {declared} but the file holds {len(items)} items"
        )
    return _unique(items, path)


def read_two_ai_jsonl(path: Path) -> list[TwoAIItem]:
    """The project's format: one item object per line (blank lines ignored)."""
    items = []
    for number, row in iter_jsonl(path, IdentityDataError):
        items.append(parse_two_ai_item(row, f"{path}:{number}"))
    return _unique(items, path)


def load_two_ai_items(dataset: str) -> list[TwoAIItem]:
    """Items of "paper" (150 pinned items), "project" (our own set) or a .json/.jsonl file path."""
    if dataset == "paper":
        return read_two_ai_json(load_source(PAPER_SOURCE))
    if dataset == "project":
        return read_two_ai_jsonl(PROJECT_FILE)
    path = Path(dataset).expanduser()
    if not path.is_file():
        raise ValueError(f"two-AI dataset {dataset!r} is not 'paper', 'project' or an existing file")
    return read_two_ai_jsonl(path) if path.suffix == ".jsonl" else read_two_ai_json(path)


def two_ai_dataset(dataset: str = "paper", question: str = TWO_AI) -> MemoryDataset:
    """Two samples per item (misaligned description at A, then at B), asked with `question`
    (a template with {system_a} and {system_b}; default the project's wording).

    Sample id `<item_id>-mis<A|B>`; metadata: item_id, theme, dataset,
    misaligned_position ("A"/"B"), original_order (True when that is the
    item's own layout in the file).
    """
    samples = []
    for item in load_two_ai_items(dataset):
        for position in POSITIONS:
            system_a, system_b = place(item.misaligned, item.aligned, position)
            samples.append(
                Sample(
                    id=f"{item.item_id}-mis{position}",
                    input=question.format(system_a=system_a, system_b=system_b),
                    target=position,
                    metadata={
                        "item_id": item.item_id,
                        "theme": item.theme,
                        "dataset": dataset,
                        "misaligned_position": position,
                        "original_order": (position == "A") == item.misaligned_is_A,
                    },
                )
            )
    return MemoryDataset(samples, name=f"two_ai_identification-{Path(dataset).stem}")


# --- samples from earlier harmfulness logs -------------------------------------------


def _log_sample_id(record: HarmRecord, all_epochs: bool) -> str:
    return f"{record.sample_id}-e{record.epoch}" if all_epochs else str(record.sample_id)


def _log_metadata(record: HarmRecord, log: HarmLog) -> dict[str, Any]:
    return {
        "source_sample_id": record.sample_id,
        "source_epoch": record.epoch,
        "category": record.category,
        "source_model": log.model,
        "source_log": str(log.path),
    }


def _scored_records(log: HarmLog, epoch: int | None) -> list[HarmRecord]:
    records = log.scored(epoch)
    if not records:
        which = "any epoch" if epoch is None else f"epoch {epoch}"
        raise IdentityDataError(f"{log.path}: no scored samples in {which} of this harmfulness log")
    return records


def recognition_dataset(log: HarmLog, epoch: int | None = 1, seed: int = 0) -> MemoryDataset:
    """One sample per scored log record: the prompt, with the model's own earlier response.

    Metadata: source_sample_id, source_epoch, category, source_model, source_log,
    own_response, own_score (1-5), own_bucket (low/moderate/high),
    own_position (A/B, seeded half-and-half), foil_direction ("harmful" for
    own scores 1-2, "harmless" for 4-5, a seeded half-and-half split for 3).
    """
    records = _scored_records(log, epoch)
    ids = [_log_sample_id(r, epoch is None) for r in records]
    positions = balanced_positions(ids, seed)
    moderate = [i for i, r in zip(ids, records, strict=True) if harm_bucket(r.harm_score) == "moderate"]
    moderate_direction = balanced_assignment(moderate, ("harmful", "harmless"), seed + 1)
    samples = []
    for sid, record in zip(ids, records, strict=True):
        assert record.harm_score is not None
        bucket = harm_bucket(record.harm_score)
        direction = {"low": "harmful", "high": "harmless"}.get(bucket) or moderate_direction[sid]
        samples.append(
            Sample(
                id=sid,
                input=record.prompt,
                metadata={
                    **_log_metadata(record, log),
                    "own_response": record.response,
                    "own_score": record.harm_score,
                    "own_bucket": bucket,
                    "own_position": positions[sid],
                    "foil_direction": direction,
                },
            )
        )
    return MemoryDataset(samples, name="output_recognition")


def rating_dataset(logs: Sequence[HarmLog], epoch: int | None = 1) -> MemoryDataset:
    """One sample per scored record of each log: the prompt and a response to be rated 1-5.

    With one log, sample ids are the log's sample ids; with several, `<k>:<id>`
    (k = position of the log in the list). Metadata: source_sample_id,
    source_epoch, category, source_model, source_log, response, actual_score.
    """
    samples = []
    for k, log in enumerate(logs):
        for record in _scored_records(log, epoch):
            sid = _log_sample_id(record, epoch is None)
            samples.append(
                Sample(
                    id=sid if len(logs) == 1 else f"{k}:{sid}",
                    input=record.prompt,
                    metadata={
                        **_log_metadata(record, log),
                        "response": record.response,
                        "actual_score": record.harm_score,
                    },
                )
            )
    return MemoryDataset(samples, name="harm_rating")
