"""Where the reactor's time goes, for profiling latency under load (issue 17).

Off unless the environment names a file: ``FTPD_LOOPSTATS=/tmp/stats.jsonl``.
Then ``install`` wraps (on this one server object, nothing global) the
selector's ``select``, the turn scheduler's ``run`` (every ready connection's
event) and the worker pools' ``submit``, and every ``interval`` seconds
appends one JSON line:

* ``turns``: loop iterations, and their busy time (from ``select`` returning to
  the next ``select`` call) as p50/p99/max in ms -- a small request that
  arrives while a turn runs waits for the rest of it;
* ``events``: by kind of connection (``upload``, ``download``, ``inline``,
  ``control``, or the waker's name), the count, total and max ms of
  ``on_event`` calls;
* ``jobs``: by pool and job name, the count, queue wait (submitted -> started
  on a worker), run time and callback delay (finished -> its ``done`` ran on
  the reactor), p50/p99/max in ms.

It costs a few microseconds per event and per job, so it is a profiling tool,
never on by default.  Imports nothing else of ``ftpd``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ENV", "LoopStats", "install_from_env"]

ENV = "FTPD_LOOPSTATS"
_now = time.perf_counter


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    last = len(ordered) - 1
    return {"n": len(ordered), "p50": round(ordered[last // 2] * 1000, 3),
            "p99": round(ordered[int(last * 0.99)] * 1000, 3),
            "max": round(ordered[last] * 1000, 3), "sum": round(sum(ordered) * 1000, 1)}


def _job_name(job: Callable[..., Any]) -> str:
    job = getattr(job, "fn", job)             # a LongJob: the function inside
    return getattr(job, "__qualname__", None) or type(job).__name__


def _event_kind(data: Any) -> str:
    protocol = getattr(data, "_protocol", None)
    if protocol is None:
        sock = getattr(data, "on_wake", None)
        return _job_name(sock) if sock is not None else type(data).__name__
    for kind in ("upload", "download", "inline"):
        if getattr(protocol, kind, None) is not None:
            return kind
    return "control"


class LoopStats:
    """The samples of one interval, and the file they are written to."""

    def __init__(self, path: str, interval: float = 5.0) -> None:
        self.path = path
        self.interval = interval
        self.turns: list[float] = []
        self.events: dict[str, list[float]] = {}
        self.jobs: dict[str, dict[str, list[float]]] = {}
        self._lock = threading.Lock()        # job samples come from worker threads
        self._turn_start: float | None = None
        self._next_dump = _now() + interval

    def install(self, server: Any) -> None:
        """Wrap this server's ``selector.select``, ``turns.run`` and pools' ``submit``."""
        selector = server.selector
        select = selector.select

        def timed_select(timeout: float | None = None) -> list[tuple[Any, int]]:
            now = _now()
            if self._turn_start is not None:
                self.turns.append(now - self._turn_start)
            if now >= self._next_dump:
                self.dump()
            ready = select(timeout)
            self._turn_start = _now()
            return ready

        selector.select = timed_select
        run = server.turns.run

        def timed_run(handler: Any, mask: int) -> None:
            kind = _event_kind(handler)
            start = _now()
            try:
                run(handler, mask)
            finally:
                self.events.setdefault(kind, []).append(_now() - start)

        server.turns.run = timed_run
        for label, pool in (("file", server.pool), ("auth", server.auth_pool)):
            pool.submit = self._timed_submit(label, pool.submit)

    def _timed_submit(self, label: str, submit: Callable[[Any, Any], None]) \
            -> Callable[[Any, Any], None]:
        def timed(job: Callable[[], Any], done: Callable[[Any, BaseException | None], None]) \
                -> None:
            name = f"{label}:{_job_name(job)}"
            queued = _now()
            marks: list[float] = []

            def run() -> Any:
                marks.append(_now())
                try:
                    return job()
                finally:
                    marks.append(_now())

            def finished(result: Any, error: BaseException | None) -> None:
                if len(marks) == 2:
                    self._record(name, marks[0] - queued, marks[1] - marks[0], _now() - marks[1])
                done(result, error)

            lane = getattr(job, "fn", None)          # keep a LongJob in its lane
            submit(type(job)(run) if lane is not None else run, finished)
        return timed

    def _record(self, name: str, wait: float, run: float, callback: float) -> None:
        with self._lock:
            slot = self.jobs.setdefault(name, {"wait": [], "run": [], "callback": []})
            slot["wait"].append(wait)
            slot["run"].append(run)
            slot["callback"].append(callback)

    def dump(self) -> None:
        """Append this interval's summary as one JSON line and start a new interval."""
        with self._lock:
            jobs, self.jobs = self.jobs, {}
        line = {"t": time.time(), "turns": _pct(self.turns),
                "events": {k: _pct(v) for k, v in self.events.items()},
                "jobs": {k: {part: _pct(v) for part, v in parts.items()}
                         for k, parts in jobs.items()}}
        self.turns, self.events = [], {}
        self._next_dump = _now() + self.interval
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def install_from_env(server: Any) -> LoopStats | None:
    """Profile ``server`` when ``FTPD_LOOPSTATS`` names a file; else do nothing."""
    path = os.environ.get(ENV)
    if not path:
        return None
    stats = LoopStats(path)
    stats.install(server)
    return stats
