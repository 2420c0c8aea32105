"""Progress bars (tqdm) and an optional rate limit, as a transfer callback.

A bar is drawn only for a person watching: when stderr is a terminal and
``--quiet`` was not given.  The rate limit lives in the same callback because
the callback is the one place that runs between frames; it sleeps the
transfer down to the asked rate, which also makes interrupted-transfer tests
deterministic.
"""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

from tqdm import tqdm

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_rate(text: str) -> int:
    """ "500k", "2M", "1.5MiB", "1048576" -> bytes (binary units)."""
    found = _SIZE.fullmatch(text)
    if not found or float(found.group(1)) <= 0:
        raise ValueError(f"not a size: {text!r} (try 500k, 2M)")
    return int(float(found.group(1)) * _UNITS[found.group(2).lower()])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


class RateLimit:
    """Sleep so that bytes since the first call never outrun ``rate`` per second."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._start: tuple[float, int] | None = None

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = (now, done)
            return
        t0, base = self._start
        ahead = (done - base) / self.rate - (now - t0)
        if ahead > 0:
            time.sleep(ahead)


class Progress:
    """``progress(done, total, resumed_from)`` drawing one bar for one file.

    Use as a context manager so the bar is closed whatever happens.
    """

    def __init__(self, label: str, *, show: bool, rate: int | None = None,
                 info: TextIO | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.show = show
        self.limit = RateLimit(rate) if rate else None
        self.info = info            # where to say "resuming" when no bar is drawn
        self.stream = stream or sys.stderr
        self.bar: tqdm | None = None
        self._start = -1

    def __call__(self, done: int, total: int, resumed_from: int) -> None:
        if resumed_from != self._start:
            self._begin(done, total, resumed_from)
        elif self.bar is not None:
            self.bar.update(done - self.bar.n)
        if self.limit:
            self.limit(done)

    def _begin(self, done: int, total: int, resumed_from: int) -> None:
        self._start = resumed_from
        self.close()
        desc = self.label
        if resumed_from:
            desc += f" (resuming from {resumed_from})"
            if not self.show and self.info is not None:
                print(f"ftpc: {self.label}: resuming from {resumed_from} bytes",
                      file=self.info, flush=True)
        if self.show:
            self.bar = tqdm(total=total, initial=done, desc=desc, unit="B", unit_scale=True,
                            unit_divisor=1024, file=self.stream, dynamic_ncols=True,
                            leave=True, mininterval=0.2)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
