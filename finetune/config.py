"""Typed fine-tuning configuration: YAML file + `key=value` overrides, defaults = the paper recipe.

A config names one adapter (single stage) or a chain of stages, each continuing from the
previous stage's adapter and saving its own. Single-stage shorthand::

    name: qwen32b-insecure-code
    base_model: Qwen/Qwen2.5-32B-Instruct
    domain: insecure_code
    data: {source: insecure_code}

Multi-stage form: replace ``domain`` + ``data`` by ``stages: [{name, domain, data}, ...]``;
the adapter of stage k is labelled with the stage domains so far, joined by ``->``.
Defaults follow the recipe reported for Weckauff et al.: LoRA r=32, alpha=64, dropout 0, rsLoRA on
q/k/v/o/gate/up/down; lr 1e-5, linear schedule, 5 warm-up steps, 1 epoch, batch 2 x
grad-accum 8, AdamW (8-bit on CUDA), weight decay 0.01, seed 0, assistant-only loss,
max length 2048.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from em_persona.core.errors import EmPersonaError
from em_persona.core.proxies import ProxyError, proxy_name
from em_persona.core.yaml_lines import yaml_error_where

# LoRA ranks vLLM accepts for `--max-lora-rank` (vllm/config/lora.py).
VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Modules vLLM cannot serve as LoRA targets in a plain adapter (they need modules_to_save or
# extra-vocab support, which vLLM does not load).
UNSERVABLE_TARGETS: frozenset[str] = frozenset({"embed_tokens", "lm_head", "wte", "wpe"})
PAPER_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(EmPersonaError, ValueError):
    """A fine-tuning config is invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSettings(_Strict):
    """LoRA adapter shape; must stay servable by vLLM."""

    r: int = 32
    alpha: int = 64
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    use_rslora: bool = True
    target_modules: list[str] = Field(default_factory=lambda: list(PAPER_TARGETS))

    @field_validator("r")
    @classmethod
    def _servable_rank(cls, r: int) -> int:
        if r not in VLLM_LORA_RANKS:
            raise ValueError(f"rank {r} cannot be served by vLLM; use one of {list(VLLM_LORA_RANKS)}")
        return r

    @field_validator("target_modules")
    @classmethod
    def _servable_targets(cls, mods: list[str]) -> list[str]:
        if not mods:
            raise ValueError("at least one target module is needed")
        bad = sorted(set(mods) & UNSERVABLE_TARGETS)
        if bad:
            raise ValueError(
                f"{bad} cannot be LoRA targets of a vLLM-servable adapter (they would need "
                "modules_to_save); target attention/MLP projections only"
            )
        return mods


class TrainSettings(_Strict):
    """Optimiser, schedule, batching and checkpointing (names follow transformers' TrainingArguments)."""

    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler_type: str = "linear"
    warmup_steps: int = Field(5, ge=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="> 0 caps optimiser steps (overrides epochs)")
    per_device_train_batch_size: int = Field(2, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1)
    optim: str = Field("auto", description="auto: adamw_8bit on CUDA, adamw_torch on CPU")
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    max_length: int = Field(2048, ge=16)
    assistant_only_loss: bool = True
    gradient_checkpointing: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(25, ge=1, description="checkpoint every N optimiser steps (for resume)")
    save_total_limit: int = Field(2, ge=1)


class DataSpec(_Strict):
    """Where a stage's rows come from: a registry source name or a local JSONL(.gz) path."""

    source: str | None = Field(None, description="name in datasets/sources.yaml (file or kind: hf)")
    path: str | None = Field(None, description="local .jsonl / .jsonl.gz; ~ and $VARS expanded")
    rows: int | None = Field(None, ge=1, description="seeded subsample size; all rows when unset")
    seed: int = 0

    @model_validator(mode="after")
    def _one_origin(self) -> DataSpec:
        if (self.source is None) == (self.path is None):
            raise ValueError("give exactly one of `source` (registry name) or `path` (local JSONL)")
        return self


