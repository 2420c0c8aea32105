"""Counting a piece of code's Python calls, for the tests that pin a hot path's
cost (issue 17) by what it does, never by how long it takes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def python_calls(action: Callable[[], Any]) -> list[str]:
    """The names of the Python functions called while ``action()`` runs, in order
    (calls into C are not seen: ``sys.setprofile`` reports them as c_call)."""
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls
