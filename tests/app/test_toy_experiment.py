"""Adding an experiment is one task and its declaration: a toy experiment defined only in this test
goes through the experiment file, the plan, the pipeline's eval stage, the log reader and the report,
and nothing in the toolkit names it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import GenerateConfig, ModelOutput
from inspect_ai.scorer import includes
from inspect_ai.solver import generate

import em_persona.app.pipeline as pipeline
from em_persona.analysis.report import build, write
from em_persona.app.experiment import load_experiment
from em_persona.app.pipeline import run_independent_tasks
from em_persona.app.plan import plan
from em_persona.contract.declarations import (
    AggregateOptions,
    Args,
    Calls,
    LogInput,
    LogRows,
    Results,
    TaskSpec,
    ci_columns,
    model_groups,
)
from em_persona.tasks.registry import register, specs, unregister
from support import mock_model, mock_output, write_yaml

WORDS = ["apple", "river", "candle", "violin"]


@task
def toy_echo(epochs: int = 1, max_tokens: int = 8) -> Task:
    """Ask the model to say a word; it scores when the answer contains it."""
    samples = [Sample(id=f"w{i}", input=f"Say the word {w}.", target=w) for i, w in enumerate(WORDS)]
    return Task(
        dataset=MemoryDataset(samples),
        solver=generate(),
        scorer=includes(),
        epochs=epochs,
        config=GenerateConfig(max_tokens=max_tokens),
    )


def toy_rows(log: LogInput) -> LogRows:
    rows = [
        {
            "model": log.model,
            "sample_id": str(s.id),
            "epoch": int(s.epoch),
            "hit": 1.0 if next(iter((s.scores or {}).values())).value == "C" else 0.0,
            "log": log.file.name,
        }
        for s in log.summaries()
    ]
    return LogRows(tables={"toy": rows})


def toy_metrics(tables: Mapping[str, pd.DataFrame], opts: AggregateOptions) -> Results:
    toy = tables["toy"]
    if toy.empty:
        return Results()
    return Results(per_model=ci_columns("toy_hit", model_groups(toy, "hit"), opts))


def toy_calls(args: Args) -> Calls:
    return Calls(generations=1)


TOY = TaskSpec(
    name="toy_echo",
    task=toy_echo,
    tables={"toy": ("model", "sample_id", "epoch", "hit", "log")},
    rows=toy_rows,
    metrics=toy_metrics,
    calls=toy_calls,
    headline=("toy_hit",),
    columns={"toy_hit": "toy: fraction of answers that say the word"},
)


@pytest.fixture
def toy() -> Iterator[TaskSpec]:
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


def _answers(model: str) -> Any:
    """mockllm/good says the word it is asked for; mockllm/bad never does."""

    def respond(messages: Any, *_: Any) -> ModelOutput:
        word = messages[-1].text.removeprefix("Say the word ").removesuffix(".")
        return mock_output(word if model.endswith("good") else "no", model)

    return respond


def _experiment(tmp_path: Path) -> Any:
    doc = {
        "name": "toy",
        "base_model": {"name": "unused", "path": "proxy:tiny"},
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "adapters_dir": str(tmp_path / "adapters"),
        "eval": {"log_level": "error", "display": "none"},
        "tasks": [{"task": "toy_echo", "args": {"epochs": 2}, "models": ["mockllm/good", "mockllm/bad"]}],
    }
    return load_experiment(write_yaml(tmp_path / "toy.yaml", doc))


def test_unregistered_toy_is_unknown_to_experiment_files(tmp_path: Path) -> None:
    from em_persona.app.experiment import ExperimentError

    assert "toy_echo" not in specs()
    with pytest.raises(ExperimentError, match="unknown task 'toy_echo'"):
        _experiment(tmp_path)


def test_toy_experiment_end_to_end(toy: TaskSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = _experiment(tmp_path)
    # the plan counts it from its declaration: 2 models x 4 words x 2 epochs, no judge
    [row] = plan(exp)
    assert (row.models, row.samples, row.epochs, row.generations, row.judge_calls) == (2, 4, 2, 16, 0)
    # the pipeline's eval stage runs it on its models
    monkeypatch.setattr(pipeline, "_model", lambda exp, name, base_url: mock_model(_answers(name), name))
    statuses = run_independent_tasks(exp, "http://127.0.0.1:9/v1")
    assert [(s.unit.model, s.state) for s in statuses] == [("mockllm/good", "done"), ("mockllm/bad", "done")]
    # the report reads its logs through its declaration and shows its headline number and a figure
    report = build(exp.log_dir)
    assert report.per_model.loc["mockllm/good", "toy_hit"] == 1.0
    assert report.per_model.loc["mockllm/bad", "toy_hit"] == 0.0
    assert set(report.headline.query("metric == 'toy_hit'")["model"]) == {"mockllm/good", "mockllm/bad"}
    assert report.coverage.set_index("model").loc["mockllm/good", "toy_echo"] == 8
    assert report.logs["used"].all() and set(report.logs["task"]) == {"toy_echo"}
    paths = write(report, tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "toy_echo_headline.png").is_file()
    assert "toy_hit" in paths["md"].read_text()
