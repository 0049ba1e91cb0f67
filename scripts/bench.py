"""Throughput benchmarks, run by hand, never in the test suite.

    python -m scripts.bench matcher      # preload 100,000 postbacks, time one matcher
    python -m scripts.bench forwarder    # deliveries/s to a fast and a 50 ms local sink
    python -m scripts.bench edge         # requests/s of single-postback GETs

Each case uses a throwaway namespace on ``REDIS_URL`` and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import importlib
import sys

CASES = {
    "matcher": "scripts.bench_matcher",
    "forwarder": "scripts.bench_forwarder",
    "edge": "scripts.bench_edge",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("case", choices=sorted(CASES))
    args, rest = parser.parse_known_args(argv)
    return int(importlib.import_module(CASES[args.case]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
