"""parse_size and the error family's wire contract."""

from __future__ import annotations

import json

import pytest

import storage
from storage import ERRORS_BY_CODE, QuotaExceeded, StorageError, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("1024", 1024),
    ("0", 0),
    ("64K", 64 << 10),
    ("64k", 64 << 10),
    ("500M", 500 << 20),
    ("1G", 1 << 30),
    ("1.5G", 3 << 29),
    ("2T", 2 << 40),
    ("1GiB", 1 << 30),
    ("10KB", 10 << 10),
    (" 3 M ", 3 << 20),
    (".5K", 512),
    ("0.1K", 102),   # rounded down to whole bytes
])
def test_parse_size_accepts_plain_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", " ", "G", "-1", "-1G", "1X", "1.2.3", "one", "1 G B",
                                  "1e3", "0x10", "1GG", None, 5])
def test_parse_size_rejects_junk(text):
    with pytest.raises(ValueError):
        parse_size(text)


EXPECTED_CODES = {
    "BadPath": "BAD_PATH", "NotFound": "NOT_FOUND", "Exists": "EXISTS",
    "NotADirectory": "NOT_A_DIRECTORY", "IsADirectory": "IS_A_DIRECTORY",
    "NotEmpty": "NOT_EMPTY", "QuotaExceeded": "QUOTA_EXCEEDED", "UploadBusy": "UPLOAD_BUSY",
    "OffsetMismatch": "OFFSET_MISMATCH", "IntegrityError": "INTEGRITY", "NoSpace": "NO_SPACE",
    "StorageIOError": "IO_ERROR", "AuthFailed": "AUTH_FAILED",
    "AccountDisabled": "ACCOUNT_DISABLED", "UserExists": "USER_EXISTS",
    "BadUsername": "BAD_USERNAME", "BadPassword": "BAD_PASSWORD", "NoSuchUser": "NO_SUCH_USER",
    "TooManyPartials": "TOO_MANY_PARTIALS",
}


def test_each_error_has_its_stable_code_and_is_exported():
    for name, code in EXPECTED_CODES.items():
        cls = getattr(storage, name)
        assert issubclass(cls, StorageError) and cls.code == code
        assert ERRORS_BY_CODE[code] is cls
    assert len(ERRORS_BY_CODE) == len(EXPECTED_CODES)


def test_error_carries_message_and_json_safe_details():
    exc = QuotaExceeded("not enough quota", free=10, needed=20)
    assert (exc.message, exc.details, str(exc)) == ("not enough quota",
                                                    {"free": 10, "needed": 20},
                                                    "not enough quota")
    assert json.loads(json.dumps(exc.to_dict())) == {
        "code": "QUOTA_EXCEEDED", "message": "not enough quota",
        "details": {"free": 10, "needed": 20}}


def test_checkpoints_can_be_kept_off_a_thread_and_run_on_demand(tmp_path):
    import sqlite3

    from storage import Store

    store = Store(tmp_path / "root", scrypt_n=16)
    try:
        store.no_checkpoints_on_this_thread()
        for i in range(30):
            store.create_user(f"user{i}", "pw")
        assert store._ctx.db.conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        frames, copied = store.checkpoint()
        assert frames > 0 and copied == frames
        db = sqlite3.connect(tmp_path / "root" / "users.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 30
        db.close()
    finally:
        store.close()
