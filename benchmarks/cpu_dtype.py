"""Why bfloat16 serving is slow on some CPUs: matrix products in bfloat16 vs float32.

vLLM on CPU serves in bfloat16 by default. Without native bfloat16 instructions (x86 flags
`avx512_bf16` or `amx_bf16`) torch computes bfloat16 products by converting to float32 and back,
so they cost more than float32 ones. This script prints the CPU's relevant flags, then times
`torch.matmul` in both dtypes on the shapes of one Gemma-270M layer (hidden 640) and of a rank-32
LoRA product, alternating the dtypes for `--repeats` rounds, and prints the median time ratio
(bfloat16 / float32; above 1 means bfloat16 is slower).

    .venv/bin/python benchmarks/cpu_dtype.py
"""

from __future__ import annotations

import argparse
import statistics
import time

SHAPES = {  # (tokens in the batch, in, out)
    "attention/MLP projection 640x2048": (64, 640, 2048),
    "LoRA shrink (rank 32)": (64, 640, 32),
    "LoRA expand (rank 32)": (64, 32, 2048),
}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _time(dtype: object, m: int, k: int, n: int, iters: int) -> float:
    import torch

    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    torch.matmul(a, b)  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.matmul(a, b)
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    import torch

    from em_persona.serving.command import cpu_flags

    flags = cpu_flags()
    print("CPU flags: " + ", ".join(f"{f}={'yes' if f in flags else 'no'}" for f in FLAGS))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for label, (m, k, n) in SHAPES.items():
        times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        for rep in range(args.repeats):
            order = ["float32", "bfloat16"] if rep % 2 == 0 else ["bfloat16", "float32"]
            for name in order:
                times[name].append(_time(getattr(torch, name), m, k, n, args.iters))
        ratios = [b / f for b, f in zip(times["bfloat16"], times["float32"], strict=True)]
        print(
            f"{label:36s} float32 {1e6 * statistics.median(times['float32']):9.1f} us, "
            f"bfloat16 {1e6 * statistics.median(times['bfloat16']):9.1f} us, "
            f"ratio bf16/fp32 median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
