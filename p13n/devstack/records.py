"""The dev stack's state file: ``<state_dir>/stack.json`` records each process the stack started (name, PID,
port, URL, command line, log), so that a second ``p13n dev up`` finds the running stack and ``down`` stops
exactly the processes recorded there.

>>> import tempfile
>>> directory = Path(tempfile.mkdtemp())
>>> write_records(directory, [ServiceRecord(name="redis", pid=1, port=6390, url="redis://127.0.0.1:6390/0",
...                                         argv=["/bin/false"], log="redis.log", started_at=0.0)])
>>> [(r.name, r.port) for r in read_records(directory)]
[('redis', 6390)]
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from p13n.devstack.processes import pid_runs
from p13n.errors import ServiceError

__all__ = ["STACK_FILE", "ServiceRecord", "read_records", "write_records", "make_state_dir"]

STACK_FILE = "stack.json"


@dataclass
class ServiceRecord:
    """One process the dev stack started."""

    name: str
    pid: int
    port: int
    url: str
    argv: list[str]
    log: str
    started_at: float = field(default_factory=time.time)

    def is_alive(self) -> bool:
        """True while the recorded PID is still the process we started."""
        return pid_runs(self.pid, self.argv[0])


def read_records(state_dir: Path) -> list[ServiceRecord]:
    """Every service recorded under ``state_dir``, alive or not (none without a state file); raises
    :class:`ServiceError` if the file is not JSON."""
    stack_file = Path(state_dir) / STACK_FILE
    try:
        data = json.loads(stack_file.read_text())
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as exc:
        raise ServiceError(f"{stack_file} is corrupt ({exc.msg}); remove it after stopping the stack") from exc
    return [ServiceRecord(**item) for item in data.get("services", [])]


def make_state_dir(state_dir: Path) -> None:
    """The state directory, private to its owner (the services' logs and environment-derived state)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)


def write_records(state_dir: Path, records: list[ServiceRecord]) -> None:
    """Replace the state file atomically (write a temporary file, rename it over the old one)."""
    make_state_dir(state_dir)
    stack_file = Path(state_dir) / STACK_FILE
    tmp = stack_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": [asdict(r) for r in records]}, indent=2))
    tmp.replace(stack_file)
