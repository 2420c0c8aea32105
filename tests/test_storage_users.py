"""Accounts: passwords, tokens, quotas and the catalogue's on-disk format.

Run on both backends (tests/storage_backends.py); the catalogue's on-disk
format (SQLite, folders) is the local backend's alone.
"""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from storage import (
    AccountDisabled,
    AuthFailed,
    BadPassword,
    BadUsername,
    NoSuchUser,
    Store,
    UserExists,
)
from storage.db import SCHEMA_VERSION
from storage.errors import StorageIOError
from tests.storage_backends import local_only


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make_store, clock):
    return make_store(scrypt_n=2**4, clock=clock, default_quota=10_000)


# Local only: the home and staging folders on disk.
@local_only
def test_create_user_makes_home_and_staging_and_returns_info(store, tmp_path, clock):
    info = store.create_user("alice", "secret", quota=5000)
    assert (info.name, info.quota, info.used, info.created, info.disabled) == (
        "alice", 5000, 0, clock.now, False)
    assert (tmp_path / "root" / "homes" / "alice").is_dir()
    assert (tmp_path / "root" / "staging" / "alice").is_dir()


def test_create_user_uses_default_quota(store):
    assert store.create_user("bob", "pw").quota == 10_000


def test_duplicate_user_is_refused(store):
    store.create_user("alice", "pw")
    with pytest.raises(UserExists):
        store.create_user("alice", "other")


@pytest.mark.parametrize("name", ["", "Alice", "-a", ".a", "..", "a/b", "a b", "a" * 33,
                                  "alice\n", "é", "a\x00", None, 5])
def test_bad_user_names_are_refused(store, name):
    with pytest.raises(BadUsername):
        store.create_user(name, "pw")


@pytest.mark.parametrize("name", ["a", "0", "a" * 32, "alice.b-c_d", "9lives"])
def test_good_user_names_are_accepted(store, name):
    assert store.create_user(name, "pw").name == name


@pytest.mark.parametrize("password", ["", "x" * 1025, None, "bad\udc80"])
def test_bad_passwords_are_refused(store, password):
    with pytest.raises(BadPassword):
        store.create_user("alice", password)


def test_longest_password_is_accepted(store):
    store.create_user("alice", "x" * 1024)
    assert store.verify_password("alice", "x" * 1024).name == "alice"


def test_verify_password_accepts_the_right_password(store):
    store.create_user("alice", "secret")
    assert store.verify_password("alice", "secret").name == "alice"


def test_wrong_password_and_unknown_user_fail_identically_with_one_hash_each(store):
    store.create_user("alice", "secret")
    failures = []
    for name, password in [("alice", "wrong"), ("nobody", "secret"), ("Bad Name!", "x"),
                           ("alice", "")]:
        before = store.hash_calls
        with pytest.raises(AuthFailed) as info:
            store.verify_password(name, password)
        assert store.hash_calls == before + 1
        failures.append((type(info.value), info.value.message, info.value.details))
    assert len(set(map(repr, failures))) == 1


def test_disabled_account_is_reported_only_after_the_right_password(store):
    store.create_user("alice", "secret")
    store.set_disabled("alice", True)
    with pytest.raises(AuthFailed):
        store.verify_password("alice", "wrong")
    with pytest.raises(AccountDisabled):
        store.verify_password("alice", "secret")
    store.set_disabled("alice", False)
    assert store.verify_password("alice", "secret").disabled is False