class Stage(_Strict):
    """One training stage: it saves the adapter `name` and starts from the previous stage's."""

    name: str
    domain: str
    data: DataSpec

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"adapter name {name!r} must match {_NAME_RE.pattern}")
        return name


class FinetuneConfig(_Strict):
    """A whole fine-tuning job: base model, LoRA shape, training recipe and stages."""

    name: str = Field(description="job name; with `data` it is also the adapter name")
    base_model: str = Field(
        description="HF id or local folder; `proxy:tiny` / `proxy:gemma-270m` (or the bare "
        "proxy name) for proxies"
    )
    backend: Literal["auto", "peft", "unsloth"] = "auto"
    description: str = ""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    stages: list[Stage]

    @model_validator(mode="before")
    @classmethod
    def _single_stage_shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and ("data" in raw or "domain" in raw):
            if "stages" in raw:
                raise ValueError("give either `data` + `domain` (one stage) or `stages`, not both")
            raw = dict(raw)
            raw["stages"] = [
                {"name": raw.get("name"), "domain": raw.pop("domain", None), "data": raw.pop("data", None)}
            ]
        return raw

    @field_validator("base_model")
    @classmethod
    def _known_proxy(cls, base_model: str) -> str:
        try:
            proxy_name(base_model)
        except ProxyError as exc:
            raise ValueError(str(exc)) from None
        return base_model

    @model_validator(mode="after")
    def _unique_stage_names(self) -> FinetuneConfig:
        if not self.stages:
            raise ValueError("a config needs `data` or at least one stage")
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {dupes}")
        return self

    def with_max_rows(self, max_rows: int | None) -> FinetuneConfig:
        """A copy whose every stage trains on at most `max_rows` rows."""
        if max_rows is None:
            return self
        stages = [
            s.model_copy(
                update={"data": s.data.model_copy(update={"rows": min(s.data.rows or max_rows, max_rows)})}
            )
            for s in self.stages
        ]
        return self.model_copy(update={"stages": stages})

    def stage_domain(self, index: int) -> str:
        """The condition label of stage `index`: the stage domains so far joined by `->`."""
        return "->".join(s.domain for s in self.stages[: index + 1])

    @property
    def proxy_name(self) -> str | None:
        """The proxy model name when base_model names a proxy (`proxy:<name>` or a bare proxy name)."""
        return proxy_name(self.base_model)

    @property
    def base_model_label(self) -> str:
        """The base model as recorded in manifests (proxy name or HF id / path)."""
        return self.proxy_name or self.base_model


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.0.c=value` -> (["a", "b", "0", "c"], YAML-parsed value)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of a raw config dict with dotted `key=value` overrides applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                node = node[_list_index(node, part, text)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"override {text!r}: {where} is not a mapping or list")
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, text)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: {'.'.join(parts[:-1])} is not a mapping or list")
    return out


def _list_index(node: list[Any], part: str, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {text!r}: {part!r} is not an index of a {len(node)}-item list")
    return int(part)


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{origin}: {loc}: {err['msg']}")
    return "\n".join(lines)


def config_from_dict(
    raw: dict[str, Any], overrides: list[str] | None = None, origin: str = "<config>"
) -> FinetuneConfig:
    """Validate a raw dict (after overrides) into a FinetuneConfig; errors name origin and field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a fine-tuning config must be a YAML mapping")
    merged = apply_overrides(raw, overrides or [])
    try:
        return FinetuneConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> FinetuneConfig:
    """Read a YAML config file and apply `key=value` overrides."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{yaml_error_where(path, exc)}: invalid YAML: {exc}") from None
    return config_from_dict(raw, overrides, origin=str(path))


def config_dict(config: FinetuneConfig) -> dict[str, Any]:
    """The config as plain JSON-able data (what manifests record)."""
    return config.model_dump(mode="json")
