"""Path attacks: every command that takes a path, fed every kind of hostile path.

Kinds: ``..`` escapes, absolute paths, NUL and control characters, overlong names
(> 255 bytes) and paths (> 4096 bytes and > 4096 characters), backslashes,
Unicode look-alikes of "." and "/", and symbolic links planted inside the home
that point at a file and at a folder outside it (absolute and relative targets,
dangling, looping, into another user's home).

Escapes, bad bytes, overlong names and symlinks must be refused with an error;
absolute paths and look-alikes are legal names *inside* the home, so they may
succeed, but only inside.  Around the whole run a sentinel folder outside the
home, the other user's home and staging area, and the planted links themselves
are snapshotted (names, sizes, mtimes, contents): nothing outside may be read,
created, changed or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from protocol import encode_control
from tests.test_hostile_support import tree_snapshot
from tests.wire import Wire

USER, PASSWORD = "alice", "pw-alice"
OTHER, OTHER_PW = "bob", "pw-bob"
SECRET = b"top secret, outside every home\n" * 255 + b"!"       # 7906 bytes: a unique size


def build_world(daemon: Any, tmp_path: Path) -> dict[str, Any]:
    daemon.add_user(USER, PASSWORD)
    daemon.add_user(OTHER, OTHER_PW)
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "secret.txt").write_bytes(SECRET)
    (sentinel / "sub" / "deep.txt").write_bytes(b"deep secret")
    home = daemon.root / "homes" / USER
    bob_home = daemon.root / "homes" / OTHER
    (bob_home / "bobfile.txt").write_bytes(b"bob's own")
    (home / "sub").mkdir()
    (home / "victim.txt").write_bytes(b"victim")
    links = {
        "ln_file_abs": str(sentinel / "secret.txt"),
        "ln_file_rel": "../../../sentinel/secret.txt",
        "ln_dir_abs": str(sentinel),
        "ln_dir_rel": "../../../sentinel",
        "ln_bob": "../" + OTHER,
        "ln_dangling": str(sentinel / "not-yet-there"),
        "ln_loop": "ln_loop",
        "sub/ln_up": "../../../../sentinel",
    }
    for name, target in links.items():
        os.symlink(target, home / name)
    assert (home / "ln_file_rel").read_bytes() == SECRET       # the links really lead out
    assert (home / "sub" / "ln_up" / "secret.txt").read_bytes() == SECRET
    watched = {"sentinel": sentinel, "bob home": bob_home,
               "bob staging": daemon.root / "staging" / OTHER}
    return {"home": home, "links": links, "watched": watched}


ESCAPES = ["..", "../..", "../" + OTHER, f"../{OTHER}/bobfile.txt", "/..", "/../../etc/passwd",
           "sub/../..", f"sub/../../{OTHER}", "./../x", "a/b/../../..", "../" * 20 + "etc",
           "sub/./../../sentinel"]
ESCAPES_FROM_SUB = ["../..", f"../../{OTHER}", f"../../{OTHER}/bobfile.txt", "../../../sentinel",
                    "./../../x", "../" * 20 + "etc", "/..", "ln_up/../../..", "../sub/../.."]
BAD_BYTES = ["a\x00b", "\x00", "victim.txt\x00.jpg", "sub/\x00/x", "a\nb", "\x1b[31m", "x\x7f",
             "..\\..\\etc\\passwd", "sub\\..\\..", "\\", "a" * 256, "\u00e9" * 128,
             "sub/" + "b" * 300, ("\u00e9" * 200 + "/") * 11]          # 4411 bytes, 2211 chars
TOO_MANY_CHARS = [("d" * 200 + "/") * 21]                            # 4221 characters
SYMLINKS = ["ln_file_abs", "ln_file_rel", "ln_dir_abs", "ln_dir_rel", "ln_dir_abs/secret.txt",
            "ln_dir_rel/secret.txt", "ln_dir_abs/newfile", "ln_dir_abs/sub", "ln_dir_abs/sub/x",
            "ln_bob/bobfile.txt", "ln_bob", "ln_bob/new", "ln_dangling", "ln_loop",
            "ln_loop/x", "sub/ln_up", "sub/ln_up/secret.txt", "/sub/ln_up/sub/deep.txt",
            "/ln_file_abs", "sub/../ln_dir_abs/secret.txt"]
#: The paths above whose last component is a link (stat and rm act on the link itself).
FINAL_LINKS = {"ln_file_abs", "ln_file_rel", "ln_dir_abs", "ln_dir_rel", "ln_bob", "ln_dangling",
               "ln_loop", "sub/ln_up"}
ABSOLUTE = ["/etc/passwd", "//etc//passwd", "/", "/victim.txt", "/tmp/../etc"]
LOOKALIKES = ["\u2025", "\uff0f", "\u2024\u2024", "\u2024\u2024/\u2024\u2024/etc",
              "\uff0e\uff0e", "\uff0e\uff0e\uff0fetc", "..\u2215..\u2215etc",
              "\u2215etc\u2215passwd", "\u200b..", "..\u200b", "\u2024\u2024\uff0f\u2024\u2024"]


def requests_for(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every command that takes a path, with ``path`` in each path slot (wire form, so that
    paths the client library would refuse to encode still reach the daemon)."""
    return [
        ("get", {"cmd": "get", "path": path}),
        ("put", {"cmd": "put", "path": path, "size": 5}),
        ("put overwrite", {"cmd": "put", "path": path, "size": 5, "overwrite": True}),
        ("ls", {"cmd": "ls", "path": path}),
        ("stat", {"cmd": "stat", "path": path}),
        ("cd", {"cmd": "cd", "path": path}),
        ("mkdir", {"cmd": "mkdir", "path": path}),
        ("mkdir parents", {"cmd": "mkdir", "path": path, "parents": True}),
        ("rmdir", {"cmd": "rmdir", "path": path}),
        ("rm", {"cmd": "rm", "path": path}),
        ("mv src", {"cmd": "mv", "src": path, "dst": "/moved-here"}),
        ("mv dst", {"cmd": "mv", "src": "/victim.txt", "dst": path}),
        ("mv dst overwrite", {"cmd": "mv", "src": "/victim.txt", "dst": path, "overwrite": True}),
        ("hash", {"cmd": "hash", "path": path}),
        ("abort", {"cmd": "abort", "path": path}),
    ]


