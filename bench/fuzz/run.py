#!/usr/bin/env python3
"""Run the compiler fuzzing strategy of tests/test_fuzz_compiler.py for many cases.

    python bench/fuzz/run.py                 # 100,000 cases
    python bench/fuzz/run.py --cases 5000 --seed 1

Draws mutated policy sets from `mutated_files()` (hypothesis, reproducible for a seed),
checks `check_invariants` on each, and reports: cases tried, diagnostics by code, crashes
(any exception or failed invariant: 0 expected, each printed with its input), and the
slowest case. Exits 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.test_fuzz_compiler import check_invariants, mutated_files  # noqa: E402


CHUNK = 1_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=5, help="crashes to print in full")
    ap.add_argument("--save", type=Path, help="write each crashing case's files under DIR/N/, to replay with --replay")
    ap.add_argument("--replay", type=Path, metavar="DIR", help="check the one case saved in DIR (by --save) and exit")
    args = ap.parse_args()
    if args.replay:
        return replay(args.replay)

    codes: collections.Counter[str] = collections.Counter()
    crashes: list[tuple[object, str]] = []
    stats = {"cases": 0, "clean": 0, "max": 0.0, "max_case": None}
    started = time.monotonic()

    def one(case) -> None:
        stats["cases"] += 1
        t0 = time.process_time()
        try:
            result = check_invariants(case.files, case.target)
        except Exception:  # noqa: BLE001 - every failure is a finding, reported below
            crashes.append((case, traceback.format_exc()))
            if args.save:
                save(args.save / str(len(crashes)), case, crashes[-1][1])
            return
        finally:
            took = time.process_time() - t0
            if took > stats["max"]:
                stats["max"], stats["max_case"] = took, case
        codes.update(d.code for d in result.diagnostics)
        stats["clean"] += result.ok
        if stats["cases"] % 1000 == 0:
            print(f"  {stats['cases']} cases, {len(crashes)} crashes, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    # Chunks of CHUNK cases, each a fresh hypothesis run (seeded from --seed and the chunk's
    # number): one run keeps every example it drew, about 300,000 objects per 1,000 cases,
    # and the collector's full passes over that heap (seconds each, past 50,000 cases)
    # were charged to whichever compile triggered them.
    for chunk, start in enumerate(range(0, args.cases, CHUNK)):
        run = seed(args.seed * 1_000_003 + chunk)(
            settings(max_examples=min(CHUNK, args.cases - start), deadline=None, database=None, suppress_health_check=list(HealthCheck), phases=["generate"])(
                given(case=mutated_files())(one)
            )
        )
        run()

    elapsed = time.monotonic() - started
    print(f"cases tried:        {stats['cases']}")
    print(f"compiled clean:     {stats['clean']}")
    print(f"crashes:            {len(crashes)}")
    print(f"max time per case:  {stats['max']:.3f} s")
    print(f"mean time per case: {elapsed / max(stats['cases'], 1) * 1000:.1f} ms ({elapsed:.0f} s total)")
    print("diagnostics by code:")
    for code, n in sorted(codes.items()):
        print(f"  {code}  {n}")
    for case, tb in crashes[: args.show]:
        print("-" * 72)
        print(repr(case)[:3000])
        print(tb)
    row = {
        "class": "compiler fuzzing",
        "inputs": (
            f"{stats['cases']:,} mutated policy sets (tokens deleted, inserted, swapped, duplicated; random bytes; huge literals;"
            f" long identifiers; deep nesting; unicode), seed {args.seed}; {stats['clean']:,} compiled clean; slowest {stats['max']:.2f} s"
        ),
        "load": "",
        "faults": "",
        "survived": not crashes,
        "errors": len(crashes),
        "lost": 0,
        "command": f"python bench/fuzz/run.py --cases {args.cases} --seed {args.seed}",
    }
    results = ROOT / "bench" / "results" / "reliability"
    results.mkdir(parents=True, exist_ok=True)
    (results / "fuzz-compiler.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return 1 if crashes else 0


def save(folder: Path, case, trace: str) -> None:
    """The case's files as bytes (names kept), the mutated one named in `target`, and the failure."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, data) in enumerate(sorted(case.files.items())):
        (folder / f"{i}.bin").write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    meta = {"names": sorted(case.files), "target": case.target, "str": [isinstance(case.files[n], str) for n in sorted(case.files)]}
    (folder / "case.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    (folder / "failure.txt").write_text(trace, encoding="utf-8")


def replay(folder: Path) -> int:
    """Check a case written by `save`, timing each stage."""
    meta = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    files: dict[str, str | bytes] = {}
    for i, (name, is_str) in enumerate(zip(meta["names"], meta["str"])):
        data = (folder / f"{i}.bin").read_bytes()
        files[name] = data.decode("utf-8", "surrogatepass") if is_str else data
    sizes = {name: len(data) for name, data in files.items()}
    print(f"files: {sizes}, target {meta['target']}")
    start = time.process_time()
    try:
        check_invariants(files, meta["target"])
    except AssertionError as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        print(f"{time.process_time() - start:.2f} s of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
