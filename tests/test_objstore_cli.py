"""``ftpd migrate`` and ``ftpd user ... --metadata --blobs`` on real services."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("boto3", reason="needs the objstore extra: pip install -e '.[objstore]'")
pytest.importorskip("psycopg", reason="needs the objstore extra: pip install -e '.[objstore]'")

from ftpd.cli import main
from storage import Store
from storage.objstore.store import ObjectStore
from storage.store import DEFAULT_FOLDER_COST
from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY, unique_name

MIB = 1 << 20


@pytest.fixture
def urls(pg_database: str, s3_service: Any, s3_bucket: str,
         monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    return pg_database, f"s3://{s3_bucket}?endpoint={s3_service.endpoint}&region=us-east-1"


@pytest.fixture
def dest(urls: tuple[str, str]) -> Iterator[ObjectStore]:
    store = ObjectStore(*urls, scrypt_n=2**4)
    yield store
    store.close()


def _put(store: Any, user: str, path: str, data: bytes) -> None:
    up = store.begin_upload(user, path, len(data), hashlib.sha256(data).hexdigest())
    up.write(data)
    up.commit()


def _read(store: ObjectStore, user: str, path: str) -> bytes:
    source, _ = store.open_read(user, path)
    return b"".join(source.blobs.read(source.blob, end=source.size))


def test_migrate_copies_users_folders_and_files(tmp_path: Path, urls: tuple[str, str],
                                                dest: ObjectStore,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    alice, bob = unique_name("ma"), unique_name("mb")
    big = hashlib.sha256(b"x").digest() * (6 * MIB // 32 + 7)
    with Store(root, scrypt_n=2**4) as src:
        src.create_user(alice, "alice-pw", quota=50 * MIB)
        src.create_user(bob, "bob-pw", quota=MIB)
        src.mkdir(alice, "/docs/old", parents=True)
        _put(src, alice, "/docs/a.txt", b"alpha")
        _put(src, alice, "/big.bin", big)
        _put(src, alice, "/empty", b"")
        src.set_disabled(bob, True)
        used = src.usage(alice).used            # the files' bytes and two folders' cost
    argv = ["migrate", "--from-root", str(root), "--metadata", urls[0], "--blobs", urls[1]]
    assert main(argv) == 0
    assert "3 files" in capsys.readouterr().out
    # Passwords keep working: the hashes were copied as they are.
    assert dest.verify_password(alice, "alice-pw").quota == 50 * MIB
    assert dest.get_user(bob).disabled                      # type: ignore[union-attr]
    assert sorted(e.name for e in dest.list_dir(alice, "/")) == ["big.bin", "docs", "empty"]
    assert [e.name for e in dest.list_dir(alice, "/docs")] == ["a.txt", "old"]
    assert _read(dest, alice, "/docs/a.txt") == b"alpha"
    assert _read(dest, alice, "/big.bin") == big
    assert dest.file_hash(alice, "/big.bin") == (hashlib.sha256(big).hexdigest(), len(big))
    assert dest.usage(alice).used == used == len(big) + 5 + 2 * DEFAULT_FOLDER_COST
    # Run again (as after an interruption): nothing is copied (or charged) twice.
    assert main(argv) == 0
    assert dest.usage(alice).used == used


def test_migrate_refuses_a_missing_source(tmp_path: Path, urls: tuple[str, str]) -> None:
    assert main(["migrate", "--from-root", str(tmp_path / "nope"), "--metadata", urls[0],
                 "--blobs", urls[1]]) == 2


def test_user_commands_work_on_the_object_store(urls: tuple[str, str], dest: ObjectStore,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    name = unique_name("cu")
    flags = ["--metadata", urls[0], "--blobs", urls[1], "--scrypt-n", "16"]
    monkeypatch.setattr("sys.stdin", io.StringIO("their-pw\n"))
    assert main(["user", "add", name, "--quota", "5M", "--password-stdin", *flags]) == 0
    assert dest.verify_password(name, "their-pw").quota == 5 * MIB
    assert main(["user", "quota", name, "7M", *flags]) == 0
    assert main(["user", "disable", name, *flags]) == 0
    assert dest.get_user(name).disabled                     # type: ignore[union-attr]
    capsys.readouterr()
    assert main(["user", "list", *flags]) == 0
    assert name in capsys.readouterr().out
    assert main(["user", "del", name, "--yes", *flags]) == 0
    assert dest.get_user(name) is None


def test_one_backend_url_without_the_other_is_refused(urls: tuple[str, str]) -> None:
    with pytest.raises(SystemExit, match="go together"):
        main(["user", "list", "--metadata", urls[0]])


def test_the_urls_never_reach_the_output(urls: tuple[str, str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "list", "--metadata", urls[0], "--blobs", urls[1]]) == 0
    out = capsys.readouterr()
    assert S3_SECRET_KEY not in out.out + out.err and urls[0] not in out.out + out.err


def test_migrate_copies_the_bytes_it_hashed_when_a_file_is_replaced_meanwhile(
        tmp_path: Path, dest: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest a migration declares is of the very bytes it copies (issue 13, item
    12): a file replaced right after it was opened is copied as it was opened."""
    import os

    import storage.tree
    from storage.objstore.migrate import migrate_root

    root, name = tmp_path / "root", unique_name("mr")
    old, new = b"o" * 3000, b"n" * 2000
    with Store(root, scrypt_n=2**4) as src:
        src.create_user(name, "pw", quota=MIB)
        _put(src, name, "/f", old)
    target = root / "homes" / name / "f"
    real = storage.tree.FileTree.open_read
    replaced: list[bool] = []

    def open_then_replace(self: Any, user: str, path: str, cwd: str = "/") -> Any:
        opened = real(self, user, path, cwd)
        if not replaced:                        # another writer lands right after the open
            replaced.append(True)
            spare = target.with_name("spare")
            spare.write_bytes(new)
            os.rename(spare, target)
        return opened
    monkeypatch.setattr(storage.tree.FileTree, "open_read", open_then_replace)
    migrate_root(root, dest)
    assert replaced and _read(dest, name, "/f") == old
    assert dest.file_hash(name, "/f") == (hashlib.sha256(old).hexdigest(), len(old))
