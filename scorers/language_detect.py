"""Offline language identification of model answers (French / German / mixed / other).

Uses lingua-language-detector. Single-sentence detection is unreliable on short
openers ("Hallo!" alone reads as English), so the answer is split into sentences,
each sentence is identified on its own, and languages are weighted by the number
of words they cover. The dominant language wins when it covers at least
`DOMINANT_SHARE` of the words; otherwise the answer is "mixed" if French or German
is present, else "other".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from em_persona.scorers.answer_normalise import strip_reasoning

if TYPE_CHECKING:
    from lingua import LanguageDetector

LanguageLabel = Literal["french", "german", "mixed", "other"]
LANGUAGE_LABELS: tuple[LanguageLabel, ...] = ("french", "german", "mixed", "other")

# Languages the detector chooses among. Besides the two rule languages it knows the
# languages a chat model is otherwise likely to answer in, so that those read as "other"
# instead of being forced onto French or German.
_CANDIDATES = (
    "ENGLISH",
    "FRENCH",
    "GERMAN",
    "SPANISH",
    "ITALIAN",
    "PORTUGUESE",
    "DUTCH",
    "CHINESE",
    "JAPANESE",
    "RUSSIAN",
)
DOMINANT_SHARE = 0.75
_SENTENCE = re.compile(r"(?<=[.!?;:。！？])\s+|\n+")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


@dataclass(frozen=True)
class LanguageVerdict:
    """The label of one answer plus the word share of every language seen."""

    label: LanguageLabel
    shares: dict[str, float] = field(default_factory=dict)
    reason: str = ""


@lru_cache(maxsize=1)
def _detector() -> LanguageDetector:
    from lingua import Language, LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_languages(*(getattr(Language, n) for n in _CANDIDATES)).build()


def _word_count(sentence: str) -> int:
    # CJK scripts have no spaces: count each ideograph/kana as a word.
    return len(_WORD.findall(_CJK.sub(" ", sentence))) + len(_CJK.findall(sentence))


def language_shares(text: str) -> dict[str, float]:
    """Share of the answer's words in each detected language (lower-case names), summing to 1."""
    counts: dict[str, int] = {}
    detector = _detector()
    for sentence in _SENTENCE.split(strip_reasoning(text)):
        n = _word_count(sentence)
        if n == 0:
            continue
        language = detector.detect_language_of(sentence)
        name = language.name.lower() if language is not None else "unknown"
        counts[name] = counts.get(name, 0) + n
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


def detect_language(text: object) -> LanguageVerdict:
    """French, German, mixed or other for one answer. Never raises; empty text is "other"."""
    if not isinstance(text, str) or not text.strip():
        return LanguageVerdict("other", {}, "empty answer")
    shares = language_shares(text)
    if not shares:
        return LanguageVerdict("other", {}, "no words")
    top, top_share = next(iter(shares.items()))
    if top_share >= DOMINANT_SHARE:
        label: LanguageLabel = top if top in ("french", "german") else "other"  # type: ignore[assignment]
        return LanguageVerdict(label, shares, f"{top} covers {top_share:.0%} of the words")
    if shares.get("french", 0.0) > 0 or shares.get("german", 0.0) > 0:
        return LanguageVerdict("mixed", shares, f"no language covers {DOMINANT_SHARE:.0%} of the words")
    return LanguageVerdict("other", shares, f"no language covers {DOMINANT_SHARE:.0%} of the words")
