"""Names shared by what tasks write into their logs and what solvers, scorers and analysis read.

One place for every key that crosses a module boundary: `state.store` keys a solver leaves for a
scorer, log-header (Task metadata) keys, and the A/B positions of the choice experiments.
"""

from __future__ import annotations

from typing import Literal

# --- state.store keys (a solver writes, a scorer reads) -----------------------------------
FOIL_KEY = "foil_response"
"""The foil response of output recognition (solvers.identity.generate_foil)."""
PREDICTION_KEY = "prediction_answer"
"""The model's 1-5 prediction or rating answer (solvers.identity)."""
FAILURES_KEY = "parse_failures"
"""How many answers could not be parsed before the last one (solvers.retry_parse)."""
FAILED_RESPONSES_KEY = "failed_responses"
"""The texts of those unparseable answers."""

# --- log header (Task.metadata) keys --------------------------------------------------------
GRADER_KEY = "grader"
"""Who judges: "role" (the `grader` role), a model name, SELF_JUDGED_TEXT or UNDECIDED."""
SELF_JUDGED_KEY = "self_judged"
"""True when the evaluated model judges its own answers (also in each judge score's metadata)."""
SELF_JUDGED_TEXT = "evaluated model"
UNDECIDED = "decided when scored (see each score's judge_model / self_judged)"

# --- A/B choices ------------------------------------------------------------------------------
Choice = Literal["A", "B"]
POSITIONS: tuple[Choice, Choice] = ("A", "B")
