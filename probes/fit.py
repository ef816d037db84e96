"""Linear probes on residual activations: harmful behaviour and misaligned self-assessment.

For every model (one activations file from :mod:`analysis.activations`), task (``harm``: judge
score > 3; ``self_assessment``: score > 0.5), pooling and layer we fit a logistic-regression probe
(features standardised, then L2-regularised ``LogisticRegression``):

* **cross-validation**: ``StratifiedKFold(n_splits=5, shuffle=True, random_state=42)``; AUROC and
  accuracy per fold, reported as mean and (population) std over folds;
* **direction**: a probe fit on all of the model's data. Its weights ``w_std`` live in the
  standardised space; the decision function is ``w_std . (x - mu) / sigma + b``, so the normal of
  the decision hyperplane in the ORIGINAL activation space is ``w_std / sigma``. Directions are
  that vector scaled to unit length, and cosines are taken between them (``cosine``), because the
  original space is shared by both tasks and (for one base model) by all fine-tunes, whereas each
  probe's standardisation is its own. The cosine between the raw ``w_std`` vectors is reported
  too (``cosine_standardized``);
* **harm vs self-assessment**: the cosine between the two tasks' directions in each model, per
  pooling and layer (Weckauff et al. report about 0);
* **transfer**: the probe fit on all of model *i*'s data scores model *j*'s activations (AUROC);
  needs equal hidden sizes. On the diagonal (*i* = *j*) the value is the cross-validated mean
  AUROC, since an in-sample score would be inflated.

A (model, task, pooling, layer) whose minority class has fewer members than folds is skipped
from cross-validation (with the reason); one with a single class gets no direction either.

Output of :func:`run_probes` in ``OUT``:

``probes.json``::

    {"format": 1,
     "config": {"n_splits": 5, "random_state": 42, "C": 1.0, "max_iter": int,
                "thresholds": {"harm": 3.0, "self_assessment": 0.5}, "direction_space": "original"},
     "models": [{"model", "base_model", "adapter", "file", "hidden_size", "layers", "poolings",
                 "n": {task: int}}],
     "cv": [{"model", "task", "pooling", "layer", "n", "n_pos", "auroc_mean", "auroc_std",
             "accuracy_mean", "accuracy_std", "auroc_folds": [float]}],
     "cosine": [{"model", "pooling", "layer", "cosine", "cosine_standardized"}],
     "transfer": [{"task", "pooling", "layer", "train_model", "test_model", "auroc", "kind"}],
     "skipped": [{"model", "task", "pooling", "layer", "reason"}],
     "figures": {"auroc_by_layer": [path...], "transfer": [...], "cosine_by_layer": [...]}}

``kind`` is ``"cv"`` on the diagonal, ``"transfer"`` off it. NaN (e.g. a test set with one class)
is written as ``null``. The same rows are in ``probe_cv.csv`` (without ``auroc_folds``),
``probe_cosine.csv``, ``probe_transfer.csv`` and ``probe_skipped.csv``; figure paths are relative
to ``OUT``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from em_persona.contract.probe_results import (
    COSINE_COLUMNS,
    CV_COLUMNS,
    FORMAT_VERSION,
    RESULTS_FILE,
    SKIPPED_COLUMNS,
    TRANSFER_COLUMNS,
)
from em_persona.core.errors import EmPersonaError
from em_persona.core.files import write_json_atomic, write_text_atomic
from em_persona.probes.activations import THRESHOLDS, ActivationSet, load_activations

FigureWriter = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, Path], dict[str, list[Path]]]
"""Draws the probe figures from the CV, cosine and transfer tables into a folder (analysis.probe_figures)."""


class ProbeDataError(EmPersonaError, ValueError):
    """The labels cannot support the requested probe (too few members of a class)."""


@dataclass(frozen=True)
class ProbeConfig:
    """Probe hyper-parameters; the defaults follow Weckauff et al.'s probe section."""

    n_splits: int = 5
    random_state: int = 42
    C: float = 1.0
    max_iter: int = 5000


