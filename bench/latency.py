"""Latency under load (issue 17): small requests while big transfers run.

``load_bulk_clients`` clients (half uploading, half downloading) each move
``load_bulk`` bytes, pass after pass, while ``load_probe_clients`` others loop
three small requests for ``load_seconds``:

* ours: ``stat`` of a file, ``ls`` of a folder of ``load_entries`` entries, and
  an inline ``put`` of ``load_put`` bytes (``put_many``, one file: what
  ``ftpc put`` of a small file does);
* pyftpdlib: the equivalent ``SIZE``, ``MLSD`` (a data connection each) and
  ``STOR`` of the same bytes, through ``ftplib``;
* raw-durable (no target; session 7): the raw baseline server, whose put is
  acknowledged once ``fdatasync``ed and its folder ``fsync``ed like ours, with the
  same load (its uploads durable too) and the same three requests (its ``S``,
  ``L`` and ``P``): what a durable small put costs on this disk under this load
  when nothing else stands in its way.

Each request is timed alone on the client (send to complete answer); the
figure is the p99 of all of them in milliseconds, with the p50 and each kind's
p99 in the extras.  Every client has a user of its own (the daemon caps
concurrent uploads per user).  Bulk clients stop after the pass that is
running when the probing ends, and after at most ``MAX_PASSES`` passes.
"""

from __future__ import annotations

import io
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import clients
from .common import Deadline, Meter, MiB, make_random_file
from .scenarios import (
    OURS,
    PYFTPD,
    RAW_DURABLE,
    Context,
    Result,
    Scenario,
    Sizes,
    Target,
    _discard,
    _size,
    ftp_session,
    ours_server,
    pyftpd_server,
    ratio,
    raw_server,
    session,
)
from .servers import user_names

