"""int8 versions of an exported fp32 encoder: dynamic (request path) and static (catalogs).

* **dynamic** (``model.int8.onnx``): weights int8 per channel, activation scales computed at run
  time over the whole input tensor — fast for one query, but a text's vector then depends on the
  rest of its batch (the scale of a batch is its largest activation).
* **static** (``model.int8-static.onnx``): activation scales calibrated once, at export, on
  :data:`CALIBRATION_TEXTS` (written here, shipped with the package; nothing is downloaded). A
  row's vector is a function of its own tokens only, so bulk catalogs can be batched freely.

Measured on all-MiniLM-L6-v2 (cosine to sentence-transformers, MovieLens titles / the parity
sentences of ``tests/features/test_encoder_parity.py``): static calibration of every weight
MatMul gave min 0.89 / 0.80 (min-max) and 0.87 / 0.82 (99.999th percentile) — the input of each
feed-forward block's output projection (GELU activations, long-tailed) cannot share one uint8
scale. Keeping those six MatMuls in fp32 (:func:`static_quantizable`) gives min 0.983 / 0.948,
mean 0.990 / 0.990, close to the dynamic model (min 0.982 / 0.953, mean 0.992 / 0.992). Keeping the
attention output projections in fp32 as well gained < 0.003.

onnxruntime's quantization tools write scratch files into the working directory, so both run
inside a temporary one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from features.datasets.synthetic import SyntheticSpec, generate

__all__ = ["CALIBRATION_TEXTS", "quantize_dynamic_int8", "quantize_static_int8", "static_quantizable"]

_TITLES = [
    ("Pride and Prejudice", 1813, "Romance, Drama"), ("Moby-Dick", 1851, "Adventure"),
    ("The Time Machine", 1895, "Sci-Fi"), ("Dracula", 1897, "Horror, Thriller"),
    ("The Hound of the Baskervilles", 1902, "Mystery, Crime"), ("Peter Pan", 1911, "Children, Fantasy"),
    ("The Great Gatsby", 1925, "Drama"), ("Metamorphosis", 1915, "Fantasy, Drama"),
    ("Twenty Thousand Leagues Under the Seas", 1870, "Adventure, Sci-Fi"), ("Little Women", 1868, "Drama, Romance"),
    ("The Adventures of Tom Sawyer", 1876, "Adventure, Children, Comedy"), ("Frankenstein", 1818, "Horror, Sci-Fi"),
    ("A Christmas Carol", 1843, "Children, Drama, Fantasy"), ("The War of the Worlds", 1898, "Action, Sci-Fi, War"),
    ("Alice's Adventures in Wonderland", 1865, "Animation, Children, Fantasy, Musical"),
    ("The Count of Monte Cristo", 1844, "Action, Adventure, Drama"), ("Nosferatu", 1922, "Horror"),
    ("The General", 1926, "Comedy, War"), ("Sherlock Jr.", 1924, "Comedy, Mystery"), ("Metropolis", 1927, "Sci-Fi"),
    ("Les Misérables", 1862, "Drama, Musical"), ("Don Quixote", 1605, "Comedy, Adventure"),
    ("Anna Karenina", 1878, "Drama, Romance"), ("Jane Eyre", 1847, "Drama, Romance"),
    ("Treasure Island", 1883, "Adventure, Children"), ("The Jungle Book", 1894, "Adventure, Animation, Children"),
    ("Around the World in Eighty Days", 1872, "Adventure, Comedy"), ("Heart of Darkness", 1899, "Drama, War"),
    ("The Picture of Dorian Gray", 1890, "Drama, Fantasy, Horror"), ("Wuthering Heights", 1847, "Drama, Romance"),
    ("The Strange Case of Dr Jekyll and Mr Hyde", 1886, "Horror, Mystery, Thriller"),
    ("The Phantom of the Opera", 1910, "Horror, Musical, Romance"), ("The Secret Garden", 1911, "Children, Drama"),
    ("Crime and Punishment", 1866, "Crime, Drama, Film-Noir"), ("The Three Musketeers", 1844, "Action, Adventure"),
    ("Journey to the Center of the Earth", 1864, "Adventure, Documentary, Sci-Fi, IMAX"),
]  # fmt: skip
_PRODUCTS = [
    "lightweight running shoes", "waterproof trail runners", "remastered jazz vinyl", "organic vegan cookbook",
    "ultralight camping tent", "four-season sleeping bag", "wireless gaming mouse", "mechanical keyboard, brown switches",
    "foldable baby stroller", "mirror-less camera body", "50 mm prime lens", "noise-cancelling headphones",
    "cast-iron skillet", "espresso machine with milk frother", "ergonomic office chair", "4K monitor, 27 inch",
]  # fmt: skip
_QUESTIONS = [
    "what should I cook tonight", "which tent is best for winter camping", "recommend a jazz record like Coltrane",
    "cheap flights to Lisbon in May", "is this stroller easy to fold", "how do I clean a cast-iron pan",
    "a movie for a rainy Sunday with the kids", "something scary but not too gory",
]  # fmt: skip
_MESSAGES = [
    "I am vegetarian and allergic to peanuts.", "My budget is under 100 euros.", "I only watch films with subtitles.",
    "We have a two-year-old daughter.", "Ich suche ein Geschenk für meinen Vater.", "¿Tienen esto en talla 42?",
    "ok 👍", "hi", "thanks!", "ERROR 42: disk full, retrying in 5s", "https://example.com/item?id=7",
    "The order arrived late and the box was damaged, but the shoes themselves fit perfectly and feel great.",
]  # fmt: skip

#: Texts the static int8 model's activation ranges are calibrated on: catalog titles in the
#: ``"Title (year) | Genre, Genre"`` form ``p13n import movielens`` writes (public-domain works, not
#: MovieLens rows: the benchmark's titles stay unseen), product names (ours and the synthetic
#: catalog's), questions, chat messages and near-empty texts. Adding the last two groups raised the
#: minimum cosine on MovieLens titles from 0.979 to 0.983.
CALIBRATION_TEXTS: list[str] = (
    [f"{t} ({y}) | {g}" for t, y, g in _TITLES]
    + [f"{t} ({y})" for t, y, _ in _TITLES[::4]]
    + [f"{a} {p}" for a, p in itertools.product(("Best-selling", "Refurbished", "Kids'"), _PRODUCTS)]
    + [f"{q}?" for q in _QUESTIONS]
    + [f"{q}, {p}?" for q, p in zip(itertools.cycle(_QUESTIONS), _PRODUCTS)]
    + _MESSAGES
    + ["", "?", "hi there"]
    + sorted({item["text"] for item in generate(SyntheticSpec(users=2, items_per_category=12, events_per_user=2,
                                                                 seed=11)).items})  # fmt: skip
)


def static_quantizable(model_path: Path) -> list[str]:
    """Names of the MatMul nodes the static model quantizes: those with a weight (initializer) input,
    except each feed-forward block's output projection (``…/output/dense/MatMul`` outside ``attention``;
    transformers' BERT-family naming). Activation × activation MatMuls (attention scores) stay fp32."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and any(name in weights for name in node.input)
            and not ("/output/dense/" in node.name and "/attention/" not in node.name)]  # fmt: skip


