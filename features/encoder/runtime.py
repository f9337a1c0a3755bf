"""Run-time sentence encoder: onnxruntime + tokenizers only (no torch).

Texts are tokenized without padding, grouped into length buckets (multiples of
4 tokens up to ``max_length``) and each text is padded to its own bucket's bound,
so one long text does not make a whole batch pay for its padding.

Batch independence. A text's vector must not depend on what else is in its batch
(the consumer embeds catalogs in chunks whose sizes follow the measured encode
rate). Measured with onnxruntime 1.31 on this AVX2 CPU, fp32 and static int8, 1 or
2 intra-op threads, any graph optimisation level, a row's output bits depend on

* the padded width modulo 4 (an unpadded width of 11 and the same text padded to
  12 or 16 differ in the last bits; widths 12, 16, 20 … 128 all agree), and
* whether the batch has one row or more (a batch of 1 takes other kernel paths);

and on nothing else: not on the batch size beyond that, the row's position, the
neighbours' tokens or the thread count. So every text is padded to its bucket
bound (a multiple of 4) and a lone text runs as a batch of two copies of itself:
then a text's vector is bit-identical alone, in any batch and in any chunking
(``tests/features/test_encoder_batching.py``). The dynamic int8 model cannot have
this property — its activation scale is the whole batch's — so there a lone text
runs alone (the request path's single-query latency), and buckets double (8, 16,
32 …) and pad only to the longest text of a batch, as before.

>>> enc = Encoder.from_directory(default_encoder_dir())   # exported by `make test` / `p13n encoder export`
>>> vectors = enc.encode(["red running shoes", "trail runners for muddy paths", "a jazz vinyl record"])
>>> vectors.shape
(3, 384)
>>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from p13n.config import EncoderConfig
from p13n.errors import ConfigError

__all__ = ["Encoder", "length_buckets", "default_encoder_dir", "encoder_dimension", "BUCKET_STEP"]


def default_encoder_dir() -> Path:
    """Where ``p13n encoder export`` writes by default."""
    return EncoderConfig().directory


def encoder_dimension(directory: Path) -> int:
    """Vector size of an exported encoder, from its metadata (no model is loaded)."""
    try:
        return int(json.loads((Path(directory).expanduser() / "p13n_encoder.json").read_text())["dimension"])
    except FileNotFoundError as exc:
        raise ConfigError(f"no exported encoder at {directory}: run `p13n encoder export`") from exc


#: Bucket bounds are multiples of this many tokens (see "Batch independence" above). On MovieLens
#: titles (14.6 tokens on average) padding adds 10.6 % tokens with 4, 25 % with 8.
BUCKET_STEP = 4


def length_buckets(lengths: Sequence[int], max_length: int, step: int = BUCKET_STEP, *,
                   doubling: bool = False) -> dict[int, list[int]]:  # fmt: skip
    """Group text indices by the smallest multiple of ``step`` their length fits (at most ``max_length``);
    ``doubling``: by the smallest of 8, 16, 32 … instead (fewer, larger batches for the request path).

    >>> length_buckets([3, 9, 17, 5, 128, 16], max_length=128)
    {4: [0], 8: [3], 12: [1], 16: [5], 20: [2], 128: [4]}
    >>> length_buckets([3, 9, 17, 5, 128, 16], max_length=128, doubling=True)
    {8: [0, 3], 16: [1, 5], 32: [2], 128: [4]}
    """
    buckets: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        if doubling:
            bound = 8
            while bound < length and bound < max_length:
                bound *= 2
        else:
            bound = max(step, -(-length // step) * step)
        buckets.setdefault(min(bound, max_length), []).append(index)
    return dict(sorted(buckets.items()))


class Encoder:
    """An exported sentence encoder loaded into onnxruntime.

    ``variant``: ``fp32``, ``int8`` (dynamic activation scales: fastest for one text, vectors depend
    on the batch) or ``int8-static`` (calibrated scales: fast in bulk, batch-independent).
    ``threads``: onnxruntime intra-op threads (0: the library's default, one per core)."""

    def __init__(self, directory: Path, *, variant: str = "int8", threads: int = 1, max_length: int = 128,
                 batch_size: int = 64) -> None:  # fmt: skip
        import onnxruntime as ort
        from tokenizers import Tokenizer

        directory = Path(directory).expanduser()
        meta_path = directory / "p13n_encoder.json"
        try:
            self.meta = json.loads(meta_path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"no exported encoder at {directory}: run `p13n encoder export`") from exc
        files = self.meta["files"]
        if variant not in files:
            raise ConfigError(f"encoder at {directory} has no {variant!r} model (has: {', '.join(files)})")
        self.directory = directory
        self.variant = variant
        self.dimension = int(self.meta["dimension"])
        self.max_length = min(max_length, int(self.meta["max_length"]))
        self.batch_size = batch_size
        self.pad_id = int(self.meta.get("pad_token_id", 0))
        self.batch_independent = variant != "int8"
        self.threads = threads
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if threads != 1:
            # Idle pool threads sleep instead of spinning. On this shared 2-core machine (load ~10), 500
            # titles with int8-static: 1 thread 60–70 items/s, 2 spinning threads 31–42, 2 sleeping 47–60.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(directory / files[variant]), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(directory / self.meta.get("tokenizer", "tokenizer.json")))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self._counter = Tokenizer.from_file(str(directory / self.meta.get("tokenizer", "tokenizer.json")))
        self._counter.no_padding()
        self._counter.no_truncation()

    @classmethod
    def from_config(cls, config: EncoderConfig) -> Encoder:
        return cls(config.directory, variant=config.variant, threads=config.threads, max_length=config.max_length)

    @classmethod
    def for_consumer(cls, config: EncoderConfig) -> Encoder:
        """The consumer's encoder (``encoder.consumer_variant``, ``encoder.consumer_threads``)."""
        return cls(config.directory, variant=config.consumer_variant, threads=config.consumer_threads,
                   max_length=config.max_length)  # fmt: skip

    @classmethod
    def from_directory(cls, directory: Path, **kwargs) -> Encoder:
        return cls(directory, **kwargs)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens (for prompt budgets)."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` as a float32 array of shape (len(texts), dimension); texts longer
        than ``max_length`` tokens are truncated."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        # the dynamic int8 model's vectors depend on the batch anyway: it keeps the request path's wider buckets
        buckets = length_buckets(lengths, self.max_length, doubling=not self.batch_independent)
        for bound, indices in buckets.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                if self.batch_independent:
                    rows, width = (chunk * 2 if len(chunk) == 1 else chunk), bound
                else:  # the batch changes the vectors anyway: pad no further than the longest text
                    rows, width = chunk, max(lengths[i] for i in chunk)
                ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for row, i in enumerate(rows):
                    n = lengths[i]
                    ids[row, :n] = encodings[i].ids
                    mask[row, :n] = 1
                (vectors,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
                out[chunk] = vectors[: len(chunk)]
        return out