#: Most passes one bulk client makes in one measurement.
MAX_PASSES = 20
#: Most iterations (stat + ls + put) one probe client makes in one measurement.
MAX_PROBES = 100_000


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; needs one value."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class LatencyUnderLoad(Scenario):
    name = "latency"
    title = "small requests (stat, ls, 4 KiB put) while big transfers run: p99"
    unit = "ms p99"
    higher_is_better = False
    contestants = (OURS, PYFTPD, RAW_DURABLE)
    limit_ms = 25.0
    #: Ours over TLS (the daemon's default) instead of plain text like pyftpdlib;
    #: ``python -m bench.latency --tls`` only: the table compares plain text.
    tls = False

    def size_text(self, s: Sizes) -> str:
        return (f"{s.load_bulk_clients} x {_size(s.load_bulk)} moving, {s.load_probe_clients} "
                f"probing {s.load_seconds:g} s")

    def prepare(self, ctx: Context) -> None:
        ctx.random_file("load.bin", ctx.sizes.load_bulk)
        ctx.random_file("probe.bin", ctx.sizes.load_put)

    def measure(self, ctx: Context, who: str) -> Result:
        s = ctx.sizes
        src = ctx.random_file("load.bin", s.load_bulk)
        probe_src = ctx.random_file("probe.bin", s.load_put)
        probe_bytes = probe_src.read_bytes()
        names = user_names(s.load_bulk_clients + s.load_probe_clients + 1)[1:]
        bulk_users = names[:s.load_bulk_clients]
        probe_users = names[s.load_bulk_clients:]
        uploaders = set(bulk_users[::2])
        stop = threading.Event()
        ready = threading.Semaphore(0)      # one release per bulk client logged in

        def place(home_of: Callable[[str], Any]) -> None:
            """Download sources and the listed folders, straight into the homes."""
            for user in bulk_users:
                home = home_of(user)
                home.mkdir(parents=True, exist_ok=True)
                if user not in uploaders:
                    os.link(src, home / "load.bin")
            for user in probe_users:
                folder = home_of(user) / "folder"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(s.load_entries):
                    make_random_file(folder / f"f{i:03d}.bin", 1024)

        if who == OURS:
            cafile = ctx.tls()[0] if self.tls else None

            def bulk(user: str) -> int:
                with session(srv.port, user=user, cafile=cafile) as c:
                    return _loop_passes(stop, ready, lambda: (
                        c.put(src, "up.bin", verify=False, overwrite=True)
                        if user in uploaders else
                        c.get_stream("load.bin", _discard, verify=False)))

            def probe(user: str) -> dict[str, list[float]]:
                with session(srv.port, user=user, cafile=cafile) as c:
                    def put() -> None:
                        (res,) = c.put_many([(probe_src, "probe.bin")], verify=False,
                                            overwrite=True)
                        if isinstance(res, BaseException):
                            raise res
                    return _probe_loop(stop, s.load_seconds, {
                        "put": put,
                        "stat": lambda: c.stat("folder/f050.bin"),
                        "ls": lambda: c.ls("folder"),
                    })

            with ours_server(ctx, self.name, users=names, tls=self.tls) as srv:
                place(srv.home)
                with Meter(srv.pid) as m:
                    samples, passes = _run_load(bulk, probe, bulk_users, probe_users, stop,
                                                ready)
        elif who == RAW_DURABLE:
            def bulk_raw(user: str) -> int:
                with clients.raw_connect(srv.port) as sock:
                    return _loop_passes(stop, ready, lambda: (
                        clients.raw_put(sock, src, f"{user}/up.bin") if user in uploaders
                        else clients.raw_get(sock, f"{user}/load.bin")))

            def probe_raw(user: str) -> dict[str, list[float]]:
                with clients.raw_connect(srv.port) as sock:
                    return _probe_loop(stop, s.load_seconds, {
                        "put": lambda: clients.raw_put(sock, probe_src, f"{user}/probe.bin"),
                        "stat": lambda: clients.raw_stat(sock, f"{user}/folder/f050.bin"),
                        "ls": lambda: clients.raw_list(sock, f"{user}/folder"),
                    })

            with raw_server(ctx, self.name, durable=True) as srv:
                place(lambda user: srv.root / user)
                with Meter(srv.pid) as m:
                    samples, passes = _run_load(bulk_raw, probe_raw, bulk_users, probe_users,
                                                stop, ready)
        else:
            def bulk_ftp(user: str) -> int:
                with ftp_session(srv.port, user=user) as f:
                    return _loop_passes(stop, ready, lambda: (
                        clients.ftp_put(f, src, "up.bin") if user in uploaders else
                        clients.ftp_get(f, "load.bin", _discard)))

            def probe_ftp(user: str) -> dict[str, list[float]]:
                with ftp_session(srv.port, user=user) as f:
                    # STOR leaves TYPE I, which SIZE needs; MLSD switches to TYPE A.
                    return _probe_loop(stop, s.load_seconds, {
                        "put": lambda: f.storbinary("STOR probe.bin", io.BytesIO(probe_bytes)),
                        "stat": lambda: f.size("folder/f050.bin"),
                        "ls": lambda: list(f.mlsd("folder")),
                    })

            with pyftpd_server(ctx, self.name, users=len(names) + 1) as srv:
                place(lambda user: srv.root / user)
                with Meter(srv.pid) as m:
                    samples, passes = _run_load(bulk_ftp, probe_ftp, bulk_users,
                                                probe_users, stop, ready)
        moved = passes * s.load_bulk
        every = [v for kind in samples.values() for v in kind]
        if not every:
            raise RuntimeError("no small request completed")
        extra = m.extra(p50_ms=percentile(every, 0.5), p99_ms=percentile(every, 0.99),
                        max_ms=max(every), requests=len(every),
                        bulk_bytes=moved, bulk_passes=passes,
                        bulk_mib_s=moved / m.seconds / MiB,
                        **{f"{kind}_p99_ms": percentile(v, 0.99) for kind, v in samples.items()
                           if v},
                        **{f"{kind}_p50_ms": statistics.median(v) for kind, v in samples.items()
                           if v})
        return extra["p99_ms"], extra

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        ours, pyftpd = medians.get(OURS), medians.get(PYFTPD)
        return [Target(f"ours p99 <= {self.limit_ms:g} ms", ours, self.limit_ms,
                       higher_is_better=False),
                Target("pyftpdlib p99 / ours p99 >= 1.0", ratio(ours, pyftpd, False), 1.0)]


def _loop_passes(stop: threading.Event, ready: threading.Semaphore,
                 one_pass: Callable[[], object]) -> int:
    """Say ``ready`` (logged in), then run ``one_pass`` until ``stop`` (at least
    once, at most MAX_PASSES); returns the passes made."""
    ready.release()
    passes = 0
    while passes < MAX_PASSES:
        one_pass()
        passes += 1
        if stop.is_set():
            break
    return passes


