"""Standing preferences: a newer statement replaces an older one only when both are about the same thing."""

from __future__ import annotations

import numpy as np
import pytest

from features.events import Event
from features.preferences import Preference, add_preference, preferences_conflict
from features.state import StateSpec, UserState
from p13n.config import StateConfig

REPLACES = [
    ("I am vegetarian", "I am not vegetarian anymore"),  # negation of the same statement
    ("I like jazz", "I don't like jazz"),
    ("I like jazz", "I hate jazz"),
    ("I don't like jazz", "I love jazz"),
    ("I love jazz", "I like jazz"),  # a restatement
    ("I am allergic to nuts", "I'm not allergic to nuts"),
    ("I am allergic to nuts.", "i am ALLERGIC to nuts"),
    ("I live in Paris", "I live in Berlin"),  # single-valued
    ("I live in Paris", "I no longer live in Paris"),
    ("I am from Spain", "I am from Chile"),
    ("I work at Acme", "I work at Globex"),
    ("My name is Ana", "My name is Bea"),
    ("My favourite colour is blue", "My favourite colour is dark red"),
    ("I am 30 years old", "I am 31 years old"),  # the same claim with another number
    ("I have 2 kids", "I have 3 kids"),
    ("I am vegetarian", "I am vegan"),  # one diet at a time
    ("I'm vegan", "I am pescatarian"),
]

KEEPS_BOTH = [
    ("I am allergic to nuts", "I am allergic to cats"),  # the hardening case: both can be true
    ("I like jazz", "I like rock"),
    ("I don't like jazz", "I don't like rock"),
    ("I like jazz", "I don't like rock"),
    ("I am vegetarian", "I live in Berlin"),
    ("I am vegan", "I am allergic to nuts"),
    ("I speak French", "I speak German"),
    ("I have a dog", "I have a cat"),
    ("My favourite colour is blue", "My favourite food is pasta"),
    ("I live in Paris", "I don't live in Berlin"),  # compatible: a negative does not fill the single value
    ("I live in Paris", "I like Paris"),
    ("I am vegan", "I am tall"),
    ("I am allergic to nuts", "I am not allergic to cats"),
]


@pytest.mark.parametrize(("old", "new"), REPLACES)
def test_the_newer_statement_replaces_one_about_the_same_thing(old, new):
    assert preferences_conflict(old, new) and preferences_conflict(new, old)
    kept = add_preference([Preference(old, 1, "e1")], Preference(new, 2, "e2"), limit=10)
    assert [p.text for p in kept] == [new]
    late = add_preference([Preference(new, 2, "e2")], Preference(old, 1, "e1"), limit=10)  # arrives late: loses
    assert [p.text for p in late] == [new]


@pytest.mark.parametrize(("old", "new"), KEEPS_BOTH)
def test_statements_about_different_things_are_both_kept(old, new):
    assert not preferences_conflict(old, new) and not preferences_conflict(new, old)
    kept = add_preference([Preference(old, 1, "e1")], Preference(new, 2, "e2"), limit=10)
    assert [p.text for p in kept] == [old, new]


def test_the_two_allergies_of_the_hardening_case_are_both_kept():
    """events-two-preferences.json, folded: the cats allergy replaced the nuts allergy."""
    user = UserState.new(StateSpec.from_config(StateConfig(), dim=2))
    events = [Event(event_id="p1", user_id="u-pref", type="preference", text="I am allergic to nuts", ts_ms=1795000000000),
              Event(event_id="p2", user_id="u-pref", type="preference", text="I am allergic to cats", ts_ms=1795000001000)]  # fmt: skip
    vectors = {e.text: np.array([1.0, 0.0], dtype=np.float32) for e in events}
    user.fold(events, {}, vectors)
    assert [p.text for p in user.preferences] == ["I am allergic to nuts", "I am allergic to cats"]
