"""Benchmarks, run by hand, never in the test suite.

    python -m scripts.bench              # every case with its yardstick: the table
    python -m scripts.bench --json       # the same, as JSON
    python -m scripts.bench --only edge,forwarder
    python -m scripts.bench matcher|forwarder|edge [...]   # the older single cases
    python -m scripts.bench cluster      # matchers 1, 2, 3 on a local 3-master cluster

Each case measures a figure and, in the same run and under the same load, a yardstick,
and prints their ratio against its target (see README "Performance"). Every case uses a
throwaway namespace on ``REDIS_URL`` and deletes it afterwards. The edge cases need
``wrk`` (Debian/Ubuntu: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time

import orjson

from core.config import Settings, usable_cpus

LEGACY = {
    "matcher": "scripts.bench_matcher",
    "forwarder": "scripts.bench_forwarder",
    "edge": "scripts.bench_edge",
    "cluster": "scripts.bench_cluster",
}
CASES = ("edge", "matcher", "forwarder", "batch", "latency")


def _machine() -> dict:
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = "?"
    return {
        "cpus": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_before": load,
    }


def run_cases(names: list[str], args: argparse.Namespace) -> list:
    from scripts import bench_forwarder, bench_ingest, bench_latency, bench_matcher

    base = Settings.from_env()
    runners = {
        "edge": lambda: bench_ingest.edge_row(
            base, seconds=args.seconds, workers=args.workers, threads=args.threads
        ),
        "matcher": lambda: bench_matcher.matcher_row(base, postbacks=args.postbacks),
        "forwarder": lambda: bench_forwarder.forwarder_row(base, jobs=args.jobs),
        "batch": lambda: bench_ingest.batch_row(
            base, requests=20, size=1000, clients=2, workers=args.workers, threads=args.threads
        ),
        "latency": lambda: bench_latency.latency_row(
            base, rate=args.rate, seconds=args.seconds, workers=args.workers
        ),
    }
    rows = []
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows.append(runners[name]())
    return rows


def format_table(rows: list, machine: dict, seconds: float) -> str:
    lines = [
        f"postback-relay benchmark: {machine['cpus']} CPUs, {machine['platform']}, "
        f"Python {machine['python']}, loadavg before {machine['loadavg_before']}, "
        f"after {machine.get('loadavg_after', '?')}, {seconds:.0f} s",
        "",
        "| figure | measured | yardstick | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        sign = "≥" if row.better == "higher" else "≤"
        verdict = "ok" if row.meets else "MISSED"
        lines.append(
            f"| {row.case} | {row.figure:,.0f} {row.unit} | {row.yardstick:,.0f} "
            f"({row.yardstick_name}) | {row.ratio:.2f} | {sign} {row.target:g} {verdict} |"
        )
    notes = [f"- {row.case}: {'; '.join(row.notes)}" for row in rows if row.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in LEGACY:
        return int(importlib.import_module(LEGACY[argv[0]]).main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--only", help=f"comma-separated cases of {', '.join(CASES)}")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk / latency duration")
    parser.add_argument("--postbacks", type=int, default=100_000, help="matcher case")
    parser.add_argument("--jobs", type=int, default=3000, help="forwarder case")
    parser.add_argument("--rate", type=float, default=500.0, help="latency case, postbacks/s")
    parser.add_argument("--workers", default="auto", help="edge processes (as the Procfile)")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads per edge")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")

    machine = _machine()
    started = time.monotonic()
    try:
        rows = run_cases(names, args)
    except RuntimeError as exc:  # a missing tool, a server that did not start
        print(f"python -m scripts.bench: {exc}", file=sys.stderr)
        return 1
    machine["loadavg_after"] = _machine()["loadavg_before"]
    elapsed = time.monotonic() - started
    if args.json:
        out = {"machine": machine, "seconds": round(elapsed, 1), "cases": []}
        out["cases"] = [row.as_json() for row in rows]
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_table(rows, machine, elapsed))
    return 0 if all(row.meets for row in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
