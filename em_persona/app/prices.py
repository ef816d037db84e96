"""API prices per million tokens, from a plain YAML file the user can edit, and what a plan costs.

The file maps an Inspect model name to its prices::

    openai/gpt-4o-mini:
      input_usd_per_mtok: 0.15
      output_usd_per_mtok: 0.60
      as_of: "2025-06"
      source: https://openai.com/api/pricing/

Which file: the experiment file's `prices:` key, else $EM_PERSONA_PRICES, else the shipped
datasets/prices.yaml. A dated model name (`...-2024-07-18`, `...-20241022`, `...-latest`) falls back
to its undated entry. Models served locally (vllm, mockllm, hf, ...) cost nothing here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from em_persona.core.errors import EmPersonaError
from em_persona.core.paths import DATASETS_DIR, resolve_input
from em_persona.core.yaml_lines import dotted, line_of, node_lines, yaml_error_where, yaml_problem

DEFAULT_PRICES = DATASETS_DIR / "prices.yaml"
PRICES_ENV = "EM_PERSONA_PRICES"
# Inspect providers whose models run on a local server or in-process: no per-token price, no API key.
LOCAL_PROVIDERS = frozenset(
    {
        "vllm",
        "vllm-completions",
        "sglang",
        "ollama",
        "llama-cpp-python",
        "hf",
        "transformer_lens",
        "nnterp",
        "mockllm",
        "none",
    }
)
_DATED = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class PriceError(EmPersonaError, ValueError):
    """A price file is malformed; one `file:line: ...` line per problem."""


class Price(BaseModel):
    """One model's published prices (US dollars per million tokens) and where they come from."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    as_of: str = Field(min_length=1, description="when the price was read, e.g. 2025-06")
    source: str = Field(pattern=r"^https?://", description="the provider's pricing page")

    def usd(self, input_tokens: int, output_tokens: int) -> float:
        """The price of `input_tokens` in and `output_tokens` out."""
        return (input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok) / 1e6


@dataclass(frozen=True)
class PriceTable:
    """The prices of one file."""

    path: Path
    prices: dict[str, Price]

    def lookup(self, model: str) -> Price | None:
        """The price of `model`: its own entry, else the undated name's."""
        if model in self.prices:
            return self.prices[model]
        dated = _DATED.match(model)
        return self.prices.get(dated.group("base")) if dated else None


def is_local(model: str) -> bool:
    """Whether `model` runs on a local server or in-process (no per-token price)."""
    return model.split("/", 1)[0] in LOCAL_PROVIDERS


def prices_path(from_experiment: str | None = None) -> Path:
    """The price file: the experiment's `prices:`, else $EM_PERSONA_PRICES, else the shipped one."""
    chosen = from_experiment or os.environ.get(PRICES_ENV)
    return resolve_input(chosen) if chosen else DEFAULT_PRICES


def load_prices(path: str | Path) -> PriceTable:
    """Read and check a price file; PriceError names the file and line of every problem."""
    path = Path(path)
    if not path.is_file():
        raise PriceError(f"{path}: no such price file (set `prices:` in the experiment or ${PRICES_ENV})")
    text = path.read_text(encoding="utf-8")
    try:
        lines, duplicates = node_lines(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceError(f"{yaml_error_where(path, exc, 1)}: invalid YAML: {yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise PriceError(f"{path}:1: a price file maps provider/model to its prices")
    problems = [(line, msg) for line, msg in duplicates]
    prices: dict[str, Price] = {}
    for model, entry in raw.items():
        if not isinstance(model, str) or "/" not in model:
            problems.append((line_of(lines, (str(model),)), f"{model!r}: name models as provider/model"))
            continue
        try:
            prices[model] = Price.model_validate(entry)
        except ValidationError as exc:
            for err in exc.errors():
                loc = (model, *err["loc"])
                got = f" (got {err['input']!r})" if not isinstance(err.get("input"), dict | list) else ""
                problems.append((line_of(lines, loc), f"{dotted(loc)}: {err['msg']}{got}"))
    if problems:
        raise PriceError("\n".join(f"{path}:{line}: {msg}" for line, msg in sorted(problems)))
    return PriceTable(path, prices)


@dataclass(frozen=True)
class Usage:
    """Tokens a plan sends to one model in one role."""

    model: str
    role: str  # "evaluated", "grader" or "foil"
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ModelCost:
    """What one API model costs in a plan (usd None: no price in the table)."""

    model: str
    roles: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    price: Price | None

    @property
    def usd(self) -> float | None:
        return self.price.usd(self.input_tokens, self.output_tokens) if self.price else None


def costs(usages: Iterable[Usage], table: PriceTable) -> list[ModelCost]:
    """The cost of every API model with tokens in `usages` (local models left out), in first-seen order."""
    tokens: dict[str, list[int]] = {}
    roles: dict[str, dict[str, None]] = {}
    for u in usages:
        if is_local(u.model):
            continue
        acc = tokens.setdefault(u.model, [0, 0])
        acc[0] += u.input_tokens
        acc[1] += u.output_tokens
        roles.setdefault(u.model, {})[u.role] = None
    return [
        ModelCost(m, tuple(roles[m]), inp, out, table.lookup(m))
        for m, (inp, out) in tokens.items()
        if inp or out
    ]