def _prepared(scratch: str, fp32_path: Path) -> str:
    """Graph fusion + ONNX shape inference before quantizing (per-tensor scales without it gave 0.93)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = os.path.join(scratch, "model.prepared.onnx")
    quant_pre_process(str(fp32_path.resolve()), prepared, skip_symbolic_shape=True)
    return prepared


def quantize_dynamic_int8(fp32_path: Path, out_path: Path) -> None:
    """``fp32_path`` → ``out_path`` with int8 per-channel weights and run-time activation scales."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = out_path.resolve()
    with tempfile.TemporaryDirectory(prefix="p13n-quantize-") as scratch, contextlib.chdir(scratch):
        prepared = _prepared(scratch, fp32_path)
        tmp = out_path.with_name(out_path.name + ".tmp")
        quantize_dynamic(prepared, str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, out_path)  # readers of an existing export never see half a file


def quantize_static_int8(fp32_path: Path, out_path: Path, token_ids: Sequence[Sequence[int]], *, pad_id: int = 0,
                         batch_size: int = 8) -> None:  # fmt: skip
    """``fp32_path`` → ``out_path`` in QDQ form: int8 per-channel weights, uint8 activations whose
    scales were calibrated (min-max) on ``token_ids`` (the tokenized :data:`CALIBRATION_TEXTS`)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)  # fmt: skip

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter(_feeds(token_ids, batch_size, pad_id))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    out_path = out_path.resolve()
    with tempfile.TemporaryDirectory(prefix="p13n-quantize-") as scratch, contextlib.chdir(scratch):
        prepared = _prepared(scratch, fp32_path)
        tmp = out_path.with_name(out_path.name + ".tmp")
        quantize_static(prepared, str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        nodes_to_quantize=static_quantizable(Path(prepared)), calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})  # fmt: skip
        os.replace(tmp, out_path)


def _feeds(token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[dict[str, np.ndarray]]:
    """Model inputs of ``token_ids`` in batches, each padded to its longest text."""
    feeds = []
    for start in range(0, len(token_ids), batch_size):
        chunk = token_ids[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(chunk):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds
