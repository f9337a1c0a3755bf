"""Synthetic multi-session conversations with questions, in the format ``p13n eval memory`` reads.

One conversation is a JSON object: ``speaker_a``, ``speaker_b``, ``session_<n>`` (a list of turns
``{speaker, dia_id, text}``, ``dia_id`` = ``D<n>:<i>``), ``session_<n>_date_time`` (``"1:56 pm on 8
May, 2023"``) and ``qa``: ``[{question, answer, evidence: [dia_id…], category}]`` with the categories
of that format: 1 multi-hop (two turns), 2 temporal ("when"), 3 a fact updated later (the evidence
is the update, the older value is a trap), 4 single-hop.

What makes it a test of memory rather than of keyword search:

- each fact is stated **once**, among many distractor turns (small talk, and near misses: the other
  speaker talking about the same kind of thing);
- questions are **paraphrased** ("What did she name her new pet?" for "We named the puppy Biscuit"),
  and the fact is often the *reply* to the other speaker's question, so the neighbouring turn
  carries the words the question uses;
- times are **relative** ("yesterday", "last week"): the answer is a date only the session's date
  gives;
- some facts are **updated** later ("we moved again, we live in Lyon now").

Deterministic by ``seed``. Our own generator plants the signal the retrievers then find: its numbers
test the code and compare retrievers on equal terms; they are not a quality claim (that needs real
conversations).

>>> conv = generate_conversation(seed=1, sessions=3, turns_per_session=12)
>>> sorted(k for k in conv if not k.startswith("session_"))
['qa', 'speaker_a', 'speaker_b']
>>> conv["session_1"][0]["dia_id"], bool(conv["session_1_date_time"])
('D1:1', True)
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

__all__ = ["generate_conversation", "generate", "format_session_date"]

_NAMES = ["Caroline", "Melanie", "Jon", "Gina", "Nate", "Joanna", "Tim", "John", "Audrey", "Andrew", "Maria", "Evan",
          "Sam", "Deborah", "Jolene", "Calvin", "Dave", "James"]  # fmt: skip
_SMALL_TALK = [
    "Hey! How have you been?", "Pretty good, thanks for asking. Work has been hectic though.",
    "That sounds exhausting, hope you get some rest.", "Haha, I know what you mean.",
    "The weather has been lovely lately, perfect for a walk.", "I've been reading a lot in the evenings.",
    "Did you watch the game on Sunday?", "Not really, I was busy cleaning the house.",
    "Same here, the week just flew by.", "I'm so glad we get to catch up like this.",
    "Thanks, that means a lot to me.", "Totally agree with you.", "Take care and talk soon!",
    "I made pasta for dinner and it turned out great.", "My phone battery keeps dying, so annoying.",
    "I tried a new coffee place downtown, it was okay.", "Wow, that's amazing, good for you!",
    "I've been feeling a bit tired, need more sleep.", "We should plan something fun together.",
    "Sounds like a plan! Let me know when you're free.", "I love hearing about your adventures.",
    "Traffic this morning was terrible.", "I finally cleaned out my closet.", "That's so thoughtful of you.",
]  # fmt: skip
_ANIMALS = [("puppy", "dog"), ("kitten", "cat"), ("rabbit", "rabbit"), ("parrot", "bird")]
_PET_NAMES = ["Biscuit", "Luna", "Pepper", "Milo", "Oliver", "Daisy", "Hazel", "Ziggy"]
_HOBBIES = [("pottery", "making ceramics"), ("salsa dancing", "a kind of dance"), ("violin", "a string instrument"),
            ("rock climbing", "a climbing sport"), ("watercolor painting", "a kind of painting"),
            ("woodworking", "building furniture")]  # fmt: skip
_EVENTS = [("LGBTQ support group meeting", "support group"), ("charity run", "race for charity"),
           ("jazz concert", "concert"), ("pottery workshop", "workshop"), ("book club meeting", "book club"),
           ("community garden cleanup", "garden volunteering"), ("job fair", "career fair")]  # fmt: skip
_RELATIVE = [("yesterday", 1), ("two days ago", 2), ("last week", 7), ("last weekend", 2)]
_CITIES = ["Lisbon", "Denver", "Osaka", "Toronto", "Lyon", "Austin", "Krakow", "Melbourne"]
_JOBS = [("nurse", "St. Mary's hospital"), ("software engineer", "a small startup"),
         ("teacher", "the local middle school"), ("chef", "an Italian restaurant"), ("counselor", "a youth center")]
_TOPICS = [("adoption agencies", "ways to adopt a child"), ("renewable energy", "clean power sources"),
           ("marine biology", "life in the ocean"), ("ancient Rome", "Roman history")]  # fmt: skip


def format_session_date(when: datetime) -> str:
    """The format's session date: ``"1:56 pm on 8 May, 2023"``.

    >>> format_session_date(datetime(2023, 5, 8, 13, 56))
    '1:56 pm on 8 May, 2023'
    """
    hour = when.hour % 12 or 12
    return f"{hour}:{when.minute:02d} {'am' if when.hour < 12 else 'pm'} on {when.day} {when:%B}, {when.year}"


def _day(when: datetime) -> str:
    return f"{when.day} {when:%B} {when.year}"


def _facts(rng: random.Random, a: str, b: str) -> list[dict]:
    """Facts about speaker ``a``: per fact the turns that state it (speaker, text, is evidence) and its question(s)."""
    facts = []
    animal, kind = rng.choice(_ANIMALS)
    pet = rng.choice(_PET_NAMES)
    facts.append({"turns": [(a, f"Guess what, I adopted a {animal} from the shelter this week!", False),
                            (b, f"No way, that's adorable! What did you call the little {kind}?", False),
                            (a, f"We went with {pet}, it just suits her.", True)],
                  "qa": [(f"What is the name of {a}'s new pet?", pet, 4)]})  # fmt: skip
    hobby, what = rng.choice(_HOBBIES)
    facts.append({"turns": [(a, f"I signed up for {hobby} classes, every Saturday morning.", True),
                            (b, "Ooh, how did the first one go?", False)],
                  "qa": [(f"Which new activity has {a} taken up, {what}?", hobby, 4)]})  # fmt: skip
    event, short = rng.choice(_EVENTS)
    relative, days = rng.choice(_RELATIVE)
    facts.append({"turns": [(b, "What have you been up to?", False),
                            (a, f"I went to a {event} {relative}, it was really moving.", True)],
                  "when": days, "qa": [(f"When did {a} go to the {short}?", None, 2)]})  # fmt: skip
    job, place = rng.choice(_JOBS)
    facts.append({"turns": [(a, f"Big news: I start as a {job} at {place} next month.", True),
                            (b, "Congratulations! You totally deserve it.", False)],
                  "qa": [(f"What does {a} do for a living now?", job, 4)]})  # fmt: skip
    topic, gloss = rng.choice(_TOPICS)
    facts.append({"turns": [(b, "You seemed busy on your laptop last time, what's that about?", False),
                            (a, f"I've been researching {topic} a lot, reading everything I can find.", True)],
                  "qa": [(f"What did {a} research, {gloss}?", topic, 4)]})  # fmt: skip
    old, new = rng.sample(_CITIES, 2)
    facts.append({"turns": [(a, f"We finally moved to {old}! Still unpacking boxes.", False)],
                  "update": {"turns": [(a, f"Plot twist, we relocated again, we're settled in {new} now.", True)]},
                  "qa": [(f"Which city is {a}'s current home?", new, 3)]})  # fmt: skip
    facts.append({"turns": [], "link": (0, 5), "qa": [(f"What pet did {a} get, and where does {a} live now?",
                                                       f"a {kind} named {pet}; {new}", 1)]})  # fmt: skip
    # near misses: the other speaker on the same subjects, never asked about
    other_animal, _ = rng.choice(_ANIMALS)
    facts.append({"turns": [(b, f"My cousin has a {other_animal} too, it chews everything.", False),
                            (b, f"I went to a {rng.choice(_EVENTS)[0]} once, years ago.", False),
                            (b, f"I visited {rng.choice(_CITIES)} on a work trip, nice city.", False)],
                  "qa": []})  # fmt: skip
    return facts


def generate_conversation(seed: int, sessions: int = 20, turns_per_session: int = 30,
                          start: datetime | None = None) -> dict:  # fmt: skip
    """One conversation (module docstring) of ``sessions`` sessions of about ``turns_per_session`` turns."""
    rng = random.Random(seed)
    a, b = rng.sample(_NAMES, 2)
    when = start or datetime(2023, 1, 5, 10, 0, tzinfo=timezone.utc) + timedelta(days=rng.randrange(300))
    facts = _facts(rng, a, b) + _facts(rng, b, a)
    plan: dict[int, list[tuple[int, list]]] = {}
    for index, fact in enumerate(facts):
        if not fact["turns"]:
            continue
        session = rng.randrange(1, max(2, sessions - 2))
        plan.setdefault(session, []).append((index, fact["turns"]))
        if "update" in fact:
            later = rng.randrange(session + 1, sessions + 1)
            plan.setdefault(later, []).append((-index - 1, fact["update"]["turns"]))
    conv: dict = {"speaker_a": a, "speaker_b": b}
    evidence: dict[int, list[str]] = {}
    said_on: dict[int, datetime] = {}
    for s in range(1, sessions + 1):
        when += timedelta(days=rng.randint(3, 14), hours=rng.randint(-3, 3), minutes=rng.randint(0, 59))
        conv[f"session_{s}_date_time"] = format_session_date(when)
        turns: list[tuple[str, str, int | None]] = []
        speakers = (a, b)
        for i in range(turns_per_session):
            turns.append((speakers[i % 2], rng.choice(_SMALL_TALK), None))
        for index, block in plan.get(s, []):
            at = rng.randrange(0, len(turns) + 1)
            turns[at:at] = [(spk, text, index if is_evidence else None) for spk, text, is_evidence in block]
        rows = []
        for i, (speaker, text, index) in enumerate(turns, 1):
            dia_id = f"D{s}:{i}"
            rows.append({"speaker": speaker, "dia_id": dia_id, "text": text})
            if index is not None:
                key = -index - 1 if index < 0 else index
                evidence.setdefault(key, []).append(dia_id)
                said_on[key] = when
        conv[f"session_{s}"] = rows
    qa = []
    for index, fact in enumerate(facts):
        for question, answer, category in fact["qa"]:
            if "link" in fact:
                first, second = (index - 6 + fact["link"][0], index - 6 + fact["link"][1])
                ids = evidence.get(first, []) + evidence.get(second, [])[-1:]
            else:
                ids = evidence.get(index, [])[-1:]  # the update, when there is one
            if "when" in fact and index in said_on:
                answer = _day(said_on[index] - timedelta(days=fact["when"]))
            qa.append({"question": question, "answer": answer, "evidence": ids, "category": category})
    conv["qa"] = qa
    return conv


def generate(conversations: int = 3, seed: int = 0, **kwargs) -> list[dict]:
    """``conversations`` conversations (seeds ``seed``, ``seed + 1``, …)."""
    return [generate_conversation(seed + n, **kwargs) for n in range(conversations)]
