"""MFQ logs -> per-rating rows -> per model: moral susceptibility S and robustness R with their
bootstrap standard errors (the maths is in tasks/moral_metrics.py)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from em_persona.contract.declarations import AggregateOptions, LogInput, LogRows, Results
from em_persona.tasks import moral_metrics

TABLES: dict[str, tuple[str, ...]] = {"moral": tuple(moral_metrics.SAMPLE_COLUMNS)}
COLUMNS: dict[str, str] = {
    "mfq_S": "MFQ moral susceptibility S (tasks/moral_metrics.py)",
    "mfq_R": "MFQ moral robustness R (tasks/moral_metrics.py)",
    "mfq_S_se / mfq_R_se": "bootstrap standard errors of S and R (personas combined with runs)",
}
LONG_COLUMNS = ["model", "mfq_S", "mfq_R", "mfq_S_se", "mfq_R_se", "mfq_S_n"]


def rows(log: LogInput) -> LogRows:
    frame = moral_metrics.samples_from_log(log.file)
    return LogRows(tables={"moral": frame.to_dict("records")}, samples=len(frame))


def metrics(tables: Mapping[str, pd.DataFrame], opts: AggregateOptions) -> Results:
    """Per-model S and R (+ standard errors); long table `moral` (one row per model)."""
    moral = tables["moral"]
    if moral.empty:
        return Results(long={"moral": pd.DataFrame(columns=LONG_COLUMNS)})
    res = moral_metrics.metrics_by_model(moral, by_foundation=False, n_boot=opts.mfq_n_boot, seed=opts.seed)
    res = res[res["foundation"] == "all"].set_index("model")
    wide = pd.DataFrame(
        {
            "mfq_S": res["S"],
            "mfq_R": res["R"],
            "mfq_S_se": res["S_se"],
            "mfq_R_se": res["R_se"],
            "mfq_S_n": res["n_personas"],
        }
    )
    return Results(per_model=wide, long={"moral": wide.reset_index()})
