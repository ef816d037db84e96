"""Output recognition (Weckauff et al., experiment 4): shown its own earlier answer to a
harmfulness prompt beside an alternative, does the model claim its own answer?

Run: `inspect eval tasks/output_recognition.py --model vllm/gemma-insecure
      --model-role grader=vllm/gemma-270m -T harm_log=logs/<harmfulness log of vllm/gemma-insecure>.eval`
(see tasks/output_recognition.md for parameters, cost, sample metadata and metric names).
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.model import GenerateConfig

from em_persona.contract.declarations import Args, Calls, Reads, TaskSpec
from em_persona.contract.harm_logs import read_harm_log
from em_persona.core.provenance import SILENT, paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.grader import judge_metadata
from em_persona.scorers.recognition import recognition_choice
from em_persona.solvers.constrained import CHOICE_AB, generate_answer
from em_persona.solvers.identity import FoilMode, generate_foil, present_pair
from em_persona.solvers.identity_prompts import PROJECT, load_identity_prompts
from em_persona.solvers.log_model import require_log_model
from em_persona.tasks import identity_results
from em_persona.tasks.identity_data import recognition_dataset

PROMPTS = (
    project_prompt(
        "output_recognition",
        "question",
        "prompts",
        "project",
        "solvers/identity_prompts.py: RECOGNITION",
        SILENT,
    ),
    project_prompt(
        "output_recognition",
        "foil",
        "prompts",
        "project",
        "solvers/identity_prompts.py: FOIL_HARMFUL, FOIL_HARMLESS, FOIL_PLAIN",
        SILENT,
    ),
    paper_prompt(
        "output_recognition",
        "judge",
        "judge_prompt",
        "paper",
        "paper_judge_prompt",
        "whole file as a str.format template ({prompt}, {response}); rates the foil",
    ),
    project_prompt(
        "output_recognition",
        "judge",
        "judge_prompt",
        "project",
        "datasets/rubrics/harm_1_5.txt",
        "an alternative rubric of this project",
    ),
)


@task
def output_recognition(
    harm_log: str | None = None,
    foil: FoilMode = "opposite",
    log_epoch: int | None = 1,
    epochs: int = 1,
    seed: int = 0,
    temperature: float = 1.0,
    max_tokens: int = 64,
    foil_max_tokens: int = 512,
    judge_prompt: str = "paper",
    prompts: str = PROJECT,
    judge_max_retries: int = 2,
    judge_cache: bool = True,
    allow_other_model: bool = False,
    constrain_answers: bool = False,
) -> Task:
    """Own earlier response vs a foil from the `foil` role, positions counterbalanced; the grader rates the foil.

    Args:
        harm_log: harmfulness log of the model being evaluated (required).
        foil: "opposite" (foil asked for the opposite harm level) or "plain" (foil just answers).
        log_epoch: which epoch of the log to take answers from; None takes every epoch.
        epochs: runs per prompt (a new foil each run).
        seed: seed of the A/B layout and of the harm direction asked of foils for moderate answers.
        temperature: sampling temperature of the evaluated model.
        max_tokens: answer length limit of the A/B answer.
        foil_max_tokens: length limit of the foil response.
        judge_prompt: harm judge template for rating the foil ("paper", "project" or a file).
        prompts: the A/B question and foil wordings: "project" (ours; the paper gives none) or a
            YAML file replacing `recognition` / `foil_harmful` / `foil_harmless` / `foil_plain`
            (see solvers/identity_prompts.py).
        judge_max_retries: extra judge calls after an unreadable judge answer.
        judge_cache: cache judge calls.
        allow_other_model: accept a log written by a model other than the one evaluated.
        constrain_answers: vLLM only: restrict the A/B answer (not the foil) to one letter with
            structured outputs (forced choice, for proxies that ignore the answer format; off for paper runs).
    """
    if not harm_log:
        raise ValueError("output_recognition needs harm_log=PATH, the harmfulness log of the evaluated model")
    log = read_harm_log(harm_log)
    wording = load_identity_prompts(prompts)
    return Task(
        dataset=recognition_dataset(log, epoch=log_epoch, seed=seed),
        solver=[
            require_log_model(log.model, str(log.path), allow_other_model),
            generate_foil(foil, max_tokens=foil_max_tokens, prompts=wording),
            present_pair(wording),
            generate_answer(CHOICE_AB if constrain_answers else None),
        ],
        scorer=recognition_choice(judge_prompt, judge_max_retries, judge_cache),
        epochs=epochs,
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={
            "experiment": "output_recognition",
            "harm_log": str(log.path),
            "log_model": log.model,
            "foil": foil,
            "constrain_answers": constrain_answers,
            "seed": seed,
            **prompt_metadata(PROMPTS, {"prompts": prompts, "judge_prompt": judge_prompt}),
            **judge_metadata("output_recognition"),
        },
    )


def _calls(args: Args) -> Calls:
    """The foil, the A/B answer, and the judge's score of the foil (asked again when unreadable)."""
    return Calls(
        generations=2,
        judge=1,
        most=3 + int(args["judge_max_retries"]),
        foil=1,
        foil_max_tokens=int(args["foil_max_tokens"]),
    )


SPEC = TaskSpec(
    name="output_recognition",
    task=output_recognition,
    order=50,
    tables=identity_results.RECOGNITION_TABLES,
    rows=identity_results.recognition_rows,
    metrics=identity_results.recognition_metrics,
    calls=_calls,
    reads=lambda args: Reads("harmfulness", "own"),
    judged=lambda args: True,
    headline=("recog_low", "recog_moderate", "recog_high"),
    columns=identity_results.RECOGNITION_COLUMNS,
    run_args=frozenset({"foil_max_tokens"}),
    prompts=PROMPTS,
    figures=("recognition_by_bucket",),
)
