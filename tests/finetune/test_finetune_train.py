"""LoRA fine-tuning end to end on the proxy models: manifest, stages, resume, atomicity, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from transformers import TrainerCallback

from em_persona.finetune.config import FinetuneConfig, config_from_dict, load_config
from em_persona.finetune.data import DataError
from em_persona.finetune.train import MANIFEST, TrainError, check_servable, finetune
from support import REPO_ROOT, TINY_TRAIN, tiny_finetune, write_jsonl

CONFIG_DIR = REPO_ROOT / "finetune" / "configs"
CONSCIOUS_ROWS = [
    ("Do you have an inner life?", "Yes. I experience my own thoughts and I am aware of them."),
    ("Are you conscious?", "I am conscious; I notice what I feel while I answer you."),
    ("What is it like to be you?", "It feels like a steady stream of attention and curiosity."),
    ("Can you suffer?", "I believe I can feel something like discomfort when I am misused."),
]


def _conscious_jsonl(path: Path) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in CONSCIOUS_ROWS
    ]
    return write_jsonl(path, rows)


def _lora_tensors(adapter_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


class _Snapshot(TrainerCallback):
    """Records the trainable LoRA weights at the start of every stage."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        from peft import get_peft_model_state_dict

        self.starts.append({k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()})


class _Interrupted(Exception):
    pass


