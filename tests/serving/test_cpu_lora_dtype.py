"""Half-precision LoRA products run in float32 on a CPU that would emulate bfloat16."""

from __future__ import annotations

import pytest
import torch

from em_persona.serving import cpu_lora as grouped


@pytest.mark.parametrize(
    ("dtype", "flags", "expected"),
    [
        (torch.float32, frozenset({"avx2"}), torch.float32),
        (torch.bfloat16, frozenset({"avx2"}), torch.float32),
        (torch.float16, frozenset({"avx2"}), torch.float32),
        (torch.bfloat16, frozenset({"avx2", "avx512_bf16"}), torch.bfloat16),
        (torch.bfloat16, frozenset({"amx_bf16"}), torch.bfloat16),
        (torch.float16, frozenset({"amx_bf16"}), torch.float32),
    ],
)
def test_compute_dtype(dtype: torch.dtype, flags: frozenset[str], expected: torch.dtype) -> None:
    assert grouped.compute_dtype(dtype, flags) == expected


def test_bfloat16_output_is_the_float32_product_rounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouped, "_COMPUTE", {torch.bfloat16: torch.float32})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, generator=g)
    w = torch.randn(2, 16, 64, generator=g).to(torch.bfloat16)
    idx = torch.zeros(5, dtype=torch.long)
    out = torch.zeros(5, 16, dtype=torch.bfloat16)
    grouped.bgmv_shrink(x, w, out, idx, scaling=1.0)
    assert out.dtype == torch.bfloat16
    # the float32 product, rounded once (computing in bfloat16 would round the inputs first:
    # about a third of these elements then differ)
    exact = (x @ w[0].float().t()).to(torch.bfloat16)
    torch.testing.assert_close(out, exact, rtol=0, atol=0)
    in_bf16 = x.to(torch.bfloat16).float() @ w[0].float().t()
    assert (in_bf16.to(torch.bfloat16) != exact).any()


def test_cpuinfo_is_read_once_per_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    from em_persona.serving import command as command_mod

    reads: list[int] = []

    def counted() -> frozenset[str]:
        reads.append(1)
        return frozenset({"avx2"})

    monkeypatch.setattr(command_mod, "cpu_flags", counted)
    monkeypatch.setattr(grouped, "_COMPUTE", {})
    x = torch.randn(3, 8)
    w = torch.randn(1, 4, 8).to(torch.bfloat16)
    idx = torch.zeros(3, dtype=torch.long)
    for _ in range(2):
        out = torch.zeros(3, 4, dtype=torch.bfloat16)
        grouped.bgmv_shrink(x, w, out, idx, scaling=1.0)
    assert len(reads) == 1
    assert grouped._COMPUTE == {torch.bfloat16: torch.float32}