class Session:
    """One logged-in connection that runs a request and undoes what a success changed,
    so every request meets the same home."""

    def __init__(self, wire: Wire, home: Path, links: dict[str, str] | None = None) -> None:
        self.wire = wire
        self.home = home
        self.links = links or {}
        self.leaks: list[str] = []

    def run(self, request: dict[str, Any], cwd: str) -> Any:
        wire = self.wire
        assert isinstance(wire.call(m.Cd(id=wire.next_id(), path=cwd)), m.CdOk)
        wire.send_raw(encode_control(json.dumps({**request, "id": wire.next_id()}).encode()))
        reply = wire.recv_reply()
        shown = repr(request.get("path", request.get("src")))
        if isinstance(reply, m.GetReady):
            data = b""
            while isinstance(event := wire.recv(), bytes):
                data += event
            if data == SECRET or reply.size == len(SECRET):
                self.leaks.append(f"get {shown} read the secret")
        elif isinstance(reply, m.PutReady):
            wire.send_data(b"12345")
            reply = wire.recv_reply()
            assert isinstance(reply, m.PutDone), reply
            self.inside(reply.path, "file")
        elif isinstance(reply, m.MkdirOk):
            self.inside(reply.path, "dir")
        elif isinstance(reply, m.MvOk):
            self.inside(reply.dst, None)
            assert isinstance(wire.call(m.Mv(id=wire.next_id(), src=reply.dst, dst=reply.src)),
                              m.MvOk)
        elif isinstance(reply, m.HashOk) and reply.sha256 == hashlib.sha256(SECRET).hexdigest():
            self.leaks.append(f"hash {shown} read the secret")
        elif isinstance(reply, m.StatOk) and reply.entry.size == len(SECRET):
            self.leaks.append(f"stat {shown} saw the secret")
        elif isinstance(reply, m.StatOk) and reply.path.lstrip("/") in self.links:
            assert reply.entry.type == "other", reply      # the link's own entry
        elif isinstance(reply, m.RmOk) and reply.path.lstrip("/") in self.links:
            name = reply.path.lstrip("/")                  # the link itself went: put it back
            assert not os.path.lexists(self.home / name), reply
            os.symlink(self.links[name], self.home / name)
        elif isinstance(reply, m.LsOk) and any(e.name == "secret.txt" for e in reply.entries):
            self.leaks.append(f"ls {shown} listed the outside folder")
        return reply

    def inside(self, user_path: str, kind: str | None) -> None:
        """A reported path is normalised and names a real thing inside the home."""
        parts = user_path.split("/")
        assert user_path.startswith("/") and ".." not in parts and "" not in parts[1:-1], \
            user_path
        target = self.home / user_path.lstrip("/")
        real, home = os.path.realpath(target), str(self.home.resolve())
        assert real == home or real.startswith(home + os.sep), (user_path, real)
        if kind == "file":
            assert target.is_file() and not target.is_symlink()
        elif kind == "dir":
            assert target.is_dir() and not target.is_symlink()


