"""Where the CLI's words go: results on stdout, everything else on stderr.

Scripts pipe stdout, so it carries nothing but results -- one JSON document
with ``--json``, plain text otherwise.  Progress bars, notices and errors go to
stderr, errors always as one ``ftpc: error: CODE: message`` line.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from .failures import Failure


@dataclass(frozen=True)
class Outcome:
    """A command's result: ``data`` for ``--json``, ``text`` for people (None: silent)."""

    data: Any
    text: str | None = None


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False,
                 stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self._stdout = stdout
        self._stderr = stderr

    # Looked up on use, not stored: whoever swaps sys.stdout later (tests) is obeyed.
    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    @property
    def show_progress(self) -> bool:
        """Bars only for a person: stderr is a terminal and not ``--quiet``."""
        return not self.quiet and _isatty(self.stderr)

    def result(self, outcome: Outcome) -> None:
        if self.json_mode:
            print(json.dumps(jsonable(outcome.data), ensure_ascii=False), file=self.stdout)
        elif outcome.text:
            print(outcome.text, file=self.stdout)
        self.stdout.flush()

    def error(self, failure: Failure) -> None:
        self.stdout.flush()
        print(failure.line(), file=self.stderr, flush=True)
        if self.json_mode:
            print(json.dumps({"error": {"code": failure.code, "message": failure.message,
                                        "exit_status": failure.exit_status}}),
                  file=self.stdout, flush=True)

    def warn(self, message: str) -> None:
        """Something the user should know even with ``--quiet`` (a restart, a retry)."""
        print(f"ftpc: {message}", file=self.stderr, flush=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            print(f"ftpc: {message}", file=self.stderr, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
