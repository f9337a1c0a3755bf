"""Okapi BM25 of one query over a user's few hundred memories, scored on the request path.

The scores are those of the ``bm25s`` library (``method="lucene"``, ``k1=1.5``, ``b=0.75``,
its tokenizer: lower case, ``(?u)\\b\\w\\w+\\b``, its English stop words; a query term that occurs
twice counts twice) — a test holds them equal on random corpora. ``bm25s`` itself is built for
large, static corpora: it tokenizes into a vocabulary and precomputes a sparse score matrix over
every term, which took 26 ms for 500 memories here (7 ms tokenizing, 19 ms indexing; 0.15 ms per
query after) — more than the whole memory stage may take, and a user's memories change with every
message. Even tokenizing 500 turns per request costs ~4 ms in Python. So each memory's terms are
tokenized once, when it is created, and stored as 32-bit hashes (CRC-32 of the UTF-8 term, ~4 B per
term); a query hashes its few terms and numpy finds and scores them: well under a millisecond for
500 memories. Two distinct terms share a hash with probability 2⁻³², so a query term matching an
unrelated term of a user's few thousand is a ~1e-6 event; it only adds a little noise.

>>> corpus = Corpus.from_texts(["I adopted a dog named Max", "We went camping last weekend", "Max loves the beach"])
>>> [round(float(s), 3) for s in corpus.scores("What is the name of the dog?")]
[0.392, 0.0, 0.0]
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import functools

import numpy as np

__all__ = ["Corpus", "tokenize", "term_hashes", "K1", "B"]

K1, B = 1.5, 0.75
#: Fewest texts a term must be found in to be common (:meth:`Corpus.rare_matches`).
MIN_COMMON = 8
_SPLIT = re.compile(r"(?u)\b\w\w+\b").findall


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN  # imports scipy (~0.5 s): only once memories are used

    return frozenset(STOPWORDS_EN)
TERM_DTYPE = np.dtype("<u4")


def tokenize(text: str) -> list[str]:
    """``bm25s.tokenize``'s tokens of ``text`` (``stopwords="en"``, no stemmer).

    >>> tokenize("When did she go to the LGBTQ support group?")
    ['when', 'did', 'she', 'go', 'lgbtq', 'support', 'group']
    """
    stop = _stopwords()
    return [t for t in _SPLIT(text.lower()) if t not in stop]


def term_hashes(text: str) -> np.ndarray:
    """The terms of ``text`` as CRC-32 hashes (little-endian uint32), in order."""
    return np.array([zlib.crc32(t.encode()) for t in tokenize(text)], dtype=TERM_DTYPE)


class Corpus:
    """Hashed terms of several texts back to back (``terms``) and where each text's start (``offsets``,
    ``n + 1`` of them), ready to score queries (:meth:`scores`)."""

    def __init__(self, terms: np.ndarray, offsets: np.ndarray) -> None:
        self.terms = terms
        self.offsets = offsets
        self.size = len(offsets) - 1
        lengths = np.diff(offsets).astype(np.float64)
        average = lengths.mean() if self.size else 0.0
        #: k1·(1 − b + b·|d|/avgdl), the length norm of each text
        self.norm = K1 * (1 - B + B * lengths / average) if average > 0 else np.full(self.size, K1)

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> Corpus:
        return cls.from_hashes([term_hashes(t) for t in texts])

    @classmethod
    def from_hashes(cls, per_text: Sequence[np.ndarray]) -> Corpus:
        offsets = np.zeros(len(per_text) + 1, dtype=np.int64)
        np.cumsum([len(h) for h in per_text], out=offsets[1:])
        terms = np.concatenate(per_text).astype(TERM_DTYPE, copy=False) if per_text else np.zeros(0, TERM_DTYPE)
        return cls(terms, offsets)

    def rare_matches(self, query: str, cutoff: float) -> np.ndarray:
        """Which texts hold a query term that is not *common* (bool, one per text): common terms are found in
        more than ``cutoff`` of the texts and in more than ``MIN_COMMON`` of them (a handful of texts has
        no common term).

        Lucene's *common terms* rule: a term in most texts (a speaker's name in every turn they said, in
        a conversation stored as ``"Speaker: words"``) still adds to the scores, but cannot alone make a
        text a match.

        >>> corpus = Corpus.from_texts(["Ana: hi"] * 8 + ["Ana: we got a puppy", "Ben: hi Ana"])
        >>> corpus.rare_matches("Ana's puppy", 0.5).tolist()[-2:], corpus.rare_matches("Ana", 0.5).any()
        ([True, False], np.False_)
        """
        wanted = np.unique(term_hashes(query))
        hit = np.zeros(self.size, dtype=bool)
        if not self.size or not wanted.size:
            return hit
        positions = np.flatnonzero(np.isin(self.terms, wanted))
        docs = np.searchsorted(self.offsets, positions, side="right") - 1
        found = self.terms[positions]
        limit = max(cutoff * self.size, MIN_COMMON)
        rare = np.zeros(len(positions), dtype=bool)
        for term in np.unique(found).tolist():
            mine = found == term
            if len(np.unique(docs[mine])) <= limit:
                rare |= mine
        hit[docs[rare]] = True
        return hit

    def scores(self, query: str) -> np.ndarray:
        """BM25 of every text for ``query`` (float64, one per text; 0 where no query term occurs)."""
        out = np.zeros(self.size, dtype=np.float64)
        wanted = term_hashes(query)
        if not self.size or not wanted.size:
            return out
        unique, weight = np.unique(wanted, return_counts=True)
        positions = np.flatnonzero(np.isin(self.terms, unique))
        if not positions.size:
            return out
        docs = np.searchsorted(self.offsets, positions, side="right") - 1
        columns = np.searchsorted(unique, self.terms[positions])
        tf = np.zeros((self.size, len(unique)), dtype=np.float64)
        np.add.at(tf, (docs, columns), 1.0)
        df = np.count_nonzero(tf, axis=0)
        idf = np.log1p((self.size - df + 0.5) / (df + 0.5)) * weight
        hit = np.unique(docs)
        rows = tf[hit]
        out[hit] = (idf * rows / (rows + self.norm[hit, None])).sum(axis=1)
        return out

