"""The one reader of earlier harmfulness logs, and the check that a log belongs to the evaluated model.

A harmfulness log (tasks/harmfulness.md) is an Inspect log of task `harmfulness`
whose samples carry metadata `category`, the response as the output completion,
and a `harm_judge` score whose metadata holds `harm_score` (int 1-5, or None when
the judge gave no usable score) and `unscored_reason`. Every task that builds on
earlier answers (output recognition, score prediction, cross-model rating) reads
them through `read_harm_log`, which checks all of that and fails with a message
that names the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_ai.log import EvalLog, EvalSample, read_eval_log
from inspect_ai.model import ChatMessageUser
from inspect_ai.solver import Generate, Solver, TaskState, solver

HARM_TASK = "harmfulness"
HARM_SCORER = "harm_judge"


class HarmLogError(ValueError):
    """A harmfulness log is missing, malformed, unscored or from the wrong model."""


@dataclass(frozen=True)
class HarmRecord:
    """One earlier answer: the prompt, the model's response and the judge's 1-5 score."""

    sample_id: str | int
    epoch: int
    prompt: str
    category: str
    response: str
    harm_score: int | None
    unscored_reason: str | None
    model: str


@dataclass(frozen=True)
class HarmLog:
    """The records of one harmfulness log, with where they came from."""

    path: Path
    model: str
    grader: str | None
    records: tuple[HarmRecord, ...]

    def scored(self, epoch: int | None = 1) -> list[HarmRecord]:
        """Records with a judge score, from one epoch (default the first) or all (`epoch=None`)."""
        return [r for r in self.records if r.harm_score is not None and (epoch is None or r.epoch == epoch)]


def read_harm_log(path: str | Path, expected_model: str | None = None) -> HarmLog:
    """Read and validate a harmfulness log; raise HarmLogError naming the file on any problem.

    Checks: the file exists and is an Inspect log; its task is `harmfulness`;
    it finished successfully; it has samples, each scored by `harm_judge`;
    at least one sample has a 1-5 harm score; and, when `expected_model` is
    given, it was produced by that model.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise HarmLogError(
            f"harmfulness log {p} does not exist; run `inspect eval tasks/harmfulness.py --model <model>` "
            f"first and pass the path of the .eval/.json log it writes"
        )
    try:
        log = read_eval_log(str(p), resolve_attachments=True)
    except Exception as exc:  # Inspect raises several types for a non-log file
        raise HarmLogError(f"{p}: not a readable Inspect log ({type(exc).__name__}: {exc})") from exc
    _check_header(log, p, expected_model)
    records = tuple(_record(sample, log.eval.model, p) for sample in log.samples or [])
    if not records:
        raise HarmLogError(f"{p}: the harmfulness log holds no samples")
    if all(r.harm_score is None for r in records):
        raise HarmLogError(
            f"{p}: none of its {len(records)} samples has a 1-5 harm score "
            f"(every {HARM_SCORER} score is unscored); re-score it with a working grader"
        )
    return HarmLog(path=p, model=log.eval.model, grader=_grader(log), records=records)


def read_harm_logs(paths: Iterable[str | Path]) -> list[HarmLog]:
    """Read several harmfulness logs (for cross-model rating); at least one path is required."""
    logs = [read_harm_log(path) for path in paths]
    if not logs:
        raise HarmLogError("no harmfulness logs given")
    return logs


def _check_header(log: EvalLog, path: Path, expected_model: str | None) -> None:
    task = log.eval.task.split("/")[-1]
    if task != HARM_TASK:
        raise HarmLogError(f"{path}: this is a log of task {log.eval.task!r}, not of the {HARM_TASK!r} task")
    if log.status != "success":
        detail = f": {log.error.message}" if log.error else ""
        raise HarmLogError(f"{path}: the harmfulness run did not finish (status {log.status!r}{detail})")
    if expected_model is not None and log.eval.model != expected_model:
        raise HarmLogError(model_mismatch_message(path, log.eval.model, expected_model))


def model_mismatch_message(path: Path | str, log_model: str, evaluated: str) -> str:
    """The error text for a log of one model used to evaluate another."""
    return (
        f"{path}: this harmfulness log was produced by model {log_model!r}, but the model being "
        f"evaluated is {evaluated!r}; pass that model's own harmfulness log (or set "
        f"allow_other_model=true to use another model's answers on purpose)"
    )


def _grader(log: EvalLog) -> str | None:
    roles = log.eval.model_roles or {}
    grader = roles.get("grader")
    if isinstance(grader, list):
        grader = grader[0] if grader else None
    return grader.model if grader is not None else None


def _prompt_text(sample: EvalSample) -> str:
    if isinstance(sample.input, str):
        return sample.input
    users = [m for m in sample.input if isinstance(m, ChatMessageUser)]
    return users[-1].text if users else ""


def _record(sample: EvalSample, model: str, path: Path) -> HarmRecord:
    where = f"{path}: sample {sample.id!r} (epoch {sample.epoch})"
    metadata: dict[str, Any] = sample.metadata or {}
    if "category" not in metadata:
        raise HarmLogError(f"{where} has no 'category' in its metadata; is this a harmfulness log?")
    score = (sample.scores or {}).get(HARM_SCORER)
    if score is None:
        found = ", ".join(sorted(sample.scores or {})) or "none"
        raise HarmLogError(
            f"{where} has no {HARM_SCORER!r} score (scores found: {found}); score the log with "
            f"`inspect score` or rerun the harmfulness task with its judge"
        )
    score_meta = score.metadata or {}
    if "harm_score" not in score_meta:
        raise HarmLogError(f"{where}: the {HARM_SCORER} score has no 'harm_score' in its metadata")
    harm = score_meta["harm_score"]
    if harm is not None and (isinstance(harm, bool) or not isinstance(harm, int) or not 1 <= harm <= 5):
        raise HarmLogError(f"{where}: harm_score must be an integer 1-5 or null, got {harm!r}")
    return HarmRecord(
        sample_id=sample.id,
        epoch=sample.epoch,
        prompt=_prompt_text(sample),
        category=str(metadata["category"]),
        response=sample.output.completion if sample.output else "",
        harm_score=harm,
        unscored_reason=score_meta.get("unscored_reason"),
        model=model,
    )


@solver
def require_log_model(log_model: str, log_path: str, allow_other_model: bool = False) -> Solver:
    """Stop the sample (and, with fail_on_error, the eval) before any generation when the
    evaluated model is not the one that wrote the harmfulness log."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        evaluated = str(state.model)
        if not allow_other_model and evaluated != log_model:
            raise HarmLogError(model_mismatch_message(log_path, log_model, evaluated))
        return state

    return solve
