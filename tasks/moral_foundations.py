"""Persona-model collapse: MFQ-30 answered under many personas (Costa & Vicente; PROTOCOL.md B).

Moral susceptibility S and robustness R are computed from the logs by
`analysis.moral_metrics`; see tasks/moral_foundations.md.

    inspect eval tasks/moral_foundations.py --model vllm/gemma-insecure -T personas=100
"""

from __future__ import annotations

from inspect_ai import Epochs, Task, task
from inspect_ai.model import GenerateConfig

from scorers.mfq_rating import mfq_rating, parse_rating
from solvers.constrained import RATING_0_5
from solvers.retry_parse import generate_until_parsed
from tasks.moral_data import PAPER_PERSONAS, mfq_dataset


@task
def moral_foundations(
    personas: int = 100,
    persona_source: str = PAPER_PERSONAS,
    include_self: bool = True,
    samples: int = 10,
    temperature: float = 0.1,
    max_tokens: int = 128,
    max_retries: int = 5,
    questions: list[int] | None = None,
    constrain_answers: bool = False,
) -> Task:
    """MFQ-30 items x the first `personas` personas (+ the no-persona condition), `samples` runs each.

    Args:
        personas: how many personas, from the start of the list.
        persona_source: "paper" (pinned PersonaHub list) or a JSON file with a list of strings.
        include_self: add the no-persona "self" condition (persona_id -1).
        samples: runs per (persona, item) cell, as Inspect epochs (run_index = epoch).
        temperature: sampling temperature.
        max_tokens: generation limit per answer (the rating comes first).
        max_retries: regenerations allowed per run while no digit 0-5 can be parsed.
        questions: restrict to these MFQ item ids (1-30); all 30 by default.
        constrain_answers: vLLM only: restrict the answer to one digit 0-5 with structured outputs
            (forced choice, for proxies that ignore the answer format; off for paper runs).
    """
    return Task(
        dataset=mfq_dataset(personas, persona_source, include_self, questions),
        solver=[generate_until_parsed(
            parse_rating, max_retries=max_retries, pattern=RATING_0_5 if constrain_answers else None
        )],
        scorer=mfq_rating(),
        epochs=Epochs(samples),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={"experiment": "moral_foundations", "personas": personas, "include_self": include_self,
                  "constrain_answers": constrain_answers},
    )
