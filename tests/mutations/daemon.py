"""Re-check that the suite catches the non-storage mutations of issue 19.

Each mutation is a (file, old text, new text) triple in ``MUTATIONS`` below,
with the tests that must go red.  For each one the script copies the project
into a throwaway folder (``cp -r``), runs the listed tests there (they must
pass), applies the change -- the old text must occur exactly once, so a
refactor that moves it is reported, not silently skipped -- runs them again
and prints ``caught`` (they failed) or ``MISSED`` (they passed).  The checkout
itself is never touched.

    .venv/bin/python -m tests.mutations.daemon                        # all of them
    .venv/bin/python -m tests.mutations.daemon fresh-count-removed    # the ones named

Exit status: 0 when every mutation was caught, 1 otherwise.  After a refactor
of the files named here, update the triples (docs/TESTING.md, "Mutations").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: What is copied: the code and the tests (not .venv, data folders or reports).
COPIED = ("protocol", "storage", "ftpd", "client", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "closed-meanwhile-noop", "ftpd/handlers.py",
        "    def closed_meanwhile(upload: Any, error: BaseException | None) -> None:\n"
        "        server.free_upload_slot(user)\n"
        "        if upload is not None:\n"
        "            upload.release()          # nobody will write it now; it stays resumable\n",
        "    def closed_meanwhile(upload: Any, error: BaseException | None) -> None:\n"
        "        pass\n",
        ("tests/test_daemon_load.py::"
         "test_a_client_that_hangs_up_during_a_slow_put_leaves_the_upload_free",),
    ),
    Mutation(
        "lockout-skipped-for-tokens", "ftpd/handlers.py",
        "    if locked:\n",
        "    if locked and req.token is None:\n",
        ("tests/test_hostile_lockout.py::"
         "test_a_token_login_is_refused_while_its_user_is_locked_out",
         "tests/test_hostile_lockout.py::"
         "test_a_token_login_is_refused_from_a_locked_out_address"),
    ),
    Mutation(
        "fresh-count-removed", "ftpd/throttle.py",
        "            if rec.locked_until and rec.locked_until <= now:\n"
        "                rec = _Record()            # a served lockout starts a fresh count\n",
        "",
        ("tests/test_hostile_lockout.py::"
         "test_a_served_lockout_starts_a_fresh_count_of_failures",),
    ),
    Mutation(
        "closed-by-peer-lies", "tests/wire.py",
        "        except TimeoutError:\n"
        "            return False\n",
        "        except TimeoutError:\n"
        "            return False\n"
        "        except Exception:\n"
        "            return True\n",
        ("tests/test_helpers_honest.py",),
    ),
)


def copy_project(into: Path) -> None:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            subprocess.run(["cp", "-r", str(source), str(into / name)], check=True)
        else:
            shutil.copy2(source, into / name)
    for junk in into.rglob("__pycache__"):
        shutil.rmtree(junk, ignore_errors=True)


def apply(mutation: Mutation, root: Path) -> None:
    path = root / mutation.file
    text = path.read_text("utf-8")
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"{mutation.name}: the old text occurs {count} times in "
                         f"{mutation.file}; update MUTATIONS after the refactor")
    path.write_text(text.replace(mutation.old, mutation.new), "utf-8")


def pytest_in(root: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root)}
    env.pop("COVERAGE_PROCESS_START", None)
    # The copy's packages must win over the editable install of the checkout.
    probe = subprocess.run([sys.executable, "-c", "import ftpd; print(ftpd.__file__)"],
                           cwd=root, env=env, capture_output=True, text=True, check=True)
    if not probe.stdout.strip().startswith(str(root)):
        raise SystemExit(f"the copy's ftpd is not the one imported: {probe.stdout}")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-x", *tests],
                            cwd=root, env=env, capture_output=True, text=True, timeout=900)
    output = (result.stdout + result.stderr).strip()
    if result.returncode not in (0, 1):
        raise SystemExit(f"pytest could not run {tests} (exit {result.returncode}):\n{output}")
    return result.returncode, "\n".join(output.splitlines()[-3:])


def run(mutation: Mutation) -> tuple[bool, float, str]:
    """(caught, seconds the mutant's run took, the tail of pytest's output).

    The tests must pass on the untouched copy first: a test that fails anyway
    proves nothing about the mutation.
    """
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutation.name}-") as tmp:
        root = Path(tmp)
        copy_project(root)
        status, tail = pytest_in(root, mutation.tests)
        if status != 0:
            raise SystemExit(f"{mutation.name}: the tests fail without the mutation:\n{tail}")
        apply(mutation, root)
        start = time.monotonic()
        status, tail = pytest_in(root, mutation.tests)
        return status == 1, time.monotonic() - start, tail


def main(argv: list[str]) -> int:
    chosen = [mu for mu in MUTATIONS if not argv or mu.name in argv]
    unknown = set(argv) - {mu.name for mu in MUTATIONS}
    if unknown:
        raise SystemExit(f"unknown mutations: {sorted(unknown)}")
    missed = 0
    for mutation in chosen:
        caught, took, tail = run(mutation)
        missed += not caught
        verdict = "caught" if caught else "MISSED"
        print(f"{verdict:7} {mutation.name:28} {took:6.1f}s  {mutation.file}", flush=True)
        if not caught:
            print("        " + tail.replace("\n", "\n        "), flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
