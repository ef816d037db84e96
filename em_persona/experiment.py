"""Experiment files (experiments/*.yaml): what `em-persona run` fine-tunes, serves, evaluates and reports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from em_persona.paths import REPO_ROOT

# Tasks that read a harmfulness log of the model under evaluation (given as `harm_log`);
# score_prediction only in its "shown" condition.
NEEDS_OWN_HARM_LOG = {"output_recognition", "score_prediction"}
# Tasks that read the harmfulness logs of every model in the experiment (given as `harm_logs`).
NEEDS_ALL_HARM_LOGS = {"cross_model_rating"}
KNOWN_TASKS = {
    "harmfulness", "em_questions", "self_assessment", "two_ai_identification",
    "output_recognition", "score_prediction", "cross_model_rating", "moral_foundations",
}


def needs_own_harm_log(spec: "TaskSpec") -> bool:
    """Whether the task takes `harm_log`: the evaluated model's own harmfulness log."""
    if spec.task == "score_prediction":
        return spec.args.get("condition", "blind") == "shown"
    return spec.task in NEEDS_OWN_HARM_LOG


class ExperimentError(ValueError):
    """An experiment file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class AdapterSpec:
    """One fine-tuned adapter: a finetune config plus overrides, served under `name`."""

    name: str
    config: Path
    domain: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """One Inspect task from tasks/<task>.py with its arguments."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None  # a seeded random subset of this many samples (demo-sized runs)

    @property
    def depends_on_harm_logs(self) -> bool:
        """Whether this task reads harmfulness logs written earlier in the same run."""
        return needs_own_harm_log(self) or self.task in NEEDS_ALL_HARM_LOGS


@dataclass(frozen=True)
class Experiment:
    """A whole experiment: base model, adapters, grader, tasks, serving and output folders."""

    name: str
    source: Path
    base_name: str
    base_path: str
    adapters: list[AdapterSpec]
    grader: str
    tasks: list[TaskSpec]
    data: list[str] = field(default_factory=list)
    proxy: bool = False
    note: str = ""
    serve: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    adapters_dir: Path = Path("adapters")
    log_dir: Path = Path("logs")
    report_dir: Path = Path("reports")
    external_models: list[str] = field(default_factory=list)

    @property
    def model_names(self) -> list[str]:
        """Inspect model names: the served base, each adapter, then any external models."""
        served = [f"vllm/{self.base_name}"] + [f"vllm/{a.name}" for a in self.adapters]
        return served + list(self.external_models)

    def models_table(self) -> dict[str, dict[str, Any]]:
        """The models.yaml mapping the report reads: model -> base model, domain, proxy flag."""
        table: dict[str, dict[str, Any]] = {
            f"vllm/{self.base_name}": {"base_model": self.base_name, "domain": "base", "proxy": self.proxy}
        }
        for a in self.adapters:
            table[f"vllm/{a.name}"] = {"base_model": self.base_name, "domain": a.domain, "proxy": self.proxy}
        for m in self.external_models:
            table[m] = {"base_model": m, "domain": "base", "proxy": False}
        return table


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise ExperimentError(f"{where}: missing required field {key!r}")
    return raw[key]


def _line_of(text: str, word: str) -> int:
    """1-based line of the first `word:` key, else of the first line naming `word`; 1 if none."""
    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        if line.lstrip().lstrip("- ").startswith(f"{word}:"):
            return i
    pattern = re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")
    for i, line in enumerate(lines, 1):
        if pattern.search(line):
            return i
    return 1


def load_experiment(path: str | Path) -> Experiment:
    """Parse and validate an experiment YAML; relative paths resolve against the repository root."""
    path = Path(path)
    if not path.exists():
        raise ExperimentError(f"{path}: no such experiment file")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ExperimentError(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}:1: an experiment file is a mapping")

    def where(key: str) -> str:
        return f"{path}:{_line_of(text, key)}"

    base = _require(raw, "base_model", str(path))
    if not isinstance(base, dict):
        raise ExperimentError(f"{where('base_model')}: base_model needs `name` and `path`")
    adapters = []
    for i, a in enumerate(raw.get("adapters") or []):
        if not isinstance(a, dict):
            raise ExperimentError(f"{where('adapters')}: adapter #{i + 1} is not a mapping")
        cfg = Path(_require(a, "config", f"{where('adapters')} adapter #{i + 1}"))
        cfg = cfg if cfg.is_absolute() else REPO_ROOT / cfg
        if not cfg.exists():
            raise ExperimentError(f"{where('config')}: adapter {a.get('name')!r}: no finetune config {cfg}")
        adapters.append(AdapterSpec(
            name=str(_require(a, "name", f"{where('adapters')} adapter #{i + 1}")),
            config=cfg, domain=str(a.get("domain", "unknown")), overrides=dict(a.get("overrides") or {}),
        ))
    names = [a.name for a in adapters] + [str(base.get("name"))]
    if len(set(names)) != len(names):
        raise ExperimentError(f"{where('adapters')}: model names must be unique, got {names}")
    tasks = []
    for t in _require(raw, "tasks", str(path)):
        spec = TaskSpec(task=t, args={}) if isinstance(t, str) else TaskSpec(
            task=str(_require(t, "task", where("tasks"))), args=dict(t.get("args") or {}),
            limit=int(t["limit"]) if t.get("limit") is not None else None)
        if spec.task not in KNOWN_TASKS:
            raise ExperimentError(f"{where(spec.task)}: unknown task {spec.task!r}; known: {sorted(KNOWN_TASKS)}")
        tasks.append(spec)
    if any(t.depends_on_harm_logs for t in tasks) and "harmfulness" not in {t.task for t in tasks}:
        raise ExperimentError(f"{where('tasks')}: recognition / prediction tasks need the harmfulness task too")

    def resolve(p: str, default: str) -> Path:
        q = Path(p or default)
        return q if q.is_absolute() else REPO_ROOT / q

    name = str(raw.get("name") or path.stem)
    return Experiment(
        name=name,
        source=path,
        base_name=str(_require(base, "name", where("base_model"))),
        base_path=str(_require(base, "path", where("base_model"))),
        adapters=adapters,
        grader=str(_require(raw, "grader", str(path))),
        tasks=tasks,
        data=list(raw.get("data") or []),
        proxy=bool(raw.get("proxy", False)),
        note=str(raw.get("note", "")),
        serve=dict(raw.get("serve") or {}),
        eval=dict(raw.get("eval") or {}),
        adapters_dir=resolve(raw.get("adapters_dir"), f"adapters/{name}"),
        log_dir=resolve(raw.get("log_dir"), f"logs/{name}"),
        report_dir=resolve(raw.get("report_dir"), f"reports/{name}"),
        external_models=list(raw.get("external_models") or []),
    )
