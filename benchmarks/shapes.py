"""Request shapes for ``p13n bench load``: synthetic users, or MovieLens users replayed into the stack.

``synthetic`` publishes :mod:`features.datasets.synthetic` users (40 events each, small catalog) and scores
100 consecutive catalog items. ``movielens`` imports a MovieLens directory (``p13n import movielens``:
9,742 movies, 100,836 ratings for ml-latest-small), publishes every rating except each evaluated
user's held-out one through Kafka, waits until the consumer folded them, and scores, per user, the
evaluation protocol's candidates: the held-out item + 100 distinct catalog items the user never rated
(:func:`features.evaluation.replay.held_out_events` and its negative sampler). The ratings are shifted in time
so that the last one is a minute old (the spacing kept): the stack scores at the wall clock, and that
is the moment ``p13n eval --at-end`` scores at on the log as it is.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from p13n.clock import now_ms as wall_ms

__all__ = ["SHAPES", "Shapes", "synthetic_shapes", "movielens_shapes"]

SHAPES = ("synthetic", "movielens")


@dataclass
class Shapes:
    """What ``/v1/score`` requests look like: per request n, a user and its candidate item ids."""

    name: str
    users: list[str]
    candidates: list[list[str]]  # candidates[n % len(candidates)] goes with users[n % len(users)]
    catalog_items: int
    events: int

    def score_body(self, n: int) -> dict:
        i = n % len(self.users)
        return {"user_id": self.users[i], "k": 10, "candidates": [{"item_id": c} for c in self.candidates[i]]}

    def describe(self) -> dict:
        sizes = [len(c) for c in self.candidates]
        return {"name": self.name, "users": len(self.users), "catalog_items": self.catalog_items, "events": self.events,
                "candidates_per_request": {"min": min(sizes), "max": max(sizes)}}  # fmt: skip


def synthetic_shapes(users: list[str], items: list[str], n_candidates: int = 100) -> Shapes:
    """The synthetic users, each with a window of ``n_candidates`` consecutive catalog items."""
    windows = []
    for n in range(len(users)):
        start = (n * 7) % max(1, len(items) - n_candidates)
        windows.append(items[start : start + n_candidates])
    return Shapes("synthetic", users, windows, len(items), 0)


def movielens_shapes(config, directory: Path, *, tenant: str = "demo", negatives: int = 100, seed: int = 0,
                     timeout_s: float = 600, progress=lambda text: None) -> Shapes:  # fmt: skip
    """Import ``directory``, publish it minus the held-out ratings, wait for the fold, build the requests.

    Raises :class:`p13n.errors.InputError` when ``directory`` is not a MovieLens directory.
    """
    from features.evaluation.replay import held_out_events, sample_negatives
    from features.core.events import Rejection, parse_event
    from features.datasets.synthetic import SyntheticData
    from p13n.errors import ServiceError
    from p13n.importers import import_movielens
    from p13n.seeding import publish, wait_folded

    now = wall_ms()
    with tempfile.TemporaryDirectory(prefix="p13n-load-ml-") as tmp:
        progress("importing MovieLens")
        import_movielens(Path(directory), Path(tmp), tenant=tenant, now_ms=now)
        items = [json.loads(line) for line in (Path(tmp) / "items.jsonl").read_text().splitlines() if line.strip()]
        raw = [json.loads(line) for line in (Path(tmp) / "events.jsonl").read_text().splitlines() if line.strip()]
    # Replayed as if the log ended a minute ago: the stack reads state at the wall clock, and users whose
    # last rating is years old would have every short horizon decayed to nothing (ratings keep their spacing).
    shift = now - 60_000 - max(row["timestamp"] for row in raw) if raw else 0
    events, dicts = [], []
    for row in raw:
        row["timestamp"] += shift
        parsed = parse_event(json.dumps(row).encode(), now_ms=now)
        if not isinstance(parsed, Rejection):
            events.append(parsed)
            dicts.append(row)
    held = held_out_events(events, config.state)  # user key -> event_id
    held_ids = set(held.values())
    truth = {e.key: e.item_id for e in events if e.event_id in held_ids}
    user_of = {e.key: e.user_id for e in events}
    rated: dict[str, set[str]] = {}
    for e in events:
        if e.item_id is not None:
            rated.setdefault(e.key, set()).add(e.item_id)
    catalog = sorted({i["item_id"] for i in items} | {e.item_id for e in events if e.item_id is not None})
    index = {item: n for n, item in enumerate(catalog)}
    negs = sample_negatives(sorted(truth), truth, rated, catalog, index, negatives, seed)
    keys = sorted(negs)
    data = SyntheticData(items=items, events=[d for d in dicts if d["event_id"] not in held_ids])
    try:  # a stack that already folded these ratings (an earlier run) is not sent them again
        wait_folded(config, data, timeout_s=1.0)
        progress("the stack already holds these ratings")
    except ServiceError:
        progress(f"publishing {len(data.items)} items and {len(data.events)} ratings through Kafka")
        publish(config, data)
        progress("waiting for the consumer to fold the ratings")
        wait_folded(config, data, timeout_s=timeout_s)
    return Shapes("movielens", [user_of[k] for k in keys], [[truth[k], *negs[k]] for k in keys], len(catalog),
                  len(data.events))  # fmt: skip