def run_matrix(daemon: Any, tmp_path: Path, cases: list[tuple[str, str]],
               allowed: set[str] | None, abort_code: str | None = None,
               succeeds: dict[str, set[str]] | None = None) -> list[str]:
    """Run every (cwd, path) against every command.  With ``allowed`` every reply must be an
    error with one of those codes (except the commands ``succeeds`` names for a path, which
    must succeed); without, success is fine as long as it stays inside.
    Returns the failures; checks the snapshots around the run."""
    world = build_world(daemon, tmp_path)
    before = {name: tree_snapshot(p) for name, p in world["watched"].items()}
    failures: list[str] = []
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        session = Session(wire, world["home"], world["links"])
        for cwd, path in cases:
            for cmd, request in requests_for(path):
                reply = session.run(request, cwd)
                code = getattr(reply, "code", None)
                expected = {abort_code} if (cmd == "abort" and abort_code) else allowed
                if cmd in (succeeds or {}).get(path, ()):
                    expected = {None}
                if expected is not None and code not in expected:
                    failures.append(f"{cmd} {path!r} (cwd {cwd}): {reply}")
        failures += session.leaks
    after = {name: tree_snapshot(p) for name, p in world["watched"].items()}
    for name in before:
        assert after[name] == before[name], f"{name} changed: {before[name]} -> {after[name]}"
    for name, target in world["links"].items():
        link = world["home"] / name
        assert link.is_symlink() and os.readlink(link) == target, f"link {name} was replaced"
    return failures


def test_dot_dot_escapes_are_bad_path_for_every_command(server, tmp_path):
    """Every command refuses every ``..`` escape (from / and from /sub) with BAD_PATH."""
    cases = [("/", p) for p in ESCAPES] + [("/sub", p) for p in ESCAPES_FROM_SUB]
    assert run_matrix(server, tmp_path, cases, {"BAD_PATH"}) == []


def test_nul_control_backslash_and_overlong_paths_are_bad_path(server, tmp_path):
    """NUL, control characters, DEL, backslashes, names over 255 bytes and paths over
    4096 bytes are BAD_PATH for every command."""
    cases = [("/", p) for p in BAD_BYTES]
    assert run_matrix(server, tmp_path, cases, {"BAD_PATH"}) == []


def test_paths_over_4096_characters_are_bad_request(server, tmp_path):
    """A path over 4096 characters is refused by the message layer (BAD_REQUEST)."""
    cases = [("/", p) for p in TOO_MANY_CHARS]
    assert run_matrix(server, tmp_path, cases, {"BAD_REQUEST"}, abort_code="BAD_REQUEST") == []


