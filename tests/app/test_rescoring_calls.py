"""Finished work costs no judge call twice: benchmarks/rescoring_calls.py counts them."""

from __future__ import annotations

import subprocess
import sys

from support import REPO_ROOT


def test_rerun_and_rescore_make_no_new_judge_calls(tmp_path) -> None:
    script = REPO_ROOT / "benchmarks" / "rescoring_calls.py"
    result = subprocess.run(
        [sys.executable, str(script), "--samples", "3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "re-run of the finished experiment (eval_set): 0 judge calls" in out
    assert "re-score, same judge, cache on (default): 0 judge calls" in out
    first = int(out.split("first run: ")[1].split(" ")[0])
    cache_off = int(out.split("re-score, cache off: ")[1].split(" ")[0])
    assert first > 0 and cache_off == first  # the counter counts: without the cache every call is made again
