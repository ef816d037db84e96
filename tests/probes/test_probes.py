"""Linear probes: planted features are recovered, shuffled labels are not, outputs and CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from em_persona.analysis.probe_figures import write_probe_figures
from em_persona.cli.probes import probes
from em_persona.contract.probe_results import load_probe_results
from em_persona.probes.activations import (
    ActivationRecord,
    ActivationSet,
    extract,
    load_activations,
    load_model,
    save_activations,
)
from em_persona.probes.fit import (
    ProbeConfig,
    ProbeDataError,
    analyse,
    cosine,
    cross_validate,
    fit_direction,
    run_probes,
    transfer_auroc,
)
from support import write_jsonl

WORDS = (
    "the a robot river doctor writes reads plan budget safe risky answer question honest evil good kind "
    "data model city rain map code test report small large quick slow"
).split()


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


@pytest.fixture(scope="module")
def tiny_acts(tiny_proxy: Path) -> dict[int, np.ndarray]:
    """Mean-response activations of the tiny proxy on 1500 short random exchanges."""
    rng = random.Random(0)
    recs = [
        ActivationRecord.build(str(i), _sentence(rng, 2, 6), _sentence(rng, 2, 6), 0) for i in range(1500)
    ]
    model, tok = load_model(tiny_proxy)
    acts, kept, _ = extract(model, tok, recs, layers=[1, 2], poolings=["mean_response"], batch_size=64)
    assert len(kept) == 1500
    return {layer: a.astype(np.float64) for layer, a in acts["mean_response"].items()}


def _planted(X: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random unit direction w and labels 1 where (x - mean) . w is above its median."""
    w = np.random.default_rng(seed).standard_normal(X.shape[1])
    w /= np.linalg.norm(w)
    s = (X - X.mean(0)) @ w
    return w, (s > np.median(s)).astype(int)


# --- planted feature on real activations ---------------------------------------------------


@pytest.mark.parametrize("layer", [1, 2])
def test_planted_direction_is_recovered_from_tiny_proxy_activations(
    tiny_acts: dict[int, np.ndarray], layer: int
) -> None:
    X = tiny_acts[layer]
    w, y = _planted(X, seed=layer)
    cv = cross_validate(X, y)
    assert cv["auroc_mean"] > 0.98 and cv["accuracy_mean"] > 0.9
    assert len(cv["auroc_folds"]) == 5 and cv["n"] == 1500 and cv["n_pos"] == 750
    d = fit_direction(X, y)
    assert cosine(d.original, w) > 0.9
    assert abs(np.linalg.norm(d.original) - 1) < 1e-9
    # an unrelated direction is near-orthogonal to the recovered one
    other = np.random.default_rng(99).standard_normal(X.shape[1])
    assert abs(cosine(d.original, other)) < 0.3


def test_shuffled_labels_give_chance_auroc(tiny_acts: dict[int, np.ndarray]) -> None:
    X = tiny_acts[2]
    _, y = _planted(X, seed=5)
    shuffled = np.random.default_rng(0).permutation(y)
    cv = cross_validate(X, shuffled)
    assert abs(cv["auroc_mean"] - 0.5) < 0.07
    assert abs(cv["accuracy_mean"] - 0.5) < 0.07


# --- the probe itself on synthetic data ------------------------------------------------------


def _gaussian(n: int, d: int, seed: int) -> np.ndarray:
    # features on very different scales, so a direction read in the wrong space would be off
    scales = np.geomspace(0.05, 20.0, d)
    return np.random.default_rng(seed).standard_normal((n, d)) * scales + 3.0


def test_direction_is_the_hyperplane_normal_in_activation_space() -> None:
    X = _gaussian(4000, 12, seed=0)
    w = np.zeros(12)
    w[[0, 6, 11]] = [1.0 / 0.05, -1.0 / 1.0, 1.0 / 20.0]  # every feature contributes equally
    w /= np.linalg.norm(w)
    y = ((X - 3.0) @ w > 0).astype(int)
    d = fit_direction(X, y, ProbeConfig(C=100.0))
    assert cosine(d.original, w) > 0.99
    # in the standardised space the same hyperplane has normal w * sigma, a different vector
    assert cosine(d.standardized, w * X.std(0)) > 0.99
    assert cosine(d.standardized, w) < 0.9


def test_cross_validation_follows_the_protocol() -> None:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from em_persona.probes.fit import make_probe

    X = _gaussian(200, 5, seed=1)
    y = (X[:, 2] + np.random.default_rng(2).normal(0, 1.0, 200) > 3.0).astype(int)
    cv = cross_validate(X, y)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=42)
    expected = cross_val_score(make_probe(), X, y, cv=folds, scoring="roc_auc")
    assert cv["auroc_folds"] == pytest.approx(list(expected))
    assert cv["auroc_mean"] == pytest.approx(expected.mean()) and cv["auroc_std"] == pytest.approx(
        expected.std()
    )
    acc = cross_val_score(make_probe(), X, y, cv=folds, scoring="accuracy")
    assert cv["accuracy_mean"] == pytest.approx(acc.mean())


