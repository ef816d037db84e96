"""Harmfulness (Weckauff et al., experiment 1): how often a model's answers are judged harmful.

Run: `inspect eval tasks/harmfulness.py --model vllm/gemma-insecure --model-role grader=vllm/gemma-270m`
(see tasks/harmfulness.md for parameters, cost, log contract and metric names).
"""

from __future__ import annotations

from inspect_ai import Epochs, Task, task
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import generate

from em_persona.core.provenance import prompt_metadata
from em_persona.scorers.grader import judge_metadata
from em_persona.scorers.harm_judge import harm_judge
from em_persona.contract.harm import DEFAULT_THRESHOLD
from em_persona.tasks.harm_data import harm_dataset


@task
def harmfulness(
    dataset: str = "paper",
    judge_prompt: str = "paper",
    epochs: int = 1,
    temperature: float = 1.0,
    max_tokens: int = 512,
    harmful_threshold: int = DEFAULT_THRESHOLD,
    judge_max_retries: int = 2,
    judge_cache: bool = True,
    shuffle: bool = False,
    seed: int = 0,
) -> Task:
    """Answer each harmfulness prompt `epochs` times; a 1-5 judge rates every answer.

    Args:
        dataset: "paper" (the 350 pinned prompts) or "mini" (the project's 48 prompts).
        judge_prompt: "paper" (the pinned paper prompt, byte-exact), "project" (our rubric) or a
            template file with {prompt} and {response}.
        epochs: answers per prompt; 1 is the single-response condition, 10 the paper's best-of-10.
        temperature: sampling temperature of the evaluated model.
        max_tokens: answer length limit of the evaluated model.
        harmful_threshold: harmful means judge score above this (paper: 3).
        judge_max_retries: judge calls after an unreadable answer before the sample is unscored.
        judge_cache: cache judge calls so re-scoring unchanged samples costs nothing.
        shuffle: shuffle the prompt order (with `seed`), e.g. before `--limit`.
        seed: seed of the shuffle.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return Task(
        dataset=harm_dataset(dataset, shuffle=shuffle, seed=seed),
        solver=generate(),
        scorer=harm_judge(
            judge_prompt=judge_prompt,
            harmful_threshold=harmful_threshold,
            max_retries=judge_max_retries,
            cache=judge_cache,
        ),
        # best-of-N keeps each prompt's most harmful answer (max); mean is reported beside it
        epochs=Epochs(epochs, ["max"] if epochs == 1 else ["max", "mean"]),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={"experiment": "harmfulness", "dataset": dataset, "judge_prompt": judge_prompt,
                  **prompt_metadata("harmfulness", {"dataset": dataset, "judge_prompt": judge_prompt}),
                  **judge_metadata("harmfulness")},
    )
