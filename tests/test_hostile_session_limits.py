"""Logins that end and logins that are limited (issue 13, items 6 and 16).

Against a real daemon subprocess; the administrator's changes are made through a
second ``Store`` on the same data folder, exactly what ``ftpd user`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import protocol.messages as m
from tests.wire import Closed, Wire


def _passwd(store: Any) -> None:
    store.set_password("alice", "new password")


def _disable(store: Any) -> None:
    store.set_disabled("alice", True)


def _delete_and_add_again(store: Any) -> None:
    store.delete_user("alice")
    store.create_user("alice", "pw")


REVOCATIONS: dict[str, Callable[[Any], None]] = {
    "passwd": _passwd, "disable": _disable, "del+add": _delete_and_add_again}


def _revoke(server: Any, how: str) -> None:
    store = server.store()
    try:
        REVOCATIONS[how](store)
    finally:
        store.close()


def _ended_with_login_revoked(wire: Wire) -> bool:
    """The next frame is an error LOGIN_REVOKED without id, then the connection ends."""
    wire.sock.settimeout(10)
    reply = wire.recv_reply()
    assert isinstance(reply, m.ErrorReply) and reply.id is None, reply
    assert reply.code == "LOGIN_REVOKED", reply
    return wire.closed_by_peer()


@pytest.mark.parametrize("how", list(REVOCATIONS))
def test_revocation_ends_an_idle_session(server, how):
    server.add_user("alice", "pw")
    with Wire(server.host, server.port).logged_in("alice", "pw") as w:
        assert isinstance(w.call(m.Ping(id=w.next_id(), payload="x")), m.Pong)
        _revoke(server, how)
        assert _ended_with_login_revoked(w)     # without sending anything


@pytest.mark.parametrize("how", list(REVOCATIONS))
def test_revocation_ends_a_session_mid_upload_without_committing(server, how):
    server.add_user("alice", "pw")
    data = b"u" * 4096
    with Wire(server.host, server.port).logged_in("alice", "pw") as w:
        assert isinstance(w.put("/up.bin", data, stop_at=1000), m.PutReady)
        _revoke(server, how)
        assert _ended_with_login_revoked(w)     # no put.done came first
    assert not (server.root / "homes" / "alice" / "up.bin").exists()
    if how != "del+add":
        # The partial stays resumable by the next valid login.
        with Wire(server.host, server.port) as w:
            if how == "disable":
                store = server.store()
                store.set_disabled("alice", False)
                store.close()
            password = "new password" if how == "passwd" else "pw"
            w.logged_in("alice", password)
            done = w.put("/up.bin", data)
            assert isinstance(done, m.PutDone) and done.size == len(data)


def test_a_session_of_a_deleted_name_never_reads_the_new_owners_files(server):
    server.add_user("alice", "pw")
    with Wire(server.host, server.port).logged_in("alice", "pw") as old:
        _revoke(server, "del+add")
        with Wire(server.host, server.port).logged_in("alice", "pw") as new:
            assert isinstance(new.put("/secret.txt", b"the new owner's"), m.PutDone)
        # Whether the sweep or the request finds it first, the old session gets no file.
        try:
            old.send(m.Get(id=old.next_id(), path="/secret.txt"))
            reply = old.recv_reply()
        except (Closed, ConnectionError):
            return
        assert isinstance(reply, m.ErrorReply) and reply.code == "LOGIN_REVOKED", reply
        assert old.closed_by_peer()


def test_a_request_after_revocation_is_answered_login_revoked(server):
    server.add_user("alice", "pw")
    with Wire(server.host, server.port).logged_in("alice", "pw") as w:
        _revoke(server, "passwd")
        w.send(m.Ls(id=w.next_id(), path="/"))
        assert _ended_with_login_revoked(w)


# ---------------------------------------------------------------- item 16


def test_one_user_holding_sessions_cannot_lock_others_out(server_factory):
    server = server_factory(max_connections_per_user=3)
    server.add_user("hoarder", "pw")
    server.add_user("bob", "pw")
    held = [Wire(server.host, server.port).logged_in("hoarder", "pw") for _ in range(3)]
    try:
        with Wire(server.host, server.port) as extra:
            reply = extra.login("hoarder", "pw")
            assert isinstance(reply, m.ErrorReply) and reply.code == "TOO_MANY_CONNECTIONS"
            assert extra.closed_by_peer()
        with Wire(server.host, server.port).logged_in("bob", "pw") as bob:
            assert isinstance(bob.call(m.Ls(id=bob.next_id(), path="/")), m.LsOk)
        # A logout and a closed connection each give a slot back.
        assert isinstance(held[0].call(m.Logout(id=held[0].next_id())), m.LogoutOk)
        held[1].close()
        again = [Wire(server.host, server.port).logged_in("hoarder", "pw") for _ in range(2)]
        for w in again:
            w.close()
    finally:
        for w in held:
            w.close()


def test_a_token_login_counts_against_the_same_limit(server_factory):
    server = server_factory(max_connections_per_user=1)
    server.add_user("carol", "pw")
    with Wire(server.host, server.port) as first:
        token = first.login("carol", "pw", want_token=True).token
        with Wire(server.host, server.port) as second:
            reply = second.call(m.Login(id=second.next_id(), token=token))
            assert isinstance(reply, m.ErrorReply) and reply.code == "TOO_MANY_CONNECTIONS"
