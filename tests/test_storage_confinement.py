"""Symlinks planted inside a home never lead outside it.

Policy under test: any operation whose path meets a symbolic link (as the final
component or anywhere on the way) raises ``BadPath`` and touches nothing; the
exceptions act on a final link itself, never on its target: ``list_dir`` and
``stat`` show links as type "other", ``remove`` unlinks the link.

Local backend only: symbolic links on disk (the object backend has no files of its own).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage import BadPath, Store

LINKS = {
    # name: (target relative to tmp_path for absolute links | literal relative target, kind)
    "lf_abs": ("abs", "outside/secret.txt", "file"),
    "lf_rel": ("rel", "../../../outside/secret.txt", "file"),
    "ld_abs": ("abs", "outside", "dir"),
    "ld_rel": ("rel", "../../../outside", "dir"),
}
FILE_LINKS = [n for n, (_, _, k) in LINKS.items() if k == "file"]
DIR_LINKS = [n for n, (_, _, k) in LINKS.items() if k == "dir"]


def snapshot(top: Path) -> dict[str, tuple]:
    """Everything observable about a tree: names, types, contents, modes, mtimes."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            content = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            link = os.readlink(p) if p.is_symlink() else None
            seen[str(p.relative_to(top))] = (st.st_mode, st.st_mtime_ns, st.st_size, content, link)
    return seen


@pytest.fixture
def env(tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"SECRET")
    (outside / "sub" / "inner.txt").write_bytes(b"INNER")
    store = Store(tmp_path / "root", scrypt_n=2**4, default_quota=1 << 20)
    store.create_user("alice", "pw")
    data = b"real data"
    up = store.begin_upload("alice", "/real.txt", len(data), hashlib.sha256(data).hexdigest())
    up.write(data)
    up.commit()
    store.mkdir("alice", "/realdir")
    home = tmp_path / "root" / "homes" / "alice"
    for name, (style, target, _kind) in LINKS.items():
        os.symlink(str(tmp_path / target) if style == "abs" else target, home / name)
    os.symlink("../../../../outside", home / "realdir" / "ld_deep")
    before_out, before_home = snapshot(outside), snapshot(home)
    yield store, home
    assert snapshot(outside) == before_out, "something outside the home changed"
    assert snapshot(home) == before_home, "a refused operation changed the home"
    assert sorted(os.listdir(tmp_path)) == ["outside", "root"]
    store.close()


def upload_attempt(store: Store, path: str, overwrite: bool = False) -> None:
    up = store.begin_upload("alice", path, 3, None, overwrite=overwrite)
    up.abort()  # not reached when refused


FILE_OPS = {
    "list_dir": lambda s, L: s.list_dir("alice", L),
    "stat": lambda s, L: s.stat("alice", L),
    "is_dir": lambda s, L: s.is_dir("alice", L),
    "mkdir": lambda s, L: s.mkdir("alice", L),
    "mkdir_parents_through": lambda s, L: s.mkdir("alice", L + "/x/y", parents=True),
    "rmdir": lambda s, L: s.rmdir("alice", L),
    "remove": lambda s, L: s.remove("alice", L),
    "rename_src": lambda s, L: s.rename("alice", L, "/moved"),
    "rename_dst": lambda s, L: s.rename("alice", "/real.txt", L),
    "rename_dst_overwrite": lambda s, L: s.rename("alice", "/real.txt", L, overwrite=True),
    "open_read": lambda s, L: s.open_read("alice", L),
    "file_hash": lambda s, L: s.file_hash("alice", L),
    "cached_hash": lambda s, L: s.cached_hash("alice", L),
    "begin_upload_target": lambda s, L: upload_attempt(s, L),
    "begin_upload_target_overwrite": lambda s, L: upload_attempt(s, L, overwrite=True),
}

DIR_OPS = {
    "list_dir": lambda s, L: s.list_dir("alice", L),
    "list_dir_cwd": lambda s, L: s.list_dir("alice", ".", cwd=L),
    "stat": lambda s, L: s.stat("alice", L),
    "stat_inside": lambda s, L: s.stat("alice", L + "/secret.txt"),
    "is_dir": lambda s, L: s.is_dir("alice", L),
    "is_dir_inside": lambda s, L: s.is_dir("alice", L + "/sub"),
    "mkdir": lambda s, L: s.mkdir("alice", L),
    "mkdir_parents": lambda s, L: s.mkdir("alice", L, parents=True),
    "mkdir_inside": lambda s, L: s.mkdir("alice", L + "/new"),
    "mkdir_inside_parents": lambda s, L: s.mkdir("alice", L + "/new/deeper", parents=True),
    "rmdir": lambda s, L: s.rmdir("alice", L),
    "rmdir_inside": lambda s, L: s.rmdir("alice", L + "/sub"),
    "remove": lambda s, L: s.remove("alice", L),
    "remove_inside": lambda s, L: s.remove("alice", L + "/secret.txt"),
    "rename_src": lambda s, L: s.rename("alice", L, "/moved"),
    "rename_src_inside": lambda s, L: s.rename("alice", L + "/secret.txt", "/stolen"),
    "rename_dst_inside": lambda s, L: s.rename("alice", "/real.txt", L + "/planted"),
    "rename_dst_overwrite": lambda s, L: s.rename("alice", "/realdir", L, overwrite=True),
    "rename_dst_inside_overwrite": lambda s, L: s.rename(
        "alice", "/real.txt", L + "/secret.txt", overwrite=True),
    "open_read_inside": lambda s, L: s.open_read("alice", L + "/secret.txt"),
    "file_hash_inside": lambda s, L: s.file_hash("alice", L + "/secret.txt"),
    "cached_hash_inside": lambda s, L: s.cached_hash("alice", L + "/secret.txt"),
    "begin_upload_parent": lambda s, L: upload_attempt(s, L + "/new"),
    "begin_upload_parent_overwrite": lambda s, L: upload_attempt(
        s, L + "/secret.txt", overwrite=True),
    "begin_upload_target": lambda s, L: upload_attempt(s, L, overwrite=True),
}


