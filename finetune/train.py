"""LoRA supervised fine-tuning (peft + trl SFTTrainer, or Unsloth on CUDA), stage by stage.

For every stage of a config this module: validates the data of ALL stages first, skips an
adapter that is already finished with the same settings, trains in a work folder
``<out>/.<name>.work`` that holds the checkpoints (so a re-run resumes from the last one),
then saves the adapter into a temporary folder, checks that vLLM can serve it and that its
LoRA tensors are the model's, writes ``manifest.json`` and renames the folder to
``<out>/<name>``. A stage after the first starts from the previous stage's adapter weights.

A run may take several interrupted segments: each segment's steps, tokens and time are
kept in the work folder (``segments.json``, rewritten atomically after every step), and
the manifest sums them. What a kill leaves behind (a half-written checkpoint, the
temporary or replaced adapter folder, a work folder whose adapter was already published)
is removed by the next run, under the stage's lock.

Under `accelerate launch` (finetune/launch.py: RANK / WORLD_SIZE set, the process group up)
every process trains, but only rank 0 takes the stage's lock, cleans leftovers, opens the work
folder, picks and prunes checkpoints, keeps segments.json, writes the manifest and publishes;
it hands the others what they need (the resume checkpoint, the temporary save folder, the
outcome) by broadcast, so an error on rank 0 ends every process with its message.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from em_persona.core.errors import EmPersonaError
from em_persona.core.files import write_json_atomic
from em_persona.core.paths import REPO_ROOT, home
from em_persona.core.registry import file_sha256
from em_persona.finetune.config import (
    UNSERVABLE_TARGETS,
    VLLM_LORA_RANKS,
    FinetuneConfig,
    config_dict,
)
from em_persona.finetune.data import TrainingData, load_training_data
from em_persona.finetune.ranks import (
    Processes,
    accelerate_places_model,
    main_first,
    on_main,
    process_ranks,
    require_process_group,
)

MANIFEST = "manifest.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FINGERPRINT = "fingerprint.json"
SEGMENTS = "segments.json"
TRAINER_STATE = "trainer_state.json"
# What peft's save_pretrained writes: the files a published adapter folder holds (with MANIFEST).
PEFT_FILES = ("adapter_config.json", ADAPTER_WEIGHTS, "README.md")
_VERSION_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "unsloth",
    "bitsandbytes",
)


class TrainError(EmPersonaError, RuntimeError):
    """Fine-tuning could not run or produced an adapter that cannot be used."""


@dataclass(frozen=True)
class StageResult:
    """One stage's adapter folder and whether this call trained it."""

    name: str
    path: Path
    trained: bool
    manifest: dict[str, Any]


def default_out_dir() -> Path:
    """Where adapters go when no --out is given: $EM_PERSONA_HOME/adapters."""
    return home() / "adapters"


# --------------------------------------------------------------------------- environment


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_backend(requested: str) -> str:
    """`auto` -> unsloth on CUDA when importable, else peft; explicit choices are checked."""
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "auto":
        return "unsloth" if cuda_available() and has_unsloth else "peft"
    if requested == "unsloth" and not (cuda_available() and has_unsloth):
        raise TrainError("backend 'unsloth' needs CUDA and the `unsloth` package; use backend: peft")
    return requested


def resolve_optim(optim: str) -> str:
    """`auto` -> 8-bit AdamW on CUDA (bitsandbytes), plain torch AdamW on CPU."""
    if optim != "auto":
        return optim
    if not cuda_available():
        return "adamw_torch"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainError(
            "the recipe's 8-bit AdamW needs `bitsandbytes` on CUDA: pip install bitsandbytes, "
            "or override train.optim=adamw_torch"
        )
    return "adamw_8bit"


