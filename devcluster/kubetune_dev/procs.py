"""Process bookkeeping for the dev cluster and its pods: spawn, identify, stop, sweep.

A pid alone is not an identity (pids are reused), so every handle also records the process start
time from /proc/<pid>/stat and the boot id; a handle matches a live process only if all agree.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")
log = logging.getLogger(__name__)


def boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def is_running(pid: int) -> bool:
    """True while any thread of the process lives; a zombie (exited, not yet reaped) is gone.

    A multi-threaded process (every Go binary) shows its leader as a zombie while the other
    threads are still exiting and still hold its sockets; until they are gone it counts as running,
    so a restarted server never finds its port still taken.
    """
    fields = _stat_fields(pid)
    if not fields:
        return False
    if fields[0] not in ("Z", "X"):
        return True
    try:
        threads = [t.name for t in (PROC / str(pid) / "task").iterdir()]
    except OSError:
        return False
    for tid in threads:
        try:
            raw = (PROC / str(pid) / "task" / tid / "stat").read_text()
        except OSError:
            continue
        if raw[raw.rfind(")") + 2 :].split()[0] not in ("Z", "X"):
            return True
    return False


@dataclass(frozen=True)
class ProcessHandle:
    pid: int
    start_time: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> ProcessHandle | None:
        started = start_time(pid)
        return None if started is None else cls(pid, started, boot_id())

    def alive(self) -> bool:
        return self.boot_id == boot_id() and start_time(self.pid) == self.start_time and is_running(self.pid)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProcessHandle:
        data = json.loads(text)
        return cls(int(data["pid"]), int(data["start_time"]), str(data["boot_id"]))

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> ProcessHandle | None:
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, KeyError):
            return None


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def start_in_session(
    argv: Sequence[str], *, log_file: Path, env: Mapping[str, str], cwd: Path | str | None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, stdout and stderr appended to `log_file`.

    Its own session makes its process group signalable as a whole.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab", buffering=0) as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> ProcessHandle:
    """Start `argv` in its own session and identify it (pid + start time) for later checks."""
    proc = start_in_session(argv, log_file=log_file, env=env, cwd=cwd)
    handle = ProcessHandle.of(proc.pid)
    if handle is None:  # exited before we could look: still identify it, it will read as dead
        handle = ProcessHandle(proc.pid, -1, boot_id())
    return handle


def reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie; no-op for others."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def signal_group(handle: ProcessHandle, sig: int) -> bool:
    """Signal the process group led by `handle` (falls back to the pid); False if it is gone."""
    if not handle.alive():
        return False
    try:
        os.killpg(handle.pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, sig)
    except PermissionError:
        return False
    return True


def stop(handle: ProcessHandle, *, grace: float = 10.0) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, and reap if it was our child."""
    if signal_group(handle, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap(handle.pid)
            if not handle.alive():
                break
            time.sleep(0.05)
        else:
            signal_group(handle, signal.SIGKILL)
    # Members of the group may outlive the leader; SIGKILL whatever is left of it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(handle.pid, signal.SIGKILL)
    for _ in range(100):
        reap(handle.pid)
        if not handle.alive():
            return
        time.sleep(0.02)


def processes_with_env(key: str, value: str) -> Iterator[int]:
    """Pids whose initial environment has `key=value` (the marker every cluster process carries)."""
    needle = f"{key}={value}".encode()
    me = os.getpid()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            yield int(entry.name)


def sweep(key: str, value: str) -> list[int]:
    """SIGKILL every process still carrying the marker (pods that left their process group, etc.)."""
    killed = []
    for pid in processes_with_env(key, value):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    for pid in killed:
        reap(pid)
    return killed


def watch_owner(owner: str, cluster_home: Path, stop: threading.Event) -> None:
    """Block until `owner` ("pid:starttime", a test session) is gone or `stop` is set; if the owner
    died first, run `kubetune dev down` on `cluster_home`, detached so it outlives this process."""
    pid, _, started = owner.partition(":")
    handle = ProcessHandle(int(pid), int(started), boot_id())
    while not stop.wait(2.0):
        if handle.alive():
            continue
        log.warning("owner process %s is gone; tearing the cluster down", pid)
        subprocess.Popen(
            [sys.executable, "-m", "kubetune.cli", "dev", "--home", str(cluster_home), "down"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
        stop.set()
        return
