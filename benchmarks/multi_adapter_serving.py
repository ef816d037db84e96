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
import os
import platform
import tempfile
import time
from pathlib import Path


def make_adapters(n: int, out: Path) -> dict[str, Path]:
    """N one-step LoRA adapters of the tiny proxy, named bench-a0 .. bench-a{n-1}."""
    from finetune.config import load_config
    from finetune.train import finetune

    from em_persona.paths import REPO_ROOT

    adapters = {}
    for k in range(n):
        cfg = load_config(REPO_ROOT / "finetune/configs/tiny-insecure-code.yaml",
                          [f"name=bench-a{k}", "data.rows=2", f"data.seed={k}", "train.max_steps=1"])
        [result] = finetune(cfg, out_dir=out)
        adapters[f"bench-a{k}"] = Path(result.path)
    return adapters


def evaluate(models: list[str], samples: int, log_dir: str) -> None:
    from inspect_ai import eval

    from tasks.harmfulness import harmfulness

    logs = eval(harmfulness(dataset="mini", max_tokens=16), model=models, score=False, limit=samples,
                log_dir=log_dir, display="none", log_level="warning", max_connections=16)
    bad = [log.eval.model for log in logs if log.status != "success"]
    if bad:
        raise SystemExit(f"evaluation failed for {bad}")


def one_server(base: Path, adapters: dict[str, Path], samples: int, log_dir: str) -> float:
    from finetune.serve import start_server

    t0 = time.perf_counter()
    with start_server(base, adapters, served_name="bench-base") as srv:
        os.environ.update(srv.env())
        evaluate(srv.model_names, samples, log_dir)
    return time.perf_counter() - t0


def per_model(base: Path, adapters: dict[str, Path], samples: int, log_dir: str) -> float:
    from finetune.serve import start_server

    t0 = time.perf_counter()
    for subset in [{}] + [{name: path} for name, path in adapters.items()]:
        with start_server(base, subset, served_name="bench-base") as srv:
            os.environ.update(srv.env())
            evaluate([srv.model_names[-1]], samples, log_dir)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 3], help="adapter counts to compare")
    ap.add_argument("--samples", type=int, default=8, help="samples per model")
    args = ap.parse_args()

    from finetune.proxy import build_proxy

    base = build_proxy("tiny")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        all_adapters = make_adapters(max(args.n), Path(work) / "adapters")
        for n in args.n:
            adapters = dict(list(all_adapters.items())[:n])
            one = one_server(base, adapters, args.samples, str(Path(work) / f"logs-one-{n}"))
            each = per_model(base, adapters, args.samples, str(Path(work) / f"logs-each-{n}"))
            rows.append((n, one, each))
            print(f"N={n}: one server {one:7.1f} s | one server per model {each:7.1f} s | "
                  f"ratio {each / one:.2f}x", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; tiny proxy, {args.samples} samples/model")
    for n, one, each in rows:
        print(f"  N={n} adapters (+ base): per-model / one-server = {each / one:.2f}")


if __name__ == "__main__":
    main()
