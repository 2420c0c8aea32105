"""A small thread pool whose results come back through the selector.

Slow work -- scrypt, hashing a large file, fsync and commit -- runs on worker
threads.  A finished job's callback is queued and one byte is written to a
socketpair registered with the reactor's selector, so every callback runs on
the reactor thread and no connection state is ever touched by two threads.

Two lanes (issue 17, latency under load): a job wrapped in ``LongJob`` --
hashing or flushing an upload behind its writer, a commit, a database
checkpoint: tens to hundreds of milliseconds of disk or CPU -- runs on at most
``threads - 1`` workers at once.  Jobs are still taken in the order they came,
except that a long job is passed over while that many run, so a short job (a
listing, a begin, a small put) never waits for every worker to finish a long
one, and long jobs are never starved by a stream of short ones.  Measured with
4 uploads of 1 GiB running: their ``fdatasync`` jobs (50-200 ms each) held all
four workers and a 100-entry ``ls`` waited up to 100 ms for one.  With one
thread there is nothing to reserve: the pool is plain first come, first served.

A ``SyncJob`` -- a group of small puts: written, then ``fsync``ed, a few
milliseconds alone but 30-700 ms behind four streaming uploads' write-back --
shares the long lane's limit (session 7).  Before, the probes' puts took the
worker kept for short jobs, and a listing waited behind them: ``ls`` p99
146-348 ms in the latency scenario, 35-53 ms after (3 interleaved rounds each).
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ftpd.workers")

Done = Callable[[Any, BaseException | None], None]


class LongJob:
    """A job for the long lane: it may run for a long time (disk flushes, hashing
    a large file), so it never takes the last worker that short jobs need."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def __call__(self) -> Any:
        return self.fn()


class SyncJob(LongJob):
    """A job that is short in work but waits on the disk (a group of small puts:
    write and ``fsync``): it counts against the long lane's limit, so that a
    listing or a lookup never waits for a flush to reach the disk."""

    __slots__ = ()


class WorkerPool:
    """Owns worker threads, their job queue, their finished-callback queue and the wake-up
    socketpair the reactor's selector watches.

    A job may touch only what its closure gives it (the store, an upload's file)
    and never a session or the selector: its result comes back as
    ``done(result, error)`` run on the reactor thread by ``run_callbacks``.
    Process-local: each future worker process has its own pools.
    """

    def __init__(self, threads: int, name: str = "worker") -> None:
        # (arrival number, job, done), oldest first, in two lanes.
        self._short: deque[tuple[int, Callable[[], Any], Done]] = deque()
        self._long: deque[tuple[int, Callable[[], Any], Done]] = deque()
        self._arrivals = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self.long_limit = max(1, threads - 1)   # long jobs running at once
        self._long_running = 0
        self._closing = False
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
        with self._cond:
            lane = self._long if isinstance(job, LongJob) else self._short
            lane.append((next(self._arrivals), job, done))
            self._cond.notify()

    def _next(self) -> tuple[tuple[int, Callable[[], Any], Done] | None, bool]:
        """The oldest job a worker thread may take (a long one only while fewer than
        ``long_limit`` run), or None once closing with nothing left."""
        with self._cond:
            while True:
                short, long = self._short, self._long
                if long and self._long_running < self.long_limit and \
                        (not short or long[0][0] < short[0][0]):
                    self._long_running += 1
                    return long.popleft(), True
                if short:
                    return short.popleft(), False
                if self._closing and not long:
                    return None, False
                self._cond.wait()

    def _work(self) -> None:
        while True:
            item, long = self._next()
            if item is None:
                return
            _, job, done = item
            try:
                result, error = job(), None
            except BaseException as exc:  # handed to the reactor, which decides
                result, error = None, exc
            if long:
                with self._cond:
                    self._long_running -= 1
                    self._cond.notify()
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
        """Let the threads end once every queued job has run."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()
            self.run_callbacks()
        self.wake_r.close()
        self._wake_w.close()
