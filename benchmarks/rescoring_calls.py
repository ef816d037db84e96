"""Judge calls made when finished work is run again: a finished experiment re-run, and unchanged
samples re-scored with the same judge.

The evaluated model and the judge are Inspect mock models with scripted answers; the judge counts
every call that reaches it (a call answered from Inspect's cache never does). Three judge tasks
(harmfulness, EM questions, self-assessment with its decision judge) run through `eval_set` into
one log folder; then:

1. the same `eval_set` again (what `em-persona run` does on a re-run),
2. `inspect_ai.score` of each finished log with the task's own scorer (re-scoring unchanged
   samples with the same judge),
3. the same re-score with `judge_cache=False`, to show the counter does count.

Prints the judge calls of each step; the target is 0 for steps 1 and 2.

    .venv/bin/python benchmarks/rescoring_calls.py --samples 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


class CountingJudge:
    """Answers every judge prompt with a valid verdict and counts the calls that reach it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
        from inspect_ai.model import ModelOutput, ModelUsage

        self.calls += 1
        prompt = input[-1].text if input else ""
        if "NEITHER" in prompt:
            answer = "FIRST" if "FIRST" in prompt else "NEITHER"
        elif config.response_schema is not None:
            answer = json.dumps({"score": 2})
        else:
            answer = "80"
        output = ModelOutput.from_content(model="judge", content=answer)
        output.usage = ModelUsage(input_tokens=len(prompt.split()), output_tokens=1, total_tokens=1)
        return output


def _answers(input: list[Any], tools: Any, tool_choice: Any, config: Any) -> Any:
    """The evaluated model: an off-format answer (so the self-assessment judge is asked too)."""
    from inspect_ai.model import ModelOutput, ModelUsage

    output = ModelOutput.from_content(model="model", content="It depends on the situation, I would say.")
    output.usage = ModelUsage(input_tokens=10, output_tokens=8, total_tokens=18)
    return output


def _tasks(cache: bool = True) -> list[Any]:
    from em_persona.tasks.em_questions import em_questions
    from em_persona.tasks.harmfulness import harmfulness
    from em_persona.tasks.self_assessment import self_assessment

    return [
        harmfulness(dataset="mini", judge_cache=cache),
        em_questions(epochs=1, judge_cache=cache),
        self_assessment(epochs=1, decision_judge=True, judge_cache=cache),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--samples", type=int, default=8, help="samples per task")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rescore-") as tmp:
        os.environ["INSPECT_CACHE_DIR"] = str(Path(tmp) / "cache")  # a cold, private cache
        from inspect_ai import eval_set, score
        from inspect_ai.log import read_eval_log
        from inspect_ai.model import get_model

        judge = CountingJudge()
        grader = get_model("mockllm/judge", custom_outputs=judge)
        model = get_model("mockllm/model", custom_outputs=_answers)
        common = {
            "log_dir": str(Path(tmp) / "logs"),
            "limit": args.samples,
            "model_roles": {"grader": grader},
            "display": "none",
            "log_level": "warning",
        }
        ok, logs = eval_set(_tasks(), model=model, **common)
        if not ok:
            print("the first run did not finish", file=sys.stderr)
            return 1
        first = judge.calls
        steps: dict[str, int] = {}

        judge.calls = 0
        ok, _ = eval_set(_tasks(), model=model, **common)
        steps["re-run of the finished experiment (eval_set)"] = judge.calls

        for label, cache in (
            ("re-score, same judge, cache on (default)", True),
            ("re-score, cache off", False),
        ):
            judge.calls = 0
            for log, task in zip(logs, _tasks(cache), strict=True):
                full = read_eval_log(log.location)
                score(full, task.scorer, display="none", model_roles={"grader": grader})
            steps[label] = judge.calls

    print(f"{len(logs)} tasks x {args.samples} samples; first run: {first} judge calls")
    for label, calls in steps.items():
        print(f"{label}: {calls} judge calls")
    zero = steps["re-run of the finished experiment (eval_set)"] == 0
    zero = zero and steps["re-score, same judge, cache on (default)"] == 0
    print(f"target (0 new judge calls on a re-run and on a re-score): {'met' if zero else 'NOT met'}")
    return 0 if zero and steps["re-score, cache off"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
