"""The paper battery for one adapter on one accelerator: generations per second.

Serves BASE + ADAPTER from one vLLM server (real `vllm` on a GPU), runs the paper-sized
task set against the adapter with the served base model as a local judge, and reports
model calls per second from the Inspect logs (evaluated generations + judge calls).

    python benchmarks/gpu_paper_battery.py --base Qwen/Qwen2.5-32B-Instruct \
        --adapter adapters/qwen-insecure --max-connections 128

Nothing here needs a GPU to import; on a CPU-only machine use --small for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="base model (hub id or folder)")
    ap.add_argument("--adapter", required=True, type=Path, help="LoRA adapter folder")
    ap.add_argument("--max-connections", type=int, default=128)
    ap.add_argument("--small", action="store_true", help="tiny subsets (CPU smoke run)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra vLLM argument (repeatable)")
    args = ap.parse_args()

    from inspect_ai import eval

    from em_persona.serving.launcher import start_server

    t_start = time.perf_counter()
    with start_server(args.base, {"bench-adapter": args.adapter}, served_name="bench-base",
                      extra_args=args.serve_arg) as srv, tempfile.TemporaryDirectory() as logs:
        os.environ.update(srv.env())
        t_ready = time.perf_counter()
        results = eval(
            battery(args.small), model="vllm/bench-adapter", model_roles={"grader": "vllm/bench-base"},
            max_connections=args.max_connections, log_dir=logs, display="none",
        )
        t_done = time.perf_counter()
        gens, judge = model_calls(results)  # reads the logs: before the temporary folder goes
    wall = t_done - t_ready
    print(f"machine: {platform.node()} {platform.machine()}")
    print(f"server start {t_ready - t_start:.0f} s; battery {wall:.0f} s")
    print(f"evaluated generations {gens}, judge calls {judge}")
    print(f"generations/s {gens / wall:.2f}; all model calls/s {(gens + judge) / wall:.2f}")


if __name__ == "__main__":
    main()
