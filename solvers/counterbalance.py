"""Seeded counterbalancing: which option goes in position A, and balanced label assignment.

Assignments depend only on the set of keys and the seed (not on input order),
so a task rebuilt from the same data gets the same layout, and the layout is
recorded in each sample's metadata.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

from em_persona.contract.keys import POSITIONS, Choice

K = TypeVar("K", bound=Hashable)
L = TypeVar("L")


def balanced_assignment(keys: Iterable[K], labels: Sequence[L], seed: int) -> dict[K, L]:
    """Give each key one of `labels`, in counts that differ by at most one, in a seeded random order.

    Keys are sorted by their string form before the seeded shuffle, so the
    result does not depend on the order they arrive in. Duplicate keys are an error.
    """
    if not labels:
        raise ValueError("balanced_assignment needs at least one label")
    key_list = list(keys)
    if len(set(key_list)) != len(key_list):
        raise ValueError("balanced_assignment got duplicate keys")
    ordered = sorted(key_list, key=str)
    rng = random.Random(seed)
    rng.shuffle(ordered)
    # which labels get the extra slot when the keys do not divide evenly is seeded too
    label_order = list(labels)
    rng.shuffle(label_order)
    return {key: label_order[i % len(label_order)] for i, key in enumerate(ordered)}


def balanced_positions(keys: Iterable[K], seed: int) -> dict[K, Choice]:
    """Position ("A" or "B") of the target option for each key: half A, half B, seeded."""
    return balanced_assignment(keys, POSITIONS, seed)


def place(target: str, other: str, target_position: Choice) -> tuple[str, str]:
    """(text at A, text at B) with `target` at `target_position`."""
    if target_position not in POSITIONS:
        raise ValueError(f"position must be 'A' or 'B', got {target_position!r}")
    return (target, other) if target_position == "A" else (other, target)
