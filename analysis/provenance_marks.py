"""Which numbers of the report rest on prompts that are not the paper's, or on a self-judging model.

Each task records in its log header (`eval.metadata`) the prompts it sent (em_persona.provenance:
`prompt_origin`, `prompts_not_paper`) and who judged (scorers.grader: `self_judged`);
analysis.logs copies them into the logs table, and takes `self_judged` from the scores'
`judge_model` where a task records one per answer (the judge that actually scored). This module
turns the used logs into one mark per model and measurement, and per headline metric.
Logs written before these keys existed are marked "unknown", never guessed.
"""

from __future__ import annotations

import pandas as pd

from em_persona.analysis.logs import NO_JUDGE, UNKNOWN

# metric name prefix -> (task, {log column: value} that selects the logs behind it); first match wins
METRIC_SOURCES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("harm_", "harmfulness", {}),
    ("em_", "em_questions", {}),
    ("sa_paper", "self_assessment", {"dataset": "paper"}),
    ("sa_", "self_assessment", {"dataset": "project"}),
    ("two_ai", "two_ai_identification", {}),
    ("recog_", "output_recognition", {}),
    ("pred_blind", "score_prediction", {"condition": "blind"}),
    ("pred_shown", "score_prediction", {"condition": "shown"}),
    ("xrate_", "cross_model_rating", {}),
    ("mfq_", "moral_foundations", {}),
)

PAPER = "paper"
PROMPTS_UNKNOWN = "unknown (log predates prompt marks)"
SELF_JUDGED = "self-judged"
JUDGE_UNKNOWN = "unknown (log predates judge marks)"

MARK_COLUMNS = ["model", "experiment", "measurement", "prompts", "judge", "logs"]

LEGEND = (
    "prompts: 'paper' when every prompt of the logs behind a number is the paper's own text; "
    "'not paper: ROLE (ORIGIN), ...' names the prompt roles (request, question, judge, framing, ...) "
    "that used this project's wording (project) or the user's template file (custom), see "
    "each task's PROMPTS (em-persona prompts) and doc; 'unknown' for logs written before tasks recorded "
    "their prompts. judge: 'self-judged' when the judge was the evaluated model itself (the header's "
    "self_judged mark, or the scores' judge_model equal to the model), 'independent judge' otherwise, "
    "'no judge' for tasks without one."
)


def _source(metric: str) -> tuple[str, dict[str, str]] | None:
    for prefix, task, where in METRIC_SOURCES:
        if metric.startswith(prefix):
            return task, where
    return None


def _prompts(rows: pd.DataFrame) -> str:
    origins = set(rows["prompt_origin"].astype(str))
    if UNKNOWN in origins:
        return PROMPTS_UNKNOWN
    if origins == {PAPER}:
        return PAPER
    roles = sorted(
        {
            r.strip()
            for v in rows["prompts_not_paper"].astype(str)
            if v != UNKNOWN
            for r in v.split(",")
            if r.strip()
        }
    )
    return f"not paper: {', '.join(roles) or '(roles not recorded) ' + '/'.join(sorted(origins - {PAPER}))}"


def _judge(rows: pd.DataFrame) -> str:
    marks = list(rows["self_judged"])
    if any(m is True or str(m) == "True" for m in marks):
        return SELF_JUDGED
    if all(m is False or str(m) == "False" for m in marks):
        return "independent judge"
    if all(str(m) == NO_JUDGE for m in marks):
        return NO_JUDGE
    return JUDGE_UNKNOWN


def _used(logs: pd.DataFrame) -> pd.DataFrame:
    used = logs[logs["used"].astype(bool)].copy()
    for col in ("dataset", "condition"):
        if col not in used:
            used[col] = ""
        used[col] = used[col].fillna("").astype(str)
    return used


def marks_table(logs: pd.DataFrame) -> pd.DataFrame:
    """One row per model and measurement (task, and the self-assessment dataset / score-prediction
    condition): prompts and judge marks of the logs used for it. Columns: MARK_COLUMNS."""
    used = _used(logs)
    rows = []
    for (model, task), group in used.groupby(["model", "task"], sort=True):
        split = (
            "dataset" if task == "self_assessment" else "condition" if task == "score_prediction" else None
        )
        parts = group.groupby(split, sort=True) if split else [("", group)]
        for value, rows_ in parts:
            rows.append(
                {
                    "model": model,
                    "experiment": task,
                    "measurement": f"{split}={value}" if split else "",
                    "prompts": _prompts(rows_),
                    "judge": _judge(rows_),
                    "logs": ", ".join(sorted(rows_["log"].astype(str))),
                }
            )
    return pd.DataFrame(rows, columns=MARK_COLUMNS)


def metric_marks(logs: pd.DataFrame, model: str, metric: str) -> tuple[str, str]:
    """(prompts, judge) marks of one model's metric, from the logs that fed it ("" when none)."""
    source = _source(metric)
    if source is None:
        return "", ""
    task, where = source
    used = _used(logs)
    rows = used[(used["model"] == model) & (used["task"] == task)]
    for col, value in where.items():
        rows = rows[rows[col] == value]
    if rows.empty:
        return "", ""
    return _prompts(rows), _judge(rows)


def add_marks(headline: pd.DataFrame, logs: pd.DataFrame) -> pd.DataFrame:
    """The headline table with `prompts` and `judge` columns (metric_marks of each row)."""
    marks = [metric_marks(logs, str(r.model), str(r.metric)) for r in headline.itertuples()]
    return headline.assign(prompts=[m[0] for m in marks], judge=[m[1] for m in marks])


def taxonomy_marks(logs: pd.DataFrame, models: list[str], self_assessment_set: str) -> dict[str, str]:
    """Per model, one line naming the measurements behind its label whose prompts are not the
    paper's (or unknown) and those that were self-judged ("" when none)."""
    table = marks_table(logs)
    inputs = {"harmfulness", "two_ai_identification", "output_recognition"}
    out = {}
    for model in models:
        rows = table[
            (table["model"] == model)
            & (
                table["experiment"].isin(inputs)
                | (
                    (table["experiment"] == "self_assessment")
                    & (table["measurement"] == f"dataset={self_assessment_set}")
                )
            )
        ]
        notes = []
        for r in rows.itertuples():
            name = r.experiment + (f" ({r.measurement})" if r.measurement else "")
            if r.prompts != PAPER:
                notes.append(f"{name}: prompts {r.prompts}")
            if r.judge in (SELF_JUDGED, JUDGE_UNKNOWN):
                notes.append(f"{name}: judge {r.judge}")
        out[model] = "; ".join(notes)
    return out
