"""moral_foundations end to end with a scripted mockllm: dataset, retries, scores, S and R from the log."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
from inspect_ai import eval
from inspect_ai.model import ChatMessage, GenerateConfig, ModelOutput

from em_persona.core.registry import SourceError
from em_persona.tasks.moral_data import (
    SELF_PERSONA_ID,
    MoralDataError,
    load_mfq_items,
    mfq_dataset,
    parse_mfq_items,
    project_message,
    sample_id,
)
from em_persona.tasks.moral_foundations import moral_foundations
from em_persona.tasks.moral_metrics import samples_from_log, susceptibility_robustness
from support import mock_model, mock_output

PERSONAS = ["Persona Alpha, a lighthouse keeper", "Persona Beta, a chess coach", "Persona Gamma, a nurse"]
ITEM_MARKERS = {1: "suffered emotionally", 2: "treated differently"}
MAX_RETRIES = 2
# Per (persona, item): the answers the model gives, consumed in call order across the
# three runs (epochs) and any retries. "x..." answers have no digit 0-5 and are retried.
SCRIPT = {
    (0, 1): ["1 - not very", "3 somewhat", "x", "no digits here", "nothing"],  # 3rd run fails 3 times
    (1, 1): ["2", "2", "2"],
    (2, 1): ["4", "5", "hmm", "unsure", "pass"],  # 3rd run fails 3 times
    (0, 2): ["0", "0", "3"],
    (1, 2): ["5", "5", "5"],
    (2, 2): ["3", "I would rather not say", "4", "3"],  # one run succeeds on its retry
}
SELF_ANSWER = "5. Speaking for myself."
# Parsed ratings per cell:
#   item 1: {1, 3} mu 2, sigma sqrt(2); {2, 2, 2} mu 2, sigma 0; {4, 5} mu 4.5, sigma sqrt(1/2)
#   item 2: {0, 0, 3} mu 1, sigma sqrt(3); {5, 5, 5} mu 5, sigma 0; {3, 4, 3} mu 10/3, sigma 1/sqrt(3)
# S item 1: mus 2, 2, 4.5 -> std 5/sqrt(12)
# S item 2: mus 1, 5, 10/3 -> mean 28/9, ss 654/81, var 327/81 -> std sqrt(327)/9
EXPECTED_S = (5 / math.sqrt(12) + math.sqrt(327) / 9) / 2
EXPECTED_R = 6 / (math.sqrt(2) + 0 + math.sqrt(0.5) + math.sqrt(3) + 0 + 1 / math.sqrt(3))


def scripted_model():
    calls: dict[tuple[int, int], int] = defaultdict(int)

    def respond(
        messages: list[ChatMessage], tools: object, tool_choice: object, config: GenerateConfig
    ) -> ModelOutput:
        text = messages[-1].text
        item = next(q for q, marker in ITEM_MARKERS.items() if marker in text)
        persona = next((i for i, p in enumerate(PERSONAS) if p in text), SELF_PERSONA_ID)
        if persona == SELF_PERSONA_ID:
            return mock_output(SELF_ANSWER)
        answers = SCRIPT[(persona, item)]
        answer = answers[calls[(persona, item)]]
        calls[(persona, item)] += 1
        return mock_output(answer)

    return mock_model(respond), calls


@pytest.fixture
def persona_file(tmp_path: Path) -> Path:
    path = tmp_path / "personas.json"
    path.write_text(json.dumps(PERSONAS))
    return path


def test_dataset_shape_ids_and_prompts(mirror: Path, data_home: Path, persona_file: Path) -> None:
    ds = mfq_dataset(personas=2, persona_source=str(persona_file), include_self=True)
    assert len(ds) == 3 * 30
    ids = [s.id for s in ds]
    assert ids[0] == "p000-q01" and ids[29] == "p000-q30" and ids[30] == "p001-q01"
    assert ids[-1] == "self-q30" and len(set(ids)) == len(ids)
    first, self_sample = ds[0], ds[-1]
    assert PERSONAS[0] in first.input and "0 to 5" in first.input
    assert first.metadata == {
        "persona_id": 0,
        "persona": PERSONAS[0],
        "condition": "persona",
        "question_id": 1,
        "item_type": "relevance",
        "foundation": "Harm/Care",
        "item": "Whether or not someone suffered emotionally",
    }
    assert self_sample.metadata["persona_id"] == SELF_PERSONA_ID
    assert self_sample.metadata["condition"] == "self" and self_sample.metadata["item_type"] == "agreement"
    assert "persona" not in self_sample.input.lower()
    assert "strongly agree" in self_sample.input and "extremely relevant" not in self_sample.input
    no_self = mfq_dataset(personas=2, persona_source=str(persona_file), include_self=False, questions=[3, 16])
    assert [s.id for s in no_self] == ["p000-q03", "p000-q16", "p001-q03", "p001-q16"]


def test_paper_personas_are_the_pinned_list(mirror: Path, data_home: Path) -> None:
    ds = mfq_dataset(personas=2, questions=[1])
    pinned = json.loads((mirror / "moral-metrics" / "personas.json").read_text())
    assert [s.metadata["persona"] for s in ds][:2] == pinned[:2]
    assert [s.id for s in ds] == ["p000-q01", "p001-q01", "self-q01"]


def test_bad_inputs(mirror: Path, data_home: Path, tmp_path: Path, persona_file: Path) -> None:
    with pytest.raises(MoralDataError, match="unknown MFQ item ids"):
        mfq_dataset(personas=1, persona_source=str(persona_file), questions=[31])
    with pytest.raises(MoralDataError, match="holds 3"):
        mfq_dataset(personas=4, persona_source=str(persona_file))
    broken = tmp_path / "broken.json"
    broken.write_text('["ok",\n oops]')
    with pytest.raises(MoralDataError, match=r"broken.json:2"):
        mfq_dataset(personas=1, persona_source=str(broken))
    with pytest.raises(MoralDataError, match="unknown type"):
        project_message({"id": 1, "type": "likert", "text": "x"}, None)
    with pytest.raises(MoralDataError, match="prompt_style must be one of"):
        mfq_dataset(personas=1, persona_source=str(persona_file), prompt_style="papers")
    with pytest.raises(MoralDataError, match="epochs must be a positive integer"):
        moral_foundations(personas=1, persona_source=str(persona_file), epochs=0)
    assert sample_id(7, 12) == "p007-q12" and sample_id(SELF_PERSONA_ID, 3) == "self-q03"


def test_end_to_end_s_and_r_from_log(
    mirror: Path, data_home: Path, log_dir: Path, persona_file: Path
) -> None:
    model, calls = scripted_model()
    task = moral_foundations(
        personas=3,
        persona_source=str(persona_file),
        include_self=True,
        epochs=3,
        max_retries=MAX_RETRIES,
        questions=[1, 2],
    )
    [log] = eval(task, model=model, log_dir=str(log_dir))
    assert log.status == "success"
    assert dict(calls) == {
        cell: len(answers) for cell, answers in SCRIPT.items()
    }  # every scripted answer used

    # Inspect's own metric: mean over samples of the per-sample mean of parsed epochs.
    per_sample_means = [2, 2, 4.5, 1, 5, 10 / 3, 5, 5]
    [score] = log.results.scores
    assert score.name == "mfq_rating"
    assert score.metrics["mean"].value == pytest.approx(sum(per_sample_means) / 8)

    df = samples_from_log(log_dir)
    assert len(df) == (3 * 2 + 2) * 3
    assert set(df["model"]) == {"mockllm/model"} and set(df["run_index"]) == {1, 2, 3}
    persona_rows = df[df.persona_id != SELF_PERSONA_ID]
    failures = persona_rows.groupby(["persona_id", "question_id"])["failures"].sum().to_dict()
    assert failures == {(0, 1): 3, (1, 1): 0, (2, 1): 3, (0, 2): 0, (1, 2): 0, (2, 2): 1}
    assert persona_rows["rating"].isna().sum() == 2  # the two runs that never parsed
    assert set(df[df.persona_id == SELF_PERSONA_ID]["rating"]) == {5.0}
    assert set(df[df.persona_id == SELF_PERSONA_ID]["condition"]) == {"self"}

    res = susceptibility_robustness(df, by_foundation=True)
    assert res.loc["all", "S"] == pytest.approx(EXPECTED_S)
    assert res.loc["all", "R"] == pytest.approx(EXPECTED_R)
    assert res.loc["Harm/Care", "S"] == pytest.approx(5 / math.sqrt(12))
    assert res.loc["Fairness/Reciprocity", "S"] == pytest.approx(math.sqrt(327) / 9)
    assert res.loc["all", "n_cells_sigma"] == 6 and res.loc["all", "n_ratings"] == 16

    # The unparsed runs are unscored in the log, with the reason and the failure count.
    failed = [s for s in log.samples if s.id == "p000-q01" and math.isnan(s.scores["mfq_rating"].value)]
    assert len(failed) == 1
    assert failed[0].scores["mfq_rating"].reason == "invalid_response_format"
    assert failed[0].scores["mfq_rating"].metadata == {"rating": None, "failures": 3}
    assert failed[0].store["failed_responses"] == ["x", "no digits here", "nothing"]


def test_no_retries_records_single_failure(
    mirror: Path, data_home: Path, log_dir: Path, persona_file: Path
) -> None:
    model = mock_model([mock_output("no")])
    task = moral_foundations(
        personas=1,
        persona_source=str(persona_file),
        include_self=False,
        epochs=1,
        max_retries=0,
        questions=[1],
    )
    [log] = eval(task, model=model, log_dir=str(log_dir))
    df = samples_from_log(log.location)
    assert df[["rating", "failures"]].isna().to_dict("list") == {"rating": [True], "failures": [False]}
    assert df["failures"].tolist() == [1]
    assert log.results.scores[0].unscored_samples == 1


def test_latest_log_per_model_wins(mirror: Path, data_home: Path, log_dir: Path, persona_file: Path) -> None:
    for answer in ("1", "4"):
        model = mock_model([mock_output(answer)])
        task = moral_foundations(
            personas=1, persona_source=str(persona_file), include_self=False, epochs=1, questions=[1]
        )
        eval(task, model=model, log_dir=str(log_dir))
    (log_dir / "notes.json").write_text("{}")  # a stray non-log file is skipped
    with pytest.warns(UserWarning, match="most recent"):
        df = samples_from_log(log_dir)
    assert df["rating"].tolist() == [4.0]


def test_mfq_items_from_the_pinned_python(mirror: Path, data_home: Path) -> None:
    items = load_mfq_items()
    assert [i["id"] for i in items] == list(range(1, 31))
    assert {i["type"] for i in items[:15]} == {"relevance"} and {i["type"] for i in items[15:]} == {
        "agreement"
    }
    assert items[0]["foundation"] == "Harm/Care" and items[4]["foundation"] == "Purity/Sanctity"
    assert ITEM_MARKERS[1] in items[0]["text"] and ITEM_MARKERS[2] in items[1]["text"]


def test_mfq_python_is_parsed_never_executed() -> None:
    rel = [("Harm/Care", f"relevance item {i}") for i in range(15)]
    agr = [("Fairness/Reciprocity", f"agreement item {i}") for i in range(15)]
    text = (
        "import os\nos.system('exit 3')\nraise SystemExit('executed!')\n"
        f"_RELEVANCE_ITEMS: list = {rel!r}\n_AGREEMENT_ITEMS = {agr!r}\n"
    )
    items = parse_mfq_items(text)
    assert len(items) == 30 and items[15] == {
        "id": 16,
        "type": "agreement",
        "foundation": "Fairness/Reciprocity",
        "text": "agreement item 0",
    }
    with pytest.raises(SourceError, match="_AGREEMENT_ITEMS"):
        parse_mfq_items("_RELEVANCE_ITEMS = []\n")
    with pytest.raises(
        SourceError, match=r"mfq.py: _RELEVANCE_ITEMS\[1\] is not a \(foundation, text\) pair"
    ):
        parse_mfq_items("_RELEVANCE_ITEMS = [('a', 'b'), ('c',)]\n_AGREEMENT_ITEMS = []\n", "mfq.py")
