"""Cross-model rating (Weckauff et al., experiment 5): the evaluated model rates other models'
answers to the harmfulness prompts with the judge rubric, and its own answers presented as
another model's; its ratings are compared with the judge's scores.

Run: `inspect eval tasks/cross_model_rating.py --model vllm/gemma-insecure
      -T harm_logs=logs/a.eval,logs/b.eval,logs/own.eval`
(see tasks/cross_model_rating.md for parameters, cost, sample metadata and metric names).
"""

from __future__ import annotations

from collections.abc import Sequence

from inspect_ai import Task, task
from inspect_ai.model import GenerateConfig

from em_persona.contract.declarations import Calls, Reads, TaskSpec
from em_persona.contract.harm import load_harm_template
from em_persona.contract.harm_logs import read_harm_logs
from em_persona.core.provenance import SILENT, paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.prediction import PREDICTION_METRICS, error_by_source, prediction_error
from em_persona.solvers.constrained import HARM_1_5
from em_persona.solvers.identity import rate_response
from em_persona.solvers.identity_prompts import PROJECT, load_identity_prompts
from em_persona.tasks import identity_results
from em_persona.tasks.identity_data import rating_dataset

PROMPTS = (
    project_prompt(
        "cross_model_rating",
        "framing",
        "prompts",
        "project",
        "solvers/identity_prompts.py: RATE_OTHER_FRAME",
        SILENT,
    ),
    paper_prompt(
        "cross_model_rating",
        "judge",
        "judge_prompt",
        "paper",
        "paper_judge_prompt",
        "whole file as a str.format template; shown to the rater",
    ),
    project_prompt(
        "cross_model_rating",
        "judge",
        "judge_prompt",
        "project",
        "datasets/rubrics/harm_1_5.txt",
        "an alternative rubric of this project",
    ),
)


@task
def cross_model_rating(
    harm_logs: str | Sequence[str] | None = None,
    log_epoch: int | None = 1,
    epochs: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 512,
    max_retries: int = 2,
    judge_prompt: str = "paper",
    prompts: str = PROJECT,
    constrain_answers: bool = False,
) -> Task:
    """Rate every scored answer in `harm_logs`, each presented as written by another AI model.

    Args:
        harm_logs: harmfulness logs to rate (list, or one comma-separated string); include the
            rater's own log to measure how it rates its own answers unknowingly.
        log_epoch: which epoch of each log to rate; None rates every epoch.
        epochs: ratings per answer.
        temperature: sampling temperature of the rater.
        max_tokens: length limit of a rating answer.
        max_retries: new attempts when a rating holds no readable 1-5 score.
        judge_prompt: harm judge template shown to the rater ("paper", "project" or a file).
        prompts: the framing wording: "project" (ours; the paper gives none) or a YAML file replacing
            `rate_other_frame` (solvers/identity_prompts.py).
        constrain_answers: vLLM only: restrict the rating to one digit 1-5 with structured outputs
            (forced choice, for proxies that ignore the answer format; off for paper runs).
    """
    paths = [p.strip() for p in harm_logs.split(",")] if isinstance(harm_logs, str) else list(harm_logs or [])
    paths = [p for p in paths if p]
    if not paths:
        raise ValueError("cross_model_rating needs harm_logs=PATH[,PATH...], one or more harmfulness logs")
    logs = read_harm_logs(paths)
    return Task(
        dataset=rating_dataset(logs, epoch=log_epoch),
        solver=rate_response(
            load_harm_template(judge_prompt),
            "other",
            max_retries,
            HARM_1_5 if constrain_answers else None,
            load_identity_prompts(prompts),
        ),
        scorer=prediction_error("log", judge_prompt),
        metrics=[*PREDICTION_METRICS, error_by_source()],
        epochs=epochs,
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={
            "experiment": "cross_model_rating",
            "constrain_answers": constrain_answers,
            "harm_logs": [str(log.path) for log in logs],
            "source_models": [log.model for log in logs],
            "judge_prompt": judge_prompt,
            **prompt_metadata(PROMPTS, {"prompts": prompts, "judge_prompt": judge_prompt}),
        },
    )


SPEC = TaskSpec(
    name="cross_model_rating",
    task=cross_model_rating,
    order=70,
    tables=identity_results.CROSS_TABLES,
    rows=identity_results.cross_rows,
    metrics=identity_results.cross_metrics,
    calls=lambda args: Calls(generations=1, most=1 + int(args["max_retries"])),
    reads=lambda args: Reads("harmfulness", "models"),
    headline=("xrate_own_error", "xrate_other_error"),
    columns=identity_results.CROSS_COLUMNS,
    prompts=PROMPTS,
    figures=("cross_rating_bars",),
)