def test_hash_calls_count_is_exact_across_threads(store):
    store.create_user("alice", "secret")
    before = store.hash_calls

    def login() -> None:
        for _ in range(5):
            try:
                store.verify_password("alice", "wrong")
            except AuthFailed:
                pass

    threads = [threading.Thread(target=login) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.hash_calls == before + 20


# Local only: reads the SQLite catalogue.
@local_only
def test_stored_hash_records_its_parameters_and_a_per_user_salt(store, tmp_path):
    store.create_user("alice", "same")
    store.create_user("bob", "same")
    with sqlite3.connect(tmp_path / "root" / "users.db") as conn:
        hashes = dict(conn.execute("SELECT name, pwhash FROM users"))
    a, b = hashes["alice"].split("$"), hashes["bob"].split("$")
    assert a[:4] == ["scrypt", "16", "8", "1"]
    assert a[4] != b[4] and a[5] != b[5]
    assert "same" not in hashes["alice"]


def test_hashes_made_with_other_parameters_still_verify(make_store):
    with make_store(scrypt_n=2**4) as old:
        old.create_user("alice", "secret")
    with make_store(scrypt_n=2**5, scrypt_r=4) as new:
        assert new.verify_password("alice", "secret").name == "alice"


@pytest.mark.parametrize("n", [0, 1, 3, 24])
def test_scrypt_n_must_be_a_power_of_two_above_one(make_store, n):
    with pytest.raises(ValueError):
        make_store(scrypt_n=n)


def test_default_scrypt_parameters_work(make_store):
    with make_store() as s:
        s.create_user("alice", "secret")
        assert s.verify_password("alice", "secret").name == "alice"


def test_set_password_replaces_the_old_one(store):
    store.create_user("alice", "old")
    store.set_password("alice", "new")
    assert store.verify_password("alice", "new").name == "alice"
    with pytest.raises(AuthFailed):
        store.verify_password("alice", "old")


def test_set_password_revokes_tokens(store):
    store.create_user("alice", "old")
    token = store.issue_token("alice")
    store.set_password("alice", "new")
    with pytest.raises(AuthFailed):
        store.verify_token(token)


def test_set_password_checks_user_and_password(store):
    with pytest.raises(NoSuchUser):
        store.set_password("ghost", "pw")
    store.create_user("alice", "pw")
    with pytest.raises(BadPassword):
        store.set_password("alice", "")


def test_set_quota_changes_the_limit(store):
    store.create_user("alice", "pw", quota=10)
    store.set_quota("alice", 1 << 40)
    assert store.get_user("alice").quota == 1 << 40
    assert store.usage("alice").limit == 1 << 40


@pytest.mark.parametrize("quota", [-1, 1.5, "10", True])
def test_set_quota_refuses_junk(store, quota):
    store.create_user("alice", "pw")
    with pytest.raises(ValueError):
        store.set_quota("alice", quota)


def test_admin_calls_on_unknown_users_raise_no_such_user(store):
    for call in (lambda: store.set_quota("ghost", 1), lambda: store.set_disabled("ghost", True),
                 lambda: store.delete_user("ghost"), lambda: store.usage("ghost"),
                 lambda: store.issue_token("ghost")):
        with pytest.raises(NoSuchUser):
            call()


def test_get_user_returns_none_for_unknown_or_invalid_names(store):
    assert store.get_user("ghost") is None
    assert store.get_user("../etc") is None


def test_list_users_is_sorted(store):
    for name in ("carol", "alice", "bob"):
        store.create_user(name, "pw")
    assert [u.name for u in store.list_users()] == ["alice", "bob", "carol"]


def test_delete_user_removes_row_home_partials_and_tokens(store, backend, tmp_path):
    store.create_user("alice", "pw")
    store.mkdir("alice", "/docs")
    up = store.begin_upload("alice", "/docs/f", 10, None)
    up.write(b"12345")
    token = store.issue_token("alice")
    store.delete_user("alice")
    assert store.get_user("alice") is None
    if backend == "local":          # the object backend has no folders of its own
        assert not (tmp_path / "root" / "homes" / "alice").exists()
        assert not (tmp_path / "root" / "staging" / "alice").exists()
    assert not up.active
    with pytest.raises(AuthFailed):
        store.verify_token(token)
    with pytest.raises(AuthFailed):
        store.verify_password("alice", "pw")
    # A new account with the same name starts empty.
    store.create_user("alice", "pw")
    assert store.list_dir("alice", "/") == []
    assert store.list_uploads("alice") == []
    assert store.usage("alice").used == 0


# Local only: a symbolic link planted in a home on disk.
@local_only
def test_delete_user_does_not_follow_symlinks(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    store.create_user("alice", "pw")
    os.symlink(outside, tmp_path / "root" / "homes" / "alice" / "link")
    store.delete_user("alice")
    assert (outside / "keep").read_text() == "x"


def test_token_round_trip(store):
    store.create_user("alice", "pw")
    token = store.issue_token("alice")
    assert isinstance(token, str) and len(token) >= 40
    assert store.verify_token(token).name == "alice"


# Local only: reads the SQLite files.
@local_only
def test_token_is_not_stored_in_clear(store, tmp_path):
    store.create_user("alice", "pw")
    token = store.issue_token("alice")
    store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "root").glob("users.db*"))
    assert token.encode() not in raw


def test_expired_token_is_refused(store, clock):
    store.create_user("alice", "pw")
    token = store.issue_token("alice", ttl=60)
    clock.now += 59
    assert store.verify_token(token).name == "alice"
    clock.now += 2
    with pytest.raises(AuthFailed):
        store.verify_token(token)


def test_revoked_token_is_refused(store):
    store.create_user("alice", "pw")
    token = store.issue_token("alice")
    store.revoke_token(token)
    with pytest.raises(AuthFailed):
        store.verify_token(token)
    store.revoke_token(token)  # idempotent


@pytest.mark.parametrize("token", ["", "nonsense", None, 42, "x\udc80"])
def test_unknown_tokens_are_refused(store, token):
    with pytest.raises(AuthFailed):
        store.verify_token(token)


def test_token_of_disabled_user_is_refused(store):
    store.create_user("alice", "pw")
    token = store.issue_token("alice")
    store.set_disabled("alice", True)
    with pytest.raises(AuthFailed):
        store.verify_token(token)
    with pytest.raises(AccountDisabled):
        store.issue_token("alice")


def test_token_of_deleted_user_is_refused(store):
    store.create_user("alice", "pw")
    token = store.issue_token("alice")
    store.delete_user("alice")
    store.create_user("alice", "pw")  # same name, new account
    with pytest.raises(AuthFailed):
        store.verify_token(token)


# Local only: SQLite's journal mode and version.
@local_only
def test_database_is_in_wal_mode_with_schema_version(store, tmp_path):
    with sqlite3.connect(tmp_path / "root" / "users.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_database_from_a_newer_version_is_refused(tmp_path):
    Store(tmp_path / "r", scrypt_n=2**4).close()
    with sqlite3.connect(tmp_path / "r" / "users.db") as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StorageIOError):
        Store(tmp_path / "r", scrypt_n=2**4)


def test_users_survive_reopening(make_store):
    with make_store(scrypt_n=2**4) as s:
        s.create_user("alice", "pw", quota=123)
    with make_store(scrypt_n=2**4) as s:
        assert s.get_user("alice").quota == 123
        assert s.verify_password("alice", "pw").name == "alice"


def test_store_is_usable_from_many_threads(store):
    errors = []

    def work(i: int) -> None:
        try:
            store.create_user(f"user{i}", "pw")
            token = store.issue_token(f"user{i}")
            assert store.verify_token(token).name == f"user{i}"
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_users()) == 8


def test_closed_store_refuses_work(store):
    store.close()
    with pytest.raises(StorageIOError):
        store.get_user("alice")
    store.close()  # idempotent