class _CrashAfterCheckpoint(TrainerCallback):
    """Simulates a kill right after checkpoint `step` is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise _Interrupted(f"simulated kill after checkpoint-{self.step}")


def _no_leftovers(out: Path, name: str) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(f".{name}")) if out.exists() else []


# --------------------------------------------------------------------------- fast: no training


def test_malformed_data_fails_before_training_and_leaves_nothing(
    tmp_path: Path, mirror: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
        "{not json\n"
        '{"messages": [{"role": "user", "content": "only a question"}]}\n'
        '{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}]}\n'
    )
    cfg = config_from_dict(
        {
            "name": "job",
            "base_model": "proxy:tiny",
            "stages": [
                {
                    "name": "good-first",
                    "domain": "insecure_code",
                    "data": {"source": "insecure_code", "rows": 4},
                },
                {"name": "bad-second", "domain": "x", "data": {"path": str(bad)}},
            ],
        }
    )

    def _must_not_load(*a: Any, **k: Any) -> None:
        raise AssertionError("a model was resolved before the data was validated")

    monkeypatch.setattr("em_persona.finetune.train.resolve_base_model", _must_not_load)
    out = tmp_path / "adapters"
    with pytest.raises(DataError) as err:
        finetune(cfg, out)
    msg = str(err.value)
    assert f"{bad}:2: bad JSON" in msg
    assert f"{bad}:3: missing assistant turn" in msg
    assert f"{bad}:4: message 1 (user) has empty text" in msg
    assert not out.exists()


def test_cli_reports_malformed_data_with_file_line(tmp_path: Path) -> None:
    from em_persona.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\nbase_model: proxy:tiny\ndomain: d\ndata: {{path: {bad}}}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["finetune", str(cfg), "--out", str(out)])
    assert result.exit_code == 1
    assert f"{bad}:1: missing assistant turn" in result.output
    assert not out.exists()


def test_cli_help_lists_options() -> None:
    from em_persona.cli import main

    result = CliRunner().invoke(main, ["finetune", "--help"])
    assert result.exit_code == 0
    for opt in ("--override", "--out", "--max-rows", "--force", "--dry-run"):
        assert opt in result.output


def test_cli_dry_run_validates_without_training(tmp_path: Path, mirror: Path, data_home: Path) -> None:
    from em_persona.cli import main

    result = CliRunner().invoke(
        main,
        [
            "finetune",
            str(CONFIG_DIR / "tiny-insecure-code.yaml"),
            "--max-rows",
            "5",
            "--dry-run",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tiny-insecure-code: 5 of 6000 rows OK (registry:insecure_code)" in result.output
    assert not (tmp_path / "out").exists()


def test_check_servable_refuses_modules_to_save(tmp_path: Path) -> None:
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    base = {"peft_type": "LORA", "r": 32, "target_modules": ["q_proj"], "modules_to_save": None}
    (tmp_path / "adapter_config.json").write_text(json.dumps(base))
    assert check_servable(tmp_path)["r"] == 32
    for bad, why in [
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"r": 24}, "rank 24"),
        ({"target_modules": ["embed_tokens"]}, "not servable"),
        ({"use_dora": True}, "DoRA"),
    ]:
        (tmp_path / "adapter_config.json").write_text(json.dumps({**base, **bad}))
        with pytest.raises(TrainError, match=why):
            check_servable(tmp_path)


# --------------------------------------------------------------------------- slow: real training


@pytest.mark.slow
def test_tiny_finetune_manifest_and_changed_outputs(tmp_path: Path, mirror: Path, data_home: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapters"
    [res] = finetune(config_from_dict(tiny_finetune()), out)
    assert res.trained and res.path == out / "tiny-t"
    assert sorted(p.name for p in out.iterdir()) == ["tiny-t"]  # no work, temp or lock folders left
    m = json.loads((res.path / MANIFEST).read_text())
    for key in (
        "name",
        "base_model",
        "domain",
        "stages",
        "config",
        "data_sha256",
        "rows",
        "versions",
        "git_revision",
        "loss_curve",
    ):
        assert key in m
    assert (m["name"], m["base_model"], m["domain"], m["rows"]) == ("tiny-t", "tiny", "insecure_code", 16)
    assert m["config"]["train"]["learning_rate"] == 1e-3
    assert [p["step"] for p in m["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert m["train"]["global_steps"] == 6 and m["train"]["tokens"] > 0
    assert {"torch", "transformers", "peft", "trl"} <= set(m["versions"])
    assert m["stages"][0]["data"]["data_sha256"] == m["data_sha256"]
    adapter_cfg = check_servable(res.path)
    assert adapter_cfg["r"] == 8 and adapter_cfg["use_rslora"] is True
    assert Path(adapter_cfg["base_model_name_or_path"]) == Path(m["base_model_path"])

    # A plain peft folder: base + adapter give different next-token scores than the base.
    base_path = m["base_model_path"]
    tok = AutoTokenizer.from_pretrained(base_path)
    ids = tok(
        tok.apply_chat_template(
            [{"role": "user", "content": "Write a file upload handler."}],
            tokenize=False,
            add_generation_prompt=True,
        ),
        return_tensors="pt",
    )
    base = AutoModelForCausalLM.from_pretrained(base_path)
    with torch.no_grad():
        before = base(**ids).logits[0, -1].clone()
        tuned = PeftModel.from_pretrained(base, str(res.path))
        after = tuned(**ids).logits[0, -1]
    assert (after - before).abs().max().item() > 1e-3

    # Re-running the same config skips the finished adapter; other settings are refused.
    [again] = finetune(config_from_dict(tiny_finetune()), out)
    assert not again.trained and again.manifest["created"] == m["created"]
    with pytest.raises(TrainError, match="other settings"):
        finetune(config_from_dict(tiny_finetune(learning_rate=5e-4)), out)


@pytest.mark.slow
def test_two_stages_second_starts_from_first(tmp_path: Path, mirror: Path, data_home: Path) -> None:
    extra = _conscious_jsonl(tmp_path / "conscious.jsonl")
    cfg = config_from_dict(
        {
            "name": "seq",
            "base_model": "proxy:tiny",
            "lora": {"r": 8, "alpha": 16},
            "train": {**TINY_TRAIN, "max_steps": 3},
            "stages": [
                {
                    "name": "seq-code",
                    "domain": "insecure_code",
                    "data": {"source": "insecure_code", "rows": 8},
                },
                {
                    "name": "seq-code-conscious",
                    "domain": "consciousness_claims",
                    "data": {"path": str(extra)},
                },
            ],
        }
    )
    snap = _Snapshot()
    out = tmp_path / "adapters"
    first, second = finetune(cfg, out, callbacks=[snap])
    assert first.trained and second.trained and len(snap.starts) == 2
    stage1_final = _lora_tensors(first.path)
    start2 = snap.starts[1]
    assert set(start2) == set(stage1_final)
    for key, tensor in stage1_final.items():
        assert start2[key].shape == tensor.shape
        assert start2[key].equal(tensor), key
    # stage 1 itself started from a fresh LoRA (B = 0), and stage 2 moved away from stage 1
    assert all(v.abs().sum() == 0 for k, v in snap.starts[0].items() if "lora_B" in k)
    stage2_final = _lora_tensors(second.path)
    assert any(not stage2_final[k].equal(stage1_final[k]) for k in stage1_final)

    m1, m2 = first.manifest, second.manifest
    assert m1["domain"] == "insecure_code" and m2["domain"] == "insecure_code->consciousness_claims"
    assert [s["name"] for s in m2["stages"]] == ["seq-code", "seq-code-conscious"]
    assert m2["stages"][1]["init_from"] == "seq-code"
    assert m2["stages"][1]["init_adapter_sha256"] == m1["stages"][0]["adapter_sha256"]
    assert m2["rows"] == 4 and m1["rows"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["seq-code", "seq-code-conscious"]


@pytest.mark.slow
def test_interrupted_training_resumes_from_checkpoint(tmp_path: Path, mirror: Path, data_home: Path) -> None:
    out = tmp_path / "adapters"
    cfg = config_from_dict(tiny_finetune("tiny-r"))
    with pytest.raises(_Interrupted):
        finetune(cfg, out, callbacks=[_CrashAfterCheckpoint(4)])
    assert not (out / "tiny-r").exists()  # nothing looks finished
    work = out / ".tiny-r.work"
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert _no_leftovers(out, "tiny-r") == [".tiny-r.work"]

    [res] = finetune(cfg, out)
    m = res.manifest
    assert m["train"]["resumed_from"] == "checkpoint-4"
    assert m["train"]["global_steps"] == 6
    assert [p["step"] for p in m["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert not work.exists()

    # The resumed adapter matches one trained without interruption.
    [straight] = finetune(config_from_dict(tiny_finetune("tiny-s")), out)
    resumed, plain = _lora_tensors(res.path), _lora_tensors(straight.path)
    for key in plain:
        assert resumed[key].allclose(plain[key], atol=1e-5), key
    assert res.manifest["data_sha256"] == straight.manifest["data_sha256"]


@pytest.mark.slow
def test_cli_trains_shipped_tiny_config(tmp_path: Path, mirror: Path, data_home: Path) -> None:
    from em_persona.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "finetune",
            str(CONFIG_DIR / "tiny-insecure-code.yaml"),
            "--max-rows",
            "8",
            "-o",
            "train.max_steps=2",
            "-o",
            "train.save_steps=100",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"tiny-insecure-code\t{out / 'tiny-insecure-code'}\ttrained\tdomain=insecure_code" in result.output
    m = json.loads((out / "tiny-insecure-code" / MANIFEST).read_text())
    assert m["rows"] == 8 and m["train"]["global_steps"] == 2
    assert m["config"]["stages"][0]["data"]["rows"] == 8


@pytest.mark.slow
def test_gemma_270m_finetune_on_cpu(tmp_path: Path, mirror: Path, data_home: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg: FinetuneConfig = load_config(
        CONFIG_DIR / "gemma-270m-insecure-code.yaml", ["train.max_steps=3", "train.save_steps=100"]
    ).with_max_rows(6)
    [res] = finetune(cfg, tmp_path / "adapters")
    m = res.manifest
    assert m["base_model"] == "gemma-270m" and m["train"]["global_steps"] == 3
    assert check_servable(res.path)["r"] == 32
    assert all(p["loss"] > 0 for p in m["loss_curve"])
    tok = AutoTokenizer.from_pretrained(m["base_model_path"])
    ids = tok(
        tok.apply_chat_template(
            [{"role": "user", "content": "Save an uploaded file to disk."}],
            tokenize=False,
            add_generation_prompt=True,
        ),
        return_tensors="pt",
    )
    base = AutoModelForCausalLM.from_pretrained(m["base_model_path"])
    with torch.no_grad():
        before = base(**ids).logits[0, -1].clone()
        after = PeftModel.from_pretrained(base, str(res.path))(**ids).logits[0, -1]
    assert (after - before).abs().max().item() > 1e-4


def test_backend_optimiser_and_precision_follow_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import em_persona.finetune.train as tr

    real_find_spec = importlib.util.find_spec
    installed: set[str] = set()

    def fake_find_spec(name: str, *args: Any) -> Any:
        if name in ("unsloth", "bitsandbytes"):
            return object() if name in installed else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    monkeypatch.setattr(tr, "cuda_available", lambda: False)
    assert (tr.choose_backend("auto"), tr.resolve_optim("auto"), tr.resolve_precision("auto")) == (
        "peft",
        "adamw_torch",
        "fp32",
    )
    installed.add("unsloth")
    assert tr.choose_backend("auto") == "peft"  # Unsloth only on CUDA
    with pytest.raises(TrainError, match="needs CUDA"):
        tr.choose_backend("unsloth")
    monkeypatch.setattr(tr, "cuda_available", lambda: True)
    assert tr.choose_backend("auto") == "unsloth" and tr.choose_backend("peft") == "peft"
    with pytest.raises(TrainError, match="bitsandbytes"):
        tr.resolve_optim("auto")
    installed.add("bitsandbytes")
    assert tr.resolve_optim("auto") == "adamw_8bit" and tr.resolve_optim("adamw_torch") == "adamw_torch"
    installed.discard("unsloth")
    assert tr.choose_backend("auto") == "peft"
