"""Standing preferences ("I am vegetarian"), kept verbatim; a newer statement replaces an older one
only when both are about the same thing.

What is kept is the *set of statements* seen, not a running answer: the newest ``limit`` of them by
(event time, event id), one per wording (:func:`add_preference`), and what is shown is derived from
that set when read — a statement is shown unless a newer statement about the same thing is kept
(:func:`standing_preferences`). Both are functions of the set, so arrival order and replays change
nothing (DESIGN.md §3, §4), even though "about the same thing" is not transitive: "I am not
vegetarian anymore" meets "I am vegetarian", which meets "I am vegan", but not "I am vegan" itself.
A running newest-wins list (the earlier form) dropped the middle statement and then let a replay of
the first come back beside the last.

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

import functools
import re
from typing import NamedTuple

__all__ = ["Preference", "preferences_conflict", "add_preference", "standing_preferences"]


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


class _Subject(NamedTuple):
    """What :func:`preferences_conflict` reads of a statement, worked out once per text."""

    raw: str | None  # the stripped lower-case text, for a statement without a claim; else None
    claim: tuple[str, ...]
    negative: bool
    frame: tuple[str, ...] | None
    diet: bool


@functools.lru_cache(maxsize=4096)  # the same few statements of a user are compared again on every read
def _subject(text: str) -> _Subject:
    statement = _statement(text)
    if not statement.claim:
        return _Subject(text.strip().lower(), (), statement.negative, None, False)
    return _Subject(None, statement.claim, statement.negative, _frame(statement.claim), _diet(statement.claim))


def _conflict(a: _Subject, b: _Subject) -> bool:
    if a.raw is not None or b.raw is not None:  # no claim: only the same text (a claim never has that text)
        return a.raw == b.raw
    if a.claim == b.claim:
        return True
    if a.negative or b.negative:
        return False
    if a.frame is not None and a.frame == b.frame:
        return True
    return a.diet and b.diet


def preferences_conflict(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are about the same thing, so the newer replaces the older (rules above).

    >>> preferences_conflict("I am vegetarian", "I am not vegetarian anymore")
    True
    >>> preferences_conflict("I am allergic to nuts", "I am allergic to cats")
    False
    >>> preferences_conflict("I live in Paris", "I live in Berlin")
    True
    """
    return _conflict(_subject(a), _subject(b))


def _wording(text: str) -> tuple:
    """Statements with one wording conflict with exactly the same statements (:func:`preferences_conflict`
    reads only the claim and polarity, or the stripped lower-case text when there is no claim), so only
    the newest of a wording is ever needed: an older one hides nothing the newer one does not."""
    subject = _subject(text)
    return (subject.raw, subject.claim, subject.negative)


def _order(preference: Preference) -> tuple[int, str, str]:
    """The total order statements are kept and shown in: event time, then event id (then text, so that
    even a malformed replay — one event id, two texts — is ordered the same whatever arrives first)."""
    return preference.ts_ms, preference.event_id, preference.text


def add_preference(statements: list[Preference], new: Preference, *, limit: int) -> list[Preference]:
    """``statements`` (oldest first) with ``new`` added: the newest ``limit`` by (event time, event id),
    only the newest of each wording; ``statements`` is not changed. The result depends only on the set
    of statements ever added, not on their order or on repeats (a set-union followed by an order-free
    cut), so a replayed or late event lands where it would have had it arrived in order. Show them with
    :func:`standing_preferences`.

    >>> statements = add_preference([], Preference("I am vegetarian", 1, "e1"), limit=5)
    >>> statements = add_preference(statements, Preference("I live in Berlin", 2, "e2"), limit=5)
    >>> statements = add_preference(statements, Preference("I am not vegetarian anymore", 3, "e3"), limit=5)
    >>> [p.text for p in statements]
    ['I am vegetarian', 'I live in Berlin', 'I am not vegetarian anymore']
    >>> [p.text for p in add_preference(statements, Preference("I'm vegetarian!", 0, "e0"), limit=5)]
    ['I am vegetarian', 'I live in Berlin', 'I am not vegetarian anymore']
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    key, wording = _order(new), _wording(new.text)
    keep: list[Preference] = []
    for old in statements:
        if _wording(old.text) == wording:
            if _order(old) >= key:
                return statements  # the same statement again, or an older one with this wording: nothing new
            continue  # ``new`` is the newer of this wording
        keep.append(old)
    keep.append(new)
    if len(keep) > 1 and _order(keep[-2]) > key:
        keep.sort(key=_order)
    return keep[-limit:]


def standing_preferences(statements: list[Preference]) -> list[Preference]:
    """The statements shown, oldest first: each one unless a newer statement among ``statements`` is about
    the same thing (:func:`preferences_conflict`). No two shown statements conflict, the newest is always
    shown, and which are shown depends only on the set of ``statements``.

    >>> statements = [Preference("I am not vegetarian anymore", 1, "e1"), Preference("I am vegetarian", 2, "e2"),
    ...               Preference("I live in Berlin", 3, "e3"), Preference("I am vegan", 4, "e4")]
    >>> [p.text for p in standing_preferences(statements)]
    ['I live in Berlin', 'I am vegan']
    """
    ordered = statements if all(_order(a) <= _order(b) for a, b in zip(statements, statements[1:])) \
        else sorted(statements, key=_order)  # fmt: skip
    # newest first, remembering what the newer statements are about: one pass instead of comparing every pair
    # (the same tests as _conflict, read as set lookups)
    raws: set[str] = set()
    claims: set[tuple[str, ...]] = set()
    frames: set[tuple[str, ...]] = set()  # of positive statements
    diet = False  # a positive diet statement is newer
    shown: list[Preference] = []
    for p in reversed(ordered):
        subject = _subject(p.text)
        if subject.raw is not None:
            if subject.raw not in raws:
                shown.append(p)
            raws.add(subject.raw)
            continue
        replaced = subject.claim in claims or (not subject.negative and (
            subject.frame in frames or (subject.diet and diet)))  # fmt: skip
        if not replaced:
            shown.append(p)
        claims.add(subject.claim)
        if not subject.negative:
            if subject.frame is not None:
                frames.add(subject.frame)
            diet = diet or subject.diet
    return shown[::-1]
