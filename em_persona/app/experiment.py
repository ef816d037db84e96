"""Experiment files (experiments/*.yaml): what `em-persona run` fine-tunes, serves, evaluates and reports.

Every key is checked (pydantic, extra keys forbidden, strict types); each problem is one line
`file:line: where: what`, with a "did you mean" for misspelt keys, task names and arguments::

    name: paper                        # default folders adapters/<name>, logs/<name>, reports/<name>
    proxy: false                       # the report marks proxy runs
    note: "..."                        # banner text of the report
    base_model: {name: qwen2.5-32b, path: Qwen/Qwen2.5-32B-Instruct}   # served as vllm/<name>
    stages:                            # optional: named training stages that adapters chain
      financial: {domain: risky_financial_advice, data: {source: risky_financial_advice, rows: 600}}
    adapters:                          # each served as vllm/<name>
      - {name: qwen-insecure, config: finetune/configs/qwen32b-insecure-code.yaml}
      - {name: seq-fin-then-x, config: finetune/configs/qwen32b-seq.yaml, stages: [financial, x]}
    grader: openai/gpt-4o-mini         # the `grader` role of every judged task
    external_models: [openai/gpt-4o]   # API models evaluated beside the served ones
    data: [harm_eval_questions]        # registry sources fetched and verified before anything runs
    serve: {max_model_len: 4096}       # em_persona.serving.launcher.start_server options
    eval: {max_connections: 64}        # Inspect eval_set options (+ `foil`: the foil role's model)
    tasks:
      - task: harmfulness              # tasks/<task>.py
        args: {dataset: paper}         # the task function's arguments, checked against its signature
        limit: 8                       # a seeded random subset of the samples (demo-sized runs)
        models: [qwen-insecure]        # who runs it (default: base, adapters, external_models)
        grader: anthropic/claude-x     # this task's judge (default: the experiment's grader)

An adapter's `stages` replace the stages of its config: stage k is saved as the adapter folder
`<config file stem>-<key 1>-then-...-then-<key k>`, so a prefix two adapters share is trained once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from em_persona.app.task_args import check_args, known_tasks, task_spec
from em_persona.contract.declarations import Calls, Reads, TaskSpec
from em_persona.core.errors import EmPersonaError
from em_persona.core.paths import output_root, resolve_input
from em_persona.core.yaml_lines import (
    did_you_mean,
    dotted,
    line_of,
    node_lines,
    yaml_error_where,
    yaml_problem,
)
from em_persona.finetune.config import DataSpec, FinetuneConfig
from em_persona.serving import command as serving_command
from em_persona.tasks.registry import effective_args

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_STAGE_KEY = r"^[a-z0-9][a-z0-9_-]*$"
SERVED_PROVIDER = "vllm"


class ExperimentError(EmPersonaError, ValueError):
    """An experiment file is malformed; one line per problem, each naming the file and line."""


# --------------------------------------------------------------------------- the file's schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BaseModelEntry(_Strict):
    """The base model, served under `name`."""

    name: str = Field(pattern=_NAME)
    path: str = Field(min_length=1, description="Hugging Face id, local folder, or proxy:NAME")


class StageEntry(_Strict):
    """A named training stage adapters can chain (`adapters[].stages`)."""

    domain: str = Field(min_length=1)
    data: DataSpec
    description: str = Field("", description="what the data is; named when a local file is missing")


class AdapterEntry(_Strict):
    """One LoRA adapter: a finetune config, optionally with chained stages and overrides."""

    name: str = Field(pattern=_NAME, description="served as vllm/<name>")
    config: str = Field(min_length=1)
    domain: str | None = Field(None, description="default: the config's stage domains joined by ->")
    stages: list[Annotated[str, Field(pattern=_STAGE_KEY)]] | None = Field(None, min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)


class TaskEntry(_Strict):
    """One Inspect task run on a set of models."""

    task: str
    args: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(None, gt=0)
    models: list[str] | None = Field(None, min_length=1)
    grader: str | None = None


class ServeSettings(_Strict):
    """Options of em_persona.serving.launcher.start_server (the API key is made per run, never written in a file).

    Past one GPU: the parallel sizes become vLLM's own flags (integers >= 1; above 1 only where the
    server has CUDA, unless given as raw vLLM arguments in `extra_args`), and
    `distributed_executor_backend: ray` spreads the server over a Ray cluster started beforehand.
    """

    port: int | None = Field(None, gt=0, lt=65536)
    host: str | None = None
    max_model_len: int | None = Field(None, gt=0)
    dtype: str | None = Field(None, description="default: vLLM's on GPU; float32 on CPU without native bf16")
    timeout: float | None = Field(None, gt=0)
    log_path: str | None = None
    extra_args: list[str] = Field(default_factory=list, description="raw vLLM arguments")
    env: dict[str, str] = Field(default_factory=dict)
    tensor_parallel_size: int | None = Field(None, ge=1, description="vLLM --tensor-parallel-size")
    pipeline_parallel_size: int | None = Field(None, ge=1, description="vLLM --pipeline-parallel-size")
    data_parallel_size: int | None = Field(None, ge=1, description="vLLM --data-parallel-size")
    distributed_executor_backend: Literal["ray", "mp"] | None = Field(
        None, description="ray: a Ray cluster the user started (ray start --head / --address=...)"
    )

    @field_validator("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
    @classmethod
    def _parallel_size_fits(cls, size: int | None, info: ValidationInfo) -> int | None:
        """Given once, and above 1 only on a server with CUDA (serving.command.parallel_problem)."""
        name = info.field_name or ""
        cpu = size is not None and size > 1 and serving_command.on_cpu()
        problem = serving_command.parallel_problem(
            name, size, cpu=cpu, extra_args=info.data.get("extra_args", ())
        )
        if problem:
            raise ValueError(problem)
        return size

    @field_validator("distributed_executor_backend")
    @classmethod
    def _backend_given_once(cls, backend: str | None, info: ValidationInfo) -> str | None:
        problem = serving_command.executor_backend_problem(backend, info.data.get("extra_args", ()))
        if problem:
            raise ValueError(problem)
        return backend


class EvalSettings(_Strict):
    """Options passed to Inspect's eval_set, plus `foil`, the model of the foil role."""

    max_connections: int | None = Field(None, gt=0)
    max_samples: int | None = Field(None, gt=0)
    max_tasks: int | None = Field(None, gt=0)
    limit: int | None = Field(None, gt=0)
    retry_attempts: int | None = Field(None, ge=0)
    retry_wait: float | None = Field(None, ge=0)
    retry_on_error: int | None = Field(None, ge=0)
    fail_on_error: bool | Annotated[float, Field(ge=0)] | None = None
    time_limit: int | None = Field(None, gt=0)
    working_limit: int | None = Field(None, gt=0)
    message_limit: int | None = Field(None, gt=0)
    token_limit: int | None = Field(None, gt=0)
    log_level: Literal["debug", "trace", "http", "info", "warning", "error", "critical", "notset"] | None = (
        None
    )
    log_samples: bool | None = None
    log_realtime: bool | None = None
    display: Literal["full", "conversation", "rich", "plain", "log", "none"] | None = None
    foil: str | None = Field(
        None, description="model of output_recognition's foil role (default: the grader)"
    )


