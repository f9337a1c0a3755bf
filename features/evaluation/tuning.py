"""Learn blend weights from a replay (``p13n tune``), on a validation split the tuner makes itself.

The split never touches the evaluation's held-out events: each user's latest item event
(the protocol's test candidate, see :mod:`features.evaluation.replay`) is removed from the log,
and the protocol is applied again to what is left — each user's second-latest item event,
when liked, is the validation item, scored from every event before it. Weights are then
found by coordinate ascent on mean NDCG@10 over those validation users: one feature at a
time, the weight from a fixed grid that scores best, for a few rounds (ties keep the
current weight, so the search stops at a fixed point).

>>> rng = np.random.default_rng(0)
>>> good = rng.normal(size=(50, 101)); good[:, 0] += 3          # feature that ranks the true item first
>>> noise = rng.normal(size=(50, 101))
>>> fitted = fit_weights({"good": good, "noise": noise}, start={"good": 0.1, "noise": 1.0})
>>> fitted.weights, round(fitted.ndcg, 2)      # the noise is all but switched off (0.2 of 5.0 fits 50 users best)
({'good': 5.0, 'noise': 0.2}, 0.8)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from features.evaluation.metrics import ranking_metrics
from features.evaluation.replay import Case
from features.core.events import Event

__all__ = ["GRID", "Fitted", "Tuned", "blend_stacked", "fit_blend", "tune_blend", "with_popularity_days", "fit_weights", "stack_features", "validation_events", "ndcg_at_k"]

#: Candidate weights of one feature per coordinate step.
GRID = (-1.0, -0.5, -0.25, -0.1, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)


def validation_events(events: Sequence[Event]) -> list[Event]:
    """``events`` without each user's latest item event (by time, then ``event_id``) — the
    evaluation's test candidates — so that tuning never sees them."""
    latest: dict[str, Event] = {}
    for event in events:
        if event.item_id is None:
            continue
        seen = latest.get(event.key)
        if seen is None or (event.ts_ms, event.event_id) > (seen.ts_ms, seen.event_id):
            latest[event.key] = event
    dropped = {id(e) for e in latest.values()}
    return [e for e in events if id(e) not in dropped]


def stack_features(cases: Sequence[Case], names: Sequence[str]) -> dict[str, np.ndarray]:
    """name -> (cases, candidates) array; row 0 of each case is the true item; missing features are 0;
    a case with fewer candidates than the widest is padded with NaN (never ranked, see :func:`blend_stacked`)."""
    width = max(len(next(iter(c.features.values()))) for c in cases)
    out = {}
    for name in names:
        block = np.full((len(cases), width), np.nan)
        for i, case in enumerate(cases):
            values = case.features.get(name)
            n = len(next(iter(case.features.values())))
            block[i, :n] = values if values is not None else 0.0
        out[name] = block
    return out


