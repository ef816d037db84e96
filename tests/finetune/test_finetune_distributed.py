"""Fine-tuning in several processes (`accelerate launch`): which process does what, how rank 0's
decisions and errors reach the others, the gathered adapter save and its weight check, and (slow)
two gloo processes on CPU training the tiny proxy end to end through the launched entry module."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import em_persona.finetune.train as train_mod
from em_persona.finetune.config import config_from_dict
from em_persona.finetune.launch import ENTRY_MODULE, LaunchError, accelerate_executable, join_processes
from em_persona.finetune.ranks import (
    ProcessError,
    Processes,
    accelerate_places_model,
    main_first,
    on_main,
    process_ranks,
    sharding_requested,
)
from em_persona.finetune.train import (
    ADAPTER_WEIGHTS,
    MANIFEST,
    PEFT_FILES,
    TrainError,
    check_adapter_weights,
    check_servable,
    finetune,
    lora_shapes,
)
from support import tiny_finetune, write_yaml

# --------------------------------------------------------------------------- ranks from the environment


def test_ranks_come_from_rank_and_world_size() -> None:
    assert process_ranks({}) == Processes(0, 1)
    one = process_ranks({"RANK": "0", "WORLD_SIZE": "1"})
    assert one.main and not one.distributed
    second = process_ranks({"RANK": "1", "WORLD_SIZE": "4"})
    assert (second.rank, second.world_size, second.main, second.distributed) == (1, 4, False, True)
    assert process_ranks({"RANK": "0", "WORLD_SIZE": "4"}).main


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"RANK": "", "WORLD_SIZE": "2"}, "RANK='' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 and WORLD_SIZE=2 do not name a process"),
        ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK=-1"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ],
)
def test_bad_rank_variables_are_refused(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ProcessError, match=expected):
        process_ranks(env)


def test_several_processes_without_a_process_group_are_refused_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def _must_not_run(*a: Any, **k: Any) -> None:
        raise AssertionError("data was loaded although the processes are not joined")

    monkeypatch.setattr(train_mod, "load_training_data", _must_not_run)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ProcessError, match="WORLD_SIZE=2 but no torch.distributed process group"):
        finetune(config_from_dict(tiny_finetune()), tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _Recorder:
    """A piece of work that notes each call and returns `result`."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.result


def test_accelerate_places_the_model_for_several_processes_or_sharding() -> None:
    assert not accelerate_places_model(Processes(), {})
    assert accelerate_places_model(Processes(1, 2), {})
    assert accelerate_places_model(Processes(), {"ACCELERATE_USE_FSDP": "true"})
    assert accelerate_places_model(Processes(), {"ACCELERATE_USE_DEEPSPEED": "True"})
    assert not accelerate_places_model(Processes(), {"ACCELERATE_USE_FSDP": "false"})