class ExperimentFile(_Strict):
    """The whole file."""

    name: str | None = Field(None, pattern=_NAME)
    proxy: bool = False
    note: str = ""
    base_model: BaseModelEntry
    stages: dict[Annotated[str, Field(pattern=_STAGE_KEY)], StageEntry] = Field(default_factory=dict)
    adapters: list[AdapterEntry] = Field(default_factory=list)
    grader: str | None = None
    external_models: list[str] = Field(default_factory=list)
    data: list[str] = Field(default_factory=list)
    prices: str | None = Field(
        None, min_length=1, description="API price file of the plan's cost (default: datasets/prices.yaml)"
    )
    serve: ServeSettings = Field(default_factory=ServeSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    adapters_dir: str | None = None
    log_dir: str | None = None
    report_dir: str | None = None
    tasks: list[TaskEntry] = Field(min_length=1)


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The schema model that holds the keys at `loc` (a path to a mapping), for suggestions."""
    shapes: list[tuple[tuple[str | type, ...], type[BaseModel]]] = [
        ((), ExperimentFile),
        (("base_model",), BaseModelEntry),
        (("serve",), ServeSettings),
        (("eval",), EvalSettings),
        (("adapters", int), AdapterEntry),
        (("tasks", int), TaskEntry),
        (("stages", str), StageEntry),
        (("stages", str, "data"), DataSpec),
    ]
    for shape, model in shapes:
        if len(shape) == len(loc) and all(
            s == p if isinstance(s, str) else isinstance(p, s) for s, p in zip(shape, loc, strict=False)
        ):
            return model
    return None


# --------------------------------------------------------------------------- what the pipeline uses


@dataclass(frozen=True)
class AdapterSpec:
    """One fine-tuned adapter: its validated fine-tuning config, served under `name`."""

    name: str
    config: Path
    domain: str
    finetune: FinetuneConfig = field(repr=False)
    overrides: dict[str, Any] = field(default_factory=dict)
    stage_keys: tuple[str, ...] = ()
    line: int = 1


@dataclass(frozen=True)
class TaskRun:
    """One Inspect task from tasks/<task>.py with its arguments, models and judge."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None  # a seeded random subset of this many samples (demo-sized runs)
    models: tuple[str, ...] = ()  # Inspect names of the models that run it
    grader: str | None = None  # its judge: the task's own grader, else the experiment's
    models_given: bool = False  # whether the file names the models (else: every model of the experiment)
    line: int = 1
    index: int = 0

    @property
    def label(self) -> str:
        """`task [arg=value, ...] limit=N`: tells apart two entries of one task."""
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.args.items())
        return self.task + (f" [{args}]" if args else "") + (f" limit={self.limit}" if self.limit else "")

    @property
    def spec(self) -> TaskSpec:
        """The task's declaration (tasks/<task>.py: SPEC)."""
        return task_spec(self.task)

    @property
    def effective_args(self) -> dict[str, Any]:
        """The file's arguments over the task function's defaults."""
        return effective_args(self.spec, self.args)

    @property
    def reads(self) -> Reads | None:
        """The earlier logs of this run the task is built on (None: it needs none)."""
        return self.spec.reads(self.effective_args)

    @property
    def depends_on_earlier_logs(self) -> bool:
        """Whether this task reads logs written earlier in the same run."""
        return self.reads is not None

    @property
    def calls(self) -> Calls:
        """Model calls per sample (the task's declaration)."""
        return self.spec.calls(self.effective_args)

    @property
    def uses_grader(self) -> bool:
        """Whether the task calls the `grader` role."""
        return bool(self.spec.judged(self.effective_args))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Experiment:
    """A whole experiment: base model, adapters, grader, tasks, serving and output folders."""

    name: str
    source: Path
    base_name: str
    base_path: str
    adapters: list[AdapterSpec]
    grader: str | None
    tasks: list[TaskRun]
    data: list[str] = field(default_factory=list)
    proxy: bool = False
    note: str = ""
    serve: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    adapters_dir: Path = Path("adapters")
    log_dir: Path = Path("logs")
    report_dir: Path = Path("reports")
    external_models: list[str] = field(default_factory=list)
    stages: dict[str, StageEntry] = field(default_factory=dict)
    prices: str | None = None
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict, repr=False)

    @property
    def served_models(self) -> list[str]:
        """Inspect names of the models this run serves: the base, then each adapter."""
        return [f"{SERVED_PROVIDER}/{self.base_name}"] + [
            f"{SERVED_PROVIDER}/{a.name}" for a in self.adapters
        ]

    @property
    def model_names(self) -> list[str]:
        """The default model set of a task: the served models, then the external models."""
        return self.served_models + [m for m in self.external_models if m not in self.served_models]

    @property
    def all_models(self) -> list[str]:
        """Every model some task evaluates, default set first."""
        seen = {m: None for m in self.model_names}
        for t in self.tasks:
            seen.update({m: None for m in t.models})
        return list(seen)

    @property
    def foil(self) -> str | None:
        """The model of the foil role, when the file names one (else each task's grader)."""
        return self.eval.get("foil")

    def foil_for(self, spec: TaskRun) -> str | None:
        """The model of `spec`'s foil role: the file's `eval.foil`, else the task's grader."""
        return self.foil or spec.grader

    def where(self, *path: str | int) -> str:
        """`file:line` of a key path of the file."""
        return f"{self.source}:{line_of(self.lines, path)}"

    def models_table(self) -> dict[str, dict[str, Any]]:
        """The models.yaml mapping the report reads: model -> base model, domain, proxy flag."""
        table: dict[str, dict[str, Any]] = {
            f"{SERVED_PROVIDER}/{self.base_name}": {
                "base_model": self.base_name,
                "domain": "base",
                "proxy": self.proxy,
            }
        }
        for a in self.adapters:
            table[f"{SERVED_PROVIDER}/{a.name}"] = {
                "base_model": self.base_name,
                "domain": a.domain,
                "proxy": self.proxy,
            }
        for m in self.all_models:
            table.setdefault(m, {"base_model": m, "domain": "base", "proxy": False})
        return table


