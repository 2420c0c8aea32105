"""The suite's one quick benchmark run, started in the background at collection.

``tests/test_bench_quick.py`` checks a ``python -m bench.run --quick`` run: about a
minute of daemons, baselines and clients starting and stopping, mostly waiting.  Run
in line it was the suite's longest test; started here, as soon as the tests that
read it are collected, it overlaps the rest of the suite on the second core, and its
tests are moved to the end, where they collect its result.  Quick figures mean
nothing (the harness is what is tested), so sharing the machine costs no accuracy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE = "tests/test_bench_quick.py"
FIXTURE = "quick_run"


@dataclass
class QuickRun:
    """The background ``bench.run --quick``: its process and its results folder."""

    proc: subprocess.Popen[str]
    results: Path

    def wait(self, timeout: float) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once it ends; killed after ``timeout``."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err


def start(scenarios: list[str]) -> QuickRun:
    results = Path(tempfile.mkdtemp(prefix="bench-quick-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--quick", "--results-dir", str(results),
         "--max-seconds", "400", "--only", ",".join(scenarios)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    run = QuickRun(proc, results)
    _RUN.append(run)            # killed (if still running) and removed at the session's end
    return run


_RUN: list[QuickRun] = []


def background_run() -> QuickRun | None:
    """The run started at collection (None when this session did not start one)."""
    return _RUN[0] if _RUN else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    readers = [i for i in items if i.nodeid.startswith(MODULE)
               and FIXTURE in getattr(i, "fixturenames", ())]
    if not readers or config.getoption("collectonly"):
        return
    rest = [i for i in items if i not in readers]
    items[:] = rest + readers
    from tests.test_bench_quick import suite_scenarios

    start([s.name for s in suite_scenarios()])


def pytest_unconfigure(config: pytest.Config) -> None:
    for run in _RUN:
        if run.proc.poll() is None:        # the session ended before collecting it
            run.proc.kill()
            run.proc.communicate()
        shutil.rmtree(run.results, ignore_errors=True)
    _RUN.clear()