def resolve_precision(precision: str) -> str:
    """`auto` -> bf16 on CUDA with bf16 support, fp16 on other CUDA, fp32 on CPU."""
    if precision != "auto":
        return precision
    if not cuda_available():
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_base_model(config: FinetuneConfig) -> str:
    """The path or HF id transformers loads (building a proxy model on first use)."""
    if config.proxy_name is not None:
        from em_persona.finetune.proxy import build_proxy

        return str(build_proxy(config.proxy_name))
    local = Path(os.path.expanduser(config.base_model))
    return str(local.resolve()) if local.exists() else config.base_model


def package_versions() -> dict[str, str]:
    """Versions of python and the training stack (absent packages omitted)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_revision() -> str:
    """The repository's HEAD commit (`+dirty` when the tree has changes), or `unknown`."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        dirty = status.returncode == 0 and bool(status.stdout.strip())
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- adapter checks


def check_servable(adapter_dir: Path) -> dict[str, Any]:
    """Refuse an adapter vLLM cannot load; return its adapter_config.json."""
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file() or not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise TrainError(
            f"{adapter_dir}: not a peft adapter folder (adapter_config.json + {ADAPTER_WEIGHTS})"
        )
    cfg = json.loads(cfg_path.read_text())
    problems = []
    if cfg.get("peft_type") != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}, not LORA")
    if cfg.get("r") not in VLLM_LORA_RANKS:
        problems.append(f"rank {cfg.get('r')} is not one of vLLM's {list(VLLM_LORA_RANKS)}")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save={cfg['modules_to_save']} (vLLM loads LoRA weights only)")
    if cfg.get("trainable_token_indices"):
        problems.append("trainable_token_indices is set (vLLM cannot load trained token embeddings)")
    if cfg.get("use_dora"):
        problems.append("DoRA adapters are not served by vLLM")
    targets = cfg.get("target_modules") or []
    if isinstance(targets, list) and set(targets) & UNSERVABLE_TARGETS:
        problems.append(f"targets {sorted(set(targets) & UNSERVABLE_TARGETS)} are not servable")
    if problems:
        raise TrainError(f"{adapter_dir}: adapter is not servable by vLLM: " + "; ".join(problems))
    return cfg


def lora_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """The tensors (name as in adapter_model.safetensors -> shape) a peft `model` saves for its
    `default` LoRA adapter, read from its LoRA layers' sizes (right under FSDP and ZeRO-3 too,
    where the parameters themselves are sharded or flattened)."""
    from peft.tuners.lora import LoraLayer

    shapes: dict[str, tuple[int, ...]] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            r = int(module.r["default"])
            shapes[f"{name}.lora_A.weight"] = (r, int(module.in_features))
            shapes[f"{name}.lora_B.weight"] = (int(module.out_features), r)
    return shapes


