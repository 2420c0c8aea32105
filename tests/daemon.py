"""Real daemons for tests: a subprocess (``server``, ``server_factory``) or a
reactor in a thread of the test process (``inproc_server``) for white-box checks.

Every daemon speaks TLS (its self-signed pair under ``<root>/tls/``) unless the
test is marked ``@pytest.mark.plaintext`` or passes ``tls=False``; the client
side trusts it through a known-hosts file in the test's tmp dir
(``FTPC_KNOWN_HOSTS``, never the real ~), and ``tests.wire.Wire`` wraps its
socket in TLS for such a port.

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

from client.trust import KnownHosts, host_key
from ftpd import certs
from ftpd.logs import FLUSH_AFTER
from storage import Store

from . import wire

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

    @property
    def tls(self) -> bool:
        return bool(self.settings.get("tls", True))

    @property
    def fingerprint(self) -> str | None:
        """The SHA256:... a client pins (None for a plain-text daemon)."""
        return certs.default_pair(self.root).fingerprint() if self.tls else None

    def start(self, port: int | None = None) -> DaemonProcess:
        if self.tls and "tls_cert" not in self.settings:
            _seed_tls_pair(self.root)
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
                _announce(self)
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


_SEED_PAIR: list[tuple[bytes, bytes]] = []


def _seed_tls_pair(root: Path) -> None:
    """Give a new data root the suite's one self-signed pair before its daemon starts.

    Making a pair means importing ``cryptography`` and generating a key: a fifth of a
    second of CPU in every one of the suite's hundreds of daemon starts.  The daemon
    reuses a pair it finds under ``<root>/tls/`` exactly as after its own first start;
    the tests of making, rotating and reloading pairs call ``ftpd.certs`` themselves.
    """
    pair = certs.default_pair(root)
    if pair.cert.parent.exists():
        return
    if not _SEED_PAIR:
        _SEED_PAIR.append(certs.generate_self_signed())
    cert_pem, key_pem = _SEED_PAIR[0]
    pair.cert.parent.mkdir(parents=True, mode=0o700)
    pair.key.write_bytes(key_pem)
    pair.key.chmod(0o600)
    pair.cert.write_bytes(cert_pem)


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
        _announce(self)

    @property
    def tls(self) -> bool:
        return self.config.tls

    @property
    def fingerprint(self) -> str | None:
        return self.server.tls.fingerprint if self.server.tls is not None else None

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


# ------------------------------------------------------------ TLS for the fixtures


#: host:port -> fingerprint of every TLS daemon started in this process and not yet
#: stopped by its fixture: each test's fresh known-hosts file starts with them (a
#: module-scoped daemon outlives the known-hosts file of the test that started it).
_PINS: dict[str, str] = {}


def _announce(daemon: Any) -> None:
    """Tell the test's clients how to reach a daemon that just started: a Wire to its
    port speaks TLS, and its fingerprint is pinned in the test's known-hosts file."""
    key = host_key(daemon.host, daemon.port)
    if not daemon.tls:
        wire.TLS_PORTS.discard(daemon.port)
        _PINS.pop(key, None)
        return
    wire.TLS_PORTS.add(daemon.port)
    _PINS[key] = daemon.fingerprint
    path = os.environ.get("FTPC_KNOWN_HOSTS")
    if path:
        KnownHosts(path).add(key, daemon.fingerprint)


def _forget(daemon: Any) -> None:
    wire.TLS_PORTS.discard(daemon.port)
    _PINS.pop(host_key(daemon.host, daemon.port), None)


def _tls_setting(request: pytest.FixtureRequest, settings: dict[str, Any]) -> dict[str, Any]:
    """``@pytest.mark.plaintext``: the same scenario over a ``--plaintext`` daemon."""
    if "tls" not in settings and request.node.get_closest_marker("plaintext") is not None:
        return {**settings, "tls": False}
    return settings


@pytest.fixture(autouse=True)
def _client_trust_files(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins and trust from the environment stay inside a tmp dir, never the real ~."""
    folder = tmp_path_factory.mktemp("ftpc-trust")
    path = folder / "known_hosts"
    monkeypatch.setenv("FTPC_KNOWN_HOSTS", str(path))
    monkeypatch.delenv("FTPC_TRUST", raising=False)
    monkeypatch.delenv("FTPC_CACERT", raising=False)
    if _PINS:
        path.write_text("".join(f"{key} {fp}\n" for key, fp in _PINS.items()))
        path.chmod(0o600)


def _check_log(daemon: DaemonProcess) -> None:
    text = daemon.log()
    if not daemon.allow_tracebacks and "Traceback" in text:
        pytest.fail(f"the daemon logged a traceback:\n{text[-6000:]}")


@pytest.fixture
def server_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def make(**settings: Any) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"root{len(started)}",
                               **_tls_setting(request, settings))
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        _forget(daemon)
        try:
            daemon.stop()
        finally:
            daemon.kill()
        _check_log(daemon)


@pytest.fixture
def server(server_factory: Any) -> DaemonProcess:
    return server_factory()


@pytest.fixture
def inproc_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    started: list[InprocDaemon] = []

    def make(**settings: Any) -> InprocDaemon:
        daemon = InprocDaemon(tmp_path / f"inproc{len(started)}",
                              **_tls_setting(request, settings))
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        _forget(daemon)
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
