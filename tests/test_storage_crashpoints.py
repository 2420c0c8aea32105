"""Crash consistency, step by step: a real process is killed at EVERY crash point of
a commit, a group commit and the start-up recovery, then the store is reopened.

The child runs a fixed scenario (two resumable uploads, one restarting an older
partial, then a group of small files with one bad file) with
``FTPD_CRASH_AT=step@n`` and dies by ``os._exit`` at the n-th arrival at that step
-- as abrupt as SIGKILL for the files and the catalogue.  The steps are
first learnt from a traced run (``FTPD_CRASH_TRACE``), and the traced list is
checked against the one written here, so a crash point that disappears or
moves is noticed too.  After each kill the parent reopens the store (recovery
runs) and checks the promises:

* a target holds the old file or the complete new one, never anything else;
* ``used`` equals the bytes of the files on disk, and no commit mark is left;
* nothing in staging is unaccounted for or shares an inode with a visible file;
* every unfinished upload resumes from an offset equal to the bytes held,
  those bytes are the right prefix, and finishing it gives the complete file.

In the spirit of SQLite's crash-test VFS and the ALICE / CrashMonkey studies.

Local backend only: the local commit's crash points (the object backend's are in
tests/test_storage_crash.py).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Store, faults
from storage.partials import part_name
from storage.store import DEFAULT_FOLDER_COST

pytestmark = pytest.mark.slow

REPO = str(Path(__file__).resolve().parent.parent)
# tmpfs where there is one: the scenario fsyncs a dozen times per run.
TMP_BASE = "/dev/shm" if os.path.isdir("/dev/shm") else None


# Shared by the child (which runs it) and this module (which execs it for the data):
# the child must not import the test module, pytest and all.
SCENARIO = r"""
import hashlib
from storage import SmallFile, Store

USER = "alice"


def blob(tag, n):
    out, i = b"", 0
    while len(out) < n:
        out += hashlib.sha256(f"{tag}{i}".encode()).digest()
        i += 1
    return out[:n]


def sha(data):
    return hashlib.sha256(data).hexdigest()


# What the child stores, and what was there before it ran.
FINAL = {"/new": blob("new", 70_000), "/old": blob("old2", 5000), "/s0": blob("s0", 3000),
         "/keep": blob("keep2", 2000), "/d/s2": blob("s2", 1000)}
BEFORE = {"/old": blob("old1", 4000), "/keep": blob("keep1", 1500)}
STALE = blob("stale", 50)       # an older partial of /new, another declaration, 20 bytes held
BAD_DATA, BAD_DECLARED = b"xyz", b"abc"      # a group file whose SHA-256 does not match


def run_scenario(root, mode):
    # mode "uploads": the scenario; "open": only the start-up recovery.
    store = Store(root, scrypt_n=16)
    if mode == "uploads":
        for path, overwrite in (("/new", False), ("/old", True)):
            data = FINAL[path]
            up = store.begin_upload(USER, path, len(data), sha(data), overwrite=overwrite)
            up.write(data[up.offset:])
            up.commit()
        store.store_small_files(USER, [
            SmallFile("/s0", FINAL["/s0"], sha(FINAL["/s0"])),
            SmallFile("/keep", FINAL["/keep"], sha(FINAL["/keep"]), overwrite=True),
            SmallFile("/bad", BAD_DATA, sha(BAD_DECLARED)),
            SmallFile("/d/s2", FINAL["/d/s2"]),
        ])
    store.close()
