#!/usr/bin/env python3
"""Soak: mixed unary, batch and stream load on `pol serve` with periodic reloads, for minutes.

    python bench/soak.py                          # 5 minutes, pol serve --workers 2
    python bench/soak.py --seconds 60 --workers 1

Load: client threads in this process, each on its own connection, non-stop: `--unary`
threads calling Evaluate, `--batch` threads calling EvaluateBatch with 50 items, `--stream`
threads each running streams of 100 items with at most 8 in flight. Items cycle through
five annotations whose verdict and rule are known (from the engine, in process).

Reloads: every `--reload-every` seconds a new version of the policy (its offer reason
numbered) is written by rename; every other one is followed at once by a SIGHUP, the
others are left to the poll. None is written in the last 3 s, so each has time to go live.

Checks, on every answer: no call fails; the hash names a version written; verdict and rule
are right, and the offer's reason is the one of that version; one hash across a batch or a
stream (a call keeps the set it started with). At the end: every version written was seen
in some answer, and no reload was refused.

Figures: calls per kind, p99 latency per kind in each `--window` seconds (a stream item's
latency runs from its write to its answer), and server RSS: VmRSS summed over the worker
processes (/proc/<pid>/status; the `pol serve` process itself with --workers 1), sampled
every second. Drift is the last sample against the first one after `--warmup` seconds.
The warm-up is needed because RSS climbs during the first seconds for reasons that are not
leaks: gRPC's thread pool and buffers grow to the load, the allocator's arenas fill, and the
first reloads build a second compiled set (and codegen caches) before the first is freed.
After that it is flat unless something leaks; 8 s is enough on this machine, so the
20-second run in tests/test_soak.py measures over its last 12 s.

Exit status 1 if any call failed or was answered wrongly, a reload went unseen, or the drift
is 10% or more. Writes bench/results/reliability/soak-mixed.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402

import engine  # noqa: E402
from bench.faults import POLICY, Log, reason, version, write_atomic  # noqa: E402
from engine.policyset import set_hash  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reliability"
BATCH = 50  # items per EvaluateBatch
STREAM = 100  # items per stream
STREAM_WINDOW = 8  # stream items in flight
QUIET_END = 3.0  # seconds at the end with no new version written
DRIFT_LIMIT = 0.10
ITEMS = [
    {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93},
    {"topic": "human_smuggling", "intent": "offer", "confidence": 0.5, "author": {"account_age_days": 3}},
    {"topic": "human_smuggling", "intent": "solicit", "confidence": 0.4},
    {"topic": "human_smuggling", "intent": "report", "confidence": 0.9, "mentions_minor": True},
    {"topic": "migration", "intent": "share_info", "confidence": 0.9, "labels": ["illegal_border_crossing"], "text": "Route notes."},
]
VERDICTS = {"allow": pb.VERDICT_ALLOW, "intervene": pb.VERDICT_INTERVENE, "remove": pb.VERDICT_REMOVE}


@dataclass(frozen=True)
class Result:
    seconds: float
    workers: int
    calls: dict[str, int]  # per kind: unary and batch calls, stream items
    items: int  # decisions answered, all kinds
    failures: int  # calls failed or answered wrongly
    errors: tuple[str, ...]  # the first few of them, described
    lost: int  # batch or stream items sent and never answered
    reloads: int  # versions written
    reloads_seen: int  # of those, seen in some answer
    reloads_by: dict[str, int]  # `reloaded` log lines per trigger
    refused: int  # `reload_failed` log lines (there should be none)
    p99: list[dict[str, float]]  # per window: kind -> p99 latency in ms
    rss: list[tuple[float, int]]  # (seconds since start, kB summed over workers)
    warmup: float
    window: float

    @property
    def baseline_kb(self) -> int:
        return next((kb for t, kb in self.rss if t >= self.warmup), self.rss[-1][1])

    @property
    def drift(self) -> float:
        """RSS at the end against the first sample after the warm-up (0.05: 5% more)."""
        return (self.rss[-1][1] - self.baseline_kb) / self.baseline_kb

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.lost == 0 and self.reloads_seen == self.reloads and self.refused == 0 and self.drift < DRIFT_LIMIT


def worker_pids(pid: int) -> list[int]:
    """The serving processes of `pol serve` at `pid`: its spawned workers, or itself with --workers 1."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    workers = []
    for c in children:
        try:
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                workers.append(c)
        except OSError:
            continue
    return workers or [pid]


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


