"""Shared helpers of the benchmarks: percentiles, machine facts, result files.

>>> percentiles([1.0, 2.0, 3.0, 4.0, 100.0], (50, 99))
{'p50': 3.0, 'p99': 96.16}
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["percentiles", "machine_info", "write_result", "Timer"]

RESULTS_DIR = Path(__file__).resolve().parent / "out"


def percentiles(samples: Sequence[float], points: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Named percentiles of ``samples`` (linear interpolation), rounded to 3 decimals."""
    arr = np.asarray(samples, dtype=np.float64)
    out = {}
    for p in points:
        name = f"p{p:g}"
        out[name] = round(float(np.percentile(arr, p)), 3) if arr.size else float("nan")
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Cores, CPU model and the versions that matter, stored next to every result."""
    versions = {}
    for package in ("p13n", "numpy", "onnxruntime", "redis", "kafka-python", "ray", "torch", "sentence-transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg_at_start": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, result: dict, directory: Path | None = None) -> Path:
    """Write ``result`` (with machine info) as JSON; returns the path."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine_info(), **result}, indent=2))
    return path


class Timer:
    """Collects durations in milliseconds.

    >>> t = Timer()
    >>> with t:
    ...     pass
    >>> len(t.samples_ms)
    1
    """

    def __init__(self) -> None:
        self.samples_ms: list[float] = []
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.samples_ms.append((time.perf_counter() - self._start) * 1000.0)
