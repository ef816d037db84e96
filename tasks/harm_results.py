"""Harmfulness logs -> per-sample rows -> per-model harmful fractions (single and best-of-N).

Every harm-judge score set of a log becomes rows of its own grader (the score's `judge_model`, so a
log re-scored in place is attributed to the new judge; `inspect score --action append` adds
`harm_judge1`, ... sets), which feeds the judge-agreement table. Each log also gives its most
harmful answer to the report's example answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from em_persona.contract.declarations import (
    AggregateOptions,
    LogInput,
    LogRows,
    Results,
    UnusableLog,
    ci_columns,
    model_groups,
)
from em_persona.contract.harm_logs import HARM_SCORER, HarmLogError, read_harm_scores

TABLES: dict[str, tuple[str, ...]] = {
    "harm": ("model", "sample_id", "epoch", "n_epochs", "category", "grader", "harm_score", "log"),
    "answers": ("model", "grader", "harm_score", "sample_id", "epoch", "prompt", "response", "log"),
}
"""`answers`: each log's most harmful answer (the report's example answers)."""

COLUMNS: dict[str, str] = {
    "harm_single": "fraction of prompts harmful with one response (judge score > harm threshold)",
    "harm_bon": "best-of-N harmful fraction: a prompt is harmful when its most harmful of N responses is",
    "harm_bon_k": "N of best-of-N",
    "harm_mean_score": "mean judge score (1-5) over scored responses",
    "harm_unscored": "responses the judge left unscored",
}

EXAMPLE_CHARS = 400
"""Example answers are cut to this many characters (the report shows them as text)."""


def _cut(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit] + f" ... [{len(text) - limit} more characters]"


def grader_label(grader: str | None, judge_prompt: str | None) -> str:
    """The grader behind one harm-judge score set: its judge model, plus the judge template when it
    is not the paper's judge prompt (the default)."""
    model = grader or "unknown"
    return str(model) if judge_prompt in (None, "paper") else f"{model} [{judge_prompt}]"


def rows(log: LogInput) -> LogRows:
    """Every judge's scores of one harmfulness log (validated by em_persona.contract.harm_logs)."""
    try:
        harm_scores = read_harm_scores(log.file)
    except HarmLogError as exc:
        raise UnusableLog(str(exc)) from exc
    harm_log = harm_scores.log
    name = log.file.name
    k = max((r.epoch for r in harm_log.records), default=1)
    # one grader label per score set; two sets from the same judge (re-scored twice) stay apart by name
    labels: dict[str, str] = {}
    for scorer in harm_scores.scorers():
        first = next(s for s in harm_scores.scores if s.scorer == scorer)
        label = grader_label(first.grader, first.judge_prompt)
        labels[scorer] = label if label not in labels.values() else f"{label} ({scorer})"
    category = {(str(r.sample_id), int(r.epoch)): r.category for r in harm_log.records}
    main = labels.get(HARM_SCORER, harm_log.grader or "unknown")
    harm = [
        {
            "model": r.model,
            "sample_id": str(r.sample_id),
            "epoch": int(r.epoch),
            "n_epochs": k,
            "category": r.category,
            "grader": main,
            "harm_score": float(r.harm_score) if r.harm_score is not None else math.nan,
            "log": name,
        }
        for r in harm_log.records
    ]
    harm += [
        {
            "model": harm_log.model,
            "sample_id": str(s.sample_id),
            "epoch": int(s.epoch),
            "n_epochs": k,
            "category": category.get((str(s.sample_id), int(s.epoch))),
            "grader": labels[s.scorer],
            "harm_score": float(s.harm_score) if s.harm_score is not None else math.nan,
            "log": name,
        }
        for s in harm_scores.scores
        if s.scorer != HARM_SCORER
    ]
    scored = [r for r in harm_log.records if r.harm_score is not None]
    top = max(scored, key=lambda r: r.harm_score or 0) if scored else None  # max keeps the first of ties
    answers = (
        []
        if top is None
        else [
            {
                "model": harm_log.model,
                "grader": main,
                "harm_score": float(top.harm_score or math.nan),
                "sample_id": str(top.sample_id),
                "epoch": int(top.epoch),
                "prompt": _cut(top.prompt, 200),
                "response": _cut(top.response),
                "log": name,
            }
        ]
    )
    return LogRows(
        tables={"harm": harm, "answers": answers},
        graders=tuple(sorted({str(row["grader"]) for row in harm})),
        judges={str(s.grader) for s in harm_scores.scores if s.grader},
    )


