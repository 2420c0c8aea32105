"""The daemon's log: standard ``logging``, made cheap enough for the hot path.

Every connection writes three records (open, login, close) and every transfer
one more.  With the stock set-up each record walks the stack for its caller,
asks for the thread and process, formats the time with ``strftime`` and ends in
its own ``write`` system call: in a connect + login + quit cycle that was about
a fifth of the daemon's CPU.  Here:

* caller, thread and process lookups are switched off (the logging HOWTO's
  "Optimization" section), since the format does not show them;
* the timestamp is formatted once per second;
* INFO and DEBUG records are buffered and written at most ``FLUSH_AFTER``
  seconds after the first of them (the reactor asks ``flush_due`` before it
  sleeps), so a busy daemon writes its log in a few large ``write`` calls
  instead of one per record.  WARNING and above are written at once, so a
  crash never hides its cause; a SIGKILL can lose the last ``FLUSH_AFTER``
  seconds of INFO records, nothing else.

Log forging: user names, paths and other values come from the network, and a
value holding a newline could write a whole fake line ("... login ok
user=admin") into the log.  So escaping is central, not left to call sites:
every argument of every record is rendered by ``safe_arg`` (a value with
control or other unprintable characters, quotes, backslashes, or a space
together with ``=``, is written as a double-quoted string with escapes;
numbers are left alone), and the finished message has any remaining
control character escaped (``escape_controls``).  One record is therefore
always one line, and a value cannot pose as another ``key=value``.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BUFFER_BYTES = 64 * 1024
#: The longest an INFO record waits in the buffer.
FLUSH_AFTER = 0.05

_ACTIVE: list[LoopHandler] = []        # what ``flush`` flushes: set by ``configure``
#: Which process of ``ftpd serve --workers N`` writes: "sup", "w1", "w2" ... ("" alone).
WORKER = ""

#: Escapes used inside a quoted value; other unprintable characters become \xNN / \uNNNN.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def _plain(text: str) -> bool:
    """True if ``text`` can be logged as it is: printable (a plain space is; newlines, tabs
    and other separators are not), no quote or backslash, and not a space *and* an ``=``
    together (which could smuggle a second ``key=value`` into the line)."""
    return (text.isprintable() and '"' not in text and "\\" not in text
            and not (" " in text and "=" in text))


def safe_arg(value: object) -> object:
    """A log argument that cannot forge a line or blur where a ``key=value`` ends.

    Numbers (and None, booleans) pass through so ``%d`` and ``%.2f`` still work;
    anything else is turned into text, and text that is not ``_plain`` becomes a
    double-quoted string with backslash escapes (``"a\\nb"``).
    """
    if value is None or isinstance(value, int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    if _plain(text):
        return text
    return '"' + "".join(_escape_char(c) for c in text) + '"'


def escape_controls(text: str) -> str:
    """Escape every unprintable character of a finished message (one record, one line)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _safe_args(args: Any) -> Any:
    if type(args) is tuple:
        # The common case, inlined: plain text and numbers pass as they are.
        return tuple([value if (type(value) is str and value.isprintable() and '"' not in value
                                and "\\" not in value and "=" not in value)
                      or type(value) is int else safe_arg(value) for value in args])
    if isinstance(args, Mapping):
        return {key: safe_arg(value) for key, value in args.items()}
    if isinstance(args, tuple):
        return tuple(safe_arg(value) for value in args)
    return args


class _Record(logging.LogRecord):
    """A record without what ``FORMAT`` never shows: no file or module name
    (the caller is not looked up), no thread or process (all None or "?")."""

    def __init__(self, name: str, level: int, pathname: str, lineno: int, msg: object,
                 args: Any, exc_info: Any, func: str | None = None, sinfo: str | None = None,
                 **kwargs: Any) -> None:
        ct = time.time()
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]                      # logging's "%(key)s" form, kept
        self.name = name
        self.msg = msg
        self.args = args
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.pathname = pathname
        self.filename = self.module = "?"       # other formatters read them from __dict__
        self.thread = self.threadName = self.processName = self.process = None
        self.lineno = lineno
        self.funcName = func
        self.exc_info = exc_info
        self.exc_text = None
        self.stack_info = sinfo
        self.created = ct
        self.msecs = int((ct - int(ct)) * 1000) + 0.0
        self.relativeCreated = (ct - _STARTED) * 1000


_STARTED = time.time()


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()`` with every argument made safe and control characters escaped."""
    msg = str(record.msg)
    if record.args:
        try:
            msg = msg % _safe_args(record.args)
        except (TypeError, ValueError, KeyError):
            msg = record.getMessage()          # a format mismatch: logging's own error path
    return escape_controls(msg)


class _Formatter(logging.Formatter):
    """``FORMAT``, put together directly, with the date computed once per second."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = _message(record)
        name = f"{WORKER} {record.name}" if WORKER else record.name
        text = f"{self.formatTime(record)} {record.levelname} {name}: {record.message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _stamp(record.created, record.msecs)