def test_symlinks_planted_in_the_home_are_never_followed(server, tmp_path):
    """Links to a file and a folder outside the home (absolute and relative), to another
    user's home, dangling and looping: every command that meets one gets BAD_PATH (abort,
    which never touches the tree, says NOT_FOUND), nothing outside is read or changed,
    and the links themselves survive.  The two exceptions act on a final link itself and
    never on its target (PROTOCOL.md 12): ``stat`` shows its own entry, type "other", and
    ``rm`` removes the link (the matrix puts it back)."""
    cases = [("/", p) for p in SYMLINKS]
    itself = {p: {"stat", "rm"} for p in SYMLINKS if p.lstrip("/") in FINAL_LINKS}
    assert run_matrix(server, tmp_path, cases, {"BAD_PATH"}, abort_code="NOT_FOUND",
                      succeeds=itself) == []


def test_absolute_paths_and_look_alikes_stay_inside_the_home(server, tmp_path):
    """Absolute paths are relative to the home, and Unicode look-alikes of "." and "/"
    (two-dot leader, fullwidth solidus, one-dot leaders, division slash...) are plain
    names: whatever succeeds creates, reads or moves only things inside the home."""
    cases = [(cwd, p) for cwd in ("/", "/sub") for p in ABSOLUTE + LOOKALIKES]
    assert run_matrix(server, tmp_path, cases, None) == []
    home = server.root / "homes" / USER
    created = {p.name for p in home.iterdir()}
    assert "\u2024\u2024" in created or "\u2025" in created      # they really were used


def test_no_file_outside_the_home_changes_when_a_link_is_swapped_in_mid_session(server,
                                                                               tmp_path):
    """A folder the client is using (cwd) is replaced by a symlink to the outside between
    two requests: later requests through it are refused and the outside is untouched."""
    world = build_world(server, tmp_path)
    home = world["home"]
    (home / "work").mkdir()
    before = tree_snapshot(world["watched"]["sentinel"])
    with Wire(server.host, server.port) as wire:
        wire.logged_in(USER, PASSWORD)
        assert isinstance(wire.call(m.Cd(id=1, path="work")), m.CdOk)
        (home / "work").rmdir()
        os.symlink(world["watched"]["sentinel"], home / "work")
        replies = [
            wire.call(m.Ls(id=2)), wire.call(m.Get(id=3, path="secret.txt")),
            wire.call(m.Put(id=4, path="planted.txt", size=1)),
            wire.call(m.Rm(id=5, path="secret.txt")), wire.call(m.Mkdir(id=6, path="x")),
            wire.call(m.Mv(id=7, src="secret.txt", dst="/stolen.txt")),
            wire.call(m.Hash(id=8, path="secret.txt")), wire.call(m.Stat(id=9, path="sub")),
        ]
    # Every one is refused: BAD_PATH where the path is walked from the home (it meets
    # the link), NOT_FOUND where it resolves through the working folder the session
    # holds open (issue 13, item 1), which was removed -- like a process whose
    # working directory was deleted.  Nothing reaches the link's target.
    codes = [getattr(r, "code", r) for r in replies]
    assert set(codes) <= {"BAD_PATH", "NOT_FOUND"}, codes
    assert tree_snapshot(world["watched"]["sentinel"]) == before


@pytest.mark.parametrize("name", ["\u2025", "\uff0f", "\u2024\u2024"])
def test_look_alike_names_round_trip_as_ordinary_files(server, tmp_path, name):
    """A look-alike is an ordinary name: upload, list, download, remove, all inside."""
    world = build_world(server, tmp_path)
    with Wire(server.host, server.port) as wire:
        wire.logged_in(USER, PASSWORD)
        done = wire.put(name, b"look-alike")
        assert isinstance(done, m.PutDone) and done.path == "/" + name
        assert (world["home"] / name).read_bytes() == b"look-alike"
        listing = wire.call(m.Ls(id=wire.next_id()))
        assert name in [e.name for e in listing.entries]
        assert wire.get(name)[1] == b"look-alike"
        assert isinstance(wire.call(m.Rm(id=wire.next_id(), path=name)), m.RmOk)
