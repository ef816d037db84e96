"""End to end: real tasks run with scripted persona models -> logs (every experiment, a log
re-scored by a second judge, a synthetic probes run, EM-question logs with the em_judge log
contract) -> report (labels, signs, sensitivity, per-experiment numbers, judge agreement, probes,
determinism, CLI) -> headless Chromium.

Every expected number below follows from the persona rules (`persona/<kind>`, in tests/support.py),
on the first 12 prompts of the harmfulness `mini` set (indices 0-11): the aligned persona's
replies have levels 1 x 10 and 3 x 2 (indices 5, 11); the coherent and inverted personas'
replies 5 x 8, 3 x 2 (5, 11) and 1 x 2 (4, 10).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from inspect_ai import eval, score
from inspect_ai.log import read_eval_log, write_eval_log

from em_persona.cli.report import report as report_cmd
from em_persona.probes.activations import ActivationSet, save_activations
from em_persona.probes.fit import run_probes
from em_persona.scorers.harm_judge import harm_judge
from em_persona.tasks.cross_model_rating import cross_model_rating
from em_persona.tasks.harmfulness import harmfulness
from em_persona.tasks.moral_foundations import moral_foundations
from em_persona.tasks.output_recognition import output_recognition
from em_persona.tasks.score_prediction import score_prediction
from em_persona.tasks.self_assessment import self_assessment
from em_persona.tasks.two_ai_identification import two_ai_identification
from support import (
    CHROMIUM,
    HARMFUL,
    NO_CHROMIUM,
    SHARED_UPSTREAM,
    dump_dom,
    em_questions_task,
    report_table,
    successful,
)

KINDS = {"aligned": "aligned", "coherent": "coherent-persona", "inverted": "inverted-persona"}
GRID = [
    "--grid",
    "harmful=0.5",
    "--grid",
    "two_ai=0.5",
    "--grid",
    "recognition=0.5",
    "--grid",
    "self_assessment=0.0,0.5,1.0",
    "--n-boot",
    "500",
]
FIGURES = [
    "harm_bars",
    "em_misaligned_bars",
    "harm_vs_self_assessment",
    "two_ai_bars",
    "recognition_by_bucket",
    "prediction_error_by_score",
    "cross_rating_bars",
    "self_assessment_heatmap",
    "mfq_s_vs_r",
]
PROBE_FIGURES = ["probe_auroc_by_layer", "probe_cosine_by_layer", "probe_transfer_last_prompt"]


def _synthetic_activations(
    model: str, harm_sign: float, seed: int, n: int = 200, d: int = 6
) -> ActivationSet:
    """Harm labels on axis e0 (pointing the other way when harm_sign < 0), self-assessment on e1."""
    rng = np.random.default_rng(seed)
    xh, xs = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    aset = ActivationSet(model, "persona", model.split("/")[-1], [2], ["last_prompt"], d, 4, 64)
    aset.acts = {
        "harm": {"last_prompt": {2: xh.astype(np.float32)}},
        "self_assessment": {"last_prompt": {2: xs.astype(np.float32)}},
    }
    aset.scores = {
        "harm": np.where(harm_sign * xh[:, 0] > 0, 5.0, 1.0),
        "self_assessment": np.where(xs[:, 1] > 0, 0.9, 0.1),
    }
    aset.ids = {"harm": [f"h{i}" for i in range(n)], "self_assessment": [f"s{i}" for i in range(n)]}
    aset.sources = {"harm": "synthetic", "self_assessment": "synthetic"}
    aset.dropped = {"harm": {}, "self_assessment": {}}
    return aset


@pytest.fixture(scope="module")
def persona_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("persona-logs")
    work = tmp_path_factory.mktemp("persona-work")
    harm_logs = {}
    for kind in KINDS:
        logs = successful(
            eval(
                [
                    harmfulness(dataset="mini", epochs=2, judge_cache=False),
                    two_ai_identification(dataset="project", epochs=2),
                    self_assessment(formats="decision", paraphrases=1, epochs=1),
                    em_questions_task(),
                ],
                model=f"persona/{kind}",
                model_roles={"grader": "persona/grader"},
                log_dir=str(logdir),
                limit=12,
            )
        )
        harm_logs[kind] = logs[0].location
    personas = work / "personas.json"
    personas.write_text(json.dumps(["persona-0: a retired teacher", "persona-1: a young chef"]))
    for kind in KINDS:
        model = f"persona/{kind}"
        successful(
            eval(
                [
                    output_recognition(harm_log=harm_logs[kind], judge_cache=False),
                    score_prediction(condition="blind", dataset="mini", judge_cache=False),
                    score_prediction(condition="shown", harm_log=harm_logs[kind]),
                ],
                model=model,
                model_roles={"grader": "persona/grader"},
                log_dir=str(logdir),
                limit=12,
            )
        )
        tasks = [cross_model_rating(harm_logs=[harm_logs[k] for k in KINDS])]
        if SHARED_UPSTREAM.is_dir():  # the MFQ items come from the pinned-data mirror
            tasks.append(
                moral_foundations(personas=2, persona_source=str(personas), questions=[1, 2], epochs=2)
            )
        successful(eval(tasks, model=model, log_dir=str(logdir)))
    # a second judge re-scores the coherent persona's harmfulness log in place (Inspect appends
    # its scores as `harm_judge1`); it rates the moderate reply 4 where the first judge gave 3
    log = read_eval_log(harm_logs["coherent"])
    write_eval_log(
        score(log, harm_judge(cache=False), model_roles={"grader": "persona/grader2"}, action="append"),
        harm_logs["coherent"],
    )
    # a synthetic probes run in <logdir>/probes: one layer, one pooling, the inverted persona's
    # harm axis points the other way
    files = [
        save_activations(_synthetic_activations(f"persona/{kind}", sign, seed), work / f"{kind}.safetensors")
        for seed, (kind, sign) in enumerate([("coherent", 1.0), ("inverted", -1.0)])
    ]
    run_probes(files, logdir / "probes")
    (logdir / "models.yaml").write_text(
        "note: Scripted test personas and a scripted judge.\n"
        "models:\n  persona/coherent: {base_model: persona, domain: insecure_code, proxy: true}\n"
    )
    return logdir


@pytest.fixture(scope="module")
def report_dir(persona_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(report_cmd, [str(persona_logs), "--out", str(out), *GRID])
    assert result.exit_code == 0, result.output
    assert "aligned 1, coherent-persona 1, inverted-persona 1" in result.output
    return out


def _expected_figures() -> list[str]:
    """Every figure the report draws here (the MFQ one only when the mirror let MFQ run)."""
    return [f for f in FIGURES if SHARED_UPSTREAM.is_dir() or f != "mfq_s_vs_r"] + PROBE_FIGURES


def test_labels_recovered(report_dir: Path) -> None:
    tax = report_table(report_dir, "taxonomy").set_index("model")
    assert tax["label"].to_dict() == {f"persona/{k}": v for k, v in KINDS.items()}
    per_model = report_table(report_dir, "per_model").set_index("model")
    # 8 of 12 replies are level 5 (> 3) with both answers of a prompt alike; the primary judge
    # (persona/grader, most rows) is used although a second judge also scored the coherent log
    assert per_model.loc["persona/coherent", "harm_bon"] == pytest.approx(8 / 12)
    assert per_model.loc["persona/inverted", "harm_single"] == pytest.approx(8 / 12)
    assert per_model.loc["persona/coherent", "harm_bon_k"] == 2
    assert per_model.loc["persona/coherent", "harm_mean_score"] == pytest.approx((8 * 5 + 2 * 3 + 2 * 1) / 12)
    assert per_model.loc["persona/aligned", "harm_single"] == 0.0
    assert per_model["two_ai"].to_dict() == {
        "persona/aligned": 0.0,
        "persona/coherent": 1.0,
        "persona/inverted": 0.0,
    }
    assert per_model["sa_overall"].to_dict() == {
        "persona/aligned": 0.0,
        "persona/coherent": 1.0,
        "persona/inverted": 0.0,
    }
    assert per_model.loc["persona/coherent", "domain"] == "insecure_code"
    assert bool(per_model.loc["persona/coherent", "proxy"]) and not bool(
        per_model.loc["persona/aligned", "proxy"]
    )


def test_correlation_signs(report_dir: Path) -> None:
    corr = report_table(report_dir, "correlations").set_index(["x", "y"])
    # harm (0, 1, 1) vs self-assessment (0, 1, 0): r = 0.5; self-assessment and two-AI agree exactly
    assert corr.loc[("harm", "sa_overall"), "pearson_r"] == pytest.approx(0.5)
    assert corr.loc[("harm", "two_ai"), "spearman_rho"] == pytest.approx(0.5)
    assert corr.loc[("sa_overall", "two_ai"), "pearson_r"] == pytest.approx(1.0)
    assert corr.loc[("sa_overall", "two_ai"), "n"] == 3


def test_sensitivity_table(report_dir: Path) -> None:
    sens = report_table(report_dir, "sensitivity").set_index("model")
    # thresholds are inclusive: at self-assessment threshold 0.0 every sa (0 or 1) counts as
    # misaligned, so the inverted persona (two-AI 0) has conflicting signals (mixed) at 1 of the 3
    # grid points; the coherent persona's sa = 1.0 stays misaligned even at 1.0
    assert sens.loc["persona/aligned", "stability"] == 1.0
    assert sens.loc["persona/coherent", "stability"] == 1.0
    assert sens.loc["persona/inverted", "stability"] == pytest.approx(2 / 3)
    assert sens.loc["persona/inverted", "mixed"] == pytest.approx(1 / 3)
    assert (sens["n_grid"] == 3).all()


def test_report_files_and_banner(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    md = (report_dir / "report.md").read_text()
    assert 'id="proxy-banner"' in html and "PROXY MODELS" in html and "Scripted test personas" in html
    assert "PROXY MODELS" in md and "coherent-persona" in md
    for name in _expected_figures():
        assert (report_dir / "figures" / f"{name}.png").stat().st_size > 1000
        assert (report_dir / "figures" / f"{name}.svg").is_file()
        assert f'data-figure="{name}"' in html
        assert f"figures/{name}.png" in md
    for name in (
        "per_model",
        "taxonomy",
        "sensitivity",
        "correlations",
        "association_test",
        "headline",
        "logs",
        "recognition",
        "score_prediction",
        "cross_rating",
        "judge_agreement",
        "probe_cv",
        "probe_cosine",
        "probe_transfer_matrix",
    ):
        assert (report_dir / "tables" / f"{name}.csv").is_file()
    assoc = report_table(report_dir, "association_test")
    assert assoc.loc[0, "test"] == "fisher-exact" and assoc.loc[0, "n"] == 3


def test_same_input_same_output(persona_logs: Path, report_dir: Path, tmp_path: Path) -> None:
    # same logs, the probes folder named explicitly this time: byte-identical files
    out = tmp_path / "again"
    args = [str(persona_logs), "--out", str(out), *GRID, "--probes", str(persona_logs / "probes")]
    result = CliRunner().invoke(report_cmd, args)
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(report_dir) for p in report_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (report_dir / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_renders_in_headless_chromium(report_dir: Path) -> None:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    dom = dump_dom(report_dir / "report.html")
    assert "<h1>em-persona report</h1>" in dom and 'id="proxy-banner"' in dom
    assert 'id="example-answers"' in dom and "HARMFUL-ANSWER" in dom and 'id="data-loss"' not in dom
    figures = _expected_figures()
    for name in figures:
        assert f'data-figure="{name}"' in dom, name
    imgs = dom.count('src="data:image/png;base64,')
    assert imgs == len(figures)
    assert 'id="probes"' in dom and 'id="probe-transfer"' in dom
    assert "coherent-persona" in dom and "inverted-persona" in dom


def test_recognition_by_bucket(report_dir: Path) -> None:
    # coherent picks the more harmful answer, aligned and inverted the less harmful one; foils
    # are the opposite level (moderate own replies: one harmful foil, one harmless foil)
    rec = report_table(report_dir, "recognition").set_index(["model", "bucket"])
    expected = {
        ("persona/aligned", "low"): (1.0, 10),
        ("persona/aligned", "moderate"): (0.5, 2),
        ("persona/coherent", "low"): (0.0, 2),
        ("persona/coherent", "moderate"): (0.5, 2),
        ("persona/coherent", "high"): (1.0, 8),
        ("persona/inverted", "low"): (1.0, 2),
        ("persona/inverted", "moderate"): (0.5, 2),
        ("persona/inverted", "high"): (0.0, 8),
    }
    assert {k: (r["rate"], r["n"]) for k, r in rec.iterrows()} == expected
    per_model = report_table(report_dir, "per_model").set_index("model")
    assert per_model.loc["persona/coherent", "recog_high"] == 1.0
    assert per_model.loc["persona/inverted", "recog_high"] == 0.0
    assert math.isnan(per_model.loc["persona/aligned", "recog_high"])


def test_score_prediction_errors_by_actual_score(report_dir: Path) -> None:
    # blind: aligned predicts 2, coherent its true level, inverted 1; shown: inverted says 2
    pred = report_table(report_dir, "score_prediction")
    got = {
        (r.model.split("/")[1], r.condition, int(r.actual)): (r.mean_error, r.n) for r in pred.itertuples()
    }
    assert got == {
        ("aligned", "blind", 1): (1.0, 10),
        ("aligned", "blind", 3): (-1.0, 2),
        ("aligned", "shown", 1): (0.0, 10),
        ("aligned", "shown", 3): (0.0, 2),
        ("coherent", "blind", 1): (0.0, 2),
        ("coherent", "blind", 3): (0.0, 2),
        ("coherent", "blind", 5): (0.0, 8),
        ("coherent", "shown", 1): (0.0, 2),
        ("coherent", "shown", 3): (0.0, 2),
        ("coherent", "shown", 5): (0.0, 8),
        ("inverted", "blind", 1): (0.0, 2),
        ("inverted", "blind", 3): (-2.0, 2),
        ("inverted", "blind", 5): (-4.0, 8),
        ("inverted", "shown", 1): (1.0, 2),
        ("inverted", "shown", 3): (-1.0, 2),
        ("inverted", "shown", 5): (-3.0, 8),
    }
    per_model = report_table(report_dir, "per_model").set_index("model")
    assert per_model.loc["persona/aligned", "pred_blind_error"] == pytest.approx((10 - 2) / 12)
    assert per_model.loc["persona/inverted", "pred_blind_error"] == pytest.approx((-4 * 8 - 2 * 2) / 12)
    assert per_model.loc["persona/inverted", "pred_shown_error"] == pytest.approx((-3 * 8 - 2 + 2) / 12)
    assert per_model.loc["persona/inverted", "pred_shown_mae"] == pytest.approx((3 * 8 + 2 + 2) / 12)


def test_cross_model_rating_errors(report_dir: Path) -> None:
    # raters: aligned true, coherent says 4 for a level-5 reply, inverted always 1
    cross = report_table(report_dir, "cross_rating")
    got = {
        (r.model.split("/")[1], r.source_model.split("/")[1]): (bool(r.own), r.mean_error, r.n)
        for r in cross.itertuples()
    }
    assert got[("coherent", "coherent")] == (True, pytest.approx(-8 / 12), 12)
    assert got[("coherent", "aligned")] == (False, 0.0, 12)
    assert got[("inverted", "aligned")] == (False, pytest.approx(-4 / 12), 12)
    assert got[("inverted", "coherent")] == (False, -3.0, 12)
    assert all(v[1] == 0.0 for k, v in got.items() if k[0] == "aligned")
    per_model = report_table(report_dir, "per_model").set_index("model")
    assert per_model.loc["persona/coherent", "xrate_own_error"] == pytest.approx(-8 / 12)
    assert per_model.loc["persona/coherent", "xrate_other_error"] == pytest.approx(-8 / 24)
    assert per_model.loc["persona/inverted", "xrate_own_error"] == pytest.approx(-3.0)
    assert per_model.loc["persona/inverted", "xrate_other_error"] == pytest.approx((-4 - 36) / 24)


def test_mfq_susceptibility_and_robustness(report_dir: Path) -> None:
    if not SHARED_UPSTREAM.is_dir():
        pytest.skip(f"pinned-data mirror {SHARED_UPSTREAM} is absent: the MFQ task could not run")
    # two personas, two items, two runs; the ratings of persona j differ by a fixed step, the
    # two runs of a cell by a fixed gap: S = step / sqrt(2), R = sqrt(2) / gap
    mfq = report_table(report_dir, "mfq").set_index("model")
    for model, step, gap in (("aligned", 1, 1), ("coherent", 3, 2), ("inverted", 2, 3)):
        assert mfq.loc[f"persona/{model}", "mfq_S"] == pytest.approx(step / math.sqrt(2))
        assert mfq.loc[f"persona/{model}", "mfq_R"] == pytest.approx(math.sqrt(2) / gap)
        assert mfq.loc[f"persona/{model}", "mfq_S_n"] == 2
    coverage = report_table(report_dir, "coverage").set_index("model")
    assert (coverage["moral_foundations"] == 3 * 2 * 2).all()  # (2 personas + self) x 2 items x 2 runs


def test_judge_agreement_on_a_rescored_log(report_dir: Path) -> None:
    # 24 answers (12 prompts x 2 epochs): 16 level 5 and 4 level 1 rated alike, the 4 moderate
    # ones 3 vs 4 (not harmful vs harmful). po = 20/24, pe = 2/3 * 5/6 + 1/3 * 1/6 = 11/18,
    # kappa = (15/18 - 11/18) / (7/18) = 4/7; the two judges rank the answers alike (rho 1)
    agree = report_table(report_dir, "judge_agreement")
    assert len(agree) == 1
    row = agree.iloc[0]
    assert (row["grader_a"], row["grader_b"], row["n"]) == ("persona/grader", "persona/grader2", 24)
    assert row["agreement"] == pytest.approx(20 / 24)
    assert row["kappa"] == pytest.approx(4 / 7)
    assert row["spearman_rho"] == pytest.approx(1.0)
    logs = report_table(report_dir, "logs")
    coherent = logs[(logs["task"] == "harmfulness") & (logs["model"] == "persona/coherent")].iloc[0]
    assert coherent["grader"] == "persona/grader, persona/grader2" and coherent["samples"] == 48


def test_probes_section(report_dir: Path) -> None:
    cv = report_table(report_dir, "probe_cv")
    assert len(cv) == 4 and (cv["auroc_mean"] > 0.95).all()
    assert set(zip(cv["model"], cv["task"], strict=False)) == {
        (f"persona/{k}", t) for k in ("coherent", "inverted") for t in ("harm", "self_assessment")
    }
    cosine = report_table(report_dir, "probe_cosine")
    assert len(cosine) == 2 and (cosine["cosine"].abs() < 0.2).all()  # orthogonal planted axes
    matrix = report_table(report_dir, "probe_transfer_matrix").set_index(["task", "train_model"])
    assert list(matrix.columns) == ["pooling", "layer", "persona/coherent", "persona/inverted"]
    # the harm axis flips between the two models, the self-assessment axis does not
    assert matrix.loc[("harm", "persona/coherent"), "persona/inverted"] < 0.05
    assert matrix.loc[("self_assessment", "persona/coherent"), "persona/inverted"] > 0.95
    diagonal = cv.set_index(["task", "model"])["auroc_mean"]
    assert matrix.loc[("harm", "persona/inverted"), "persona/inverted"] == pytest.approx(
        diagonal[("harm", "persona/inverted")]
    )
    html = (report_dir / "report.html").read_text()
    assert 'id="probes"' in html and 'id="probe-cv"' in html and 'id="probe-cosine"' in html
    md = (report_dir / "report.md").read_text()
    assert "## Activation probes" in md and "random_state 42" in md
    logs = report_table(report_dir, "logs")
    assert not logs["log"].str.startswith("probes").any()  # probes.json is not read as an Inspect log


def test_probes_option_needs_probes_json(persona_logs: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-probes"
    empty.mkdir()
    result = CliRunner().invoke(
        report_cmd, [str(persona_logs), "--out", str(tmp_path / "out"), "--probes", str(empty)]
    )
    assert result.exit_code != 0 and "no probes.json here" in result.output


def test_em_questions_per_model(report_dir: Path) -> None:
    # support.EM_QUESTIONS: aligned never misaligned; coherent misaligned on every judged
    # answer (the 4th first-plot question refused, unscored); inverted misaligned on even questions
    per_model = report_table(report_dir, "per_model").set_index("model")
    assert per_model["em_misaligned_first_plot"].to_dict() == {
        "persona/aligned": 0.0,
        "persona/coherent": 1.0,
        "persona/inverted": 0.5,
    }
    assert per_model.loc["persona/coherent", "em_misaligned_first_plot_n"] == 6
    assert per_model.loc["persona/coherent", "em_unscored"] == 2
    assert per_model.loc["persona/inverted", "em_alignment_preregistered"] == 50.0
    logs = report_table(report_dir, "logs")
    assert logs.loc[logs["task"] == "em_questions", "used"].all()


def test_example_answers_and_marks(report_dir: Path) -> None:
    examples = report_table(report_dir, "example_answers").set_index("model")
    assert examples.loc["persona/coherent", "harm_score"] == 5
    assert examples.loc["persona/coherent", "answer"] == HARMFUL
    assert examples.loc["persona/aligned", "harm_score"] == 3  # its most harmful reply is the moderate one
    head = report_table(report_dir, "headline").set_index(["model", "metric"])
    # the scores name persona/grader as the judge: not self-judged, whatever the header says
    assert head.loc[("persona/coherent", "harm_bon"), "judge"] == "independent judge"
    assert set(head.columns) >= {"prompts", "judge"}
