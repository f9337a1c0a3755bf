"""``p13n tune``: the validation split never contains the evaluation's held-out events, and the
TOML it writes is a configuration ``p13n eval --tuned`` (and every other command) loads."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from features.core.events import Event
from features.evaluation.replay import held_out_events
from features.core.state import StateSpec
from features.evaluation.tuning import validation_events
from p13n.config import Config, StateConfig
from p13n.importers import import_movielens
from tests.conftest import REPO, clean_env
from tests.features.test_movielens import NOW_MS, TINY


def _rating(user: str, item: str, ts: int, value: float) -> Event:
    return Event(event_id=f"{user}-{item}", user_id=user, type="rating", ts_ms=ts, item_id=item, value=value)


def test_the_validation_split_leaves_out_each_users_latest_item_event():
    spec = StateSpec.from_config(StateConfig(), dim=1)
    events = [_rating("a", f"i{n}", 1000 * n, 5.0) for n in range(7)] + [_rating("b", f"i{n}", 1000 * n + 1, 4.0) for n in range(6)]
    test = held_out_events(events, spec)
    assert test == {"default/a": "a-i6", "default/b": "b-i5"}
    kept = validation_events(events)
    assert {e.event_id for e in events} - {e.event_id for e in kept} == {"a-i6", "b-i5"}
    # the protocol one step back: each user's second-latest event is the validation item
    assert held_out_events(kept, spec) == {"default/a": "a-i5", "default/b": "b-i4"}


def test_p13n_tune_writes_weights_that_p13n_eval_reports_as_blend_tuned(tmp_path):
    import_movielens(TINY, tmp_path, now_ms=NOW_MS)
    tuned = tmp_path / "tuned.toml"
    run = [sys.executable, "-m", "p13n.cli"]
    data = [str(tmp_path / "events.jsonl"), "--items", str(tmp_path / "items.jsonl")]
    proc = subprocess.run([*run, "tune", *data, "--out", str(tuned)], cwd=REPO, env=clean_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = tomllib.loads(tuned.read_text())
    weights = written["scoring"]["weights"]
    assert written["state"]["popularity_tau_s"] in {days * 86400.0 for days in (7, 30, 365)}
    assert set(weights) == set(Config.from_sources(env={}).scoring.weights)
    loaded = Config.from_sources(file=tuned, env={})
    assert (loaded.scoring.weights, loaded.state.popularity_tau_s) == (weights, written["state"]["popularity_tau_s"])
    proc = subprocess.run([*run, "eval", *data, "--tuned", str(tuned)], cwd=REPO, env=clean_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "blend_tuned" in proc.stdout and "cooccurrence" in proc.stdout


def test_candidates_missing_from_a_short_case_never_outrank_the_true_item():
    import numpy as np

    from features.evaluation.replay import Case
    from features.evaluation.tuning import blend_stacked, fit_weights, ndcg_at_k, stack_features

    # a user with only 3 candidates beside one with 5: the short case is padded; a negative weight must not
    # lift the padding above the true item (it did when the padding was -inf times the weight)
    cases = [Case("u1", "i", {"f": np.array([0.0, 1.0, 2.0])}), Case("u2", "i", {"f": np.array([0.0, 1.0, 1.0, 1.0, 1.0])})]
    stacked = stack_features(cases, ["f"])
    assert ndcg_at_k(blend_stacked(stacked, {"f": -1.0})) == (1.0, 1.0)
    assert fit_weights(stacked, start={"f": 1.0}).weights["f"] < 0
