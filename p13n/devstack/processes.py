"""Process supervision for the dev stack and the tests: start a server detached from us, tell whether a PID is
still the process we started, wait for readiness by polling with a deadline, and stop a process with
everything it started in its session.

Everything reads ``/proc`` (Linux). A PID counts as ours only while ``/proc/<pid>/exe`` is the binary we
started and the process is not a zombie, so a reused PID is never signalled.

>>> pid_runs(os.getpid(), sys.executable)
True
>>> wait_until(lambda: True, timeout=1, what="truth")
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from p13n.errors import ServiceError

__all__ = ["pid_runs", "wait_until", "spawn_detached", "stop_session", "session_members", "iter_processes_of",
           "log_tail"]


def pid_runs(pid: int, executable: str) -> bool:
    """True if ``pid`` is a live (non-zombie) process running ``executable``."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state == "Z":  # exited, waiting to be reaped
        return False
    # compare the binaries, not argv: servers rewrite their process title
    return os.path.realpath(exe.removesuffix(" (deleted)")) == os.path.realpath(executable)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it returns True, or raise :class:`ServiceError` after ``timeout`` seconds.

    >>> wait_until(lambda: False, timeout=0.01, what="falsehood")
    Traceback (most recent call last):
    ...
    p13n.errors.ServiceError: falsehood did not become ready within 0.01s
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what} did not become ready within {timeout:g}s")
        time.sleep(interval)


_LAUNCHER = """
import os, subprocess, sys
cwd, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
print(proc.pid)
"""


def spawn_detached(argv: list[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session, re-parented to init (so it outlives us and is reaped by
    init, not left a zombie of ours); stdout/stderr append to ``log`` (created readable by its owner
    only). Returns its PID."""
    try:
        out = subprocess.run([sys.executable, "-c", _LAUNCHER, str(cwd), str(log), *argv],
                             capture_output=True, text=True, check=True, timeout=30, env=env)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise ServiceError(f"could not start {argv[0]}: {exc.stderr.strip().splitlines()[-1:]}") from exc
    return int(out.stdout.strip())


def log_tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` lines of a log, joined with `` | `` (for an error message)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def stop_session(pid: int, *, name: str, alive: Callable[[], bool], grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``grace_s``; return once ``alive()`` is false and
    everything the process started in its session (each service is a session leader, e.g. Ray's raylet, GCS
    and workers under `p13n serve`) is gone. ``name`` names the process in errors."""

    def gone() -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass  # not our child: init reaps it, and alive() treats a zombie as gone
        return not alive()

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        except PermissionError as exc:
            raise ServiceError(f"not allowed to stop {name} (pid {pid})") from exc
        try:
            wait_until(gone, timeout=wait, what=f"{name} (pid {pid}) to stop")
            break
        except ServiceError:
            if sig == signal.SIGKILL:
                raise
    try:
        wait_until(lambda: not session_members(pid), timeout=grace_s, what=f"the rest of {name}'s session")
    except ServiceError:
        for member in session_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)


def session_members(sid: int) -> list[int]:
    """Live, non-zombie processes of session ``sid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def iter_processes_of(state_dir: Path) -> Iterator[int]:
    """PIDs of live (non-zombie) processes whose working directory is ``state_dir``."""
    target = state_dir.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "cwd")).resolve() != target:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        yield int(entry.name)
