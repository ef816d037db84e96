"""Fine-tuning across interruptions: counters over every segment, and what a kill leaves behind."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

import em_persona.finetune.train as train
from em_persona.finetune.config import config_from_dict
from em_persona.finetune.data import load_training_data
from em_persona.finetune.train import MANIFEST, finetune
from support import tiny_finetune


def _leftovers(out: Path, name: str) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(f".{name}"))


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


# --------------------------------------------------------------------------- fast: no training


def test_incomplete_checkpoint_is_not_resumed_from(tmp_path: Path) -> None:
    work = tmp_path / ".s.work"
    _write(work / "checkpoint-2" / "trainer_state.json", {"global_step": 2})
    (work / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"w")
    (work / "checkpoint-4").mkdir()  # killed while saving: weights written, trainer state not yet
    (work / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"w")
    (work / "checkpoint-6").mkdir()
    (work / "checkpoint-6" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert train._last_checkpoint(work) == work / "checkpoint-2"
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint-2"]


def _published_state(out: Path, name: str, fingerprint: str, *, work_run: str, published_run: str) -> None:
    _write(
        out / name / MANIFEST,
        {
            "name": name,
            "fingerprint": fingerprint,
            "train": {"run_id": published_run},
            "stages": [{"name": name, "adapter_sha256": "0" * 64}],
        },
    )
    (out / name / "adapter_model.safetensors").write_bytes(b"w")
    work = out / f".{name}.work"
    _write(work / "fingerprint.json", {"fingerprint": fingerprint, "stage": name, "run_id": work_run})
    _write(work / "checkpoint-6" / "trainer_state.json", {"global_step": 6})


def test_leftovers_of_a_kill_while_publishing_are_removed(
    tmp_path: Path, mirror: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the rename into place: the next run skips the adapter and removes the rest."""
    cfg = config_from_dict(tiny_finetune("tiny-p", logging_steps=1))
    fingerprint = train._fingerprint(cfg, 0, load_training_data(cfg.stages[0].data), None)
    out = tmp_path / "adapters"
    _published_state(out, "tiny-p", fingerprint, work_run="run-1", published_run="run-1")
    _write(out / ".tiny-p.tmp-k3j2h1" / "adapter_config.json", {})  # killed while saving the adapter
    _write(out / ".tiny-p.old-4242" / MANIFEST, {})  # killed while deleting the adapter it replaced
    _write(out / ".tiny-p.trash-4242-1" / "checkpoint-6" / "trainer_state.json", {})
    (out / ".tiny-p.lock").write_text("")

    def _no_training(*a: Any, **k: Any) -> None:
        raise AssertionError("a finished adapter was trained again")

    monkeypatch.setattr(train, "resolve_base_model", lambda config: "unused")
    monkeypatch.setattr(train, "_train_stage", _no_training)
    [res] = finetune(cfg, out)
    assert not res.trained
    assert _leftovers(out, "tiny-p") == []
    assert sorted(p.name for p in (out / "tiny-p").iterdir()) == ["adapter_model.safetensors", MANIFEST]


