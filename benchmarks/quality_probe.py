"""What lifts the blend on MovieLens? Read-out and feature probes of issue 13 (benchmarks/QUALITY-EXPERIMENTS.md).

Two replays of :func:`features.evaluation.replay.replay` — the validation split of ``p13n tune`` (each user's
latest item event removed) and the protocol itself — with a :class:`Probe` beside p13n's signals that records,
per evaluated user, the raw material of candidate read-outs: the co-visitation counts of the user's last 100
distinct rated items with every candidate (the replay's own Space-Saving rows, the same ``n``), the anchors'
ratings, and per-item stream facts (liked count, first event time). From these it derives features that p13n does
not compute yet, each fitted into the blend on one replay and scored on the other (both ways, paired with the
blend of p13n's own features fitted the same way; a bootstrap over users gives the spread of the difference):

* ``cv_<variant>`` — co-visitation read-outs of the same counts (normalisation, anchors, anchor weights by rating);
* ``q_n`` — the item's liked share ``(liked + 1) / (n + 2)`` (``n``: its occurrences, co-visitation's ``n``);
* ``fresh90`` — ``exp(−age / 90 d)``, age since the item's first event in the stream (0 for never seen);
* ``cold`` interactions and ``lpop<d>`` (liked popularity with other time constants);
* ``year_clipped`` / ``year_released`` — ``exp(−years since release / 5)`` from the title's year, a release after
  the scoring time counted as new (``clipped``) or as 0 (``released``: uses that the protocol's catalog holds films
  not yet released at the user's moment — an artifact of sampling from the 2018 catalog, not a signal to ship).

Usage (``--config`` as p13n eval's)::

    python -m benchmarks.quality_probe EVENTS.jsonl ITEMS.jsonl --config benchmarks/movielens.toml

Fit: listwise softmax (the true item against its candidates, L2 1e-3, plain gradient descent) as a start, then
the coordinate ascent of ``p13n tune`` (:func:`features.evaluation.tuning.fit_weights`) on a finer grid.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from features.core.signals import CoVisitation, Popularity
from features.evaluation.metrics import ranking_metrics
from features.evaluation.replay import Case, Signal, replay
from features.evaluation.tuning import blend_stacked, fit_weights, ndcg_at_k, stack_features, validation_events

__all__ = ["Probe", "covisit_readout", "derived", "softmax_fit", "fit", "paired", "main"]

BASE = ("sim_session", "sim_long", "neg_sim", "attribute", "popularity", "covisit")
GRID = tuple(sorted(set(np.round(np.linspace(-3, 6, 37), 2).tolist())))


class Probe(Signal):
    """Records what the read-outs need per evaluated user (see the module docstring); gives no features itself."""

    def __init__(self, covisitation: CoVisitation, items, anchors: int = 100) -> None:
        self.cv, self.anchors = covisitation, anchors
        self.year = {i: _title_year(info.text or "") for i, info in items.items()}
        self.recent: dict[str, list[tuple[str, float, int]]] = {}  # user -> (item, stars, ts_ms), distinct, newest last
        self.first: dict[str, int] = {}
        self.liked: dict[str, float] = {}
        self.pops = {d: Popularity(d * 86400.0) for d in (30, 1095)}
        self.records: dict[str, dict] = {}

    def observe(self, event, weight: float) -> None:
        item = event.item_id
        self.first.setdefault(item, event.ts_ms)
        mine = self.recent.setdefault(event.key, [])
        mine[:] = [x for x in mine if x[0] != item][-(4 * self.anchors):]
        mine.append((item, event.value if event.value is not None else 3.0, event.ts_ms))
        if weight > 0:
            self.liked[item] = self.liked.get(item, 0.0) + 1.0
            for pop in self.pops.values():
                pop.add(item, event.ts_ms, 1.0)

    def features(self, user: str, candidates, now_ms: int) -> dict[str, np.ndarray]:
        mine = self.recent.get(user, [])[-self.anchors:]
        anchors = [x[0] for x in mine]
        first = np.array([self.first.get(c, np.nan) for c in candidates], dtype=np.float64)
        self.records[user] = {
            "counts": self.cv.matrix(anchors, candidates), "na": self.cv.occurrences(anchors),
            "nx": self.cv.occurrences(candidates), "stars": np.array([x[1] for x in mine]),
            "liked": np.array([self.liked.get(c, 0.0) for c in candidates]),
            "age_days": (now_ms - first) / 86_400_000.0,
            "pops": {d: np.array(p.read(list(candidates), now_ms)) for d, p in self.pops.items()},
            "years_old": now_ms / (365.25 * 86_400_000.0) + 1970 - np.array([self.year.get(c, np.nan) for c in candidates]),
        }  # fmt: skip
        return {}


def _title_year(text: str) -> float:
    """The release year in a MovieLens title ``"Heat (1995) | Action"`` (NaN when there is none)."""
    match = re.search(r"\((\d{4})\)", text)
    return float(match.group(1)) if match else np.nan


def _by_max(values: np.ndarray) -> np.ndarray:
    top = float(values.max(initial=0.0))
    return values / top if top > 0 else values


def covisit_readout(rec: dict, *, anchors: int = 30, recency: float = 0.97, norm: str = "cos",
                    stars=None, agg: str = "sum") -> np.ndarray:  # fmt: skip
    """Σ over the last ``anchors`` anchors of ``recency^age · weight(stars) · s(a, x)``, scaled by its maximum;
    ``s`` the capped cosine of :func:`features.core.signals.cosine` (``norm="cos"``), Jaccard, ``c/n(a)^0.7 n(x)^0.3``
    (``b03``) or the raw count; ``agg="max"`` takes the strongest anchor instead of the sum."""
    c, na, nx = rec["counts"][-anchors:], rec["na"][-anchors:], rec["nx"]
    if not len(c):
        return np.zeros(len(nx))
    na_, nx_ = np.maximum(na, 1.0)[:, None], np.maximum(nx, 1.0)[None, :]
    c = np.minimum(c, np.minimum(na_, nx_))
    s = {"cos": lambda: c / np.sqrt(na_ * nx_), "jacc": lambda: c / (na_ + nx_ - c),
         "b03": lambda: c / (na_**0.7 * nx_**0.3), "raw": lambda: c}[norm]()  # fmt: skip
    w = recency ** np.arange(len(c) - 1, -1, -1, dtype=np.float64)
    if stars is not None:
        w = w * stars(rec["stars"][-anchors:])
    return _by_max(w @ s if agg == "sum" else (w[:, None] * s).max(0))


#: The co-visitation read-outs compared (all from the same counts; ``cv_p13n`` is p13n's ``covisit``).
READOUTS = {
    "cv_p13n": {},
    "cv_anchors20": {"anchors": 20}, "cv_anchors50": {"anchors": 50}, "cv_anchors100": {"anchors": 100, "recency": 0.99},
    "cv_recency0.90": {"recency": 0.90}, "cv_recency0.95": {"recency": 0.95}, "cv_recency1": {"recency": 1.0},
    "cv_jaccard": {"norm": "jacc"}, "cv_b03": {"norm": "b03"}, "cv_raw": {"norm": "raw"}, "cv_max": {"agg": "max"},
    "cv_stars_lin": {"stars": lambda v: np.maximum(v - 2.0, 0.0)},
    "cv_stars_soft": {"stars": lambda v: np.where(v >= 3.5, 1.0, 0.3)},
    "cv_stars_liked": {"stars": lambda v: (v >= 4).astype(float)},
}  # fmt: skip


def derived(case: Case, rec: dict) -> dict[str, np.ndarray]:
    """``case``'s features and the probe's read-outs of its record."""
    out = dict(case.features)
    out.update({name: covisit_readout(rec, **kw) for name, kw in READOUTS.items()})
    out["q_n"] = (rec["liked"] + 1.0) / (rec["nx"] + 2.0)
    out["fresh90"] = np.where(np.isnan(rec["age_days"]), 0.0, np.exp(-np.nan_to_num(rec["age_days"]) / 90.0))
    old = rec["years_old"]
    out["year_clipped"] = np.where(np.isnan(old), 0.0, np.exp(-np.maximum(np.nan_to_num(old), 0.0) / 5.0))
    out["year_released"] = np.where(np.isnan(old) | (old < -0.5), 0.0, out["year_clipped"])
    cold = (rec["nx"] == 0).astype(float)
    out["cold"], out["cold_sim"] = cold, cold * case.features.get("sim_session", 0.0)
    for days, pop in rec["pops"].items():
        logged = np.log1p(pop)
        out[f"lpop{days}"] = logged / logged.max() if logged.max() > 0 else logged
    return out


def softmax_fit(stacked: dict[str, np.ndarray], names, *, l2: float = 1e-3, steps: int = 400, lr: float = 0.5):
    """Weights minimising the listwise softmax loss of the true item (column 0) plus ``l2·|w|²`` (gradient descent)."""
    x = np.stack([np.nan_to_num(stacked[n], nan=0.0) for n in names], -1)
    pad = np.isnan(stacked[names[0]])
    w = np.zeros(len(names))
    for _ in range(steps):
        s = np.where(pad, -1e9, x @ w)
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = -(x[:, 0, :] - (p[:, :, None] * x).sum(1)).mean(0) + 2 * l2 * w
        w -= lr * grad
    return dict(zip(names, w.tolist()))


def fit(cases: list[Case], names) -> dict[str, float]:
    """Softmax start, then ``p13n tune``'s coordinate ascent on NDCG@10 over :data:`GRID`."""
    stacked = stack_features(cases, names)
    return fit_weights(stacked, start=softmax_fit(stacked, list(names)), rounds=3, grid=GRID).weights


