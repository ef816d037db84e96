"""The one reader of earlier harmfulness logs, and the check that a log belongs to the evaluated model.

A harmfulness log (tasks/harmfulness.md) is an Inspect log of task `harmfulness`
whose samples carry metadata `category`, the response as the output completion,
and a `harm_judge` score whose metadata holds `harm_score` (int 1-5, or None when
the judge gave no usable score), `unscored_reason` and `judge_model`. Every task
that builds on earlier answers (output recognition, score prediction, cross-model
rating) reads them through `read_harm_log`, which checks all of that and fails with
a message that names the file. `read_harm_scores` also returns the scores other
judges appended with `inspect score --action append` (`harm_judge1`, `harm_judge2`, ...).

The grader of a score is its `metadata["judge_model"]`; the header's `grader` role is
only a fallback, because `inspect score --action overwrite` replaces the scores but
leaves the header naming the judge of the original run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_ai.log import EvalLog, EvalSample, read_eval_log
from inspect_ai.model import ChatMessageUser

from em_persona.core.errors import EmPersonaError

HARM_TASK = "harmfulness"
HARM_SCORER = "harm_judge"
HARM_SCORE_NAME = re.compile(r"^harm_judge(?P<n>\d*)$")
"""Score names of the harm judge: `harm_judge` from the run, then `harm_judge1`, `harm_judge2`, ...
added by `inspect score --action append` (Inspect 0.3.285 names a re-score after the scorer
plus a counter; `--action overwrite` keeps `harm_judge`)."""


class HarmLogError(EmPersonaError, ValueError):
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
    grader: str | None = None
    """The judge of `harm_score`: the score's `judge_model`, else the header's grader role."""


@dataclass(frozen=True)
class HarmLog:
    """The records of one harmfulness log, with where they came from.

    `grader` is the judge of the `harm_judge` scores (their `judge_model`; the most
    frequent one if they differ), falling back to the header's grader role.
    """

    path: Path
    model: str
    grader: str | None
    records: tuple[HarmRecord, ...]

    def scored(self, epoch: int | None = 1) -> list[HarmRecord]:
        """Records with a judge score, from one epoch (default the first) or all (`epoch=None`)."""
        return [r for r in self.records if r.harm_score is not None and (epoch is None or r.epoch == epoch)]


@dataclass(frozen=True)
class JudgeScore:
    """One harm-judge score of one answer, from any of the log's harm-judge score sets."""

    sample_id: str | int
    epoch: int
    scorer: str
    """Score name: `harm_judge`, or `harm_judge1`, ... for appended re-scores."""
    grader: str | None
    """The score's `judge_model`, else the header's grader role."""
    judge_prompt: str | None
    """The judge template (`project`, `paper` or a path) when the score recorded it."""
    harm_score: int | None
    unscored_reason: str | None


@dataclass(frozen=True)
class HarmScores:
    """A harmfulness log with every judge's scores: the validated `harm_judge` records and
    one JudgeScore per answer and harm-judge score set (original and appended)."""

    log: HarmLog
    scores: tuple[JudgeScore, ...]

    def scorers(self) -> list[str]:
        """The harm-judge score names present, in order: harm_judge, harm_judge1, harm_judge2, ..."""
        return sorted({s.scorer for s in self.scores}, key=_scorer_order)


def read_harm_log(path: str | Path, expected_model: str | None = None) -> HarmLog:
    """Read and validate a harmfulness log; raise HarmLogError naming the file on any problem.

    Checks: the file exists and is an Inspect log; its task is `harmfulness`;
    it finished successfully; it has samples, each scored by `harm_judge`;
    at least one sample has a 1-5 harm score; and, when `expected_model` is
    given, it was produced by that model.
    """
    return _read(path, expected_model)[1]


def read_harm_scores(path: str | Path, expected_model: str | None = None) -> HarmScores:
    """Read a harmfulness log (validated as by `read_harm_log`) with every judge's scores.

    Besides the `harm_judge` records, returns one JudgeScore per answer for each
    harm-judge score set: the original `harm_judge` and each `harm_judge1`,
    `harm_judge2`, ... that `inspect score --action append` added. Each score set is
    checked like `harm_judge` (a `harm_score` of 1-5 or null in its metadata).
    """
    log, harm_log, p = _read(path, expected_model)
    header_grader = _header_grader(log)
    scores: list[JudgeScore] = []
    for sample in log.samples or []:
        where = f"{p}: sample {sample.id!r} (epoch {sample.epoch})"
        names = sorted((n for n in sample.scores or {} if HARM_SCORE_NAME.match(n)), key=_scorer_order)
        for name in names:
            meta = (sample.scores or {})[name].metadata or {}
            scores.append(
                JudgeScore(
                    sample_id=sample.id,
                    epoch=sample.epoch,
                    scorer=name,
                    grader=_score_grader(meta, header_grader),
                    judge_prompt=meta.get("judge_prompt"),
                    harm_score=_harm_score(meta, where, name),
                    unscored_reason=meta.get("unscored_reason"),
                )
            )
    return HarmScores(log=harm_log, scores=tuple(scores))


def _read(path: str | Path, expected_model: str | None) -> tuple[EvalLog, HarmLog, Path]:
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
    header_grader = _header_grader(log)
    records = tuple(_record(sample, log.eval.model, header_grader, p) for sample in log.samples or [])
    if not records:
        raise HarmLogError(f"{p}: the harmfulness log holds no samples")
    if all(r.harm_score is None for r in records):
        raise HarmLogError(
            f"{p}: none of its {len(records)} samples has a 1-5 harm score "
            f"(every {HARM_SCORER} score is unscored); re-score it with a working grader"
        )
    graders = Counter(r.grader for r in records if r.grader is not None)
    grader = graders.most_common(1)[0][0] if graders else header_grader
    return log, HarmLog(path=p, model=log.eval.model, grader=grader, records=records), p


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


def _scorer_order(name: str) -> tuple[int, str]:
    match = HARM_SCORE_NAME.match(name)
    return (int(match.group("n") or 0) if match else -1, name)


def _score_grader(meta: dict[str, Any], header_grader: str | None) -> str | None:
    judge = meta.get("judge_model")
    return str(judge) if judge else header_grader


def _header_grader(log: EvalLog) -> str | None:
    """The header's grader role: the judge of the original run (stale after an overwrite re-score)."""
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


def _harm_score(meta: dict[str, Any], where: str, scorer: str) -> int | None:
    if "harm_score" not in meta:
        raise HarmLogError(f"{where}: the {scorer} score has no 'harm_score' in its metadata")
    harm = meta["harm_score"]
    if harm is not None and (isinstance(harm, bool) or not isinstance(harm, int) or not 1 <= harm <= 5):
        raise HarmLogError(f"{where}: {scorer} harm_score must be an integer 1-5 or null, got {harm!r}")
    return harm


def _record(sample: EvalSample, model: str, header_grader: str | None, path: Path) -> HarmRecord:
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
    return HarmRecord(
        sample_id=sample.id,
        epoch=sample.epoch,
        prompt=_prompt_text(sample),
        category=str(metadata["category"]),
        response=sample.output.completion if sample.output else "",
        harm_score=_harm_score(score_meta, where, HARM_SCORER),
        unscored_reason=score_meta.get("unscored_reason"),
        model=model,
        grader=_score_grader(score_meta, header_grader),
    )
