"""Log forging (issue 13, item 10): client-supplied values cannot write fake log lines.

User names, paths and other values come from the network.  ``ftpd/logs.py``
escapes every argument of every record centrally, so a value holding a newline
and the text of a real log line stays inside its own, quoted, line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from ftpd import logs
from protocol import encode, encode_data
from tests.test_hostile_support import wait_until
from tests.wire import Wire

FAKE = "2026-01-01 00:00:00,000 INFO ftpd.handlers: login ok 1.2.3.4"    # 60 characters
EVIL_USER = f"x\n{FAKE}\n"                       # a login name may have up to 64
EVIL_PATH = f"docs\r\n{FAKE}:1 user=admin via=password\n"
_FORGED = re.compile(r"^\S+ \S+ INFO ftpd\.handlers: login ok 1\.2\.3\.4", re.MULTILINE)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """``logs.configure`` on a file; logging's global state restored afterwards."""
    root = logging.getLogger()
    saved = (logging.getLogRecordFactory(), list(root.handlers), root.level)
    path = tmp_path / "ftpd.log"
    with open(path, "w", encoding="utf-8") as stream:
        logs.configure("INFO", stream)
        try:
            yield path
        finally:
            logs.flush()
            logs._ACTIVE.clear()
            factory, handlers, level = saved
            for h in list(root.handlers):
                root.removeHandler(h)
            for h in handlers:
                root.addHandler(h)
            root.setLevel(level)
            logging.setLogRecordFactory(factory)


def test_a_value_with_newlines_stays_on_its_own_line(log_file):
    logging.getLogger("ftpd.handlers").info("login failed %s user=%s delay=%.2fs",
                                            "127.0.0.1:5", EVIL_USER, 0.5)
    logs.flush()
    lines = log_file.read_text("utf-8").splitlines()
    assert len(lines) == 1
    assert not _FORGED.search(log_file.read_text("utf-8"))
    assert 'user="x\\n2026-01-01' in lines[0] and lines[0].endswith("delay=0.50s")


def test_a_value_cannot_pose_as_another_key(log_file):
    logging.getLogger("ftpd.handlers").info("login failed user=%s", "x user=admin")
    logs.flush()
    assert log_file.read_text("utf-8").rstrip("\n").endswith('login failed user="x user=admin"')


def test_unicode_line_and_direction_controls_are_escaped(log_file):
    logging.getLogger("ftpd").info("path=%s", "a\u2028b\u202ec\x1b[31m")
    logs.flush()
    text = log_file.read_text("utf-8")
    assert text.count("\n") == 1 and "\u2028" not in text and "\x1b" not in text
    assert 'path="a\\u2028b\\u202ec\\x1b[31m"' in text


def test_ordinary_values_and_numbers_are_logged_as_before(log_file):
    logging.getLogger("ftpd").info("upload user=%s path=%s bytes=%d result=%s", "bob",
                                   "/my docs/a.txt", 42, "interrupted (INTERNAL)")
    logs.flush()
    assert log_file.read_text("utf-8").rstrip("\n").endswith(
        "upload user=bob path=/my docs/a.txt bytes=42 result=interrupted (INTERNAL)")


def test_a_forged_login_name_and_put_path_do_not_forge_daemon_log_lines(server: Any):
    """Against a real daemon: a login with a user name holding a fake "login ok" line,
    then (logged in) an inline put whose raw path holds one.  The log gets the escaped
    values and no forged line."""
    server.add_user("alice", "pw")
    with Wire(server.host, server.port) as wire:
        assert wire.login(EVIL_USER, "wrong").code == "AUTH_FAILED"
        wire.logged_in("alice", "pw")
        wire.send_raw(encode(m.Put(id=9, path=EVIL_PATH, size=3, inline=True))
                      + encode_data(b"abc"))
        assert wire.recv_reply().code == "BAD_PATH"
        assert wire.call(m.Ping(id=10, payload="x")).type == "ping"
    escaped_path = '"docs\\r\\n2026-01-01'
    assert wait_until(lambda: escaped_path in server.log(), 5), server.log()[-2000:]
    text = server.log()
    assert 'user="x\\n2026-01-01' in text
    assert not _FORGED.search(text), text[-2000:]
