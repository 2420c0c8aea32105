"""PNG charts of a benchmark result, one per scenario family.

    python -m bench.charts bench/results/bench-YYYYmmdd-HHMMSS.json [--out DIR]
    python -m bench.charts --latest --docs     (``make bench-charts``)
    python -m bench.charts A.json B.json --docs   (scenarios of several runs; later wins)

``bench.run`` calls ``draw_all`` after every run; the charts go next to the
JSON (``bench-<stamp>-<family>.png``).  Each scenario of a family is a panel:
one bar per contestant at its median, a line over the bar from its min to its
max round, the median written beside it, ours in a colour of its own and
skipped contestants named.  The latency panel shows p50 and p99 side by side.
matplotlib is in the ``bench`` extra; without it the run still succeeds and
says that it drew nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from .registry import FAMILIES

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"
#: Largest chart committed under docs/bench/ (bigger ones stay in bench/results/).
DOCS_MAX_BYTES = 200 * 1024

OURS_COLOUR = "#1f77b4"
OTHER_COLOUR = "#a0a0a0"
P50_COLOUR = "#9ecae1"


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _bars(sc: dict[str, Any]) -> list[tuple[str, float | None, float, float, str | None]]:
    """(label, median, min, max, skipped reason) per contestant."""
    out = []
    for who in sc["contestants"]:
        r = sc["results"].get(who, {})
        med = r.get("median")
        out.append((who, med, r.get("min") or 0.0, r.get("max") or 0.0, r.get("skipped")))
    return out


def _panel(ax: Any, name: str, sc: dict[str, Any]) -> None:
    better = "higher" if sc["higher_is_better"] else "lower"
    ax.set_title(f"{name}: {sc['size']}  [{sc['unit']}, {better} is better]", fontsize=9,
                 loc="left")
    bars = _bars(sc)
    labels = [b[0] for b in bars]
    ys = list(range(len(bars)))[::-1]
    top = max([b[3] or b[1] or 0 for b in bars] + [1e-9])
    for y, (who, med, lo, hi, skipped) in zip(ys, bars, strict=True):
        if med is None:
            ax.text(0, y, f"  {'skipped: ' + skipped[:70] if skipped else 'failed'}",
                    va="center", fontsize=7, color="#777777")
            continue
        ax.barh(y, med, color=OURS_COLOUR if who.startswith("ours") else OTHER_COLOUR,
                height=0.6)
        if hi > lo:
            ax.plot([lo, hi], [y, y], color="black", linewidth=1)
        ax.text(max(med, hi) + top * 0.01, y, _fmt(med), va="center", fontsize=7)
    if name == "latency":
        _latency_p50(ax, sc, ys)
    floor = (sc.get("info") or {}).get("scrypt_floor_s")
    pyftpd = sc["results"].get("pyftpdlib", {}).get("median")
    if floor is not None and pyftpd is not None:
        # The password budget of issue 17: pyftpdlib's time plus the scrypt floor.
        budget = pyftpd + floor
        ax.axvline(budget, color="#d62728", linestyle="--", linewidth=1)
        ax.text(budget, -0.5, f" pyftpdlib + scrypt floor {_fmt(budget)}",
                fontsize=6, color="#d62728", va="bottom")
        top = max(top, budget)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, top * 1.25)
    ax.tick_params(axis="x", labelsize=7)


def _latency_p50(ax: Any, sc: dict[str, Any], ys: list[int]) -> None:
    """A thin p50 bar inside each p99 bar."""
    for y, who in zip(ys, sc["contestants"], strict=True):
        extras = sc["results"].get(who, {}).get("extras") or []
        p50 = [e["p50_ms"] for e in extras if "p50_ms" in e]
        if p50:
            med = statistics.median(p50)
            ax.barh(y, med, color=P50_COLOUR, height=0.3)
            ax.text(med, y, f" p50 {_fmt(med)}", fontsize=6, va="center")


def draw_family(report: dict[str, Any], family: str, names: list[str], path: Path) -> bool:
    """Draw one family's chart; False when the report has none of its scenarios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [n for n in names if n in report["scenarios"]]
    if not present:
        return False
    heights = [0.5 + 0.3 * len(report["scenarios"][n]["contestants"]) for n in present]
    fig, axes = plt.subplots(len(present), 1, figsize=(7.5, sum(heights) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, name in zip(axes[:, 0], present, strict=True):
        _panel(ax, name, report["scenarios"][name])
    m = report.get("machine", {})
    fig.suptitle(f"{family} -- {report.get('timestamp', '')} {report.get('mode', '')}, "
                 f"{report.get('rounds')} round(s); {m.get('nproc')} CPUs, load "
                 f"{(m.get('loadavg_at_start') or [0])[0]:.1f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


def draw_all(report: dict[str, Any], json_path: Path) -> list[str]:
    """Every family's chart next to ``json_path``; returns lines to print."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ["charts: matplotlib is not installed (pip install -e '.[bench]'); none drawn"]
    lines = []
    for family, names in FAMILIES.items():
        path = json_path.with_name(f"{json_path.stem}-{family}.png")
        if draw_family(report, family, names, path):
            lines.append(f"chart: {path} ({path.stat().st_size // 1024} KiB)")
    return lines


def draw_docs(report: dict[str, Any]) -> list[str]:
    """The charts under stable names in docs/bench/ (``<family>.png``), for
    BENCHMARKS.md to embed; a chart over DOCS_MAX_BYTES is removed again."""
    DOCS.mkdir(parents=True, exist_ok=True)
    lines = []
    for family, names in FAMILIES.items():
        path = DOCS / f"{family}.png"
        if not draw_family(report, family, names, path):
            continue
        size = path.stat().st_size
        if size > DOCS_MAX_BYTES:
            path.unlink()
            lines.append(f"chart: {path} was {size // 1024} KiB, over the limit: not kept")
        else:
            lines.append(f"chart: {path} ({size // 1024} KiB)")
    return lines


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs (e.g. a full run of some scenarios plus
    another of the rest): the last run's header, every run's scenarios."""
    merged = dict(reports[-1])
    merged["scenarios"] = {}
    for r in reports:
        merged["scenarios"].update(r["scenarios"])
    if len(reports) > 1:
        merged["timestamp"] = " + ".join(sorted({r["timestamp"][:16] for r in reports}))
    return merged


def latest(results: Path = RESULTS) -> Path:
    """The newest full-mode result (quick runs say nothing about speed)."""
    full = sorted(p for p in results.glob("bench-*.json") if not p.stem.endswith("-quick"))
    if not full:
        raise SystemExit(f"bench.charts: no full-mode result in {results}")
    return full[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path, nargs="*",
                        help="bench-*.json files (scenarios merged, a later file wins)")
    parser.add_argument("--latest", action="store_true",
                        help="the newest full-mode result in bench/results/")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the PNGs (default: beside the JSON)")
    parser.add_argument("--docs", action="store_true",
                        help="draw them as docs/bench/<family>.png for BENCHMARKS.md "
                             "(beside the JSON too only if --out is given)")
    args = parser.parse_args(argv)
    if args.latest == bool(args.result):
        parser.error("give result files or --latest")
    if args.latest:
        args.result = [latest()]
    report = merge([json.loads(p.read_text()) for p in args.result])
    args.result = args.result[-1]
    if args.docs:
        for line in draw_docs(report):
            print(line)
        if args.out is None:
            return 0                        # --docs alone: the results folder is left as is
    target = args.result if args.out is None else args.out / args.result.name
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    for line in draw_all(report, target):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