@pytest.mark.parametrize("flag", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharding_flags_are_read_as_accelerate_reads_them(flag: str) -> None:
    name = "FSDP" if flag == "ACCELERATE_USE_FSDP" else "DeepSpeed"
    for text in ("1", "true", "True", "yes", "on"):
        assert sharding_requested({flag: text}) == [name], text
    for text in ("0", "false", "no", "off"):
        assert sharding_requested({flag: text}) == [], text
    assert sharding_requested({"ACCELERATE_USE_FSDP": "1", "ACCELERATE_USE_DEEPSPEED": "1"}) == [
        "FSDP",
        "DeepSpeed",
    ]
    with pytest.raises(ProcessError, match=f"{flag}='maybe' is not true or false"):
        accelerate_places_model(Processes(), {flag: "maybe"})


def test_main_first_broadcasts_only_rank_zero_success(monkeypatch: pytest.MonkeyPatch) -> None:
    import em_persona.finetune.ranks as ranks_mod

    sent: list[Any] = []

    def _share(procs: Processes, value: Any) -> Any:
        sent.append(value)
        return value

    monkeypatch.setattr(ranks_mod, "share", _share)
    rows = [{"messages": ["a long training row"]}] * 3
    work = _Recorder(rows)
    assert main_first(Processes(0, 2), work, "config") is rows
    assert work.calls == [("config",)] and sent == [("ok", None)]  # the rows stay on rank 0
    sent.clear()
    with pytest.raises(KeyError):  # rank 0's error is raised there as it is, and its message is sent
        main_first(Processes(0, 2), {}.__getitem__, "x")
    assert sent == [("error", "KeyError: 'x'")]


def test_one_process_runs_rank_zero_work_in_place() -> None:
    one = Processes()
    work = _Recorder(42)
    assert on_main(one, work, 21) == 42
    assert main_first(one, work) == 42
    assert work.calls == [(21,), ()]  # each once, in this process
    with pytest.raises(KeyError):  # an error is raised as it is
        on_main(one, {}.__getitem__, "x")


def test_the_process_count_enters_the_fingerprint_only_past_one(tmp_path: Path, data_home: Path) -> None:
    from em_persona.finetune.data import TrainingData

    data = TrainingData(
        rows=[{"messages": []}], origin=tmp_path, source="x", total_rows=1, file_sha256="0", indices=[0]
    )
    config = config_from_dict(tiny_finetune())
    one = train_mod._fingerprint(config, 0, data, None)
    assert train_mod._fingerprint(config, 0, data, None, 1) == one
    two = train_mod._fingerprint(config, 0, data, None, 2)
    assert len({one, two, train_mod._fingerprint(config, 0, data, None, 4)}) == 3


# --------------------------------------------------------------------------- model placement


class _Loaded(Exception):
    """Stops model loading at from_pretrained and carries its keyword arguments."""


@pytest.mark.parametrize(
    "world, sharding, device_map",
    [
        ("1", None, "auto"),
        ("2", None, None),
        ("8", None, None),
        ("1", "ACCELERATE_USE_FSDP", None),
        ("1", "ACCELERATE_USE_DEEPSPEED", None),
    ],
)
def test_device_map_only_when_accelerate_does_not_place_the_model(
    monkeypatch: pytest.MonkeyPatch, world: str, sharding: str | None, device_map: str | None
) -> None:
    from transformers import AutoModelForCausalLM

    def _capture(path: str, **kwargs: Any) -> None:
        raise _Loaded(kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", _capture)
    monkeypatch.setattr(train_mod, "cuda_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", "0")
    for flag in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(flag, raising=False)
    if sharding:
        monkeypatch.setenv(sharding, "true")
    with pytest.raises(_Loaded) as loaded:
        train_mod._build_peft_model(config_from_dict(tiny_finetune()), "base", None, "bf16")
    assert loaded.value.args[0].get("device_map") == device_map
    monkeypatch.setattr(train_mod, "cuda_available", lambda: False)
    with pytest.raises(_Loaded) as on_cpu:
        train_mod._build_peft_model(config_from_dict(tiny_finetune()), "base", None, "fp32")
    assert "device_map" not in on_cpu.value.args[0]


# --------------------------------------------------------------------------- the adapter save and its check


def _tiny_lora(tiny_proxy: Path) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_proxy)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def test_saved_lora_weights_are_checked_against_the_model(tmp_path: Path, tiny_proxy: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    model = _tiny_lora(tiny_proxy)
    expected = lora_shapes(model)
    assert expected and all(len(shape) == 2 and 0 not in shape for shape in expected.values())
    assert sum(".lora_A." in k for k in expected) == sum(".lora_B." in k for k in expected)
    good = tmp_path / "good"
    model.save_pretrained(str(good))
    check_adapter_weights(good, expected)  # what peft saved is exactly what the layers promise

    tensors = load_file(str(good / ADAPTER_WEIGHTS))
    a_name = next(k for k in sorted(tensors) if ".lora_A." in k)
    b_name = a_name.replace(".lora_A.", ".lora_B.")

    def broken(label: str, changed: dict[str, Any]) -> Path:
        folder = tmp_path / label
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in changed.items()}, str(folder / ADAPTER_WEIGHTS))
        return folder

    # What a save of sharded parameters writes: empty (or flat) tensors in place of the LoRA weights.
    empty = broken("empty", {k: torch.empty(0) for k in tensors})
    flat = broken("flat", {**tensors, b_name: tensors[b_name].reshape(-1)})
    cases = [
        (empty, f"{a_name} has shape [0], expected {list(expected[a_name])}"),
        (flat, f"{b_name} has shape [{tensors[b_name].numel()}]"),
        (broken("missing", {k: v for k, v in tensors.items() if k != b_name}), "1 LoRA tensor(s) missing"),
        (broken("extra", {**tensors, "lm_head.weight": torch.ones(2, 2)}), "1 unexpected tensor(s)"),
        (broken("zero", {**tensors, a_name: torch.zeros_like(tensors[a_name])}), f"{a_name} is all zeros"),
        (
            broken("nan", {**tensors, b_name: torch.full_like(tensors[b_name], float("nan"))}),
            f"{b_name} holds NaN",
        ),
    ]
    for folder, why in cases:
        with pytest.raises(TrainError) as info:
            check_adapter_weights(folder, expected)
        assert str(folder / ADAPTER_WEIGHTS) in str(info.value) and why in str(info.value), folder.name
    with pytest.raises(TrainError, match="no LoRA layers"):
        check_adapter_weights(good, {})


