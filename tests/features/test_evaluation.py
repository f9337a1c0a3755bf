"""Offline replay evaluation on the synthetic drift dataset, and `p13n eval` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from features.encoder.runtime import Encoder, default_encoder_dir
from features.evaluation.replay import evaluate, held_out_events, load_eval_inputs
from features.core.events import Event
from features.core.state import ItemInfo, StateSpec
from features.datasets.synthetic import SyntheticSpec, generate
from p13n.config import Config, StateConfig
from tests.conftest import REPO, clean_env


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    data = generate(SyntheticSpec(users=200, seed=0))
    for name, rows in (("events.jsonl", data.events), ("items.jsonl", data.items)):
        (directory / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    encoder = Encoder.from_directory(default_encoder_dir(), variant="fp32")  # the consumer's, as `p13n eval` uses
    inputs = load_eval_inputs(directory / "events.jsonl", directory / "items.jsonl", encode=encoder.encode,
                              now_ms=2_000_000_000_000)  # fmt: skip
    config = Config.from_sources(env={})
    result = evaluate(inputs.events, inputs.items, config, text_vectors=inputs.text_vectors, negatives=100, seed=0)
    return directory, result


def test_blend_beats_popularity_and_plain_mean_by_ten_percent(synthetic_run):
    _, result = synthetic_run
    v = result.variants
    assert v["blend"]["users"] == 195  # of 200 users, 5 end on a non-positive event: skipped by the protocol
    assert v["blend"]["hr@10"] >= 1.10 * v["popularity"]["hr@10"], v
    assert v["blend"]["hr@10"] >= 1.10 * v["mean"]["hr@10"], v


def test_every_variant_is_reported_with_sane_numbers(synthetic_run):
    _, result = synthetic_run
    assert list(result.variants) == ["popularity_count", "popularity", "cooccurrence", "mean", "session", "long",
                                     "covisitation", "blend"]  # fmt: skip
    for row in result.variants.values():
        assert 0.0 <= row["ndcg@10"] <= row["hr@10"] <= 1.0


def test_a_variant_that_cannot_tell_items_apart_scores_at_chance():
    # one item vector for all: the "mean" and horizon variants tie everything -> expected position 50 of 100
    spec = StateSpec.from_config(StateConfig(), dim=2)
    items = {f"i{n}": ItemInfo(vector=np.array([1.0, 0.0], np.float32)) for n in range(101)}
    events = [Event(event_id=f"{u}-{n}", user_id=f"u{u}", type="click", ts_ms=1000 * (n + 10 * u), item_id=f"i{(u + n) % 101}")
              for u in range(30) for n in range(5)]  # fmt: skip
    assert len(held_out_events(events, spec)) == 30
    result = evaluate(events, items, Config.from_sources(env={}), negatives=100)
    # each user touched 5 of the 101 items, so 96 negatives are left: 97 candidates. Ties are broken at
    # random in expectation: the true item is equally likely at each of the 97 places, 10 of which are a
    # hit — chance, not 0 (averaging the position first put it at place 48, a sure miss)
    assert result.variants["mean"]["hr@10"] == pytest.approx(10 / 97)
    assert result.variants["mean"]["ndcg@10"] == pytest.approx(sum(1 / np.log2(p + 2) for p in range(10)) / 97)


def test_p13n_eval_command_prints_a_table_and_writes_json(synthetic_run, tmp_path):
    directory, result = synthetic_run
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "p13n.cli", "eval", str(directory / "events.jsonl"), "--items",
                           str(directory / "items.jsonl"), "--json", str(out)], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for variant in ("popularity_count", "popularity", "cooccurrence", "mean", "session", "long", "covisitation", "blend"):
        assert variant in proc.stdout
    written = json.loads(out.read_text())
    assert written["variants"]["blend"] == pytest.approx(result.variants["blend"])


def test_p13n_eval_on_a_missing_file_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "p13n.cli", "eval", str(tmp_path / "none.jsonl")], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"p13n: error: no such file: {tmp_path / 'none.jsonl'}"


def test_two_evaluations_sharing_the_vector_cache_keep_each_others_vectors(tmp_path):
    # Two `p13n eval` runs (helpers, CI jobs) open the same cache before either writes: each writes through a
    # partial file of its own, merged with what the other stored — one shared `.partial.npz` made the second
    # rename fail (FileNotFoundError) and the last writer drop the first one's vectors.
    from features.evaluation.inputs import cached_encoder

    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[float(len(t)), 1.0] for t in texts], np.float32)

    path = tmp_path / "vectors.npz"
    first, second = cached_encoder(encode, path), cached_encoder(encode, path)
    first(["a"])
    second(["bb"])
    third = cached_encoder(encode, path)(["bb", "a"])
    assert calls == [["a"], ["bb"]]  # the third found both, encoding nothing
    assert third.tolist() == [[2.0, 1.0], [1.0, 1.0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.npz"]  # no partial file left behind
