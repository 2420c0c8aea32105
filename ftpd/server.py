"""The reactor: one thread, one ``selectors.DefaultSelector``, every socket.

The selector holds the listening socket, every client connection (its
``SelectorKey.data`` is the connection's transport), the worker pool's
wake-up socket and the signal wake-up socket.  Each turn of the loop waits
until the nearest timer, dispatches ready sockets, runs due timers, and checks
for shutdown.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

from protocol import PROTOCOL_VERSION, ErrorReply, Greeting, encode
from storage import StorageError, Store

from . import __version__, certs, logs, loopstats
from .backend import handlers_for, open_store
from .config import Config
from .context import SessionContext
from .handlers import HANDLERS
from .session import Session
from .slots import SharedLimits, SharedUploadSlots
from .throttle import LoginThrottle
from .timers import TimerHeap
from .tls_transport import Refusal, TLSTransport
from .transport import IOContext, PlainTransport
from .turns import TurnScheduler
from .workers import LongJob, WorkerPool

log = logging.getLogger("ftpd")

ACCEPTS_PER_WAKEUP = 64
#: Linux: ``TCP_INFO`` of a listening socket gives its accept queue's length in
#: ``tcpi_unacked`` (a u32 at this offset; ``ss`` shows it as Recv-Q), and an accepted
#: socket inherits the listener's ``TCP_NODELAY``.
_LINUX = sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")
_TCPI_UNACKED = struct.Struct("=I")
_TCPI_UNACKED_AT = 24
#: Connections turned away over TLS that may be finishing their handshake at once,
#: and how long each may take (beyond them a refusal is a bare close).
MAX_TLS_REFUSALS = 64
REFUSAL_TIMEOUT = 5.0
CHECKPOINT_INTERVAL = 30.0     # seconds between write-ahead-log checkpoints on a worker


class _Waker:
    """A socketpair end registered with the selector; readable means 'look up'."""

    def __init__(self, sock: socket.socket, on_wake: Any) -> None:
        self.sock = sock
        self.on_wake = on_wake

    def on_event(self, mask: int) -> None:
        self.on_wake()


class Server:
    """Owns the listening socket, the selector loop, the timers, the worker pools and
    the books of open sessions (count per address, shutdown).

    It admits connections, makes each one's transport (``make_transport``) and
    session, and runs the loop.  It may not look inside a session: it asks
    ``is_idle()`` and calls ``fatal``/``close``; sessions reach it only through
    the ``SessionContext`` it hands them.
    """

    def __init__(self, config: Config, store: Store | None = None,
                 tls: certs.ServerCredentials | None = None) -> None:
        self.config = config.validate()
        # TLS first: a bad certificate stops the start before anything is opened
        # (certs.CertError; the CLI prints it on one line and exits 2).  A worker of
        # --workers N gets the context its supervisor made before forking: one context
        # means one session-ticket key, so a client resumes on whichever worker it lands.
        if tls is None:
            tls = certs.credentials_for(config.root, config.tls, config.tls_cert,
                                        config.tls_key, config.tls_min_version)
        self.tls = tls
        if self.tls is None:
            warning = certs.plaintext_warning(config.host)
            if warning:
                log.warning("%s", warning)
        self._tls_reload = False
        self._refusing: set[TLSTransport] = set()
        self.store = store or open_store(config)     # local files, or PostgreSQL + S3
        self.selector = selectors.DefaultSelector()
        self.timers = TimerHeap()
        # Two pools, so a storm of password hashes never delays a commit or a listing.
        self.pool = WorkerPool(config.workers)
        self.auth_pool = WorkerPool(config.auth_workers or os.cpu_count() or 2, name="auth")
        self.throttle = LoginThrottle.from_config(config, self.store)
        self.ctx = SessionContext(self.config, self.store, self.pool, self.auth_pool, self.timers,
                                  self.throttle, handlers_for(self.store, HANDLERS),
                                  self.forget)
        # Several worker processes: the limits that span connections count them all.
        self.shared = SharedLimits(config) if config.worker_processes > 1 else None
        if self.shared is not None:
            self.throttle.shared = self.shared.state
            self.ctx.uploads = SharedUploadSlots(self.shared)
            self.ctx.user_slots = self.shared.user_slots()
        self.io = IOContext(self.selector, self.timers, config.recv_buffer, config.high_water,
                            config.low_water, config.use_sendfile)
        self.turns = TurnScheduler(self.io)
        self.connections: set[Session] = set()
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.listener: socket.socket | None = None
        self._family = socket.AF_INET       # the listener's (``bind``)
        self.stopped = False
        self._shutdown_deadline = 0.0
        self._signal_r, self._signal_w = socket.socketpair()
        for s in (self._signal_r, self._signal_w):
            s.setblocking(False)
        # The same for everyone: encoded once.
        self.greeting = encode(Greeting(protocol=PROTOCOL_VERSION, server=f"ftpd/{__version__}",
                                        max_control=config.max_control_frame,
                                        max_data=config.max_data_frame,
                                        register=config.allow_register,
                                        inline_max=config.inline_max))
        self.loopstats = loopstats.install_from_env(self)     # profiling only (FTPD_LOOPSTATS)

    @property
    def stopping(self) -> bool:
        """A shutdown has begun (sessions see it as ``ctx.stopping``)."""
        return self.ctx.stopping

    @property
    def active_uploads(self) -> collections.Counter[str]:
        """Uploads running per user."""
        return self.ctx.uploads.active

    # ------------------------------------------------------------ setup

    def bind(self) -> tuple[str, int]:
        _raise_fd_limit()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.config.worker_processes > 1:       # every worker listens; the kernel spreads
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if _LINUX:          # inherited by every accepted socket: no setsockopt per connection
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.config.host, self.config.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.listener = sock
        self._family = family
        self.selector.register(sock, selectors.EVENT_READ, _Waker(sock, self._accept))
        for pool in (self.pool, self.auth_pool):
            self.selector.register(pool.wake_r, selectors.EVENT_READ,
                                   _Waker(pool.wake_r, pool.run_callbacks))
        self.selector.register(self._signal_r, selectors.EVENT_READ,
                               _Waker(self._signal_r, self._drain_signal))
        self._schedule_cleanup(first=True)
        host, port = sock.getsockname()[:2]
        log.info("listening on %s:%d", host, port)
        return host, port

    @property
    def address(self) -> tuple[str, int]:
        assert self.listener is not None
        return self.listener.getsockname()[:2]

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM start a graceful shutdown; SIGHUP reloads the TLS
        certificate files (main thread only)."""
        signal.set_wakeup_fd(self._signal_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.request_shutdown())
        signal.signal(signal.SIGHUP, lambda *_: self.request_tls_reload())

    def request_tls_reload(self) -> None:
        """Safe from a signal handler or another thread: the reactor thread reloads
        the certificate on its next turn; live connections keep their context."""
        self._tls_reload = True
        try:
            self._signal_w.send(b"\0")
        except OSError:
            pass

    # ------------------------------------------------------------ the loop

    def serve_forever(self) -> None:
        if self.listener is None:
            self.bind()
        self.store.no_checkpoints_on_this_thread()     # this is the reactor thread
        try:
            while not self.stopped:
                self.run_once()
        finally:
            self._teardown()

    def run_once(self, max_wait: float | None = None) -> None:
        timeout = self.timers.timeout()
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        log_due = logs.flush_due(time.monotonic())      # buffered log records: wake to write
        if log_due is not None:
            timeout = log_due if timeout is None else min(timeout, log_due)
        ctx = self.ctx          # (its flag read directly: no property call, twice a turn)
        if ctx.stopping:
            timeout = 0.1 if timeout is None else min(timeout, 0.1)
        self.turns.dispatch(self.selector.select(timeout))   # light first; bulk within a budget
        self.timers.run_due()
        if self._tls_reload:
            self._tls_reload = False
            if self.tls is not None:
                self.tls.reload()        # reads two small files: fine on this thread
            else:
                log.info("SIGHUP: TLS is off (--plaintext), nothing to reload")
        if ctx.stopping:
            self._shutdown_step()

    def request_shutdown(self) -> None:
        """Safe from a signal handler or another thread: only sets a flag and wakes the loop."""
        self.ctx.stopping = True
        try:
            self._signal_w.send(b"\0")
        except OSError:
            pass

    def _drain_signal(self) -> None:
        try:
            while self._signal_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ------------------------------------------------------------ connections

    def _accept(self) -> None:
        assert self.listener is not None
        listener = self.listener
        family = self._family
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                # ``socket.accept`` less its wrapper: the listener's family and type are
                # known (each was a property turning an int into an enum), and the new
                # socket is made non-blocking by ``_admit`` anyway (issue 17).
                fd, peer = listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed: %s; pausing accepts for a second", exc)
                    self._pause_accepting(1.0)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                log.warning("accept failed: %s", exc)
                return
            try:
                sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            except OSError:
                os.close(fd)                # (gone already: nothing to admit)
                continue
            self._admit(sock, peer)
            if not self._more_to_accept():
                return

    def _more_to_accept(self) -> bool:
        """Whether another connection waits in the listener's queue.

        On Linux one ``getsockopt`` answers (about 1 us) where a last ``accept``
        failing with EAGAIN costs about 9 (the system call and its exception): a
        reconnecting client's every connection paid that (issue 17).  One arriving
        just after is reported by the next ``select``.  Elsewhere: try."""
        if not _LINUX or self.listener is None:
            return True
        try:
            info = self.listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        except OSError:
            return True
        return len(info) < _TCPI_UNACKED_AT + 4 or \
            _TCPI_UNACKED.unpack_from(info, _TCPI_UNACKED_AT)[0] > 0

    def _admit(self, sock: socket.socket, peer: tuple[Any, ...]) -> None:
        sock.setblocking(False)
        ip = peer[0]
        cfg = self.config
        refusal = None
        # (``per_ip.get``: a Counter's missing key is a Python call, ``__missing__``.)
        if self.ctx.stopping:
            refusal = ("SHUTTING_DOWN", "the server is shutting down")
        elif len(self.connections) >= cfg.max_connections:
            refusal = ("TOO_MANY_CONNECTIONS", "the server has too many connections")
        elif self.per_ip.get(ip, 0) >= cfg.max_connections_per_ip:
            refusal = ("TOO_MANY_CONNECTIONS", "too many connections from your address")
        elif self.shared is not None and (why := self.shared.admit(ip)) is not None:
            refusal = ("TOO_MANY_CONNECTIONS", why)
        if refusal is not None:
            frame = encode(ErrorReply(id=None, code=refusal[0], message=refusal[1]))
            log.info("refused %s:%s: %s", peer[0], peer[1], refusal[1])
            if self.tls is not None and len(self._refusing) < MAX_TLS_REFUSALS:
                self._refuse_tls(sock, peer, frame)
                return
            if self.tls is None:
                try:
                    sock.send(frame)
                except OSError:
                    pass
            sock.close()                 # (too many TLS refusals at once: no reason given)
            return
        if not _LINUX:      # (Linux: inherited from the listener)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        session = Session(self.ctx, self.make_transport(sock, peer))
        session.transport.set_protocol(session)
        self.connections.add(session)
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        logs.info(log, "open %s", session.peer)
        session.start(self.greeting)

    def _refuse_tls(self, sock: socket.socket, peer: tuple[Any, ...], frame: bytes) -> None:
        """The error frame goes out inside TLS (a TLS client could not read it
        otherwise); a peer that stalls the handshake is cut after a few seconds."""
        transport = TLSTransport(self.io, sock, peer, self.tls.context)  # type: ignore[union-attr]
        transport.set_protocol(Refusal(lambda: self._refusing.discard(transport)))
        self._refusing.add(transport)
        transport.start()
        transport.refuse(frame)
        self.timers.call_later(REFUSAL_TIMEOUT, transport.abort)

    def make_transport(self, sock: socket.socket, peer: tuple[Any, ...]) -> PlainTransport:
        """The one place a connection's transport is made: TLS with the context
        current at accept time (a SIGHUP reload affects only later connections),
        or plain text when ``tls = false``."""
        if self.tls is not None:
            return TLSTransport(self.io, sock, peer, self.tls.context)
        return PlainTransport(self.io, sock, peer)

    def take_upload_slot(self, user: str) -> bool:
        """Count one more upload of ``user``, unless the per-user limit is reached."""
        return self.ctx.uploads.take(user)

    def free_upload_slot(self, user: str) -> None:
        self.ctx.uploads.free(user)

    def forget(self, session: Session) -> None:
        """Called by a session as it closes."""
        if session in self.connections:
            self.connections.discard(session)
            ip = session.ip
            if self.shared is not None:
                self.shared.forget(ip)
            left = self.per_ip.get(ip, 0) - 1
            if left > 0:
                self.per_ip[ip] = left
            else:
                self.per_ip.pop(ip, None)

    def _pause_accepting(self, seconds: float) -> None:
        assert self.listener is not None
        try:
            self.selector.unregister(self.listener)
        except (KeyError, ValueError):
            return

        def resume() -> None:
            if self.listener is not None and not self.stopping:
                self.selector.register(self.listener, selectors.EVENT_READ,
                                       _Waker(self.listener, self._accept))
        self.timers.call_later(seconds, resume)

    # ------------------------------------------------------------ housekeeping

    def _schedule_cleanup(self, first: bool = False) -> None:
        def run() -> None:
            if self.stopping:
                return
            self.pool.submit(self.store.expire_uploads, self._cleanup_done)
            self._schedule_cleanup()
        self.timers.call_later(5.0 if first else self.config.cleanup_interval, run)
        if first:
            self._schedule_checkpoint()

    def _schedule_checkpoint(self) -> None:
        """Fold the database's write-ahead log on a worker now and then (it fsyncs)."""
        def run() -> None:
            if self.stopping:
                return
            self.pool.submit(LongJob(self.store.checkpoint), self._checkpoint_done)
            self._schedule_checkpoint()
        self.timers.call_later(CHECKPOINT_INTERVAL, run)

    @staticmethod
    def _checkpoint_done(_: Any, error: BaseException | None) -> None:
        if error is not None:
            log.warning("database checkpoint failed: %s", error)

    @staticmethod
    def _cleanup_done(count: Any, error: BaseException | None) -> None:
        if isinstance(error, StorageError):     # an outage: expected, the next run retries
            log.warning("partial-upload cleanup failed: %s (%s)", error.code, error.message)
        elif error is not None:
            log.error("partial-upload cleanup failed", exc_info=error)
        elif count:
            log.info("expired %d stale partial uploads", count)

    # ------------------------------------------------------------ shutdown

    def _shutdown_step(self) -> None:
        now = time.monotonic()
        if self.listener is not None:
            # First step: stop accepting, send idle sessions away, start the grace period.
            log.info("shutting down: %d connections, grace %.1fs",
                     len(self.connections), self.config.shutdown_grace)
            try:
                self.selector.unregister(self.listener)
            except (KeyError, ValueError):
                pass
            self.listener.close()
            self.listener = None
            self._shutdown_deadline = now + self.config.shutdown_grace
        for session in list(self.connections):
            if session.is_idle():
                session.fatal(ErrorReply(id=None, code="SHUTTING_DOWN",
                                         message="the server is shutting down"))
        if now >= self._shutdown_deadline:
            for session in list(self.connections):
                session.close("shutdown")  # uploads are released: partials stay resumable
        if not self.connections and not self.pool.pending and not self.auth_pool.pending:
            self.stopped = True

    def _teardown(self) -> None:
        for session in list(self.connections):
            session.close("shutdown")
        self.pool.close(wait=True)
        self.auth_pool.close(wait=True)
        try:
            self.selector.close()
        except OSError:
            pass
        if self.listener is not None:
            self.listener.close()
        self._signal_r.close()
        self._signal_w.close()
        self.store.close()
        if self.shared is not None:
            self.shared.close()
        if self.loopstats is not None:
            self.loopstats.dump()
        log.info("stopped")
        logs.flush()


def _raise_fd_limit() -> None:
    """Thousands of clients need thousands of descriptors: lift the soft limit to the hard one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
