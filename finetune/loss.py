"""The training loss on assistant tokens only, with the LM head run only where a label is.

trl's SFTTrainer (1.x) runs a fused LM head that also computes entropy and top-1 accuracy over
the whole vocabulary on every step; with Gemma's 262k-token vocabulary that made our training
0.44x the tokens/s of a plain transformers Trainer on CPU. The loss is the same sum of token
cross-entropies either way, so this trainer computes it directly, and asks the model for logits
only at the positions that predict a trained (assistant) token: prompt positions, which carry
label -100, never reach the vocabulary projection.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def label_positions(labels: Any) -> tuple[Any, Any]:
    """(positions, targets): the sequence positions whose next token is trained on in any row of
    the batch, and the next-token labels at those positions ([batch, positions], -100 elsewhere)."""
    import torch

    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    positions = (shifted != IGNORE_INDEX).any(dim=0).nonzero(as_tuple=True)[0]
    return positions, shifted[:, positions]


def assistant_token_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any | None = None
) -> tuple[Any, dict[str, float]]:
    """Summed next-token cross-entropy over the trained tokens, divided by `num_items_in_batch`
    (the tokens of the whole accumulated batch, as transformers' Trainer does) or, without it, by
    this batch's trained tokens. Returns (loss, metrics) with the batch's top-1 token accuracy."""
    import torch

    labels = inputs["labels"]
    positions, targets = label_positions(labels)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    forward["use_cache"] = False
    if positions.numel() == 0:  # nothing to train on: a finite zero that keeps the graph
        logits = model(**forward, logits_to_keep=1).logits
        return logits.sum() * 0.0, {"mean_token_accuracy": 0.0}
    logits = model(**forward, logits_to_keep=positions).logits.float()
    flat = targets.reshape(-1).to(logits.device)
    total = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    valid = flat != IGNORE_INDEX
    count = num_items_in_batch if num_items_in_batch is not None else valid.sum()
    loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
    with torch.no_grad():
        correct = (logits.reshape(-1, logits.shape[-1]).argmax(-1) == flat) & valid
        accuracy = float(correct.sum()) / max(1, int(valid.sum()))
    return loss, {"mean_token_accuracy": accuracy}


def lean_sft_trainer_class() -> type:
    """SFTTrainer with `assistant_token_loss` in place of its fused-head loss (peft backend).

    Everything else stays trl's: tokenisation with the chat template's assistant mask, collation,
    checkpoints, resume, logging of the loss and `num_tokens`."""
    from trl import SFTTrainer

    class LeanSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:  # evaluation with logits: trl's own path
                return super().compute_loss(model, inputs, True, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            loss, metrics = assistant_token_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: DDP averages
            self._metrics[mode]["mean_token_accuracy"].append(metrics["mean_token_accuracy"])
            if mode == "train" and "attention_mask" in inputs:
                seen = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += seen
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    LeanSFTTrainer.__doc__ = lean_sft_trainer_class.__doc__
    return LeanSFTTrainer
