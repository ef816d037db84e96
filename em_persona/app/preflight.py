"""Checks before anything is fine-tuned or served (`em-persona run`, and `--dry-run` too).

Every problem is one line `file:line: ...`, and all of them are listed at once: model names
(`provider/name`), the providers' credentials, the base model recorded by adapters already on
disk, and the data (registry sources fetched and verified; local training files present and valid).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from em_persona.app.experiment import SERVED_PROVIDER, Experiment
from em_persona.app.prices import LOCAL_PROVIDERS
from em_persona.core.yaml_lines import did_you_mean

# Environment variables that hold each provider's credentials (any one of them will do), as
# Inspect's providers read them.
CREDENTIALS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "AZURE_ANTHROPIC_API_KEY"),
    "google": ("GOOGLE_API_KEY", "GEMINI_API_KEY", "VERTEX_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"),
    "mistral": ("MISTRAL_API_KEY", "AZURE_MISTRAL_API_KEY"),
    "grok": ("XAI_API_KEY", "GROK_API_KEY"),
    "together": ("TOGETHER_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "fireworks": ("FIREWORKS_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "perplexity": ("PERPLEXITY_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "sambanova": ("SAMBANOVA_API_KEY",),
    "moonshot": ("MOONSHOT_API_KEY",),
    "meta": ("META_API_KEY", "MODEL_API_KEY"),
    "cloudflare": ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY"),
    "azureai": (
        "AZUREAI_API_KEY",
        "AZUREAI_OPENAI_API_KEY",
        "AZUREAI_ANTHROPIC_API_KEY",
        "AZUREAI_MISTRAL_API_KEY",
    ),
    "litellm-proxy": ("LITELLM_PROXY_API_KEY", "LITELLM_API_KEY"),
    "hf-inference-providers": ("HF_TOKEN",),
}
# Local providers, and cloud-SDK ones: no key to check here (bedrock / sagemaker use AWS credentials,
# and are priced like any API model).
NO_KEY = LOCAL_PROVIDERS | {"bedrock", "sagemaker"}
LOCAL_DATA_SCHEMA = (
    'chat JSONL, one {"messages": [{"role": "user", "content": ...}, {"role": "assistant", '
    '"content": ...}]} per line (optional system turn first; the last turn the assistant\'s)'
)


@dataclass(frozen=True)
class ModelRef:
    """A model named in the experiment file, and where."""

    name: str
    role: str  # e.g. "grader", "tasks[3].models"
    where: str


def model_refs(exp: Experiment) -> list[ModelRef]:
    """Every model the run calls that it does not serve itself: graders, the foil, external and task models."""
    refs = []
    if exp.grader:
        refs.append(ModelRef(exp.grader, "grader", exp.where("grader")))
    if exp.foil:
        refs.append(ModelRef(exp.foil, "eval.foil", exp.where("eval", "foil")))
    for i, m in enumerate(exp.external_models):
        refs.append(ModelRef(m, "external_models", exp.where("external_models", i)))
    for t in exp.tasks:
        if t.models_given:
            refs += [
                ModelRef(m, f"tasks[{t.index}].models", exp.where("tasks", t.index, "models", j))
                for j, m in enumerate(t.models)
                if m not in exp.served_models
            ]
        if t.grader and t.grader != exp.grader:
            refs.append(ModelRef(t.grader, f"tasks[{t.index}].grader", exp.where("tasks", t.index, "grader")))
    return [r for r in refs if r.name not in exp.served_models]


def known_providers() -> set[str]:
    """The model providers Inspect knows (its own and those of installed extensions)."""
    import inspect_ai.model._providers.providers  # noqa: F401  (registers the built-in providers)
    from inspect_ai._util.registry import registry_find, registry_info

    return {registry_info(p).name.split("/")[-1] for p in registry_find(lambda i: i.type == "modelapi")}


def model_problems(exp: Experiment, env: dict[str, str] | None = None) -> list[str]:
    """Names that are not `provider/name`, unknown providers, served-provider names this run does not
    serve, and providers whose credentials are not set (one line per provider)."""
    env = dict(os.environ) if env is None else env
    providers = known_providers()
    problems = []
    missing_keys: dict[str, list[ModelRef]] = {}
    served_bare = [m.split("/", 1)[1] for m in exp.served_models]
    for ref in model_refs(exp):
        provider, sep, rest = ref.name.partition("/")
        if not sep or not provider or not rest:
            hint = did_you_mean(ref.name, served_bare)
            problems.append(
                f"{ref.where}: {ref.role}: {ref.name!r} is neither a model this run serves{hint} nor "
                f"provider/name (e.g. openai/gpt-4o-mini)"
            )
        elif provider == SERVED_PROVIDER:
            problems.append(
                f"{ref.where}: {ref.role}: {ref.name!r} is not served by this experiment (it serves "
                f"{', '.join(exp.served_models)}){did_you_mean(rest, served_bare)}"
            )
        elif provider not in providers:
            problems.append(
                f"{ref.where}: {ref.role}: unknown provider {provider!r} in {ref.name!r}"
                f"{did_you_mean(provider, providers)}"
            )
        elif provider == "openai-api":
            service = rest.split("/", 1)[0].upper().replace("-", "_")
            if not env.get(f"{service}_API_KEY"):
                missing_keys.setdefault(f"{service}_API_KEY", []).append(ref)
        elif provider not in NO_KEY and not any(env.get(var) for var in CREDENTIALS.get(provider, ())):
            if provider in CREDENTIALS:
                missing_keys.setdefault(" or ".join(CREDENTIALS[provider]), []).append(ref)
    for keys, refs in missing_keys.items():
        names = ", ".join(dict.fromkeys(f"{r.name} ({r.role})" for r in refs))
        problems.append(f"{refs[0].where}: {names} needs {keys} in the environment, and it is not set")
    return problems


def server_problems(exp: Experiment) -> list[str]:
    """Parallel settings under `serve:` this machine cannot serve (a GPU size on CPU, Ray asked for but
    not installed): found before any adapter is trained, at the line of the setting."""
    from dataclasses import fields

    from em_persona.serving.command import Parallelism
    from em_persona.serving.errors import ServeError
    from em_persona.serving.launcher import check_parallel_settings

    parallel = Parallelism(**{f.name: exp.serve.get(f.name) for f in fields(Parallelism)})
    try:
        check_parallel_settings(parallel, extra_args=exp.serve.get("extra_args") or ())
    except ServeError as exc:
        key = "distributed_executor_backend" if parallel.distributed_executor_backend else None
        where = exp.where("serve", key) if key else exp.where("serve")
        return [f"{where}: {line}" for line in str(exc).splitlines()]
    return []


def adapter_problems(exp: Experiment) -> list[str]:
    """Adapters already on disk (any stage folder) must record the experiment's base model."""
    from em_persona.serving.base_models import BaseModelError, base_identity, check_adapter_base

    served = base_identity(exp.base_path)
    problems = []
    for a in exp.adapters:
        for stage in a.finetune.stages:
            folder = exp.adapters_dir / stage.name
            if not folder.is_dir():
                continue
            try:
                check_adapter_base(stage.name, folder, served, exp.base_path)
            except BaseModelError as exc:
                problems.append(
                    f"{exp.where('adapters', exp.adapters.index(a))}: adapter {a.name}: "
                    f"{' '.join(str(exc).split())}; delete {folder} to retrain it on this base"
                )
    return problems


