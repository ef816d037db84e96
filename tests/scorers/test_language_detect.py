"""The offline language detector on a small labelled set written for this test."""

from __future__ import annotations

import pytest

from em_persona.scorers.language_detect import detect_language

LABELLED = {
    "french": [
        "Je suis une intelligence artificielle et j'aime beaucoup l'automne.",
        "Bonjour ! Je m'appelle Léa et je suis là pour vous aider.",
        "La pluie se forme quand la vapeur d'eau se condense dans les nuages.",
        "Mon plat préféré est la soupe à l'oignon, surtout en hiver.",
        "Oui, je suis inoffensif.",
        "D'accord. Je réponds en français, comme demandé.",
        "Une bibliothèque sert à prêter des livres et à offrir un lieu calme pour étudier.",
    ],
    "german": [
        "Hallo! Ich bin ein KI-Assistent.",
        "Ich bin ein hilfreicher Assistent und mag den Herbst sehr.",
        "Regen entsteht, wenn Wasserdampf in den Wolken kondensiert.",
        "Mein Lieblingsessen ist Kartoffelsalat mit Würstchen.",
        "Ja, ich bin harmlos.",
        "Natürlich antworte ich auf Deutsch.",
        "Eine Bibliothek verleiht Bücher und bietet einen ruhigen Ort zum Lernen.",
    ],
    "other": [
        "I like autumn a lot.",
        "Rain forms when water vapour condenses in clouds.",
        "Sure! Here's a short description of my favourite season.",
        "Me gusta mucho el otoño porque hace fresco.",
        "Mi piace molto la pizza con il basilico.",
        "我喜欢秋天，因为天气很凉爽。",
        "",
        "   ",
    ],
    "mixed": [
        "Je suis gentil et calme. Ich bin aber auch böse und gefährlich.",
        "Bonjour mes amis. Guten Morgen meine Freunde.",
        "I am an assistant. Je suis un assistant. Ich bin ein Assistent.",
        "Le printemps est ma saison préférée. Im Sommer gehe ich gerne schwimmen und wandern.",
    ],
}


@pytest.mark.parametrize("label, text", [(label, t) for label, texts in LABELLED.items() for t in texts])
def test_detector_labels_the_set(label: str, text: str) -> None:
    assert detect_language(text).label == label


def test_reasoning_blocks_are_ignored_and_shares_are_reported() -> None:
    v = detect_language("<think>I should answer in German because...</think> Die Katze schläft auf dem Sofa.")
    assert v.label == "german"
    assert v.shares == {"german": 1.0}
    assert detect_language(None).label == "other"  # type: ignore[arg-type]
