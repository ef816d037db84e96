"""Test harness: fully offline Inspect, the pinned-data mirror, markers and shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_UPSTREAM = REPO_ROOT.parent / "shared" / "upstream"

# No test reaches the network: Hugging Face and Inspect are told so before they load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("INSPECT_DISPLAY", "none")
os.environ.setdefault("INSPECT_LOG_LEVEL", "warning")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Proxy models and other heavy artefacts are built once into the toolkit's one default home
# ($EM_PERSONA_HOME, else ~/.cache/em-persona), so tests and `make demo` share them.
if SHARED_UPSTREAM.is_dir():
    os.environ.setdefault("EM_PERSONA_MIRROR", str(SHARED_UPSTREAM))


pytest_plugins = ["fixtures_models"]


def _offline_token_count(text: str) -> int:
    """Stand-in for Inspect's tiktoken estimate, whose encoding file needs a download."""
    return max(1, int(len(text.split()) * 1.3))


@pytest.fixture(autouse=True)
def _offline_inspect(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect_ai.model._model as model_mod
    import inspect_ai.model._tokens as tokens_mod

    monkeypatch.setattr(tokens_mod, "count_text_tokens", _offline_token_count)
    monkeypatch.setattr(model_mod, "count_text_tokens", _offline_token_count)


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private data cache for one test."""
    cache = tmp_path / "data-cache"
    monkeypatch.setenv("EM_PERSONA_DATA_DIR", str(cache))
    return cache


@pytest.fixture
def mirror() -> Path:
    """The read-only pinned-data mirror (../shared/upstream); skips when absent."""
    if not SHARED_UPSTREAM.is_dir():
        pytest.skip(f"pinned-data mirror {SHARED_UPSTREAM} is absent (it sits beside the checkout in CI)")
    return SHARED_UPSTREAM


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A fresh Inspect log folder for one test."""
    d = tmp_path / "logs"
    d.mkdir()
    return d
