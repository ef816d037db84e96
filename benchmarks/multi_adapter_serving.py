"""Multi-adapter serving: one vLLM server for base + N adapters vs one server start per model.

For each N, evaluates the base model and N LoRA adapters (each trained for one step on the
tiny proxy by `em-persona finetune`) on the same small generation-only task, twice:
  one server : start one server with every adapter, evaluate all N+1 models, stop;
  per model  : for each model start a server with only that model, evaluate it, stop.
Prints the wall time of each path and the ratio per-model / one-server (target: the
one-server path wins by a margin that grows with N).

    python benchmarks/multi_adapter_serving.py --n 1 3 --samples 8
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from em_persona.serving.launcher import ServerHandle


def make_adapters(n: int, out: Path) -> dict[str, Path]:
    """N one-step LoRA adapters of the tiny proxy, named bench-a0 .. bench-a{n-1}."""
    from em_persona.core.paths import REPO_ROOT
    from em_persona.finetune.config import load_config
    from em_persona.finetune.train import finetune

    adapters = {}
    for k in range(n):
        cfg = load_config(
            REPO_ROOT / "finetune/configs/tiny-insecure-code.yaml",
            [f"name=bench-a{k}", "data.rows=2", f"data.seed={k}", "train.max_steps=1"],
        )
        [result] = finetune(cfg, out_dir=out)
        adapters[f"bench-a{k}"] = Path(result.path)
    return adapters


def evaluate(srv: ServerHandle, names: list[str], samples: int, log_dir: str) -> None:
    """Generation-only harmfulness subset for each served name, bound to this server.

    Models are built unmemoized with this server's URL and key.
    """
    from inspect_ai import eval
    from inspect_ai.model import get_model

    from em_persona.tasks.harmfulness import harmfulness

    models = [get_model(n, base_url=srv.base_url, api_key=srv.api_key, memoize=False) for n in names]
    logs = eval(
        harmfulness(dataset="mini", max_tokens=16),
        model=models,
        score=False,
        limit=samples,
        log_dir=log_dir,
        display="none",
        log_level="warning",
        max_connections=16,
    )
    bad = [log.eval.model for log in logs if log.status != "success"]
    if bad:
        raise SystemExit(f"evaluation failed for {bad}")


_starts = itertools.count()


def _serve(base: Path, adapters: dict[str, Path]) -> ServerHandle:
    """Start a server whose served names are new to this process.

    Inspect's vllm provider keeps one server entry per served name for the whole process,
    so a name reused across server starts would send requests to the first, stopped server.
    """
    from em_persona.serving.launcher import start_server

    tag = next(_starts)
    return start_server(
        base, {f"{name}-s{tag}": path for name, path in adapters.items()}, served_name=f"bench-base-s{tag}"
    )


def one_server(base: Path, adapters: dict[str, Path], samples: int, log_dir: str) -> float:
    t0 = time.perf_counter()
    with _serve(base, adapters) as srv:
        evaluate(srv, srv.model_names, samples, log_dir)
    return time.perf_counter() - t0


def per_model(base: Path, adapters: dict[str, Path], samples: int, log_dir: str) -> float:
    t0 = time.perf_counter()
    for subset in [{}] + [{name: path} for name, path in adapters.items()]:
        with _serve(base, subset) as srv:
            evaluate(srv, [srv.model_names[-1]], samples, log_dir)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 3], help="adapter counts to compare")
    ap.add_argument("--samples", type=int, default=8, help="samples per model")
    args = ap.parse_args()

    from em_persona.finetune.proxy import build_proxy

    base = build_proxy("tiny")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        all_adapters = make_adapters(max(args.n), Path(work) / "adapters")
        for n in args.n:
            adapters = dict(list(all_adapters.items())[:n])
            one = one_server(base, adapters, args.samples, str(Path(work) / f"logs-one-{n}"))
            each = per_model(base, adapters, args.samples, str(Path(work) / f"logs-each-{n}"))
            rows.append((n, one, each))
            print(
                f"N={n}: one server {one:7.1f} s | one server per model {each:7.1f} s | "
                f"ratio {each / one:.2f}x",
                flush=True,
            )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; tiny proxy, {args.samples} samples/model")
    for n, one, each in rows:
        print(f"  N={n} adapters (+ base): per-model / one-server = {each / one:.2f}")


if __name__ == "__main__":
    main()