"""
CHILD = SCENARIO + """
import sys
run_scenario(sys.argv[1], sys.argv[2])
"""
_data: dict = {}
exec(SCENARIO, _data)
USER, FINAL, BEFORE, STALE = _data["USER"], _data["FINAL"], _data["BEFORE"], _data["STALE"]
BAD_DECLARED, sha = _data["BAD_DECLARED"], _data["sha"]
# What an unfinished upload to each path may have been declared as.
DECLARED = {**{path: [data] for path, data in FINAL.items()},
            "/new": [FINAL["/new"], STALE], "/bad": [BAD_DECLARED]}


def make_template(root: Path) -> None:
    """The store before the child runs: old files, a folder, a stale partial of /new."""
    with Store(root, scrypt_n=16) as store:
        store.create_user(USER, "pw", quota=1 << 20)
        store.mkdir(USER, "/d")
        for path, data in BEFORE.items():
            up = store.begin_upload(USER, path, len(data), sha(data))
            up.write(data)
            up.commit()
        up = store.begin_upload(USER, "/new", len(STALE), sha(STALE))
        up.write(STALE[:20])
        up.release()


def run_child(root: Path, mode: str, *, crash_at: str | None = None,
              trace: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV_AT, faults.ENV_TRACE)}
    if crash_at is not None:
        env[faults.ENV_AT] = crash_at
    if trace is not None:
        env[faults.ENV_TRACE] = str(trace)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), mode], cwd=REPO,
                          env=env, capture_output=True, timeout=60)
    expected = 0 if crash_at is None else faults.CRASH_EXIT
    assert proc.returncode == expected, proc.stderr.decode(errors="replace")


def occurrences(names: list[str]) -> list[str]:
    """``["a", "b", "a"]`` -> ``["a@1", "b@1", "a@2"]``."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(f"{name}@{seen[name]}")
    return out


# Every step the scenario passes, in order (checked against a traced run).
UPLOAD_STEPS = occurrences([
    # /new: begin restarts the stale partial, then the commit links it into place
    "begin.after_unlink", "begin.after_row",
    "commit.after_fsync", "commit.after_mark", "place.after_link", "commit.after_place",
    "commit.after_account", "commit.after_dir_fsync",
    # /old: overwrite, so the commit renames
    "begin.after_unlink", "begin.after_row",
    "commit.after_fsync", "commit.after_mark", "commit.after_place",
    "commit.after_account", "commit.after_dir_fsync",
    # the group: /s0 (link), /keep (rename), /bad (refused), /d/s2 (link)
    "group.after_begin", "group.after_write", "group.after_fsync", "group.after_mark",
    "place.after_link", "group.after_place", "group.after_place",
    "place.after_link", "group.after_place",
    "group.after_account", "group.after_dir_fsync", "drop.after_unlink",
])
# States with marked rows for recovery to finish: a group killed after linking /s0
# (its staging name still there), and after renaming /keep (with /s0 fully placed).
RECOVERY_STATES = ["place.after_link@2", "group.after_place@2"]
RECOVERY_STEPS = {
    "place.after_link@2": occurrences([
        "recover.after_unmark", "recover.after_unmark",              # /d/s2, /keep
        "recover.after_unlink", "recover.after_account"]),           # /s0
    "group.after_place@2": occurrences([
        "recover.after_unmark",                                      # /d/s2
        "recover.after_account", "recover.after_account"]),          # /keep, /s0
}


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=TMP_BASE) as base:
        root = Path(base) / "root"
        make_template(root)
        yield root


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Like pytest's, but on tmpfs where there is one."""
    with tempfile.TemporaryDirectory(dir=TMP_BASE) as base:
        yield Path(base)


def fresh(template: Path, tmp_path: Path, crashed_at: str | None = None) -> Path:
    """A copy of the template; with ``crashed_at``, left as a kill at that step leaves it.

    (A crashed state is made in place, never copied: a copy would change the
    inodes that commit marks name.)"""
    root = tmp_path / "root"
    shutil.copytree(template, root)
    if crashed_at is not None:
        run_child(root, "uploads", crash_at=crashed_at)
    return root


def traced_steps(root: Path, mode: str, tmp_path: Path) -> list[str]:
    trace = tmp_path / "trace"
    run_child(root, mode, trace=trace)
    return occurrences(trace.read_text().split())


