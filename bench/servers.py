"""The three servers under test, each in its own subprocess on 127.0.0.1 with
an ephemeral port:

* ``OursServer``: ``python -m ftpd.cli serve --root DIR --port 0`` (defaults,
  plus any ``--set`` a scenario needs), users created with ``storage.Store``;
* ``PyftpdServer``: ``python -m bench.pyftpd_server`` (pyftpdlib's FTPServer and
  FTPHandler with their defaults, DummyAuthorizer, epoll IOLoop);
* ``RawServer``: ``python -m bench.raw_server`` (blocking sockets, the floor).

Each one writes "listening on HOST:PORT" to its log; ``start`` waits for that
line (at most 20 s) and every ``stop`` ends the child by its PID.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .common import REGISTRY, REPO, Skipped, remove_tree, rss

HOST = "127.0.0.1"
USER = "bench"
PASSWORD = "bench-password-0123"
#: Quota of benchmark users: far above anything a scenario uploads.
QUOTA = 1 << 40
_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


class _Child:
    kind = "server"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_path = root.parent / f"{root.name}.log"
        self.proc: Any = None
        self.host = HOST
        self.port = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def rss(self) -> int:
        return rss(self.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def start(self) -> _Child:
        self.proc = REGISTRY.popen(self.command(), self.log_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log())
            if found:
                self.port = int(found.group(2))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n"
                                   f"{self.log()[-3000:]}")
            time.sleep(0.02)
        REGISTRY.stop(self.proc, timeout=1)
        raise RuntimeError(f"{self.kind} did not start within 20 s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            REGISTRY.stop(self.proc)
            self.proc = None

    def tracebacks(self) -> bool:
        return "Traceback" in self.log()

    def __enter__(self) -> _Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        remove_tree(self.root)
        self.log_path.unlink(missing_ok=True)


@functools.cache
def daemon_flags() -> frozenset[str]:
    """The long options ``ftpd serve`` accepts today (from its ``--help``).

    The harness is written ahead of the daemon: TLS (``--tls-cert``,
    ``--tls-key``, ``--plaintext``, issue 12) and ``--workers N`` (issue 16)
    are used once the daemon lists them, and the scenarios that need them skip
    with a message until then.
    """
    proc = subprocess.run([sys.executable, "-m", "ftpd.cli", "serve", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))


def require_flags(*flags: str) -> None:
    missing = [f for f in flags if f not in daemon_flags()]
    if missing:
        raise Skipped(f"ftpd serve does not accept {', '.join(missing)} yet")


class OursServer(_Child):
    """Our daemon.  ``tls=(cert, key)`` serves TLS with the harness's own
    certificate; ``worker_processes=N`` passes ``--workers N``.  Both raise
    ``Skipped`` while the daemon lacks the flag.  Without ``tls``, a daemon that
    knows ``--plaintext`` is given it, so that the plain-text scenarios keep
    measuring the same thing once TLS is the default."""

    kind = "ftpd"

    def __init__(self, root: Path, settings: dict[str, Any] | None = None,
                 tls: tuple[Path, Path] | None = None,
                 worker_processes: int | None = None) -> None:
        super().__init__(root)
        self.settings = dict(settings or {})
        self.tls = tls
        self.worker_processes = worker_processes

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "ftpd.cli", "serve", "--root", str(self.root),
               "--host", HOST, "--port", "0"]
        if self.tls is not None:
            require_flags("--tls-cert", "--tls-key")
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        elif "--plaintext" in daemon_flags():
            cmd.append("--plaintext")
        if self.worker_processes is not None:
            require_flags("--workers")
            cmd += ["--workers", str(self.worker_processes)]
        for name, value in self.settings.items():
            cmd += ["--set", f"{name}={json.dumps(value)}"]
        return cmd

    def home(self, user: str = USER) -> Path:
        return self.root / "homes" / user


def create_users(root: Path, names: Iterable[str], password: str = PASSWORD) -> None:
    """Create users in a data folder with ``storage.Store`` (the daemon's default
    scrypt cost, so that logins cost what they cost in production)."""
    from storage import Store

    store = Store(root)
    try:
        for name in names:
            store.create_user(name, password, QUOTA)
    finally:
        store.close()


def issue_tokens(root: Path, names: Iterable[str]) -> dict[str, str]:
    """A session token per user, straight from the store (no password hash)."""
    from storage import Store

    store = Store(root)
    try:
        return {name: store.issue_token(name) for name in names}
    finally:
        store.close()


class PyftpdServer(_Child):
    """pyftpdlib; ``tls=(cert, key)`` makes it FTPS (``TLS_FTPHandler``, TLS
    required on control and data), which needs pyOpenSSL (``Skipped`` without)."""

    kind = "pyftpdlib"

    def __init__(self, root: Path, users: int = 1, max_cons: int | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(root)
        self.users = users
        self.max_cons = max_cons
        self.tls = tls

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench.pyftpd_server", "--root", str(self.root),
               "--user", USER, "--password", PASSWORD, "--users", str(self.users)]
        if self.max_cons is not None:
            cmd += ["--max-cons", str(self.max_cons)]
        if self.tls is not None:
            if importlib.util.find_spec("OpenSSL") is None:
                raise Skipped("pyftpdlib's TLS_FTPHandler needs pyOpenSSL: "
                              "pip install -e '.[bench]'")
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        return cmd

    def home(self, user: str = USER) -> Path:
        return self.root / user


class RawServer(_Child):
    """The raw baseline; ``durable`` acks only after fdatasync + folder fsync,
    ``tls=(cert, key)`` wraps every connection in TLS 1.3."""

    kind = "raw"

    def __init__(self, root: Path, durable: bool = False,
                 tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(root)
        self.durable = durable
        self.tls = tls

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench.raw_server", "--root", str(self.root)]
        if self.durable:
            cmd.append("--durable")
        if self.tls is not None:
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        return cmd

    def home(self) -> Path:
        return self.root


def user_names(count: int) -> list[str]:
    """``bench`` for one user, else ``bench000``, ``bench001``..."""
    if count == 1:
        return [USER]
    return [f"{USER}{i:03d}" for i in range(count)]