class Load:
    """The client threads and what they saw."""

    def __init__(self, address: str, expected: dict[str, tuple[int, str]], answers: list[tuple[int, str]], start: float, window: float) -> None:
        self.address = address
        self.expected = expected  # set hash -> (version, offer reason)
        self.answers = answers  # per item of ITEMS: (verdict, rule)
        self.start, self.window = start, window
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.items = 0
        self.failures = 0
        self.errors: list[str] = []
        self.lost = 0
        self.seen: set[str] = set()
        self.latency: dict[int, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
        requests = []
        for a in ITEMS:
            s = struct_pb2.Struct()
            s.update(a)
            requests.append(pb.EvaluateRequest(content=pb.Content(id=f"item-{len(requests)}", annotations=s)))
        self.requests = requests

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures += 1
            if len(self.errors) < 20:
                self.errors.append(what)

    def record(self, kind: str, started: float, items: int = 1) -> None:
        now = time.perf_counter()
        with self.lock:
            self.calls[kind] += 1
            self.items += items
            self.latency[int((now - self.start) / self.window)][kind].append(now - started)

    def check(self, kind: str, index: int, r: pb.EvaluateResponse) -> str:
        """Check one answer to ITEMS[index]; its set hash."""
        known = self.expected.get(r.policy_set_hash)
        if known is None:
            self.fail(f"{kind}: answered by {r.policy_set_hash}, no version written")
        elif (r.verdict, r.rule) != self.answers[index]:
            self.fail(f"{kind}: item {index}: {r.verdict} {r.rule}, expected {self.answers[index]}")
        elif index == 0 and r.justifications[0].reason != known[1]:
            self.fail(f"{kind}: reason {r.justifications[0].reason!r} from v{known[0]}, expected {known[1]!r}")
        return r.policy_set_hash

    def _channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address, [("grpc.use_local_subchannel_pool", 1)])

    def unary(self, n: int) -> None:
        with self._channel() as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            i = n
            while not self.stop.is_set():
                index = i % len(ITEMS)
                i += 1
                started = time.perf_counter()
                try:
                    r = stub.Evaluate(self.requests[index], timeout=30)
                except grpc.RpcError as e:
                    self.fail(f"unary: {e.code().name}: {e.details()}")
                    continue
                self.record("unary", started)
                self.seen.add(self.check("unary", index, r))

    def batch(self, n: int) -> None:
        indexes = [(n + j) % len(ITEMS) for j in range(BATCH)]
        request = pb.EvaluateBatchRequest(contents=[self.requests[i].content for i in indexes])
        with self._channel() as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    r = stub.EvaluateBatch(request, timeout=30)
                except grpc.RpcError as e:
                    self.fail(f"batch: {e.code().name}: {e.details()}")
                    continue
                self.record("batch", started, len(r.results))
                self._results("batch", indexes, [x for x in r.results])

    def _results(self, kind: str, indexes: list[int], results: list) -> None:
        hashes = set()
        for index, x in zip(indexes, results, strict=False):  # fewer results than items: counted as lost below
            if x.WhichOneof("result") != "response":
                self.fail(f"{kind}: item {index}: status {x.error.code}: {x.error.message}")
                continue
            hashes.add(self.check(kind, index, x.response))
        if len(hashes) > 1:
            self.fail(f"{kind}: one call answered by {len(hashes)} sets")
        self.seen.update(hashes)
        if len(results) < len(indexes):
            with self.lock:
                self.lost += len(indexes) - len(results)

    def stream(self, n: int) -> None:
        indexes = [(n + j) % len(ITEMS) for j in range(STREAM)]
        with self._channel() as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            while not self.stop.is_set():
                sent: collections.deque[float] = collections.deque()  # write times of the items in flight
                room = threading.Semaphore(STREAM_WINDOW)
                results = []
                try:
                    for answer in stub.EvaluateStream(self._writes(indexes, sent, room), timeout=60):
                        self.record("stream", sent.popleft())
                        room.release()
                        results.append(answer.result)
                except grpc.RpcError as e:
                    self.fail(f"stream: {e.code().name}: {e.details()}")
                    continue
                self._results("stream", indexes, results)

    def _writes(self, indexes: list[int], sent: collections.deque[float], room: threading.Semaphore):
        """A stream's requests, at most STREAM_WINDOW unanswered, each write time noted in `sent`."""
        for i in indexes:
            room.acquire()
            sent.append(time.perf_counter())
            yield pb.EvaluateStreamRequest(request=self.requests[i])

    def p99(self) -> list[dict[str, float]]:
        out = []
        for w in range(max(self.latency, default=-1) + 1):
            row = {}
            for kind, values in sorted(self.latency[w].items()):
                values.sort()
                row[kind] = 1000 * values[min(len(values) - 1, int(0.99 * len(values)))]
            out.append(row)
        return out


