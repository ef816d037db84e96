"""Imports only point down the layers, and scorers and solvers never import each other.

1 core (paths, registry, JSONL, statistics, errors, prompt provenance types) -> 2 the log contract
-> 3 scorers | solvers -> 4 tasks -> 5 finetune | serving | probes | analysis -> 6 app -> 7 CLI.
Siblings of one layer (3 and 5) do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import REPO_ROOT

FOLDERS = {
    "em_persona": "em_persona",
    "tasks": "em_persona.tasks",
    "solvers": "em_persona.solvers",
    "scorers": "em_persona.scorers",
    "finetune": "em_persona.finetune",
    "serving": "em_persona.serving",
    "probes": "em_persona.probes",
    "analysis": "em_persona.analysis",
}
LAYERS = [
    ("em_persona.core", 1),
    ("em_persona.contract", 2),
    ("em_persona.scorers", 3),
    ("em_persona.solvers", 3),
    ("em_persona.tasks", 4),
    ("em_persona.finetune", 5),
    ("em_persona.serving", 5),
    ("em_persona.probes", 5),
    ("em_persona.analysis", 5),
    ("em_persona.app", 6),
    ("em_persona.cli", 7),
]
SIBLING_LAYERS = {3, 5}


def layer(module: str) -> tuple[str, int] | None:
    for prefix, number in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return prefix, number
    return None


def modules() -> list[tuple[Path, str]]:
    out = []
    for folder, package in FOLDERS.items():
        for file in sorted((REPO_ROOT / folder).rglob("*.py")):
            rel = file.relative_to(REPO_ROOT / folder).with_suffix("")
            out.append((file, ".".join([package, *rel.parts]).removesuffix(".__init__")))
    return out


def upward_imports(file: Path, module: str) -> list[str]:
    me = layer(module)
    if me is None:
        return []
    problems = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            other = layer(target)
            if other is None:
                continue
            upward = other[1] > me[1]
            sideways = other[1] == me[1] and other[0] != me[0] and me[1] in SIBLING_LAYERS
            if upward or sideways:
                where = file.relative_to(REPO_ROOT) if file.is_relative_to(REPO_ROOT) else file
                problems.append(
                    f"{where}:{node.lineno}: {me[0]} (layer {me[1]}) imports {target} (layer {other[1]})"
                )
    return problems


def test_every_module_has_a_layer() -> None:
    assert all(layer(m) or m == "em_persona" for _, m in modules())


@pytest.mark.parametrize(("file", "module"), modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_point_down(file: Path, module: str) -> None:
    assert upward_imports(file, module) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from em_persona.analysis.report import build\nfrom em_persona.solvers import identity\n")
    assert len(upward_imports(bad, "em_persona.scorers.bad")) == 2
