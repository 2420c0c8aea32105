"""Re-check that each storage mutation of issue 19 is caught by a test.

    .venv/bin/python tests/mutations/storage.py            # all of them
    .venv/bin/python tests/mutations/storage.py NAME ...   # some of them

Each mutation is applied to a throwaway copy of the repository (copied to a
temporary folder, without .git and .venv), the tests named for it run there
with this interpreter, and it is reported *caught* (a test failed) or *missed*
(all passed).  The unmutated copy must pass the same tests first.  A mutation
whose text no longer appears in the code is reported *stale*: update it after
a refactor, never drop it silently.  Exit status 0 only if every mutation was
caught.  docs/TESTING.md ("Storage crash consistency") lists them with the
test that catches each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".hypothesis", ".pytest_cache",
                                ".ruff_cache", "var", "*.egg-info", "bench")

DURABILITY = "tests/test_storage_durability.py"
CRASH = "tests/test_storage_crashpoints.py"
STORAGE = [DURABILITY, CRASH, "tests/test_storage_uploads.py", "tests/test_storage_small.py",
           "tests/test_storage_crash.py"]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    edits: tuple[tuple[str, str, str], ...]     # (file, exact old text, new text)
    tests: tuple[str, ...]


MARK_BEFORE_PLACE = '''            with ctx.db.write() as conn:
                mark(conn, target.user, path, CommitMark.of(st, old))
            faults.crash_point("commit.after_mark")
            try:
                with ctx.staging(target.user) as sfd:
                    place(sfd, pfd, target, part_name(path))
'''
MARK_AFTER_PLACE = '''            faults.crash_point("commit.after_mark")
            try:
                with ctx.staging(target.user) as sfd:
                    place(sfd, pfd, target, part_name(path))
                with ctx.db.write() as conn:
                    mark(conn, target.user, path, CommitMark.of(st, old))
'''
GROUP_MARK = ('''                        mark(conn, user, p.target.path, CommitMark.of(st, p.old))
                        marked.append(p)''', '''                        p.st = st
                        marked.append(p)''')
GROUP_MARK_LATE = ('''                        faults.crash_point("group.after_place")''',
                   '''                        with db.write() as conn:
                            mark(conn, user, p.target.path, CommitMark.of(p.st, p.old))
                        faults.crash_point("group.after_place")''')

COMMIT_FSYNC = ("storage/commit.py",
                "        os.fsync(fd)                                           # step 1\n",
                "        pass\n")
COMMIT_DIR_FSYNC = ("storage/commit.py",
                    "        fsync_dir(pfd)                                         "
                    "# step 3, outside the lock\n", "        pass\n")
GROUP_FSYNC = ("storage/group.py", "                os.fsync(p.fd)\n", "                pass\n")
GROUP_DIR_FSYNC = ("storage/group.py", "                fsync_dir(pfd)\n",
                   "                pass\n")
ANY_DIR_FSYNC = ("storage/partials.py", "        os.fsync(dir_fd)\n", "        pass\n")
FLUSH = ("storage/upload.py", "lambda fd, _end: os.fdatasync(fd)", "lambda fd, _end: None")
COMMIT_MARK_LATE = ("storage/commit.py", MARK_BEFORE_PLACE, MARK_AFTER_PLACE)
RECOVER_UNLINK = ("storage/commit.py", "            _unlink_linked_partial(ctx, user, path, st)\n",
                  "            pass\n")

MUTATIONS = [
    Mutation("commit-data-fsync", "the commit's fsync of the data removed",
             (COMMIT_FSYNC,), (DURABILITY,)),
    Mutation("commit-folder-fsync", "the commit's fsync of the target folder removed",
             (COMMIT_DIR_FSYNC,), (DURABILITY,)),
    Mutation("group-data-fsync", "the group commit's fsync of each file removed",
             (GROUP_FSYNC,), (DURABILITY,)),
    Mutation("group-folder-fsync", "the group commit's fsync of each folder removed",
             (GROUP_DIR_FSYNC,), (DURABILITY,)),
    Mutation("folder-fsync-helper", "fsync_dir made a no-op (every folder fsync)",
             (ANY_DIR_FSYNC,), (DURABILITY,)),
    Mutation("write-behind-fdatasync", "Upload.flush's fdatasync removed",
             (FLUSH,), (DURABILITY,)),
    Mutation("commit-mark-after-rename", "the commit marks the row after the rename",
             (COMMIT_MARK_LATE,), (DURABILITY, CRASH)),
    Mutation("group-mark-after-rename", "the group commit marks each row after its rename",
             (("storage/group.py", *GROUP_MARK), ("storage/group.py", *GROUP_MARK_LATE)),
             (DURABILITY, CRASH)),
    Mutation("recover-linked-partial", "recovery no longer unlinks a staging file still"
             " linked to its target", (RECOVER_UNLINK,), (CRASH,)),
    Mutation("all-together", "every fsync/fdatasync removed, both marks after the rename"
             " and the recovery unlink removed, at once",
             (COMMIT_FSYNC, COMMIT_DIR_FSYNC, GROUP_FSYNC, GROUP_DIR_FSYNC, ANY_DIR_FSYNC, FLUSH,
              COMMIT_MARK_LATE, ("storage/group.py", *GROUP_MARK),
              ("storage/group.py", *GROUP_MARK_LATE), RECOVER_UNLINK), tuple(STORAGE)),
]


def copy_repo(into: Path) -> Path:
    dest = into / "repo"
    shutil.copytree(REPO, dest, ignore=IGNORE)
    return dest


def run_tests(repo: Path, tests: tuple[str, ...]) -> tuple[bool, str]:
    """(passed, which tests failed: each test function with its count of failing cases)."""
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    where = subprocess.run([sys.executable, "-c", "import storage; print(storage.__file__)"],
                           cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(repo)), f"tests would not run the copy: {where.stdout}"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=repo, env=env, capture_output=True, text=True)
    failed: dict[str, int] = {}
    for test in re.findall(r"^FAILED (\S+)", proc.stdout, re.M):
        name = test.split("[")[0].removeprefix("tests/")
        failed[name] = failed.get(name, 0) + 1
    if proc.returncode == 0:
        return True, ""
    if not failed:
        return False, proc.stdout.strip()[-300:]
    return False, "; ".join(f"{name} ({n})" for name, n in failed.items())


def apply(repo: Path, mutation: Mutation) -> bool:
    for file, old, new in mutation.edits:
        path = repo / file
        text = path.read_text()
        if text.count(old) != 1:
            return False
        path.write_text(text.replace(old, new))
    return True


def main(names: list[str]) -> int:
    sys.stdout.reconfigure(line_buffering=True)   # progress shows even when redirected
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    with tempfile.TemporaryDirectory(prefix="mutations-") as tmp:
        repo = copy_repo(Path(tmp))
        tests = tuple(sorted({t for m in chosen for t in m.tests}))
        ok, detail = run_tests(repo, tests)
        if not ok:
            print(f"baseline: the unmutated copy fails: {detail}")
            return 2
        print(f"baseline: {' '.join(tests)} pass unmutated")
    missed = 0
    for mutation in chosen:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
            repo = copy_repo(Path(tmp))
            if not apply(repo, mutation):
                print(f"STALE   {mutation.name}: its text is no longer in the code")
                missed += 1
                continue
            passed, detail = run_tests(repo, mutation.tests)
        took = time.monotonic() - started
        if passed:
            missed += 1
            print(f"MISSED  {mutation.name} ({mutation.what}) [{took:.0f}s]")
        else:
            print(f"caught  {mutation.name} ({mutation.what}) [{took:.0f}s]\n        by {detail}")
    print(f"{len(chosen) - missed} of {len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