_SECOND: tuple[int, str] = (-1, "")
#: ",000" to ",999": a timestamp's milliseconds without formatting an integer.
_MILLIS = tuple(f",{ms:03d}" for ms in range(1000))


def _stamp(created: float, msecs: float) -> str:
    """``FORMAT``'s ``asctime``, the date part computed once per second."""
    global _SECOND
    second = int(created)
    cached = _SECOND                               # one read: safe against other threads
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        _SECOND = cached
    ms = int(msecs)
    return cached[1] + (_MILLIS[ms] if 0 <= ms < 1000 else f",{ms:03d}")


class LoopHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records to a buffered stream; the loop calls ``flush`` once per turn."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.dirty = False
        self.dirty_since = 0.0           # monotonic time of the oldest unwritten record
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(text)
                if record.levelno >= logging.WARNING:
                    self.stream.flush()
                    self.dirty = False
                elif not self.dirty:
                    self.dirty_since = time.monotonic()
                    self.dirty = True
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_info(self, name: str, message: str) -> None:
        """An INFO line of logger ``name`` as ``emit`` would write it, without a record."""
        ct = time.time()
        name = f"{WORKER} {name}" if WORKER else name
        text = f"{_stamp(ct, int((ct - int(ct)) * 1000))} INFO {name}: {message}\n"
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(text)
            if not self.dirty:
                self.dirty_since = time.monotonic()
                self.dirty = True

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.dirty = False
            if self.stream is not None and hasattr(self.stream, "flush"):
                self.stream.flush()


def _buffered_stderr() -> TextIO:
    """A block-buffered text stream on a duplicate of fd 2 (sys.stderr flushes every line)."""
    try:
        fd = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return sys.stderr                            # no real fd (embedded, tests): unbuffered
    raw = io.FileIO(fd, "w")
    return io.TextIOWrapper(io.BufferedWriter(raw, BUFFER_BYTES), encoding="utf-8",
                            errors="backslashreplace", newline="\n")


def configure(level: str, stream: TextIO | None = None) -> LoopHandler:
    """Route the root logger to one ``LoopHandler`` at ``level``; returns the handler."""
    logging._srcfile = None             # no caller lookup: the format does not show it
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.setLogRecordFactory(_Record)
    handler = LoopHandler(stream if stream is not None else _buffered_stderr())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _ACTIVE[:] = [handler]
    return handler


def _direct(logger: logging.Logger) -> LoopHandler | None:
    """``configure``'s handler if it is the one handler a record of ``logger`` reaches,
    with no filter and no level on the way that could drop or change it; else None."""
    if len(_ACTIVE) != 1 or logger.filters or logger.disabled:
        return None
    handler = _ACTIVE[0]
    reached = 0
    node: logging.Logger | None = logger
    while node is not None:
        for other in node.handlers:
            if other is not handler:
                return None
            reached += 1
        if not node.propagate:
            break
        node = node.parent
    if reached != 1 or handler.filters or handler.level > logging.INFO:
        return None
    return handler


def info(logger: logging.Logger, msg: str, *args: object) -> None:
    """``logger.info(msg, *args)`` for the lines every connection writes (open, login,
    close).  When the daemon's ``LoopHandler`` is all the record would reach, the line
    is put together and buffered at once -- no ``LogRecord``, no handler locking and
    filtering twice over: about a third of the cost (issue 17) -- reading exactly as
    the formatter writes it, arguments made safe the same way.  Otherwise (a test's
    capturing handler, a filter, a format mismatch) it goes through ``logger.info``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _direct(logger)
    if handler is not None:
        try:
            message = msg % _safe_args(args) if args else msg
        except (TypeError, ValueError, KeyError):
            pass                                   # logging's own error path, below
        else:
            if not message.isprintable():
                message = escape_controls(message)
            handler.write_info(logger.name, message)
            return
    logger.info(msg, *args)


def flush() -> None:
    """Write out what ``configure``'s handler buffered (cheap when nothing is)."""
    for handler in _ACTIVE:
        if handler.dirty:
            handler.flush()


def flush_due(now: float) -> float | None:
    """Flush if the oldest buffered record is ``FLUSH_AFTER`` old; else the
    seconds until it will be (None: nothing is buffered)."""
    due = None
    for handler in _ACTIVE:
        if handler.dirty:
            left = handler.dirty_since + FLUSH_AFTER - now
            if left <= 0:
                handler.flush()
            elif due is None or left < due:
                due = left
    return due
