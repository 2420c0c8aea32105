"""Deep paths (issue 13, item 1, storage part): the confined walk is linear, path depth is
capped, and a session's working folder can be held open (``Store.open_workdir``).

Local backend only: the confined walk of folders on disk and held descriptors.
"""

from __future__ import annotations

import os

import pytest

import storage.confine as confine
from storage import BadPath, Exists, NotFound, Store
from storage.paths import MAX_DEPTH
from storage.workdir import WorkDir
from tests.wire import Wire


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "root", scrypt_n=2**4)
    s.create_user("alice", "pw")
    s.create_user("bob", "pw")
    yield s
    s.close()


def deep(levels: int) -> str:
    return "/" + "/".join(f"d{i}" for i in range(levels))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_walk_builds_no_path_strings_unless_it_fails(store, monkeypatch):
    """The walk used to join the user path of every prefix (quadratic in the depth); now
    it builds one only for an error message."""
    store.mkdir("alice", deep(MAX_DEPTH), parents=True)
    joined = []
    real = confine.join_user_path
    monkeypatch.setattr(confine, "join_user_path", lambda parts: joined.append(parts) or
                        real(parts))
    store.stat("alice", deep(MAX_DEPTH) + "/..")
    store.list_dir("alice", deep(MAX_DEPTH))
    assert joined == []
    with pytest.raises(NotFound) as info:
        store.stat("alice", deep(10) + "/nope/x")
    assert info.value.details["path"] == deep(10) + "/nope"


def test_paths_deeper_than_the_cap_are_bad_path(store):
    store.mkdir("alice", deep(MAX_DEPTH), parents=True)
    for call in (lambda p: store.mkdir("alice", p, parents=True),
                 lambda p: store.stat("alice", p), lambda p: store.resolve("alice", p)):
        with pytest.raises(BadPath, match=f"deeper than {MAX_DEPTH}"):
            call(deep(MAX_DEPTH + 1))
    assert store.stat("alice", deep(MAX_DEPTH)).type == "dir"
    assert store.resolve("alice", deep(MAX_DEPTH + 1) + "/..") == deep(MAX_DEPTH)


def test_a_2048_level_mkdir_is_refused_over_the_wire(server):
    """The issue's attack, through the daemon: mkdir -p of 2,047 levels is BAD_PATH."""
    import protocol.messages as m
    server.add_user("alice", "pw")
    with Wire(server.host, server.port) as wire:
        wire.logged_in("alice", "pw")
        reply = wire.call(m.Mkdir(id=5, path="a/" * 2047, parents=True))
        assert reply.code == "BAD_PATH" and "deeper" in reply.message
        assert wire.call(m.Ping(id=6, payload="x")).type == "ping"


def test_a_working_folder_resolves_paths_below_it_without_walking_from_home(store,
                                                                           monkeypatch):
    store.mkdir("alice", deep(40) + "/sub", parents=True)
    with store.open_workdir("alice", deep(40)) as wd:
        assert isinstance(wd, str) and wd == deep(40) and type(wd.path) is str
        homes = []
        real = store._ctx.home_fd
        monkeypatch.setattr(store._ctx, "home_fd", lambda u: homes.append(u) or real(u))
        assert store.stat("alice", "sub", wd).path == deep(40) + "/sub"
        assert [e.name for e in store.list_dir("alice", ".", wd)] == ["sub"]
        assert store.mkdir("alice", "sub/new", wd) == deep(40) + "/sub/new"
        assert homes == []
        assert store.stat("alice", "..", wd).path == deep(39)        # leaves it: from home
        assert homes == ["alice"]
        with pytest.raises(Exists):
            store.mkdir("alice", ".", wd)


def test_a_working_folder_follows_its_folder_when_it_is_moved(store):
    """Like a process's working directory: the descriptor follows the folder."""
    store.mkdir("alice", "/a/b", parents=True)
    with store.open_workdir("alice", "/a/b") as wd:
        store.rename("alice", "/a", "/z")
        assert store.mkdir("alice", "made", wd) == "/a/b/made"       # stale name ...
        assert store.stat("alice", "/z/b/made").type == "dir"       # ... real place
        store.rmdir("alice", "/z/b/made")
        store.rmdir("alice", "/z/b")
        with pytest.raises(NotFound):
            store.mkdir("alice", "again", wd)


def test_a_working_folder_never_leaves_the_home(store):
    store.mkdir("alice", "/a", parents=True)
    with store.open_workdir("alice", "/a") as wd:
        with pytest.raises(BadPath):
            store.stat("alice", "../..", wd)
        with pytest.raises(BadPath):
            store.open_workdir("alice", "../..", wd)


def test_another_users_working_folder_is_not_used(store):
    store.mkdir("alice", "/a", parents=True)
    store.mkdir("bob", "/a", parents=True)
    store.mkdir("bob", "/a/bobs", parents=True)
    with store.open_workdir("bob", "/a") as bobs:
        assert [e.name for e in store.list_dir("alice", ".", bobs)] == []


def test_a_closed_working_folder_falls_back_to_the_home_walk(store):
    store.mkdir("alice", "/a/b", parents=True)
    wd = store.open_workdir("alice", "/a")
    wd.close()
    wd.close()
    assert wd.closed and store.stat("alice", "b", wd).path == "/a/b"


def test_working_folders_hold_one_descriptor_until_closed(store):
    store.mkdir("alice", "/a", parents=True)
    baseline = fd_count()
    held = [store.open_workdir("alice", "/a") for _ in range(20)]
    assert fd_count() == baseline + 20
    for wd in held:
        wd.close()
    assert fd_count() == baseline


def test_a_working_folder_is_refused_for_missing_folders(store):
    store.mkdir("alice", "/a", parents=True)
    with pytest.raises(NotFound):
        store.open_workdir("alice", "/nope")
    assert isinstance(store.open_workdir("alice", "/"), WorkDir)
