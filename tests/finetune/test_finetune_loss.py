"""The assistant-token loss: the model's own loss and gradients, without logits for prompt positions."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from em_persona.finetune.loss import assistant_token_loss, label_positions

VOCAB = 97


def _model(family: str) -> Any:
    """A small random causal LM of a family the proxies use (Gemma 3) or the tiny proxy's (Llama)."""
    torch.manual_seed(0)
    common = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
    }
    if family == "gemma3":
        return Gemma3ForCausalLM(Gemma3TextConfig(**common, sliding_window=8)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


def _batch() -> dict[str, torch.Tensor]:
    """Two right-padded rows; labels -100 on the prompt part and on padding."""
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 24))
    attention = torch.ones_like(ids)
    attention[1, 18:] = 0
    labels = ids.clone()
    labels[0, :10] = -100
    labels[1, :6] = -100
    labels[1, 18:] = -100
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def test_label_positions_are_the_ones_predicting_a_trained_token() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    positions, targets = label_positions(labels)
    assert positions.tolist() == [0, 1, 2]  # position t predicts token t+1
    assert targets.tolist() == [[-100, 5, 6], [7, -100, -100]]


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("num_items", [None, 40])
def test_loss_and_gradients_equal_the_models_own(family: str, num_items: int | None) -> None:
    batch = _batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    model = _model(family)
    own = model(**batch, **kwargs).loss
    own.backward()
    own_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ours, metrics = assistant_token_loss(model, dict(batch), kwargs.get("num_items_in_batch"))
    ours.backward()
    assert ours.item() == pytest.approx(own.item(), rel=1e-5)
    for name, grad in own_grads.items():
        assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-6), name
    assert 0.0 <= metrics["mean_token_accuracy"] <= 1.0


def test_the_lm_head_never_sees_prompt_positions() -> None:
    model = _model("gemma3")
    seen: list[int] = []
    model.lm_head.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    batch = _batch()
    assistant_token_loss(model, batch)
    # positions 5..22 predict a trained token in some row; the prompt-only positions 0..4 do not
    assert seen == [18]


def test_a_batch_without_trained_tokens_is_a_finite_zero() -> None:
    model = _model("llama")
    batch = _batch()
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss, metrics = assistant_token_loss(model, batch)
    loss.backward()  # keeps the graph: the trainer's backward does not fail
    assert float(loss) == 0.0 and metrics["mean_token_accuracy"] == 0.0
