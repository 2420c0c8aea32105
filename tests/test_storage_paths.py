"""Path normalisation: every rejected form and the normal forms (on both backends)."""

from __future__ import annotations

import pytest

from storage import BadPath, BadUsername


@pytest.fixture
def store(make_store):
    s = make_store(scrypt_n=2**4)
    s.create_user("alice", "pw")
    return s


@pytest.mark.parametrize(("path", "cwd", "expected"), [
    ("", "/", "/"),
    (".", "/", "/"),
    ("/", "/docs", "/"),
    ("a", "/", "/a"),
    ("a", "/docs", "/docs/a"),
    ("/a", "/docs", "/a"),
    ("a//b/./c/", "/", "/a/b/c"),
    ("//a", "/", "/a"),
    ("a/../b", "/", "/b"),
    ("..", "/docs", "/"),
    ("../x", "/docs/sub", "/docs/x"),
    ("~", "/", "/~"),
    ("...", "/", "/..."),
    ("a" * 255, "/", "/" + "a" * 255),
    ("é" * 127, "/", "/" + "é" * 127),  # 254 bytes
    ("日本/語", "/", "/日本/語"),
    ("x", "docs", "/docs/x"),  # a relative cwd is taken from the root
])
def test_resolve_normalises(store, path, cwd, expected):
    assert store.resolve("alice", path, cwd) == expected


@pytest.mark.parametrize(("path", "cwd"), [
    ("..", "/"),
    ("/..", "/"),
    ("../etc/passwd", "/"),
    ("/../../etc", "/"),
    ("a/../../b", "/"),
    ("../../..", "/docs"),
    ("x", "/.."),
    ("/./../x", "/"),
])
def test_resolve_refuses_escaping_the_home(store, path, cwd):
    with pytest.raises(BadPath):
        store.resolve("alice", path, cwd)


@pytest.mark.parametrize("path", [
    "a\x00b",
    "\x00",
    "a\\b",
    "..\\..\\etc",
    "C:\\Windows",
    "a\nb",
    "a\rb",
    "a\tb",
    "\x1b[31m",
    "a\x7fb",
    "a\udc80b",          # lone surrogate (surrogateescape of a non-UTF-8 byte)
    "\ud800",
    "a" * 256,           # component > 255 bytes
    "é" * 128,           # 256 bytes in UTF-8
    "/".join(["abcdefg"] * 520),   # > 4096 bytes
    None,
    b"/bytes",
    42,
])
def test_resolve_refuses_malformed_paths(store, path):
    with pytest.raises(BadPath):
        store.resolve("alice", path)


def test_resolve_refuses_result_longer_than_4096_bytes(store):
    cwd = "/" + "/".join(["d" * 200] * 20)   # 4020 bytes
    with pytest.raises(BadPath):
        store.resolve("alice", "x" * 100, cwd)


@pytest.mark.parametrize("cwd", ["/a\x00", None, "/a\\b"])
def test_resolve_refuses_malformed_cwd(store, cwd):
    with pytest.raises(BadPath):
        store.resolve("alice", "x", cwd)


def test_resolve_validates_the_user_name(store):
    with pytest.raises(BadUsername):
        store.resolve("../alice", "x")


@pytest.mark.parametrize("call", ["list_dir", "stat", "is_dir", "mkdir", "rmdir", "remove",
                                  "open_read", "file_hash", "cached_hash", "abort_upload"])
def test_every_path_operation_rejects_bad_paths(store, call):
    for bad in ("../x", "a\x00", "a\\b"):
        with pytest.raises(BadPath):
            getattr(store, call)("alice", bad)


def test_rename_and_begin_upload_reject_bad_paths(store):
    store.begin_upload("alice", "/ok", 1, None).release()
    with pytest.raises(BadPath):
        store.rename("alice", "../x", "/y")
    with pytest.raises(BadPath):
        store.rename("alice", "/ok", "../y")
    with pytest.raises(BadPath):
        store.begin_upload("alice", "../x", 1, None)
