"""The benchmark harness in quick mode, once, so that it never rots.

``make bench`` is not part of the test suite (it takes minutes and its numbers
depend on the machine); this runs ``python -m bench.run --quick`` -- every
scenario but the object-store ones (``LEFT_TO_MAKE_BENCH_QUICK``) at a tiny
size, one round, every contestant -- and checks only that
it finished and wrote a number (or a reason it skipped) for every scenario and
contestant, and drew its charts.  Targets are not asserted: quick sizes say
nothing about performance.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.bench_background import background_run, start

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("pyftpdlib")

#: Contestants that may skip, and the reasons they may give: OpenSSH where sshd
#: cannot run, the object-store contestants where SeaweedFS or PostgreSQL cannot
#: start.  Every other contestant (ours over TLS and with --workers 2, pyftpdlib's
#: FTPS with pyOpenSSL from the dev extra) must produce a number.
_NO_SERVICES = r"cannot start here|cannot be imported|did not start"
ALLOWED_SKIPS = {
    ("tls-upload", "sftp"): r"^OpenSSH baseline: ",
    ("tls-upload", "scp"): r"^OpenSSH baseline: ",
    ("tls-download", "sftp"): r"^OpenSSH baseline: ",
    ("tls-download", "scp"): r"^OpenSSH baseline: ",
    ("s3-upload", "ours"): _NO_SERVICES,
    ("s3-upload", "boto3"): _NO_SERVICES,
    ("s3-download", "ours"): _NO_SERVICES,
    ("s3-download", "boto3"): _NO_SERVICES,
    ("metadata", "ours-pg"): _NO_SERVICES,
}


#: Scenarios the suite's quick run leaves to ``make bench-quick``: each starts its own
#: SeaweedFS and PostgreSQL and daemons on them (half a minute together, more than every
#: other scenario's quick run), and the object-store backend they drive is tested by the
#: suite's own object-store tests on the same services.
LEFT_TO_MAKE_BENCH_QUICK = {"s3-upload", "s3-download", "metadata"}


def suite_scenarios() -> list[Any]:
    from bench.registry import SCENARIOS

    return [s for s in SCENARIOS if s.name not in LEFT_TO_MAKE_BENCH_QUICK]


@pytest.fixture(scope="module")
def quick_run() -> tuple[dict[str, Any], str, Path]:
    """The quick run ``tests/bench_background.py`` started at collection (these tests
    run last, so it has overlapped the suite), or one started now."""
    run = background_run() or start([s.name for s in suite_scenarios()])
    status, stdout, stderr = run.wait(timeout=420)
    output = f"--- stdout\n{stdout[-6000:]}\n--- stderr\n{stderr[-6000:]}"
    assert status == 0, output
    files = list(run.results.glob("bench-*-quick.json"))
    assert len(files) == 1, output
    return json.loads(files[0].read_text()), stdout, files[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_mode_runs_every_scenario(quick_run: tuple[dict[str, Any], str, Path],
                                              ) -> None:
    from bench.registry import SCENARIOS

    report, stdout, _ = quick_run
    assert report["mode"] == "quick"
    for key in ("nproc", "cpu_model", "python", "pyftpdlib"):
        assert report["machine"][key], key

    assert {s.name for s in SCENARIOS} > LEFT_TO_MAKE_BENCH_QUICK
    assert set(report["scenarios"]) == {s.name for s in suite_scenarios()}
    for scenario in suite_scenarios():
        entry = report["scenarios"][scenario.name]
        assert set(entry["results"]) == set(scenario.contestants), scenario.name
        for who, result in entry["results"].items():
            assert not result["errors"], (scenario.name, who, result["errors"])
            if result["skipped"]:
                allowed = ALLOWED_SKIPS.get((scenario.name, who))
                assert allowed and re.search(allowed, result["skipped"]), \
                    (scenario.name, who, result["skipped"])
                continue
            assert len(result["values"]) == 1, (scenario.name, who)
            for stat in ("min", "median", "max"):
                value = result[stat]
                assert isinstance(value, int | float) and value >= 0, (scenario.name, who, stat)
        assert entry["targets"], scenario.name

    # The printed table names every scenario.
    for scenario in suite_scenarios():
        assert f"| {scenario.name} |" in stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_upload_has_the_durable_baseline_and_its_target(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    upload = quick_run[0]["scenarios"]["upload"]
    assert upload["results"]["raw-durable"]["median"] > 0
    assert [t["text"] for t in upload["targets"]] == ["ours/raw-durable >= 0.9"]
    assert upload["ratios"]["ours/pyftpdlib"] and upload["ratios"]["ours/raw"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_small_files_and_verified_show_the_durable_floor_without_a_target(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    for name in ("small-files", "verified", "latency", "concurrent"):
        scenario = quick_run[0]["scenarios"][name]
        assert scenario["results"]["raw-durable"]["median"] > 0, name
        assert scenario["ratios"]["ours/raw-durable"], name
        assert not any("raw-durable" in t["text"] for t in scenario["targets"]), name


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_concurrent_reports_both_logins_against_the_scrypt_floor(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    concurrent = quick_run[0]["scenarios"]["concurrent"]
    assert concurrent["results"]["ours-token"]["median"] > 0
    assert concurrent["info"]["scrypt_floor_s"] > 0
    assert len(concurrent["targets"]) == 2
    assert all(t["value"] is not None for t in concurrent["targets"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_latency_records_percentiles_of_each_request_kind(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    latency = quick_run[0]["scenarios"]["latency"]
    for who in ("ours", "pyftpdlib", "raw-durable"):
        (extra,) = latency["results"][who]["extras"]
        assert 0 < extra["p50_ms"] <= extra["p99_ms"] <= extra["max_ms"], who
        for kind in ("stat", "ls", "put"):
            assert extra[f"{kind}_p99_ms"] > 0, (who, kind)
        assert extra["bulk_passes"] >= 4, who          # every bulk client moved its file


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_draws_one_chart_per_family(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    from bench.registry import FAMILIES

    _, stdout, json_path = quick_run
    if importlib.util.find_spec("matplotlib") is None:
        assert "charts: matplotlib is not installed" in stdout
        return
    ran = {s.name for s in suite_scenarios()}
    for family in (f for f, names in FAMILIES.items() if ran & set(names)):
        png = json_path.with_name(f"{json_path.stem}-{family}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", family


def _extras(report: dict[str, Any], scenario: str, who: str) -> dict[str, Any]:
    (extra,) = report["scenarios"][scenario]["results"][who]["extras"]
    return extra


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_tls_bulk_compares_ours_with_pyftpdlib_ftps(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    report = quick_run[0]
    for name in ("tls-upload", "tls-download"):
        sc = report["scenarios"][name]
        assert sc["results"]["ours"]["median"] > 0, name
        assert sc["results"]["pyftpdlib-tls"]["median"] > 0, name
        assert _extras(report, name, "pyftpdlib-tls")["tls_version"] == "TLSv1.3", name
        texts = [t["text"] for t in sc["targets"]]
        assert "ours/pyftpdlib-tls >= 1.5" in texts and "ours/raw-tls >= 0.8" in texts, name


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_tls_reconnects_resume_their_session(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    report = quick_run[0]
    cycles = report["sizes"]["token_cycles"]
    assert _extras(report, "tls-reconnect", "ours")["resumed"] == cycles
    assert report["scenarios"]["tls-reconnect"]["results"]["pyftpdlib-tls"]["median"] > 0
    for who in ("ours", "ours-w2"):
        assert _extras(report, "workers-reconnect", who)["resumed"] > 0, who


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_workers_report_cpu_per_gib_and_tls(
        quick_run: tuple[dict[str, Any], str, Path]) -> None:
    report = quick_run[0]
    for who in ("ours", "ours-w2"):
        extra = _extras(report, "workers", who)
        assert extra["tls"] is True, who
        assert extra["server_cpu_s_per_gib"] > 0 and extra["client_cpu_s_per_gib"] > 0, who
        idle = _extras(report, "tls-idle", who)
        assert idle["held"] == report["sizes"]["idle"], who
    logins = report["scenarios"]["tls-password-login"]
    assert logins["results"]["ours-plaintext"]["median"] > 0
    assert len(logins["targets"]) == 3


def test_latency_percentile_interpolates_between_ranks() -> None:
    from bench.latency import percentile

    values = [float(v) for v in range(1, 101)]        # 1..100
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([7.0], 0.99) == 7.0
