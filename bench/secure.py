"""Bulk transfers over TLS (issue 12) and with ``--workers N`` (issue 16).

Ours (``client.Client`` over TLS 1.3, trusting the run's certificate) against
the raw TLS 1.3 baseline, pyftpdlib's FTPS (``TLS_FTPHandler`` +
``ftplib.FTP_TLS``, ``PROT P``) and OpenSSH ``sftp``/``scp`` against a
throwaway sshd.  A contestant skips with a message where it cannot run here
(no sshd, no pyOpenSSL, a daemon without the flag).
"""

from __future__ import annotations

import os
from typing import Any

from . import clients
from .common import Meter, MiB
from .scenarios import (
    OURS,
    OURS_W2,
    RAW_TLS,
    SCP,
    SFTP,
    Context,
    Result,
    Scenario,
    Sizes,
    Target,
    _discard,
    _run_clients,
    _size,
    openssh,
    ours_server,
    pyftpd_server,
    ratio,
    raw_server,
    session,
)
from .servers import daemon_flags, user_names

#: The raw TLS server that acknowledges an upload only once it is on disk.
RAW_TLS_DURABLE = "raw-tls-durable"
#: pyftpdlib's TLS_FTPHandler driven by ftplib.FTP_TLS (control and data encrypted).
PYFTPD_TLS = "pyftpdlib-tls"


class _TlsBulk(Scenario):
    unit = "MiB/s"

    def size_text(self, s: Sizes) -> str:
        return _size(s.tls_bulk)

    def prepare(self, ctx: Context) -> None:
        ctx.random_file("tls.bin", ctx.sizes.tls_bulk)

    def _ssh(self, ctx: Context, who: str, upload: bool) -> Result:
        src = ctx.random_file("tls.bin", ctx.sizes.tls_bulk)
        size = src.stat().st_size
        with openssh(ctx) as ssh:
            target = ctx.ws.fresh(f"{who}-dst") / "upload.bin"
            with Meter(ssh.proc.pid if ssh.proc else None) as m:
                if upload:
                    (ssh.sftp_put if who == SFTP else ssh.scp_put)(src, target)
                else:
                    (ssh.sftp_get if who == SFTP else ssh.scp_get)(src, os.devnull)
            if upload and target.stat().st_size != size:
                raise RuntimeError(f"{who} stored {target.stat().st_size} bytes, not {size}")
            target.unlink(missing_ok=True)
        # Includes ssh's connect + key exchange + login (tens of ms against seconds).
        return size / m.seconds / MiB, m.extra(includes_login=True)

    def _ftps(self, ctx: Context, upload: bool) -> Result:
        """pyftpdlib FTPS: ``STOR``/``RETR`` over ``PROT P`` data connections."""
        src = ctx.random_file("tls.bin", ctx.sizes.tls_bulk)
        size = src.stat().st_size
        cafile = ctx.tls()[0]
        with pyftpd_server(ctx, self.name, tls=True) as srv:
            if not upload:
                os.link(src, srv.home() / "download.bin")
            f = clients.ftps(srv.port, cafile)
            try:
                version = f.sock.version() if hasattr(f.sock, "version") else None
                with Meter(srv.pid) as m:
                    if upload:
                        clients.ftp_put(f, src, "upload.bin")
                    else:
                        clients.ftp_get(f, "download.bin", _discard)
                f.quit()
            finally:
                f.close()
            if upload and (srv.home() / "upload.bin").stat().st_size != size:
                raise RuntimeError("pyftpdlib stored a short file")
        return size / m.seconds / MiB, m.extra(tls_version=version)

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        return [Target("ours/raw-tls >= 0.8", self._ratio(medians, RAW_TLS), 0.8),
                Target("ours/sftp >= 2.5", self._ratio(medians, SFTP), 2.5),
                Target("ours/scp >= 2.5", self._ratio(medians, SCP), 2.5),
                Target("ours/pyftpdlib-tls >= 1.5", self._ratio(medians, PYFTPD_TLS), 1.5)]


