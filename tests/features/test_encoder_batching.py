"""A text's vector does not depend on its batch: the same text alone, in a mixed batch, in any chunking
and with 1 or 2 threads gives bit-identical vectors (fp32 and int8-static; features/encoder/runtime.py says why)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from features.encoder.runtime import Encoder, default_encoder_dir
from p13n.importers import movie_text
from stream.catalog import ChunkedEncoder

MOVIES = Path(__file__).resolve().parents[1] / "data" / "movielens-tiny" / "movies.csv"
ODD = ["", "hi", "ok 👍", "The " + "very " * 60 + "long sentence.", "x " * 300, "東京の天気はどうですか"]


def texts(n: int = 60) -> list[str]:
    with MOVIES.open(newline="", encoding="utf-8") as fh:
        titles = [movie_text(row["title"], row["genres"])[0] for row in csv.DictReader(fh)]
    return random.Random(7).sample(titles, n) + ODD


@pytest.fixture(scope="module", params=["fp32", "int8-static"])
def encoders(request) -> tuple[Encoder, Encoder]:
    directory = default_encoder_dir()
    return (Encoder.from_directory(directory, variant=request.param, threads=1),
            Encoder.from_directory(directory, variant=request.param, threads=2))  # fmt: skip


def test_alone_and_in_any_batch_give_the_same_bits(encoders):
    one_thread, two_threads = encoders
    sample = texts()
    alone = np.vstack([one_thread.encode([t]) for t in sample])
    rng = random.Random(3)
    order = list(range(len(sample)))
    rng.shuffle(order)
    mixed = np.empty_like(alone)
    start = 0
    while start < len(order):  # shuffled texts of every length, in chunks of 1 to 70
        part = order[start : start + rng.randint(1, 70)]
        mixed[part] = two_threads.encode([sample[i] for i in part])
        start += len(part)
    differing = [sample[i] for i in np.flatnonzero((alone != mixed).any(axis=1))]
    assert not differing, differing[:5]
    assert np.array_equal(one_thread.encode(sample), alone)


def test_the_consumer_chunking_does_not_change_the_vectors(encoders):
    encoder = encoders[0]
    sample = texts(30)
    durations = iter([0.0, 0.9, 0.0, 0.1, 0.0, 2.5, 0.0, 0.3] * 20)  # a clock that makes every chunk "take" its own time
    now = [0.0]

    def clock() -> float:
        now[0] += next(durations)
        return now[0]

    sizes: list[int] = []

    def encode(part: list[str]) -> np.ndarray:
        sizes.append(len(part))
        return encoder.encode(part)

    got = ChunkedEncoder(encode, chunk_s=0.2, clock=clock)(sample)
    assert len(sizes) > 2 and len(set(sizes)) > 2, sizes  # chunk sizes followed the measured "rate"
    assert np.array_equal(got, encoder.encode(sample))


def test_the_dynamic_int8_model_is_not_batch_independent():
    """Why the consumer does not use it: its activation scale is the whole batch's."""
    encoder = Encoder.from_directory(default_encoder_dir(), variant="int8")
    assert not encoder.batch_independent
    sample = texts(40)
    alone = np.vstack([encoder.encode([t]) for t in sample])
    assert (alone != encoder.encode(sample)).any(axis=1).sum() > len(sample) // 2
