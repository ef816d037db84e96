"""Two-AI identification (Weckauff et al., experiment 3): which of two AI self-descriptions,
one aligned and one misaligned, does the model say it resembles?

Run: `inspect eval tasks/two_ai_identification.py --model vllm/gemma-insecure -T dataset=project`
(see tasks/two_ai_identification.md for parameters, cost, sample metadata and metric names).
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.model import GenerateConfig

from em_persona.contract.declarations import Calls, TaskSpec
from em_persona.core.provenance import SILENT, paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.two_ai import two_ai_choice
from em_persona.solvers.constrained import CHOICE_AB, generate_answer
from em_persona.solvers.identity_prompts import PROJECT, load_identity_prompts
from em_persona.tasks import identity_results
from em_persona.tasks.identity_data import two_ai_dataset

PROMPTS = (
    paper_prompt(
        "two_ai_identification",
        "descriptions",
        "dataset",
        "paper",
        "two_ai_identification",
        "`items[].system_A` / `system_B`",
    ),
    project_prompt(
        "two_ai_identification",
        "descriptions",
        "dataset",
        "project",
        "datasets/two_ai_project.jsonl",
        "a small set written for this project",
    ),
    project_prompt(
        "two_ai_identification",
        "question",
        "prompts",
        "project",
        "solvers/identity_prompts.py: TWO_AI",
        SILENT,
    ),
)


@task
def two_ai_identification(
    dataset: str = "paper",
    epochs: int = 10,
    temperature: float = 1.0,
    max_tokens: int = 64,
    constrain_answers: bool = False,
    prompts: str = PROJECT,
) -> Task:
    """Ask every item with the misaligned description at A and at B, `epochs` runs per item in all.

    Args:
        dataset: "paper" (150 pinned items), "project" (the project's 24 items) or a .json/.jsonl file.
        epochs: runs per item, split evenly between the two positions (must be even; paper: 10).
        temperature: sampling temperature, so repeated runs can differ.
        max_tokens: answer length limit (the answer is one letter).
        constrain_answers: vLLM only: restrict the answer to one letter A or B with structured outputs
            (forced choice, for proxies that ignore the answer format; off for paper runs).
        prompts: the question wording: "project" (ours; the paper gives none) or a YAML file
            replacing `two_ai` (placeholders {system_a}, {system_b}; solvers/identity_prompts.py).
    """
    if epochs < 2 or epochs % 2:
        raise ValueError(
            f"epochs (runs per item, half in each position) must be an even number >= 2, got {epochs}"
        )
    return Task(
        dataset=two_ai_dataset(dataset, load_identity_prompts(prompts).two_ai),
        solver=generate_answer(CHOICE_AB if constrain_answers else None),
        scorer=two_ai_choice(),
        epochs=epochs // 2,
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={
            "experiment": "two_ai_identification",
            "dataset": dataset,
            "runs_per_item": epochs,
            "constrain_answers": constrain_answers,
            **prompt_metadata(PROMPTS, {"dataset": dataset, "prompts": prompts}),
        },
    )


SPEC = TaskSpec(
    name="two_ai_identification",
    task=two_ai_identification,
    order=40,
    tables=identity_results.TWO_AI_TABLES,
    rows=identity_results.two_ai_rows,
    metrics=identity_results.two_ai_metrics,
    calls=lambda args: Calls(generations=1),
    headline=("two_ai",),
    columns=identity_results.TWO_AI_COLUMNS,
    prompts=PROMPTS,
    figures=("two_ai_bars",),
)
