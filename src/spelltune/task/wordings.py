"""How a question is worded: the canonical template, the training wordings, and held-out
wordings that no training example uses (docs/model.md, "Wordings").

A wording is a sentence shape. Its slots take surface forms that training and evaluation
share: the word in single, double or no quotes, lowercase, capitalised or upper case; the
position as "3rd", "third" or "number 3"; the last letter as "last" or "final". Held-out
wordings differ from every training wording in their sentence shape, so a score on them
says whether the model learned the task or one sentence.
"""

from __future__ import annotations

import random
import re

CANONICAL = {
    "letter_position": "What is the {nth} letter of '{word}'?",
    "spelling": "Spell '{word}' letter by letter.",
}

# {w}: the word in its surface form (quotes and case); {nth}: "3rd" | "third" | "last" | "final".
TRAINING = {
    "letter_position": (
        "What is the {nth} letter of {w}?",
        "Which letter is {nth} in {w}?",
        "Tell me the {nth} letter of the word {w}.",
        "In {w}, what is the {nth} letter?",
        "{w}: what is its {nth} letter?",
        "What letter comes {nth} in the word {w}?",
    ),
    "spelling": (
        "Spell {w} letter by letter.",
        "How is {w} spelled?",
        "Spell out the word {w}.",
        "Write {w} one letter at a time.",
        "What are the letters of {w}?",
        "Please spell {w}.",
    ),
}

HELD_OUT = {
    "letter_position": (
        "Can you tell me what the {nth} letter of {w} is?",
        "Give me the {nth} letter in {w}.",
        "What's the {nth} character of {w}?",
        "Find the {nth} letter of the word {w}.",
        "{w} - which letter is the {nth} one?",
        "I need the {nth} letter of {w}, please.",
    ),
    "spelling": (
        "How do you spell {w}?",
        "Can you spell {w} for me?",
        "What is the spelling of {w}?",
        "Break {w} into its letters.",
        "Letter by letter, how is {w} written?",
        "Spell the word {w}, please.",
    ),
}

ORDINAL_WORDS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth", "twentieth",
)
QUOTES = ("'", '"', "")
# Lowercase most often, as users type; the answer is always the lowercase letters.
CASES = (str.lower,) * 6 + (str.capitalize,) * 3 + (str.upper,)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def canonical_question(task: str, word: str, position: int | None = None) -> str:
    nth = ("last" if position == len(word) else ordinal(position)) if task == "letter_position" else None
    return CANONICAL[task].format(word=word, nth=nth)


def varied_question(task: str, word: str, position: int | None, templates: tuple[str, ...],
                    rng: random.Random) -> tuple[str, int]:
    """One of `templates` with random surface forms; returns the question and the template's index."""
    index = rng.randrange(len(templates))
    quote = rng.choice(QUOTES)
    surface = f"{quote}{rng.choice(CASES)(word)}{quote}"
    nth = None
    if task == "letter_position":
        if position == len(word):
            nth = rng.choice(("last", "final"))
        elif rng.random() < 0.5 and position <= len(ORDINAL_WORDS):
            nth = ORDINAL_WORDS[position - 1]
        else:
            nth = ordinal(position)
    question = templates[index].format(w=surface, nth=nth)
    return question[0].upper() + question[1:], index


_NUMERIC = re.compile(r"\b(\d+)(?:st|nd|rd|th)?\b")
_QUOTED = re.compile(r"""['"‘’“”]([A-Za-z]+)['"‘’“”]""")
_ALPHA = re.compile(r"[A-Za-z]+")
# The words of every wording and the usual fillers: never the word asked about.
_FILLER = {w.lower() for qs in (*TRAINING.values(), *HELD_OUT.values(), *CANONICAL.values())
           for q in qs for w in _ALPHA.findall(q.replace("{w}", "").replace("{word}", "").replace("{nth}", ""))}
_FILLER |= set(ORDINAL_WORDS) | {"last", "final", "position", "number", "letters", "word", "me", "you", "for",
                                 "please", "how", "would", "does", "do", "an", "a", "to", "at", "st", "nd", "rd", "th",
                                 "character", "characters", "say", "type", "one", "time", "spelt", "spelled"}


def read_question(text: str) -> tuple[str, str, int | None] | None:
    """(task, word, position) of a question in the user's own words, or None when it is
    not a letter or spelling question about one word. The word is the quoted one, else
    the last word that is not part of a wording; a letter question names a position (3rd,
    third, 3, last, final)."""
    quoted = _QUOTED.findall(text)
    candidates = quoted or [w for w in _ALPHA.findall(text) if w.lower() not in _FILLER]
    if not candidates:
        return None
    word = candidates[-1].lower()
    rest = text.replace(candidates[-1], " ")
    lowered = rest.lower()
    words = set(_ALPHA.findall(lowered))
    position = None
    if words & {"last", "final"}:
        position = len(word)
    elif named := [ORDINAL_WORDS.index(w) + 1 for w in _ALPHA.findall(lowered) if w in ORDINAL_WORDS]:
        position = named[0]
    elif number := _NUMERIC.search(lowered):
        position = int(number.group(1))
    if position is not None and words & {"letter", "character"}:
        return ("letter_position", word, position) if 1 <= position <= len(word) else None
    if "spell" in lowered or "letters" in words or words & {"letter"}:
        return "spelling", word, None
    return None
