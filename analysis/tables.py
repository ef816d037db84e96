"""Per-sample tables -> one tidy per-model table and the long tables, through each task's declaration.

`SampleTables` holds one DataFrame per table the declared tasks fill (their `tables`);
`per_model_table` runs each task's `metrics` on its tables and joins the per-model columns
(one row per model; what each column means: `column_docs()`). Nothing here names a task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from em_persona.contract.declarations import AggregateOptions, TaskSpec
from em_persona.tasks.registry import specs

BASE_COLUMNS: dict[str, str] = {
    "model": "Inspect model name (e.g. vllm/qwen-insecure)",
    "base_model": "base model (models.yaml, else inferred from the name)",
    "domain": "fine-tune domain ('base' for the un-fine-tuned model)",
    "proxy": "True when a proxy model stands in for the real one",
}
CI_COLUMNS = {
    "<metric>_lo / <metric>_hi / <metric>_n": "95% percentile bootstrap CI (seeded) and the number of units behind it"
}


def column_docs(declared: Iterable[TaskSpec] | None = None) -> dict[str, str]:
    """What every per-model column means: the model facts, then each task's columns."""
    out = dict(BASE_COLUMNS)
    for spec in declared if declared is not None else specs().values():
        out.update(spec.columns)
    out.update(CI_COLUMNS)
    return out


def table_columns(declared: Iterable[TaskSpec] | None = None) -> dict[str, tuple[str, ...]]:
    """Every per-sample table of the declared tasks: name -> columns."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in declared if declared is not None else specs().values():
        out.update(spec.tables)
    return out


def empty_table(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


@dataclass
class SampleTables:
    """One tidy per-sample DataFrame per table (columns as the declaring task says)."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name in self.frames:
            return self.frames[name]
        columns = table_columns().get(name)
        if columns is None:
            raise KeyError(f"no task declares a table {name!r}")
        return empty_table(columns)

    def models(self) -> list[str]:
        names: set[str] = set()
        for frame in self.frames.values():
            if "model" in frame:
                names.update(str(m) for m in frame["model"].dropna().unique())
        return sorted(names)

    def n_samples(self, tables: Iterable[str] | None = None) -> int:
        return sum(len(df) for name, df in self.frames.items() if tables is None or name in tables)


@dataclass
class Tables:
    """Everything the report shows, derived from one SampleTables: the per-model table (index:
    model) and each task's long tables by name."""

    per_model: pd.DataFrame
    long: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.long.get(name, pd.DataFrame())


def per_model_table(
    samples: SampleTables,
    models_info: pd.DataFrame | None = None,
    opts: AggregateOptions = AggregateOptions(),
    declared: Iterable[TaskSpec] | None = None,
) -> Tables:
    """Run each declared task's `metrics` on its tables; join the per-model columns."""
    parts, long = [], {}
    for spec in declared if declared is not None else specs().values():
        results = spec.metrics({name: samples[name] for name in spec.tables}, opts)
        parts.append(results.per_model)
        long.update(results.long)
    models = samples.models()
    if models_info is not None and not models_info.empty:
        models = sorted(set(models) | set(models_info.index))
    table = pd.DataFrame(index=pd.Index(models, name="model"))
    for part in parts:
        if not part.empty:
            table = table.join(part)
    if models_info is not None and not models_info.empty:
        table = models_info.reindex(table.index).join(table)
    table.index.name = "model"
    return Tables(per_model=table, long=long)


def headline_metrics(declared: Iterable[TaskSpec] | None = None) -> tuple[str, ...]:
    """The per-model columns the tasks want shown first, in declaration order."""
    out: list[str] = []
    for spec in declared if declared is not None else specs().values():
        out += [m for m in spec.headline if m not in out]
    return tuple(out)


def is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def frames_from_rows(rows: Mapping[str, list[dict]]) -> dict[str, pd.DataFrame]:
    """Row lists -> DataFrames with each table's declared columns."""
    columns = table_columns()
    return {
        name: pd.DataFrame(rs, columns=list(columns.get(name, rs[0].keys())))
        for name, rs in rows.items()
        if rs
    }
