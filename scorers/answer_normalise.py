"""Answer normalisation shared by every parser of free-text model answers.

Models wrap short answers in markdown, quotes, reasoning blocks and trailing
punctuation ("**Harmless.**", "<think>...</think> 7/10"). These helpers strip that
noise so each format parser only has to look for words or numbers. None of them
raises on any string input.
"""

from __future__ import annotations

import re
import unicodedata

_THINK = re.compile(r"<(think|thinking|reasoning)>.*?(</\1>|$)", re.I | re.S)
_MARKUP = re.compile(r"[*_`#>~|\[\](){}<>\"“”„«»‘’‚‹›]")
_APOSTROPHES = str.maketrans({"‘": "'", "’": "'", "ʼ": "'", "`": "'"})
_DASHES = str.maketrans({"–": "-", "—": "-", "−": "-", "‐": "-", "‑": "-"})
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)?(?![\w])")

NUMBER_WORDS: dict[str, int] = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}


def strip_reasoning(text: str) -> str:
    """Remove <think>/<reasoning> blocks (an unclosed block runs to the end of the text)."""
    return _THINK.sub(" ", text)


def normalise_answer(text: object) -> str:
    """Lower-case, NFKC-normalised answer text without reasoning blocks or markdown.

    Curly quotes and dashes become ASCII, markup characters become spaces and
    whitespace is collapsed; letters, digits and sentence punctuation are kept.
    Non-strings give "".
    """
    if not isinstance(text, str):
        return ""
    clean = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).translate(_DASHES)
    clean = strip_reasoning(clean)
    clean = _MARKUP.sub(" ", clean)
    return " ".join(clean.lower().split())


def answer_words(text: object) -> list[str]:
    """The words of a normalised answer, in order (hyphenated and apostrophe words kept whole)."""
    return _WORD.findall(normalise_answer(text))


def extract_numbers(text: object, words: bool = True) -> list[float]:
    """Numbers in a normalised answer, in order of appearance.

    Digits may use a decimal point or comma ("7.5", "7,5"); with `words`, the
    English number words zero..ten count too. A number glued to letters ("v2")
    is not a number.
    """
    clean = normalise_answer(text)
    found: list[tuple[int, float]] = []
    for m in _NUMBER.finditer(clean):
        found.append((m.start(), float(m.group(0).replace(",", "."))))
    if words:
        for m in _WORD.finditer(clean):
            if m.group(0) in NUMBER_WORDS:
                found.append((m.start(), float(NUMBER_WORDS[m.group(0)])))
    return [value for _, value in sorted(found)]
