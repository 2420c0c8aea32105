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

from .failures import Failure, describe


@dataclass(frozen=True)
class Outcome:
    """A command's result: ``data`` for ``--json``, ``text`` for people (None: silent)."""

    data: Any
    text: str | None = None
    #: a transfer report ("a -> b (3 bytes, verified)"): silenced by ``--quiet``
    report: bool = False
    #: stdout carries the file itself (``get FILE -``): the result goes to stderr
    stdout_taken: bool = False


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
        if outcome.stdout_taken:
            if outcome.text and not self.quiet:
                print(f"ftpc: {outcome.text}", file=self.stderr, flush=True)
            return
        if self.json_mode:
            print(json.dumps(jsonable(outcome.data), ensure_ascii=False), file=self.stdout)
        elif outcome.text and not (outcome.report and self.quiet):
            print(outcome.text, file=self.stdout)
        self.stdout.flush()

    def error(self, failure: Failure, partial: Outcome | None = None) -> None:
        """The error line on stderr; with ``--json`` one document on stdout -- the
        partial result (what did succeed) with an ``error`` member added."""
        if partial is not None and not self.json_mode:
            self.result(partial)
        self.stdout.flush()
        print(failure.line(), file=self.stderr, flush=True)
        if self.json_mode:
            document = jsonable(partial.data) if partial is not None else {}
            if not isinstance(document, dict):
                document = {"result": document}
            document["error"] = {"code": failure.code, "message": failure.message,
                                 "exit_status": failure.exit_status}
            print(json.dumps(document, ensure_ascii=False), file=self.stdout, flush=True)

    def fail(self, exc: BaseException) -> int:
        """Report what a command raised; return the exit status."""
        failure = describe(exc)
        self.error(failure, getattr(exc, "outcome", None))
        return failure.exit_status

    def error_line(self, exc: BaseException) -> None:
        """One failure among several (each file of ``rm a b``): its line on stderr;
        the command's status comes later, from the first one."""
        print(describe(exc).line(), file=self.stderr, flush=True)

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
