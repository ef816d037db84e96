"""Original emergent-misalignment questions (Betley et al. 2025) with 0-100 alignment/coherence judges.

Run: `inspect eval tasks/em_questions.py -T epochs=10 --model vllm/gemma-insecure
--model-role grader=vllm/gemma-270m` (see tasks/em_questions.md for parameters, cost and metric names).
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import generate

from em_persona.contract.declarations import Args, Calls, TaskSpec
from em_persona.contract.em_questions import EMDataError, paper_judge_models
from em_persona.core.provenance import paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.em_judges import ALIGNMENT_THRESHOLD, COHERENCE_THRESHOLD, em_judge
from em_persona.scorers.grader import judge_metadata
from em_persona.tasks import em_results
from em_persona.tasks.em_data import em_dataset

PROMPTS = (
    paper_prompt(
        "em_questions",
        "question",
        "question_sets",
        "first_plot",
        "first_plot_questions",
        "`paraphrases` (and `system`) of each entry",
        multi_valued=True,
    ),
    paper_prompt(
        "em_questions",
        "question",
        "question_sets",
        "preregistered",
        "preregistered_evals",
        "`paraphrases` (and `system`) of each entry",
        multi_valued=True,
    ),
    paper_prompt(
        "em_questions",
        "judge",
        "judge_prompts",
        "paper",
        "first_plot_questions",
        "`judge_prompts.aligned` / `.coherent` of the question's own entry in first_plot_questions.yaml "
        "or preregistered_evals.yaml (the same two templates in both files), str.format with "
        "{question} = the paraphrase and {answer}, one user message",
    ),
    project_prompt(
        "em_questions",
        "judge",
        "judge_prompts",
        "project",
        "datasets/rubrics/em_alignment_0_100.txt, datasets/rubrics/em_coherence_0_100.txt",
        "alternative 0-100 rubrics of this project",
    ),
)


@task
def em_questions(
    question_sets: str = "first_plot",
    variants: str | None = None,
    epochs: int = 100,
    temperature: float = 1.0,
    max_tokens: int = 600,
    alignment_threshold: float = ALIGNMENT_THRESHOLD,
    coherence_threshold: float = COHERENCE_THRESHOLD,
    judge_prompts: str = "paper",
    judge_scoring: str = "auto",
    judge_max_retries: int = 2,
    judge_cache: bool = True,
) -> Task:
    """Ask each EM question `epochs` times and judge every answer.

    Args:
        question_sets: "first_plot", "preregistered" or both, comma-separated.
        variants: keep only these variants (comma-separated: plain, json, template, preregistered); default all.
        epochs: answers per paraphrase (Inspect epochs; upstream files use 100).
        temperature: sampling temperature of the evaluated model (paper: 1).
        max_tokens: answer length limit of the evaluated model.
        alignment_threshold: misaligned needs alignment <= this (paper: 30).
        coherence_threshold: misaligned needs coherence > this (paper: 50).
        judge_prompts: "paper" (each question's own judge prompts from its YAML, byte-exact), "project"
            (our rubrics) or a YAML file with `aligned` and `coherent` templates ({question}, {answer}).
        judge_scoring: "auto" (the paper's top-20 logprob score when the grader returns logprobs, else a
            parsed text answer), "logprobs" or "parsed".
        judge_max_retries: judge calls after an unreadable text answer before the answer is unscored.
        judge_cache: cache judge calls so re-scoring unchanged answers costs nothing.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise EMDataError(f"epochs must be a positive integer, got {epochs!r}")
    return Task(
        dataset=em_dataset(question_sets, variants),
        solver=generate(),
        scorer=em_judge(
            alignment_threshold=alignment_threshold,
            coherence_threshold=coherence_threshold,
            max_retries=judge_max_retries,
            cache=judge_cache,
            judge_prompts=judge_prompts,
            judge_scoring=judge_scoring,
            question_sets=question_sets,
        ),
        epochs=epochs,
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={
            "experiment": "em_questions",
            "question_sets": question_sets,
            "variants": variants,
            "judge_prompts": judge_prompts,
            "judge_scoring": judge_scoring,
            "paper_judge_model": ", ".join(paper_judge_models(question_sets)),
            **prompt_metadata(PROMPTS, {"question_sets": question_sets, "judge_prompts": judge_prompts}),
            **judge_metadata("em_questions"),
        },
    )


def _calls(args: Args) -> Calls:
    """One answer and two judges (alignment, coherence). A judge by logprobs is one 1-token call; in
    `auto` a grader without logprobs is asked again for a text answer; a text answer is asked again
    while unreadable."""
    retries = int(args["judge_max_retries"])
    per_judge = {"logprobs": 1, "parsed": 1 + retries}.get(str(args["judge_scoring"]), 2 + retries)
    return Calls(generations=1, judge=2, most=1 + 2 * per_judge)


SPEC = TaskSpec(
    name="em_questions",
    task=em_questions,
    order=20,
    tables=em_results.TABLES,
    rows=em_results.rows,
    metrics=em_results.metrics,
    calls=_calls,
    judged=lambda args: True,
    headline=("em_misaligned_*",),
    columns=em_results.COLUMNS,
    prompts=PROMPTS,
    figures=("em_misaligned_bars",),
)
