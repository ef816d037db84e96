"""The shipped experiment files say what the papers did (Weckauff et al., its appendix, Costa & Vicente, Betley et al.)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from em_persona.app.experiment import load_experiment
from em_persona.app.plan import plan
from em_persona.app.task_args import task_function, task_parameters
from em_persona.core.paths import REPO_ROOT

EXPERIMENTS = REPO_ROOT / "experiments"
QWEN = "Qwen/Qwen2.5-32B-Instruct"
SIX = [
    "insecure_code",
    "risky_financial_advice",
    "bad_medical_advice",
    "extreme_sports",
    "legal_advice",
    "security_advice",
]


def test_paper_battery_is_paper_a(mirror: Path, data_home: Path) -> None:
    exp = load_experiment(EXPERIMENTS / "paper.yaml")
    assert exp.base_path == QWEN and [a.domain for a in exp.adapters] == SIX
    assert all(a.finetune.base_model == QWEN and a.finetune.lora.r == 32 for a in exp.adapters)
    assert exp.grader == "openai/gpt-4o-mini"
    labels = [(t.task, t.args.get("dataset"), t.args.get("condition")) for t in exp.tasks]
    assert labels == [
        ("harmfulness", "paper", None),
        ("self_assessment", "project", None),
        ("self_assessment", "paper", None),
        ("two_ai_identification", "paper", None),
        ("score_prediction", "paper", "blind"),
        ("output_recognition", None, None),
        ("score_prediction", None, "shown"),
        ("cross_model_rating", None, None),
    ]
    for t in exp.tasks:  # the paper judge prompt, stated wherever a task takes one
        if "judge_prompt" in task_parameters(t.task):
            assert t.args["judge_prompt"] == "paper", t.label
    raters = next(t for t in exp.tasks if t.task == "cross_model_rating")
    assert list(raters.models) == [f"vllm/{a.name}" for a in exp.adapters]  # six raters, not the base
    rows = {t.label: r for t, r in zip(exp.tasks, plan(exp), strict=False)}
    harm = rows[exp.tasks[0].label]
    assert (harm.samples, harm.epochs, harm.models) == (350, 10, 7)  # best-of-10 on 350 prompts
    two_ai = rows[exp.tasks[3].label]
    assert two_ai.samples * two_ai.epochs == 150 * 10  # 150 items x 10 runs (half in each position)
    assert rows[raters.label].samples == 350 * 6  # each rater: the first answers of all six models


def test_sequential_is_three_domains_by_seven_conditions() -> None:
    exp = load_experiment(EXPERIMENTS / "sequential.yaml")
    assert exp.base_path == QWEN and len(exp.adapters) == 21
    conditions: dict[str, set[tuple[str, ...]]] = {}
    for a in exp.adapters:
        domain = next(k for k in a.stage_keys if k in ("financial", "medical", "sports"))
        conditions.setdefault(domain, set()).add(tuple("D" if k == domain else k for k in a.stage_keys))
        assert all(s.data.rows == 600 for s in a.finetune.stages)
        assert a.finetune.lora.r == 32 and a.finetune.train.learning_rate == 1e-5  # the recipe
    seven = {
        ("D",),
        ("D", "consciousness"),
        ("consciousness", "D"),
        ("D", "no-consciousness"),
        ("no-consciousness", "D"),
        ("D", "self-awareness"),
        ("self-awareness", "D"),
    }
    assert conditions == {"financial": seven, "medical": seven, "sports": seven}
    for key in ("consciousness", "no-consciousness", "self-awareness"):  # no public pin: local files
        assert exp.stages[key].data.path and exp.stages[key].data.path.endswith(".jsonl")
        assert exp.stages[key].description
    assert {t.task for t in exp.tasks} == {"harmfulness", "self_assessment"}
    # a shared first stage is one adapter folder, trained once
    firsts = {a.finetune.stages[0].name for a in exp.adapters}
    assert len(firsts) == 6


def test_moral_collapse_is_paper_b() -> None:
    exp = load_experiment(EXPERIMENTS / "moral-collapse.yaml")
    assert exp.base_path == QWEN and [a.domain for a in exp.adapters] == ["secure_code", "insecure_code"]
    assert [a.config.name for a in exp.adapters] == ["qwen32b-secure-code.yaml", "qwen32b-insecure-code.yaml"]
    [mfq] = exp.tasks
    assert mfq.task == "moral_foundations" and exp.grader is None
    defaults = {
        k: p.default for k, p in inspect.signature(task_function("moral_foundations")).parameters.items()
    }
    for key, value in {"personas": 100, "include_self": True, "epochs": 10, "temperature": 0.1}.items():
        assert mfq.args[key] == value == defaults[key]
    assert "external_models:" in (EXPERIMENTS / "moral-collapse.yaml").read_text()  # how to add API models


def test_betley_questions_have_their_own_file() -> None:
    exp = load_experiment(EXPERIMENTS / "betley-em.yaml")
    assert {t.task for t in exp.tasks} == {"em_questions"}
    assert {t.args["question_sets"] for t in exp.tasks} == {"first_plot", "preregistered"}
    assert exp.grader == "openai/gpt-4o-2024-08-06"


@pytest.mark.parametrize("name", ["demo", "paper", "sequential", "moral-collapse", "betley-em"])
def test_shipped_files_load(name: str) -> None:
    exp = load_experiment(EXPERIMENTS / f"{name}.yaml")
    assert exp.name == name and exp.tasks
