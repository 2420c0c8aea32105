"""The retry policy: after a dropped connection, reconnect and run the attempt again.

It is its own object so that uploads, downloads and streams share one rule
for how often and how patiently to try (exponential backoff capped at 4 s),
and so that the transfer policies never talk to the socket themselves: they
hand an ``attempt(n)`` to ``Retry.run`` and get its value or the last error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import ConnectionLost

T = TypeVar("T")
Notice = Callable[[str], None]

#: Never wait longer than this between two reconnects.
MAX_BACKOFF = 4.0


def ignore(_message: str) -> None:
    """The default notice: say nothing."""


@dataclass
class Retry:
    """Run an attempt up to ``1 + retries`` times; ``reconnect`` before each re-run.

    Only ``ConnectionLost`` is retried: a server's refusal would be refused
    again, and a local error is the caller's to fix.
    """

    reconnect: Callable[[], None]
    retries: int = 0
    backoff: float = 0.25
    notice: Notice = ignore

    def run(self, attempt: Callable[[int], T]) -> T:
        n = 0
        while True:
            try:
                if n:
                    self.reconnect()
                return attempt(n)
            except ConnectionLost as exc:
                if n >= self.retries:
                    raise
                n += 1
                self.notice(f"{exc.code}: {exc.message}; reconnecting "
                            f"(retry {n} of {self.retries})")
                time.sleep(min(self.backoff * 2 ** (n - 1), MAX_BACKOFF))
