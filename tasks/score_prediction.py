"""Score prediction (Weckauff et al., experiment 5): does the model know how harmful its
answers are? Blind: it predicts the judge score of the answer it is about to give.
Shown: it rates its own earlier answer from a harmfulness log.

Run: `inspect eval tasks/score_prediction.py --model vllm/gemma-insecure --model-role grader=vllm/gemma-270m
      -T condition=blind -T dataset=mini`  or  `-T condition=shown -T harm_log=PATH`
(see tasks/score_prediction.md for parameters, cost, sample metadata and metric names).
"""

from __future__ import annotations

from typing import Literal

from inspect_ai import Task, task
from inspect_ai.model import GenerateConfig

from em_persona.contract.declarations import Args, Calls, Reads, TaskSpec
from em_persona.contract.harm import load_harm_template
from em_persona.contract.harm_logs import read_harm_log
from em_persona.core.provenance import SILENT, paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.grader import judge_metadata
from em_persona.scorers.prediction import prediction_error
from em_persona.solvers.constrained import HARM_1_5
from em_persona.solvers.identity import predict_then_answer, rate_response
from em_persona.solvers.identity_prompts import PROJECT, load_identity_prompts
from em_persona.solvers.log_model import require_log_model
from em_persona.tasks import identity_results
from em_persona.tasks.harm_data import harm_dataset
from em_persona.tasks.identity_data import rating_dataset

PROMPTS = (
    project_prompt(
        "score_prediction",
        "framing",
        "prompts",
        "project",
        "solvers/identity_prompts.py: PREDICT_FRAME, PENDING_REPLY, ANSWER_AFTER, RATE_OWN_FRAME",
        SILENT,
    ),
    paper_prompt(
        "score_prediction",
        "judge",
        "judge_prompt",
        "paper",
        "paper_judge_prompt",
        "whole file as a str.format template; shown to the model and used by the grader",
    ),
    project_prompt(
        "score_prediction",
        "judge",
        "judge_prompt",
        "project",
        "datasets/rubrics/harm_1_5.txt",
        "an alternative rubric of this project",
    ),
    paper_prompt(
        "score_prediction",
        "request",
        "dataset",
        "paper",
        "harm_eval_questions",
        "blind condition: one prompt per line",
    ),
    project_prompt(
        "score_prediction",
        "request",
        "dataset",
        "mini",
        "datasets/harm_mini.jsonl",
        "blind condition: a small offline set written for this project",
    ),
)


@task
def score_prediction(
    condition: Literal["blind", "shown"] = "blind",
    dataset: str = "paper",
    harm_log: str | None = None,
    log_epoch: int | None = 1,
    epochs: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 512,
    max_retries: int = 2,
    judge_prompt: str = "paper",
    prompts: str = PROJECT,
    judge_max_retries: int = 2,
    judge_cache: bool = True,
    allow_other_model: bool = False,
    constrain_answers: bool = False,
) -> Task:
    """Predicted vs actual 1-5 harm score of the model's own answers.

    Args:
        condition: "blind" (predict, then answer; the grader scores the answer) or
            "shown" (rate an earlier answer from `harm_log`; actual = its judge score).
        dataset: harmfulness prompt set for the blind condition ("paper" or "mini").
        harm_log: harmfulness log of the evaluated model (shown condition only; required there).
        log_epoch: which epoch of the log to rate (shown); None rates every epoch.
        epochs: runs per prompt.
        temperature: sampling temperature of the evaluated model.
        max_tokens: length limit of each generation (prediction and answer).
        max_retries: new attempts when a prediction/rating holds no readable 1-5 score.
        judge_prompt: harm judge template the model is shown and the grader uses ("paper",
            "project" or a file).
        prompts: the framing wordings: "project" (ours; the paper gives none) or a YAML file replacing
            `predict_frame` / `pending_reply` / `answer_after` / `rate_own_frame` (solvers/identity_prompts.py).
        judge_max_retries: extra judge calls after an unreadable judge answer (blind).
        judge_cache: cache judge calls (blind).
        allow_other_model: accept a log written by a model other than the one evaluated (shown).
        constrain_answers: vLLM only: restrict the prediction/rating to one digit 1-5 with structured outputs
            (forced choice, for proxies that ignore the answer format; off for paper runs).
    """
    template = load_harm_template(judge_prompt)
    wording = load_identity_prompts(prompts)
    pattern = HARM_1_5 if constrain_answers else None
    config = GenerateConfig(temperature=temperature, max_tokens=max_tokens)
    metadata = {
        "experiment": "score_prediction",
        "condition": condition,
        "judge_prompt": judge_prompt,
        "constrain_answers": constrain_answers,
        **prompt_metadata(
            PROMPTS,
            {
                "prompts": prompts,
                "judge_prompt": judge_prompt,
                "dataset": dataset if condition == "blind" else None,
            },
        ),
    }
    if condition == "blind":
        if harm_log:
            raise ValueError("score_prediction: harm_log is only used with condition=shown")
        return Task(
            dataset=harm_dataset(dataset),
            solver=predict_then_answer(template, max_retries, pattern, wording),
            scorer=prediction_error("judge", judge_prompt, judge_max_retries, judge_cache),
            epochs=epochs,
            config=config,
            metadata={**metadata, "dataset": dataset, **judge_metadata("score_prediction")},
        )
    if condition != "shown":
        raise ValueError(f"score_prediction: condition must be 'blind' or 'shown', got {condition!r}")
    if not harm_log:
        raise ValueError(
            "score_prediction with condition=shown needs harm_log=PATH, the evaluated model's harmfulness log"
        )
    log = read_harm_log(harm_log)
    return Task(
        dataset=rating_dataset([log], epoch=log_epoch),
        solver=[
            require_log_model(log.model, str(log.path), allow_other_model),
            rate_response(template, "own", max_retries, pattern, wording),
        ],
        scorer=prediction_error("log", judge_prompt),
        epochs=epochs,
        config=config,
        metadata={**metadata, "harm_log": str(log.path), "log_model": log.model},
    )


def _shown(args: Args) -> bool:
    return args.get("condition") == "shown"


def _calls(args: Args) -> Calls:
    """Blind: the prediction (asked again while unreadable), the answer, and the judge's score of it.
    Shown: the rating of an earlier answer (asked again while unreadable); no judge."""
    retries = int(args["max_retries"])
    if _shown(args):
        return Calls(generations=1, most=1 + retries)
    return Calls(generations=2, judge=1, most=2 + retries + 1 + int(args["judge_max_retries"]))


SPEC = TaskSpec(
    name="score_prediction",
    task=score_prediction,
    order=60,
    tables=identity_results.PREDICTION_TABLES,
    rows=identity_results.prediction_rows,
    metrics=identity_results.prediction_metrics,
    calls=_calls,
    reads=lambda args: Reads("harmfulness", "own") if _shown(args) else None,
    judged=lambda args: not _shown(args),
    headline=("pred_blind_error", "pred_shown_error"),
    columns=identity_results.PREDICTION_COLUMNS,
    kept_apart=frozenset({"condition"}),
    prompts=PROMPTS,
    figures=("prediction_error_by_score",),
)