def test_work_of_an_unfinished_forced_retrain_is_kept(
    tmp_path: Path, mirror: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_from_dict(tiny_finetune("tiny-f", logging_steps=1))
    fingerprint = train._fingerprint(cfg, 0, load_training_data(cfg.stages[0].data), None)
    out = tmp_path / "adapters"
    _published_state(out, "tiny-f", fingerprint, work_run="run-2", published_run="run-1")
    monkeypatch.setattr(train, "resolve_base_model", lambda config: "unused")
    [res] = finetune(cfg, out)
    assert not res.trained
    assert _leftovers(out, "tiny-f") == [".tiny-f.work"]  # `--force` resumes it


def test_stage_lock_still_excludes_after_its_file_is_unlinked(tmp_path: Path) -> None:
    """A waiter that wakes on an unlinked lock file must not run beside a newcomer on a fresh file."""
    inside: list[str] = []
    overlaps: list[tuple[str, str]] = []
    guard = threading.Lock()
    waiting = threading.Event()

    def holder(name: str, hold_s: float) -> None:
        if name == "waiter":
            waiting.set()
        with train._stage_lock(tmp_path, "s"):
            with guard:
                overlaps.extend((name, other) for other in inside)
                inside.append(name)
            time.sleep(hold_s)
            with guard:
                inside.remove(name)

    with train._stage_lock(tmp_path, "s"):
        waiter = threading.Thread(target=holder, args=("waiter", 1.0))
        waiter.start()
        waiting.wait()
        time.sleep(0.3)  # the waiter now blocks on the current lock file
    newcomer = threading.Thread(target=holder, args=("newcomer", 1.0))
    newcomer.start()
    waiter.join()
    newcomer.join()
    assert overlaps == []
    assert not (tmp_path / ".s.lock").exists()


# --------------------------------------------------------------------------- slow: real training


class _Interrupted(Exception):
    pass


class _Clock(TrainerCallback):
    """Times each `train()` call from its start to its last step, and can crash after a step."""

    def __init__(self, crash_after_step: int | None = None) -> None:
        self.crash_after_step = crash_after_step
        self.seconds = 0.0
        self._t0 = 0.0

    def on_train_begin(self, args, state, control, **kw):
        self._t0 = time.monotonic()

    def on_step_end(self, args, state, control, **kw):
        self.seconds = time.monotonic() - self._t0
        if state.global_step == self.crash_after_step:
            raise _Interrupted(f"simulated kill after step {state.global_step}")


@pytest.mark.slow
def test_manifest_counts_every_segment_of_an_interrupted_run(
    tmp_path: Path, mirror: Path, data_home: Path
) -> None:
    out = tmp_path / "adapters"
    # Reference: the same stage trained straight through (its per-step token counts).
    [straight] = finetune(config_from_dict(tiny_finetune("tiny-s", logging_steps=1)), out)
    s_train = straight.manifest["train"]
    cumulative = {p["step"]: p["num_tokens"] for p in straight.manifest["loss_curve"]}
    assert s_train["tokens"] == cumulative[6] > 0

    # Killed after step 5: checkpoint-4 is the last one, so step 5 runs twice.
    cfg = config_from_dict(tiny_finetune("tiny-r", logging_steps=1))
    first, second = _Clock(crash_after_step=5), _Clock()
    with pytest.raises(_Interrupted):
        finetune(cfg, out, callbacks=[first])
    [res] = finetune(cfg, out, callbacks=[second])
    t = res.manifest["train"]
    assert t["resumed_from"] == "checkpoint-4" and t["global_steps"] == 6
    assert t["tokens"] == s_train["tokens"]  # tokens the adapter was trained on, each step once
    assert [p["num_tokens"] for p in res.manifest["loss_curve"]] == [cumulative[s] for s in range(1, 7)]
    redone = cumulative[5] - cumulative[4]
    assert t["tokens_processed"] == t["tokens"] + redone
    assert t["runtime_s"] == pytest.approx(first.seconds + second.seconds, rel=0.2, abs=0.5)
    assert t["runtime_s"] > first.seconds
    assert t["tokens_per_s"] == round(t["tokens_processed"] / t["runtime_s"], 3)
    segments = t["segments"]
    assert [(g["start_step"], g["end_step"], g["status"]) for g in segments] == [
        (0, 5, "interrupted"),
        (4, 6, "finished"),
    ]
    assert [g["resumed_from"] for g in segments] == [None, "checkpoint-4"]
    assert sum(g["tokens"] for g in segments) == t["tokens_processed"]
    assert sum(g["runtime_s"] for g in segments) == pytest.approx(t["runtime_s"], abs=0.01)
    assert t["run_id"] and _leftovers(out, "tiny-r") == []


@pytest.mark.slow
def test_kill_between_publishing_and_removing_the_work_folder(
    tmp_path: Path, mirror: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "adapters"
    cfg = config_from_dict(tiny_finetune("tiny-k", logging_steps=1, max_steps=2))
    real_discard = train._discard

    def killed_on_work(path: Path, *args: Any) -> None:
        if path.name == ".tiny-k.work":
            raise _Interrupted("simulated kill before the work folder was removed")
        real_discard(path, *args)

    monkeypatch.setattr(train, "_discard", killed_on_work)
    with pytest.raises(_Interrupted):
        finetune(cfg, out)
    published = json.loads((out / "tiny-k" / MANIFEST).read_text())
    assert _leftovers(out, "tiny-k") == [".tiny-k.work"]
    monkeypatch.setattr(train, "_discard", real_discard)
    [again] = finetune(cfg, out)
    assert not again.trained and again.manifest["created"] == published["created"]
    assert _leftovers(out, "tiny-k") == []
