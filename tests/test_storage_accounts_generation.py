"""Account incarnations and name probing (issue 13, items 6 and 11), at the Store level.

Every account has a ``uid`` that is never reused and a ``generation`` that a new
password or disabling bumps; ``Store.login_valid`` tells a session that its
login no longer stands.  Unknown names cost the scrypt parameters of the stored
hashes, and registering a taken name costs the same scrypt as a free one.

The stamp tests run on both backends (tests/storage_backends.py); the rest is
about the local catalogue (SQLite, its upgrade, its stand-in hash) and stays local.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage import AuthFailed, Store, UserExists
from storage.accounts import PROBE_PARAMS_TTL
from storage.db import _SCHEMA_V1
from storage.passwords import PasswordHasher, ScryptParams
from tests.storage_backends import local_only

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(make_store):
    return make_store(scrypt_n=2**4)


def stamp(store: Store, name: str) -> tuple[int, int]:
    info = store.get_user(name)
    assert info is not None
    return info.uid, info.generation


def test_a_re_created_name_gets_a_new_uid(store):
    first = store.create_user("alice", "pw").uid
    store.delete_user("alice")
    second = store.create_user("alice", "pw").uid
    assert first > 0 and second > first


def test_the_highest_uid_is_not_reused_after_its_account_is_deleted(store):
    store.create_user("alice", "pw")
    bob = store.create_user("bob", "pw").uid
    store.delete_user("bob")
    assert store.create_user("carol", "pw").uid > bob


@pytest.mark.parametrize("change", ["passwd", "disable", "delete", "re-create"])
def test_a_login_stops_being_valid_when_the_account_changes(store, change):
    store.create_user("alice", "pw")
    info = store.verify_password("alice", "pw")
    assert store.login_valid("alice", info.uid, info.generation)
    if change == "passwd":
        store.set_password("alice", "new")
    elif change == "disable":
        store.set_disabled("alice", True)
    elif change == "delete":
        store.delete_user("alice")
    else:
        store.delete_user("alice")
        store.create_user("alice", "pw")
    assert not store.login_valid("alice", info.uid, info.generation)


def test_a_quota_change_leaves_logins_valid(store):
    info = store.create_user("alice", "pw")
    store.set_quota("alice", 5)
    assert store.login_valid("alice", info.uid, info.generation)


# Local only: generations count from 1 there (the object backend's is a checksum).
@local_only
def test_a_token_login_carries_the_stamp_of_the_account(store):
    info = store.create_user("alice", "pw")
    token = store.issue_token("alice")
    assert stamp(store, "alice") == (store.verify_token(token).uid,
                                     store.verify_token(token).generation) == (info.uid, 1)


def test_a_re_created_name_inherits_no_partial_and_no_token(store):
    store.create_user("alice", "pw", quota=1000)
    token = store.issue_token("alice")
    upload = store.begin_upload("alice", "/half.bin", 100, None)
    upload.write(b"x" * 10)
    upload.release()
    store.delete_user("alice")
    store.create_user("alice", "pw", quota=1000)
    assert store.list_uploads("alice") == []
    assert store.usage("alice").reserved == 0
    with pytest.raises(AuthFailed):
        store.verify_token(token)


def test_the_cli_changes_end_logins(tmp_path):
    """``ftpd user passwd`` and ``disable`` (another process) end a login's validity."""
    root = tmp_path / "data"
    with Store(root, scrypt_n=16) as s:
        info = s.create_user("alice", "pw")
    base = ["--root", str(root), "--scrypt-n", "16"]
    for argv, stdin in ((["passwd", "alice", "--password-stdin"], "new\n"),
                        (["disable", "alice"], "")):
        done = subprocess.run([sys.executable, "-m", "ftpd.cli", "user", *argv, *base],
                              input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 0, done.stderr
    with Store(root, scrypt_n=16) as s:
        assert not s.login_valid("alice", info.uid, info.generation)
        assert s.get_user("alice").generation == info.generation + 2


def test_an_old_data_root_is_upgraded_with_its_users_and_tokens(tmp_path):
    """A version-1 catalogue gets uids and generations and keeps working."""
    root = tmp_path / "old"
    root.mkdir()
    for sub in ("homes/alice", "staging/alice"):
        (root / sub).mkdir(parents=True)
    pwhash = PasswordHasher(ScryptParams(16, 8, 1)).hash("pw")
    with sqlite3.connect(root / "users.db") as conn:
        for statement in _SCHEMA_V1.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO users (name, pwhash, quota, used, created, disabled) "
                     "VALUES ('alice', ?, 100, 7, 1.0, 0)", (pwhash,))
        conn.execute("PRAGMA user_version=1")
    with Store(root, scrypt_n=16) as s:
        info = s.verify_password("alice", "pw")
        assert (info.uid, info.generation, info.used) == (1, 1, 7)
        token = s.issue_token("alice")
        assert s.verify_token(token).name == "alice"
        assert s.create_user("bob", "pw").uid == 2


class _Recorder:
    """Wraps a hasher's scrypt to record the parameters of every call."""

    def __init__(self, store: Store) -> None:
        self.seen: list[ScryptParams] = []
        hasher = store._hasher
        real = hasher._scrypt

        def scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
            self.seen.append(params)
            return real(password, salt, params)

        hasher._scrypt = scrypt            # type: ignore[method-assign]


def test_unknown_names_cost_the_parameters_of_the_stored_hashes(tmp_path):
    """After scrypt_n is raised, existing hashes keep n = 16; an unknown name must be
    checked with n = 16 too, not with the new setting (that took 5x longer)."""
    root = tmp_path / "r"
    with Store(root, scrypt_n=16) as s:
        for name in ("alice", "bob", "carol"):
            s.create_user(name, "pw")
    with Store(root, scrypt_n=64) as s:
        s.create_user("dave", "pw")               # one hash with the new setting
        rec = _Recorder(s)
        for name in ("alice", "nosuchuser"):
            with pytest.raises(AuthFailed):
                s.verify_password(name, "wrong")
        assert [p.n for p in rec.seen] == [16, 16]


# Local only: the stand-in hash of the local accounts.
@local_only
def test_registering_a_taken_name_costs_one_scrypt_like_a_free_one(store):
    store.create_user("alice", "pw")
    before = store.hash_calls
    with pytest.raises(UserExists):
        store.create_user("alice", "other")
    assert store.hash_calls == before + 1
    store.create_user("bob", "pw")
    assert store.hash_calls == before + 2


def test_a_stale_hash_count_is_refreshed(tmp_path):
    """The most common parameters are recounted, so a mass password change shows."""
    root = tmp_path / "r"
    now = [1000.0]
    with Store(root, scrypt_n=16, clock=lambda: now[0]) as s:
        s.create_user("alice", "pw")
        rec = _Recorder(s)
        with pytest.raises(AuthFailed):
            s.verify_password("ghost", "x")
        with Store(root, scrypt_n=32) as other:   # another process re-hashes alice
            other.set_password("alice", "new")
        now[0] += PROBE_PARAMS_TTL + 1
        with pytest.raises(AuthFailed):
            s.verify_password("ghost", "x")
        assert [p.n for p in rec.seen] == [16, 32]
