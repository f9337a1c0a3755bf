"""Offline replay evaluation (``p13n eval``): how well does each signal rank the next item?

The event log is replayed in time order through the same fold code the
consumer runs (in memory, no servers). At each user's held-out event — their
last positive event with an item — the true item is ranked among ``negatives``
items sampled from the catalog (never from the user's own history), by each
scorer variant, using only what was known just before that moment:

* ``popularity`` — forward-decayed popularity only;
* ``mean`` — a plain, non-decayed weighted mean of the user's item vectors;
* ``<horizon>`` — one decayed embedding alone (e.g. ``session``, ``long``);
* ``covisitation`` — co-visitation with the user's latest items;
* ``blend`` — the configured blend of every feature.

HR@10 counts hits in the top 10; NDCG@10 discounts by position. Ties are
broken by expected position (a tie with k others counts k/2 places lower), so
a variant that gives everything the same score gets chance level, not a hit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from features.events import Event
from features.scorer import Candidates, UserView, score
from features.signals import CoVisitation, Popularity
from features.history import NEGATIVE_TYPES
from features.state import ItemInfo, StateSpec, UserState
from p13n.config import Config

__all__ = ["EvalResult", "evaluate", "held_out_events", "K"]

K = 10


@dataclass
class VariantStats:
    hits: float = 0.0
    ndcg: float = 0.0
    users: int = 0

    def add(self, position: float) -> None:
        self.users += 1
        if position < K:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(position + 2)

    def summary(self) -> dict[str, float]:
        n = max(self.users, 1)
        return {"hr@10": self.hits / n, "ndcg@10": self.ndcg / n, "users": self.users}


@dataclass
class EvalResult:
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    negatives: int = 0
    events: int = 0

    def to_json(self) -> dict:
        return {"variants": self.variants, "negatives": self.negatives, "events": self.events}


def held_out_events(events: Iterable[Event], spec: StateSpec) -> dict[str, str]:
    """user key -> event_id of the user's last positive item event; users with < 2 such events are left out."""
    last: dict[str, tuple[int, str]] = {}
    count: dict[str, int] = {}
    for event in events:
        if event.item_id is None or spec.signed_weight(event) <= 0:
            continue
        count[event.key] = count.get(event.key, 0) + 1
        stamp = (event.ts_ms, event.event_id)
        if event.key not in last or stamp > last[event.key]:
            last[event.key] = stamp
    return {user: stamp[1] for user, stamp in last.items() if count[user] >= 2}


def _position(scores: np.ndarray) -> float:
    """Expected 0-based position of candidate 0 under random tie-breaking."""
    true = scores[0]
    others = scores[1:]
    return float(np.sum(others > true) + 0.5 * np.sum(others == true))


def evaluate(
    events: list[Event],
    items: Mapping[str, ItemInfo],
    config: Config,
    *,
    text_vectors: Mapping[str, np.ndarray] | None = None,
    negatives: int = 100,
    seed: int = 0,
    progress: Callable[[int], None] = lambda n: None,
) -> EvalResult:
    """Replay ``events`` and score every variant; ``items`` must hold the vectors of the catalog."""
    dim = next((len(i.vector) for i in items.values() if i.vector is not None), 1)
    spec = StateSpec.from_config(config.state, dim=dim)
    rng = np.random.default_rng(seed)
    catalog = sorted(items)
    catalog_index = {item: i for i, item in enumerate(catalog)}
    vectors = np.zeros((len(catalog), dim), dtype=np.float32)
    for item, i in catalog_index.items():
        if items[item].vector is not None:
            vectors[i] = items[item].vector
    attribute_keys = [items[item].attribute_keys for item in catalog]
    variants = _variants(config)
    stats = {name: VariantStats() for name in variants}

    ordered = sorted(events, key=lambda e: (e.ts_ms, e.event_id))
    holdout = held_out_events(ordered, spec)
    users: dict[str, UserState] = {}
    means: dict[str, np.ndarray] = {}
    done: set[str] = set()
    popularity = Popularity(config.state.popularity_tau_s)
    covisits = CoVisitation(config.state.covisit_top_m)
    for n, event in enumerate(ordered, 1):
        if n % 1000 == 0:
            progress(n)
        if event.key in done:
            continue
        user = users.get(event.key)
        if holdout.get(event.key) == event.event_id:
            done.add(event.key)
            if user is None or event.item_id not in catalog_index:
                continue
            pool = [i for i in range(len(catalog)) if catalog[i] != event.item_id and catalog[i] not in
                    {h.item_id for h in user.history}]  # fmt: skip
            if len(pool) < 1:
                continue
            sample = rng.choice(pool, size=min(negatives, len(pool)), replace=False)
            rows = np.concatenate([[catalog_index[event.item_id]], sample])
            ids = [catalog[i] for i in rows]
            view = user.view(event.ts_ms, config.scoring.covisit_anchors)
            mean = means.get(event.key)
            view.embeddings = {**view.embeddings, "mean": _unit(mean) if mean is not None else np.zeros(dim, np.float32)}
            cands = Candidates(
                item_ids=ids,
                vectors=vectors[rows],
                attribute_keys=[attribute_keys[i] for i in rows],
                popularity=np.array(popularity.read(ids, event.ts_ms)),
                covisit=covisits.matrix(view.recent_items, ids),
            )
            for name, weights in variants.items():
                stats[name].add(_position(score(view, cands, weights).scores))
            continue
        if user is None:
            user = users[event.key] = UserState.new(spec)
        result = user.fold([event], items, text_vectors)
        for item_id, ts_ms, weight, _ in result.popularity:
            popularity.add(item_id, ts_ms, weight)
        covisits.add(result.covisits)
        if result.applied and event.item_id in items and event.type not in NEGATIVE_TYPES:
            vector = items[event.item_id].vector
            weight = spec.signed_weight(event)
            if vector is not None and weight > 0:
                means[event.key] = means.get(event.key, np.zeros(dim)) + weight * vector
    return EvalResult(variants={name: s.summary() for name, s in stats.items()}, negatives=negatives, events=len(events))