#: Operations that act on a final link itself (tested below, not refused).
ON_THE_LINK = {"stat", "remove"}


@pytest.mark.parametrize("link", FILE_LINKS)
@pytest.mark.parametrize("op", sorted(set(FILE_OPS) - ON_THE_LINK))
def test_file_symlink_is_refused(env, op, link):
    store, _ = env
    with pytest.raises(BadPath):
        FILE_OPS[op](store, "/" + link)


@pytest.mark.parametrize("link", [*DIR_LINKS, "realdir/ld_deep"])
@pytest.mark.parametrize("op", sorted(set(DIR_OPS) - ON_THE_LINK))
def test_folder_symlink_is_refused(env, op, link):
    store, _ = env
    with pytest.raises(BadPath):
        DIR_OPS[op](store, "/" + link)


def test_list_dir_shows_symlinks_as_other_without_following(env):
    store, _ = env
    types = {e.name: (e.type, e.size) for e in store.list_dir("alice", "/")}
    for name in LINKS:
        assert types[name] == ("other", 0)
    assert types["real.txt"] == ("file", 9)


@pytest.mark.parametrize("link", [*LINKS, "realdir/ld_deep"])
def test_stat_of_a_final_symlink_is_its_own_entry_of_type_other(env, link):
    store, _ = env
    entry = store.stat("alice", "/" + link)
    assert (entry.type, entry.size, entry.path) == ("other", 0, "/" + link)


@pytest.mark.parametrize("target", ["abs-file", "rel-dir", "dangling"])
def test_remove_of_a_final_symlink_unlinks_the_link_not_its_target(tmp_path, target):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"SECRET")
    link_to = {"abs-file": str(outside / "secret.txt"), "rel-dir": "../../../outside",
               "dangling": str(outside / "nothing")}[target]
    with Store(tmp_path / "root", scrypt_n=2**4) as store:
        store.create_user("alice", "pw")
        home = tmp_path / "root" / "homes" / "alice"
        os.symlink(link_to, home / "ln")
        before, used = snapshot(outside), store.usage("alice").used
        assert store.remove("alice", "/ln") == "/ln"
        assert not os.path.lexists(home / "ln")
        assert snapshot(outside) == before                # the target is untouched
        assert store.usage("alice").used == used          # a link held no quota


def test_commit_refuses_a_parent_swapped_for_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with Store(tmp_path / "root", scrypt_n=2**4) as store:
        store.create_user("alice", "pw")
        store.mkdir("alice", "/d")
        up = store.begin_upload("alice", "/d/f", 3, None)
        up.write(b"abc")
        home = tmp_path / "root" / "homes" / "alice"
        os.rmdir(home / "d")
        os.symlink(outside, home / "d")
        with pytest.raises(BadPath):
            up.commit()
        assert os.listdir(outside) == []
        up.release()
        assert store.list_uploads("alice")[0].offset == 3


def test_symlinked_home_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"S")
    with Store(tmp_path / "root", scrypt_n=2**4) as store:
        store.create_user("alice", "pw")
        home = tmp_path / "root" / "homes" / "alice"
        os.rmdir(home)
        os.symlink(outside, home)
        for call in (lambda: store.list_dir("alice", "/"), lambda: store.stat("alice", "/secret"),
                     lambda: store.mkdir("alice", "/x"), lambda: store.remove("alice", "/secret"),
                     lambda: store.open_read("alice", "/secret"),
                     lambda: store.begin_upload("alice", "/x", 1, None)):
            with pytest.raises(BadPath):
                call()
        assert os.listdir(outside) == ["secret"]


def test_symlinked_staging_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with Store(tmp_path / "root", scrypt_n=2**4) as store:
        store.create_user("alice", "pw")
        staging = tmp_path / "root" / "staging" / "alice"
        os.rmdir(staging)
        os.symlink(outside, staging)
        with pytest.raises(BadPath):
            store.begin_upload("alice", "/x", 1, None)
        assert os.listdir(outside) == []
