"""The grouped LoRA ops give vLLM's torch LoRA op results (same shapes, indices, modes), and
`install` swaps them in only where vLLM's names are as expected."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch

from em_persona.serving import CPU_LORA_ENV
from em_persona.serving import cpu_lora as grouped

vllm_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")
ORIGINAL = {name: getattr(vllm_ops, name) for name in grouped.GROUPED}


def _case(
    seed: int, tokens: int, loras: int, out: int, inp: int, four_d: bool, indices: list[int] | None = None
):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, inp, generator=g)
    shape = (loras, 1, out, inp) if four_d else (loras, out, inp)
    w = torch.randn(*shape, generator=g).to(torch.bfloat16)
    idx = torch.tensor(indices) if indices is not None else torch.randint(-1, loras, (tokens,), generator=g)
    return x, w, idx


@pytest.mark.parametrize("indices", [None, [0] * 7, [2] * 7, [-1, 0, 1, -1, 2, 2, 0]])
@pytest.mark.parametrize("four_d", [True, False])
def test_shrink_and_expand_match_vllm(indices: list[int] | None, four_d: bool) -> None:
    x, w, idx = _case(1, 7, 3, 8, 16, four_d, indices)
    for name, kwargs in [
        ("bgmv_shrink", {"scaling": 0.5}),
        ("bgmv_expand", {"add_inputs": True}),
        ("bgmv_expand", {"add_inputs": False}),
    ]:
        for dtype in (torch.float32, torch.bfloat16):
            ref = torch.randn(7, 10).to(dtype)
            mine = ref.clone()
            ORIGINAL[name](x, w, ref, idx, **kwargs)
            getattr(grouped, name)(x, w, mine, idx, **kwargs)
            torch.testing.assert_close(mine, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_slice_and_broadcast_match_vllm(add_inputs: bool) -> None:
    x, w, idx = _case(2, 5, 2, 4, 6, True)
    ref = torch.zeros(5, 12)
    mine = ref.clone()
    ORIGINAL["bgmv_expand_slice"](x, w, ref, idx, 4, 4, add_inputs)
    grouped.bgmv_expand_slice(x, w, mine, idx, 4, 4, add_inputs)
    torch.testing.assert_close(mine, ref)
    # one input row broadcast over several output rows (vLLM's `limit = 1` case)
    x1, w1, idx1 = _case(3, 1, 2, 4, 6, False, [1])
    ref, mine = torch.ones(3, 4), torch.ones(3, 4)
    ORIGINAL["bgmv_expand"](x1, w1, ref, idx1, True)
    grouped.bgmv_expand(x1, w1, mine, idx1, True)
    torch.testing.assert_close(mine, ref)


def test_sgmv_through_grouped_ops_matches() -> None:
    """sgmv_* (prefill) explode per-sequence indices and call bgmv_* through module globals."""
    x, w, _ = _case(4, 9, 3, 8, 16, True)
    seq_lens, seq_loras = torch.tensor([4, 2, 3]), torch.tensor([1, -1, 2])
    args = (torch.tensor([0, 4, 6]), seq_lens, seq_loras, 3, 4, 9)
    ref, mine = torch.zeros(9, 8), torch.zeros(9, 8)
    vllm_ops.sgmv_shrink(x, w, ref, *args, 1.0)
    exploded = torch.repeat_interleave(seq_loras, seq_lens)
    grouped.bgmv_shrink(x, w, mine, exploded, 1.0)
    torch.testing.assert_close(mine, ref)


def test_install_replaces_names_only_when_they_match() -> None:
    pkg = types.ModuleType("fakeops")
    for name in grouped.GROUPED:
        setattr(pkg, name, ORIGINAL[name])
    assert grouped.install(pkg) is True
    assert all(getattr(pkg, name) is fn for name, fn in grouped.GROUPED.items())
    stranger = types.ModuleType("strangeops")
    stranger.bgmv_expand = ORIGINAL["bgmv_expand"]
    assert grouped.install(stranger) is False
    assert stranger.bgmv_expand is ORIGINAL["bgmv_expand"]


@pytest.mark.parametrize("flag, patched", [("1", True), ("0", False), (None, False)])
def test_vllm_plugin_patches_vllm_only_when_asked(flag: str | None, patched: bool) -> None:
    """What a server process sees: vLLM loads our `vllm.general_plugins` entry point, and with
    EM_PERSONA_CPU_LORA=1 (set by the launcher) vLLM's ops and punica_cpu's imported names are
    the grouped ones; without it nothing is touched."""
    code = (
        "from vllm.plugins import load_general_plugins\n"
        "load_general_plugins()\n"
        "import vllm.lora.ops.torch_ops as ops, em_persona.serving.cpu_lora as g\n"
        "from vllm.lora.ops.torch_ops import lora_ops\n"
        "from vllm.lora.punica_wrapper import punica_cpu\n"
        "same = (ops.bgmv_shrink is g.bgmv_shrink, lora_ops.bgmv_expand is g.bgmv_expand,\n"
        "        punica_cpu.bgmv_expand_slice is g.bgmv_expand_slice)\n"
        "print('patched' if all(same) else 'untouched' if not any(same) else f'partly {same}')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != CPU_LORA_ENV}
    if flag is not None:
        env[CPU_LORA_ENV] = flag
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == ("patched" if patched else "untouched")