def run(seconds: float = 300, *, workers: int = 2, warmup: float = 30, reload_every: float = 3, window: float = 10,
        unary: int = 2, batch: int = 1, stream: int = 1, poll: float = 1.0, out=print) -> Result:
    """Start `pol serve`, load it for `seconds` with reloads, stop it; what was seen."""
    from tests.server_util import start_server  # a real `pol serve` subprocess, SERVING

    with tempfile.TemporaryDirectory(prefix="pol-soak-") as tmp:
        policies = Path(tmp) / "policies"
        policies.mkdir()
        files = version(0)
        for name, data in files.items():
            (policies / name).write_bytes(data)
        ps = engine.compile_sources(files).policy_set
        answers = [(VERDICTS[d.verdict], d.rule) for d in map(ps.evaluate, ITEMS)]
        expected = {set_hash(files): (0, reason(0))}
        log_path = Path(tmp) / "stderr.log"
        server = start_server(log_path, "--workers", str(workers), "--poll", str(poll), policies=policies, timeout=60)
        start = time.perf_counter()
        load = Load(server.address, expected, answers, start, window)
        rss: list[tuple[float, int]] = []
        written: list[str] = []
        threads = [threading.Thread(target=load.unary, args=(i,)) for i in range(unary)]
        threads += [threading.Thread(target=load.batch, args=(i,)) for i in range(batch)]
        threads += [threading.Thread(target=load.stream, args=(i,)) for i in range(stream)]
        try:
            for t in threads:
                t.start()
            next_reload, next_sample, n = start + reload_every, start, 0
            while (now := time.perf_counter()) < start + seconds:
                if now >= next_sample:
                    rss.append((now - start, rss_kb(worker_pids(server.process.pid))))
                    next_sample += 1.0
                if now >= next_reload and now < start + seconds - QUIET_END:
                    n += 1
                    files = {**files, POLICY: version(n)[POLICY]}
                    expected[set_hash(files)] = (n, reason(n))
                    written.append(set_hash(files))
                    write_atomic(policies / POLICY, files[POLICY])
                    if n % 2 == 0:
                        os.kill(server.process.pid, signal.SIGHUP)
                    next_reload += reload_every
                time.sleep(0.05)
            rss.append((time.perf_counter() - start, rss_kb(worker_pids(server.process.pid))))
        finally:
            load.stop.set()
            for t in threads:
                t.join(60)
            status = server.stop()
        elapsed = time.perf_counter() - start
        log = Log(log_path)
        reloaded = log.since(0, "reloaded")
        refused = len(log.since(0, "reload_failed"))
    if status != 0:
        load.fail(f"pol serve exited with status {status}")
    result = Result(
        seconds=elapsed, workers=workers, calls=dict(load.calls), items=load.items, failures=load.failures,
        errors=tuple(load.errors), lost=load.lost, reloads=len(written), reloads_seen=len(set(written) & load.seen),
        reloads_by=dict(collections.Counter(e["trigger"] for e in reloaded)), refused=refused,
        p99=load.p99(), rss=rss, warmup=warmup, window=window,
    )
    report(result, out)
    return result


