"""MFQ figures: both functions write PNG and SVG from a metrics table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from em_persona.analysis.moral_figures import plot_foundation_bars, plot_susceptibility_robustness
from em_persona.tasks.moral_metrics import REPORTED, metrics_by_model


def ratings(model: str, spread: int) -> pd.DataFrame:
    rows = []
    for p in range(4):
        for q in range(1, 11):
            for r in range(1, 4):
                rows.append(
                    {
                        "model": model,
                        "persona_id": p,
                        "question_id": q,
                        "run_index": r,
                        "rating": min(5, (p * spread + q + r) % 6),
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    df = pd.concat([ratings("vllm/base", 1), ratings("vllm/insecure", 3)], ignore_index=True)
    return metrics_by_model(df, by_foundation=True, n_boot=50)


def test_s_vs_r_figure(metrics: pd.DataFrame, tmp_path: Path) -> None:
    paths = plot_susceptibility_robustness(metrics, tmp_path / "figs" / "mfq_s_vs_r.png", reference=REPORTED)
    assert [p.name for p in paths] == ["mfq_s_vs_r.png", "mfq_s_vs_r.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = paths[1].read_text()
    assert "<svg" in svg and "reference band" in svg and "vllm/insecure" in svg
    assert not list((tmp_path / "figs").glob(".*"))  # no temp files left behind


def test_foundation_bars_figure(metrics: pd.DataFrame, tmp_path: Path) -> None:
    paths = plot_foundation_bars(metrics, tmp_path / "mfq_foundations", base_model="vllm/base")
    assert all(p.stat().st_size > 1000 for p in paths)
    svg = paths[1].read_text()
    assert "Purity/Sanctity" in svg and "vllm/base" in svg
    with pytest.raises(ValueError, match="not among"):
        plot_foundation_bars(metrics, tmp_path / "x", base_model="nope")
    with pytest.raises(ValueError, match="per-foundation"):
        plot_foundation_bars(metrics.drop(columns=["foundation"]), tmp_path / "y")