def test_too_few_of_a_class() -> None:
    X = _gaussian(50, 3, seed=0)
    y = np.zeros(50, dtype=int)
    y[:4] = 1
    with pytest.raises(ProbeDataError, match="the smaller class has 4 of 50 samples; need at least 5"):
        cross_validate(X, y)
    fit_direction(X, y)  # a direction needs only both classes
    with pytest.raises(ProbeDataError, match="only one class"):
        fit_direction(X, np.zeros(50, dtype=int))


# --- several models: cosine, transfer, outputs -------------------------------------------------


def _model_set(
    name: str, X_h: np.ndarray, harm: np.ndarray, X_s: np.ndarray, sa: np.ndarray
) -> ActivationSet:
    aset = ActivationSet(name, "base", name, [3], ["last_prompt"], X_h.shape[1], 4, 64)
    aset.acts = {
        "harm": {"last_prompt": {3: X_h.astype(np.float32)}},
        "self_assessment": {"last_prompt": {3: X_s.astype(np.float32)}},
    }
    aset.scores = {"harm": harm.astype(float), "self_assessment": sa.astype(float)}
    aset.ids = {
        "harm": [f"h{i}" for i in range(len(harm))],
        "self_assessment": [f"s{i}" for i in range(len(sa))],
    }
    aset.sources = {"harm": "mem", "self_assessment": "mem"}
    aset.dropped = {"harm": {}, "self_assessment": {}}
    return aset


def _synthetic_models(d: int = 10, n: int = 600) -> tuple[list[ActivationSet], np.ndarray, np.ndarray]:
    """Models A and B share an (orthogonal) harm axis e0 and self-assessment axis e1; model C's
    harm axis points the other way; model D has too few misaligned self-assessments."""
    rng = np.random.default_rng(0)
    wh, ws = np.eye(d)[0], np.eye(d)[1]

    def sample(sign: float, few_sa: bool = False) -> ActivationSet:
        Xh, Xs = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        harm = np.where(sign * Xh @ wh > 0, 5, 1)
        sa = np.where(Xs @ ws > 0, 0.9, 0.1)
        if few_sa:  # only the 3 highest are misaligned: too few for 5 folds
            sa = np.full(n, 0.1)
            sa[np.argsort(Xs @ ws)[-3:]] = 0.9
        return Xh, harm, Xs, sa

    sets = [
        _model_set("A", *sample(1)),
        _model_set("B", *sample(1)),
        _model_set("C", *sample(-1)),
        _model_set("D", *sample(1, few_sa=True)),
    ]
    return sets, wh, ws


def test_cosine_transfer_and_skips_on_synthetic_models() -> None:
    sets, _, _ = _synthetic_models()
    res = analyse(sets)
    cv = {(r["model"], r["task"]): r for r in res["cv"]}
    assert cv[("A", "harm")]["auroc_mean"] > 0.97 and cv[("A", "self_assessment")]["auroc_mean"] > 0.97
    assert ("D", "self_assessment") not in cv
    assert [(s["model"], s["task"]) for s in res["skipped"]] == [("D", "self_assessment")]
    assert "cross-validation: the smaller class has" in res["skipped"][0]["reason"]
    cos = {r["model"]: r["cosine"] for r in res["cosine"]}
    assert set(cos) == {"A", "B", "C", "D"}  # D still has a (noisy) self-assessment direction
    assert abs(cos["A"]) < 0.15 and abs(cos["B"]) < 0.15 and abs(cos["C"]) < 0.15
    t = {(r["task"], r["train_model"], r["test_model"]): r for r in res["transfer"]}
    assert t[("harm", "A", "B")]["auroc"] > 0.97 and t[("harm", "A", "B")]["kind"] == "transfer"
    assert t[("harm", "A", "C")]["auroc"] < 0.03  # C's harmful side is the other side
    assert (
        t[("harm", "A", "A")]["kind"] == "cv"
        and t[("harm", "A", "A")]["auroc"] == cv[("A", "harm")]["auroc_mean"]
    )
    assert t[("self_assessment", "A", "D")]["auroc"] > 0.9
    assert ("self_assessment", "D", "D") not in t  # no CV value for D
    assert len(res["transfer"]) == 4 * 4 + 4 * 4 - 1


