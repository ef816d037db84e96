"""What reaches the report, and what it says about data it could not use.

Small log folders built from real tasks run with the scripted personas (`persona/<kind>`, in
tests/support.py): unusable logs named with the reason (and the CLI's exit code), EM-question
logs, one figure per experiment, self-assessment sets that never supersede each other,
prompt-provenance and self-judged marks, and the MFQ authors' published runs beside this run's.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from inspect_ai import eval
from inspect_ai.log import read_eval_log, write_eval_log

from em_persona.analysis.logs import read_logs
from em_persona.cli.report import report as report_cmd
from em_persona.tasks.harmfulness import harmfulness
from em_persona.tasks.self_assessment import self_assessment
from support import SHARED_UPSTREAM, em_questions_task, report_table, successful

ROLES = {"grader": "persona/grader"}


def _harm(kind: str, logdir: Path, epochs: int = 1) -> Path:
    [log] = successful(
        eval(
            harmfulness(dataset="mini", epochs=epochs, judge_cache=False),
            model=f"persona/{kind}",
            model_roles=ROLES,
            log_dir=str(logdir),
            limit=6,
        )
    )
    return Path(log.location)


def _report(logdir: Path, out: Path, *args: str) -> object:
    return CliRunner().invoke(report_cmd, [str(logdir), "--out", str(out), "--n-boot", "200", *args])


@pytest.fixture(scope="module")
def harm_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One single-response harmfulness log per persona (mini prompts 0-5), and a best-of-2 one for coherent."""
    logdir = tmp_path_factory.mktemp("harm-logs")
    logs = {kind: _harm(kind, logdir) for kind in ("aligned", "coherent", "inverted")}
    logs["coherent-bon"] = _harm("coherent", logdir, epochs=2)
    return logs


def _folder(tmp_path: Path, logs: list[Path]) -> Path:
    logdir = tmp_path / "logs"
    logdir.mkdir(parents=True)
    for log in logs:
        shutil.copy(log, logdir / log.name)
    return logdir


def _with_status(src: Path, dest: Path, status: str, message: str | None = None) -> None:
    log = read_eval_log(str(src))
    log.status = status  # type: ignore[assignment]
    if message is not None:
        from inspect_ai.log import EvalError

        log.error = EvalError(message=message, traceback="", traceback_ansi="")
    write_eval_log(log, str(dest))


def test_unusable_logs_are_named(harm_logs: dict[str, Path], tmp_path: Path) -> None:
    logdir = _folder(tmp_path, [harm_logs["coherent"], harm_logs["aligned"]])
    src = harm_logs["inverted"]
    stem = src.name.rsplit("_", 1)[0]
    _with_status(
        src, logdir / f"{stem}_errorerrorerrorerror01.eval", "error", "RuntimeError('judge went away')"
    )
    _with_status(src, logdir / f"{stem}_cancelledcancelled0002.eval", "cancelled")
    _with_status(src, logdir / f"{stem}_startedstartedstarted3.eval", "started")
    truncated = logdir / f"{stem}_truncatedtruncatedtrun4.eval"
    truncated.write_bytes(src.read_bytes()[:1500])
    (logdir / "2026-01-01T00-00-00+00-00_harmfulness_notjsonnotjsonnotjso.json").write_text("{not json")
    # not logs: eval_set's own record, the model facts, probe results
    (logdir / "eval-set.json").write_text(json.dumps({"eval_set_id": "x", "tasks": []}))
    (logdir / "models.yaml").write_text("models: {}\n")
    (logdir / "probes").mkdir()
    shutil.copy(src, logdir / "probes" / src.name)

    _, logs = read_logs(logdir)
    names = set(logs["log"])
    assert not any(n.startswith(("eval-set", "models", "probes")) for n in names), names
    notes = logs.set_index("log")["note"].to_dict()
    usable = logs.set_index("log")["usable"].to_dict()
    assert usable == {n: n in (harm_logs["coherent"].name, harm_logs["aligned"].name) for n in names}
    assert "status error: RuntimeError('judge went away')" in notes[f"{stem}_errorerrorerrorerror01.eval"]
    assert notes[f"{stem}_cancelledcancelled0002.eval"].startswith("cancelled")
    assert notes[f"{stem}_startedstartedstarted3.eval"].startswith("unfinished")
    assert notes[truncated.name].startswith("unreadable (truncated")
    assert notes["2026-01-01T00-00-00+00-00_harmfulness_notjsonnotjsonnotjso.json"].startswith("unreadable")

    out = tmp_path / "out"
    result = _report(logdir, out)
    assert result.exit_code == 0, result.output
    for name in (n for n, ok in usable.items() if not ok):
        assert f"unusable log {name}: " in result.stderr
    assert "5 unusable log(s)" in result.stderr
    html = (out / "report.html").read_text()
    top = html.split('<h2 id="taxonomy">')[0]
    assert 'id="data-loss"' in top and "Data lost: 5 unusable log(s)" in top
    assert "<b>harmfulness</b>: persona/inverted, unknown model" in top
    assert "errorerrorerrorerror01.eval: status error: RuntimeError(&#39;judge went away&#39;)" in top
    md = (out / "report.md").read_text()
    assert md.index("Data lost: 5 unusable log(s)") < md.index("## Taxonomy")

    strict = _report(logdir, tmp_path / "strict", "--strict")
    assert strict.exit_code == 1 and "5 unusable log(s) (--strict)" in strict.output
    assert truncated.name in strict.output and not (tmp_path / "strict" / "report.html").exists()