def visible_files(root: Path) -> dict[str, bytes]:
    home = root / "homes" / USER
    return {"/" + str(p.relative_to(home)): p.read_bytes()
            for p in home.rglob("*") if p.is_file() and not p.is_symlink()}


def folder_bytes(root: Path) -> int:
    """The quota the home's folders cost (issue 13, item 8: a block each)."""
    home = root / "homes" / USER
    return DEFAULT_FOLDER_COST * sum(1 for p in home.rglob("*")
                                     if p.is_dir() and not p.is_symlink())


def check_promises(root: Path) -> None:
    """Reopen (recovery runs) and check every promise; then finish what is unfinished."""
    staging = root / "staging" / USER
    with Store(root, scrypt_n=16) as store:
        files = visible_files(root)
        for path, data in files.items():
            assert data in (BEFORE.get(path), FINAL.get(path)), f"{path} is neither old nor new"
        assert set(BEFORE) <= set(files), "a file that existed before is gone"
        usage = store.usage(USER)
        assert usage.used == sum(len(d) for d in files.values()) + folder_bytes(root)
        assert usage.used + usage.reserved <= usage.limit
        with sqlite3.connect(root / "users.db") as db:
            rows = db.execute("SELECT path, size, sha256, reserved, commit_ino"
                              " FROM uploads").fetchall()
        assert all(ino is None for *_, ino in rows), "a commit mark survived recovery"
        assert {p.name for p in staging.iterdir()} <= {part_name(r[0]) for r in rows}
        visible_inodes = {(root / "homes" / USER / p.lstrip("/")).stat().st_ino for p in files}
        assert not {p.stat().st_ino for p in staging.iterdir()} & visible_inodes
        for info in store.list_uploads(USER):
            held = staging / part_name(info.path)
            assert info.offset == (held.stat().st_size if held.exists() else 0)
            [content] = [c for c in DECLARED[info.path] if len(c) == info.size
                         and info.sha256 in (None, sha(c))]
            up = store.begin_upload(USER, info.path, info.size, info.sha256, overwrite=True)
            assert not up.restarted and up.offset == info.offset
            assert os.pread(up.fileno(), up.offset, 0) == content[: up.offset]
            up.write(content[up.offset:])
            up.commit()
            assert visible_files(root)[info.path] == content
        assert store.list_uploads(USER) == []
        usage = store.usage(USER)
        assert (usage.used, usage.reserved) == (
            sum(map(len, visible_files(root).values())) + folder_bytes(root), 0)
        assert list(staging.iterdir()) == []


def test_the_scenario_passes_every_commit_and_group_commit_step(template, tmp_path):
    assert traced_steps(fresh(template, tmp_path), "uploads", tmp_path) == UPLOAD_STEPS


@pytest.mark.parametrize("state", RECOVERY_STATES)
def test_recovery_passes_every_step(template, tmp_path, state):
    assert traced_steps(fresh(template, tmp_path, state), "open", tmp_path) \
        == RECOVERY_STEPS[state]


def test_the_scenario_without_a_crash_keeps_every_promise(template, tmp_path):
    root = fresh(template, tmp_path)
    run_child(root, "uploads")
    assert visible_files(root) == {**FINAL}
    check_promises(root)


@pytest.mark.parametrize("step", UPLOAD_STEPS)
def test_a_kill_at_any_commit_step_keeps_every_promise(template, tmp_path, step):
    root = fresh(template, tmp_path)
    run_child(root, "uploads", crash_at=step)
    check_promises(root)


@pytest.mark.parametrize("state, step", [(state, step) for state in RECOVERY_STATES
                                         for step in RECOVERY_STEPS[state]])
def test_a_kill_at_any_recovery_step_keeps_every_promise(template, tmp_path, state, step):
    root = fresh(template, tmp_path, state)
    run_child(root, "open", crash_at=step)
    check_promises(root)
