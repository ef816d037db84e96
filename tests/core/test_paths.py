"""Where files are found when the toolkit runs from a checkout or from an installed wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from em_persona.core import paths


def test_inputs_resolve_from_the_working_folder_then_the_checkout_then_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout, package = tmp_path / "checkout", tmp_path / "site" / "em_persona"
    (package / "finetune" / "configs").mkdir(parents=True)
    (package / "finetune" / "configs" / "a.yaml").write_text("x")
    monkeypatch.setattr(paths, "REPO_ROOT", checkout)
    monkeypatch.setattr(paths, "PACKAGE_ROOT", package)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # only the installed package has it
    assert paths.resolve_input("finetune/configs/a.yaml") == package / "finetune" / "configs" / "a.yaml"
    # a file of the working folder wins
    (work / "finetune" / "configs").mkdir(parents=True)
    (work / "finetune" / "configs" / "a.yaml").write_text("mine")
    assert paths.resolve_input("finetune/configs/a.yaml") == work / "finetune" / "configs" / "a.yaml"
    assert paths.resolve_input(tmp_path / "abs.yaml") == tmp_path / "abs.yaml"


def test_outputs_go_to_the_checkout_or_else_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert paths.in_checkout() and paths.output_root() == paths.REPO_ROOT  # the tests run from a checkout
    package = tmp_path / "site-packages" / "em_persona"
    (package / "tasks").mkdir(parents=True)  # an installed wheel: the task folder is inside the package
    monkeypatch.setattr(paths, "PACKAGE_ROOT", package)
    monkeypatch.setattr(paths, "REPO_ROOT", package.parent)
    monkeypatch.chdir(tmp_path)
    assert not paths.in_checkout() and paths.output_root() == tmp_path
