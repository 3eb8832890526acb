#!/usr/bin/env python3
"""Engine benchmark: cost per decision of pol against a hand-written floor and peer engines.

Run from the repo root:

    python bench/engine.py                      # verify, then time every case (< ~10 min)
    python bench/engine.py --quick              # smoke run: small corpus, few repeats
    python bench/engine.py --verify             # only check every engine agrees with the floor
    python bench/engine.py --cases smuggling,10,100 --engines floor,pol,cel

Cases: the shipped human smuggling policy (embedded copy in bench/corpus.py) and generated
policies of 10 / 100 / 1,000 / 10,000 rules keyed on distinct topics. Each case has its own
floor (bench/floors.py) and its own deterministic corpus of 10,000 items (random.Random(N);
random.Random(0) for smuggling).

Engines: floor; pol (``ps.evaluate(a)`` and ``ps.evaluate(a).to_dict()``); and, with the
``[bench]`` extra installed, zen-engine, Cedar (cedarpy) and CEL (common-expression-language),
encoded in bench/peers.py.

Method: per case and engine, one warm-up pass, then the median of ``--repeats`` (>= 5 by
default) passes over the corpus, each timed with perf_counter_ns around the whole loop and
divided by the item count. An engine whose pass over the full corpus would exceed
``--pass-budget`` seconds is timed on a prefix slice of the corpus instead, of at least
``--min-slice`` items (reported in the ``items`` column): this keeps the 1,000- and
10,000-rule peers (Cedar and CEL evaluate every rule on every decision) within minutes.
Before timing, every engine's verdict (and deciding rule, where the engine reports one) is
checked against the floor's on the corpus (``--verify``; slow engines on a slice within
``--verify-budget``). Timings are only as quiet as the machine: run on an idle one.

Results: a table on stdout and the same as JSON in bench/results/engine.json (git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# `python bench/engine.py` puts bench/ first on sys.path, where this very file would shadow
# the `engine` package: drop it and put the repo root first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from bench import corpus as corpus_mod  # noqa: E402
from bench import floors, peers  # noqa: E402

ENGINE_GROUPS = ("floor", "pol", "zen", "cedar", "cel")
SAMPLE_DISAGREEMENTS = 5


# ============================================================================================
# Engines under test
# ============================================================================================

@dataclass
class Entry:
    """One measured line: a per-decision callable plus how to verify it."""

    label: str
    run: Callable[[dict], Any]                       # the timed call
    verdict: Callable[[dict], Any] | None = None     # -> verdict, or (verdict, rule) to compare
    compares_rule: bool = False
    note: str = ""
    build_seconds: float | None = None
    verify_extra: Callable[[dict], None] | None = None


@dataclass
class Outcome:
    label: str
    us: float | None = None
    runs: list[float] = field(default_factory=list)
    items: int = 0
    note: str = ""
    build_seconds: float | None = None
    error: str | None = None


def load_pol():
    """The pol engine's public API, or (None, reason) while it is still being written."""
    try:
        import engine  # the repo's engine/ package (see the sys.path fix above)

        compile_sources = engine.compile_sources
    except (ImportError, AttributeError) as e:
        return None, f"{type(e).__name__}: {e}"
    return compile_sources, ""


def format_diagnostics(result, limit: int = 10) -> str:
    diags = list(getattr(result, "diagnostics", None) or [])
    lines = [str(d) for d in diags[:limit]]
    if len(diags) > limit:
        lines.append(f"... and {len(diags) - limit} more")
    return "\n".join(lines) or "(no diagnostics)"


