"""Plumbing shared by every scenario: temp space, random files, process
bookkeeping, RSS sampling, statistics and machine information.

Nothing here knows about a particular server or client.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
BLOCK = MiB

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- processes


class ProcessRegistry:
    """Every child process the harness starts, so that all of them (and only
    them) can be ended by PID on any exit path."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._cleanups: list[Any] = []
        self._lock = threading.Lock()

    def popen(self, cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                    stdin=subprocess.DEVNULL)
        return self.track(proc)

    def track(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Count a child started elsewhere (e.g. with pipes) among the run's own."""
        with self._lock:
            self._procs.append(proc)
        return proc

    def on_kill(self, cleanup: Any) -> None:
        """Call ``cleanup()`` from ``kill_all`` (the end of a run, the watchdog):
        services such as SeaweedFS and PostgreSQL that stop by their own PIDs."""
        with self._lock:
            self._cleanups.append(cleanup)

    def forget(self, cleanup: Any) -> None:
        with self._lock:
            if cleanup in self._cleanups:
                self._cleanups.remove(cleanup)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL: always by this child's own PID."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)
        return proc.returncode

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
            self._procs.clear()
            cleanups = list(self._cleanups)
            self._cleanups.clear()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 -- the other clean-ups still run
                print(f"bench: clean-up failed: {exc!r}", file=sys.stderr, flush=True)


REGISTRY = ProcessRegistry()


def raise_nofile_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- /proc


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (VmRSS from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far, in seconds, of ``pid`` (all its threads),
    of its children that ended (reaped: sshd's per-connection processes) and of
    its living descendants (a supervisor's worker processes)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its living descendants (a supervisor and its workers)."""
    out = [pid]
    for child in _children(pid):
        out += tree_pids(child)
    return out


def tree_rss(pid: int) -> int:
    """RSS of ``pid`` plus that of its living descendants, in bytes."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += rss(p)
    return total


def _own_cpu() -> float:
    """This process's CPU plus that of its ended children (sftp, scp)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


class Meter:
    """Wall time of a block, plus the CPU time the server (by PID) and this
    process (the clients) spent in it.  On a shared, noisy machine CPU seconds
    per unit of work are steadier than wall-clock rates, so every measurement
    records them."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.seconds = 0.0
        self.server_cpu = 0.0
        self.client_cpu = 0.0

    def __enter__(self) -> Meter:
        self._server0 = cpu_seconds(self.pid) if self.pid else 0.0
        self._client0 = _own_cpu()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.client_cpu = _own_cpu() - self._client0
        if self.pid:
            try:
                self.server_cpu = cpu_seconds(self.pid) - self._server0
            except OSError:
                self.server_cpu = float("nan")

    def elapsed(self) -> float:
        """Seconds since the block began (inside it)."""
        return time.perf_counter() - self.start

    def extra(self, **more: Any) -> dict[str, Any]:
        return {"seconds": self.seconds, "server_cpu_s": self.server_cpu,
                "client_cpu_s": self.client_cpu, **more}


def settled_rss(pid: int, samples: int = 5, interval: float = 0.1,
                read: Callable[[int], int] | None = None) -> int:
    """The smallest of a few RSS readings: a quiet process's resident size (``read``:
    another reading, such as ``tree_rss`` for a supervisor and its workers)."""
    read = read or rss
    values = []
    for _ in range(samples):
        values.append(read(pid))
        time.sleep(interval)
    return min(values)


class RssSampler:
    """Samples a process's RSS on a thread until stopped; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak(self) -> int:
        return max(self.samples) if self.samples else 0


# ---------------------------------------------------------------- files


class Workspace:
    """A temporary folder under /tmp for one run; removed at the end."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ftpd-bench-", dir="/tmp"))
        self._counter = 0
        self._lock = threading.Lock()

    def fresh(self, prefix: str) -> Path:
        """A new, empty sub-folder."""
        with self._lock:
            self._counter += 1
            path = self.path / f"{prefix}-{self._counter}"
        path.mkdir()
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def make_random_file(path: Path, size: int) -> Path:
    """``size`` random bytes, written with os.urandom in 1 MiB blocks."""
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(BLOCK, left)
            fh.write(os.urandom(n))
            left -= n
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def flush_disk() -> None:
    """Write dirty pages back between measurements, so that one contestant's
    unflushed upload does not slow the next one down (not timed)."""
    with contextlib.suppress(OSError):
        os.sync()


# ---------------------------------------------------------------- timing


class Deadline:
    """A wall-clock budget for a loop: ``while not deadline.expired()``."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self, what: str) -> None:
        if self.expired():
            raise TimeoutError(f"{what}: gave up after {self.seconds:.0f} s")


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` holds the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


# ---------------------------------------------------------------- statistics


class Skipped(Exception):
    """A contestant cannot run here or yet (no sshd, a daemon flag that does not
    exist yet...): recorded with its reason, not as a failure."""


@dataclass
class Series:
    """Every value measured for one contestant of one scenario."""

    values: list[float] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"values": self.values, "errors": self.errors,
                               "extras": self.extras, "skipped": self.skipped}
        if self.values:
            out.update(min=min(self.values), median=statistics.median(self.values),
                       max=max(self.values))
        else:
            out.update(min=None, median=None, max=None)
        return out


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    try:
        from importlib.metadata import version
        pyftpdlib_version = version("pyftpdlib")
    except Exception:  # noqa: BLE001 -- reported, not fatal
        pyftpdlib_version = None
    try:
        with open("/proc/meminfo") as fh:
            mem_kib = int(fh.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(mem_kib / MiB, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "pyftpdlib": pyftpdlib_version,
        "loadavg_at_start": list(os.getloadavg()),
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
