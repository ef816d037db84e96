"""Harness overhead: an em-persona task through Inspect vs a plain asyncio OpenAI client.

Both send the same chat messages (taken from the Inspect log), with the same concurrency
and max_tokens, to the same vllm server; every generation is forced to exactly
`max_tokens` tokens (vLLM's `min_tokens` + `ignore_eos`), so both do identical work.
The two paths alternate for `--repeats` rounds (ABBA...). Inspect runs with the pipeline's
batch defaults (`--settings pipeline`, em_persona.app.pipeline.BATCH_EVAL_DEFAULTS) or with
Inspect's own (`--settings inspect`). Prints the median and spread of generations/s per path,
the ratio of medians (Inspect / plain), and the client-side CPU each path spends per sample.

    python benchmarks/harness_overhead.py --base gemma-270m --samples 96 --repeats 5
    python benchmarks/harness_overhead.py --base tiny --samples 350 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import inspect as pyinspect
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def _force_length(max_tokens: int) -> dict[str, Any]:
    return {"min_tokens": max_tokens, "ignore_eos": True}


def run_inspect(
    model: str,
    samples: int,
    concurrency: int,
    max_tokens: int,
    log_dir: str,
    dataset: str = "paper",
    settings: dict[str, Any] | None = None,
) -> tuple[float, list[list[dict[str, str]]]]:
    """Wall time of the harmfulness task (generation only) through Inspect, and the messages it sent."""
    from inspect_ai import eval

    from em_persona.tasks.harmfulness import harmfulness

    task = harmfulness(dataset=dataset, temperature=1.0, max_tokens=max_tokens)
    t0 = time.perf_counter()
    [log] = eval(
        task,
        model=model,
        score=False,
        limit=samples,
        max_tokens=max_tokens,
        extra_body=_force_length(max_tokens),
        log_dir=log_dir,
        display="none",
        **{"log_level": "warning", **(settings or {}), "max_connections": concurrency},
    )
    wall = time.perf_counter() - t0
    if log.status != "success":
        raise SystemExit(f"inspect run failed: {log.error}")
    convs = []
    for s in log.samples or []:
        msgs = [{"role": m.role, "content": m.text} for m in s.messages if m.role != "assistant"]
        convs.append(msgs)
    return wall, convs


async def _plain(
    base_url: str,
    api_key: str,
    model: str,
    convs: list[list[dict[str, str]]],
    concurrency: int,
    max_tokens: int,
) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    sem = asyncio.Semaphore(concurrency)

    async def one(msgs: list[dict[str, str]]) -> None:
        async with sem:
            await client.chat.completions.create(
                model=model,
                messages=msgs,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=1.0,
                extra_body=_force_length(max_tokens),
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in convs))
    wall = time.perf_counter() - t0
    await client.close()
    return wall


def eval_settings(which: str) -> dict[str, Any]:
    """The Inspect options of a run: the pipeline's batch defaults that `eval()` takes, or none."""
    if which == "inspect":
        return {}
    from inspect_ai import eval

    from em_persona.app.building import BATCH_EVAL_DEFAULTS

    accepted = pyinspect.signature(eval).parameters
    return {k: v for k, v in BATCH_EVAL_DEFAULTS.items() if k in accepted}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn()'s result and the CPU seconds this process spent on it (all threads)."""
    c0 = _cpu()
    out = fn()
    return out, _cpu() - c0


def alternate(
    paths: dict[str, Callable[[], float]], repeats: int, n: int, *, announce: bool = False
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run every path (name -> run of `n` generations returning its wall seconds) once a round for
    `repeats` rounds, the order reversed every other round (ABBA...). Returns generations/s per path
    and the client CPU per path in ms per generation; `announce` prints each round."""
    rates: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for rep in range(repeats):
        for name in list(paths) if rep % 2 == 0 else list(reversed(paths)):
            wall, seconds = _timed(paths[name])
            rates[name].append(n / wall)
            cpu[name].append(1000 * seconds / n)
            if announce:
                print(
                    f"[bench] round {rep + 1} {name}: {n / wall:.2f} generations/s ({wall:.2f} s)", flush=True
                )
    return rates, cpu


def ratio_of_medians(rates: dict[str, list[float]]) -> tuple[float, list[float]]:
    """Median Inspect rate / median plain rate, and the per-round ratios."""
    per_round = [a / b for a, b in zip(rates["inspect"], rates["plain"], strict=True)]
    return statistics.median(rates["inspect"]) / statistics.median(rates["plain"]), per_round


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):8.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny", help="proxy name or model folder to serve")
    ap.add_argument("--samples", type=int, default=350)
    ap.add_argument("--dataset", default="paper", help="harmfulness prompt set: paper (350) or mini (48)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds (at least 5 for a target)")
    ap.add_argument("--settings", choices=["pipeline", "inspect"], default="pipeline")
    args = ap.parse_args()

    import tempfile

    from em_persona.core.proxies import PROXY_NAMES
    from em_persona.finetune.proxy import build_proxy
    from em_persona.serving.launcher import start_server

    settings = eval_settings(args.settings)
    base = build_proxy(args.base) if args.base in PROXY_NAMES else args.base
    with start_server(base, {}, served_name="bench") as srv, tempfile.TemporaryDirectory() as logs:
        os.environ.update(srv.env())
        model = f"vllm/{srv.base_model}"
        _, convs = run_inspect(
            model, args.samples, args.concurrency, args.max_tokens, logs, args.dataset, settings
        )
        n = len(convs)  # the warm-up run also fixes the messages the plain client sends

        def inspect_run() -> float:
            return run_inspect(
                model, args.samples, args.concurrency, args.max_tokens, logs, args.dataset, settings
            )[0]

        def plain_run() -> float:
            return asyncio.run(
                _plain(srv.base_url, srv.api_key, srv.base_model, convs, args.concurrency, args.max_tokens)
            )

        paths = {"inspect": inspect_run, "plain": plain_run}
        rates, cpu = alternate(paths, args.repeats, n, announce=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(
        f"model {args.base}, {n} generations x {args.max_tokens} tokens, concurrency {args.concurrency}, "
        f"{args.repeats} alternating rounds, Inspect settings: {args.settings} {settings}"
    )
    for name in paths:
        print(
            f"{name:>8}: {_spread(rates[name])} generations/s; client CPU {statistics.median(cpu[name]):.1f} ms/sample"
        )
    ratio, per_round = ratio_of_medians(rates)
    print(
        f"ratio inspect/plain = {ratio:.3f} (per round: min {min(per_round):.3f}, "
        f"median {statistics.median(per_round):.3f}, max {max(per_round):.3f}; target >= 0.97)"
    )
    extra = statistics.median(cpu["inspect"]) - statistics.median(cpu["plain"])
    print(f"harness CPU beyond the plain client: {extra:.1f} ms per sample")


if __name__ == "__main__":
    main()