class TlsUpload(_TlsBulk):
    name = "tls-upload"
    title = "upload over TLS 1.3 (ours, raw, pyftpdlib FTPS) and over ssh"
    contestants = (OURS, RAW_TLS, RAW_TLS_DURABLE, PYFTPD_TLS, SFTP, SCP)

    def measure(self, ctx: Context, who: str) -> Result:
        src = ctx.random_file("tls.bin", ctx.sizes.tls_bulk)
        size = src.stat().st_size
        if who == OURS:
            with ours_server(ctx, self.name, tls=True) as srv, \
                    session(srv.port, cafile=ctx.tls()[0]) as c, Meter(srv.pid) as m:
                c.put(src, "upload.bin", verify=False)
        elif who in (RAW_TLS, RAW_TLS_DURABLE):
            with raw_server(ctx, self.name, durable=who == RAW_TLS_DURABLE, tls=True) as srv, \
                    clients.raw_connect(srv.port, cafile=ctx.tls()[0]) as sock, \
                    Meter(srv.pid) as m:
                clients.raw_put(sock, src, "upload.bin")
        elif who == PYFTPD_TLS:
            return self._ftps(ctx, upload=True)
        else:
            return self._ssh(ctx, who, upload=True)
        return size / m.seconds / MiB, m.extra()

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        return [*super().targets(medians),
                Target("ours/raw-tls-durable >= 0.9", self._ratio(medians, RAW_TLS_DURABLE),
                       0.9)]


class TlsDownload(_TlsBulk):
    name = "tls-download"
    title = "download over TLS 1.3 to a discarding reader (ssh: into /dev/null)"
    contestants = (OURS, RAW_TLS, PYFTPD_TLS, SFTP, SCP)

    def measure(self, ctx: Context, who: str) -> Result:
        src = ctx.random_file("tls.bin", ctx.sizes.tls_bulk)
        size = src.stat().st_size
        if who == OURS:
            with ours_server(ctx, self.name, tls=True) as srv:
                os.link(src, srv.home() / "download.bin")
                with session(srv.port, cafile=ctx.tls()[0]) as c, Meter(srv.pid) as m:
                    got = c.get_stream("download.bin", _discard, verify=False)
            if got.size != size:
                raise RuntimeError(f"downloaded {got.size} bytes, expected {size}")
        elif who == RAW_TLS:
            with raw_server(ctx, self.name, tls=True) as srv:
                os.link(src, srv.home() / "download.bin")
                with clients.raw_connect(srv.port, cafile=ctx.tls()[0]) as sock, \
                        Meter(srv.pid) as m:
                    clients.raw_get(sock, "download.bin")
        elif who == PYFTPD_TLS:
            return self._ftps(ctx, upload=False)
        else:
            return self._ssh(ctx, who, upload=False)
        return size / m.seconds / MiB, m.extra()


class WorkersDownload(Scenario):
    """Issue 16's first figure: aggregate download of concurrent clients with
    ``--workers 2`` against the default single process, over TLS (plain text
    only on a daemon older than ``--tls-cert``), with the CPU per GiB of the
    daemon (every process) and of the clients."""

    name = "workers"
    title = "concurrent downloads, aggregate: --workers 2 against one process"
    unit = "MiB/s"
    contestants = (OURS, OURS_W2)

    def size_text(self, s: Sizes) -> str:
        return f"{s.workers_clients} x {_size(s.tls_bulk)}"

    def prepare(self, ctx: Context) -> None:
        ctx.random_file("tls.bin", ctx.sizes.tls_bulk)

    def measure(self, ctx: Context, who: str) -> Result:
        src = ctx.random_file("tls.bin", ctx.sizes.tls_bulk)
        size = src.stat().st_size
        names = user_names(ctx.sizes.workers_clients + 1)[1:]
        tls = "--tls-cert" in daemon_flags()
        login: dict[str, Any] = {"cafile": ctx.tls()[0]} if tls else {}

        def one(user: str) -> float:
            with session(srv.port, user=user, **login) as c:
                got = c.get_stream("download.bin", _discard, verify=False)
            if got.size != size:
                raise RuntimeError(f"downloaded {got.size} bytes, expected {size}")
            return 0.0

        with ours_server(ctx, self.name, users=names, tls=tls,
                         worker_processes=2 if who == OURS_W2 else None) as srv:
            for user in names:
                home = srv.home(user)
                home.mkdir(parents=True, exist_ok=True)
                os.link(src, home / "download.bin")
            with Meter(srv.pid) as m:
                _run_clients(one, names)
        total = size * len(names)
        return total / m.seconds / MiB, m.extra(
            tls=tls, server_cpu_s_per_gib=m.server_cpu / (total / (1 << 30)),
            client_cpu_s_per_gib=m.client_cpu / (total / (1 << 30)))

    def targets(self, medians: dict[str, float | None]) -> list[Target]:
        return [Target("ours-w2/ours >= 1.3", ratio(medians.get(OURS_W2), medians.get(OURS),
                                                     True), 1.3)]