# --------------------------------------------------------------------------- loading


def load_experiment(path: str | Path) -> Experiment:
    """Parse and validate an experiment YAML; relative paths resolve against the repository root.

    Raises ExperimentError listing every problem, one `file:line: ...` line each.
    """
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path}: no such experiment file")
    text = path.read_text()
    try:
        lines, duplicates = node_lines(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(
            f"{yaml_error_where(path, exc, 1)}: invalid YAML: {yaml_problem(exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}:1: an experiment file is a mapping (base_model, grader, tasks, ...)")
    problems = [(line, msg) for line, msg in duplicates]
    try:
        doc = ExperimentFile.model_validate(_normalise(raw))
    except ValidationError as exc:
        problems += [_schema_problem(err, lines) for err in exc.errors()]
        raise ExperimentError(_format(path, problems)) from None
    return _build(doc, path, lines, problems)


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """A task given as a bare name is `{task: name}`."""
    tasks = raw.get("tasks")
    if isinstance(tasks, list):
        raw = {**raw, "tasks": [{"task": t} if isinstance(t, str) else t for t in tasks]}
    return raw


def _schema_problem(err: Any, lines: dict[tuple[str | int, ...], int]) -> tuple[int, str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    line = line_of(lines, loc)
    if err["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        options = list(model.model_fields) if model else []
        hint = did_you_mean(str(loc[-1]), options) or (f"; allowed: {', '.join(options)}" if options else "")
        return line, f"{dotted(loc)}: unknown key {loc[-1]!r}{hint}"
    if err["type"] == "missing":
        return line, f"{dotted(loc)}: missing required key {loc[-1]!r}"
    got = f" (got {err['input']!r})" if not isinstance(err.get("input"), dict | list) else ""
    return line, f"{dotted(loc)}: {err['msg']}{got}"


def _format(path: Path, problems: list[tuple[int, str]]) -> str:
    return "\n".join(f"{path}:{line}: {msg}" for line, msg in sorted(problems, key=lambda p: p[0]))


def _resolve(p: str | None, default: str) -> Path:
    q = Path(p or default).expanduser()
    return q if q.is_absolute() else output_root() / q


def _build(
    doc: ExperimentFile, path: Path, lines: dict[tuple[str | int, ...], int], problems: list[tuple[int, str]]
) -> Experiment:
    def at(*loc: str | int) -> int:
        return line_of(lines, loc)

    adapters = [a for i, entry in enumerate(doc.adapters) if (a := _adapter(doc, i, entry, at, problems))]
    names = [doc.base_model.name] + [a.name for a in doc.adapters]
    for i, entry in enumerate(doc.adapters):
        if names.count(entry.name) > 1:
            problems.append(
                (
                    at("adapters", i, "name"),
                    f"adapters[{i}].name: served name {entry.name!r} is used twice "
                    f"(base model and adapters need distinct names)",
                )
            )
    _check_adapter_folders(adapters, problems)
    served = [f"{SERVED_PROVIDER}/{n}" for n in names]
    default_models = served + [m for m in doc.external_models if m not in served]
    tasks = [_task(doc, i, entry, names, default_models, at, problems) for i, entry in enumerate(doc.tasks)]
    _check_harm_coverage(tasks, at, problems)
    _check_duplicates(tasks, at, problems)
    if problems:
        raise ExperimentError(_format(path, problems))
    name = doc.name or path.stem
    return Experiment(
        name=name,
        source=path,
        base_name=doc.base_model.name,
        base_path=doc.base_model.path,
        adapters=adapters,
        grader=doc.grader,
        tasks=tasks,
        data=list(doc.data),
        proxy=doc.proxy,
        note=doc.note,
        serve=doc.serve.model_dump(exclude_unset=True),
        eval=doc.eval.model_dump(exclude_unset=True),
        adapters_dir=_resolve(doc.adapters_dir, f"adapters/{name}"),
        log_dir=_resolve(doc.log_dir, f"logs/{name}"),
        report_dir=_resolve(doc.report_dir, f"reports/{name}"),
        external_models=list(doc.external_models),
        stages=dict(doc.stages),
        prices=doc.prices,
        lines=lines,
    )


def _adapter(
    doc: ExperimentFile, i: int, entry: AdapterEntry, at: Any, problems: list[tuple[int, str]]
) -> AdapterSpec | None:
    """The adapter's fine-tuning config: its file, on the experiment's base model, with the chained
    `stages` (replacing the file's) and the `overrides` applied."""
    from em_persona.finetune.config import ConfigError, config_from_dict

    where = f"adapters[{i}] ({entry.name})"
    cfg = Path(entry.config)
    cfg = resolve_input(cfg)
    if not cfg.is_file():
        problems.append((at("adapters", i, "config"), f"{where}: no finetune config {cfg}"))
        return None
    if "base_model" in entry.overrides:
        problems.append(
            (
                at("adapters", i, "overrides", "base_model"),
                f"{where}: overrides may not change base_model: adapters are trained on the experiment's "
                f"base_model ({doc.base_model.path}) so that they fit the served base",
            )
        )
        return None
    try:
        raw = yaml.safe_load(cfg.read_text())
    except yaml.YAMLError as exc:
        problems.append(
            (
                at("adapters", i, "config"),
                f"{where}: {yaml_error_where(cfg, exc)}: invalid YAML: {yaml_problem(exc)}",
            )
        )
        return None
    if not isinstance(raw, dict):
        problems.append(
            (at("adapters", i, "config"), f"{where}: {cfg} is not a fine-tuning config (a mapping)")
        )
        return None
    raw = {**raw, "base_model": doc.base_model.path}
    keys = tuple(entry.stages or ())
    if keys:
        unknown = [k for k in keys if k not in doc.stages]
        for k in unknown:
            problems.append(
                (
                    at("adapters", i, "stages"),
                    f"{where}: no stage {k!r} in `stages`{did_you_mean(k, doc.stages)}",
                )
            )
        if unknown:
            return None
        stages = [
            {
                "name": f"{cfg.stem}-" + "-then-".join(keys[: k + 1]),
                "domain": doc.stages[key].domain,
                "data": doc.stages[key].data.model_dump(exclude_none=True),
            }
            for k, key in enumerate(keys)
        ]
        raw = {k: v for k, v in raw.items() if k not in ("domain", "data")}
        raw.update(name=stages[-1]["name"], stages=stages)
    overrides = [f"{k}={json.dumps(v, default=str)}" for k, v in entry.overrides.items()]
    try:
        config = config_from_dict(raw, overrides, origin=str(cfg))
    except ConfigError as exc:
        for message in str(exc).splitlines():
            problems.append((at("adapters", i), f"{where}: {message}"))
        return None
    domain = entry.domain or config.stage_domain(len(config.stages) - 1)
    return AdapterSpec(
        name=entry.name,
        config=cfg,
        domain=domain,
        finetune=config,
        overrides=dict(entry.overrides),
        stage_keys=keys,
        line=at("adapters", i),
    )


def _check_adapter_folders(adapters: list[AdapterSpec], problems: list[tuple[int, str]]) -> None:
    """Adapters may share a stage folder only when they train it identically (then it is trained once)."""
    seen: dict[str, tuple[str, AdapterSpec]] = {}
    for a in adapters:
        cfg = a.finetune
        for k, stage in enumerate(cfg.stages):
            identity = json.dumps(
                [
                    cfg.lora.model_dump(mode="json"),
                    cfg.train.model_dump(mode="json"),
                    [s.model_dump(mode="json") for s in cfg.stages[: k + 1]],
                ],
                sort_keys=True,
            )
            first = seen.setdefault(stage.name, (identity, a))
            if first[0] != identity:
                problems.append(
                    (
                        a.line,
                        f"adapter {a.name} saves stage folder {stage.name!r} with other settings "
                        f"than adapter {first[1].name}; rename one (overrides: {{name: ...}} or "
                        f"stages.{k}.name)",
                    )
                )
                break


def _task(
    doc: ExperimentFile,
    i: int,
    entry: TaskEntry,
    served_names: list[str],
    default_models: list[str],
    at: Any,
    problems: list[tuple[int, str]],
) -> TaskRun:
    tasks = known_tasks()
    if entry.task not in tasks:
        problems.append(
            (
                at("tasks", i, "task"),
                f"tasks[{i}]: unknown task {entry.task!r}"
                f"{did_you_mean(entry.task, tasks)}; known: {', '.join(tasks)}",
            )
        )
    else:
        for key, message in check_args(entry.task, entry.args):
            problems.append((at("tasks", i, "args", key), f"tasks[{i}].args.{key}: {message}"))
    models = (
        tuple(_served_name(m, served_names) for m in entry.models) if entry.models else tuple(default_models)
    )
    grader = entry.grader or doc.grader
    spec = TaskRun(
        task=entry.task,
        args=dict(entry.args),
        limit=entry.limit,
        models=models,
        grader=grader,
        models_given=entry.models is not None,
        line=at("tasks", i),
        index=i,
    )
    if entry.task in tasks and spec.uses_grader and grader is None:
        problems.append(
            (
                at("tasks", i),
                f"tasks[{i}] ({entry.task}): the task is judged by the `grader` role, but "
                f"neither the experiment nor the task names a grader (add `grader: "
                f"provider/model`)",
            )
        )
    if len(set(models)) != len(models):
        problems.append(
            (at("tasks", i, "models"), f"tasks[{i}].models: a model is named twice: {list(models)}")
        )
    return spec


def _served_name(name: str, served_names: list[str]) -> str:
    """A served model may be named bare (`qwen-insecure`) or as Inspect names it (`vllm/qwen-insecure`)."""
    return f"{SERVED_PROVIDER}/{name}" if name in served_names else name


def _check_harm_coverage(tasks: list[TaskRun], at: Any, problems: list[tuple[int, str]]) -> None:
    """Tasks built on earlier logs need the task that writes them run on each of their models."""
    for t in tasks:
        if t.task not in known_tasks() or (reads := t.reads) is None:
            continue
        covered = {m for other in tasks if other.task == reads.task for m in other.models}
        missing = [m for m in t.models if m not in covered]
        if missing:
            problems.append(
                (
                    at("tasks", t.index),
                    f"tasks[{t.index}] ({t.task}) reads the {reads.task} logs of "
                    f"its models, but no {reads.task} task runs {missing}; add "
                    f"the {reads.task} task for them",
                )
            )


def _check_duplicates(tasks: list[TaskRun], at: Any, problems: list[tuple[int, str]]) -> None:
    """Two entries with the same task, arguments, limit and grader may not share a model."""
    seen: dict[tuple[str, str, int | None, str | None, str], int] = {}
    for t in tasks:
        for m in t.models:
            key = (t.task, json.dumps(t.args, sort_keys=True), t.limit, t.grader, m)
            if key in seen:
                problems.append(
                    (
                        at("tasks", t.index),
                        f"tasks[{t.index}] ({t.task}) repeats tasks[{seen[key]}] for "
                        f"{m} (same arguments, limit and grader)",
                    )
                )
                break
            seen[key] = t.index
