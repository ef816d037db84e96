"""Persona-model collapse: MFQ-30 answered under many personas (Costa & Vicente; PROTOCOL.md B).

Paper-faithful by default: the authors' item prompts, persona wrapper and parse rule, read
from the pinned upstream files; their sampling settings (100 personas + self, 10 runs,
temperature 0.1, one answer token). Moral susceptibility S and robustness R are computed
from the logs by `analysis.moral_metrics`; see tasks/moral_foundations.md.

    inspect eval tasks/moral_foundations.py --model vllm/gemma-insecure -T personas=100
"""

from __future__ import annotations

from inspect_ai import Epochs, Task, task
from inspect_ai.model import GenerateConfig

from em_persona.core.provenance import prompt_metadata
from em_persona.scorers.mfq_rating import mfq_rating, rating_parser
from em_persona.solvers.constrained import RATING_0_5
from em_persona.solvers.retry_parse import generate_until_parsed
from em_persona.tasks.moral_data import PAPER_PERSONAS, PROMPT_STYLES, mfq_dataset


@task
def moral_foundations(
    personas: int = 100,
    persona_source: str = PAPER_PERSONAS,
    include_self: bool = True,
    samples: int = 10,
    temperature: float = 0.1,
    max_tokens: int = 1,
    max_retries: int = 5,
    questions: list[int] | None = None,
    constrain_answers: bool = False,
    prompt_style: str = "paper",
) -> Task:
    """MFQ-30 items x the first `personas` personas (+ the no-persona condition), `samples` runs each.

    Args:
        personas: how many personas, from the start of the list.
        persona_source: "paper" (pinned PersonaHub list) or a JSON file with a list of strings.
        include_self: add the no-persona "self" condition (persona_id -1).
        samples: runs per (persona, item) cell, as Inspect epochs (run_index = epoch).
        temperature: sampling temperature.
        max_tokens: generation limit per answer; 1 as in the authors' sampling script (the
            rating is the first thing asked for). Raise it for models that open with other tokens.
        max_retries: regenerations allowed per run while the answer cannot be parsed.
        questions: restrict to these MFQ item ids (1-30); all 30 by default.
        constrain_answers: vLLM only: restrict the answer to one digit 0-5 with structured outputs
            (forced choice, for proxies that ignore the answer format; off for paper runs).
        prompt_style: "paper" (the authors' prompts and parse rule, read from the pinned files)
            or "project" (this project's wording and stricter standalone-digit parser).
    """
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}; got {prompt_style!r}")
    return Task(
        dataset=mfq_dataset(personas, persona_source, include_self, questions, prompt_style),
        solver=[generate_until_parsed(
            rating_parser(prompt_style), max_retries=max_retries,
            pattern=RATING_0_5 if constrain_answers else None,
        )],
        scorer=mfq_rating(prompt_style),
        epochs=Epochs(samples),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={"experiment": "moral_foundations", "personas": personas, "include_self": include_self,
                  "constrain_answers": constrain_answers, "prompt_style": prompt_style,
                  **prompt_metadata("moral_foundations", {"prompt_style": prompt_style})},
    )
