"""Standing preferences: a newer statement replaces an older one only when both are about the same thing.

The order- and replay-independence of the kept statements is checked by the accumulator contracts
(tests/features/test_accumulator_contracts.py); here, which statements replace which, and the bound."""

from __future__ import annotations

import numpy as np
import pytest

from features.core.events import Event
from features.core.preferences import Preference, add_preference, preferences_conflict, standing_preferences
from features.core.state import StateSpec, UserState
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


def shown(*arrivals: Preference, limit: int = 10) -> list[str]:
    """The texts shown after folding ``arrivals`` in this order."""
    statements: list[Preference] = []
    for new in arrivals:
        statements = add_preference(statements, new, limit=limit)
    return [p.text for p in standing_preferences(statements)]


@pytest.mark.parametrize(("old", "new"), REPLACES)
def test_the_newer_statement_replaces_one_about_the_same_thing(old, new):
    assert preferences_conflict(old, new) and preferences_conflict(new, old)
    assert shown(Preference(old, 1, "e1"), Preference(new, 2, "e2")) == [new]
    assert shown(Preference(new, 2, "e2"), Preference(old, 1, "e1")) == [new]  # arrives late: loses


@pytest.mark.parametrize(("old", "new"), KEEPS_BOTH)
def test_statements_about_different_things_are_both_kept(old, new):
    assert not preferences_conflict(old, new) and not preferences_conflict(new, old)
    assert shown(Preference(old, 1, "e1"), Preference(new, 2, "e2")) == [old, new]
    assert shown(Preference(new, 2, "e2"), Preference(old, 1, "e1")) == [old, new]


def test_a_replaced_statement_is_kept_so_a_replay_of_what_it_replaced_stays_hidden():
    """The non-transitive chain: the middle statement hides the first even though the last replaced it."""
    first, middle, last = (Preference("I am not vegetarian anymore", 1, "e1"), Preference("I am vegetarian", 2, "e2"),
                           Preference("I am vegan", 3, "e3"))  # fmt: skip
    assert not preferences_conflict(first.text, last.text)
    assert shown(first, middle, last) == shown(last, middle, first) == shown(middle, last, first) == ["I am vegan"]
    assert shown(first, middle, last, first, middle) == ["I am vegan"]  # replays


def test_only_the_newest_of_a_wording_is_kept():
    statements: list[Preference] = []
    for n, text in enumerate(["I am vegan", "I live in Berlin", "I'm vegan!", "i am really VEGAN"]):
        statements = add_preference(statements, Preference(text, n, f"e{n}"), limit=3)
    assert [p.text for p in statements] == ["I live in Berlin", "i am really VEGAN"]
    same = add_preference(statements, Preference("I'm vegan", 0, "e9"), limit=3)  # an older one, late: nothing new
    assert same is statements


def test_the_newest_statements_are_kept_whatever_they_say():
    """The bound counts statements, replaced ones too: a replaced statement still hides older ones (above)."""
    arrivals = [Preference("I am allergic to nuts", 1, "e1"), Preference("I live in Paris", 2, "e2"),
                Preference("I live in Berlin", 3, "e3"), Preference("I live in Rome", 4, "e4")]  # fmt: skip
    assert shown(*arrivals, limit=4) == ["I am allergic to nuts", "I live in Rome"]
    assert shown(*arrivals, limit=3) == ["I live in Rome"]  # the allergy is older than the newest three
    assert shown(*arrivals[::-1], limit=3) == ["I live in Rome"]
    with pytest.raises(ValueError, match="limit"):
        add_preference([], arrivals[0], limit=0)


def test_the_two_allergies_of_the_hardening_case_are_both_kept():
    """events-two-preferences.json, folded: the cats allergy replaced the nuts allergy."""
    user = UserState.new(StateSpec.from_config(StateConfig(), dim=2))
    events = [Event(event_id="p1", user_id="u-pref", type="preference", text="I am allergic to nuts", ts_ms=1795000000000),
              Event(event_id="p2", user_id="u-pref", type="preference", text="I am allergic to cats", ts_ms=1795000001000)]  # fmt: skip
    vectors = {e.text: np.array([1.0, 0.0], dtype=np.float32) for e in events}
    user.fold(events, {}, vectors)
    assert [p.text for p in user.preferences] == ["I am allergic to nuts", "I am allergic to cats"]
