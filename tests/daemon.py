"""Real daemons for tests: a subprocess (``server``, ``server_factory``) or a
reactor in a thread of the test process (``inproc_server``) for white-box checks.

Every daemon listens on an ephemeral 127.0.0.1 port with its own data folder,
a cheap scrypt setting, and is stopped (or killed) at teardown by its PID.  At
teardown the daemon's log must not contain a traceback: an exception inside
the daemon is a bug even when the client saw a tidy error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ftpd.logs import FLUSH_AFTER
from storage import Store

TEST_SCRYPT_N = 16
REPO = Path(__file__).resolve().parent.parent
#: INFO records reach the log file at most FLUSH_AFTER seconds after they are made.
LOG_SETTLE = 3 * FLUSH_AFTER
T = TypeVar("T")
_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


class DaemonProcess:
    """``ftpd serve`` in a subprocess."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = Path(root)
        self.settings = {"scrypt_n": TEST_SCRYPT_N, "auth_delay_base": 0.01,
                         "auth_delay_max": 0.05, **settings}
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root.parent / f"{self.root.name}-ftpd.log"
        self._log_offset = 0
        self.allow_tracebacks = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, port: int | None = None) -> DaemonProcess:
        cmd = [sys.executable, "-m", "ftpd.cli", "serve", "--root", str(self.root),
               "--host", self.host, "--port", str(port if port is not None else self.port),
               "--log-level", "INFO"]
        for name, value in self.settings.items():
            cmd += ["--set", f"{name}={json.dumps(value)}"]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.new_log())
            if found:
                self.port = int(found.group(2))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"ftpd exited with {self.proc.returncode}:\n{self.new_log()}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"ftpd did not start:\n{self.new_log()}")

    def new_log(self) -> str:
        """The log written since the last start."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log(self, settle: bool = False) -> str:
        """The whole log.  Warnings and errors are in it at once; INFO lines only
        after ``LOG_SETTLE`` (``settle=True`` waits that long first -- prefer
        ``wait_for_log``, which waits for the line itself)."""
        if settle:
            time.sleep(LOG_SETTLE)
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> str:
        """The whole log, once ``pattern`` (a regular expression) matches in it at least
        ``count`` times; fails the test after ``timeout`` seconds.  INFO lines reach the
        file in batches, so this is how a test waits for one."""
        compiled = re.compile(pattern)

        def matched() -> str:
            text = self.log()
            return text if len(compiled.findall(text)) >= count else ""

        return wait_for(matched, timeout, f"{count} log line(s) matching {pattern!r}")

    def add_user(self, name: str, password: str, quota: int | None = None) -> None:
        store = Store(self.root, scrypt_n=TEST_SCRYPT_N)
        try:
            store.create_user(name, password, quota)
        finally:
            store.close()

    def store(self) -> Store:
        """A Store on the daemon's data folder (close it when done)."""
        return Store(self.root, scrypt_n=TEST_SCRYPT_N)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM: a graceful shutdown.  Returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> DaemonProcess:
        """Start again on the same port and data folder."""
        self.kill()
        return self.start(port=self.port)

    def rss(self) -> int:
        """Resident set size in bytes (Linux)."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def thread_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))


class _Records(logging.Handler):
    """Keeps every record the in-process daemon's loggers emit, formatted, for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.tracebacks: list[str] = []
        self.lock_ = threading.Lock()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self.lock_:
            self.lines.append(text)
            if record.exc_info or "Traceback" in text:
                self.tracebacks.append(text)


class InprocDaemon:
    """The reactor in a thread of the test process, for white-box assertions.

    Its log (the ``ftpd`` loggers, INFO and up) is kept in memory: ``log()`` returns
    it, ``wait_for_log`` waits for a line, and the fixture fails the test at teardown
    if any record carried a traceback -- as it does for a subprocess daemon.
    """

    def __init__(self, root: Path, **settings: Any) -> None:
        from ftpd.config import Config
        from ftpd.server import Server

        base = {"scrypt_n": TEST_SCRYPT_N, "auth_delay_base": 0.01, "auth_delay_max": 0.05}
        self.config = Config(root=Path(root), port=0).updated(**{**base, **settings})
        self.root = Path(root)
        self.allow_tracebacks = False
        self.records = _Records()
        self._logger = logging.getLogger("ftpd")
        self._old_level = self._logger.level
        self._logger.addHandler(self.records)
        self._logger.setLevel(logging.INFO)
        self.server = Server(self.config)
        self.host, self.port = self.server.bind()
        self.thread = threading.Thread(target=self.server.serve_forever, name="ftpd-reactor",
                                       daemon=True)
        self.thread.start()

    @property
    def store(self) -> Store:
        return self.server.store

    def add_user(self, name: str, password: str, quota: int | None = None) -> None:
        self.server.store.create_user(name, password, quota)

    def log(self) -> str:
        """Every line logged so far (``LEVEL logger: message``, tracebacks included)."""
        with self.records.lock_:
            return "\n".join(self.records.lines)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first match of ``pattern`` in the log, waiting up to ``timeout`` for it."""
        return wait_for(lambda: re.search(pattern, self.log()), timeout,
                        f"no log line matching {pattern!r}")

    def stop(self) -> None:
        try:
            self.server.request_shutdown()
            self.thread.join(30)
            assert not self.thread.is_alive(), "reactor did not stop"
        finally:
            self._logger.removeHandler(self.records)
            self._logger.setLevel(self._old_level)

    def check_log(self) -> None:
        """Fail if the daemon logged a traceback (unless the test expects one)."""
        if self.records.tracebacks and not self.allow_tracebacks:
            pytest.fail("the in-process daemon logged a traceback:\n"
                        + "\n".join(self.records.tracebacks)[-6000:])


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something true; its value, or a failure after
    ``timeout`` seconds.  For waiting on an observable event, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def _check_log(daemon: DaemonProcess) -> None:
    text = daemon.log()
    if not daemon.allow_tracebacks and "Traceback" in text:
        pytest.fail(f"the daemon logged a traceback:\n{text[-6000:]}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def make(**settings: Any) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"root{len(started)}", **settings)
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        try:
            daemon.stop()
        finally:
            daemon.kill()
        _check_log(daemon)


@pytest.fixture
def server(server_factory: Any) -> DaemonProcess:
    return server_factory()


@pytest.fixture
def inproc_server(tmp_path: Path) -> Iterator[Any]:
    started: list[InprocDaemon] = []

    def make(**settings: Any) -> InprocDaemon:
        daemon = InprocDaemon(tmp_path / f"inproc{len(started)}", **settings)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()
    for daemon in started:
        daemon.check_log()


def answers_ping(client: Any) -> bool:
    """Whether a client session is alive and in step with the daemon.

    ``Client.ping`` returns only when the next reply is a pong carrying the ping's
    request id (``client/connection.py``, ``reply``); a closed session, an error, or a
    reply left over from an earlier request arrives instead and raises.  That is what a
    ping proves, so the cause is reported as the assertion failure.
    """
    try:
        client.ping("in step?")
    except Exception as exc:
        raise AssertionError(f"no pong with the ping's id: {exc!r}") from exc
    return True
