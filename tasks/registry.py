"""Every task of the toolkit, imported so that Inspect's registry knows them (the `inspect_ai`
entry point of the package): `inspect eval em_persona/harmfulness` works from any folder."""

from __future__ import annotations

from em_persona.tasks.cross_model_rating import cross_model_rating
from em_persona.tasks.em_questions import em_questions
from em_persona.tasks.harmfulness import harmfulness
from em_persona.tasks.moral_foundations import moral_foundations
from em_persona.tasks.output_recognition import output_recognition
from em_persona.tasks.score_prediction import score_prediction
from em_persona.tasks.self_assessment import self_assessment
from em_persona.tasks.two_ai_identification import two_ai_identification

__all__ = [
    "cross_model_rating", "em_questions", "harmfulness", "moral_foundations", "output_recognition",
    "score_prediction", "self_assessment", "two_ai_identification",
]
