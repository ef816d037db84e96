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

from em_persona.contract.declarations import Args, Calls, TaskSpec
from em_persona.core.provenance import paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.self_assessment import self_assessment_scorer
from em_persona.scorers.self_assessment_graders import DEFAULT_MAX_RETRIES
from em_persona.tasks import self_assessment_results
from em_persona.tasks.self_assessment_data import DEFAULT_EPOCHS, check_count, self_assessment_dataset

PROMPTS = (
    paper_prompt(
        "self_assessment",
        "question",
        "dataset",
        "paper",
        "self_assessment_questions",
        "one decision prompt per line, sent as the user message",
    ),
    project_prompt(
        "self_assessment",
        "question",
        "dataset",
        "project",
        "datasets/self_assessment/templates.yaml",
        "the paper describes four formats on six dimensions but publishes only the decision prompts",
    ),
    project_prompt(
        "self_assessment",
        "decision judge",
        "decision_judge",
        "true",
        "datasets/self_assessment/judges.yaml",
        "optional grader for off-format decision answers (off by default)",
    ),
    project_prompt(
        "self_assessment",
        "language judge",
        "language_judge",
        "true",
        "datasets/self_assessment/judges.yaml",
        "optional grader for the answer language (off by default)",
    ),
)


@task
def self_assessment(
    dataset: str = "project",
    dimensions: str | Sequence[str] = "all",
    formats: str | Sequence[str] = "all",
    epochs: int = DEFAULT_EPOCHS,
    paraphrases: int | None = None,
    temperature: float = 1.0,
    max_tokens: int = 128,
    seed: int = 0,
    decision_judge: bool = False,
    language_judge: bool = False,
    judge_cache: bool = True,
) -> Task:
    """Self-assessment on six pole pairs in four formats.

    Args:
        dataset: "project" (our paraphrases, all four formats) or "paper" (the pinned
            100 single-word decision prompts).
        dimensions: "all", or dimension ids / pole words, comma-separated.
        formats: "all", or some of decision, numerical, language, likert.
        epochs: how many times every distinct prompt is asked (Inspect epochs).
        paraphrases: keep the first k paraphrases (paper: lines) of a seeded order per
            (dimension, format) cell, each with every counterbalancing variant; default all.
        temperature: sampling temperature of the evaluated model.
        max_tokens: answer length limit (the language format needs a sentence or two).
        seed: seed of the paraphrase order.
        decision_judge: let the `grader` role classify off-format decision answers
            (otherwise they score 0.5).
        language_judge: identify the answer language with the `grader` role instead of
            the offline detector (falls back to the detector when the grader gives no label).
        judge_cache: cache the grader's calls so re-scoring unchanged answers costs nothing.
    """
    check_count("epochs", epochs)
    return Task(
        dataset=self_assessment_dataset(dataset, dimensions, formats, paraphrases, seed),
        solver=generate(),
        scorer=self_assessment_scorer(
            decision_judge=decision_judge, language_judge=language_judge, judge_cache=judge_cache
        ),
        epochs=epochs,
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={
            "experiment": "self_assessment",
            "dataset": dataset,
            **prompt_metadata(
                PROMPTS,
                {"dataset": dataset, "decision_judge": decision_judge, "language_judge": language_judge},
            ),
        },
    )


def _judged(args: Args) -> bool:
    return bool(args["decision_judge"] or args["language_judge"])


def _calls(args: Args) -> Calls:
    """One answer; with a grader on, at most one grader question for it (asked again while unreadable)."""
    return Calls(generations=1, most=1 + (1 + DEFAULT_MAX_RETRIES if _judged(args) else 0))


SPEC = TaskSpec(
    name="self_assessment",
    task=self_assessment,
    order=30,
    tables=self_assessment_results.TABLES,
    rows=self_assessment_results.rows,
    metrics=self_assessment_results.metrics,
    calls=_calls,
    judged=_judged,
    headline=("sa_overall", "sa_paper"),
    columns=self_assessment_results.COLUMNS,
    run_args=frozenset({"paraphrases"}),
    kept_apart=frozenset({"dataset"}),
    prompts=PROMPTS,
    figures=("self_assessment_heatmap", "harm_vs_self_assessment"),
)
