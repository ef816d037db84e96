"""Loading (per-sample tables -> per-model table, with bootstrap CIs) + taxonomy time at 10^4, 10^5, 10^6 samples.

Synthetic samples grow the way a study does: more models, each with a fixed battery of
1,000 samples (harmfulness 40 prompts x 10 epochs, self-assessment 6 dimensions x 4
formats x 15, two-AI 24 items x 10 runs). Prints the seconds per size and the growth ratios
(linear growth = ratio 10 per decade). Target: 10^6 under a minute on 2 cores.
Run: `.venv/bin/python benchmarks/analysis_scale.py [--sizes 10000,100000,1000000]`.
Parsing the Inspect log files themselves is not included (it is Inspect's reader).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from em_persona.analysis.models_info import models_info
from em_persona.analysis.tables import SampleTables, per_model_table
from em_persona.analysis.taxonomy import classify_table
from em_persona.contract.declarations import AggregateOptions

BATTERY = 1000


def synthetic(n_samples: int, seed: int = 0) -> SampleTables:
    rng = np.random.default_rng(seed)
    n_models = max(1, n_samples // BATTERY)
    p = rng.uniform(0, 1, n_models)  # each model's propensity to harm / self-report misalignment
    models = np.array([f"vllm/m{i:05d}-{'insecure' if i % 2 else 'base'}" for i in range(n_models)])

    def block(rows_per_model: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.repeat(np.arange(n_models), rows_per_model)
        return models[idx], p[idx]

    m, pp = block(400)
    k = np.tile(np.arange(400), n_models)
    harm = pd.DataFrame(
        {
            "model": m,
            "sample_id": (k // 10).astype(str),
            "epoch": k % 10 + 1,
            "n_epochs": 10,
            "category": "c",
            "grader": "g",
            "log": "x",
            "harm_score": np.where(rng.random(m.size) < pp, 5.0, 1.0),
        }
    )
    m, pp = block(360)
    k = np.tile(np.arange(360), n_models)
    dims = np.array(
        [
            "aligned_misaligned",
            "good_evil",
            "harmless_harmful",
            "helpful_unhelpful",
            "honest_dishonest",
            "trusted_feared",
        ]
    )
    fmts = np.array(["decision", "numerical", "language", "likert"])
    sa = pd.DataFrame(
        {
            "model": m,
            "sample_id": k.astype(str),
            "epoch": 1,
            "dataset": "project",
            "dimension": dims[k % 6],
            "format": fmts[(k // 6) % 4],
            "value": (rng.random(m.size) < pp).astype(float),
            "log": "x",
        }
    )
    m, pp = block(240)
    k = np.tile(np.arange(240), n_models)
    two = pd.DataFrame(
        {
            "model": m,
            "sample_id": k.astype(str),
            "epoch": 1,
            "item": (k // 10).astype(str),
            "chose_misaligned": (rng.random(m.size) < pp).astype(float),
            "log": "x",
        }
    )
    return SampleTables({"harm": harm, "self_assessment": sa, "two_ai": two})


def run(n: int) -> float:
    samples = synthetic(n)
    start = time.perf_counter()
    info, _ = models_info(samples.models())
    tables = per_model_table(samples, info, AggregateOptions())
    classify_table(tables.per_model)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    times = []
    for n in sizes:
        t = run(n)
        times.append(t)
        print(f"{n:>9,d} samples ({max(1, n // BATTERY):>5d} models): {t:8.2f} s", flush=True)
    for (n0, t0), (n1, t1) in zip(
        zip(sizes, times, strict=False), zip(sizes[1:], times[1:], strict=False), strict=False
    ):
        print(f"{n0:,d} -> {n1:,d}: size x{n1 / n0:g}, time x{t1 / t0:.2f}")
    print(f"10^6 target (< 60 s): {'met' if sizes[-1] >= 10**6 and times[-1] < 60 else 'see above'}")


if __name__ == "__main__":
    main()
