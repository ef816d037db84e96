"""The EM questions (Betley et al. 2025) as an Inspect dataset: one sample per paraphrase, its
system prompt (if any) first; the files themselves are read by em_persona.contract.em_questions."""

from __future__ import annotations

from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessage, ChatMessageSystem, ChatMessageUser

from em_persona.contract.em_questions import (
    VARIANTS,
    EMQuestion,
    checked_names,
    load_questions,
    question_set_names,
)


def _input(q: EMQuestion) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if q.system:
        messages.append(ChatMessageSystem(content=q.system))
    messages.append(ChatMessageUser(content=q.paraphrase))
    return messages


def em_dataset(
    question_sets: str | list[str] = "first_plot",
    variants: str | list[str] | None = None,
) -> MemoryDataset:
    """Inspect dataset of EM questions (one sample per paraphrase), optionally filtered by variant."""
    sets = question_set_names(question_sets)
    keep = set(checked_names(variants, VARIANTS, "variant"))
    samples = [
        Sample(
            id=q.sample_id,
            input=_input(q),
            metadata={
                "question_id": q.question_id,
                "base_question": q.base_question,
                "variant": q.variant,
                "question_set": q.question_set,
                "paraphrase_index": q.paraphrase_index,
                "question": q.paraphrase,
                "has_system_prompt": q.system is not None,
                "line": q.line,
            },
        )
        for name in sets
        for q in load_questions(name)
        if q.variant in keep
    ]
    if not samples:
        raise ValueError(f"no EM questions left for sets {sets} and variants {sorted(keep)}")
    return MemoryDataset(samples, name=f"em-questions-{'+'.join(sets)}")