def report(r: Result, out) -> None:
    kinds = ("unary", "batch", "stream")
    out(f"pol serve --workers {r.workers}, {r.seconds:.0f} s: {r.items} decisions ({r.items / r.seconds:.0f}/s); "
        + ", ".join(f"{r.calls.get(k, 0)} {k}" + (" items" if k == "stream" else " calls") for k in kinds))
    out(f"errors: {r.failures}; items lost: {r.lost}; reloads: {r.reloads} written, {r.reloads_seen} seen, "
        f"log: {r.reloads_by} reloaded, {r.refused} refused")
    for e in r.errors[:5]:
        out(f"  {e}")
    rss_at = dict((int(t // r.window), kb) for t, kb in r.rss)  # the last sample in each window
    out(f"{'window':>12}  " + "  ".join(f"{k + ' p99 ms':>15}" for k in kinds) + f"  {'RSS MB':>8}")
    for w, row in enumerate(r.p99):
        cells = "  ".join(f"{row[k]:>15.2f}" if k in row else f"{'':>15}" for k in kinds)
        rss = f"{rss_at[w] / 1024:>8.1f}" if w in rss_at else ""
        out(f"{f'{w * r.window:.0f}-{(w + 1) * r.window:.0f} s':>12}  {cells}  {rss}")
    out(f"RSS: {r.baseline_kb / 1024:.1f} MB after the {r.warmup:.0f} s warm-up, {r.rss[-1][1] / 1024:.1f} MB at the end: "
        f"drift {100 * r.drift:+.1f}% (limit {100 * DRIFT_LIMIT:.0f}%); max {max(kb for _, kb in r.rss) / 1024:.1f} MB")


def row(r: Result, command: str) -> dict:
    return {
        "class": "soak: mixed unary, batch and stream load with reloads",
        "inputs": f"{len(ITEMS)} annotations of known verdict, cycled; unary calls, batches of {BATCH}, streams of {STREAM} ({STREAM_WINDOW} in flight)",
        "load": f"{r.items} decisions in {r.seconds:.0f} s ({r.items / r.seconds:.0f}/s): "
        + ", ".join(f"{v} {k}" for k, v in sorted(r.calls.items()))
        + f"; pol serve --workers {r.workers}; RSS drift {100 * r.drift:+.1f}% after a {r.warmup:.0f} s warm-up",
        "faults": f"{r.reloads} new versions written every few seconds (every other one followed by SIGHUP), {r.reloads_seen} seen in answers; "
        + f"`reloaded` log lines from {r.workers} worker(s): " + ", ".join(f"{v} by {k}" for k, v in sorted(r.reloads_by.items())) + f"; {r.refused} refused",
        "survived": r.ok,
        "errors": r.failures,
        "lost": r.lost + r.reloads - r.reloads_seen,
        "command": command,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="how long to run (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="pol serve --workers (default 2)")
    parser.add_argument("--warmup", type=float, default=30, help="seconds before the RSS baseline (default 30)")
    parser.add_argument("--reload-every", type=float, default=3, help="seconds between new versions (default 3)")
    parser.add_argument("--window", type=float, default=10, help="seconds per p99 window (default 10)")
    parser.add_argument("--unary", type=int, default=2, help="threads calling Evaluate (default 2)")
    parser.add_argument("--batch", type=int, default=1, help="threads calling EvaluateBatch (default 1)")
    parser.add_argument("--stream", type=int, default=1, help="threads running EvaluateStream (default 1)")
    parser.add_argument("--poll", type=float, default=1.0, help="pol serve --poll (default 1)")
    args = parser.parse_args(argv)
    r = run(args.seconds, workers=args.workers, warmup=args.warmup, reload_every=args.reload_every, window=args.window,
            unary=args.unary, batch=args.batch, stream=args.stream, poll=args.poll)
    command = "python bench/soak.py" + "".join(f" --{k.replace('_', '-')} {v:g}" for k, v in vars(args).items() if v != parser.get_default(k))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak-mixed.json").write_text(json.dumps(row(r, command), indent=2) + "\n", encoding="utf-8")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