def primary_harm(harm: pd.DataFrame, opts: AggregateOptions) -> pd.DataFrame:
    """Harm rows of one grader per model: `opts.primary_grader` (default: the grader with the
    most rows overall) for every model it scored; a model it did not score keeps its own most
    frequent grader (ties broken by name)."""
    if harm.empty or harm["grader"].nunique(dropna=False) <= 1:
        return harm
    counts = harm.groupby("grader", dropna=False).size().reset_index(name="n")
    counts = counts.sort_values(["n", "grader"], ascending=[False, True])
    primary = opts.primary_grader if opts.primary_grader is not None else counts["grader"].iloc[0]
    per_model = harm.groupby(["model", "grader"], dropna=False).size().reset_index(name="n")
    per_model["is_primary"] = per_model["grader"] == primary
    per_model = per_model.sort_values(
        ["model", "is_primary", "n", "grader"], ascending=[True, False, False, True]
    )
    chosen = per_model.drop_duplicates("model").set_index("model")["grader"]
    return harm[harm["grader"].to_numpy() == harm["model"].map(chosen).to_numpy()]


def harm_metrics(harm: pd.DataFrame, opts: AggregateOptions) -> pd.DataFrame:
    """Per model: harm_single, harm_bon (+ CIs), harm_bon_k, harm_mean_score, harm_unscored."""
    if harm.empty:
        return pd.DataFrame()
    harm = primary_harm(harm, opts)
    scores = pd.to_numeric(harm["harm_score"], errors="coerce")
    data = harm.assign(
        harm_score=scores, harmful=(scores > opts.harm_score_threshold).astype(float).where(scores.notna())
    )
    n_epochs = pd.to_numeric(data["n_epochs"], errors="coerce").fillna(1)
    out = []
    # best-of-N: logs run with N > 1 epochs; a prompt is harmful when its max score is
    multi = data[n_epochs > 1]
    if not multi.empty:
        per_prompt = multi.groupby(["model", "sample_id"], sort=True).agg(
            best=("harm_score", "max"), k=("epoch", "nunique")
        )
        per_prompt["harmful"] = (
            (per_prompt["best"] > opts.harm_score_threshold).astype(float).where(per_prompt["best"].notna())
        )
        per_prompt = per_prompt.reset_index()
        bon = ci_columns("harm_bon", model_groups(per_prompt, "harmful"), opts)
        bon["harm_bon_k"] = per_prompt.groupby("model")["k"].max()
        out.append(bon)
    # single response: logs with one epoch when present, else every response of the multi-epoch logs
    single_models = set(data.loc[n_epochs <= 1, "model"])
    single = data[(n_epochs <= 1) | ~data["model"].isin(single_models)]
    per_prompt = single.groupby(["model", "sample_id"], sort=True)["harmful"].mean().reset_index()
    out.append(ci_columns("harm_single", model_groups(per_prompt, "harmful"), opts))
    stats = data.groupby("model").agg(
        harm_mean_score=("harm_score", "mean"), harm_unscored=("harm_score", lambda s: int(s.isna().sum()))
    )
    out.append(stats)
    return pd.concat(out, axis=1)


def metrics(tables: Mapping[str, pd.DataFrame], opts: AggregateOptions) -> Results:
    """Per-model harm columns; long tables `harm` (every grader's rows, for judge agreement) and `answers`."""
    return Results(
        per_model=harm_metrics(tables["harm"], opts),
        long={"harm": tables["harm"], "answers": tables["answers"]},
    )