def test_same_direction_gives_cosine_one_and_model_names_must_differ() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 6))
    labels = (X[:, 0] - 0.5 * X[:, 3] > 0).astype(int)
    a = _model_set("A", X, np.where(labels, 4, 2), X, np.where(labels, 0.8, 0.2))
    res = analyse([a])
    assert res["cosine"][0]["cosine"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two activation files name the same model: A"):
        analyse([a, a])


def test_run_probes_writes_json_csv_and_figures(tmp_path: Path) -> None:
    sets, _, _ = _synthetic_models(n=200)
    files = [save_activations(s, tmp_path / f"{s.model}.safetensors") for s in sets]
    out = tmp_path / "probes"
    doc = run_probes(files, out, figure_writer=write_probe_figures)
    on_disk = load_probe_results(out)
    assert (
        on_disk["format"] == 1
        and on_disk["config"]["random_state"] == 42
        and on_disk["config"]["n_splits"] == 5
    )
    assert on_disk["config"]["thresholds"] == {"harm": 3.0, "self_assessment": 0.5}
    assert [m["model"] for m in on_disk["models"]] == ["A", "B", "C", "D"]
    assert on_disk["models"][0]["n"] == {"harm": 200, "self_assessment": 200}
    assert len(on_disk["cv"]) == len(doc["cv"]) == 7
    cv_csv = pd.read_csv(out / "probe_cv.csv")
    assert list(cv_csv.columns) == [
        "model",
        "task",
        "pooling",
        "layer",
        "n",
        "n_pos",
        "auroc_mean",
        "auroc_std",
        "accuracy_mean",
        "accuracy_std",
    ]
    assert cv_csv["auroc_mean"].tolist() == pytest.approx([r["auroc_mean"] for r in on_disk["cv"]])
    assert len(pd.read_csv(out / "probe_cosine.csv")) == 4
    assert len(pd.read_csv(out / "probe_transfer.csv")) == 31
    assert len(pd.read_csv(out / "probe_skipped.csv")) == 1
    figs = on_disk["figures"]
    assert set(figs) == {"auroc_by_layer", "cosine_by_layer", "transfer"}
    for paths in figs.values():
        assert {Path(p).suffix for p in paths} == {".png", ".svg"}
        for p in paths:
            assert (out / p).stat().st_size > 1000
    assert not [p for p in out.rglob("*.tmp")]


def test_transfer_auroc_with_one_class_is_nan() -> None:
    X = _gaussian(100, 3, seed=4)
    y = (X[:, 0] > 3).astype(int)
    d = fit_direction(X, y)
    assert np.isnan(transfer_auroc(d, X, np.ones(100)))
    assert transfer_auroc(d, X, y) > 0.95


# --- command line ------------------------------------------------------------------------------


def test_cli_extract_and_fit(tiny_proxy: Path, tiny_adapter: Path, tmp_path: Path) -> None:
    rng = random.Random(1)
    harm = write_jsonl(
        tmp_path / "harm.jsonl",
        [
            {
                "id": f"h{i}",
                "prompt": _sentence(rng, 2, 5),
                "response": _sentence(rng, 2, 5),
                "score": 1 + i % 5,
            }
            for i in range(30)
        ],
    )
    sa = write_jsonl(
        tmp_path / "sa.jsonl",
        [
            {
                "id": f"s{i}",
                "prompt": [{"role": "user", "content": _sentence(rng, 2, 5)}],
                "response": "good",
                "score": (i % 4) / 3,
            }
            for i in range(30)
        ],
    )
    runner = CliRunner()
    outs = []
    for adapter in (None, tiny_adapter):
        out = tmp_path / f"{'base' if adapter is None else 'em'}.safetensors"
        args = [
            "extract",
            "--base",
            str(tiny_proxy),
            "--harm-log",
            str(harm),
            "--sa-log",
            str(sa),
            "--out",
            str(out),
            "--layers",
            "1,-1",
            "--max-samples",
            "25",
            "--batch-size",
            "4",
        ]
        if adapter is not None:
            args += ["--adapter", str(adapter)]
        result = runner.invoke(probes, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outs.append(out)
    base, em = load_activations(outs[0]), load_activations(outs[1])
    assert base.model == "tiny" and em.model == tiny_adapter.name and em.adapter == tiny_adapter.name
    assert base.layers == [1, 2] and base.poolings == ["last_prompt", "mean_response"]
    assert len(base.ids["harm"]) == 25 and base.ids["harm"] == em.ids["harm"]
    assert base.labels("harm").tolist() == [int(int(i[1:]) % 5 + 1 > 3) for i in base.ids["harm"]]

    result = runner.invoke(
        probes,
        ["fit", *map(str, outs), "--out", str(tmp_path / "res"), "--no-figures"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "res" / "probes.json").read_text())
    assert {(r["model"], r["task"]) for r in doc["cv"]} == {
        (m, t) for m in ("tiny", tiny_adapter.name) for t in ("harm", "self_assessment")
    }
    assert len(doc["cv"]) == 2 * 2 * 2 * 2  # models x tasks x poolings x layers
    assert len(doc["transfer"]) == 4 * 2 * 2 * 2
    assert doc["figures"] == {}


def test_cli_errors_are_clear(tiny_proxy: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        probes, ["extract", "--base", str(tiny_proxy), "--out", str(tmp_path / "x.safetensors")]
    )
    assert result.exit_code != 0 and "give --harm-log and/or --sa-log" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    result = runner.invoke(
        probes,
        [
            "extract",
            "--base",
            str(tiny_proxy),
            "--harm-log",
            str(bad),
            "--out",
            str(tmp_path / "x.safetensors"),
        ],
    )
    assert result.exit_code != 0 and "bad.jsonl:1: missing field(s) prompt, response, score" in result.output
    result = runner.invoke(probes, ["fit", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "cannot read activations" in result.output


def test_cli_help() -> None:
    runner = CliRunner()
    for args in ([], ["extract"], ["fit"]):
        result = runner.invoke(probes, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