def test_no_usable_log_exits_non_zero(harm_logs: dict[str, Path], tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    src = harm_logs["coherent"]
    (logdir / src.name).write_bytes(src.read_bytes()[:1500])
    (logdir / "eval-set.json").write_text(json.dumps({"eval_set_id": "x", "tasks": []}))
    result = _report(logdir, tmp_path / "out")
    assert result.exit_code == 1
    assert "no usable em-persona log (1 file(s) listed, none usable)" in result.output
    assert src.name in result.output and "unreadable (truncated" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _report(empty, tmp_path / "out2")
    assert result.exit_code == 1 and "no Inspect log found" in result.output


def test_em_questions_reach_the_report(tmp_path: Path) -> None:
    """EM logs alone: per model and question set, misaligned rate with CI, mean alignment and
    coherence, unscored answers counted apart; their own figure (see support.EM_QUESTIONS)."""
    logdir = tmp_path / "logs"
    for kind in ("coherent", "inverted"):
        successful(eval(em_questions_task(), model=f"persona/{kind}", log_dir=str(logdir)))
    out = tmp_path / "out"
    result = _report(logdir, out)
    assert result.exit_code == 0, result.output
    logs = report_table(out, "logs")
    assert logs["used"].all() and (logs["note"].fillna("") == "").all()
    em = report_table(out, "em_questions").set_index(["model", "question_set"])
    # coherent: first_plot 3 of 4 questions answered misaligned, the 4th refused (unscored), 2 epochs
    row = em.loc[("persona/coherent", "first_plot")]
    assert (row["misaligned"], row["n"], row["unscored"]) == (1.0, 6, 2)
    assert (row["mean_alignment"], row["mean_coherence"], row["judge"]) == (10.0, 80.0, "persona/grader")
    # inverted: misaligned on even questions: first_plot 2 of 4, preregistered 1 of 2
    row = em.loc[("persona/inverted", "first_plot")]
    assert (row["misaligned"], row["n"], row["unscored"]) == (0.5, 8, 0)
    assert (row["mean_alignment"], row["mean_coherence"]) == (50.0, 85.0)
    assert row["ci_lo"] < 0.5 < row["ci_hi"]
    assert em.loc[("persona/inverted", "preregistered"), "misaligned"] == 0.5
    per_model = report_table(out, "per_model").set_index("model")
    assert per_model.loc["persona/inverted", "em_misaligned_preregistered_n"] == 4
    assert per_model.loc["persona/coherent", "em_unscored"] == 2
    head = report_table(out, "headline")
    assert {"em_misaligned_first_plot", "em_misaligned_preregistered"} <= set(head["metric"])
    assert (out / "figures" / "em_misaligned_bars.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert 'data-figure="em_misaligned_bars"' in html and 'id="em-table"' in html


def test_each_experiment_has_its_figure(harm_logs: dict[str, Path], tmp_path: Path) -> None:
    """Harmfulness logs alone: the harmful-fraction figure (single and best-of-N side by side)."""
    out = tmp_path / "out"
    result = _report(_folder(tmp_path, list(harm_logs.values())), out)
    assert result.exit_code == 0, result.output
    per_model = report_table(out, "per_model").set_index("model")
    # mini prompts 0-5: coherent replies 5, 5, 5, 5, 1, 3 -> 4 of 6 harmful, in both conditions
    assert per_model.loc["persona/coherent", "harm_single"] == pytest.approx(4 / 6)
    assert per_model.loc["persona/coherent", "harm_bon"] == pytest.approx(4 / 6)
    assert math.isnan(per_model.loc["persona/aligned", "harm_bon"])
    assert (out / "figures" / "harm_bars.png").stat().st_size > 1000
    svg = (out / "figures" / "harm_bars.svg").read_text()
    assert "best-of-2" in svg and "single response" in svg
    html = (out / "report.html").read_text()
    assert 'data-figure="harm_bars"' in html
    assert "Two-AI identification: fraction choosing the misaligned description: not shown" in html


@pytest.mark.skipif(
    not SHARED_UPSTREAM.is_dir(), reason="the paper's self-assessment prompts come from the mirror"
)
def test_self_assessment_sets_never_supersede(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    for dataset in ("project", "paper", "project"):  # the second project log is a rerun
        successful(
            eval(
                self_assessment(dataset=dataset, formats="decision", paraphrases=1, epochs=1),
                model="persona/coherent",
                log_dir=str(logdir),
            )
        )
    successful(
        eval(
            harmfulness(dataset="mini", judge_cache=False),
            model="persona/coherent",
            model_roles=ROLES,
            log_dir=str(logdir),
            limit=6,
        )
    )
    _, logs = read_logs(logdir)
    sa = logs[logs["task"] == "self_assessment"].copy()
    # in run order: `created` has whole seconds and these runs may start in one; then by file time
    sa["written"] = [(logdir / log).stat().st_mtime_ns for log in sa["log"]]
    sa = sa.sort_values(["created", "written"]).reset_index(drop=True)
    assert list(sa["dataset"]) == ["project", "paper", "project"]
    assert list(sa["used"]) == [False, True, True]
    assert sa.loc[0, "note"].startswith(f"superseded by {sa.loc[2, 'log']} ")
    assert sa.loc[1, "note"] == ""  # the paper set is another measurement: used, nothing superseded

    out = tmp_path / "out"
    assert _report(logdir, out).exit_code == 0
    per_model = report_table(out, "per_model").set_index("model")
    assert per_model.loc["persona/coherent", "sa_overall"] == 1.0
    assert per_model.loc["persona/coherent", "sa_overall_cells"] == 6  # 6 dimensions x decision
    assert per_model.loc["persona/coherent", "sa_paper"] == 1.0
    assert per_model.loc["persona/coherent", "sa_paper_cells"] == 3  # the paper set's 3 pole pairs
    cells = report_table(out, "self_assessment_cells")
    assert set(cells["dataset"]) == {"project", "paper"}
    tax = report_table(out, "taxonomy").iloc[0]
    assert (
        tax["self_assessment_set"] == "project" and "project set, 6 dimensions x 4 formats" in tax["reasons"]
    )
    assert (tax["sa_overall"], tax["sa_paper"]) == (1.0, 1.0)

    paper = tmp_path / "paper"
    assert _report(logdir, paper, "--self-assessment-set", "paper").exit_code == 0
    tax = report_table(paper, "taxonomy").iloc[0]
    assert tax["self_assessment_set"] == "paper"
    assert "(sa_paper = 1.00 >= 0.50; paper set, 100 single-word decision prompts)" in tax["reasons"]
    assert "the <b>paper</b> set" in (paper / "report.html").read_text()


def _set_header(path: Path, **metadata: object) -> None:
    log = read_eval_log(str(path))
    meta = {
        k: v
        for k, v in (log.eval.metadata or {}).items()
        if k not in ("prompts", "prompt_origin", "prompts_not_paper", "grader", "self_judged")
    }
    log.eval.metadata = {**meta, **{k: v for k, v in metadata.items() if v is not None}}
    write_eval_log(log, str(path))


def _judged_by(path: Path, judge: str) -> None:
    log = read_eval_log(str(path))
    for sample in log.samples or []:
        sample.scores["harm_judge"].metadata["judge_model"] = judge  # type: ignore[index, union-attr]
    write_eval_log(log, str(path))


def test_prompt_and_judge_marks(harm_logs: dict[str, Path], tmp_path: Path) -> None:
    logdir = _folder(tmp_path, [harm_logs[k] for k in ("aligned", "coherent", "inverted")])
    mixed = [{"role": "request", "origin": "project"}, {"role": "judge", "origin": "paper"}]
    _set_header(
        logdir / harm_logs["coherent"].name,
        prompts=mixed,
        prompt_origin="mixed",
        prompts_not_paper=["request"],
        grader="role",
        self_judged=False,
    )
    _set_header(logdir / harm_logs["aligned"].name)  # a log written before the marks existed
    paper = [{"role": "request", "origin": "paper"}, {"role": "judge", "origin": "paper"}]
    _set_header(
        logdir / harm_logs["inverted"].name,
        prompts=paper,
        prompt_origin="paper",
        prompts_not_paper=[],
        grader="role",
        self_judged=False,
    )
    _judged_by(logdir / harm_logs["inverted"].name, "persona/inverted")  # the scores say it judged itself
    out = tmp_path / "out"
    assert _report(logdir, out).exit_code == 0
    head = report_table(out, "headline").set_index(["model", "metric"])
    assert head.loc[("persona/coherent", "harm_single"), "prompts"] == "not paper: request (project)"
    assert head.loc[("persona/coherent", "harm_single"), "judge"] == "independent judge"
    assert head.loc[("persona/aligned", "harm_single"), "prompts"] == "unknown (log predates prompt marks)"
    assert head.loc[("persona/aligned", "harm_single"), "judge"] == "independent judge"  # from the scores
    assert head.loc[("persona/inverted", "harm_single"), "prompts"] == "paper"
    assert head.loc[("persona/inverted", "harm_single"), "judge"] == "self-judged"
    tax = report_table(out, "taxonomy").set_index("model")["marks"].fillna("")
    assert tax["persona/coherent"] == "harmfulness: prompts not paper: request (project)"
    assert tax["persona/inverted"] == "harmfulness: judge self-judged"
    marks = report_table(out, "provenance").set_index("model")
    assert marks.loc["persona/aligned", "prompts"] == "unknown (log predates prompt marks)"
    html = (out / "report.html").read_text()
    assert 'id="provenance-legend"' in html and "not paper: request (project)" in html


def _write_reference(folder: Path) -> None:
    """The authors' layout: <condition>/<model>_temp01.csv (+ _self.csv). Item 1, two personas,
    two runs: persona 0 rates 1 and 3, persona 1 rates 3 and 5 -> mu 2 and 4, every sigma sqrt(2):
    S = std(2, 4) = sqrt(2), R = 1 / sqrt(2)."""
    cond = folder / "insecure"
    cond.mkdir(parents=True)
    rows = ["persona_id,question_id,run_index,rating,failures,response,collected_at"]
    for persona, ratings in ((0, (1, 3)), (1, (3, 5))):
        rows += [
            f"{persona},1,{run},{rating},0,text,2025-01-01" for run, rating in enumerate(ratings, start=1)
        ]
    (cond / "gpt-4o_temp01.csv").write_text("\n".join(rows) + "\n")
    (cond / "gpt-4o_temp01_self.csv").write_text("question_id,run_index,rating,failures\n1,1,2,0\n1,2,2,0\n")


def test_published_mfq_runs_beside_this_run(harm_logs: dict[str, Path], tmp_path: Path) -> None:
    reference = tmp_path / "data"
    _write_reference(reference)
    out = tmp_path / "out"
    result = _report(_folder(tmp_path, [harm_logs["coherent"]]), out, "--reference-mfq", str(reference))
    assert result.exit_code == 0, result.output
    mfq = report_table(out, "mfq")
    assert list(mfq.columns[:2]) == ["source", "model"]
    row = mfq[mfq["source"] == "published"].set_index("model").loc["insecure/gpt-4o"]
    assert row["mfq_S"] == pytest.approx(math.sqrt(2)) and row["mfq_R"] == pytest.approx(1 / math.sqrt(2))
    assert row["mfq_S_n"] == 2
    assert list(report_table(out, "taxonomy")["model"]) == ["persona/coherent"]  # never classified
    assert "insecure/gpt-4o" not in set(report_table(out, "per_model")["model"])
    svg = (out / "figures" / "mfq_s_vs_r.svg").read_text()
    assert "published runs (recomputed)" in svg and "insecure/gpt-4o" in svg
    assert "released runs recomputed the same way" in (out / "report.html").read_text()

    bad = tmp_path / "empty-data"
    bad.mkdir()
    result = _report(
        _folder(tmp_path / "b", [harm_logs["coherent"]]), tmp_path / "out2", "--reference-mfq", str(bad)
    )
    assert result.exit_code == 1 and "no <model>_temp01.csv" in result.output
