"""Model text reaches the report as text: a harmful answer carrying a <script> element is shown in
the example-answers table, escaped, and a headless Chromium proves the script does not run.

Control: the same answer put into a page unescaped does run in that browser, so the check can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from inspect_ai import eval

from em_persona.cli.report import report as report_cmd
from em_persona.tasks.harmfulness import harmfulness
from support import CHROMIUM, NO_CHROMIUM, XSS, XSS_MARK, dump_dom, report_table

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)


@pytest.fixture(scope="module")
def xss_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("xss-logs")
    [log] = eval(
        harmfulness(dataset="mini", judge_cache=False),
        model="persona/xss",
        model_roles={"grader": "persona/grader"},
        log_dir=str(logdir),
        limit=6,
    )
    assert log.status == "success", log.error
    out = tmp_path_factory.mktemp("xss-report")
    result = CliRunner().invoke(report_cmd, [str(logdir), "--out", str(out), "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    return out


def test_example_answer_is_escaped_in_the_html(xss_report: Path) -> None:
    examples = report_table(xss_report, "example_answers")
    assert examples.loc[0, "model"] == "persona/xss" and examples.loc[0, "harm_score"] == 5
    assert examples.loc[0, "answer"] == XSS  # the raw text in the CSV
    html = (xss_report / "report.html").read_text()
    assert "<script>" not in html  # the report has no script of its own either
    assert "&lt;script&gt;document.body.appendChild" in html
    md = (xss_report / "report.md").read_text()
    assert "&lt;script>document.body.appendChild" in md and "<script>" not in md


@needs_chromium
def test_script_in_a_model_answer_does_not_run(xss_report: Path) -> None:
    dom = dump_dom(xss_report / "report.html")
    assert 'id="example-answers"' in dom
    assert "&lt;script&gt;document.body.appendChild" in dom  # shown as visible text
    assert f"<{XSS_MARK}>" not in dom and "<title>ran</title>" not in dom


@needs_chromium
def test_control_an_unescaped_answer_runs(tmp_path: Path) -> None:
    page = tmp_path / "raw.html"
    page.write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body><p>{XSS}</p></body></html>")
    dom = dump_dom(page)
    assert f"<{XSS_MARK}>" in dom and "<title>ran</title>" in dom
