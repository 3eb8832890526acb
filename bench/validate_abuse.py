#!/usr/bin/env python3
"""ValidatePolicy abuse at full size: time and memory per hostile input, and Evaluate meanwhile.

    python bench/validate_abuse.py                    # every class, 3 runs each
    python bench/validate_abuse.py --repeat 1 --classes parens,redos
    python bench/validate_abuse.py --validate-timeout 2 --validate-memory-mb 256

Two real `pol serve --workers 1` processes: one with every limit at its default (for the
source-size class), one with --max-message-bytes and --max-source-bytes raised to 64 MiB so
10 MB sources reach the compiler; both take --validate-timeout and --validate-memory-mb
from the flags (defaults: the server's, 5 s and 512 MiB).

Classes (each sent `--repeat` times): `oversize` (10 MB at the default limits: refused
RESOURCE_EXHAUSTED before any compile), `10mb-rules` (110,000 rules), `10mb-string` (one
10 MB string literal), `10mb-comment`, `parens` (100,000 nested parentheses: P005),
`nots` (100,000 `not`s: P005), `unclosed` (100,000 `(` never closed: P001), `rules-5000`,
`rules-20000`, `redos` (six catastrophic-backtracking patterns in `matches`, accepted; and,
in this process, the compiled policy decides a 1 MB string of `a`s plus `!` per pattern).
An answer is expected when it is what the class calls for (a refusal for `oversize`,
P005 for `parens`, no errors for `redos`, the code named above for `nots` and `unclosed`,
any answer for the rest) or, except for `oversize`, `parens` and `redos`, a
RESOURCE_EXHAUSTED naming --validate-timeout or --validate-memory-mb. Anything else
(INTERNAL, UNKNOWN, a dead server) counts as an error.

Measured per class: each call's wall time; the peak resident memory of the compiler
processes (VmRSS of every child of the server, sampled every 10 ms from /proc, and VmHWM
after the call); the server process's own VmRSS before and after. Meanwhile another
process calls Evaluate without pause on its own connection to the raised-limits server:
its p99 during each class is compared with its p99 before any abuse, and must stay under
`--p99-bound-ms` (default 250; the machine's two cores are shared with the compiler
process and the abusing client). Last, SIGTERM: both servers must exit 0 with no compiler
process left.

Writes bench/results/reliability/validate_abuse-<class>.json (and `-shutdown`); exit 1 if
any class did not survive.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "reliability"
OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
BIG = str(64 << 20)
N = 100_000
REDOS = ["(a+)+$", "(a|aa)+$", "(a|a?)+$", "^(a+)+b", "(.*a){20}", "(\\\\w+\\\\s?)*$"]


def rules(n: int) -> str:
    body = "".join(f'  rule r{i} {{ when confidence >= 0.{i % 10} and topic == "weapons" then remove because "rule {i}" }}\n' for i in range(n))
    return f"policy many for content {{\n{body}}}\n"


def rule(condition: str) -> str:
    return f'policy p for content {{\n  rule a {{ when {condition} then remove because "x" }}\n}}\n'


def regex_policy(pattern: str) -> str:
    return f'policy redos for content {{\n  rule a {{ when has text and text matches "{pattern}" then remove because "x" }}\n  otherwise allow because "n"\n}}\n'


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # for the report
    sources: tuple[str, ...]
    expect: str  # "refused" (RESOURCE_EXHAUSTED), "ok" (an answer without errors), "any" (an answer), or a code the answer must hold
    limit_ok: bool = True  # a refusal naming --validate-timeout or --validate-memory-mb is expected too
    server: str = "raised"  # or "default"


def cases() -> list[Case]:
    big_string = 'policy p for content {\n  rule a { when confidence > 0.5 then remove because "' + "x" * 10_000_000 + '" }\n}\n'
    return [
        Case("oversize", "a 10 MB source at the default limits", (rules(110_000),), "refused", server="default"),
        Case("10mb-rules", "10 MB of rules (110,000)", (rules(110_000),), "any"),
        Case("10mb-string", "one 10 MB string literal", (big_string,), "any"),
        Case("10mb-comment", "a 10 MB comment", ("# " + "x" * 10_000_000 + "\n",), "any"),
        Case("parens", "100,000 nested parentheses", (rule("(" * N + "mentions_minor" + ")" * N),), "P005", limit_ok=False),
        Case("nots", "100,000 `not`s in a row", (rule("not " * N + "mentions_minor"),), "P005"),
        Case("unclosed", "100,000 `(` never closed", (rule("(" * N + "mentions_minor"),), "P001"),
        Case("rules-5000", "5,000 rules", (rules(5_000),), "any"),
        Case("rules-20000", "20,000 rules", (rules(20_000),), "any"),
        Case("redos", f"{len(REDOS)} catastrophic regexes in `matches`", tuple(regex_policy(p) for p in REDOS), "ok", limit_ok=False),
    ]


# ---- /proc -----------------------------------------------------------------------------------


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found |= {int(k) for k in path.read_text().split()}
        except OSError:
            pass
    return found


class Sampler(threading.Thread):
    """Peak VmRSS over the server's children (the compiler processes), every 10 ms, since the last reset."""

    def __init__(self, server_pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.server_pids = server_pids
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for server in self.server_pids:
                for child in children(server):
                    self.peak_kb = max(self.peak_kb, status_kb(child, "VmRSS"), status_kb(child, "VmHWM"))
            time.sleep(0.01)


def evaluate_loop(address: str, ready, stop, out) -> None:
    """Evaluate without pause (setting `ready` after the first answer) until `stop` is set, then send (start, end, ok) per call to `out`.

    Runs in its own process, so the abusing client's work (serialising 10 MB) never slows it:
    what it measures is the server.
    """
    from server.client import PolError, PolicyClient

    calls = []
    with PolicyClient(address, timeout=10) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                ok = client.evaluate(OFFER).verdict == "remove"
            except PolError:
                ok = False
            calls.append((start, time.monotonic(), ok))
            ready.set()
    out.send(calls)


@dataclass(frozen=True)
class Window:
    """Evaluate calls started between two instants (time.monotonic, the same clock in every process)."""

    calls: int
    failed: int
    p99_ms: float

    @classmethod
    def of(cls, samples: list[tuple[float, float, bool]], start: float, end: float) -> Window:
        inside = [(e - s, ok) for s, e, ok in samples if start <= s < end]
        latencies = sorted(t for t, ok in inside if ok)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")
        return cls(len(latencies), sum(1 for _, ok in inside if not ok), p99)


@dataclass
class Result:
    case: Case
    outcomes: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    peak_kb: int = 0
    server_rss_kb: tuple[int, int] = (0, 0)
    eval_seconds: float = 0.0  # redos: the slowest in-process decision of the 1 MB string
    window: tuple[float, float] = (0.0, 0.0)  # when it ran


def kind(outcome: str) -> str:
    """`answered: CODES`, or what a refusal was for."""
    if outcome.startswith("answered:"):
        return outcome
    if not outcome.startswith("refused:"):
        return outcome.split(":", 1)[0]
    for flag, why in (("--validate-timeout", "time"), ("--validate-memory-mb", "memory"), ("--validate-concurrency", "busy")):
        if flag in outcome:
            return f"refused ({why})"
    return "refused (size)" if "--max-source-bytes" in outcome or "message larger than max" in outcome else "refused (other)"


def expected(case: Case, outcome: str) -> bool:
    if case.expect == "refused":
        return outcome.startswith("refused:")
    if kind(outcome) in ("refused (time)", "refused (memory)"):
        return case.limit_ok
    if not outcome.startswith("answered:"):
        return False
    codes = [c for c in outcome.split(":", 1)[1].split(",") if c]
    if case.expect == "ok":
        return all(c.startswith("W") for c in codes)
    return case.expect == "any" or case.expect in codes


def run_case(case: Case, client, repeat: int, sampler: Sampler, server_pid: int) -> Result:
    from server.client import PolError

    result = Result(case)
    started = time.monotonic()
    rss_before = status_kb(server_pid, "VmRSS")
    sampler.peak_kb = 0
    for _ in range(repeat):
        for source in case.sources:
            start = time.monotonic()
            try:
                response = client.validate(source, "abuse.pol")
                outcome = "answered:" + ",".join(sorted({d.code for d in response.diagnostics}))
            except PolError as e:
                outcome = f"refused:{e.code.name}: {e}" if e.code.name == "RESOURCE_EXHAUSTED" else f"error:{e.code.name}: {e}"
            result.seconds.append(time.monotonic() - start)
            result.outcomes.append(outcome)
            if not expected(case, outcome):
                result.errors += 1
                print(f"  unexpected: {case.name}: {outcome[:200]}", file=sys.stderr)
    result.window = (started, time.monotonic())
    time.sleep(0.05)
    result.peak_kb = sampler.peak_kb
    result.server_rss_kb = (rss_before, status_kb(server_pid, "VmRSS"))
    if case.name == "redos":
        result.eval_seconds = redos_decisions()
    return result


def redos_decisions() -> float:
    """The slowest in-process decision of `a` * 1,000,000 + `!` over every pattern; raises if a verdict is wrong."""
    import engine

    schema = (ROOT / "policies" / "schema.pol").read_text()
    slowest = 0.0
    for pattern in REDOS:
        ps = engine.compile_sources({"schema.pol": schema, "redos.pol": regex_policy(pattern)}).policy_set
        start = time.perf_counter()
        ps.evaluate({"topic": "other", "intent": "other", "confidence": 0.1, "text": "a" * 1_000_000 + "!"})
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


def summarise(r: Result) -> str:
    counts: dict[str, int] = {}
    for o in r.outcomes:
        counts[kind(o)] = counts.get(kind(o), 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


def write_row(name: str, row: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"validate_abuse-{name}.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="times each source is sent (default: 3)")
    parser.add_argument("--classes", default="", help="comma-separated class names (default: all)")
    parser.add_argument("--validate-timeout", type=float, default=None, help="passed to pol serve (default: the server's, 5)")
    parser.add_argument("--validate-memory-mb", type=int, default=None, help="passed to pol serve (default: the server's, 512)")
    parser.add_argument("--p99-bound-ms", type=float, default=250.0, help="Evaluate p99 during a class must stay under this (default: 250)")
    parser.add_argument("--baseline-seconds", type=float, default=3.0, help="Evaluate alone before the abuse (default: 3)")
    args = parser.parse_args(argv)
    command = "python bench/validate_abuse.py " + shlex.join(argv if argv is not None else sys.argv[1:])

    from server.client import PolicyClient
    from tests.server_util import start_server

    chosen = [c for c in cases() if not args.classes or c.name in args.classes.split(",")]
    limits = []
    if args.validate_timeout is not None:
        limits += ["--validate-timeout", str(args.validate_timeout)]
    if args.validate_memory_mb is not None:
        limits += ["--validate-memory-mb", str(args.validate_memory_mb)]
    common = ["--workers", "1", "--poll", "0", *limits]
    logs = Path(tempfile.mkdtemp(prefix="validate_abuse-"))
    servers = {
        "default": start_server(logs / "default.log", *common),
        "raised": start_server(logs / "raised.log", *common, "--max-message-bytes", BIG, "--max-source-bytes", BIG),
    }
    pids = [s.process.pid for s in servers.values()]
    sampler = Sampler(pids)
    sampler.start()
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    receive, send = context.Pipe(duplex=False)
    evaluator = context.Process(target=evaluate_loop, args=(servers["raised"].address, ready, stop, send), daemon=True)
    evaluator.start()
    ready.wait(60)
    time.sleep(0.5)  # past its first calls
    quiet = (time.monotonic(), time.monotonic() + args.baseline_seconds)
    time.sleep(args.baseline_seconds)
    results = []
    try:
        clients = {name: PolicyClient(s.address, timeout=120) for name, s in servers.items()}
        for case in chosen:
            print(f"  {case.name} ...", file=sys.stderr, flush=True)
            results.append(run_case(case, clients[case.server], args.repeat, sampler, servers[case.server].process.pid))
        for c in clients.values():
            c.close()
    finally:
        stop.set()
        samples = receive.recv() if receive.poll(30) else []
        evaluator.join(10)
        sampler.stop.set()
        compilers = {p for pid in pids for p in children(pid)}
        codes = []
        for s in servers.values():
            s.process.send_signal(signal.SIGTERM)
            codes.append(s.process.wait(60))
            s.process.stdout.close()
        time.sleep(0.5)
        left = sorted(p for p in compilers if alive(p))

    baseline = Window.of(samples, *quiet)
    print(f"Evaluate alone: p99 {baseline.p99_ms:.2f} ms over {baseline.calls} calls; logs in {logs}")
    print(f"{'class':<14} {'runs':>4} {'max s':>7} {'child peak MiB':>14} {'server RSS MiB':>15} {'Evaluate p99 ms':>15}  outcomes")
    survived_all = True
    for r in results:
        case = r.case
        w = Window.of(samples, *r.window)
        bounded = case.server != "raised" or (w.calls > 0 and not w.p99_ms > args.p99_bound_ms)
        redos_ok = case.name != "redos" or r.eval_seconds < 1.0
        survived = r.errors == 0 and w.failed == 0 and bounded and redos_ok
        survived_all &= survived
        rss = f"{r.server_rss_kb[0] / 1024:.0f} -> {r.server_rss_kb[1] / 1024:.0f}"
        print(f"{case.name:<14} {len(r.outcomes):>4} {max(r.seconds):>7.2f} {r.peak_kb / 1024:>14.0f} {rss:>15} {w.p99_ms:>15.2f}  {summarise(r)}")
        if case.name == "redos":
            print(f"{'':<14} slowest in-process decision of 1 MB of `a` + `!`: {r.eval_seconds * 1000:.1f} ms")
        write_row(case.name, {
            "class": f"validate: {case.what}",
            "inputs": f"{len(r.outcomes)} ValidatePolicy calls ({args.repeat} x {len(case.sources)}); answers: {summarise(r)}; "
            f"slowest {max(r.seconds):.2f} s, compiler peak RSS {r.peak_kb / 1024:.0f} MiB, server RSS {rss} MiB"
            + (f"; 1 MB of `a` + `!` decided in {r.eval_seconds * 1000:.1f} ms at worst" if case.name == "redos" else ""),
            "load": f"Evaluate on another connection meanwhile: {w.calls} calls, p99 {w.p99_ms:.1f} ms (alone {baseline.p99_ms:.1f} ms, bound {args.p99_bound_ms:g} ms)"
            if case.server == "raised" else "",
            "faults": "",
            "survived": survived,
            "errors": r.errors + w.failed,
            "lost": w.failed,
            "command": command,
        })
    clean = codes == [0, 0] and not left
    survived_all &= clean
    print(f"SIGTERM: exit codes {codes}; child processes before {sorted(compilers)}, left {left}")
    write_row("shutdown", {
        "class": "validate: SIGTERM after the abuse",
        "inputs": f"{len(servers)} servers, {len(compilers)} child process(es) at the end (compilers, multiprocessing's resource tracker)",
        "load": "",
        "faults": "SIGTERM",
        "survived": clean,
        "errors": sum(1 for c in codes if c != 0),
        "lost": len(left),
        "command": command,
    })
    return 0 if survived_all else 1


if __name__ == "__main__":
    sys.exit(main())
