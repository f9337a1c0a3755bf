"""Inputs of the offline evaluation: a JSONL event log and its catalog, item texts embedded once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.core.events import Event
from features.core.state import ItemInfo
from p13n.errors import open_input
from p13n.vocabulary import TEXT_EVENT_TYPES

__all__ = ["EvalInputs", "cached_encoder", "load_eval_inputs"]


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

    from features.core.events import ItemRecord, Rejection, parse_event, parse_item
    from p13n.errors import InputError

    events: list[Event] = []
    texts: dict[str, str] = {}
    attributes: dict[str, dict] = {}
    rejected = 0
    progress("reading events")
    try:
        with open_input(events_path, what="events file") as fh:
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
            with open_input(items_path, what="items file") as fh:
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
    phrases = sorted({e.text for e in events if e.text and e.type in TEXT_EVENT_TYPES})
    text_vectors = dict(zip(phrases, encode(phrases))) if phrases else {}
    return EvalInputs(events=events, items=items, text_vectors=text_vectors, rejected=rejected)


def cached_encoder(encode: Callable[[list[str]], np.ndarray], path: Path) -> Callable[[list[str]], np.ndarray]:
    """``encode`` with an on-disk cache of vectors by text (one ``.npz`` at ``path``; written when
    something new was encoded). Name ``path`` after the model, so another model never reads it.

    >>> import tempfile
    >>> calls = []
    >>> def encode(texts): calls.append(len(texts)); return np.ones((len(texts), 2), np.float32)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     cached = cached_encoder(encode, Path(d) / "v.npz")
    ...     _ = cached(["a", "b"]); again = cached_encoder(encode, Path(d) / "v.npz")(["b", "a", "c"])
    >>> calls, again.shape
    ([2, 1], (3, 2))
    """
    import hashlib

    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    memo: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as stored:
            memo = {k: stored[k] for k in stored.files}

    def cached(texts: list[str]) -> np.ndarray:
        keys = [key(t) for t in texts]
        missing = sorted({t for t, k in zip(texts, keys) if k not in memo})
        if missing:
            for text, vector in zip(missing, encode(missing)):
                memo[key(text)] = vector
            _store(path, memo)
        return np.stack([memo[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)

    return cached


def _store(path: Path, memo: dict[str, np.ndarray]) -> None:
    """Write ``memo`` to ``path`` with whatever another process stored there since (merged, ours win), through a
    partial file of this process's own: two evaluations sharing the cache (helpers, CI jobs) each rename only
    their own file, where one shared ``.partial.npz`` made the second rename fail (FileNotFoundError) and the
    last writer drop the first one's vectors."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with np.load(path) as stored:
            for k in stored.files:
                memo.setdefault(k, stored[k])
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, **memo)
    partial.replace(path)