def paired(train: list[Case], test: list[Case], names, *, seed: int = 0) -> str:
    """HR@10 / NDCG@10 on ``test`` of the blend of ``names`` fitted on ``train``, beside the blend of :data:`BASE`
    fitted the same way, with the bootstrap standard deviation of the mean paired difference (500 draws)."""
    (hb, nb), (he, ne) = (ranking_metrics(blend_stacked(stack_features(test, n), fit(train, n))) for n in (BASE, names))
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(hb), len(hb)) for _ in range(500)]
    sd = [float(np.std([(a[i] - b[i]).mean() for i in draws])) for a, b in ((he, hb), (ne, nb))]
    return (f"HR {hb.mean():.3f}->{he.mean():.3f} ({(he - hb).mean():+.3f}±{sd[0]:.3f}) "
            f"NDCG {nb.mean():.3f}->{ne.mean():.3f} ({(ne - nb).mean():+.3f}±{sd[1]:.3f})")  # fmt: skip


def _replay(job: tuple[str, str, str | None, bool]) -> list[Case]:
    """One replay (a worker process): the protocol, or its validation split, with the probe's read-outs."""
    from p13n.cli_tune import eval_encode
    from p13n.config import Config
    from features.evaluation.inputs import load_eval_inputs

    events_path, items_path, config_path, validation = job
    cfg = Config.from_sources(file=Path(config_path) if config_path else None)
    inputs = load_eval_inputs(events_path, items_path, encode=eval_encode(cfg), now_ms=int(time.time() * 1000))
    events = validation_events(inputs.events) if validation else inputs.events
    cv = CoVisitation(cfg.state.covisit_top_m)
    probe = Probe(cv, inputs.items)
    cases = replay(events, inputs.items, cfg, text_vectors=inputs.text_vectors, signals=[probe], covisitation=cv)
    return [Case(c.user, c.item_id, derived(c, probe.records[c.user])) for c in cases]


