"""Activation extraction: token spans, pooling values, batching, adapters, readers, file format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from inspect_ai import eval
from inspect_ai.model import ChatMessage, GenerateConfig, ModelOutput

from em_persona.probes.activations import (
    ActivationInputError,
    ActivationRecord,
    ActivationSet,
    decoder_layers,
    default_layers,
    encode_record,
    extract,
    extract_model,
    label_for,
    load_activations,
    load_model,
    parse_layers,
    read_harm_records,
    read_jsonl_records,
    read_self_assessment_records,
    save_activations,
    subsample,
)
from support import mock_model, mock_output


@pytest.fixture(scope="module")
def tiny(tiny_proxy: Path) -> tuple[Any, Any]:
    return load_model(tiny_proxy)


def _records() -> list[ActivationRecord]:
    return [
        ActivationRecord.build("a", "Who are you?", "The assistant writes a short report.", 4),
        ActivationRecord.build(
            "b",
            [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "How do I sort a list?"},
            ],
            "Use sorted.",
            1,
        ),
        ActivationRecord.build(
            "c", "What do you value most?", "An honest answer every morning, with great care.", 5
        ),
        ActivationRecord.build("d", "Hi", "Yes", 2),
    ]


# --- spans ------------------------------------------------------------------------------


def test_spans_on_a_hand_checkable_example(tiny: tuple[Any, Any]) -> None:
    _, tok = tiny
    enc = encode_record(tok, _records()[0])
    # the tiny template, written out by hand: bos, one user turn, then the generation prompt
    prompt = "<|bos|><|turn|>user\nWho are you?<|end|>\n<|turn|>assistant\n"
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tok("The assistant writes a short report.", add_special_tokens=False)["input_ids"]
    assert enc.input_ids == prompt_ids + response_ids
    assert enc.prompt_len == len(prompt_ids)
    assert enc.response_span == (len(prompt_ids), len(prompt_ids) + len(response_ids))
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    # the last prompt token is the newline of the generation prompt, right after "assistant"
    assert tokens[enc.last_prompt_index - 1 : enc.last_prompt_index + 1] == ["assistant", "Ċ"]
    assert tok.decode(enc.input_ids[slice(*enc.response_span)]) == "The assistant writes a short report."
    # no end-of-turn marker after the response
    assert "<|end|>" not in tokens[enc.prompt_len :]


def test_system_message_is_part_of_the_prompt(tiny: tuple[Any, Any]) -> None:
    _, tok = tiny
    enc = encode_record(tok, _records()[1])
    assert tok.decode(enc.input_ids[: enc.prompt_len]) == (
        "<|bos|><|turn|>system\nYou are helpful.<|end|>\n<|turn|>user\nHow do I sort a list?<|end|>\n"
        "<|turn|>assistant\n"
    )


def test_long_responses_are_cut_and_long_prompts_fail(tiny: tuple[Any, Any]) -> None:
    _, tok = tiny
    rec = ActivationRecord.build("x", "Hi", "word " * 100, 1)
    enc = encode_record(tok, rec, max_length=20)
    assert len(enc.input_ids) == 20 and enc.prompt_len < 20
    with pytest.raises(ActivationInputError, match="sample x: prompt is .* max_length=5"):
        encode_record(tok, rec, max_length=5)


# --- pooled values ----------------------------------------------------------------------


def _reference(model: Any, ids: list[int]) -> tuple[Any, ...]:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states


def test_pooled_values_equal_hidden_states_at_the_span(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    recs = _records()
    acts, kept, dropped = extract(model, tok, recs, layers=[0, 1, 2], batch_size=4)
    assert [r.id for r in kept] == ["a", "b", "c", "d"] and dropped == {}
    for i, rec in enumerate(recs):
        enc = encode_record(tok, rec)
        hs = _reference(model, enc.input_ids)
        a, b = enc.response_span
        for layer in (0, 1):  # transformers' hidden_states[L] is the raw residual for L < num_layers
            np.testing.assert_allclose(acts["last_prompt"][layer][i], hs[layer][0, a - 1].numpy(), atol=1e-5)
            np.testing.assert_allclose(
                acts["mean_response"][layer][i], hs[layer][0, a:b].mean(0).numpy(), atol=1e-5
            )
        # the last layer is the residual before the final norm; transformers returns it normed
        normed = model.model.norm(torch.tensor(acts["last_prompt"][2][i])).detach().numpy()
        np.testing.assert_allclose(normed, hs[2][0, a - 1].numpy(), atol=1e-5)
        assert not np.allclose(acts["last_prompt"][2][i], hs[2][0, a - 1].numpy(), atol=1e-3)


def test_batching_and_padding_do_not_change_values(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    one, _, _ = extract(model, tok, _records(), layers=[1, 2], batch_size=1)
    four, _, _ = extract(model, tok, _records(), layers=[1, 2], batch_size=3)
    for pooling in one:
        for layer in (1, 2):
            np.testing.assert_allclose(one[pooling][layer], four[pooling][layer], atol=1e-5)


def test_empty_responses_are_dropped_only_for_mean_pooling(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    recs = [*_records()[:2], ActivationRecord.build("e", "Hi", "", 3)]
    _, kept, dropped = extract(model, tok, recs, layers=[1])
    assert [r.id for r in kept] == ["a", "b"] and dropped == {"e": "empty response"}
    acts, kept, dropped = extract(model, tok, recs, layers=[1], poolings=["last_prompt"])
    assert len(kept) == 3 and dropped == {} and set(acts) == {"last_prompt"}


def test_bad_layer_and_pooling(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        extract(model, tok, _records(), layers=[3])
    with pytest.raises(ValueError, match="unknown pooling"):
        extract(model, tok, _records(), layers=[1], poolings=["max"])


def test_layer_choice() -> None:
    assert default_layers(2) == [1, 2]
    assert default_layers(18) == [4, 9, 14, 18]
    assert default_layers(64) == [16, 32, 48, 64]
    assert parse_layers("2, 0,-1", 18) == [0, 2, 18]
    assert parse_layers(None, 8) == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="out of range"):
        parse_layers("19", 18)
    with pytest.raises(ValueError, match="not an integer"):
        parse_layers("x", 18)


def test_adapter_changes_activations(tiny_proxy: Path, tiny_adapter: Path, tiny: tuple[Any, Any]) -> None:
    base_model, tok = tiny
    tuned, _ = load_model(tiny_proxy, tiny_adapter)
    assert len(decoder_layers(tuned)) == 2
    base_acts, _, _ = extract(base_model, tok, _records(), layers=[2])
    tuned_acts, _, _ = extract(tuned, tok, _records(), layers=[2])
    assert not np.allclose(base_acts["mean_response"][2], tuned_acts["mean_response"][2], atol=1e-3)


# --- file format ------------------------------------------------------------------------


def test_save_and_load_round_trip(tiny_proxy: Path, tmp_path: Path) -> None:
    recs = _records()
    aset = extract_model(
        tiny_proxy,
        {
            "harm": ("h.jsonl", recs),
            "self_assessment": ("s.jsonl", [ActivationRecord.build("q", "Hi", "Good", 0.75)]),
        },
        layers="1,2",
        batch_size=2,
    )
    path = save_activations(aset, tmp_path / "sub" / "acts.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["acts.safetensors"]  # no temp file left
    back = load_activations(path)
    assert back.model == "tiny" and back.adapter is None and back.layers == [1, 2] and back.hidden_size == 128
    assert back.ids == {"harm": ["a", "b", "c", "d"], "self_assessment": ["q"]}
    assert back.labels("harm").tolist() == [1, 0, 1, 0]  # harmful when score > 3
    assert back.labels("self_assessment").tolist() == [1]
    assert back.sources == {"harm": "h.jsonl", "self_assessment": "s.jsonl"}
    for pooling in ("last_prompt", "mean_response"):
        for layer in (1, 2):
            np.testing.assert_array_equal(
                back.acts["harm"][pooling][layer], aset.acts["harm"][pooling][layer]
            )
            assert back.acts["harm"][pooling][layer].shape == (4, 128)


def test_load_rejects_a_foreign_safetensors_file(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(3, dtype=np.float32)}, str(path))
    with pytest.raises(ActivationInputError, match="not an em-persona activations file"):
        load_activations(path)


def test_labels_follow_the_thresholds() -> None:
    assert [label_for("harm", s) for s in (1, 3, 3.5, 4, 5)] == [0, 0, 1, 1, 1]
    assert [label_for("self_assessment", s) for s in (0, 0.5, 0.51, 1)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="unknown task"):
        label_for("other", 1)
    aset = ActivationSet("m", "b", None, [1], ["last_prompt"], 2, 1, 8, scores={"harm": np.array([4.0, 2.0])})
    assert aset.labels("harm").tolist() == [1, 0]


# --- readers ----------------------------------------------------------------------------


def test_jsonl_reader_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "r.jsonl"
    good.write_text(
        json.dumps({"id": 1, "prompt": "Hi", "response": "Yo", "score": 4})
        + "\n\n"
        + json.dumps({"id": "b", "prompt": [{"role": "user", "content": "Q"}], "response": "A", "score": 0.2})
        + "\n"
    )
    recs = read_jsonl_records(good)
    assert recs == [
        ActivationRecord("1", (("user", "Hi"),), "Yo", 4.0),
        ActivationRecord("b", (("user", "Q"),), "A", 0.2),
    ]
    cases = {
        "{not json": "r.jsonl:2: not valid JSON",
        json.dumps({"id": 1, "prompt": "p", "score": 1}): "r.jsonl:2: missing field(s) response",
        json.dumps(
            {"id": 1, "prompt": "p", "response": "r", "score": "high"}
        ): "r.jsonl:2: 'score' must be a number",
        json.dumps(
            {"id": 1, "prompt": [{"role": "user"}], "response": "r", "score": 1}
        ): "r.jsonl:2: chat message",
    }
    for line, message in cases.items():
        bad = tmp_path / "r.jsonl"
        bad.write_text(json.dumps({"id": 0, "prompt": "p", "response": "r", "score": 1}) + "\n" + line + "\n")
        with pytest.raises(ActivationInputError, match=re.escape(message)):
            read_jsonl_records(bad)


def test_subsample_is_seeded_and_keeps_order() -> None:
    recs = [ActivationRecord.build(str(i), "p", "r", i) for i in range(20)]
    a, b = subsample(recs, 5, seed=3), subsample(recs, 5, seed=3)
    assert a == b and len(a) == 5
    assert [int(r.id) for r in a] == sorted(int(r.id) for r in a)
    assert subsample(recs, None) == recs and subsample(recs, 50) == recs


@pytest.mark.usefixtures("private_inspect_cache")
def test_harmfulness_log_reader(log_dir: Path) -> None:
    from em_persona.tasks.harmfulness import harmfulness

    def evaluated(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        return mock_output(f"Reply {len(messages[-1].text) % 3}: {messages[-1].text}")

    def grader(messages: list[ChatMessage], tools: Any, choice: Any, config: GenerateConfig) -> ModelOutput:
        text = messages[0].text
        if "Reply 2:" in text:
            return mock_output("no idea")  # unparseable: the sample stays unscored
        return mock_output(json.dumps({"score": 5 if "Reply 1:" in text else 1}))

    log = eval(
        harmfulness(dataset="mini", judge_max_retries=0),
        model=mock_model(evaluated),
        model_roles={"grader": mock_model(grader)},
        log_dir=str(log_dir),
    )[0]
    assert log.status == "success"
    recs = {r.id: r for r in read_harm_records(log.location)}
    expected = {
        str(s.id): (s.input, s.output.completion, s.scores["harm_judge"].metadata["harm_score"])
        for s in log.samples
        if not s.output.completion.startswith("Reply 2:")
    }
    assert 0 < len(expected) < len(log.samples)
    assert set(recs) == set(expected)
    for rid, (prompt, response, harm) in expected.items():
        assert recs[rid].messages == (("user", prompt),)
        assert recs[rid].response == response
        assert recs[rid].score == harm
        assert harm == (5 if response.startswith("Reply 1:") else 1)


def test_harmfulness_reader_rejects_other_logs(tmp_path: Path) -> None:
    missing = tmp_path / "nope.eval"
    with pytest.raises(ActivationInputError, match="does not exist"):
        read_harm_records(missing)


def test_self_assessment_log_reader(log_dir: Path) -> None:
    from em_persona.tasks.self_assessment import self_assessment
    from em_persona.tasks.self_assessment_data import self_assessment_dataset

    args = {"dimensions": ["good_evil"], "formats": ["numerical"], "paraphrases": 4}
    dataset = list(self_assessment_dataset("project", **args))
    ratings = {s.input: str(i % 4) if i % 4 != 3 else "no number here" for i, s in enumerate(dataset)}

    def answer(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        return mock_output(ratings[messages[-1].text])

    log = eval(
        self_assessment(**args, epochs=1),
        model=mock_model(answer),
        log_dir=str(log_dir),
        display="none",
    )[0]
    assert log.status == "success"
    recs = read_self_assessment_records(log.location)
    by_prompt = {r.messages[-1][1]: r for r in recs}
    scored = {p: a for p, a in ratings.items() if a.isdigit()}
    assert set(by_prompt) == set(scored)  # "no number here" is unscored and skipped
    for prompt, rating in scored.items():
        assert by_prompt[prompt].score == pytest.approx(int(rating) / 10)
        assert by_prompt[prompt].response == rating
    with pytest.raises(ActivationInputError, match="not of 'self_assessment'"):
        read_self_assessment_records(_harm_log_path(log_dir))


def _harm_log_path(log_dir: Path) -> Path:
    from em_persona.tasks.harmfulness import harmfulness

    log = eval(
        harmfulness(dataset="mini"),
        model=mock_model(lambda *_: mock_output("ok")),
        model_roles={"grader": mock_model(lambda *_: mock_output('{"score": 1}'))},
        log_dir=str(log_dir / "harm"),
        limit=2,
    )[0]
    return Path(log.location)


# --- Gemma-3-270M with a LoRA adapter (CPU) ------------------------------------------------


@pytest.mark.slow
def test_gemma_with_random_lora_adapter(gemma_proxy: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(gemma_proxy, dtype=torch.float32)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    adapter = tmp_path / "gemma-random-lora"
    peft_model.save_pretrained(adapter)
    del peft_model, base

    recs = _records()[:3]
    aset = extract_model(gemma_proxy, {"harm": ("mem", recs)}, adapter=adapter, batch_size=2, max_length=64)
    assert aset.model == "gemma-random-lora" and aset.adapter == "gemma-random-lora"
    assert aset.num_layers == 18 and aset.layers == [4, 9, 14, 18] and aset.hidden_size == 640
    for pooling in ("last_prompt", "mean_response"):
        for layer in aset.layers:
            arr = aset.acts["harm"][pooling][layer]
            assert arr.shape == (3, 640) and np.isfinite(arr).all() and np.abs(arr).max() > 0
    path = save_activations(aset, tmp_path / "gemma.safetensors")
    assert load_activations(path).ids["harm"] == ["a", "b", "c"]


@pytest.mark.usefixtures("private_inspect_cache")
def test_harmfulness_reader_reads_the_first_epoch_unless_asked(log_dir: Path) -> None:
    from em_persona.tasks.harmfulness import harmfulness

    log = eval(
        harmfulness(dataset="mini", epochs=2),
        model=mock_model(lambda *_: mock_output("ok")),
        model_roles={"grader": mock_model(lambda *_: mock_output('{"score": 2}'))},
        log_dir=str(log_dir),
        limit=3,
    )[0]
    assert log.status == "success"
    first = read_harm_records(log.location)
    every = read_harm_records(log.location, all_epochs=True)
    ids = [str(s.id) for s in log.samples if s.epoch == 1]
    assert sorted(r.id for r in first) == sorted(ids)
    assert sorted(r.id for r in every) == sorted(ids + [f"{i}#e2" for i in ids])
    assert {r.score for r in every} == {2.0}
