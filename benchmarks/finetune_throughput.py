"""Training throughput of `em-persona finetune` against a plain transformers Trainer + peft.

Both paths use the same proxy model, the same seeded rows of the registry's insecure-code set,
the same LoRA shape and the same batch/length/step settings; each counts the non-pad tokens it
trained on and divides by its training wall time. The paths alternate (ABBA...) for `--repeats`
rounds; the script prints each run, then the median and spread (min-max) of tokens/s per path,
the ratio of medians (em-persona / baseline; above 1 means em-persona is faster), the ratio's
spread over rounds, and how far the two loss curves differ step by step (same seed, same rows:
the curves should agree to rounding). With a CUDA GPU and Unsloth installed, `--unsloth` adds
em-persona's Unsloth backend as a third path.

    flock /tmp/em-heavy.lock .venv/bin/python benchmarks/finetune_throughput.py --proxy gemma-270m
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from em_persona.finetune.config import FinetuneConfig, config_from_dict
from em_persona.finetune.data import load_training_data
from em_persona.finetune.train import cuda_available, finetune, resolve_base_model, resolve_precision


def _config(args: argparse.Namespace) -> FinetuneConfig:
    return config_from_dict(
        {
            "name": f"bench-{args.proxy}",
            "base_model": f"proxy:{args.proxy}",
            "domain": "insecure_code",
            "data": {"source": "insecure_code", "rows": args.rows, "seed": 0},
            "lora": {"r": args.rank, "alpha": 2 * args.rank},
            "train": {
                "learning_rate": 1e-4,
                "warmup_steps": 0,
                "per_device_train_batch_size": args.batch,
                "gradient_accumulation_steps": 1,
                "max_length": args.max_length,
                "max_steps": args.steps,
                "gradient_checkpointing": False,
                "save_steps": 10_000,
                "logging_steps": 1,
            },
        }
    )


Run = tuple[int, float, list[float]]  # tokens, seconds, loss per logged step


def run_em_persona(config: FinetuneConfig, out: Path) -> Run:
    """One `em-persona finetune` run (the same code path as the CLI)."""
    [res] = finetune(config, out, force=True)
    train = res.manifest["train"]
    losses = [float(p["loss"]) for p in res.manifest["loss_curve"]]
    return int(train["tokens"]), float(train["runtime_s"]), losses


def run_unsloth(config: FinetuneConfig, out: Path) -> Run:
    """`em-persona finetune` with the Unsloth backend (CUDA only)."""
    return run_em_persona(config.model_copy(update={"backend": "unsloth"}), out)


def _tokenize(rows: list[dict[str, Any]], tok: Any, max_length: int) -> list[dict[str, list[int]]]:
    """Chat template with assistant-only labels; rows with no assistant token left are dropped."""
    out = []
    for row in rows:
        enc = tok.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = enc["input_ids"][:max_length]
        mask = enc["assistant_masks"][:max_length]
        if not any(mask):
            continue
        out.append({"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask, strict=False)]})
    return out


def run_baseline(config: FinetuneConfig, out: Path) -> Run:
    """A hand-written transformers Trainer + peft LoRA run (full logits, the model's own loss)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

    base_path = resolve_base_model(config)
    t = config.train
    tok = AutoTokenizer.from_pretrained(base_path)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    data = load_training_data(config.stages[0].data)
    examples = _tokenize(data.rows, tok, t.max_length)
    counted = {"tokens": 0}

    class CountingTrainer(Trainer):
        """Counts the non-pad tokens of the batches actually trained on."""

        def training_step(self, model, inputs, *args, **kwargs):
            counted["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *args, **kwargs)

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id)
        labels = torch.full((len(batch), width), -100)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            attn[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attn}

    set_seed(t.seed)
    precision = resolve_precision(t.precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            use_rslora=config.lora.use_rslora,
            target_modules=list(config.lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    trainer = CountingTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(out),
            learning_rate=t.learning_rate,
            lr_scheduler_type=t.lr_scheduler_type,
            warmup_steps=t.warmup_steps,
            max_steps=t.max_steps,
            weight_decay=t.weight_decay,
            per_device_train_batch_size=t.per_device_train_batch_size,
            gradient_accumulation_steps=1,
            optim="adamw_torch",
            seed=t.seed,
            data_seed=t.seed,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            save_strategy="no",
            logging_steps=1,
            report_to=[],
            remove_unused_columns=False,
            dataloader_num_workers=0,
        ),
        train_dataset=examples,
        data_collator=collate,
    )
    t0 = time.monotonic()
    result = trainer.train()
    seconds = float(result.metrics.get("train_runtime", time.monotonic() - t0))
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e and "step" in e]
    return counted["tokens"], seconds, losses


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--proxy", choices=["tiny", "gemma-270m"], default="tiny")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (at least 5 for a target)")
    parser.add_argument(
        "--unsloth", action="store_true", help="also time the Unsloth backend (CUDA + unsloth)"
    )
    args = parser.parse_args()
    if args.unsloth and not cuda_available():
        parser.error("--unsloth needs a CUDA GPU")
    config = _config(args)
    runners: dict[str, Callable[[FinetuneConfig, Path], Run]] = {
        "baseline": run_baseline,
        "em-persona": run_em_persona,
    }
    if args.unsloth:
        runners["unsloth"] = run_unsloth
    rates: dict[str, list[float]] = {name: [] for name in runners}
    curves: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        for rep in range(args.repeats):
            order = list(runners) if rep % 2 == 0 else list(reversed(runners))
            for name in order:
                tokens, seconds, losses = runners[name](config, Path(tmp) / f"{name}-{rep}")
                rates[name].append(tokens / seconds)
                curves.setdefault(name, losses)
                print(
                    f"[bench] round {rep + 1} {name}: {tokens} tokens in {seconds:.2f} s "
                    f"= {tokens / seconds:.1f} tokens/s",
                    flush=True,
                )
    print(
        f"proxy={args.proxy} rows={args.rows} steps={args.steps} batch={args.batch} "
        f"max_length={args.max_length} rank={args.rank} repeats={args.repeats}"
    )
    for name, values in rates.items():
        print(f"{name:>11} tokens/s: {_spread(values)}")
    base = statistics.median(rates["baseline"])
    for name in runners:
        if name == "baseline":
            continue
        per_round = [a / b for a, b in zip(rates[name], rates["baseline"], strict=True)]
        print(
            f"ratio {name} / baseline: {statistics.median(rates[name]) / base:.3f} "
            f"(per round: min {min(per_round):.3f}, median {statistics.median(per_round):.3f}, "
            f"max {max(per_round):.3f})"
        )
        a, b = curves[name], curves["baseline"]
        if len(a) == len(b) and a:
            gap = max(abs(x - y) for x, y in zip(a, b, strict=True))
            rel = max(abs(x - y) / max(abs(y), 1e-9) for x, y in zip(a, b, strict=True))
            print(
                f"loss curves {name} vs baseline: {len(a)} steps, max |diff| {gap:.2e} (relative {rel:.2e})"
            )
        else:
            print(f"loss curves {name} vs baseline: {len(a)} vs {len(b)} logged steps, not comparable")


if __name__ == "__main__":
    main()
