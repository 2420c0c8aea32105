"""The daemon's log set-up (ftpd/logs.py): standard logging, buffered, flushed by the loop."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest

from ftpd import logs
from tests.call_counting import python_calls

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[Path, TextIO]]:
    """``logs.configure`` on a block-buffered file; logging's global state restored after."""
    root = logging.getLogger()
    saved = (logging.getLogRecordFactory(), logging._srcfile, logging.logThreads,
             logging.logProcesses, logging.logMultiprocessing, list(root.handlers), root.level)
    path = tmp_path / "ftpd.log"
    stream = open(path, "w", buffering=64 * 1024, encoding="utf-8")  # noqa: SIM115
    logs.configure("INFO", stream)
    try:
        yield path, stream
    finally:
        logs._ACTIVE.clear()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        factory, srcfile, threads, processes, multiprocessing, handlers, level = saved
        logging.setLogRecordFactory(factory)
        logging._srcfile = srcfile
        logging.logThreads, logging.logProcesses = threads, processes
        logging.logMultiprocessing = multiprocessing
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        stream.close()


def test_info_records_wait_in_the_buffer_until_their_flush_is_due(log_file):
    path, _ = log_file
    logging.getLogger("ftpd.test").info("open %s", "127.0.0.1:5000")
    start = time.monotonic()
    left = logs.flush_due(start)
    assert left is not None and 0 < left <= logs.FLUSH_AFTER
    assert path.read_text() == ""
    assert logs.flush_due(start + logs.FLUSH_AFTER + 0.001) is None
    assert "open 127.0.0.1:5000" in path.read_text()


def test_nothing_buffered_means_no_flush_is_due(log_file):
    assert logs.flush_due(time.monotonic()) is None


def test_warnings_are_written_at_once_with_what_was_buffered_before_them(log_file):
    path, _ = log_file
    log = logging.getLogger("ftpd.test")
    log.info("first")
    log.warning("second")
    lines = path.read_text().splitlines()
    assert [LINE.fullmatch(line).group(1, 3) for line in lines] == [   # type: ignore[union-attr]
        ("INFO", "first"), ("WARNING", "second")]
    assert logs.flush_due(time.monotonic()) is None


def test_lines_have_the_default_format(log_file):
    path, _ = log_file
    logging.getLogger("ftpd.conn").info("close %s user=%s seconds=%.1f", "1.2.3.4:5", "bob", 1.25)
    logging.getLogger("ftpd").info("mapping %(key)s", {"key": "value"})
    logs.flush()
    first, second = path.read_text().splitlines()
    assert LINE.fullmatch(first).groups() == (                          # type: ignore[union-attr]
        "INFO", "ftpd.conn", "close 1.2.3.4:5 user=bob seconds=1.2")
    assert LINE.fullmatch(second).group(3) == "mapping value"           # type: ignore[union-attr]


def test_an_exception_is_logged_with_its_traceback(log_file):
    path, _ = log_file
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("ftpd.conn").exception("connection failed")
    text = path.read_text()
    assert "ERROR ftpd.conn: connection failed\nTraceback (most recent call last):" in text
    assert "ValueError: boom" in text


def test_the_seconds_of_the_timestamp_follow_the_clock(log_file):
    path, _ = log_file
    log = logging.getLogger("ftpd.test")
    log.info("a")
    time.sleep(1.05)
    log.info("b")
    logs.flush()
    stamps = [line.split(",")[0] for line in path.read_text().splitlines()]
    assert stamps[0] < stamps[1]          # the cached date moved on with the clock


@contextmanager
def alone() -> Iterator[None]:
    """The daemon's handler as the root's only one, as in ``ftpd serve`` (pytest's
    capturing handlers, added around each test's call, set aside meanwhile)."""
    root = logging.getLogger()
    others = [h for h in root.handlers if h not in logs._ACTIVE]
    for handler in others:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in others:
            root.addHandler(handler)


def test_a_direct_info_line_reads_as_the_same_line_through_logging(log_file):
    path, _ = log_file
    log = logging.getLogger("ftpd.conn")
    args = ("1.2.3.4:5", 'bob "x"\nfake', 1.25)
    log.info("close %s user=%s seconds=%.1f", *args)
    with alone():
        logs.info(log, "close %s user=%s seconds=%.1f", *args)
    logs.flush()
    through, direct = (LINE.fullmatch(line).groups()                   # type: ignore[union-attr]
                       for line in path.read_text().splitlines())
    assert direct == through == ("INFO", "ftpd.conn",
                                 'close 1.2.3.4:5 user="bob \\"x\\"\\nfake" seconds=1.2')


def test_a_direct_info_line_makes_no_log_record(log_file):
    path, _ = log_file
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counted(*args: object, **kwargs: object) -> logging.LogRecord:
        made.append(factory(*args, **kwargs))
        return made[-1]
    logging.setLogRecordFactory(counted)
    with alone():
        logs.info(logging.getLogger("ftpd.conn"), "open %s", "1.2.3.4:5")
    logs.flush()
    assert made == [] and "INFO ftpd.conn: open 1.2.3.4:5" in path.read_text()


def test_a_direct_info_line_still_reaches_another_handler_and_the_file(log_file):
    path, _ = log_file
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
    capture = Capture()
    with alone():
        logging.getLogger("ftpd").addHandler(capture)
        try:
            logs.info(logging.getLogger("ftpd.conn"), "open %s", "1.2.3.4:5")
        finally:
            logging.getLogger("ftpd").removeHandler(capture)
    logs.flush()
    assert seen == ["open 1.2.3.4:5"] and "open 1.2.3.4:5" in path.read_text()


def test_a_direct_info_line_of_printable_text_runs_no_escaping_pass(
        log_file):
    """Each connection writes three (issue 17): a line whose text is printable runs
    no escaping pass (its milliseconds come ready-made, too)."""
    path, _ = log_file
    log = logging.getLogger("ftpd.conn")
    with alone():
        logs.info(log, "open %s", "1.2.3.4:5")      # (fills logging's level cache)
        calls = python_calls(lambda: logs.info(log, "open %s", "1.2.3.4:5"))
    logs.flush()
    assert "INFO ftpd.conn: open 1.2.3.4:5" in path.read_text()
    assert "escape_controls" not in calls and "_escape_char" not in calls, calls
    assert len(calls) <= 8, calls


@pytest.mark.parametrize("ms", [0, 5, 42, 999])
def test_the_milliseconds_of_the_timestamp_read_as_three_digits(ms):
    assert logs._stamp(1_000_000.0, ms).endswith(f",{ms:03d}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", logs._stamp(1_000_000.0, ms))
