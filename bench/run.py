"""Run the benchmarks: ``python -m bench.run [--quick] [--only A,B] [--rounds N]``.

Every scenario runs its contestants interleaved, round by round (ours,
pyftpdlib, raw, ours, pyftpdlib, raw...), each measurement on a server of its
own; the table compares medians, with ratios oriented so that > 1 means ours
is better.  Results go to ``bench/results/bench-<timestamp>[-quick].json``,
and one PNG chart per scenario family beside it (``bench.charts``; needs
matplotlib from the ``bench`` extra, else skipped with a message).

Exit status: 0 when every measurement produced a number or was skipped with a
reason (a contestant that cannot run here or yet: no sshd, a daemon flag that
does not exist yet; missed targets are reported, not failures), 1 when a
measurement failed, 2 for bad arguments, 3 when the whole run overran
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .common import (
    REGISTRY,
    Series,
    Skipped,
    Workspace,
    flush_disk,
    machine_info,
    raise_nofile_limit,
)
from .registry import BY_NAME, SCENARIOS
from .scenarios import FULL, PYFTPD, QUICK, RAW, Context, Scenario, ratio

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, 1 round: checks the harness, not the daemon")
    parser.add_argument("--only", default="",
                        help="comma-separated scenario names: " + ", ".join(BY_NAME))
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per scenario (default 3, quick 1)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where the JSON result goes (default bench/results)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="abort the whole run after this long (default 3 h, quick 5 min)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--no-charts", action="store_true", help="do not draw the PNG charts")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be between 1 and 50")
    if args.max_seconds is None:
        args.max_seconds = 300.0 if args.quick else 3 * 3600.0
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    args.selected = [BY_NAME[n] for n in names] if names else list(SCENARIOS)
    return args


# ---------------------------------------------------------------- running


def run_scenario(scenario: Scenario, ctx: Context, rounds: int) -> dict[str, Any]:
    series = {who: Series() for who in scenario.contestants}
    print(f"\n== {scenario.name}: {scenario.title} [{scenario.size_text(ctx.sizes)}]",
          flush=True)
    started = time.monotonic()
    try:
        scenario.prepare(ctx)
        for r in range(rounds):
            for who in scenario.contestants:
                if series[who].skipped:
                    continue                # skipped once: the same reason every round
                flush_disk()
                try:
                    value, extra = scenario.measure(ctx, who)
                except Skipped as exc:
                    series[who].skipped = str(exc)
                    print(f"   round {r + 1} {who:<10} skipped: {exc}", flush=True)
                    continue
                except Exception as exc:  # noqa: BLE001 -- recorded; the run goes on
                    series[who].errors.append(f"round {r + 1}: {exc!r}")
                    print(f"   round {r + 1} {who:<10} FAILED: {exc!r}", flush=True)
                    traceback.print_exc()
                    continue
                series[who].values.append(value)
                series[who].extras.append(extra)
                cpu = ""
                if "server_cpu_s" in extra:
                    cpu = (f"  (wall {extra['seconds']:.2f} s, server CPU "
                           f"{extra['server_cpu_s']:.2f} s, "
                           f"client CPU {extra['client_cpu_s']:.2f} s)")
                print(f"   round {r + 1} {who:<10} {_fmt(value):>9} {scenario.unit}{cpu}",
                      flush=True)
    except Exception as exc:  # noqa: BLE001 -- a failed prepare fails the scenario only
        for s in series.values():
            s.errors.append(f"prepare: {exc!r}")
        print(f"   prepare FAILED: {exc!r}", flush=True)
        traceback.print_exc()
    finally:
        scenario.finish(ctx)
    results = {who: s.summary() for who, s in series.items()}
    medians = {who: r["median"] for who, r in results.items()}
    ours = medians.get("ours")
    targets = scenario.targets(medians)
    return {
        "title": scenario.title,
        "size": scenario.size_text(ctx.sizes),
        "unit": scenario.unit,
        "higher_is_better": scenario.higher_is_better,
        "contestants": list(scenario.contestants),
        "results": results,
        "ratios": {f"ours/{other}": ratio(ours, medians.get(other), scenario.higher_is_better)
                   for other in scenario.contestants if other != "ours"},
        "variants": {name: {"about": about,
                            f"{name}/{PYFTPD}": ratio(medians.get(name), medians.get(PYFTPD),
                                                      scenario.higher_is_better)}
                     for name, about in scenario.variants.items()},
        "targets": [t.as_dict() for t in targets],
        "info": scenario.info(),
        "seconds": time.monotonic() - started,
    }


# ---------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.{digits}f}"


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "n/a"
    if result["median"] is None:
        return "skipped" if result.get("skipped") else "FAILED"
    if len(result["values"]) == 1:
        return _fmt(result["median"])
    return f"{_fmt(result['median'])} ({_fmt(result['min'])}-{_fmt(result['max'])})"


def _ratio_cell(value: float | None, present: bool) -> str:
    return f"{value:.2f}x" if value is not None else ("-" if present else "n/a")


def _target_cell(targets: list[dict[str, Any]]) -> str:
    parts = []
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "no data"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        if t["value"] is not None and value == f"{t['threshold']:.2f}":
            value = f"{t['value']:.3f}"         # 1.196 must not print as a missed 1.20
        parts.append(f"{t['text']}: {value} {verdict}")
    return "; ".join(parts)


def _others_cell(sc: dict[str, Any]) -> str:
    """Contestants beyond ours/pyftpdlib/raw: ``name: median (ratio)`` each."""
    parts = []
    for who in sc["contestants"]:
        if who in ("ours", PYFTPD, RAW) or who in sc.get("variants", {}):
            continue
        result = sc["results"].get(who)
        ratio_text = _ratio_cell(sc["ratios"].get(f"ours/{who}"), True)
        parts.append(f"{who}: {_cell(result)} (ours/{who} {ratio_text})")
    return "; ".join(parts) or "-"


def table(report: dict[str, Any]) -> str:
    header = ["scenario", "size", "unit", "ours", "pyftpdlib", "raw", "ours/pyftpdlib",
              "ours/raw", "other contestants (ratio)", "targets"]
    rows = [header, ["---"] * len(header)]
    for name, sc in report["scenarios"].items():
        res = sc["results"]
        better = "higher" if sc["higher_is_better"] else "lower"
        rows.append([
            name, sc["size"], f"{sc['unit']} ({better} is better)",
            _cell(res.get("ours")), _cell(res.get(PYFTPD)), _cell(res.get(RAW)),
            _ratio_cell(sc["ratios"].get(f"ours/{PYFTPD}"), PYFTPD in res),
            _ratio_cell(sc["ratios"].get(f"ours/{RAW}"), RAW in res),
            _others_cell(sc), _target_cell(sc["targets"]),
        ])
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    skipped = [f"* {name}, {who}: {r['skipped']}" for name, sc in report["scenarios"].items()
               for who, r in sc["results"].items() if r.get("skipped")]
    if skipped:
        lines += ["", "Skipped (not failures):", *skipped]
    notes = []
    for name, sc in report["scenarios"].items():
        for variant, facts in sc.get("variants", {}).items():
            vs = facts.get(f"{variant}/{PYFTPD}")
            notes.append(f"* {name}, {variant}: {_cell(sc['results'].get(variant))} {sc['unit']}"
                         f" ({variant}/pyftpdlib {_ratio_cell(vs, True)}): {facts['about']}.")
    if notes:
        lines += ["", "Variants (not targets):", *notes]
    return "\n".join(lines)


def _cpu_cell(result: dict[str, Any] | None) -> str:
    extras = (result or {}).get("extras") or []
    server = [e["server_cpu_s"] for e in extras if "server_cpu_s" in e]
    client = [e["client_cpu_s"] for e in extras if "client_cpu_s" in e]
    if not server:
        return "-"
    return f"{statistics.median(server):.2f} / {statistics.median(client):.2f}"


def cpu_table(report: dict[str, Any]) -> str:
    """Median CPU seconds per measurement: server (by PID) / clients (this process),
    for ours, pyftpdlib and raw, and for every other contestant in the last column."""
    whos = ["ours", PYFTPD, RAW]
    rows = [["scenario", *[f"{w} server / client CPU s" for w in whos],
             "others: server / client CPU s"], ["---"] * 5]
    for name, sc in report["scenarios"].items():
        cells = [_cpu_cell(sc["results"].get(who)) for who in whos]
        others = [f"{who} {cell}" for who in sc["contestants"] if who not in whos
                  and (cell := _cpu_cell(sc["results"].get(who))) != "-"]
        if any(c != "-" for c in cells) or others:
            rows.append([name, *cells, "; ".join(others) or "-"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


# ---------------------------------------------------------------- main


def _watchdog(seconds: float, ws: Workspace) -> threading.Timer:
    def expire() -> None:
        print(f"\nbench: the run overran --max-seconds={seconds:g}; stopping", file=sys.stderr,
              flush=True)
        REGISTRY.kill_all()
        ws.cleanup()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def warm_memory(limit: int = 8 << 30) -> int:
    """Touch most free memory once, then free it.

    On a virtual machine the first write to a guest page that was never used
    is several times slower than later writes (measured here: 450 MiB/s against
    3.4 GiB/s for the same 1 GiB os.write loop), and whichever contestant first
    gets such pages for its page cache loses.  Touching them up front gives every
    contestant warm memory.  Returns the MiB touched.
    """
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
    size = max(0, min(limit, info.get("MemAvailable", 0) - (4 << 30)))
    chunks = [bytearray(1 << 28) for _ in range(size >> 28)]   # zero-filled: every page touched
    touched = len(chunks) << 8
    del chunks
    return touched


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:<15} {s.title}")
        return 0

    def _terminate(*_: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _terminate)
    raise_nofile_limit()
    sizes = QUICK if args.quick else FULL
    ws = Workspace()
    timer = _watchdog(args.max_seconds, ws)
    started = time.time()
    report: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine_info(),
        "sizes": sizes.describe(),
        "scenarios": {},
    }
    print(f"bench: {report['mode']} run, {args.rounds} round(s), workspace {ws.path}",
          flush=True)
    if not args.quick:
        report["machine"]["warmed_mib"] = warm_memory()
    try:
        ctx = Context(ws, sizes, args.quick)
        if args.quick:                      # overlap slow set-up; quick figures mean nothing
            for scenario in args.selected:
                scenario.early(ctx)
        for scenario in args.selected:
            report["scenarios"][scenario.name] = run_scenario(scenario, ctx, args.rounds)
    finally:
        REGISTRY.kill_all()
        ws.cleanup()
        timer.cancel()
    report["seconds"] = time.time() - started
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())

    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out = args.results_dir / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    m = report["machine"]
    print(f"\nMachine: {m['nproc']} x {m['cpu_model']}, {m['memory_gib']} GiB, "
          f"Linux {m['kernel']}, Python {m['python']}, pyftpdlib {m['pyftpdlib']}; "
          f"load {m['loadavg_at_start'][0]:.2f} -> {m['loadavg_at_end'][0]:.2f}")
    print(f"Mode: {report['mode']}, {args.rounds} round(s), medians (min-max); "
          f"{report['seconds']:.0f} s in all\n")
    print(table(report))
    print("\nCPU time behind those figures (medians; wall-clock rates on a shared machine "
          "move with other load, CPU seconds much less):\n")
    print(cpu_table(report))
    print(f"\nresults: {out}")
    if not args.no_charts:
        from .charts import draw_all

        for line in draw_all(report, out):
            print(line)
    failed = [name for name, sc in report["scenarios"].items()
              if any(r["errors"] for r in sc["results"].values())]
    if failed:
        print(f"bench: measurements failed in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