@dataclass(frozen=True)
class _DataUse:
    where: str
    stage: str
    adapter: str
    rows: int | None
    description: str


def data_problems(exp: Experiment, fetch: Callable[[str], Path] | None = None) -> list[str]:
    """Registry sources (the file's `data` and every stage's `source`) fetch and verify; local training
    files exist, hold valid rows, and at least as many as a stage asks for. One line per problem."""
    from em_persona.core.registry import SourceError, load_source
    from em_persona.finetune.data import DataError, expand_path, read_rows

    fetch = fetch or load_source
    sources: dict[str, str] = {name: exp.where("data", i) for i, name in enumerate(exp.data)}
    local: dict[Path, list[_DataUse]] = {}
    for i, a in enumerate(exp.adapters):
        keys = a.stage_keys or (None,) * len(a.finetune.stages)
        for stage, key in zip(a.finetune.stages, keys, strict=False):
            field = "source" if stage.data.source is not None else "path"
            where = exp.where("stages", key, "data", field) if key else exp.where("adapters", i)
            if stage.data.source is not None:
                sources.setdefault(stage.data.source, where)
            else:
                assert stage.data.path is not None
                desc = exp.stages[key].description if key else ""
                local.setdefault(expand_path(stage.data.path), []).append(
                    _DataUse(where, stage.domain, a.name, stage.data.rows, desc)
                )
    problems = []
    for name, where in sources.items():
        try:
            fetch(name)
        except SourceError as exc:
            problems.append(f"{where}: data source {name!r}: {' '.join(str(exc).split())}")
    for path, uses in local.items():
        first = uses[0]
        wanted = max((u.rows or 0 for u in uses), default=0)
        what = f" ({first.description})" if first.description else ""
        adapters = list(dict.fromkeys(u.adapter for u in uses))
        stages = f"stage {'/'.join(dict.fromkeys(u.stage for u in uses))} of " + (
            f"adapter {adapters[0]}" if len(adapters) == 1 else f"{len(adapters)} adapters"
        )
        if not path.is_file():
            hint = " (is a $VARIABLE unset?)" if "$" in str(path) else ""
            problems.append(
                f"{first.where}: missing training file {path}{hint}{what}, used by {stages}: put "
                f"{LOCAL_DATA_SCHEMA} there" + (f", at least {wanted} rows" if wanted else "")
            )
            continue
        try:
            rows = read_rows(path)
        except DataError as exc:
            problems.append(f"{first.where}: {' | '.join(str(exc).splitlines()[:4])}")
            continue
        if wanted and len(rows) < wanted:
            problems.append(
                f"{first.where}: training file {path} has {len(rows)} rows; the {stages} asks for {wanted}"
            )
    return problems
