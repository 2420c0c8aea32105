"""``ftpd serve --workers N``: a supervisor process and N reactor processes.

One reactor is one core.  Like nginx and pyftpdlib's prefork mode, the
supervisor forks N workers; each opens its own listening socket with
``SO_REUSEPORT`` on the same address, so the kernel spreads new connections
over them, and runs today's reactor (``Server``) unchanged.  What the workers
must agree on lives in state every process shares (docs/ARCHITECTURE.md,
"State across processes").

The supervisor itself:

* holds the data-root lock (taken by the CLI before it starts), so a second
  daemon on the same root refuses to start; the workers inherit the locked
  descriptor, so the root stays locked while any of them still runs;
* keeps a bound, non-listening socket on the address: it resolves ``--port 0``
  to one port for every worker and keeps the port while a worker restarts;
* forks before any thread exists in it, and runs no thread: it waits for
  signals with ``sigtimedwait`` (they are blocked in it, unblocked in workers);
* restarts a worker that dies, after a back-off (doubling from 0.1 s to 5 s
  while the worker keeps dying within ``START_WINDOW`` of its start), with a
  log line; gives up (exit status 1, one clear message) when one worker died
  ``MAX_START_FAILURES`` times in a row that quickly;
* deletes a dead worker's rows from the shared state when it reaps it;
* has Linux send each worker SIGTERM if the supervisor itself dies
  (``PR_SET_PDEATHSIG``): a killed supervisor leaves no orphan serving;
* forwards SIGTERM/SIGINT (graceful stop: each worker drains as a single
  daemon does; the supervisor exits 0 once all have exited, and kills any
  still running ``STOP_EXTRA`` seconds after the grace period) and SIGHUP.

Every log line names its process: ``sup``, ``w1``, ``w2`` ...
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage.shared import SharedState

from . import logs
from .config import Config

log = logging.getLogger("ftpd")

#: A worker that dies within this many seconds of its start failed to start.
START_WINDOW = 10.0
#: That many failed starts in a row of one worker: give up.
MAX_START_FAILURES = 5
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: After ``shutdown_grace``, how long workers get to exit before they are killed.
STOP_EXTRA = 10.0

SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}

#: What a worker runs: ``(config, index) -> exit status`` (index from 1).
WorkerMain = Callable[[Config, int], int]

#: In a worker process, its index (1..N), which ``ping`` replies carry; None in a
#: daemon without workers (and in the supervisor).
current_worker: int | None = None


@dataclass
class _Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None

    @property
    def name(self) -> str:
        return f"w{self.index}"


def _stop_with_parent(parent: int) -> None:
    """Ask Linux for a SIGTERM when the supervisor dies (even by SIGKILL), so no worker
    outlives it as an orphan; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)         # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:                          # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Starts, watches, restarts and stops the worker processes."""

    def __init__(self, config: Config, worker_main: WorkerMain) -> None:
        self.config = config
        self.worker_main = worker_main
        self.slots = [_Slot(i + 1) for i in range(config.worker_processes)]
        self.stopping = False
        self.status = 0
        self._stop_deadline = 0.0
        self._placeholder: socket.socket | None = None
        self._old_mask: set[signal.Signals] = set()

    # ----- setup
    def reserve_address(self) -> tuple[str, int]:
        """Bind (without listening) the address every worker will listen on; OSError if
        it cannot be had.  ``--port 0`` becomes one real port for all of them."""
        cfg = self.config
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((cfg.host, cfg.port))
        except OSError:
            sock.close()
            raise
        self._placeholder = sock
        host, port = sock.getsockname()[:2]
        self.config = dataclasses.replace(cfg, port=port)
        return host, port

    def run(self) -> int:
        """Run until stopped; the exit status (0 after a stop by signal)."""
        if self._placeholder is None:
            self.reserve_address()
        self._with_shared(lambda s: s.reset())       # we hold the root: nothing is live
        self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # queued for sigtimedwait, not dropped
        log.info("supervisor: %d workers on %s:%d", len(self.slots), self.config.host,
                 self.config.port)
        try:
            for slot in self.slots:
                self._spawn(slot)
            while True:
                logs.flush()
                info = signal.sigtimedwait(SIGNALS, self._timeout())
                if info is not None:
                    self._on_signal(info.si_signo)
                self._reap()
                now = time.monotonic()
                if self.stopping:
                    if not any(slot.pid for slot in self.slots):
                        break
                    if now >= self._stop_deadline:
                        self._kill_all()
                else:
                    self._restart_due(now)
        finally:
            if self._placeholder is not None:
                self._placeholder.close()
            log.info("supervisor: stopped")
            logs.flush()
        return self.status

    def _timeout(self) -> float:
        now = time.monotonic()
        due = [slot.restart_at - now for slot in self.slots if slot.restart_at is not None]
        return max(0.01, min(due + [1.0]))

    # ----- workers
    def _spawn(self, slot: _Slot) -> None:
        if threading.active_count() != 1:
            log.warning("supervisor: forking with %d threads", threading.active_count())
        logs.flush()                      # or the child would write the buffer again
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:                      # the worker
            code = 1
            try:
                if self._placeholder is not None:
                    self._placeholder.close()
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)   # until the server takes it
                signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
                _stop_with_parent(parent)
                global current_worker
                current_worker = slot.index
                code = self.worker_main(self.config, slot.index)
            except BaseException:
                logging.getLogger("ftpd").exception("worker failed")
            finally:
                logs.flush()
                os._exit(code)
        slot.pid = pid
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("supervisor: started %s (pid %d)", slot.name, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            self._with_shared(lambda s, pid=pid: s.forget_pid(pid))
            how = _describe(status)
            if self.stopping:
                log.info("supervisor: %s (pid %d) %s", slot.name, pid, how)
                continue
            now = time.monotonic()
            slot.quick_deaths = slot.quick_deaths + 1 if now - slot.started < START_WINDOW else 1
            if slot.quick_deaths >= MAX_START_FAILURES:
                message = (f"workers keep dying at start: {slot.name} died "
                           f"{slot.quick_deaths} times within {START_WINDOW:.0f} s of starting "
                           f"(last: {how}); stopping")
                log.error("supervisor: %s", message)
                logs.flush()
                print(f"ftpd: error: {message}", file=sys.stderr, flush=True)
                self.status = 1
                self._stop()
                continue
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.quick_deaths - 1))
            slot.restart_at = now + delay
            log.warning("supervisor: %s (pid %d) %s; restarting it in %.1f s",
                        slot.name, pid, how, delay)

    def _restart_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.pid == 0 and slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    # ----- signals
    def _on_signal(self, signo: int) -> None:
        if signo in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                log.info("supervisor: %s: stopping %d workers", signal.Signals(signo).name,
                         sum(1 for s in self.slots if s.pid))
            self._stop()
        elif signo == signal.SIGHUP:
            log.info("supervisor: SIGHUP: forwarded to the workers")
            self._send(signal.SIGHUP)

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop_deadline = time.monotonic() + self.config.shutdown_grace + STOP_EXTRA
            for slot in self.slots:
                slot.restart_at = None
        self._send(signal.SIGTERM)

    def _send(self, signo: int) -> None:
        for slot in self.slots:
            if slot.pid:
                try:
                    os.kill(slot.pid, signo)
                except ProcessLookupError:
                    pass

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.pid:
                log.error("supervisor: %s (pid %d) did not stop in time: killing it",
                          slot.name, slot.pid)
        self._send(signal.SIGKILL)
        self._stop_deadline = float("inf")      # once; then wait for the reaping

    def _with_shared(self, action: Callable[[SharedState], object]) -> None:
        """Open the shared state just for ``action`` (never across a fork)."""
        try:
            shared = SharedState(self.config.root)
        except Exception as exc:       # the workers sweep at their start anyway
            log.warning("supervisor: shared state: %s", exc)
            return
        try:
            action(shared)
        except Exception as exc:
            log.warning("supervisor: shared state: %s", exc)
        finally:
            shared.close()
