"""One default em-persona home, whichever way the toolkit is started (make, the CLI, the tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT, TESTS_DIR


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k != "EM_PERSONA_HOME" and not k.startswith(("MAKE", "MFLAGS"))
    }
    env["HOME"] = str(tmp_path / "user-home")
    return env


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_leaves_the_home_to_the_toolkit_default(tmp_path: Path) -> None:
    probe = tmp_path / "probe.mk"
    probe.write_text('print-home:\n\t@echo "home=[$$EM_PERSONA_HOME]"\n')
    out = subprocess.run(
        ["make", "-s", "-f", "Makefile", "-f", str(probe), "print-home"],
        cwd=REPO_ROOT,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "home=[]" in out.stdout, f"the Makefile sets EM_PERSONA_HOME: {out.stdout.strip()}"


def test_tests_and_cli_share_the_default_home(tmp_path: Path) -> None:
    code = "import conftest; from em_persona.core.paths import home; print(home())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=TESTS_DIR,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "user-home" / ".cache" / "em-persona")


def test_em_persona_home_is_the_one_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from em_persona.core.paths import home, proxies_dir

    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "elsewhere"))
    assert home() == (tmp_path / "elsewhere").resolve()
    assert proxies_dir() == home() / "proxies"