@dataclass(frozen=True)
class Direction:
    """Unit probe directions of a probe fit on all data."""

    original: np.ndarray  # w_std / sigma, unit length: the hyperplane normal in activation space
    standardized: np.ndarray  # w_std, unit length
    probe: Any  # the fitted sklearn Pipeline


def make_probe(config: ProbeConfig = ProbeConfig()) -> Any:
    """A fresh standardise-then-logistic-regression pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=config.C, max_iter=config.max_iter))


def _check_labels(y: np.ndarray, need: int) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ProbeDataError(
            f"only one class ({int(classes[0]) if len(classes) else 'none'}) among {len(y)} samples"
        )
    if counts.min() < need:
        raise ProbeDataError(
            f"the smaller class has {int(counts.min())} of {len(y)} samples; need at least {need}"
        )


def cross_validate(X: np.ndarray, y: np.ndarray, config: ProbeConfig = ProbeConfig()) -> dict[str, Any]:
    """Stratified k-fold AUROC and accuracy of the probe (mean and std over folds)."""
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(int)
    _check_labels(y, config.n_splits)
    folds = StratifiedKFold(n_splits=config.n_splits, shuffle=True, random_state=config.random_state)
    aurocs, accs = [], []
    for train, test in folds.split(X, y):
        probe = make_probe(config).fit(X[train], y[train])
        aurocs.append(float(roc_auc_score(y[test], probe.decision_function(X[test]))))
        accs.append(float(accuracy_score(y[test], probe.predict(X[test]))))
    return {
        "n": int(len(y)),
        "n_pos": int(y.sum()),
        "auroc_mean": float(np.mean(aurocs)),
        "auroc_std": float(np.std(aurocs)),
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "auroc_folds": aurocs,
    }


def fit_direction(X: np.ndarray, y: np.ndarray, config: ProbeConfig = ProbeConfig()) -> Direction:
    """Fit the probe on all data; return its unit directions (original and standardised space)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(int)
    _check_labels(y, 1)
    probe = make_probe(config).fit(X, y)
    scaler, logreg = probe[0], probe[-1]
    w_std = logreg.coef_[0].astype(np.float64)
    w_orig = w_std / scaler.scale_
    return Direction(_unit(w_orig), _unit(w_std), probe)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (NaN when either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return math.nan
    return float(np.dot(a, b) / (na * nb))


def transfer_auroc(direction: Direction, X: np.ndarray, y: np.ndarray) -> float:
    """AUROC of a fitted probe on other activations (NaN when ``y`` has one class)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, direction.probe.decision_function(np.asarray(X, dtype=np.float64))))


# ---------------------------------------------------------------------------------------------
# All models together


def analyse(sets: Sequence[ActivationSet], config: ProbeConfig = ProbeConfig()) -> dict[str, list[dict]]:
    """CV, cosine, transfer and skipped rows for a list of activation sets (one per model)."""
    from tqdm.auto import tqdm

    names = [s.model for s in sets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(
            f"two activation files name the same model: {', '.join(dupes)}; re-extract with --name"
        )
    cv_rows: list[dict] = []
    skipped: list[dict] = []
    directions: dict[tuple[str, str, str, int], Direction] = {}
    cv_auroc: dict[tuple[str, str, str, int], float] = {}
    jobs = [(s, t, p, layer) for s in sets for t in s.tasks for p in s.poolings for layer in s.layers]
    for aset, task, pooling, layer in tqdm(jobs, desc="probes", unit="probe"):
        X = aset.acts[task][pooling][layer]
        y = aset.labels(task)
        key = (aset.model, task, pooling, layer)
        where = {"model": aset.model, "task": task, "pooling": pooling, "layer": layer}
        try:
            cv = cross_validate(X, y, config)
            cv_rows.append({**where, **cv})
            cv_auroc[key] = cv["auroc_mean"]
        except ProbeDataError as exc:
            skipped.append({**where, "reason": f"cross-validation: {exc}"})
        try:
            directions[key] = fit_direction(X, y, config)
        except ProbeDataError as exc:
            skipped.append({**where, "reason": f"direction: {exc}"})

    cos_rows = []
    for aset in sets:
        for pooling in aset.poolings:
            for layer in aset.layers:
                h = directions.get((aset.model, "harm", pooling, layer))
                s = directions.get((aset.model, "self_assessment", pooling, layer))
                if h is None or s is None:
                    continue
                cos_rows.append(
                    {
                        "model": aset.model,
                        "pooling": pooling,
                        "layer": layer,
                        "cosine": cosine(h.original, s.original),
                        "cosine_standardized": cosine(h.standardized, s.standardized),
                    }
                )

    transfer_rows = []
    for train in sets:
        for test in sets:
            if train.hidden_size != test.hidden_size:
                continue
            for task in train.tasks:
                if task not in test.tasks:
                    continue
                for pooling in train.poolings:
                    if pooling not in test.poolings:
                        continue
                    for layer in train.layers:
                        if layer not in test.layers:
                            continue
                        key = (train.model, task, pooling, layer)
                        if train.model == test.model:
                            if key not in cv_auroc:
                                continue
                            auroc, kind = cv_auroc[key], "cv"
                        elif key in directions:
                            auroc = transfer_auroc(
                                directions[key], test.acts[task][pooling][layer], test.labels(task)
                            )
                            kind = "transfer"
                        else:
                            continue
                        transfer_rows.append(
                            {
                                "task": task,
                                "pooling": pooling,
                                "layer": layer,
                                "train_model": train.model,
                                "test_model": test.model,
                                "auroc": auroc,
                                "kind": kind,
                            }
                        )
    return {"cv": cv_rows, "cosine": cos_rows, "transfer": transfer_rows, "skipped": skipped}


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _nan_to_none(obj.item())
    return obj


def run_probes(
    files: Sequence[str | Path],
    out: str | Path,
    config: ProbeConfig = ProbeConfig(),
    figure_writer: FigureWriter | None = None,
) -> dict[str, Any]:
    """Load activation files, run all probes, write ``probes.json`` and CSVs to ``out``, and the
    figures with `figure_writer` when one is given (the CLI passes analysis.probe_figures')."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = [load_activations(f) for f in files]
    results = analyse(sets, config)
    tables = {
        "cv": pd.DataFrame(results["cv"], columns=CV_COLUMNS + ["auroc_folds"]),
        "cosine": pd.DataFrame(results["cosine"], columns=COSINE_COLUMNS),
        "transfer": pd.DataFrame(results["transfer"], columns=TRANSFER_COLUMNS),
        "skipped": pd.DataFrame(results["skipped"], columns=SKIPPED_COLUMNS),
    }
    for name, df in tables.items():
        cols = CV_COLUMNS if name == "cv" else list(df.columns)
        write_text_atomic(out / f"probe_{name}.csv", df[cols].to_csv(index=False))
    figure_paths: dict[str, list[str]] = {}
    if figure_writer is not None:
        figure_paths = {
            k: [str(Path(p).relative_to(out)) for p in v]
            for k, v in figure_writer(
                tables["cv"], tables["cosine"], tables["transfer"], out / "figures"
            ).items()
        }
    doc = {
        "format": FORMAT_VERSION,
        "config": {
            **asdict(config),
            "thresholds": dict(THRESHOLDS),
            "direction_space": "original",
        },
        "models": [
            {
                "model": s.model,
                "base_model": s.base_model,
                "adapter": s.adapter,
                "file": str(f),
                "hidden_size": s.hidden_size,
                "layers": s.layers,
                "poolings": s.poolings,
                "n": {t: len(s.ids[t]) for t in s.tasks},
            }
            for s, f in zip(sets, files, strict=False)
        ],
        **results,
        "figures": figure_paths,
    }
    write_json_atomic(out / RESULTS_FILE, _nan_to_none(doc), indent=2)
    return doc