def _probe_loop(stop: threading.Event, seconds: float,
                requests: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Each request in turn, each one timed, for ``seconds`` (or until ``stop``)."""
    deadline = Deadline(seconds)
    samples: dict[str, list[float]] = {kind: [] for kind in requests}
    for _ in range(MAX_PROBES):
        if deadline.expired() or stop.is_set():
            break
        for kind, call in requests.items():
            start = time.perf_counter()
            call()
            samples[kind].append((time.perf_counter() - start) * 1000)
    return samples


def _run_load(bulk: Callable[[str], int], probe: Callable[[str], dict[str, list[float]]],
              bulk_users: list[str], probe_users: list[str], stop: threading.Event,
              ready: threading.Semaphore) -> tuple[dict[str, list[float]], int]:
    """Start the bulk clients; once all are logged in (or after 60 s), the
    probes; when the probes end, stop the bulk clients after their current
    pass.  Returns the probes' samples by kind and the bulk passes made."""
    results: dict[str, list[float]] = {}
    with ThreadPoolExecutor(len(bulk_users) + len(probe_users)) as pool:
        bulk_futures = [pool.submit(bulk, u) for u in bulk_users]
        try:
            waited = Deadline(60)
            for _ in bulk_users:
                if not ready.acquire(timeout=max(0.01, waited.left())):
                    break                   # a failed bulk client shows in its result below
            probe_futures = [pool.submit(probe, u) for u in probe_users]
            for future in probe_futures:
                for kind, values in future.result(timeout=600).items():
                    results.setdefault(kind, []).extend(values)
        finally:
            stop.set()
        passes = sum(f.result(timeout=600) for f in bulk_futures)
    return results, passes


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.latency``: this one scenario at a chosen size, contestants
    interleaved, for profiling (``FTPD_LOOPSTATS=FILE`` reaches our daemon)."""
    import argparse
    import dataclasses

    from .common import Workspace, flush_disk
    from .scenarios import FULL

    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=main.__doc__)
    parser.add_argument("--bulk-mib", type=int, default=FULL.load_bulk // MiB)
    parser.add_argument("--bulk-clients", type=int, default=FULL.load_bulk_clients)
    parser.add_argument("--probes", type=int, default=FULL.load_probe_clients)
    parser.add_argument("--seconds", type=float, default=FULL.load_seconds)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--who", default=f"{OURS},{PYFTPD}")
    parser.add_argument("--tls", action="store_true", help="ours over TLS (pyftpdlib stays plain)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:K=V,...",
                        help="also run ours with these environment variables (A/B of knobs)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 0 < args.seconds <= 120 and 1 <= args.bulk_clients <= 16
            and 1 <= args.probes <= 16 and 1 <= args.bulk_mib <= 4096):
        parser.error("rounds 1-20, seconds <= 120, 1-16 clients, 1-4096 MiB")
    sizes = dataclasses.replace(FULL, load_bulk=args.bulk_mib * MiB,
                                load_bulk_clients=args.bulk_clients,
                                load_probe_clients=args.probes, load_seconds=args.seconds)
    ws = Workspace()
    try:
        ctx = Context(ws, sizes, quick=False)
        scenario = LatencyUnderLoad()
        scenario.tls = args.tls
        scenario.prepare(ctx)
        runs = [(who, who, {}) for who in args.who.split(",")]
        for spec in args.variant:
            label, _, assigns = spec.partition(":")
            runs.append((label, OURS, dict(a.split("=", 1) for a in assigns.split(",") if a)))
        for r in range(args.rounds):
            for label, who, env in runs:
                flush_disk()
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    value, extra = scenario.measure(ctx, who)
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
                kinds = " ".join(f"{k}={extra[f'{k}_p50_ms']:.1f}/{extra[f'{k}_p99_ms']:.1f}"
                                 for k in ("stat", "ls", "put") if f"{k}_p50_ms" in extra)
                print(f"round {r + 1} {label:<10} p99 {value:7.1f} ms  p50 {extra['p50_ms']:6.1f}"
                      f"  max {extra['max_ms']:7.1f}  n={extra['requests']}  [p50/p99 {kinds}]"
                      f"  bulk {extra['bulk_mib_s']:.0f} MiB/s  server CPU "
                      f"{extra.get('server_cpu_s', 0):.1f} s", flush=True)
    finally:
        ws.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