def _variants(config: Config) -> dict[str, dict[str, float]]:
    variants: dict[str, dict[str, float]] = {"popularity": {"popularity": 1.0}, "mean": {"sim_mean": 1.0}}
    for horizon in config.state.horizons:
        variants[horizon] = {f"sim_{horizon}": 1.0}
    variants["covisitation"] = {"covisit": 1.0}
    variants["blend"] = dict(config.scoring.weights)
    return variants


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


@dataclass
class EvalInputs:
    """An event log and its catalog, ready for :func:`evaluate`."""

    events: list[Event]
    items: dict[str, ItemInfo]
    text_vectors: dict[str, np.ndarray]
    rejected: int = 0


def load_eval_inputs(
    events_path,
    items_path=None,
    *,
    encode: Callable[[list[str]], np.ndarray],
    now_ms: int,
    progress: Callable[[str], None] = lambda step: None,
) -> EvalInputs:
    """Read a JSONL event log (and optional items JSONL), embed every item text once."""
    from pathlib import Path

    from features.events import ItemRecord, Rejection, parse_event, parse_item
    from p13n.errors import InputError

    events: list[Event] = []
    texts: dict[str, str] = {}
    attributes: dict[str, dict] = {}
    rejected = 0
    progress("reading events")
    try:
        with Path(events_path).open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                parsed = parse_event(line, now_ms=now_ms, max_future_ms=10 * 365 * 86_400_000)
                if isinstance(parsed, Rejection):
                    rejected += 1
                    continue
                events.append(parsed)
                if parsed.item_id is not None and parsed.item_text:
                    texts[parsed.item_id] = parsed.item_text
        if items_path is not None:
            progress("reading items")
            with Path(items_path).open("rb") as fh:
                for line in fh:
                    if line.strip():
                        item = parse_item(line)
                        if isinstance(item, ItemRecord) and not item.deleted:
                            if item.text:
                                texts[item.item_id] = item.text
                            attributes[item.item_id] = dict(item.attributes)
                        else:
                            rejected += 1
    except FileNotFoundError as exc:
        raise InputError(f"no such file: {exc.filename}") from exc
    if not events:
        raise InputError(f"{events_path}: no valid events ({rejected} lines rejected)")
    catalog = sorted(set(texts) | set(attributes) | {e.item_id for e in events if e.item_id is not None})
    with_text = [i for i in catalog if i in texts]
    progress(f"embedding {len(with_text)} item texts")
    vectors = encode([texts[i] for i in with_text]) if with_text else np.zeros((0, 1), np.float32)
    by_item = dict(zip(with_text, vectors))
    items = {i: ItemInfo(vector=by_item.get(i), attributes=attributes.get(i, {}), text=texts.get(i)) for i in catalog}
    phrases = sorted({e.text for e in events if e.text and e.type in ("message", "preference")})
    text_vectors = dict(zip(phrases, encode(phrases))) if phrases else {}
    return EvalInputs(events=events, items=items, text_vectors=text_vectors, rejected=rejected)