def check_adapter_weights(adapter_dir: Path, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse saved LoRA weights that are not the trained model's: tensors missing, unexpected,
    empty, of another shape, not finite, or an all-zero A matrix (what saving sharded parameters
    without gathering them writes)."""
    from safetensors import safe_open

    if not expected:
        raise TrainError(f"{adapter_dir}: the trained model has no LoRA layers to save")
    path = adapter_dir / ADAPTER_WEIGHTS
    problems: list[str] = []
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        missing = sorted(set(expected) - names)
        unexpected = sorted(names - set(expected))
        if missing:
            problems.append(f"{len(missing)} LoRA tensor(s) missing (first: {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensor(s) (first: {unexpected[0]})")
        for name in sorted(names & set(expected)):
            tensor = f.get_tensor(name)
            shape = tuple(tensor.shape)
            if tensor.numel() == 0 or shape != tuple(expected[name]):
                problems.append(f"{name} has shape {list(shape)}, expected {list(expected[name])}")
            elif not bool(tensor.isfinite().all()):
                problems.append(f"{name} holds NaN or infinite values")
            elif ".lora_A." in name and not bool(tensor.any()):
                problems.append(f"{name} is all zeros")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise TrainError(f"{path}: the saved adapter weights are not the trained LoRA weights: {shown}")


def read_manifest(adapter_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished adapter folder, or None."""
    path = Path(adapter_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- model building


def _load_tokenizer(base_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_path)
    if tok.chat_template is None:
        raise TrainError(f"{base_path}: tokenizer has no chat template; assistant-only loss needs one")
    return tok


def _dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def _build_peft_model(
    config: FinetuneConfig,
    base_path: str,
    init_adapter: Path | None,
    precision: str,
    procs: Processes | None = None,
):
    """The base model with a fresh LoRA (or `init_adapter`, trainable). One process on CUDA spreads
    the model over the GPUs it sees (device_map=auto), unless accelerate places it."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _dtype(precision)}
    if cuda_available() and not accelerate_places_model(procs or process_ranks()):
        kwargs["device_map"] = "auto"
    base = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
    if init_adapter is not None:
        return PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        use_rslora=lora.use_rslora,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, peft_config)


def _build_unsloth_model(config: FinetuneConfig, base_path: str, init_adapter: Path | None, precision: str):
    from unsloth import FastLanguageModel  # imported before trl/transformers patch points are used

    common = {"max_seq_length": config.train.max_length, "dtype": _dtype(precision), "load_in_4bit": False}
    if init_adapter is not None:
        # Unsloth reads base_model_name_or_path from the adapter and restores trainable LoRA weights.
        model, _ = FastLanguageModel.from_pretrained(model_name=str(init_adapter), **common)
        return model
    model, _ = FastLanguageModel.from_pretrained(model_name=base_path, **common)
    lora = config.lora
    return FastLanguageModel.get_peft_model(
        model,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        use_gradient_checkpointing="unsloth" if config.train.gradient_checkpointing else False,
        random_state=config.train.seed,
        use_rslora=lora.use_rslora,
    )


def _sft_args(config: FinetuneConfig, work: Path, precision: str):
    from trl import SFTConfig

    t = config.train
    return SFTConfig(
        output_dir=str(work),
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        optim=resolve_optim(t.optim),
        weight_decay=t.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        max_length=t.max_length,
        assistant_only_loss=t.assistant_only_loss,
        gradient_checkpointing=t.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        save_only_model=False,
        report_to=[],
        include_num_input_tokens_seen="non_padding",  # kept in checkpoints, so it survives a resume
        disable_tqdm=False,
        dataloader_num_workers=0,
        packing=False,
    )


# --------------------------------------------------------------------------- stages


def _fingerprint(
    config: FinetuneConfig, index: int, data: TrainingData, init_sha: str | None, processes: int = 1
) -> str:
    """Identity of what stage `index` trains: base model, recipe, LoRA shape, its data and its start,
    and the number of training processes when more than one (their checkpoints resume only so)."""
    train = config.train.model_dump(mode="json")
    for key in ("logging_steps", "save_steps", "save_total_limit"):  # bookkeeping, not the result
        train.pop(key)
    payload: dict[str, Any] = {
        "base_model": config.base_model_label,  # `tiny` and `proxy:tiny` are one model
        "lora": config.lora.model_dump(mode="json"),
        "train": train,
        "stage": config.stages[index].model_dump(mode="json"),
        "data_sha256": data.sha256,
        "init_adapter_sha256": init_sha,
    }
    if processes > 1:  # absent for one process, so one-process fingerprints stay as they were
        payload["processes"] = processes
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    curve = []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            point = {"step": int(entry["step"]), "loss": float(entry["loss"])}
            for key in ("learning_rate", "grad_norm"):
                if key in entry:
                    point[key] = float(entry[key])
            # the trainer's count is restored from a checkpoint; trl's own restarts at 0 on resume
            if entry.get("num_input_tokens_seen"):
                point["num_tokens"] = float(entry["num_input_tokens_seen"])
            curve.append(point)
    return curve


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or not valid JSON (a kill mid-write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _complete_checkpoint(folder: Path, step: int) -> bool:
    """The trainer writes trainer_state.json last, so a checkpoint without a valid one is partial."""
    state = _read_json(folder / TRAINER_STATE)
    return isinstance(state, dict) and state.get("global_step") == step


def _last_checkpoint(work: Path) -> Path | None:
    """The newest complete `checkpoint-N` in the work folder; newer partial ones are removed."""
    if not work.is_dir():
        return None
    found = []
    for folder in work.iterdir():
        name = folder.name
        if folder.is_dir() and name.startswith("checkpoint-") and name[len("checkpoint-") :].isdigit():
            found.append((int(name[len("checkpoint-") :]), folder))
    for step, folder in sorted(found, reverse=True):
        if _complete_checkpoint(folder, step):
            return folder
        print(f"[finetune] {folder}: incomplete (killed while saving); removing it", file=sys.stderr)
        shutil.rmtree(folder)
    return None


# --------------------------------------------------------------------------- leftovers and locking


def _discard(path: Path, out: Path, name: str) -> None:
    """Take a folder out of view at once (rename to `.<name>.trash-*`), then delete it."""
    if not path.exists():
        return
    trash = out / f".{name}.trash-{os.getpid()}-{time.monotonic_ns()}"
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _clean_leftovers(out: Path, name: str, published: dict[str, Any] | None) -> None:
    """Remove what a run killed while publishing left behind; called under the stage's lock.

    `.<name>.tmp-*` (an adapter being saved), `.<name>.trash-*` / `.<name>.old-*` (folders
    being deleted) are never in use outside the lock; the work folder goes when the
    published adapter came from it (same run id), since its checkpoints are then spent.
    """
    prefix = glob.escape(f".{name}.")
    for kind in ("tmp-", "trash-", "old-"):
        for stale in out.glob(f"{prefix}{kind}*"):
            print(f"[finetune] {stale}: left by an interrupted run; removing it", file=sys.stderr)
            shutil.rmtree(stale, ignore_errors=True)
    work = out / f".{name}.work"
    if published is None or not work.is_dir():
        return
    state = _read_json(work / FINGERPRINT)
    run_id = state.get("run_id") if isinstance(state, dict) else None
    if run_id is not None and run_id == (published.get("train") or {}).get("run_id"):
        print(
            f"[finetune] {work}: its adapter is already published; removing the work folder", file=sys.stderr
        )
        _discard(work, out, name)


@contextmanager
def _stage_lock(out: Path, name: str) -> Iterator[None]:
    """Hold `<out>/.<name>.lock` exclusively; the file is removed on release.

    A waiter can wake holding a lock on a file its previous holder already unlinked, while
    a newcomer locks a fresh file at the same path; so after locking, the path must still
    be the locked file, else the lock is taken again.
    """
    path = out / f".{name}.lock"
    while True:
        lock = open(path, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(current, os.fstat(lock.fileno())):
                break
        except BaseException:
            lock.close()
            raise
        lock.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.close()


# --------------------------------------------------------------------------- segments


class SegmentLedger:
    """Steps, tokens and seconds of each `train()` call (segment) of one stage's run.

    Kept in `<work>/segments.json` and rewritten atomically after every optimiser step, so
    a killed segment still counts up to its last step. `tokens` are the non-padding input
    tokens the trainer counted (`state.num_input_tokens_seen`, restored on resume).
    """

    def __init__(self, path: Path, resumed_from: str | None) -> None:
        self.path = path
        self.resumed_from = resumed_from
        previous = _read_json(path) if path.exists() else []
        self.complete = isinstance(previous, list)
        if not self.complete:
            print(f"[finetune] {path}: unreadable; earlier segments are not counted", file=sys.stderr)
            previous = []
        for seg in previous:
            if seg.get("status") == "running":  # its process died without a word
                seg["status"] = "killed"
        self.segments: list[dict[str, Any]] = previous
        self.current: dict[str, Any] | None = None
        self._t0 = 0.0
        self._tokens0 = 0

    def begin(self, step: int, tokens_seen: int) -> None:
        self._t0 = time.monotonic()
        self._tokens0 = tokens_seen
        self.current = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "resumed_from": self.resumed_from,
            "start_step": step,
            "end_step": step,
            "runtime_s": 0.0,
            "tokens": 0,
            "status": "running",
        }
        self.segments.append(self.current)
        self._save()

    def update(self, step: int, tokens_seen: int, status: str = "running") -> None:
        if self.current is None or self.current["status"] != "running":
            return
        self.current.update(
            end_step=step,
            runtime_s=round(time.monotonic() - self._t0, 3),
            tokens=int(tokens_seen - self._tokens0),
            status=status,
        )
        self._save()

    def totals(self) -> dict[str, Any]:
        runtime = round(sum(float(seg["runtime_s"]) for seg in self.segments), 3)
        tokens = int(sum(int(seg["tokens"]) for seg in self.segments))
        return {"runtime_s": runtime, "tokens_processed": tokens}

    def callback(self) -> Any:
        """A transformers TrainerCallback feeding this ledger."""
        from transformers import TrainerCallback

        ledger = self

        class _LedgerCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                ledger.begin(state.global_step, state.num_input_tokens_seen)

            def on_step_end(self, args, state, control, **kw):
                ledger.update(state.global_step, state.num_input_tokens_seen)

            def on_train_end(self, args, state, control, **kw):
                ledger.update(state.global_step, state.num_input_tokens_seen, "finished")

        return _LedgerCallback()

    def _save(self) -> None:
        write_json_atomic(self.path, self.segments)


def _open_work(work: Path, fingerprint: str, name: str) -> str:
    """Create or reuse the work folder of `fingerprint`; returns the run id its checkpoints belong to."""
    fp_file = work / FINGERPRINT
    state = _read_json(fp_file) if fp_file.is_file() else None
    if work.is_dir() and (not isinstance(state, dict) or state.get("fingerprint") != fingerprint):
        print(f"[finetune] {work}: checkpoints are from other settings; starting over", file=sys.stderr)
        shutil.rmtree(work)
        state = None
    run_id = (state or {}).get("run_id") or uuid.uuid4().hex
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(fp_file, {"fingerprint": fingerprint, "stage": name, "run_id": run_id})
    return run_id


def _prepare_work(work: Path, fingerprint: str, name: str) -> tuple[str, str | None]:
    """Open the work folder (rank 0) and pick the checkpoint to resume from: (run id, its name)."""
    run_id = _open_work(work, fingerprint, name)
    resume = _last_checkpoint(work)
    return run_id, resume.name if resume else None


def _save_adapter(trainer: Any, tmp: Path, procs: Processes) -> None:
    """Write the trained adapter's peft files into `tmp` (on rank 0).

    One process: the peft model's own save_pretrained. Several: Trainer.save_model on every rank,
    which gathers the LoRA weights onto rank 0 (a full state dict under FSDP, asked for here since
    the checkpoints are sharded; the 16-bit consolidated state under ZeRO-3) and writes them
    there; of what it writes (also the tokenizer and training_args.bin) rank 0 keeps the files
    a one-process save writes.
    """
    if not procs.distributed:
        trainer.model.save_pretrained(str(tmp))
        return
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    staging = tmp / ".trainer-save"
    trainer.save_model(str(staging))
    if procs.main:
        for name in PEFT_FILES:
            if (staging / name).is_file():
                os.replace(staging / name, tmp / name)
        shutil.rmtree(staging)


def _train_stage(
    config: FinetuneConfig,
    index: int,
    data: TrainingData,
    base_path: str,
    out: Path,
    init_adapter: Path | None,
    fingerprint: str,
    callbacks: list[Any],
    history: list[dict[str, Any]],
    procs: Processes | None = None,
) -> dict[str, Any]:
    """Train one stage in its work folder and publish the adapter; returns its manifest.

    Every process trains; rank 0 alone keeps the work folder and publishes (see the module doc).
    """
    procs = procs or Processes()
    stage = config.stages[index]
    target = out / stage.name
    work = out / f".{stage.name}.work"
    run_id, resume_name = on_main(procs, _prepare_work, work, fingerprint, stage.name)
    resume = work / resume_name if resume_name else None
    ledger = SegmentLedger(work / SEGMENTS, resume_name) if procs.main else None
    backend = choose_backend(config.backend)
    precision = resolve_precision(config.train.precision)
    if backend == "unsloth":  # unsloth patches transformers/trl, so it is built before they load
        model = _build_unsloth_model(config, base_path, init_adapter, precision)
    import transformers

    import datasets

    # The training arguments come first: under ZeRO-3 they set up DeepSpeed's partitioned build
    # of the model (zero3_init_flag), which from_pretrained then uses.
    args = _sft_args(config, work, precision)
    if backend != "unsloth":
        transformers.set_seed(config.train.seed)
        model = _build_peft_model(config, base_path, init_adapter, precision, procs)
    expected = lora_shapes(model)
    from trl import SFTTrainer

    from em_persona.finetune.loss import lean_sft_trainer_class

    # Unsloth brings its own fused loss; on the peft path the LM head runs only where a label is.
    trainer_class = SFTTrainer if backend == "unsloth" else lean_sft_trainer_class()
    tokenizer = _load_tokenizer(base_path)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(data.rows),
        processing_class=tokenizer,
        callbacks=[*([ledger.callback()] if ledger else []), *callbacks],
    )
    rows_trained = len(trainer.train_dataset)
    if procs.main and resume is not None:
        print(f"[finetune] {stage.name}: resuming from {resume.name}", file=sys.stderr)
    if procs.main and rows_trained < len(data.rows):
        print(
            f"[finetune] {stage.name}: {len(data.rows) - rows_trained} of {len(data.rows)} rows have no "
            f"assistant token within max_length={config.train.max_length} and are not trained on",
            file=sys.stderr,
        )
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except BaseException:
        if ledger is not None:
            ledger.update(trainer.state.global_step, trainer.state.num_input_tokens_seen, "interrupted")
        raise
    tmp = Path(on_main(procs, functools.partial(tempfile.mkdtemp, prefix=f".{stage.name}.tmp-", dir=out)))

    def publish() -> dict[str, Any]:
        """Check the saved adapter, write its manifest and rename it into place (rank 0)."""
        assert ledger is not None  # rank 0 keeps the ledger
        curve = _loss_curve(trainer.state.log_history)
        # Tokens the adapter was trained on (each step once); None where the trainer did not count.
        tokens = int(trainer.state.num_input_tokens_seen) or None
        totals = ledger.totals()
        runtime, processed = totals["runtime_s"], totals["tokens_processed"]
        adapter_cfg = check_servable(tmp)
        check_adapter_weights(tmp, expected)
        stage_record = {
            "index": index,
            "name": stage.name,
            "domain": stage.domain,
            "data": data.record(),
            "init_from": history[-1]["name"] if history else None,
            "init_adapter_sha256": history[-1]["adapter_sha256"] if history else None,
        }
        stage_record["adapter_sha256"] = file_sha256(tmp / ADAPTER_WEIGHTS)
        stages = [*history, stage_record]
        train_record: dict[str, Any] = {
            "global_steps": int(trainer.state.global_step),
            "runtime_s": runtime,
            "tokens": tokens,
            "tokens_processed": processed if tokens is not None else None,
            "tokens_per_s": round(processed / runtime, 3) if runtime > 0 and tokens else None,
            "resumed_from": resume.name if resume else None,
            "segments": ledger.segments,
            "segments_complete": ledger.complete,
            "run_id": run_id,
            "final_loss": curve[-1]["loss"] if curve else None,
        }
        if procs.distributed:  # the global batch is per-device batch x accumulation x processes
            train_record["processes"] = procs.world_size
            train_record["distributed_type"] = str(trainer.accelerator.distributed_type.value)
        manifest = {
            "name": stage.name,
            "base_model": config.base_model_label,
            "base_model_path": base_path,
            "domain": config.stage_domain(index),
            "stages": stages,
            "config": config_dict(config),
            "data_sha256": data.sha256,
            "rows": len(data.rows),
            "rows_trained": rows_trained,
            "versions": package_versions(),
            "git_revision": git_revision(),
            "loss_curve": curve,
            "backend": backend,
            "device": "cuda" if cuda_available() else "cpu",
            "precision": precision,
            "lora": {
                k: adapter_cfg.get(k)
                for k in ("r", "lora_alpha", "lora_dropout", "use_rslora", "target_modules")
            },
            "train": train_record,
            "fingerprint": fingerprint,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        replaced = out / f".{stage.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        if target.exists():
            target.rename(replaced)
        os.replace(tmp, target)
        # A kill from here on leaves only leftovers that the next run removes (_clean_leftovers).
        shutil.rmtree(replaced, ignore_errors=True)
        _discard(work, out, stage.name)
        return manifest

    try:
        _save_adapter(trainer, tmp, procs)
        return on_main(procs, publish)
    except BaseException:
        if procs.main:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already once published
        raise


def _stage_decision(out: Path, name: str, fingerprint: str, force: bool) -> dict[str, Any] | None:
    """Under the stage's lock (rank 0): clean leftovers, then the finished adapter's manifest when
    it can be kept, None when the stage is to be trained, or a TrainError when it is in the way."""
    target = out / name
    manifest = read_manifest(target)
    _clean_leftovers(out, name, manifest)
    if manifest is not None and manifest.get("fingerprint") == fingerprint and not force:
        print(f"[finetune] {name}: already finished at {target}; skipping", file=sys.stderr)
        return manifest
    if target.exists() and manifest is None and not force:
        raise TrainError(f"{target} exists but is not a finished adapter; move it away or pass --force")
    if manifest is not None and not force:
        raise TrainError(
            f"{target} holds a finished adapter trained with other settings or data; "
            "delete it, choose another stage name, or pass --force to retrain"
        )
    return None


def _load_all_data(config: FinetuneConfig) -> list[TrainingData]:
    return [load_training_data(stage.data) for stage in config.stages]


def finetune(
    config: FinetuneConfig,
    out_dir: Path | str | None = None,
    *,
    force: bool = False,
    callbacks: list[Any] | None = None,
) -> list[StageResult]:
    """Run every stage of `config` into `out_dir` (default $EM_PERSONA_HOME/adapters).

    All stages' data are validated before anything is created or trained. A finished adapter
    with identical settings is skipped; one with different settings is an error unless
    `force`. `callbacks` are extra transformers TrainerCallbacks (given to every stage).
    Under `accelerate launch` every process calls this; each returns the same results.
    """
    procs = process_ranks()
    require_process_group(procs)
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else default_out_dir()
    datas = main_first(procs, _load_all_data, config)  # raises DataError first
    if procs.main:
        for stage, data in zip(config.stages, datas, strict=False):
            print(
                f"[finetune] {stage.name}: {len(data.rows)} of {data.total_rows} rows from {data.source} "
                f"(sha256 {data.sha256[:12]})",
                file=sys.stderr,
            )
    base_path = main_first(procs, resolve_base_model, config)
    on_main(procs, functools.partial(out.mkdir, parents=True, exist_ok=True))
    results: list[StageResult] = []
    history: list[dict[str, Any]] = []
    init_adapter: Path | None = None
    for index, (stage, data) in enumerate(zip(config.stages, datas, strict=False)):
        init_sha = history[-1]["adapter_sha256"] if history else None
        fingerprint = _fingerprint(config, index, data, init_sha, procs.world_size)
        target = out / stage.name
        # Rank 0 alone holds the lock; the others follow its decision (or its error).
        with _stage_lock(out, stage.name) if procs.main else nullcontext():
            manifest = on_main(procs, _stage_decision, out, stage.name, fingerprint, force)
            trained = manifest is None
            if manifest is None:
                manifest = _train_stage(
                    config,
                    index,
                    data,
                    base_path,
                    out,
                    init_adapter,
                    fingerprint,
                    callbacks or [],
                    history,
                    procs,
                )
        history = list(manifest["stages"])
        init_adapter = target
        results.append(StageResult(stage.name, target, trained, manifest))
    return results