#: Blends compared with p13n's (each: the features beside or instead of BASE's).
BLENDS = {
    "+ q_n": [*BASE, "q_n"], "+ fresh90": [*BASE, "fresh90"], "+ q_n + fresh90": [*BASE, "q_n", "fresh90"],
    "+ lpop30": [*BASE, "lpop30"], "+ lpop1095": [*BASE, "lpop1095"], "+ cold + cold_sim": [*BASE, "cold", "cold_sim"],
    "+ cv_jaccard": [*BASE, "cv_jaccard"], "+ cv_anchors100": [*BASE, "cv_anchors100"],
    "covisit -> cv_stars_lin": [*BASE[:5], "cv_stars_lin"], "covisit -> cv_stars_soft": [*BASE[:5], "cv_stars_soft"],
    "+ year_clipped": [*BASE, "year_clipped"], "+ year_released": [*BASE, "year_released"],
    "covisit -> cv_stars_lin, + q_n + fresh90": [*BASE[:5], "cv_stars_lin", "q_n", "fresh90"],
}  # fmt: skip


def _cold(cases: list[Case], label: str) -> None:
    """HR@10 / NDCG@10 of p13n's blend features split by whether the held-out item had ever occurred (``n`` > 0),
    and the in-sample ceiling of a linear blend of every derived feature (fitted and scored on ``cases``)."""
    stacked = stack_features(cases, [*BASE, "cold"])
    cold = stacked["cold"][:, 0] == 1
    weights = fit(cases, BASE)
    blend = blend_stacked(stacked, weights)
    overall = ndcg_at_k(blend)
    print(f"{label}: held-out item never seen before: {int(cold.sum())} of {len(cold)} users; p13n's features fitted "
          f"here, all users: {overall[0]:.3f} / {overall[1]:.3f}")
    for name, scores in [("blend (fitted here)", blend), *((n, stacked[n]) for n in BASE)]:
        c, w = ndcg_at_k(scores[cold]), ndcg_at_k(scores[~cold])
        print(f"  {name:20s} never seen {c[0]:.3f} / {c[1]:.3f}   seen {w[0]:.3f} / {w[1]:.3f}")
    every = sorted(n for n in cases[0].features if n not in ("seen", "cooccurrence", "popularity_count", "year_released"))
    for names in (every, [*every, "year_released"]):
        ceiling = ndcg_at_k(blend_stacked(stack_features(cases, names), fit(cases, names)))
        print(f"  in-sample ceiling, linear blend of {len(names)} features{' with year_released' if len(names) > len(every) else ''}: "
              f"{ceiling[0]:.3f} / {ceiling[1]:.3f}")


