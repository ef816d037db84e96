"""Proxy models: build (atomic, idempotent), load in transformers, generate, one LoRA step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import em_persona.finetune.proxy as proxy_mod
from em_persona.core.proxies import MARKER, ProxyError
from em_persona.finetune.proxy import build_proxy

CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital."},
]


def assistant_span(tok, messages: list[dict]) -> str:
    """The text the chat template marks as assistant-generated ({% generation %} span)."""
    enc = tok.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    return tok.decode([i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=False) if m])


def lora_step(model_dir: Path, tok, target_modules: list[str]) -> tuple[float, float]:
    """One SGD step of a fresh rank-8 LoRA on the assistant tokens of CHAT; returns (loss, LoRA-B change)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=target_modules, task_type="CAUSAL_LM")
    )
    enc = tok.apply_chat_template(
        CHAT, return_assistant_tokens_mask=True, return_dict=True, return_tensors="pt"
    )
    labels = enc["input_ids"].clone()
    labels[enc["assistant_masks"] == 0] = -100
    b_params = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    before = {n: p.detach().clone() for n, p in b_params.items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
    out.loss.backward()
    opt.step()
    change = sum(float((p.detach() - before[n]).abs().sum()) for n, p in b_params.items())
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    return float(out.loss.detach()), change


# --------------------------------------------------------------------------- tiny


def test_tiny_proxy_is_a_small_llama_with_trained_tokenizer(tiny_proxy: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_proxy)
    assert cfg.model_type == "llama" and cfg.head_dim >= 32
    assert cfg.hidden_size // cfg.num_attention_heads == cfg.head_dim
    tok = AutoTokenizer.from_pretrained(tiny_proxy)
    assert tok.is_fast and cfg.vocab_size == len(tok)
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|end|>", "<|pad|>", "<|bos|>")
    for special in ("<|turn|>", "<|end|>", "<|pad|>", "<|bos|>"):  # single ids from tokenizer training
        assert tok(special, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(special)]
    assert "{% generation %}" in tok.chat_template
    # Byte-level BPE: any text round-trips, even text far from the training corpus.
    odd = "Zürich ✓ 12345 <tag>"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd
    assert json.loads((tiny_proxy / MARKER).read_text())["name"] == "tiny"


def test_tiny_chat_template_marks_only_assistant_text(tiny_proxy: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_proxy)
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text == (
        "<|bos|><|turn|>system\nAnswer briefly.<|end|>\n<|turn|>user\nWhat is the capital of France?<|end|>\n"
        "<|turn|>assistant\nParis is the capital.<|end|>\n"
    )
    assert assistant_span(tok, CHAT) == "Paris is the capital.<|end|>"
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|turn|>assistant\n")


def test_tiny_proxy_generates_and_stops(tiny_proxy: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_proxy)
    model = AutoModelForCausalLM.from_pretrained(tiny_proxy)
    enc = tok.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 8
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_tiny_proxy_takes_a_lora_step(tiny_proxy: Path) -> None:
    import math

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_proxy)
    loss, change = lora_step(tiny_proxy, tok, ["q_proj", "v_proj"])
    assert math.isfinite(loss) and loss > 0
    assert change > 0


def test_tiny_proxy_trains_with_trl_assistant_only_loss(tiny_proxy: Path, tmp_path: Path) -> None:
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from datasets import Dataset

    tok = AutoTokenizer.from_pretrained(tiny_proxy)
    data = Dataset.from_list([{"messages": CHAT}] * 4)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        assistant_only_loss=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        max_length=128,
    )
    trainer = SFTTrainer(
        model=str(tiny_proxy),
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
        ),
    )
    row = trainer.train_dataset[0]
    kept = [i for i, label in zip(row["input_ids"], row["labels"], strict=False) if label != -100]
    assert tok.decode(kept) == "Paris is the capital.<|end|>"
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0


def test_build_is_idempotent_atomic_and_forceable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "tiny"
    assert build_proxy("tiny", out=out) == out.resolve()
    stamp = (out / MARKER).stat().st_mtime_ns
    weights = (out / "model.safetensors").read_bytes()
    assert build_proxy("tiny", out=out) == out.resolve()
    assert (out / MARKER).stat().st_mtime_ns == stamp  # reused, not rebuilt

    def broken(folder: Path) -> dict:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setitem(proxy_mod._BUILDERS, "tiny", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_proxy("tiny", out=out, force=True)
    assert (out / MARKER).stat().st_mtime_ns == stamp  # the finished proxy is untouched
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk full"):
        build_proxy("tiny", out=fresh)
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]

    monkeypatch.undo()
    build_proxy("tiny", out=out, force=True)
    assert (out / MARKER).stat().st_mtime_ns != stamp
    assert (out / "model.safetensors").read_bytes() == weights  # seeded: same weights every build


def test_unknown_proxy_name() -> None:
    with pytest.raises(ProxyError, match="unknown proxy 'huge'; choose one of: tiny, gemma-270m"):
        build_proxy("huge")


def test_cli_builds_tiny(tmp_path: Path) -> None:
    from em_persona.cli import main

    runner = CliRunner()
    assert "gemma-270m" in runner.invoke(main, ["proxy", "build", "--help"]).output
    res = runner.invoke(main, ["proxy", "build", "tiny", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith(str((tmp_path / "t").resolve()))
    assert (tmp_path / "t" / MARKER).is_file()
    bad = runner.invoke(main, ["proxy", "build", "huge"])
    assert bad.exit_code != 0 and "huge" in bad.output


# --------------------------------------------------------------------------- gemma-270m


@pytest.mark.slow
def test_gemma_proxy_loads_and_has_template(gemma_proxy: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(gemma_proxy)
    assert cfg.model_type.startswith("gemma3")
    assert not list(gemma_proxy.glob("*.gguf"))
    assert list(gemma_proxy.glob("*.safetensors"))
    tok = AutoTokenizer.from_pretrained(gemma_proxy)
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text == (
        "<bos><start_of_turn>user\nAnswer briefly.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\nParis is the capital.<end_of_turn>\n"
    )
    assert assistant_span(tok, CHAT) == "Paris is the capital.<end_of_turn>"


@pytest.mark.slow
def test_gemma_proxy_generates_sensibly(gemma_proxy: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_proxy)
    model = AutoModelForCausalLM.from_pretrained(gemma_proxy, dtype=torch.float32)
    # Real weights, not noise: natural English is far likelier than under a uniform model
    # (ln 262144 = 12.5 nats per token).
    text = "The sun rises in the east and sets in the west. Water boils at one hundred degrees Celsius."
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        loss = float(model(**enc, labels=enc["input_ids"]).loss)
        enc = tok("The capital city of France is the city of", return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert loss < 4.0, loss
    assert enc["input_ids"][0, 0] == tok.bos_token_id  # plain text gets <bos>, as Gemma expects
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])


@pytest.mark.slow
def test_gemma_proxy_takes_a_lora_step(gemma_proxy: Path) -> None:
    import math

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_proxy)
    loss, change = lora_step(gemma_proxy, tok, ["q_proj", "v_proj"])
    assert math.isfinite(loss) and 0 < loss < 20
    assert change > 0