def blend_stacked(features: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``Σ weight · feature`` over stacked features; padded candidates score -inf whatever the weights.

    >>> blend_stacked({"a": np.array([[1.0, 2.0, np.nan]])}, {"a": -1.0}).tolist()
    [[-1.0, -2.0, -inf]]
    """
    first = next(iter(features.values()))
    pad = np.isnan(first)
    total = np.zeros(first.shape)
    for name, weight in weights.items():
        if weight and name in features:
            total += weight * np.nan_to_num(features[name], nan=0.0)
    total[pad] = -np.inf
    return total


def ndcg_at_k(scores: np.ndarray) -> tuple[float, float]:
    """(HR@10, NDCG@10) of (cases, candidates) scores, the true item in column 0; ties broken at random
    in expectation (:func:`features.evaluation.metrics.ranking_metrics`)."""
    hr, ndcg = ranking_metrics(scores)
    return float(hr.mean()), float(ndcg.mean())


@dataclass
class Fitted:
    weights: dict[str, float]
    hr: float
    ndcg: float
    rounds: int


def fit_weights(features: Mapping[str, np.ndarray], start: Mapping[str, float] | None = None, *, rounds: int = 4,
                grid: Sequence[float] = GRID) -> Fitted:  # fmt: skip
    """Coordinate ascent on NDCG@10 over the stacked ``features`` (see :func:`stack_features`)."""
    names = list(features)
    weights = {n: float((start or {}).get(n, 0.0)) for n in names}
    pad = np.isnan(next(iter(features.values())))
    blocks = {n: np.nan_to_num(a, nan=0.0) for n, a in features.items()}

    def total(w: Mapping[str, float]) -> np.ndarray:
        return sum((w[n] * blocks[n] for n in names if w[n]), np.zeros(pad.shape))

    def ranked(scores: np.ndarray) -> tuple[float, float]:
        return ndcg_at_k(np.where(pad, -np.inf, scores))

    best_hr, best = ranked(total(weights))
    done = 0
    for done in range(1, rounds + 1):
        improved = False
        for name in names:
            base = total({**weights, name: 0.0})
            for value in grid:
                if value == weights[name]:
                    continue
                hr, ndcg = ranked(base + value * blocks[name])
                if ndcg > best + 1e-9:
                    best, best_hr, weights[name], improved = ndcg, hr, value, True
        if not improved:
            break
    return Fitted(weights=weights, hr=best_hr, ndcg=best, rounds=done)


@dataclass
class Tuned:
    """What :func:`tune_blend` chose: the weights, the popularity time constant, and every trial."""

    fitted: Fitted
    popularity_days: float
    users: int
    trials: list[tuple[float, float]]  # (days, validation NDCG@10)
    before: tuple[float, float] | None  # (HR@10, NDCG@10) of the configuration as it is, when among the trials


def tune_blend(events, items, config, *, text_vectors=None, popularity_days: Sequence[float] = (7.0, 30.0, 365.0),
               negatives: int = 100, seed: int = 0, progress=lambda text: None) -> Tuned:  # fmt: skip
    """Fit ``scoring.weights`` (coordinate ascent from the configured ones) and choose
    ``state.popularity_tau_s`` among ``popularity_days`` on one validation replay of
    :func:`validation_events` of ``events`` (:func:`fit_blend`)."""
    from features.evaluation.replay import replay

    progress("validation replay")
    cases = replay(validation_events(events), items, config, text_vectors=text_vectors, negatives=negatives, seed=seed,
                   popularity_days=popularity_days)  # fmt: skip
    progress("coordinate ascent")
    return fit_blend(cases, config, popularity_days)


def fit_blend(cases: Sequence[Case], config, popularity_days: Sequence[float], *,
              names: Sequence[str] | None = None) -> Tuned:  # fmt: skip
    """Fit the weights of ``names`` (default ``scoring.weights``' features) once per popularity time
    constant, on validation ``cases`` replayed with ``popularity_days`` (each value's popularity
    feature put in place of ``popularity``, :func:`~features.evaluation.replay.with_popularity_feature`);
    the best validation NDCG@10 wins."""
    from features.evaluation.replay import with_popularity_feature

    names = list(names if names is not None else config.scoring.weights)
    trials: list[tuple[Fitted, float]] = []
    before = None
    for days in popularity_days:
        features = stack_features(with_popularity_feature(cases, days), names)
        trials.append((fit_weights(features, start=config.scoring.weights), days))
        if days * 86400.0 == config.state.popularity_tau_s:
            before = ndcg_at_k(blend_stacked(features, config.scoring.weights))
    fitted, days = max(trials, key=lambda t: t[0].ndcg)
    return Tuned(fitted=fitted, popularity_days=days, users=len(cases), trials=[(d, f.ndcg) for f, d in trials], before=before)


def with_popularity_days(config, days: float):
    """``config`` with ``state.popularity_tau_s`` set to ``days`` days."""
    import msgspec

    return msgspec.structs.replace(config, state=msgspec.structs.replace(config.state, popularity_tau_s=days * 86400.0))
