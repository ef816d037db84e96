"""Fine-tuning past one GPU: the shipped accelerate configs, their checks, the `accelerate launch`
command `em-persona finetune --launcher accelerate` builds, and the launched entry module.
Nothing here trains (no GPU): the launch command is checked against accelerate's own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import em_persona.finetune.launch as launch_mod
from em_persona.finetune.config import load_config
from em_persona.finetune.launch import (
    ACCELERATE_CONFIG_DIR,
    ENTRY_MODULE,
    AccelerateConfig,
    LaunchError,
    accelerate_command,
    check_accelerate_config,
    check_launch_host,
    launch_backend,
    main,
)
from support import REPO_ROOT, write_yaml

LLAMA = REPO_ROOT / "finetune" / "configs" / "llama70b-insecure-code.yaml"
TINY = REPO_ROOT / "finetune" / "configs" / "tiny-insecure-code.yaml"
ACCELERATE = "/venv/bin/accelerate"


@pytest.fixture(autouse=True)
def fixed_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch_mod, "accelerate_executable", lambda: ACCELERATE)


def _config(tmp_path: Path, **changes: Any) -> Path:
    """A copy of the shipped FSDP config with top-level keys changed (None removes one)."""
    raw = yaml.safe_load((ACCELERATE_CONFIG_DIR / "fsdp.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return write_yaml(tmp_path / "accelerate.yaml", raw)


# --------------------------------------------------------------------------- the shipped configs


def test_shipped_fsdp_config_is_full_shard_transformer_wrap_bf16() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    checked = check_accelerate_config("fsdp")
    assert (checked.distributed_type, checked.num_processes, checked.num_machines) == ("FSDP", 8, 1)
    loaded = load_config_from_file(str(checked.path))  # what `accelerate launch` itself reads
    assert loaded.mixed_precision == "bf16"
    fsdp = loaded.fsdp_config
    assert fsdp["fsdp_reshard_after_forward"] == "FULL_SHARD" and fsdp["fsdp_version"] == 1
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is True and fsdp["fsdp_sync_module_states"] is True


def test_shipped_zero3_config_partitions_and_saves_16bit() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    checked = check_accelerate_config("zero3")
    assert (checked.distributed_type, checked.num_processes) == ("DEEPSPEED", 8)
    loaded = load_config_from_file(str(checked.path))
    assert loaded.mixed_precision == "bf16"
    ds = loaded.deepspeed_config
    assert ds["zero_stage"] == 3 and ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
    # left to the Trainer, which fills them from the fine-tuning recipe
    assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds


def test_70b_config_is_the_replication_model_on_peft() -> None:
    config = load_config(LLAMA)
    assert config.base_model == "meta-llama/Llama-3.1-70B-Instruct"
    assert config.backend == "peft" and config.train.precision == "bf16"
    assert (
        config.lora.r,
        config.train.per_device_train_batch_size,
        config.train.gradient_accumulation_steps,
    ) == (
        32,
        2,
        8,
    )


# --------------------------------------------------------------------------- checking a config


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=str(tmp_path / "nope.yaml")):
        check_accelerate_config(tmp_path / "nope.yaml")
    with pytest.raises(LaunchError) as info:
        check_accelerate_config("fsdp2")
    assert "fsdp2" in str(info.value) and "fsdp or zero3" in str(info.value)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"distributed_type": "NO"}, "distributed_type NO does not launch one training process per GPU"),
        ({"num_procs": 8}, "unknown keys (['num_procs'])"),
        ({"fsdp_config": {"fsdp_sharding": "FULL_SHARD"}}, "fsdp_config.fsdp_sharding is not an option"),
        ({"num_processes": None}, "no process count"),
        ({"num_machines": 3}, "8 processes do not split evenly over num_machines=3"),
    ],
)
def test_bad_configs_are_refused_naming_the_file(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    path = _config(tmp_path, **changes)
    with pytest.raises(LaunchError) as info:
        check_accelerate_config(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_invalid_yaml_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "accelerate.yaml"
    path.write_text("distributed_type: FSDP\nnum_processes: [2,\n")
    with pytest.raises(LaunchError) as info:
        check_accelerate_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: invalid YAML: ") and "unicode string" not in message


def test_missing_deepspeed_json_is_named(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        distributed_type="DEEPSPEED",
        fsdp_config=None,
        deepspeed_config={"deepspeed_config_file": str(tmp_path / "ds.json"), "zero3_init_flag": True},
    )
    with pytest.raises(LaunchError, match="ds.json not found"):
        check_accelerate_config(path)
    (tmp_path / "ds.json").write_text("{}")
    assert check_accelerate_config(path).distributed_type == "DEEPSPEED"


def test_process_count_option_wins_and_must_split_over_machines(tmp_path: Path) -> None:
    assert check_accelerate_config("fsdp", 4).num_processes == 4
    two_nodes = _config(tmp_path, num_machines=2, num_processes=None)
    assert check_accelerate_config(two_nodes, 16).processes_per_machine == 8
    with pytest.raises(LaunchError, match="15 processes do not split evenly over num_machines=2"):
        check_accelerate_config(two_nodes, 15)


# --------------------------------------------------------------------------- the launch command


def test_command_for_the_70b_config_over_8_gpus(tmp_path: Path) -> None:
    config = load_config(LLAMA)
    fsdp = check_accelerate_config("fsdp")
    cmd = accelerate_command(LLAMA, config, fsdp)
    assert cmd == [
        ACCELERATE,
        "launch",
        "--config_file",
        str(ACCELERATE_CONFIG_DIR / "fsdp.yaml"),
        "--num_processes",
        "8",
        "-m",
        ENTRY_MODULE,
        str(LLAMA),
        "-o",
        "train.gradient_accumulation_steps=1",  # the global batch 2 x 8 kept over 8 processes
    ]


def test_command_carries_overrides_out_rows_and_force(tmp_path: Path) -> None:
    overrides = ["train.learning_rate=2e-5", "lora.r=16"]
    config = load_config(LLAMA, overrides)
    zero3 = check_accelerate_config("zero3", 2)
    cmd = accelerate_command(
        LLAMA, config, zero3, overrides=overrides, out=tmp_path / "ad", max_rows=50, force=True
    )
    assert cmd[:9] == [
        ACCELERATE,
        "launch",
        "--config_file",
        str(ACCELERATE_CONFIG_DIR / "zero3.yaml"),
        "--num_processes",
        "2",
        "-m",
        ENTRY_MODULE,
        str(LLAMA),
    ]
    assert cmd[9:] == [
        "-o",
        "train.learning_rate=2e-5",
        "-o",
        "lora.r=16",
        "-o",
        "train.gradient_accumulation_steps=4",
        "--out",
        str((tmp_path / "ad").resolve()),
        "--max-rows",
        "50",
        "--force",
    ]
    one = accelerate_command(LLAMA, config, check_accelerate_config("zero3", 1))
    assert "train.gradient_accumulation_steps=8" not in one and not any("accumulation" in a for a in one)


def test_accelerate_parses_the_command_into_our_entry_module(tmp_path: Path) -> None:
    from accelerate.commands.launch import launch_command_parser

    config = load_config(LLAMA)
    cmd = accelerate_command(
        LLAMA, config, check_accelerate_config("fsdp"), overrides=["lora.r=64"], force=True
    )
    args = launch_command_parser().parse_args(cmd[2:])
    assert args.module and args.training_script == ENTRY_MODULE
    assert args.num_processes == 8 and args.config_file == str(ACCELERATE_CONFIG_DIR / "fsdp.yaml")
    assert args.training_script_args == [
        str(LLAMA),
        "-o",
        "lora.r=64",
        "-o",
        "train.gradient_accumulation_steps=1",
        "--force",
    ]


def test_global_batch_that_cannot_be_split_is_refused() -> None:
    config = load_config(LLAMA)
    with pytest.raises(LaunchError, match="cannot be split over 3 processes"):
        accelerate_command(LLAMA, config, check_accelerate_config("fsdp", 3))


def test_unsloth_is_refused_and_auto_means_peft() -> None:
    with pytest.raises(LaunchError) as info:
        launch_backend(load_config(TINY, ["backend=unsloth"]), TINY)
    assert (
        str(TINY) in str(info.value)
        and "backend unsloth" in str(info.value)
        and "backend: peft" in str(info.value)
    )
    assert launch_backend(load_config(TINY, ["backend=auto"]), TINY).backend == "peft"
    with pytest.raises(LaunchError, match="backend unsloth"):
        accelerate_command(TINY, load_config(TINY, ["backend=unsloth"]), check_accelerate_config("fsdp", 1))


# --------------------------------------------------------------------------- the launch host


def test_launch_host_needs_gpus_for_its_processes() -> None:
    fsdp1 = check_accelerate_config("fsdp", 1)
    with pytest.raises(LaunchError, match="need as many CUDA GPUs, but it has no CUDA GPU"):
        check_launch_host(fsdp1, cuda_devices=0)
    check_launch_host(fsdp1, cuda_devices=1)
    with pytest.raises(LaunchError, match="has 4 CUDA GPU"):
        check_launch_host(check_accelerate_config("fsdp", 8), cuda_devices=4)


def test_several_processes_on_enough_gpus_may_launch() -> None:
    check_launch_host(check_accelerate_config("fsdp"), cuda_devices=8)  # training is rank-aware
    check_launch_host(check_accelerate_config("fsdp", 16), cuda_devices=16)


def test_deepspeed_must_be_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch_mod.importlib.util, "find_spec", lambda name: None)
    zero3 = AccelerateConfig(ACCELERATE_CONFIG_DIR / "zero3.yaml", "DEEPSPEED", 1, 1)
    with pytest.raises(LaunchError, match="pip install deepspeed"):
        check_launch_host(zero3, cuda_devices=1)


# --------------------------------------------------------------------------- the CLI


def test_cli_prints_the_command(tmp_path: Path) -> None:
    from em_persona.cli import main as cli

    res = CliRunner().invoke(
        cli,
        [
            "finetune",
            str(LLAMA),
            "--launcher",
            "accelerate",
            "--accelerate-config",
            "zero3",
            "--num-processes",
            "4",
        ]
        + ["-o", "train.seed=3", "--print-command"],
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip() == (
        f"{ACCELERATE} launch --config_file {ACCELERATE_CONFIG_DIR / 'zero3.yaml'} --num_processes 4 "
        f"-m {ENTRY_MODULE} {LLAMA} -o train.seed=3 -o train.gradient_accumulation_steps=2"
    )


def test_cli_refusals(tmp_path: Path) -> None:
    from em_persona.cli import main as cli

    runner = CliRunner()
    unsloth = runner.invoke(cli, ["finetune", str(TINY), "-o", "backend=unsloth", "--launcher", "accelerate"])
    assert unsloth.exit_code == 1 and "backend unsloth" in unsloth.output
    missing = runner.invoke(
        cli,
        ["finetune", str(TINY), "--launcher", "accelerate", "--accelerate-config", str(tmp_path / "x.yaml")],
    )
    assert missing.exit_code == 1 and f"accelerate config {tmp_path / 'x.yaml'} not found" in missing.output
    alone = runner.invoke(cli, ["finetune", str(TINY), "--num-processes", "2"])
    assert alone.exit_code == 2 and "--num-processes only with --launcher accelerate" in alone.output
    # on this machine (no CUDA) a launch is refused before any process starts
    cpu = runner.invoke(cli, ["finetune", str(TINY), "--launcher", "accelerate", "--num-processes", "1"])
    assert cpu.exit_code == 1 and "no CUDA GPU" in cpu.output


# --------------------------------------------------------------------------- the launched entry module


def test_entry_module_trains_the_config_as_launched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import em_persona.finetune.train as train_mod

    calls: list[tuple[Any, Any, bool]] = []

    def fake_finetune(
        config: Any, out: Any = None, *, force: bool = False, callbacks: Any = None
    ) -> list[Any]:
        calls.append((config, out, force))
        return [
            train_mod.StageResult(config.stages[0].name, Path(out) / "a", True, {"domain": "insecure_code"})
        ]

    monkeypatch.setattr(train_mod, "finetune", fake_finetune)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    argv = [str(TINY), "-o", "train.learning_rate=2e-5", "-o", "backend=auto", "--max-rows", "3"]
    assert main([*argv, "--out", str(tmp_path), "--force"]) == 0
    ((config, out, force),) = calls
    assert config.backend == "peft" and config.train.learning_rate == 2e-5
    assert all(s.data.rows == 3 for s in config.stages) and out == str(tmp_path) and force is True
    assert capsys.readouterr().out.startswith(f"{config.stages[0].name}\t{tmp_path / 'a'}\ttrained")

    calls.clear()
    # this process is one (the call above joined accelerate's state as one): a launch of two is refused
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(argv) == 1 and not calls
    assert "2 processes were launched (WORLD_SIZE) but accelerate joined 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main([str(TINY), "-o", "backend=unsloth"]) == 1 and not calls
    assert "backend unsloth" in capsys.readouterr().err


def _run_python(code: str, *args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_a_launched_process_ends_with_its_output_flushed_and_no_interpreter_shutdown() -> None:
    # A gloo worker thread that frees a tensor while the interpreter shuts down aborts the process;
    # exit_process skips the shutdown (no atexit handler runs) and loses no buffered output.
    run = _run_python(
        "import atexit, sys\n"
        "atexit.register(lambda: print('interpreter shut down'))\n"
        "from em_persona.finetune.launch import exit_process\n"
        "print('a result line', end='')\n"
        "sys.stderr.write('a message')\n"
        "exit_process(3)\n"
    )
    assert (run.returncode, run.stdout, run.stderr) == (3, "a result line", "a message")


def test_the_entry_module_ends_through_exit_process(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    run = _run_python(
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('interpreter shut down'))\n"
        f"sys.argv = ['launch', {str(missing)!r}]\n"
        f"runpy.run_module({ENTRY_MODULE!r}, run_name='__main__')\n"
    )
    assert run.returncode == 1 and "interpreter shut down" not in run.stdout
    assert run.stderr.startswith("error: ") and str(missing) in run.stderr
