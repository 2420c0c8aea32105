"""The benchmark harness in quick mode, once, so that it never rots.

``make bench`` is not part of the test suite (it takes minutes and its numbers
depend on the machine); this runs ``python -m bench.run --quick`` -- every
scenario at a tiny size, one round, all three servers -- and checks only that
it finished and wrote a number for every scenario and contestant.  Targets are
not asserted: quick sizes say nothing about performance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("pyftpdlib")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_mode_runs_every_scenario(tmp_path: Path) -> None:
    from bench.scenarios import SCENARIOS

    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--results-dir", str(tmp_path),
         "--max-seconds", "240"],
        cwd=REPO, capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)
    output = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, output

    files = list(tmp_path.glob("bench-*-quick.json"))
    assert len(files) == 1, output
    report = json.loads(files[0].read_text())
    assert report["mode"] == "quick"
    for key in ("nproc", "cpu_model", "python", "pyftpdlib"):
        assert report["machine"][key], key

    assert set(report["scenarios"]) == {s.name for s in SCENARIOS}
    for scenario in SCENARIOS:
        entry = report["scenarios"][scenario.name]
        assert set(entry["results"]) == set(scenario.contestants), scenario.name
        for who, result in entry["results"].items():
            assert not result["errors"], (scenario.name, who, result["errors"])
            assert len(result["values"]) == 1, (scenario.name, who)
            for stat in ("min", "median", "max"):
                value = result[stat]
                assert isinstance(value, int | float) and value >= 0, (scenario.name, who, stat)
        assert entry["targets"], scenario.name

    # The printed table names every scenario.
    for scenario in SCENARIOS:
        assert f"| {scenario.name} |" in proc.stdout
