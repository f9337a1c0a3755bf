"""What the processing stage takes and gives: fetched records, dead letters, a batch's outcome —
and how a partition's records and global deltas are laid out (offsets, contiguous calls)."""

from __future__ import annotations

import json
import operator
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from features.core.events import Rejection

__all__ = ["Record", "DeadLetter", "BatchOutcome", "Timed", "DECODE_ERROR", "decode_error", "global_chunks",
           "records_from_lines"]

#: Dead-letter reason of a record whose decoding raised (a decoder bug, not a contract violation).
DECODE_ERROR = "decode_error"

#: Sort key of ``(offset, …)`` pairs.
by_offset = operator.itemgetter(0)


@dataclass(frozen=True)
class Record:
    """A fetched Kafka record, reduced to what processing needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    reason: str
    detail: str


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    items_embedded: int = 0
    conflicts: int = 0
    freshness_s: list[float] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))


class Timed:
    """Adds the time spent inside ``with Timed(outcome, stage):`` to ``outcome.stage_s[stage]``."""

    __slots__ = ("outcome", "stage", "start")

    def __init__(self, outcome: BatchOutcome, stage: str) -> None:
        self.outcome, self.stage = outcome, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.outcome.stage_s[self.stage] += time.perf_counter() - self.start


def decode_error(exc: BaseException) -> Rejection:
    """The rejection of a record whose parsing raised ``exc``: the safety net that turns any decoder
    failure into a dead letter instead of an exception out of the consumer loop.

    >>> decode_error(UnicodeDecodeError("utf-8", b"\\xff", 0, 1, "invalid start byte"))
    Rejection(reason='decode_error', detail="UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte")
    """
    return Rejection(DECODE_ERROR, f"{type(exc).__name__}: {exc}")


def global_chunks(deltas: list[tuple[int, list, list]], limit: int) -> Iterator[tuple[int, list, list, list]]:
    """Per-event ``(offset, popularity, co-visit runs)`` deltas of one partition, in offset order, cut into
    calls of about ``limit`` updates (popularity deltas and co-visited pairs): ``(last offset, popularity,
    co-visit runs, the events' deltas)`` each.

    A call covers a contiguous range of offsets and records its last one as the partition's global
    applied offset, so after a crash between calls the replay skips exactly the events at or below
    it — whatever batch boundaries the replay sees.

    >>> run = ("b", ["a", "c"], 1.0, "e7")
    >>> [(last, len(p), len(c), len(e)) for last, p, c, e in global_chunks([(7, [1], [run]), (3, [4], [])], limit=1)]
    [(3, 1, 0, 1), (7, 1, 1, 1)]
    >>> [(last, len(p), len(c), len(e)) for last, p, c, e in global_chunks([(7, [1], [run]), (3, [4], [])], limit=100)]
    [(7, 2, 1, 2)]
    """
    deltas.sort(key=by_offset)
    pops: list = []
    runs: list = []
    size = 0
    first = 0
    for n, (offset, event_pops, event_runs) in enumerate(deltas):
        pops += event_pops
        runs += event_runs
        size += len(event_pops) + sum([len(run[1]) for run in event_runs])
        if size >= limit:
            yield offset, pops, runs, deltas[first : n + 1]
            pops, runs, size, first = [], [], 0, n + 1
    if pops or runs:
        yield deltas[-1][0], pops, runs, deltas[first:]


def records_from_lines(lines: Sequence[bytes], topic: str, partitions: int = 4) -> list[Record]:
    """Records as a keyed producer would lay ``lines`` out over ``partitions`` (for tests and benchmarks).

    >>> [(r.partition, r.offset) for r in records_from_lines([b'{"user_id": "a"}', b'{"user_id": "a"}', b"junk"], "t")]
    [(2, 0), (2, 1), (0, 0)]
    """
    next_offset: dict[int, int] = defaultdict(int)
    out = []
    for raw in lines:
        try:
            obj = json.loads(raw)
            key = f"{obj.get('tenant', 'default')}/{obj['user_id']}".encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            key = None
        partition = zlib.crc32(key) % partitions if key else 0
        out.append(Record(topic, partition, next_offset[partition], key, raw))
        next_offset[partition] += 1
    return out
