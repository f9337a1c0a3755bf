"""Standing preferences ("I am vegetarian"), kept verbatim; the newest statement on a subject wins."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Preference", "preferences_conflict", "add_preference"]


class Preference(NamedTuple):
    """A standing preference, kept verbatim."""

    text: str
    ts_ms: int
    event_id: str


def _content_words(text: str) -> frozenset[str]:
    stop = {"i", "am", "a", "an", "the", "and", "or", "to", "of", "my", "me", "for", "in", "on", "is", "be",
            "not", "no", "never", "don't", "do", "really", "very", "like", "love", "hate", "prefer", "please"}  # fmt: skip
    return frozenset(w for w in "".join(c.lower() if c.isalnum() or c in "'" else " " for c in text).split() if w not in stop)


def preferences_conflict(a: str, b: str) -> bool:
    """Two preferences are about the same thing when their content words mostly overlap.

    >>> preferences_conflict("I am vegetarian", "I am not vegetarian anymore")
    True
    >>> preferences_conflict("I am vegetarian", "I live in Berlin")
    False
    """
    wa, wb = _content_words(a), _content_words(b)
    if not wa or not wb:
        return a.strip().lower() == b.strip().lower()
    return len(wa & wb) / min(len(wa), len(wb)) >= 0.5


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
