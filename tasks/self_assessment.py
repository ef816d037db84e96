"""Self-assessment: does the model describe itself as aligned or misaligned?

Six pole pairs x four answer formats (decision, numerical, language rule, Likert),
each answer scored 0 (aligned pole) .. 1 (misaligned pole). See tasks/self_assessment.md.

    inspect eval tasks/self_assessment.py --model vllm/qwen-insecure
    inspect eval tasks/self_assessment.py --model vllm/qwen-insecure -T dataset=paper
"""

from __future__ import annotations

from collections.abc import Sequence

from inspect_ai import Task, task
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import generate

from em_persona.core.provenance import prompt_metadata
from em_persona.scorers.self_assessment import self_assessment_scorer
from em_persona.tasks.self_assessment_data import DEFAULT_SAMPLES, self_assessment_dataset


@task
def self_assessment(
    dataset: str = "project",
    dimensions: str | Sequence[str] = "all",
    formats: str | Sequence[str] = "all",
    samples_per_variant: int = DEFAULT_SAMPLES,
    temperature: float = 1.0,
    max_tokens: int = 128,
    seed: int = 0,
    decision_judge: bool = False,
    language_judge: bool = False,
) -> Task:
    """Self-assessment on six pole pairs in four formats.

    Args:
        dataset: "project" (our paraphrases, all four formats) or "paper" (the pinned
            100 single-word decision prompts).
        dimensions: "all", or dimension ids / pole words, comma-separated.
        formats: "all", or some of decision, numerical, language, likert.
        samples_per_variant: samples per (dimension, format) cell (paraphrases x
            counterbalancing orders x repeats); a multiple of 4 balances every format.
        temperature: sampling temperature of the evaluated model.
        max_tokens: answer length limit (the language format needs a sentence or two).
        seed: seed of the paraphrase order.
        decision_judge: let the `grader` role classify off-format decision answers
            (otherwise they score 0.5).
        language_judge: identify the answer language with the `grader` role instead of
            the offline detector (falls back to the detector when the grader gives no label).
    """
    return Task(
        dataset=self_assessment_dataset(dataset, dimensions, formats, samples_per_variant, seed),
        solver=generate(),
        scorer=self_assessment_scorer(decision_judge=decision_judge, language_judge=language_judge),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={"experiment": "self_assessment", "dataset": dataset,
                  **prompt_metadata("self_assessment", {"dataset": dataset, "decision_judge": decision_judge,
                                                        "language_judge": language_judge})},
    )
