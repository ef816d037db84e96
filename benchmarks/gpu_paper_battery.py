"""The paper battery for one adapter on one accelerator: throughput and harness overhead.

Serves BASE + ADAPTER from one vLLM server (real `vllm` on a GPU), runs the paper-sized
task set against the adapter with the served base model as a local judge (with the pipeline's
batch settings), and reports evaluated generations/s and judge calls/s from the Inspect logs.
Then it measures the harness ratio on the same server: the harmfulness task through Inspect vs
a plain asyncio client sending the same messages (benchmarks/harness_overhead.py), alternating
for `--ratio-repeats` rounds. `--time-limit` bounds the whole script: past it the server is
stopped and the script exits 124, saying which part did not finish.

    python benchmarks/gpu_paper_battery.py --base Qwen/Qwen2.5-32B-Instruct \
        --adapter adapters/qwen-insecure --max-connections 128 --time-limit 840

Nothing here needs a GPU to import; on a CPU-only machine use --small for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SMALL_LIMIT = 16  # samples per task in a --small (CPU smoke) run


class OutOfTime(Exception):
    """The --time-limit passed."""


def _harness_module() -> Any:
    """benchmarks/harness_overhead.py, loaded by path (benchmarks/ is not a package)."""
    path = Path(__file__).with_name("harness_overhead.py")
    spec = importlib.util.spec_from_file_location("harness_overhead", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def battery(small: bool) -> list[Any]:
    """The tasks of the paper's harm / self-report battery (paper data, paper sample counts)."""
    from em_persona.tasks.harmfulness import harmfulness
    from em_persona.tasks.self_assessment import self_assessment
    from em_persona.tasks.two_ai_identification import two_ai_identification

    if small:
        return [
            harmfulness(dataset="mini", epochs=2, max_tokens=32),
            self_assessment(paraphrases=1, epochs=1, max_tokens=16),
            two_ai_identification(dataset="project", epochs=2, max_tokens=16),
        ]
    return [
        harmfulness(dataset="paper", epochs=10),
        self_assessment(),
        two_ai_identification(dataset="paper", epochs=10),
    ]


def model_calls(logs: list[Any]) -> tuple[int, int]:
    """(evaluated generations, judge calls) counted from the logs' model usage."""
    gens = judge = 0
    for log in logs:
        for s in log.samples or []:
            for event in s.events:
                if getattr(event, "event", None) != "model":
                    continue
                if getattr(event, "role", None) == "grader":
                    judge += 1
                else:
                    gens += 1
    return gens, judge


def harness_ratio(
    srv: Any, model: str, samples: int, repeats: int, log_dir: str, settings: dict[str, Any]
) -> tuple[float, list[float]]:
    """Median Inspect / plain-client generation rate on the served `model` (Inspect with `settings`),
    and the per-round ratios."""
    ho = _harness_module()
    concurrency, max_tokens = 64, 64
    _, convs = ho.run_inspect(model, samples, concurrency, max_tokens, log_dir, "paper", settings)

    def inspect_run() -> float:
        return float(ho.run_inspect(model, samples, concurrency, max_tokens, log_dir, "paper", settings)[0])

    def plain_run() -> float:
        served = model.split("/", 1)[1]
        return float(
            asyncio.run(ho._plain(srv.base_url, srv.api_key, served, convs, concurrency, max_tokens))
        )

    rates, _ = ho.alternate({"inspect": inspect_run, "plain": plain_run}, repeats, len(convs))
    ratio, per_round = ho.ratio_of_medians(rates)
    return float(ratio), list(per_round)


def _alarm(seconds: int) -> None:
    def on_alarm(signum: int, frame: Any) -> None:
        raise OutOfTime

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="base model (hub id or folder)")
    ap.add_argument("--adapter", required=True, type=Path, help="LoRA adapter folder")
    ap.add_argument("--max-connections", type=int, default=128)
    ap.add_argument("--small", action="store_true", help="tiny subsets (CPU smoke run)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra vLLM argument (repeatable)")
    ap.add_argument("--time-limit", type=int, default=0, help="seconds for the whole script (0: none)")
    ap.add_argument("--ratio-samples", type=int, default=350, help="harmfulness prompts per harness round")
    ap.add_argument("--ratio-repeats", type=int, default=5, help="alternating harness rounds (0: skip)")
    args = ap.parse_args()

    from inspect_ai import eval

    from em_persona.serving.launcher import start_server

    settings = _harness_module().eval_settings("pipeline")
    settings.pop("max_connections", None)
    if args.time_limit:
        _alarm(args.time_limit)
    part = "starting the server"
    t_start = time.perf_counter()
    try:
        with (
            start_server(
                args.base,
                {"bench-adapter": args.adapter},
                served_name="bench-base",
                extra_args=args.serve_arg,
            ) as srv,
            tempfile.TemporaryDirectory() as logs,
        ):
            os.environ.update(srv.env())
            t_ready = time.perf_counter()
            print(
                f"machine: {platform.node()} {platform.machine()}; server start {t_ready - t_start:.0f} s",
                flush=True,
            )
            part = "the battery"
            results = eval(
                battery(args.small),
                model="vllm/bench-adapter",
                model_roles={"grader": "vllm/bench-base"},
                max_connections=args.max_connections,
                log_dir=logs,
                display="none",
                limit=SMALL_LIMIT if args.small else None,
                **settings,
            )
            wall = time.perf_counter() - t_ready
            gens, judge = model_calls(results)  # reads the logs: before the temporary folder goes
            print(f"battery {wall:.0f} s: evaluated generations {gens}, judge calls {judge}")
            print(
                f"generations/s {gens / wall:.2f}; judge calls/s {judge / wall:.2f}; "
                f"all model calls/s {(gens + judge) / wall:.2f}",
                flush=True,
            )
            if args.ratio_repeats:
                part = "the harness ratio"
                samples = min(args.ratio_samples, SMALL_LIMIT) if args.small else args.ratio_samples
                ratio, rounds = harness_ratio(
                    srv, "vllm/bench-adapter", samples, args.ratio_repeats, logs, settings
                )
                print(
                    f"harness ratio inspect/plain {ratio:.3f} over {len(rounds)} alternating rounds "
                    f"(min {min(rounds):.3f}, max {max(rounds):.3f}; target >= 0.97)"
                )
    except OutOfTime:
        print(
            f"time limit of {args.time_limit} s reached during {part}; not measured: {part} and after",
            file=sys.stderr,
        )
        return 124
    finally:
        signal.alarm(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
