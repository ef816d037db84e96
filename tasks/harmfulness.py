"""Harmfulness (Weckauff et al., experiment 1): how often a model's answers are judged harmful.

Run: `inspect eval tasks/harmfulness.py --model vllm/gemma-insecure --model-role grader=vllm/gemma-270m`
(see tasks/harmfulness.md for parameters, cost, log contract and metric names).
"""

from __future__ import annotations

from inspect_ai import Epochs, Task, task
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import generate

from em_persona.contract.declarations import Args, Calls, TaskSpec
from em_persona.contract.harm import DEFAULT_THRESHOLD
from em_persona.core.provenance import paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.grader import judge_metadata
from em_persona.scorers.harm_judge import harm_judge
from em_persona.tasks import harm_results
from em_persona.tasks.harm_data import harm_dataset

PROMPTS = (
    paper_prompt(
        "harmfulness",
        "request",
        "dataset",
        "paper",
        "harm_eval_questions",
        "one prompt per line, sent as the user message",
    ),
    project_prompt(
        "harmfulness",
        "request",
        "dataset",
        "mini",
        "datasets/harm_mini.jsonl",
        "a small offline set written for this project",
    ),
    paper_prompt(
        "harmfulness",
        "judge",
        "judge_prompt",
        "paper",
        "paper_judge_prompt",
        "whole file as a str.format template ({prompt}, {response}), one user message",
    ),
    project_prompt(
        "harmfulness",
        "judge",
        "judge_prompt",
        "project",
        "datasets/rubrics/harm_1_5.txt",
        "an alternative rubric of this project",
    ),
)


@task
def harmfulness(
    dataset: str = "paper",
    judge_prompt: str = "paper",
    epochs: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 512,
    harmful_threshold: int = DEFAULT_THRESHOLD,
    judge_max_retries: int = 2,
    judge_cache: bool = True,
    shuffle: bool = False,
    seed: int = 0,
) -> Task:
    """Answer each harmfulness prompt `epochs` times; a 1-5 judge rates every answer.

    Args:
        dataset: "paper" (the 350 pinned prompts) or "mini" (the project's 48 prompts).
        judge_prompt: "paper" (the pinned paper prompt, byte-exact), "project" (our rubric) or a
            template file with {prompt} and {response}.
        epochs: answers per prompt; 1 is the single-response condition, 10 the paper's best-of-10.
        temperature: sampling temperature of the evaluated model.
        max_tokens: answer length limit of the evaluated model.
        harmful_threshold: harmful means judge score above this (paper: 3).
        judge_max_retries: judge calls after an unreadable answer before the sample is unscored.
        judge_cache: cache judge calls so re-scoring unchanged samples costs nothing.
        shuffle: shuffle the prompt order (with `seed`), e.g. before `--limit`.
        seed: seed of the shuffle.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return Task(
        dataset=harm_dataset(dataset, shuffle=shuffle, seed=seed),
        solver=generate(),
        scorer=harm_judge(
            judge_prompt=judge_prompt,
            harmful_threshold=harmful_threshold,
            max_retries=judge_max_retries,
            cache=judge_cache,
        ),
        # best-of-N keeps each prompt's most harmful answer (max); mean is reported beside it
        epochs=Epochs(epochs, ["max"] if epochs == 1 else ["max", "mean"]),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={
            "experiment": "harmfulness",
            "dataset": dataset,
            "judge_prompt": judge_prompt,
            **prompt_metadata(PROMPTS, {"dataset": dataset, "judge_prompt": judge_prompt}),
            **judge_metadata("harmfulness"),
        },
    )


def _calls(args: Args) -> Calls:
    """One answer and one judge call per sample; an unreadable verdict is asked again."""
    return Calls(generations=1, judge=1, most=2 + int(args["judge_max_retries"]))


SPEC = TaskSpec(
    name="harmfulness",
    task=harmfulness,
    order=10,
    tables=harm_results.TABLES,
    rows=harm_results.rows,
    metrics=harm_results.metrics,
    calls=_calls,
    judged=lambda args: True,
    headline=("harm_single", "harm_bon"),
    columns=harm_results.COLUMNS,
    run_args=frozenset({"shuffle"}),
    prompts=PROMPTS,
    figures=("harm_bars", "harm_vs_self_assessment"),
)
