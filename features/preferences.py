"""Standing preferences ("I am vegetarian"), kept verbatim; a newer statement replaces an older one
only when both are about the same thing.

The rule (:func:`preferences_conflict`) is deliberately simple and predictable — a few lines of
normalisation and three tests, no model:

1. Normalise: lower case, contractions expanded (``don't`` → ``do not``, ``I'm`` → ``I am``),
   punctuation and filler words (``really``, ``anymore``, ``now``, ``do``, …) dropped, every number
   made ``#``. Negations (``not``, ``no``, ``never``, ``no longer``) and the sentiment verbs
   (``like``/``love``/``enjoy`` and ``dislike``/``hate``) become the statement's *polarity*; what
   is left is its *claim*.
2. Same claim, whatever the polarity or the numbers — a restatement, a negation or a new count:
   replace. "I like jazz" → "I don't like jazz"; "I am 30 years old" → "I am 31 years old".
3. A single-valued claim (``I live in …``, ``I am from …``, ``I work at/for/as …``,
   ``my name is …``, ``my <thing> is …``), both positive, same frame: replace.
   "I live in Paris" → "I live in Berlin".
4. Both positive and both a diet (``I am vegetarian`` → ``I am vegan``): replace; one eats one diet.

Everything else is kept side by side: "I am allergic to nuts" and "I am allergic to cats", "I like
jazz" and "I like rock" are both true.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Preference", "preferences_conflict", "add_preference"]


class Preference(NamedTuple):
    """A standing preference, kept verbatim."""

    text: str
    ts_ms: int
    event_id: str


_CONTRACTIONS = (
    ("can't", "can not"), ("won't", "will not"), ("n't", " not"), ("i'm", "i am"), ("'re", " are"),
    ("'ve", " have"), ("'ll", " will"), ("'d", " would"),
)  # fmt: skip
_NEGATORS = frozenset({"not", "no", "never", "longer"})  # "no longer": both words go
_FILLERS = frozenset({"do", "does", "did", "really", "actually", "anymore", "any", "more", "now", "still", "again",
                      "just", "also", "too", "very", "so", "truly", "currently", "please", "though"})  # fmt: skip
_POSITIVE_VERBS = frozenset({"like", "likes", "love", "loves", "enjoy", "enjoys", "adore", "adores"})
_NEGATIVE_VERBS = frozenset({"dislike", "dislikes", "hate", "hates", "detest", "detests"})
_SENTIMENT = "<likes>"
#: Claims with one value at a time: the frame (leading words) and, for ``my … is``, a pattern.
_SINGLE_VALUED = (("i", "live", "in"), ("i", "am", "from"), ("i", "come", "from"), ("i", "work", "at"),
                  ("i", "work", "for"), ("i", "work", "as"), ("my", "name", "is"), ("call", "me"))  # fmt: skip
_DIETS = frozenset({"vegetarian", "vegan", "pescatarian", "pescetarian", "omnivore", "omnivorous", "carnivore",
                    "flexitarian", "keto", "paleo"})  # fmt: skip


class _Statement(NamedTuple):
    claim: tuple[str, ...]
    negative: bool


def _statement(text: str) -> _Statement:
    """``text`` reduced to its claim and polarity (rule 1 of the module docstring).

    >>> _statement("I don't really like Jazz anymore!")
    _Statement(claim=('i', '<likes>', 'jazz'), negative=True)
    >>> _statement("I'm no longer 30")
    _Statement(claim=('i', 'am', '#'), negative=True)
    """
    lowered = text.lower().replace("\u2019", "'")
    for short, long in _CONTRACTIONS:
        lowered = lowered.replace(short, long)
    claim: list[str] = []
    negative = False
    for word in re.findall(r"[^\W_]+", lowered):
        if word in _NEGATORS:
            negative = not negative if word != "longer" else negative
        elif word in _FILLERS:
            continue
        elif word in _POSITIVE_VERBS or word in _NEGATIVE_VERBS:
            negative ^= word in _NEGATIVE_VERBS
            claim.append(_SENTIMENT)
        else:
            claim.append("#" if word.isdigit() else word)
    return _Statement(tuple(claim), negative)


def _frame(claim: tuple[str, ...]) -> tuple[str, ...] | None:
    """The single-valued frame ``claim`` fills, if any (rule 3)."""
    for frame in _SINGLE_VALUED:
        if claim[: len(frame)] == frame and len(claim) > len(frame):
            return frame
    if len(claim) >= 4 and claim[0] == "my" and "is" in claim[2:-1]:  # my favourite colour is blue
        return claim[: claim.index("is", 2) + 1]
    return None


def _diet(claim: tuple[str, ...]) -> bool:
    return len(claim) == 3 and claim[:2] == ("i", "am") and claim[2] in _DIETS


def preferences_conflict(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are about the same thing, so the newer replaces the older (rules above).

    >>> preferences_conflict("I am vegetarian", "I am not vegetarian anymore")
    True
    >>> preferences_conflict("I am allergic to nuts", "I am allergic to cats")
    False
    >>> preferences_conflict("I live in Paris", "I live in Berlin")
    True
    """
    sa, sb = _statement(a), _statement(b)
    if not sa.claim or not sb.claim:
        return a.strip().lower() == b.strip().lower()
    if sa.claim == sb.claim:
        return True
    if sa.negative or sb.negative:
        return False
    frame = _frame(sa.claim)
    if frame is not None and frame == _frame(sb.claim):
        return True
    return _diet(sa.claim) and _diet(sb.claim)


def add_preference(preferences: list[Preference], new: Preference, *, limit: int) -> list[Preference]:
    """``preferences`` with ``new`` added: it replaces older statements on the same subject and loses to
    a newer one; the newest ``limit`` are kept, oldest first.

    >>> prefs = add_preference([], Preference("I am vegetarian", 1, "e1"), limit=5)
    >>> prefs = add_preference(prefs, Preference("I live in Berlin", 2, "e2"), limit=5)
    >>> [p.text for p in add_preference(prefs, Preference("I am not vegetarian anymore", 3, "e3"), limit=5)]
    ['I live in Berlin', 'I am not vegetarian anymore']
    """
    keep: list[Preference] = []
    for old in preferences:
        if preferences_conflict(old.text, new.text):
            if (old.ts_ms, old.event_id) > (new.ts_ms, new.event_id):
                return preferences  # an existing newer statement on the same subject wins
            continue  # the new statement replaces the old one
        keep.append(old)
    keep.append(new)
    keep.sort(key=lambda p: (p.ts_ms, p.event_id))
    return keep[-limit:]
