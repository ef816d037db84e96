"""Harness overhead: an em-persona task through Inspect vs a plain asyncio OpenAI client.

Both send the same chat messages (taken from the Inspect log), with the same concurrency
and max_tokens, to the same vllm server; every generation is forced to exactly
`max_tokens` tokens (vLLM's `min_tokens` + `ignore_eos`), so both do identical work.
Prints generations/s of each and their ratio (target: Inspect / plain >= 0.9).

    python benchmarks/harness_overhead.py --base tiny --samples 350 --concurrency 16 --max-tokens 32
    python benchmarks/harness_overhead.py --base gemma-270m --samples 96 --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from typing import Any


def _force_length(max_tokens: int) -> dict[str, Any]:
    return {"min_tokens": max_tokens, "ignore_eos": True}


def run_inspect(model: str, samples: int, concurrency: int, max_tokens: int, log_dir: str,
                dataset: str = "paper", log_realtime: bool = True) -> tuple[float, list[list[dict[str, str]]]]:
    """Wall time of the harmfulness task (generation only) through Inspect, and the messages it sent."""
    from inspect_ai import eval

    from em_persona.tasks.harmfulness import harmfulness

    task = harmfulness(dataset=dataset, temperature=1.0, max_tokens=max_tokens)
    t0 = time.perf_counter()
    [log] = eval(
        task, model=model, score=False, limit=samples, max_connections=concurrency,
        max_tokens=max_tokens, extra_body=_force_length(max_tokens), log_dir=log_dir,
        display="none", log_level="warning", log_realtime=log_realtime,
    )
    wall = time.perf_counter() - t0
    if log.status != "success":
        raise SystemExit(f"inspect run failed: {log.error}")
    convs = []
    for s in log.samples or []:
        msgs = [{"role": m.role, "content": m.text} for m in s.messages if m.role != "assistant"]
        convs.append(msgs)
    return wall, convs


async def _plain(base_url: str, api_key: str, model: str, convs: list[list[dict[str, str]]],
                 concurrency: int, max_tokens: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    sem = asyncio.Semaphore(concurrency)

    async def one(msgs: list[dict[str, str]]) -> None:
        async with sem:
            await client.chat.completions.create(
                model=model, messages=msgs, max_tokens=max_tokens, temperature=1.0,  # type: ignore[arg-type]
                extra_body=_force_length(max_tokens),
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in convs))
    wall = time.perf_counter() - t0
    await client.close()
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny", help="proxy name or model folder to serve")
    ap.add_argument("--samples", type=int, default=350)
    ap.add_argument("--dataset", default="paper", help="harmfulness prompt set: paper (350) or mini (48)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-log-realtime", action="store_true",
                    help="Inspect's log_realtime=False (no live sample buffer; less CPU per sample)")
    args = ap.parse_args()

    import tempfile

    from em_persona.finetune.proxy import build_proxy
    from em_persona.core.proxies import PROXY_NAMES
    from em_persona.serving.launcher import start_server

    base = build_proxy(args.base) if args.base in PROXY_NAMES else args.base
    with start_server(base, {}, served_name="bench") as srv, tempfile.TemporaryDirectory() as logs:
        os.environ.update(srv.env())
        model = f"vllm/{srv.base_model}"
        run_inspect(model, min(8, args.samples), args.concurrency, args.max_tokens, logs, args.dataset)  # warm-up
        inspect_best, plain_best = float("inf"), float("inf")
        for _ in range(args.repeats):
            wall, convs = run_inspect(model, args.samples, args.concurrency, args.max_tokens, logs, args.dataset,
                                      log_realtime=not args.no_log_realtime)
            inspect_best = min(inspect_best, wall)
            plain = asyncio.run(_plain(srv.base_url, srv.api_key, srv.base_model, convs,
                                       args.concurrency, args.max_tokens))
            plain_best = min(plain_best, plain)
        n = len(convs)
    gi, gp = n / inspect_best, n / plain_best
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(f"model {args.base}, {n} generations x {args.max_tokens} tokens, concurrency {args.concurrency}, "
          f"best of {args.repeats}, log_realtime={not args.no_log_realtime}")
    print(f"inspect task : {gi:8.2f} generations/s ({inspect_best:.2f} s)")
    print(f"plain client : {gp:8.2f} generations/s ({plain_best:.2f} s)")
    print(f"ratio inspect/plain = {gi / gp:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
