"""A small thread pool whose results come back through the selector.

Slow work -- scrypt, hashing a large file, fsync and commit -- runs on worker
threads.  A finished job's callback is queued and one byte is written to a
socketpair registered with the reactor's selector, so every callback runs on
the reactor thread and no connection state is ever touched by two threads.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ftpd.workers")

Done = Callable[[Any, BaseException | None], None]


class WorkerPool:
    """Owns worker threads, their job queue, their finished-callback queue and the wake-up
    socketpair the reactor's selector watches.

    A job may touch only what its closure gives it (the store, an upload's file)
    and never a session or the selector: its result comes back as
    ``done(result, error)`` run on the reactor thread by ``run_callbacks``.
    Process-local: each future worker process has its own pools.
    """

    def __init__(self, threads: int, name: str = "worker") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Done] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Done, Any, BaseException | None]] = queue.SimpleQueue()
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._signalled = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"ftpd-{name}-{i}", daemon=True)
                         for i in range(threads)]
        self.pending = 0            # jobs submitted and not yet called back (reactor thread only)
        for t in self._threads:
            t.start()

    def submit(self, job: Callable[[], Any], done: Done) -> None:
        """Run ``job()`` on a worker; later call ``done(result, error)`` on the reactor thread."""
        self.pending += 1
        self._jobs.put((job, done))

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, done = item
            try:
                result, error = job(), None
            except BaseException as exc:  # handed to the reactor, which decides
                result, error = None, exc
            self._done.put((done, result, error))
            # An idle thread must not keep its last job alive: a listing abandoned by its
            # client would hold its folder open until this thread's next job.
            item = job = done = result = error = None
            if not self._signalled.is_set():
                self._signalled.set()
                try:
                    self._wake_w.send(b"\0")
                except (BlockingIOError, OSError):
                    pass                    # a wake-up is already pending

    def run_callbacks(self) -> int:
        """Drain the wake-up socket and run every finished job's callback."""
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._signalled.clear()
        ran = 0
        while True:
            try:
                done, result, error = self._done.get_nowait()
            except queue.Empty:
                return ran
            self.pending -= 1
            ran += 1
            try:
                done(result, error)
            except Exception:
                log.exception("worker callback failed")

    def close(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for t in self._threads:
                t.join()
            self.run_callbacks()
        self.wake_r.close()
        self._wake_w.close()
