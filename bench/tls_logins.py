"""Logins and idle connections over TLS (issue 12), one process against
``--workers 2`` (issue 16).

* ``tls-reconnect``: sequential connect + session-token login + quit over TLS,
  ours resuming its TLS session (the client keeps the ticket per host:port)
  against pyftpdlib's FTPS connect + ``AUTH TLS`` + ``USER``/``PASS`` + quit
  (``ftplib.FTP_TLS`` keeps no session: a full handshake each time, which is
  what an FTPS client does).
* ``workers-reconnect``: the same cycle from several client *processes* at
  once (``bench.reconnect_client``: threads of one Python process would share
  one GIL), ours against ours-w2.
* ``tls-idle``: daemon memory per idle TLS connection (all the daemon's
  processes), ours against ours-w2.
* ``tls-password-login``: concurrent password logins over TLS against the
  same in plain text and against the scrypt bound: "password logins over TLS
  stay bound by scrypt, not by the handshake".
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time

from client import Client

from . import clients
from .common import REGISTRY, REPO, Deadline, KiB, Meter, MiB, settled_rss, timed, tree_rss
from .scenarios import (
    IDLE_SETTINGS,
    OURS,
    OURS_W2,
    Context,
    PasswordLogins,
    Result,
    Scenario,
    Sizes,
    Target,
    _run_clients,
    ours_server,
    pyftpd_server,
    ratio,
)
from .secure import PYFTPD_TLS
from .servers import HOST, USER

#: Ours in plain text, beside ours over TLS.
OURS_PLAIN = "ours-plaintext"


class TlsReconnect(Scenario):
    name = "tls-reconnect"
    title = "sequential reconnect over TLS: ours token + resumed session, pyftpdlib FTPS login"
    unit = "logins/s"
    contestants = (OURS, PYFTPD_TLS)

    def size_text(self, s: Sizes) -> str:
        return f"{s.token_cycles} cycles"

    def measure(self, ctx: Context, who: str) -> Result:
        cycles = ctx.sizes.token_cycles
        cafile = ctx.tls()[0]
        deadline = Deadline(300)
        if who == OURS:
            with ours_server(ctx, self.name, tls=True) as srv:
                token = clients.ours_token(srv.port, cafile=cafile)
                clients.ours_tls_reconnect(srv.port, str(cafile), token)  # a ticket first
                resumed = 0
                with Meter(srv.pid) as m:
                    for _ in range(cycles):
                        deadline.check("TLS token logins")
                        resumed += clients.ours_tls_reconnect(srv.port, str(cafile), token)
            extra = {"resumed": resumed}
        else:
            with pyftpd_server(ctx, self.name, tls=True) as srv, Meter(srv.pid) as m:
                for _ in range(cycles):
                    deadline.check("FTPS logins")
                    f = clients.ftps(srv.port, cafile, timeout=30, protect_data=False)
                    f.quit()
                    f.close()
            extra = {"resumed": 0}
        return cycles / m.seconds, m.extra(
            server_cpu_us_per_cycle=m.server_cpu / cycles * 1e6,
            client_cpu_us_per_cycle=m.client_cpu / cycles * 1e6, **extra)

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        return [Target("ours/pyftpdlib-tls >= 1.0", self._ratio(medians, PYFTPD_TLS), 1.0)]


class WorkersReconnect(Scenario):
    name = "workers-reconnect"
    title = "token reconnects over TLS from concurrent client processes: --workers 2 against 1"
    unit = "logins/s"
    contestants = (OURS, OURS_W2)

    def size_text(self, s: Sizes) -> str:
        return f"{s.workers_clients} processes x {s.reconnects_each} cycles"

    def measure(self, ctx: Context, who: str) -> Result:
        s = ctx.sizes
        cafile = str(ctx.tls()[0])
        with ours_server(ctx, self.name, tls=True,
                         worker_processes=2 if who == OURS_W2 else None) as srv:
            token = clients.ours_token(srv.port, cafile=ctx.tls()[0])
            procs = [REGISTRY.track(subprocess.Popen(
                [sys.executable, "-m", "bench.reconnect_client", "--port", str(srv.port),
                 "--cafile", cafile, f"--token={token}", "--cycles", str(s.reconnects_each)],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
                for _ in range(s.workers_clients)]
            try:
                for p in procs:
                    assert p.stdout is not None
                    if p.stdout.readline().strip() != "ready":
                        raise RuntimeError("a reconnect client did not start")
                with Meter(srv.pid) as m:
                    for p in procs:
                        assert p.stdin is not None
                        p.stdin.write("go\n")
                        p.stdin.flush()
                    reports = [json.loads(p.stdout.readline()) for p in procs
                               if p.stdout is not None]
            finally:
                for p in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(30)
                    REGISTRY.stop(p)            # by its PID, if still running
        total = sum(r["cycles"] for r in reports)
        if total != s.workers_clients * s.reconnects_each:
            raise RuntimeError(f"only {total} reconnects finished")
        client_cpu = sum(r["cpu_s"] for r in reports)
        return total / m.seconds, m.extra(
            client_cpu_s=client_cpu, resumed=sum(r["resumed"] for r in reports),
            server_cpu_us_per_cycle=m.server_cpu / total * 1e6,
            client_cpu_us_per_cycle=client_cpu / total * 1e6)

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        return [Target("ours-w2/ours >= 1.3", ratio(medians.get(OURS_W2), medians.get(OURS),
                                                     True), 1.3)]


class TlsIdle(Scenario):
    name = "tls-idle"
    title = "idle logged-in TLS connections: daemon RSS per connection, --workers 2 against 1"
    unit = "KiB/conn"
    higher_is_better = False
    contestants = (OURS, OURS_W2)
    limit_kib = 20.0

    def size_text(self, s: Sizes) -> str:
        return f"{s.idle} connections"

    def measure(self, ctx: Context, who: str) -> Result:
        n = ctx.sizes.idle
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit < n + 256:
            raise RuntimeError(f"RLIMIT_NOFILE is {limit}: too low for {n} connections")
        cafile = ctx.tls()[0]
        deadline = Deadline(300)
        with ours_server(ctx, self.name, tls=True, settings=IDLE_SETTINGS,
                         worker_processes=2 if who == OURS_W2 else None) as srv:
            token = clients.ours_token(srv.port, cafile=cafile)
            # Warm-up big enough that both workers see connections (the kernel
            # spreads them), so their one-off allocations are not counted.
            warm = min(200, n)
            pause, samples = (0.2, 2) if ctx.quick else (0.5, 5)
            clients.close_all(clients.open_idle_ours(srv.port, token, warm, deadline,
                                                     cafile=cafile))
            time.sleep(pause)                   # let the warm-up connections close
            before = settled_rss(srv.pid, samples, read=tree_rss)
            with timed() as t:
                socks = clients.open_idle_ours(srv.port, token, n, deadline, cafile=cafile)
            try:
                time.sleep(2 * pause)
                after = settled_rss(srv.pid, samples, read=tree_rss)
                probe = _probe_tls(srv.port, token, str(cafile))
            finally:
                clients.close_all(socks)  # type: ignore[arg-type]
        return (after - before) / n / KiB, {
            "rss_before_mib": before / MiB, "rss_after_mib": after / MiB, "held": len(socks),
            "open_seconds": t[0], "probe_login_ping_ms": probe * 1000}

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        w1, w2 = medians.get(OURS), medians.get(OURS_W2)
        return [Target(f"ours <= {self.limit_kib:g} KiB/conn", w1, self.limit_kib, False),
                Target(f"ours-w2 <= {self.limit_kib:g} KiB/conn", w2, self.limit_kib, False),
                Target("unchanged: ours-w2 / ours <= 1.25",
                       w2 / w1 if w1 and w2 else None, 1.25, False)]


def _probe_tls(port: int, token: str, cafile: str) -> float:
    start = time.perf_counter()
    c = Client(HOST, port, timeout=30, tls=True, cacert=cafile)
    try:
        c.connect()
        c.login(token=token)
        c.ping()
        c.quit()
    finally:
        c.close()
    return time.perf_counter() - start


class TlsPasswordLogins(PasswordLogins):
    """The ``password-login`` load over TLS, beside the same in plain text."""

    name = "tls-password-login"
    title = "concurrent connect + password login + quit, over TLS and in plain text"
    contestants = (OURS, OURS_PLAIN)

    def measure(self, ctx: Context, who: str) -> Result:
        s = ctx.sizes
        users = [USER] * s.pw_clients
        tls = who == OURS
        cafile = ctx.tls()[0] if tls else None

        def one(user: str) -> float:
            for _ in range(s.pw_logins_each):
                c = clients.ours(srv.port, user=user, timeout=120, cafile=cafile)
                c.quit()
            return 0.0

        with ours_server(ctx, self.name, tls=tls) as srv, Meter(srv.pid) as m:
            _run_clients(one, users)
        logins = len(users) * s.pw_logins_each
        return logins / m.seconds, m.extra(server_cpu_ms_per_login=m.server_cpu / logins * 1e3,
                                           tls=tls)

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        return [*super().targets(medians),
                Target("ours (TLS) / ours-plaintext >= 0.9",
                       ratio(medians.get(OURS), medians.get(OURS_PLAIN), True), 0.9)]
