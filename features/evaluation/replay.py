"""Offline replay evaluation (``p13n eval``): how well does each signal rank a user's next liked item?

Protocol (issue 13). For each user with at least ``min_events`` item events, take the
latest one (by time, then ``event_id``); if it is liked — a rating of at least
``min_rating`` stars, or any other positive event type — it is the user's held-out item,
otherwise the user is skipped. The held-out item is ranked among ``negatives`` distinct
items the user never interacted with, drawn uniformly from the catalog with a fixed seed
(drawn before the replay, so both modes below rank the same candidates). The log is
replayed in time order through the consumer's fold (:meth:`~features.core.state.UserState.fold`)
and the same global signals; held-out events are never folded.

* default ("at each user's moment"): a user's candidates are scored when the replay reaches
  the held-out event, from every event before it, at its time;
* ``at_end``: every user is scored after the whole replay (every event but the held-out
  ones), at the time of the last event — what ``/v1/score`` sees after a Kafka replay.

Variants, every one reported in the same run:

* ``popularity_count`` — all-time interaction count (baseline);
* ``popularity`` — forward-decayed popularity read at the scoring time (p13n's feature);
* ``cooccurrence`` — the simple item co-occurrence counter (baseline,
  :class:`~features.evaluation.baselines.CoOccurrence`: window 5, last 10 items, popularity tie-break);
* ``mean`` — a plain, non-decayed weighted mean of the user's liked item vectors;
* ``<horizon>`` — one decayed embedding alone (e.g. ``session``, ``long``);
* ``covisitation`` — p13n's co-visitation (cosine, Space-Saving rows) with the user's latest items;
* ``blend`` — the configured blend of p13n's features (``scoring.weights``).

Every candidate's features are kept per user (:class:`Case`), so further blends — tuned
weights, prototype signals — are scored on exactly the same candidates (:func:`summarize`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from features.evaluation.baselines import CoOccurrence, PopularityCount, with_tie_break
from features.evaluation.inputs import EvalInputs, load_eval_inputs
from features.evaluation.metrics import K, VariantStats, expected_hit_ndcg
from features.core.events import Event
from features.core.history import NEGATIVE_TYPES
from features.core.scorer import Candidates, score
from features.core.signals import CoVisitation, Popularity
from features.core.state import ItemInfo, StateSpec, UserState
from p13n.config import Config

__all__ = [
    "K",
    "Case",
    "EvalInputs",
    "EvalResult",
    "Signal",
    "evaluate",
    "held_out_events",
    "load_eval_inputs",
    "popularity_feature",
    "sample_negatives",
    "replay",
    "summarize",
    "variants_of",
    "with_popularity_feature",
]


@dataclass
class EvalResult:
    """``variants``: name -> {"hr@10", "ndcg@10", "users"} (the ``--json`` shape of DESIGN §8)."""

    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    negatives: int = 0
    events: int = 0
    mode: str = "moment"
    cases: list[Case] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {"variants": self.variants, "negatives": self.negatives, "events": self.events, "mode": self.mode}


@dataclass
class Case:
    """One evaluated user: every feature of the candidates, row 0 the held-out item."""

    user: str
    item_id: str
    features: dict[str, np.ndarray]
    candidates: list[str] = field(default_factory=list)  # the item ids, row 0 the held-out item


class Signal:
    """A signal computed beside p13n's own during the replay (baselines, prototypes).

    ``observe`` sees every folded event in time order with its signed weight; ``features``
    returns named score arrays for a user's candidates at ``now_ms``."""

    def observe(self, event: Event, weight: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def features(self, user: str, candidates: Sequence[str], now_ms: int) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


class _Baselines(Signal):
    """The two baselines of issue 13: all-time popularity count and the co-occurrence counter."""

    def __init__(self) -> None:
        self.popularity = PopularityCount()
        self.cooccurrence = CoOccurrence(window=5, anchors=10)

    def observe(self, event: Event, weight: float) -> None:
        self.popularity.add(event.item_id)
        self.cooccurrence.add(event.key, event.item_id)

    def features(self, user: str, candidates: Sequence[str], now_ms: int) -> dict[str, np.ndarray]:
        counts = self.popularity.read(candidates)
        return {"popularity_count": counts,
                "cooccurrence": with_tie_break(self.cooccurrence.scores(user, candidates), counts)}  # fmt: skip


def _liked(event: Event, spec: StateSpec, min_rating: float) -> bool:
    if event.type == "rating":
        return event.value is not None and event.value >= min_rating
    return spec.signed_weight(event) > 0


def held_out_events(events: Iterable[Event], spec: StateSpec, *, min_events: int = 5,
                    min_rating: float = 4.0) -> dict[str, str]:  # fmt: skip
    """user key -> event_id of the held-out event: the user's latest item event (by time, then
    ``event_id``) when the user has ``min_events`` item events or more and that event is liked."""
    last: dict[str, Event] = {}
    count: dict[str, int] = {}
    for event in events:
        if event.item_id is None:
            continue
        key = event.key
        count[key] = count.get(key, 0) + 1
        seen = last.get(key)
        if seen is None or (event.ts_ms, event.event_id) > (seen.ts_ms, seen.event_id):
            last[key] = event
    return {user: ev.event_id for user, ev in last.items() if count[user] >= min_events and _liked(ev, spec, min_rating)}


def sample_negatives(users: Sequence[str], truth: Mapping[str, str], rated: Mapping[str, set[str]], catalog: list[str],
                     index: Mapping[str, int], negatives: int, seed: int) -> dict[str, list[str]]:  # fmt: skip
    """Per user (in sorted order, one generator seeded with ``seed``): ``negatives`` distinct items of ``catalog``
    (``index``: item id -> position in it) that are neither in ``rated[user]`` nor ``truth[user]``; fewer when the
    catalog runs out, none for a user who touched it all. The evaluation and the load benchmark's MovieLens
    request shapes draw their candidates with it.

    >>> sample_negatives(["u"], {"u": "a"}, {"u": {"b"}}, ["a", "b", "c", "d"], {"a": 0, "b": 1, "c": 2, "d": 3},
    ...                  negatives=5, seed=0)["u"] in (["c", "d"], ["d", "c"])
    True
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {}
    allowed = np.ones(len(catalog), dtype=bool)
    for user in sorted(users):
        excluded = [index[i] for i in rated[user] | {truth[user]} if i in index]
        allowed[excluded] = False
        pool = np.flatnonzero(allowed)
        allowed[excluded] = True
        if len(pool):
            out[user] = [catalog[i] for i in rng.choice(pool, size=min(negatives, len(pool)), replace=False)]
    return out


def _negatives(ordered: Sequence[Event], holdout: Mapping[str, str], catalog: list[str], index: Mapping[str, int],
               negatives: int, seed: int) -> dict[str, list[str]]:  # fmt: skip
    """:func:`sample_negatives` for every user whose held-out item (``holdout``: user key -> its event id) is in the
    catalog, excluding every item the user touched."""
    truth: dict[str, str] = {}
    rated: dict[str, set[str]] = {}
    for event in ordered:
        if event.item_id is not None:
            rated.setdefault(event.key, set()).add(event.item_id)
            if holdout.get(event.key) == event.event_id:
                truth[event.key] = event.item_id
    return sample_negatives([u for u in truth if truth[u] in index], truth, rated, catalog, index, negatives, seed)


class _Replayer:
    """The replay's running state: every user's state and plain liked-vector sum, the global signals, and the
    cases scored so far. ``vectors`` rows follow ``index`` (item id -> row); ``sampled`` holds each held-out
    user's negatives."""

    def __init__(self, items: Mapping[str, ItemInfo], config: Config, spec: StateSpec, index: Mapping[str, int],
                 vectors: np.ndarray, sampled: Mapping[str, list[str]], *, signals: Sequence[Signal],
                 text_vectors: Mapping[str, np.ndarray], covisitation: CoVisitation | None,
                 popularity_days: Sequence[float]) -> None:  # fmt: skip
        self.items, self.config, self.spec, self.index, self.vectors = items, config, spec, index, vectors
        self.sampled, self.signals, self.text_vectors = sampled, signals, text_vectors
        self.dim = vectors.shape[1]
        self.users: dict[str, UserState] = {}
        self.means: dict[str, np.ndarray] = {}
        self.popularity = Popularity(config.state.popularity_tau_s)
        self.covisits = covisitation if covisitation is not None else CoVisitation(config.state.covisit_top_m)
        self.popularities = {popularity_feature(days): Popularity(days * 86400.0) for days in popularity_days}
        self.cases: list[Case] = []
        self.last_ms = 0

    def case(self, key: str, item_id: str, now_ms: int) -> None:
        """Score the held-out ``item_id`` among the user's negatives at ``now_ms`` (nothing for a user never folded
        or without negatives)."""
        user = self.users.get(key)
        if user is None or key not in self.sampled:
            return
        config, items = self.config, self.items
        ids = [item_id, *self.sampled[key]]
        rows = [self.index[i] for i in ids]
        view = user.view(now_ms, config.scoring.covisit_anchors)
        mean = self.means.get(key)
        view.embeddings = {**view.embeddings,
                           "mean": _unit(mean) if mean is not None else np.zeros(self.dim, np.float32)}  # fmt: skip
        cands = Candidates(item_ids=ids, vectors=self.vectors[rows],
                           attribute_keys=[items[i].attribute_keys for i in ids],
                           popularity=np.array(self.popularity.read(ids, now_ms)),
                           covisit=self.covisits.cosine_matrix(view.recent_items, ids))  # fmt: skip
        features = dict(score(view, cands, {}, covisit_recency=config.scoring.covisit_recency).features)
        for name, other in self.popularities.items():
            cands.popularity = np.array(other.read(ids, now_ms))
            features[name] = score(None, cands, {}).features["popularity"]
        for signal in self.signals:
            features.update(signal.features(key, ids, now_ms))
        self.cases.append(Case(user=key, item_id=item_id, features=features, candidates=ids))

    def fold(self, event: Event) -> None:
        """Fold one (not held-out) event into its user, the global signals, the signals and the liked mean."""
        user = self.users.get(event.key)
        if user is None:
            user = self.users[event.key] = UserState.new(self.spec)
        result = user.fold([event], self.items, self.text_vectors)
        if not result.applied:
            return
        self.last_ms = max(self.last_ms, event.ts_ms)
        for item_id, ts_ms, weight, _ in result.popularity:
            self.popularity.add(item_id, ts_ms, weight)
            for other in self.popularities.values():
                other.add(item_id, ts_ms, weight)
        # one event's runs per call, as the consumer's script sums a batch
        self.covisits.add_runs(result.covisit_runs)
        if event.item_id is None:
            return
        weight = self.spec.signed_weight(event)
        for signal in self.signals:
            signal.observe(event, weight)
        if event.item_id in self.items and event.type not in NEGATIVE_TYPES and weight > 0:
            vector = self.items[event.item_id].vector
            if vector is not None:
                self.means[event.key] = self.means.get(event.key, np.zeros(self.dim)) + weight * vector


def replay(
    events: list[Event],
    items: Mapping[str, ItemInfo],
    config: Config,
    *,
    text_vectors: Mapping[str, np.ndarray] | None = None,
    negatives: int = 100,
    seed: int = 0,
    at_end: bool = False,
    min_events: int = 5,
    min_rating: float = 4.0,
    signals: Sequence[Signal] = (),
    progress: Callable[[int], None] = lambda n: None,
    covisitation: CoVisitation | None = None,
    popularity_days: Sequence[float] = (),
) -> list[Case]:
    """Replay ``events`` under the protocol and return every held-out user's candidate features.

    ``covisitation``: the co-visitation to fold the replay into (a new one of ``state.covisit_top_m``
    when None), for a caller that inspects it afterwards — each event's runs are applied as one batch
    (one ``APPLY_GLOBALS`` call of the consumer), so its rows equal the consumer's whenever no row
    is full; once rows are full, Space-Saving's replacements depend on how events were batched.

    ``popularity_days``: further popularity time constants (days), each folded from the same deltas
    and scored by the same scorer as ``popularity`` into a feature ``popularity@<days>d`` — what
    ``popularity`` would be with ``state.popularity_tau_s`` set to it, so one replay serves every
    value ``p13n tune`` tries (:func:`with_popularity_feature`)."""
    dim = next((len(i.vector) for i in items.values() if i.vector is not None), 1)
    spec = StateSpec.from_config(config.state, dim=dim)
    catalog = sorted(items)
    index = {item: i for i, item in enumerate(catalog)}
    vectors = np.zeros((len(catalog), dim), dtype=np.float32)
    for item, i in index.items():
        if items[item].vector is not None:
            vectors[i] = items[item].vector
    ordered = sorted(events, key=lambda e: (e.ts_ms, e.event_id))
    holdout = held_out_events(ordered, spec, min_events=min_events, min_rating=min_rating)
    sampled = _negatives(ordered, holdout, catalog, index, negatives, seed)

    run = _Replayer(items, config, spec, index, vectors, sampled, signals=[_Baselines(), *signals],
                    text_vectors=text_vectors or {}, covisitation=covisitation,
                    popularity_days=popularity_days)  # fmt: skip
    pending: list[tuple[str, str]] = []
    for n, event in enumerate(ordered, 1):
        if n % 1000 == 0:
            progress(n)
        if holdout.get(event.key) != event.event_id:
            run.fold(event)
        elif at_end:
            pending.append((event.key, event.item_id))
        else:
            run.case(event.key, event.item_id, event.ts_ms)
    for key, item_id in pending:
        run.case(key, item_id, run.last_ms)
    return run.cases


def popularity_feature(days: float) -> str:
    """Name of the feature :func:`replay` adds for a popularity time constant of ``days`` days.

    >>> popularity_feature(365.0)
    'popularity@365d'
    """
    return f"popularity@{days:g}d"


def with_popularity_feature(cases: Sequence[Case], days: float) -> list[Case]:
    """``cases`` with ``popularity`` replaced by ``popularity@<days>d`` (recorded by :func:`replay`):
    the features a replay with ``state.popularity_tau_s = days`` would have given."""
    name = popularity_feature(days)
    return [Case(c.user, c.item_id, {**c.features, "popularity": c.features[name]}) for c in cases]


def variants_of(config: Config) -> dict[str, dict[str, float]]:
    """The reported variants: name -> feature weights (baselines, each p13n signal alone, the blend)."""
    variants: dict[str, dict[str, float]] = {
        "popularity_count": {"popularity_count": 1.0},
        "popularity": {"popularity": 1.0},
        "cooccurrence": {"cooccurrence": 1.0},
        "mean": {"sim_mean": 1.0},
    }
    for horizon in config.state.horizons:
        variants[horizon] = {f"sim_{horizon}": 1.0}
    variants["covisitation"] = {"covisit": 1.0}
    variants["blend"] = dict(config.scoring.weights)
    return variants


def blend_scores(features: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``Σ weight · feature`` over the features a case has (a missing feature counts as 0)."""
    n = len(next(iter(features.values())))
    scores = np.zeros(n, dtype=np.float64)
    for name, weight in weights.items():
        values = features.get(name)
        if weight and values is not None:
            scores += weight * values
    return scores


def summarize(cases: Sequence[Case], variants: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """HR@10, NDCG@10 and users of each variant over ``cases``."""
    stats = {name: VariantStats() for name in variants}
    for case in cases:
        for name, weights in variants.items():
            stats[name].add(*expected_hit_ndcg(blend_scores(case.features, weights)))
    return {name: s.summary() for name, s in stats.items()}


def evaluate(
    events: list[Event],
    items: Mapping[str, ItemInfo],
    config: Config,
    *,
    text_vectors: Mapping[str, np.ndarray] | None = None,
    negatives: int = 100,
    seed: int = 0,
    at_end: bool = False,
    min_events: int = 5,
    min_rating: float = 4.0,
    variants: Mapping[str, Mapping[str, float]] | None = None,
    signals: Sequence[Signal] = (),
    progress: Callable[[int], None] = lambda n: None,
) -> EvalResult:
    """Replay ``events`` (see :func:`replay`) and score every variant; ``items`` hold the catalog's vectors."""
    cases = replay(events, items, config, text_vectors=text_vectors, negatives=negatives, seed=seed, at_end=at_end,
                   min_events=min_events, min_rating=min_rating, signals=signals, progress=progress)  # fmt: skip
    table = summarize(cases, variants if variants is not None else variants_of(config))
    return EvalResult(variants=table, negatives=negatives, events=len(events), mode="at-end" if at_end else "moment",
                      cases=cases)  # fmt: skip


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)
