"""Process settings for a folding process (``p13n consume``, the ingest benchmark).

Folding allocates in a pattern CPython's defaults handle badly: many short-lived
containers beside a large, long-lived user cache (the garbage collector), and
per-batch numpy temporaries of a few MB (glibc's allocator). Both are tuned here,
for the process, by :func:`folding_process`.

>>> with folding_process():
...     gc.get_threshold()[0]
300000
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator

__all__ = ["folding_process", "folding_gc", "retain_freed_memory"]

# mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@contextlib.contextmanager
def folding_gc(young_threshold: int = 300_000) -> Iterator[None]:
    """Garbage-collector settings for a folding process, restored on exit.

    With CPython's default (a collection every 700 allocations, each full one walking
    the whole user cache) the collector took ~8-12% of the processing stage (py-spy,
    ``p13n bench ingest``). The fold's objects hardly ever form cycles — reference
    counting frees them — so collections can be rare; what exists at start-up is
    frozen out of the collector's way.

    A young collection walks every container allocated since the last one that is still alive,
    and a poll's own objects (records, events, deltas, writes: ~100k containers a poll of 5000)
    live until the poll settles, one poll later. At 50,000 each collection walked them again,
    ~9% of the consumer's CPU at one event per user write (gc callbacks: 1.0-1.1 of 11-12 CPU-s,
    18 collections; 0.6 of 7 CPU-s at 2.67 events per write); at 300,000 most of them are freed
    before a collection comes (0.18 CPU-s, one collection; none at 2.67 events per write).
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young_threshold, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def retain_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Keep freed heap memory for reuse instead of handing it back to the kernel (glibc only).

    With glibc's defaults, the vector sums' temporaries (1-2 MB per partition batch) are
    mapped fresh and returned on every batch, and the page faults of touching them again
    cost 3-4× the arithmetic (``DecayedSumUpdates.apply``: 14.9 → 4.0 µs per state in a
    200-state micro-benchmark). Allocations below ``mmap_threshold`` now come from the heap,
    and up to ``trim_threshold`` bytes of free heap stay with the process. Returns False
    where ``mallopt`` is unavailable (not glibc): nothing changes there.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


@contextlib.contextmanager
def folding_process() -> Iterator[None]:
    """:func:`retain_freed_memory` for the process, and :func:`folding_gc` while inside."""
    retain_freed_memory()
    with folding_gc():
        yield
