"""The plan's cost of API models: tokens x the price per million tokens from an editable price file
(shipped datasets/prices.yaml, $EM_PERSONA_PRICES, or the experiment's `prices:`); unknown prices
and malformed files are named with file and line; local models cost nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import em_persona.app.plan as planning
from em_persona.app.estimates import Rates, estimate
from em_persona.app.experiment import ExperimentError, load_experiment
from em_persona.app.preflight import NO_KEY
from em_persona.app.prices import (
    DEFAULT_PRICES,
    LOCAL_PROVIDERS,
    PRICES_ENV,
    PriceError,
    Usage,
    costs,
    load_prices,
    prices_path,
)
from em_persona.cli import main
from support import line_of

HARM = {"dataset": "mini", "epochs": 1, "max_tokens": 12, "judge_prompt": "project"}
OWN_PRICES = """\
# my negotiated prices
openai/judge-x:
  input_usd_per_mtok: 1000.0
  output_usd_per_mtok: 3000.0
  as_of: "2025-06"
  source: https://example.com/pricing
"""


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")  # the preflight checks credentials of API models
    monkeypatch.delenv(PRICES_ENV, raising=False)


def _experiment(tmp_path: Path, **extra: Any) -> Path:
    doc = {
        "name": "cost",
        "base_model": {"name": "cost-base", "path": "proxy:tiny"},
        "grader": "openai/judge-x",
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "adapters_dir": str(tmp_path / "adapters"),
        "tasks": [
            {"task": "harmfulness", "args": HARM, "limit": 4, "models": ["mockllm/a", "openai/unknown-x"]}
        ],
        **extra,
    }
    path = tmp_path / "cost.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_shipped_prices_and_dated_model_names() -> None:
    table = load_prices(DEFAULT_PRICES)
    assert prices_path() == DEFAULT_PRICES
    mini = table.lookup("openai/gpt-4o-mini-2024-07-18")
    assert mini is not None and (mini.input_usd_per_mtok, mini.output_usd_per_mtok) == (0.15, 0.60)
    sonnet = table.lookup("anthropic/claude-3-5-sonnet-20241022")
    assert sonnet is not None and (sonnet.input_usd_per_mtok, sonnet.output_usd_per_mtok) == (3.0, 15.0)
    assert table.lookup("anthropic/claude-3-5-haiku-latest") == table.prices["anthropic/claude-3-5-haiku"]
    assert table.lookup("openai/gpt-4o-2024-08-06").output_usd_per_mtok == 10.0  # type: ignore[union-attr]
    assert table.lookup("openai/gpt-4o") is None  # no undated entry: gpt-4o versions are priced apart
    assert {p.as_of for p in table.prices.values()} == {"2025-06"}
    assert all(p.source.startswith("https://") for p in table.prices.values())
    # 2M in, 1M out of gpt-4.1: 2 x 2.00 + 1 x 8.00
    [cost] = costs(
        [Usage("openai/gpt-4.1", "grader", 2_000_000, 1_000_000), Usage("vllm/x", "evaluated", 9, 9)], table
    )
    assert cost.usd == pytest.approx(12.0)


def test_plan_cost_from_the_experiments_price_file(tmp_path: Path) -> None:
    (tmp_path / "my-prices.yaml").write_text(OWN_PRICES)
    path = _experiment(tmp_path, prices=str(tmp_path / "my-prices.yaml"))
    exp = load_experiment(path)
    [row] = planning.plan(exp)
    cost = planning.plan_cost(exp, [row], [("mockllm/a", "openai/unknown-x")])
    judge = next(c for c in cost.models if c.model == "openai/judge-x")
    expected = (row.judge_input_tokens * 1000.0 + row.judge_output_tokens * 3000.0) / 1e6
    assert judge.roles == ("grader",) and judge.usd == pytest.approx(expected) and expected > 1
    unknown = next(c for c in cost.models if c.model == "openai/unknown-x")
    assert unknown.price is None and unknown.input_tokens == row.gen_input_tokens // 2
    assert all(c.model != "mockllm/a" for c in cost.models)  # local: no cost line
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"cost       : API models, prices from {tmp_path / 'my-prices.yaml'}" in out
    assert f"= ${expected:.2f} (as of 2025-06, https://example.com/pricing)" in out
    assert f"price unknown for openai/unknown-x (evaluated): add it to {tmp_path / 'my-prices.yaml'}" in out
    assert f"total: at least ${expected:.2f}, upper bound (no price for openai/unknown-x)" in out


def test_no_cost_for_runs_already_finished_or_local_models(tmp_path: Path) -> None:
    exp = load_experiment(_experiment(tmp_path))
    rows = planning.plan(exp)
    assert planning.plan_cost(exp, rows, [()]).models == []  # every log finished: nothing to pay
    only_local = planning.plan_cost(exp, rows, [("mockllm/a",)])
    assert [c.model for c in only_local.models] == ["openai/judge-x"]  # the judge still judges mockllm/a


def test_a_malformed_price_file_is_a_preflight_problem_with_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad-prices.yaml"
    bad.write_text(OWN_PRICES.replace("output_usd_per_mtok: 3000.0", "output_usd_per_mtok: cheap"))
    monkeypatch.setenv(PRICES_ENV, str(bad))
    result = CliRunner().invoke(main, ["run", str(_experiment(tmp_path)), "--dry-run"])
    assert result.exit_code == 1, result.output
    line = line_of(bad.read_text(), "cheap")
    assert (
        f"{bad}:{line}: openai/judge-x.output_usd_per_mtok: Input should be a valid number" in result.output
    )
    assert "preflight found 1 problem(s)" in result.output


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        (
            OWN_PRICES.replace("  source: https://example.com/pricing\n", ""),
            "openai/judge-x:",
            "source: Field required",
        ),
        (OWN_PRICES.replace("source: https", "source: ftp"), "source:", "String should match pattern"),
        (
            OWN_PRICES.replace('as_of: "2025-06"', "as_of: 2025-06-01"),
            "as_of",
            "Input should be a valid string",
        ),
        (OWN_PRICES.replace("as_of", "asof"), "asof", "asof: Extra inputs are not permitted"),
        (OWN_PRICES + "judge-y: {}\n", "judge-y", "'judge-y': name models as provider/model"),
        (OWN_PRICES.replace("  input_usd", "input_usd"), "input_usd", "invalid YAML"),
        (OWN_PRICES + "openai/judge-x: {}\n", "openai/judge-x: {}", "is given twice"),
    ],
)
def test_price_file_problems_name_the_line(tmp_path: Path, text: str, needle: str, message: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(PriceError) as err:
        load_prices(path)
    line = line_of(text, needle) if "invalid YAML" not in message else None
    assert message in str(err.value)
    if line is not None:
        assert f"{path}:{line}: " in str(err.value), str(err.value)
    else:
        assert str(err.value).startswith(f"{path}:")


def test_a_missing_price_file_named_by_the_experiment_points_at_its_line(tmp_path: Path) -> None:
    path = _experiment(tmp_path, prices="no-such-prices.yaml")
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 1, result.output
    line = line_of(path.read_text(), "prices:")
    assert f"{path}:{line}: prices: no such price file" in result.output


def test_prices_key_is_checked_by_the_schema(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="prices: Input should be a valid string"):
        load_experiment(_experiment(tmp_path, prices=3))


def test_foil_generations_are_charged_to_the_foil_model(tmp_path: Path) -> None:
    """output_recognition's foil answers go to the foil role's model (eval.foil, else the grader),
    not to the evaluated model; the evaluated model pays only for its own A/B answers."""
    (tmp_path / "my-prices.yaml").write_text(
        OWN_PRICES + OWN_PRICES.replace("# my negotiated prices\n", "").replace("judge-x", "foil-x")
    )
    recog = {"max_tokens": 2, "foil_max_tokens": 40, "judge_prompt": "project"}
    tasks = [
        {"task": "harmfulness", "args": HARM, "limit": 4, "models": ["openai/eval-x"]},
        {"task": "output_recognition", "args": recog, "models": ["openai/eval-x"]},
    ]
    path = _experiment(tmp_path, tasks=tasks, prices=str(tmp_path / "my-prices.yaml"))
    harm, row = planning.plan(load_experiment(path))
    # 4 answers to recognise: one foil, one A/B answer and one judge call each
    assert (row.samples, row.generations, row.foil_calls, row.judge_calls) == (4, 8, 4, 4)
    assert row.foil == "openai/judge-x"  # no eval.foil: the grader writes the foils
    assert row.gen_output_tokens == 4 * 2 and row.foil_output_tokens == 4 * 40
    assert row.tokens == row.input_tokens + row.output_tokens
    assert row.output_tokens == row.gen_output_tokens + row.foil_output_tokens + row.judge_output_tokens
    cost = planning.plan_cost(load_experiment(path), [harm, row], [(), ("openai/eval-x",)])
    judge = next(c for c in cost.models if c.model == "openai/judge-x")
    assert judge.roles == ("grader", "foil")
    assert judge.output_tokens == row.judge_output_tokens + row.foil_output_tokens
    evaluated = next(c for c in cost.models if c.model == "openai/eval-x")
    assert (evaluated.input_tokens, evaluated.output_tokens) == (row.gen_input_tokens, 4 * 2)

    own_foil = _experiment(
        tmp_path, tasks=tasks, prices=str(tmp_path / "my-prices.yaml"), eval={"foil": "openai/foil-x"}
    )
    exp = load_experiment(own_foil)
    rows = planning.plan(exp)
    assert rows[1].foil == "openai/foil-x"
    cost = planning.plan_cost(exp, rows, [(), ("openai/eval-x",)])
    foil = next(c for c in cost.models if c.model == "openai/foil-x")
    assert foil.roles == ("foil",) and foil.output_tokens == 4 * 40
    assert foil.usd == pytest.approx((foil.input_tokens * 1000.0 + foil.output_tokens * 3000.0) / 1e6)
    judge = next(c for c in cost.models if c.model == "openai/judge-x")
    assert judge.roles == ("grader",)
    result = CliRunner().invoke(main, ["run", str(own_foil), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "grader: openai/judge-x; foil: openai/foil-x (4 of the generations)" in result.output


def test_every_locally_served_provider_is_free_and_timed_as_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: vllm-completions and nnterp were local to the preflight (no key) but not to prices, so
    the plan printed 'price unknown' for them and the estimate counted them as API models."""
    assert NO_KEY == LOCAL_PROVIDERS | {"bedrock", "sagemaker"}  # AWS models are keyless, not free
    (tmp_path / "my-prices.yaml").write_text(OWN_PRICES)
    models = ("vllm-completions/x", "nnterp/x", "openai/unknown-x")
    tasks = [{"task": "harmfulness", "args": HARM, "limit": 4, "models": list(models)}]
    exp = load_experiment(_experiment(tmp_path, tasks=tasks, prices=str(tmp_path / "my-prices.yaml")))
    [row] = planning.plan(exp)
    cost = planning.plan_cost(exp, [row], [models])
    assert [c.model for c in cost.models] == ["openai/judge-x", "openai/unknown-x"]
    planning.print_cost(cost)
    out = capsys.readouterr().out
    assert "vllm-completions" not in out and "nnterp" not in out
    assert "price unknown for openai/unknown-x (evaluated)" in out
    calibrated = Rates("calibration", overall=1.0, api_timed=False)
    [seconds] = estimate(exp, [row], [models], calibrated).rows
    assert seconds == pytest.approx(2 * row.generations / 3)  # the answers of the two local models only