def _tune_in_sample(val: list[Case], test: list[Case], config_path: str | None) -> None:
    """``p13n tune``'s fit (coordinate ascent from the configured ``scoring.weights``) on the validation replay and on
    the protocol replay itself, each scored on the protocol: the second is an in-sample figure."""
    from p13n.config import Config

    weights = Config.from_sources(file=Path(config_path) if config_path else None).scoring.weights
    target = stack_features(test, list(weights))
    for label, cases in (("validation", val), ("protocol (in-sample)", test)):
        fitted = fit_weights(stack_features(cases, list(weights)), start=weights).weights
        hr, ndcg = ndcg_at_k(blend_stacked(target, fitted))
        print(f"p13n tune's fit on the {label} replay, scored on the protocol: {hr:.3f} / {ndcg:.3f} {fitted}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events")
    parser.add_argument("items")
    parser.add_argument("--config")
    parser.add_argument("--cases", type=Path, help="pickle of both replays' cases: read if it exists, else written")
    args = parser.parse_args(argv)
    if args.cases is not None and args.cases.exists():
        val, test = pickle.loads(args.cases.read_bytes())
    else:
        jobs = [(args.events, args.items, args.config, validation) for validation in (True, False)]
        with ProcessPoolExecutor(2) as pool:
            val, test = pool.map(_replay, jobs)
        if args.cases is not None:
            args.cases.write_bytes(pickle.dumps((val, test)))
    print(f"users: validation {len(val)}, protocol {len(test)}")
    _cold(val, "validation")
    _cold(test, "protocol")
    for name in [*BASE, "q_n", "fresh90", "lpop30", "lpop1095", "year_clipped", "year_released", *READOUTS]:
        v, t = (ndcg_at_k(stack_features(cases, [name])[name]) for cases in (val, test))
        print(f"alone {name:18s} validation {v[0]:.3f} / {v[1]:.3f}   protocol {t[0]:.3f} / {t[1]:.3f}")
    _tune_in_sample(val, test, args.config)
    for name, names in BLENDS.items():
        print(f"blend {name:42s} val->protocol {paired(val, test, names)}   protocol->val {paired(test, val, names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
