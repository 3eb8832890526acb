#!/usr/bin/env python3
"""CLI benchmark: wall time of `pol check` as a commit hook and CI pay it.

Run from the repo root:

    python bench/cli.py                 # both cases, with their targets
    python bench/cli.py --runs 20       # more runs of the shipped case

Cases:
  shipped    `pol check policies`, median of --runs (10) subprocess runs; target 0.5 s
  10k rules  `pol check DIR` on the generated 10,000-rule policy (bench/corpus.py),
             written to a temporary directory; median of 3 runs; target 10 s

Each run is a fresh `python -m cli check` process timed with perf_counter around
`subprocess.run`, so interpreter start-up and imports count, as they do for a user.
A run that exits non-zero fails the benchmark. Timings are only as quiet as the
machine: run on an idle one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import gen_source  # noqa: E402  (bench/ is not a package)

TARGETS = {"shipped": 0.5, "10k rules": 10.0}


def time_check(path: str, runs: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cli", "check", path], cwd=ROOT, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"pol check {path} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of the shipped case (default 10)")
    parser.add_argument("--big-runs", type=int, default=3, help="runs of the 10,000-rule case (default 3)")
    args = parser.parse_args(argv)

    rows = [("shipped", "pol check policies", time_check("policies", args.runs))]
    with tempfile.TemporaryDirectory(prefix="pol-bench-") as tmp:
        Path(tmp, "generated.pol").write_text(gen_source(10_000), encoding="utf-8")
        rows.append(("10k rules", "pol check <10,000-rule set>", time_check(tmp, args.big_runs)))

    print(f"{'case':<10} {'command':<30} {'runs':>4} {'median':>9} {'min':>9} {'target':>8}  ok")
    failed = False
    for name, command, times in rows:
        median = statistics.median(times)
        ok = median < TARGETS[name]
        failed |= not ok
        print(f"{name:<10} {command:<30} {len(times):>4} {median:>8.3f}s {min(times):>8.3f}s {TARGETS[name]:>7.1f}s  {'yes' if ok else 'NO'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