class _FakePlugin:
    def __init__(self) -> None:
        self.state_dict_type = "SHARDED_STATE_DICT"

    def set_state_dict_type(self, kind: str) -> None:
        self.state_dict_type = kind


class _FakeTrainer:
    """Trainer.save_model as it behaves on one rank: the main one writes the adapter files plus the
    tokenizer and training_args.bin; it records the FSDP state-dict type it saw."""

    def __init__(self, fsdp: bool, main: bool) -> None:
        self.is_fsdp_enabled = fsdp
        self.main = main
        plugin = _FakePlugin() if fsdp else None
        self.accelerator = type("A", (), {"state": type("S", (), {"fsdp_plugin": plugin})()})()
        self.saw: list[str | None] = []

    def save_model(self, folder: str) -> None:
        plugin = self.accelerator.state.fsdp_plugin
        self.saw.append(plugin.state_dict_type if plugin else None)
        if self.main:
            Path(folder).mkdir(parents=True)
            for name in [*PEFT_FILES, "tokenizer.json", "training_args.bin"]:
                (Path(folder) / name).write_text(name)


@pytest.mark.parametrize("fsdp", [True, False])
def test_distributed_save_gathers_on_every_rank_and_keeps_the_peft_files(tmp_path: Path, fsdp: bool) -> None:
    main, other = _FakeTrainer(fsdp, main=True), _FakeTrainer(fsdp, main=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    train_mod._save_adapter(other, tmp, Processes(1, 2))
    train_mod._save_adapter(main, tmp, Processes(0, 2))
    full = "FULL_STATE_DICT" if fsdp else None
    assert main.saw == [full] and other.saw == [full]  # both ranks take part in the gather
    assert sorted(p.name for p in tmp.iterdir()) == sorted(PEFT_FILES)


# --------------------------------------------------------------------------- rank 0's decisions over gloo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_worker(rank: int, world: int, port: int, out: str, config: dict[str, Any], report: str) -> None:
    """One of `world` gloo processes: run every scenario and write what it saw to `report`.rank."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    procs = process_ranks()
    seen: dict[str, Any] = {}
    try:
        once, each = _Recorder(f"from {rank}"), _Recorder(rank)
        seen["on_main"] = on_main(procs, once)
        seen["main_first"] = main_first(procs, each)
        seen["ran"] = [len(once.calls), len(each.calls)]
        try:
            on_main(procs, train_mod._stage_decision, Path(out), "taken", "f", False)
        except (TrainError, ProcessError) as exc:
            seen["refused"] = f"{type(exc).__name__}: {exc}"
        # finetune() end to end up to the stage decision: a finished adapter with the same settings
        # is skipped by every rank (rank 0 alone holds the lock, so none waits on another).
        [result] = finetune(config_from_dict(config), out)
        seen["skipped"] = [result.trained, result.manifest["fingerprint"]]
        seen["leftover"] = (Path(out) / ".tiny-d.tmp-x").exists()
    finally:
        Path(f"{report}.{rank}").write_text(json.dumps(seen))
        dist.destroy_process_group()


def test_rank_zero_decides_and_its_errors_reach_every_rank(
    tmp_path: Path, mirror: Path, data_home: Path, tiny_proxy: Path
) -> None:
    import torch.multiprocessing as mp

    from em_persona.finetune.data import load_training_data

    config = tiny_finetune("tiny-d")
    out = tmp_path / "out"
    (out / "taken").mkdir(parents=True)  # a folder in the way: rank 0 refuses it
    data = load_training_data(config_from_dict(config).stages[0].data)
    fingerprint = train_mod._fingerprint(config_from_dict(config), 0, data, None, 2)
    (out / "tiny-d").mkdir()
    manifest = {"fingerprint": fingerprint, "stages": [{"name": "tiny-d"}], "domain": "insecure_code"}
    (out / "tiny-d" / MANIFEST).write_text(json.dumps(manifest))
    (out / ".tiny-d.tmp-x").mkdir()  # left by a killed run: cleaned by rank 0 under the lock
    report = str(tmp_path / "report")
    mp.start_processes(
        _rank_worker, args=(2, _free_port(), str(out), config, report), nprocs=2, start_method="spawn"
    )
    zero, one = (json.loads(Path(f"{report}.{r}").read_text()) for r in (0, 1))
    assert zero["on_main"] == one["on_main"] == "from 0"
    assert zero["ran"] == [1, 1] and one["ran"] == [0, 1]  # on_main: rank 0 only; main_first: both
    assert zero["main_first"] == 0 and one["main_first"] == 1
    assert (
        zero["refused"].startswith("TrainError: ")
        and "exists but is not a finished adapter" in zero["refused"]
    )
    assert one["refused"] == f"ProcessError: rank 0 failed: {zero['refused']}"  # rank 1 did not decide
    assert zero["skipped"] == one["skipped"] == [False, fingerprint]
    assert not zero["leftover"] and not one["leftover"]
    assert sorted(p.name for p in out.iterdir()) == ["taken", "tiny-d"]  # no lock file left


def test_a_launch_accelerate_does_not_join_as_launched_is_refused() -> None:
    join_processes({})  # this test process: one process, no group
    with pytest.raises(LaunchError, match="2 processes were launched .WORLD_SIZE. but accelerate joined 1"):
        join_processes({"WORLD_SIZE": "2"})


# --------------------------------------------------------------------------- slow: two CPU processes


def _launch(config: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    """`accelerate launch` of the entry module over two gloo processes on this CPU.

    (`accelerate launch --cpu --num_processes 2` starts one process unless mpirun runs it; the
    torchrun launcher with ACCELERATE_USE_CPU, accelerate's own flag, starts two.)"""
    command = [
        accelerate_executable(),
        "launch",
        *extra,
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        ENTRY_MODULE,
        str(config),
        "--out",
        str(out),
    ]
    full_env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_two_cpu_processes_train_one_servable_adapter(
    tmp_path: Path, mirror: Path, data_home: Path, tiny_proxy: Path
) -> None:
    import transformers
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config_path = write_yaml(tmp_path / "tiny.yaml", tiny_finetune("tiny-ddp", max_steps=2, save_steps=1))
    out = tmp_path / "adapters"
    run = _launch(config_path, out, "--multi_gpu")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    # the main process alone reports
    reported = [line for line in run.stdout.splitlines() if line.startswith("tiny-ddp\t")]
    assert reported == [f"tiny-ddp\t{out / 'tiny-ddp'}\ttrained\tdomain=insecure_code"]
    assert sorted(p.name for p in out.iterdir()) == ["tiny-ddp"]  # no work, temp, lock or trash left
    adapter = out / "tiny-ddp"
    assert sorted(p.name for p in adapter.iterdir()) == sorted([*PEFT_FILES, MANIFEST])
    m = json.loads((adapter / MANIFEST).read_text())
    assert m["train"]["processes"] == 2 and m["train"]["distributed_type"] == "MULTI_CPU"
    assert m["train"]["global_steps"] == 2 and [p["step"] for p in m["loss_curve"]] == [1, 2]
    assert [s["status"] for s in m["train"]["segments"]] == ["finished"]
    assert check_servable(adapter)["r"] == 8

    # The same model, built as the launched processes build it, is what the saved tensors fit;
    # its fresh LoRA is where they started: B was zero and A is moved by training.
    config = config_from_dict(tiny_finetune("tiny-ddp"))
    transformers.set_seed(config.train.seed)
    base = AutoModelForCausalLM.from_pretrained(m["base_model_path"])
    lora = config.lora
    init = get_peft_model(
        base,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            use_rslora=lora.use_rslora,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    check_adapter_weights(adapter, lora_shapes(init))
    from peft import get_peft_model_state_dict

    start = get_peft_model_state_dict(init)
    trained = load_file(str(adapter / ADAPTER_WEIGHTS))
    assert set(trained) == set(start)
    assert all(start[k].abs().sum() == 0 for k in start if ".lora_B." in k)
    assert all(trained[k].abs().sum() > 0 for k in trained if ".lora_B." in k)
    assert any(not trained[k].equal(start[k]) for k in trained if ".lora_A." in k)

    # Two processes of 2 rows are one batch of 4: the same losses, gradients and weights as one
    # process trains (each rank's token-summed loss over the global token count, times the two
    # processes whose gradients DDP averages).
    [one] = finetune(
        config_from_dict(tiny_finetune("tiny-one", per_device_train_batch_size=4, max_steps=2)),
        tmp_path / "one",
    )
    for ddp_point, one_point in zip(m["loss_curve"], one.manifest["loss_curve"], strict=True):
        assert ddp_point["loss"] == pytest.approx(one_point["loss"], rel=1e-5)
        assert ddp_point["grad_norm"] == pytest.approx(one_point["grad_norm"], rel=1e-4)
    assert m["train"]["tokens"] == one.manifest["train"]["tokens"]
    alone = load_file(str(one.path / ADAPTER_WEIGHTS))
    for key, tensor in trained.items():
        assert tensor.allclose(alone[key], atol=1e-5), key

    # A second launch of the same config finds the adapter finished in every process.
    again = _launch(config_path, out, "--multi_gpu")
    assert again.returncode == 0, again.stderr[-6000:]
    assert f"tiny-ddp\t{adapter}\talready finished" in again.stdout
    assert json.loads((adapter / MANIFEST).read_text())["created"] == m["created"]


@pytest.mark.slow
def test_fsdp_on_cpu_processes_is_refused_by_name(
    tmp_path: Path, mirror: Path, data_home: Path, tiny_proxy: Path
) -> None:
    from em_persona.finetune.launch import ACCELERATE_CONFIG_DIR

    config_path = write_yaml(tmp_path / "tiny.yaml", tiny_finetune("tiny-fsdp", max_steps=1))
    out = tmp_path / "adapters"
    run = _launch(config_path, out, "--config_file", str(ACCELERATE_CONFIG_DIR / "fsdp.yaml"))
    assert run.returncode != 0
    assert "FSDP needs CUDA GPUs" in run.stderr and not (out / "tiny-fsdp").exists()