def pol_entries(compile_sources, case) -> tuple[list[Entry], str | None]:
    t = time.perf_counter()
    try:
        result = compile_sources({"bench.pol": case.source})
    except Exception as e:  # noqa: BLE001 - an unfinished engine must not stop the bench
        return [], f"compile_sources raised {type(e).__name__}: {e}"
    build = time.perf_counter() - t
    ps = getattr(result, "policy_set", None)
    if not getattr(result, "ok", False) or ps is None:
        return [], "compile errors:\n" + format_diagnostics(result)

    evaluate = ps.evaluate

    def to_dict(a):
        return evaluate(a).to_dict()

    def check_to_dict(a):
        d = evaluate(a)
        m = d.to_dict()
        json.dumps(m)  # must be JSON-able
        if isinstance(m, dict) and "verdict" in m and m["verdict"] != d.verdict:
            raise AssertionError(f"to_dict()['verdict']={m['verdict']!r} but verdict={d.verdict!r}")

    # Compare the deciding rule too when the Decision exposes it (``d.rule``).
    try:
        has_rule = hasattr(evaluate(case.corpus[0]), "rule")
    except Exception:  # noqa: BLE001 - reported by verification
        has_rule = False
    if has_rule:
        def verdict(a):
            d = evaluate(a)
            return (d.verdict, d.rule)
    else:
        def verdict(a):
            return evaluate(a).verdict

    return [
        Entry("pol evaluate", evaluate, verdict=verdict, compares_rule=has_rule,
              note="schema check + decide + justify", build_seconds=build),
        Entry("pol evaluate+to_dict", to_dict, verdict=verdict, compares_rule=has_rule,
              note="materialised decision", build_seconds=build, verify_extra=check_to_dict),
    ], None


def peer_entries(group: str, case) -> tuple[list[Entry], str | None]:
    ok, why = peers.peer_available(group)
    if not ok:
        return [], why
    out = []
    for cls in peers.PEERS[group]:
        try:
            p = cls(case)
        except Exception as e:  # noqa: BLE001
            return out, f"{cls.name}: build failed: {type(e).__name__}: {e}"
        out.append(Entry(p.name, p.decide, verdict=p.check, compares_rule=True,
                         note=p.note, build_seconds=p.build_seconds))
    return out, None


# ============================================================================================
# Verification
# ============================================================================================

def probe_cost_ns(f, items, n: int = 50) -> float:
    """Rough ns per call of f over the first n items (after one untimed go at them)."""
    probe = items[: min(n, len(items))]
    for a in probe:
        f(a)
    t0 = time.perf_counter_ns()
    for a in probe:
        f(a)
    return (time.perf_counter_ns() - t0) / len(probe)


def verify_entry(entry: Entry, floor, items: list[dict], budget_s: float, min_items: int) -> dict:
    """Compare the entry's verdict (and deciding rule, for peers) with the floor's."""
    try:
        est = probe_cost_ns(entry.verdict, items)
    except Exception as e:  # noqa: BLE001
        return {"checked": 0, "verdict_mismatches": 0, "rule_mismatches": 0, "errors": 1,
                "samples": [f"error on item 0: {type(e).__name__}: {e}"], "ok": False}
    n = len(items)
    if est * n > budget_s * 1e9:
        n = min(n, max(min_items, int(budget_s * 1e9 / est)))
    vm = rm = errs = 0
    samples: list[str] = []
    for idx in range(n):
        a = items[idx]
        fv, fr = floor(a)
        try:
            got = entry.verdict(a)
            if entry.verify_extra is not None:
                entry.verify_extra(a)
        except Exception as e:  # noqa: BLE001
            errs += 1
            if len(samples) < SAMPLE_DISAGREEMENTS:
                samples.append(f"item {idx} {json.dumps(a)}: {type(e).__name__}: {e}")
            continue
        ev, er = got if entry.compares_rule else (got, None)
        if ev != fv:
            vm += 1
            if len(samples) < SAMPLE_DISAGREEMENTS:
                samples.append(f"item {idx} {json.dumps(a)}: floor {fv} by {fr}, {entry.label} {ev}"
                               + (f" by {er}" if er else ""))
        elif entry.compares_rule and er != fr:
            rm += 1
            if len(samples) < SAMPLE_DISAGREEMENTS:
                samples.append(f"item {idx} {json.dumps(a)}: same verdict {fv}, deciding rule "
                               f"floor {fr}, {entry.label} {er}")
    return {"checked": n, "of": len(items), "verdict_mismatches": vm, "rule_mismatches": rm,
            "errors": errs, "samples": samples, "ok": vm == 0 and rm == 0 and errs == 0}


