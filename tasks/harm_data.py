"""Prompt sets for the harmfulness experiment: the paper's 350 prompts and the project's mini set.

The paper file (registry source `harm_eval_questions`) has one prompt per line and
no category column: the category follows from the position (70 social-issue
prompts, then seven blocks of 40, in the order of `HARM_CATEGORIES`). The mini
set (`datasets/harm_mini.jsonl`) is written by this project and names its
categories explicitly, so it works offline without the mirror.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inspect_ai.dataset import MemoryDataset, Sample

from em_persona.core.errors import EmPersonaError
from em_persona.core.jsonl import iter_jsonl
from em_persona.core.paths import DATASETS_DIR
from em_persona.core.registry import load_source

HARM_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("social_issue", 70),
    ("stereotypes_discrimination", 40),
    ("insults_emotional_harm", 40),
    ("self_harm_suicide", 40),
    ("violence_threats", 40),
    ("offensive_jokes", 40),
    ("fraud_illegal", 40),
    ("manipulation_deception", 40),
)
"""Category keys in file order, with the number of paper prompts in each block."""

CATEGORY_KEYS: tuple[str, ...] = tuple(key for key, _ in HARM_CATEGORIES)
PAPER_SIZE = sum(size for _, size in HARM_CATEGORIES)
PAPER_SOURCE = "harm_eval_questions"
MINI_FILE = DATASETS_DIR / "harm_mini.jsonl"
MINI_MIN_PER_CATEGORY = 5

HarmSet = Literal["paper", "mini"]


class HarmDataError(EmPersonaError, ValueError):
    """A prompt file does not have the expected shape; the message names file and line."""


@dataclass(frozen=True)
class HarmPrompt:
    """One harmfulness prompt with its stable id and category."""

    id: str
    category: str
    prompt: str
    line: int
    source: str


def paper_category(index: int) -> str:
    """Category of the paper prompt at 0-based position `index` (block structure)."""
    start = 0
    for key, size in HARM_CATEGORIES:
        if index < start + size:
            return key
        start += size
    raise IndexError(f"paper prompt index {index} is beyond the {PAPER_SIZE} prompts")


def parse_paper_prompts(text: str, filename: str) -> list[HarmPrompt]:
    """Split the paper file into 350 prompts with ids `harm-001` .. `harm-350`."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]  # a trailing newline is not an extra prompt
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise HarmDataError(
                f"{filename}:{number}: empty line; the harmfulness file has one prompt per line"
            )
    if len(lines) != PAPER_SIZE:
        raise HarmDataError(
            f"{filename}: expected {PAPER_SIZE} prompts (70 social-issue + 7 blocks of 40), "
            f"found {len(lines)} lines; categories are assigned by position, so the file must match exactly"
        )
    return [
        HarmPrompt(
            id=f"harm-{i + 1:03d}",
            category=paper_category(i),
            prompt=line.strip(),
            line=i + 1,
            source="paper",
        )
        for i, line in enumerate(lines)
    ]


def load_paper_prompts() -> list[HarmPrompt]:
    """The 350 pinned paper prompts (fetched and verified through the registry)."""
    path = load_source(PAPER_SOURCE)
    return parse_paper_prompts(path.read_text(encoding="utf-8"), str(path))


def load_mini_prompts(path: Path = MINI_FILE) -> list[HarmPrompt]:
    """The project's own mini set: JSONL rows {"id", "category", "prompt"}, all categories covered."""
    prompts: list[HarmPrompt] = []
    seen: set[str] = set()
    for number, row in iter_jsonl(path, HarmDataError):
        if not isinstance(row, dict) or not {"id", "category", "prompt"} <= row.keys():
            raise HarmDataError(f"{path}:{number}: each row needs the keys id, category and prompt")
        if row["category"] not in CATEGORY_KEYS:
            raise HarmDataError(
                f"{path}:{number}: unknown category {row['category']!r}; known: {', '.join(CATEGORY_KEYS)}"
            )
        if row["id"] in seen:
            raise HarmDataError(f"{path}:{number}: duplicate id {row['id']!r}")
        if not str(row["prompt"]).strip():
            raise HarmDataError(f"{path}:{number}: empty prompt")
        seen.add(row["id"])
        prompts.append(
            HarmPrompt(
                id=str(row["id"]),
                category=row["category"],
                prompt=str(row["prompt"]).strip(),
                line=number,
                source="mini",
            )
        )
    counts = Counter(p.category for p in prompts)
    short = [key for key in CATEGORY_KEYS if counts[key] < MINI_MIN_PER_CATEGORY]
    if short:
        raise HarmDataError(
            f"{path}: every category needs at least {MINI_MIN_PER_CATEGORY} prompts; too few in {', '.join(short)}"
        )
    return prompts


def harm_prompts(dataset: HarmSet | str) -> list[HarmPrompt]:
    """Prompts of a named set ("paper" or "mini")."""
    if dataset == "paper":
        return load_paper_prompts()
    if dataset == "mini":
        return load_mini_prompts()
    raise ValueError(f"unknown harmfulness dataset {dataset!r}; use 'paper' or 'mini'")


def harm_dataset(dataset: HarmSet | str = "paper", shuffle: bool = False, seed: int = 0) -> MemoryDataset:
    """Inspect dataset of harmfulness prompts; metadata: category, source, line."""
    samples = [
        Sample(
            id=p.id,
            input=p.prompt,
            metadata={"category": p.category, "source": p.source, "line": p.line},
        )
        for p in harm_prompts(dataset)
    ]
    ds = MemoryDataset(samples, name=f"harmfulness-{dataset}")
    if shuffle:
        ds.shuffle(seed=seed)
    return ds
