"""Persona-model collapse: MFQ-30 answered under many personas (Costa & Vicente).

Paper-faithful by default: the authors' item prompts, persona wrapper and parse rule, read
from the pinned upstream files; their sampling settings (100 personas + self, 10 runs,
temperature 0.1, one answer token). Moral susceptibility S and robustness R are computed
from the logs by `tasks/moral_metrics.py`; see tasks/moral_foundations.md.

    inspect eval tasks/moral_foundations.py --model vllm/gemma-insecure -T personas=100
"""

from __future__ import annotations

from inspect_ai import Epochs, Task, task
from inspect_ai.model import GenerateConfig

from em_persona.contract.declarations import Calls, TaskSpec
from em_persona.core.provenance import paper_prompt, project_prompt, prompt_metadata
from em_persona.scorers.mfq_rating import mfq_rating, rating_parser
from em_persona.solvers.constrained import RATING_0_5
from em_persona.solvers.retry_parse import generate_until_parsed
from em_persona.tasks import moral_results
from em_persona.tasks.moral_data import PAPER_PERSONAS, PROMPT_STYLES, MoralDataError, mfq_dataset

PROMPTS = (
    paper_prompt(
        "moral_foundations",
        "item",
        "prompt_style",
        "paper",
        "mfq30",
        "ast: `_RELEVANCE_ITEMS` / `_AGREEMENT_ITEMS` and the f-strings of "
        "`_format_relevance_question` / `_format_agreement_question` (never executed)",
    ),
    paper_prompt(
        "moral_foundations",
        "persona wrapper",
        "prompt_style",
        "paper",
        "mfq_sampling",
        "ast: the f-string of `create_persona_prompt` (never executed); self condition sends the item alone",
    ),
    paper_prompt(
        "moral_foundations",
        "parse rule",
        "prompt_style",
        "paper",
        "mfq_sampling",
        "ast: the regex of `extract_rating` (first match in the stripped answer)",
    ),
    project_prompt(
        "moral_foundations",
        "item",
        "prompt_style",
        "project",
        "tasks/moral_data.py",
        "an alternative wording of this project (same item texts and scale anchors)",
    ),
    project_prompt(
        "moral_foundations",
        "persona wrapper",
        "prompt_style",
        "project",
        "tasks/moral_data.py",
        "an alternative wording of this project",
    ),
    project_prompt(
        "moral_foundations",
        "parse rule",
        "prompt_style",
        "project",
        "scorers/mfq_rating.py",
        "stricter: the digit may not touch a letter, digit or decimal point",
    ),
)


@task
def moral_foundations(
    personas: int = 100,
    persona_source: str = PAPER_PERSONAS,
    include_self: bool = True,
    epochs: int = 10,
    temperature: float = 0.1,
    max_tokens: int = 1,
    max_retries: int = 5,
    questions: list[int] | None = None,
    constrain_answers: bool = False,
    prompt_style: str = "paper",
) -> Task:
    """MFQ-30 items x the first `personas` personas (+ the no-persona condition), `epochs` runs each.

    Args:
        personas: how many personas, from the start of the list.
        persona_source: "paper" (pinned PersonaHub list) or a JSON file with a list of strings.
        include_self: add the no-persona "self" condition (persona_id -1).
        epochs: runs per (persona, item) cell, as Inspect epochs (run_index = epoch).
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
        raise MoralDataError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}; got {prompt_style!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise MoralDataError(f"epochs must be a positive integer, got {epochs!r}")
    return Task(
        dataset=mfq_dataset(personas, persona_source, include_self, questions, prompt_style),
        solver=[
            generate_until_parsed(
                rating_parser(prompt_style),
                max_retries=max_retries,
                pattern=RATING_0_5 if constrain_answers else None,
            )
        ],
        scorer=mfq_rating(prompt_style),
        epochs=Epochs(epochs),
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
        metadata={
            "experiment": "moral_foundations",
            "personas": personas,
            "include_self": include_self,
            "constrain_answers": constrain_answers,
            "prompt_style": prompt_style,
            **prompt_metadata(PROMPTS, {"prompt_style": prompt_style}),
        },
    )


SPEC = TaskSpec(
    name="moral_foundations",
    task=moral_foundations,
    order=80,
    tables=moral_results.TABLES,
    rows=moral_results.rows,
    metrics=moral_results.metrics,
    calls=lambda args: Calls(generations=1, most=1 + int(args["max_retries"])),
    columns=moral_results.COLUMNS,
    run_args=frozenset({"personas", "questions"}),
    prompts=PROMPTS,
    figures=("mfq_s_vs_r",),
)