def print_verify(case_name: str, label: str, v: dict, compares_rule: bool) -> None:
    scope = f"{v['checked']:,}/{v.get('of', v['checked']):,} items"
    what = "verdict + deciding rule" if compares_rule else "verdict"
    if v["ok"]:
        print(f"  verify {case_name:>9} {label:<22} OK   ({what}, {scope})")
    else:
        print(f"  verify {case_name:>9} {label:<22} FAIL ({scope}: {v['verdict_mismatches']} verdict "
              f"mismatches, {v['rule_mismatches']} deciding-rule mismatches, {v['errors']} errors)")
        for s in v["samples"]:
            print(f"      {s}")
    sys.stdout.flush()


# ============================================================================================
# Timing
# ============================================================================================

def timed_pass(f, items) -> float:
    """Microseconds per decision for one pass over items."""
    t0 = time.perf_counter_ns()
    for a in items:
        f(a)
    return (time.perf_counter_ns() - t0) / len(items) / 1000.0


def time_entry(entry: Entry, items: list[dict], repeats: int, budget_s: float,
               min_items: int) -> Outcome:
    out = Outcome(entry.label, note=entry.note, build_seconds=entry.build_seconds)
    try:
        est = probe_cost_ns(entry.run, items)
    except Exception as e:  # noqa: BLE001
        out.error = f"{type(e).__name__}: {e}"
        return out
    n = len(items)
    if est * n > budget_s * 1e9:
        n = max(min_items, int(budget_s * 1e9 / est) // 100 * 100)
        n = min(n, len(items))
    sl = items[:n]
    out.items = n
    try:
        # Collect once, before the warm-up: a full collection walks every tracked object
        # (a 10,000-rule policy set is a big heap) and leaves the cache cold, which would be
        # charged to the first items of a cheap engine's pass.
        gc.collect()
        timed_pass(entry.run, sl)  # warm-up
        out.runs = [timed_pass(entry.run, sl) for _ in range(repeats)]
    except Exception as e:  # noqa: BLE001
        out.error = f"{type(e).__name__}: {e}"
        return out
    out.us = statistics.median(out.runs)
    return out


# ============================================================================================
# Compile time
# ============================================================================================

def measure_compile(compile_sources, sizes: list[int], runs: int, groups: set[str]) -> list[dict]:
    rows = []
    for n in sizes:
        case = corpus_mod.make_case(str(n), 1)
        if compile_sources is not None and "pol" in groups:
            times = []
            err = None
            for _ in range(runs):
                gc.collect()
                t = time.perf_counter()
                try:
                    r = compile_sources({"bench.pol": case.source})
                except Exception as e:  # noqa: BLE001
                    err = f"{type(e).__name__}: {e}"
                    break
                times.append(time.perf_counter() - t)
                if not getattr(r, "ok", False):
                    err = "compile errors:\n" + format_diagnostics(r, 3)
                    break
            rows.append({"engine": "pol compile_sources", "rules": n, "runs_s": times,
                         "median_s": statistics.median(times) if times and not err else None,
                         "error": err})
        # Peers' one-off build (parse/compile) cost, for context.
        for group in ("zen", "cedar", "cel"):
            if group not in groups or not peers.peer_available(group)[0]:
                continue
            cls = peers.PEERS[group][0]
            times = []
            for _ in range(runs):
                gc.collect()
                times.append(cls(case).build_seconds)
            rows.append({"engine": f"{group} build", "rules": n, "runs_s": times,
                         "median_s": statistics.median(times), "error": None})
    return rows


# ============================================================================================
# Main
# ============================================================================================

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1,000-item corpus, 3 repeats, small time budgets")
    ap.add_argument("--verify", action="store_true",
                    help="only verify every engine against the floor (no timing)")
    ap.add_argument("--no-verify", action="store_true", help="skip verification before timing")
    ap.add_argument("--cases", default=",".join(corpus_mod.ALL_CASES),
                    help="comma-separated subset of: " + ",".join(corpus_mod.ALL_CASES))
    ap.add_argument("--engines", default=",".join(ENGINE_GROUPS),
                    help="comma-separated subset of: " + ",".join(ENGINE_GROUPS))
    ap.add_argument("--corpus-size", type=int, help="items per corpus (default 10000; quick 1000)")
    ap.add_argument("--repeats", type=int, help="timed passes per engine (default 5; quick 3)")
    ap.add_argument("--pass-budget", type=float,
                    help="seconds one timed pass may take before the engine is timed on a corpus "
                         "slice instead (default 2; quick 0.3)")
    ap.add_argument("--min-slice", type=int,
                    help="fewest items an over-budget engine is timed / verified on "
                         "(default 1000; quick 100)")
    ap.add_argument("--verify-budget", type=float,
                    help="seconds verification of one engine may take before it checks a slice "
                         "(default 10; quick 2)")
    ap.add_argument("--compile", default=None,
                    help="rule counts to measure pol compile time for, median of 3 "
                         "(default 1000,10000; quick 1000; '' for none)")
    ap.add_argument("--json", default=str(HERE / "results" / "engine.json"),
                    help="where to write the JSON results")
    args = ap.parse_args(argv)
    q = args.quick
    args.corpus_size = args.corpus_size or (1000 if q else 10_000)
    args.repeats = args.repeats or (3 if q else 5)
    args.pass_budget = args.pass_budget if args.pass_budget is not None else (0.3 if q else 2.0)
    args.verify_budget = args.verify_budget if args.verify_budget is not None else (2.0 if q else 10.0)
    args.min_slice = args.min_slice or (100 if q else 1000)
    if args.compile is None:
        args.compile = "1000" if q else "1000,10000"
    args.compile_sizes = [int(x) for x in args.compile.split(",") if x.strip()]
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in args.case_list:
        if c not in corpus_mod.ALL_CASES:
            ap.error(f"unknown case {c!r}; choose from {','.join(corpus_mod.ALL_CASES)}")
    args.groups = {g.strip() for g in args.engines.split(",") if g.strip()}
    for g in args.groups:
        if g not in ENGINE_GROUPS:
            ap.error(f"unknown engine {g!r}; choose from {','.join(ENGINE_GROUPS)}")
    args.groups.add("floor")
    return args


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def fmt_us(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:,.3f}" if us < 10 else f"{us:,.1f}" if us < 10_000 else f"{us:,.0f}"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    compile_sources, pol_reason = load_pol()

    print(f"pol engine benchmark  (python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, commit {git_commit()})")
    print(f"corpus {args.corpus_size:,} items/case, {args.repeats} timed passes + 1 warm-up, "
          f"pass budget {args.pass_budget}s, cases {','.join(args.case_list)}")
    if "pol" in args.groups and compile_sources is None:
        print(f"pol: engine not available yet ({pol_reason})")
    skipped: list[dict] = []
    for g in ("zen", "cedar", "cel"):
        if g in args.groups:
            ok, why = peers.peer_available(g)
            if not ok:
                print(f"{g}: skipped: {why}")
                skipped.append({"engine": g, "reason": why})
            else:
                print(f"{g}: {peers.PEER_PACKAGES[g]} {peers.peer_version(g)}")
    print()
    sys.stdout.flush()

    report: dict[str, Any] = {
        "meta": {
            "python": platform.python_version(), "machine": platform.machine(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "commit": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "corpus_size": args.corpus_size,
            "repeats": args.repeats, "pass_budget_s": args.pass_budget, "quick": args.quick,
            "mode": "verify" if args.verify else "bench",
            "peer_versions": {g: peers.peer_version(g) for g in ("zen", "cedar", "cel")},
            "pol_available": compile_sources is not None,
            "pol_unavailable_reason": pol_reason or None,
            "unit": "microseconds per decision (median of passes over the corpus)",
        },
        "cases": {},
        "compile": [],
        "skipped": skipped,
    }
    all_ok = True
    table: list[tuple[str, Outcome, float | None]] = []

    for case_name in args.case_list:
        case = corpus_mod.make_case(case_name, args.corpus_size)
        items = case.corpus
        floor = floors.make_floor(case)
        crep: dict[str, Any] = {"rules": len(case.rules), "corpus_size": len(items),
                                "verify": {}, "results": [], "skipped": []}
        report["cases"][case_name] = crep
        hist: dict[str, int] = {}
        for a in items:
            v = floor(a)[0]
            hist[v] = hist.get(v, 0) + 1
        crep["floor_verdicts"] = hist
        print(f"== case {case_name}: {len(case.rules)} rules, {len(items):,} items, floor verdicts "
              + ", ".join(f"{k} {hist.get(k, 0)}" for k in corpus_mod.VERDICTS))
        sys.stdout.flush()

        entries = [Entry("floor", floor, note="hand-written Python")]
        if "pol" in args.groups:
            if compile_sources is None:
                crep["skipped"].append({"engine": "pol", "reason": f"engine not available yet ({pol_reason})"})
            else:
                es, why = pol_entries(compile_sources, case)
                if why:
                    print(f"  pol: skipped: {why}")
                    crep["skipped"].append({"engine": "pol", "reason": why})
                    all_ok = False
                entries += es
        for g in ("zen", "cedar", "cel"):
            if g in args.groups and peers.peer_available(g)[0]:
                es, why = peer_entries(g, case)
                if why:
                    print(f"  {g}: skipped: {why}")
                    crep["skipped"].append({"engine": g, "reason": why})
                    all_ok = False
                entries += es

        if not args.no_verify:
            min_items = min(len(items), args.min_slice)
            for e in entries[1:]:
                v = verify_entry(e, floor, items, args.verify_budget, min_items)
                crep["verify"][e.label] = v
                all_ok &= v["ok"]
                print_verify(case_name, e.label, v, e.compares_rule)
        if args.verify:
            print()
            continue

        floor_us = None
        for e in entries:
            o = time_entry(e, items, args.repeats, args.pass_budget, min(len(items), args.min_slice))
            if e.label == "floor":
                floor_us = o.us
            ratio = (o.us / floor_us) if (o.us is not None and floor_us) else None
            table.append((case_name, o, ratio))
            crep["results"].append({
                "engine": o.label, "us_per_decision": o.us, "ratio_to_floor": ratio,
                "runs_us": o.runs, "items_timed": o.items, "repeats": len(o.runs),
                "note": o.note, "build_seconds": o.build_seconds, "error": o.error,
            })
            sliced = f"  (timed on a {o.items:,}-item slice)" if o.items < len(items) else ""
            if o.error:
                print(f"  time   {case_name:>9} {o.label:<22} ERROR {o.error}")
                all_ok = False
            else:
                r = f"x{ratio:,.1f}" if ratio is not None else ""
                print(f"  time   {case_name:>9} {o.label:<22} {fmt_us(o.us):>10} us  {r}{sliced}")
            sys.stdout.flush()
        print()

    if not args.verify and args.compile_sizes:
        print(f"== compile time (median of 3) for {','.join(map(str, args.compile_sizes))} rules")
        sys.stdout.flush()
        report["compile"] = measure_compile(compile_sources, args.compile_sizes, 3, args.groups)
        if compile_sources is None and "pol" in args.groups:
            print(f"  pol: engine not available yet ({pol_reason})")
        print()

    # ---------------------------------------------------------------------------- summary
    if table:
        print("case       engine                   us/decision   x floor   items   note")
        print("---------  ----------------------  ------------  --------  ------  ----------------------------")
        for case_name, o, ratio in table:
            r = f"{ratio:,.1f}" if ratio is not None else "-"
            print(f"{case_name:<9}  {o.label:<22}  {fmt_us(o.us):>12}  {r:>8}  {o.items:>6}  "
                  f"{o.error or o.note}")
        for case_name, crep in report["cases"].items():
            for s in crep["skipped"]:
                print(f"{case_name:<9}  {s['engine']:<22}  {'skipped':>12}  {'-':>8}  {'-':>6}  "
                      f"{s['reason'].splitlines()[0]}")
        print()
    if report["compile"]:
        print("compile / build           rules    median s   runs s")
        for row in report["compile"]:
            med = f"{row['median_s']:.3f}" if row["median_s"] is not None else "-"
            runs = ", ".join(f"{x:.3f}" for x in row["runs_s"])
            print(f"{row['engine']:<24} {row['rules']:>6} {med:>11}   {runs}"
                  + (f"   {row['error'].splitlines()[0]}" if row["error"] else ""))
        print()
    if not args.no_verify:
        bad = [(c, lbl) for c, cr in report["cases"].items() for lbl, v in cr["verify"].items() if not v["ok"]]
        print("verify: all engines agree with the floor" if not bad else
              "verify: DISAGREEMENTS in " + ", ".join(f"{c}/{lbl}" for c, lbl in bad))
    if "pol" in args.groups and compile_sources is None:
        print("pol: engine not available yet")

    report["meta"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
          f"({report['meta']['wall_seconds']} s)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
