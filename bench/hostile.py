#!/usr/bin/env python3
"""Hostile gRPC clients at full budget: `pol serve` stays up, answers the right status, and gives memory back.

    python bench/hostile.py                          # every class, 3 rounds (about 5 minutes)
    python bench/hostile.py --quick                  # smoke run, small budgets
    python bench/hostile.py --only stream-flood,large-burst --rounds 5 --streams 2000

The attacks of tests/test_hostile_grpc.py, many times over. Each class gets a fresh
`pol serve --workers 1` (the flags are in its row), warmed up until its RSS settles; then
`--rounds` rounds of the attack, each followed by a health check (alive, SERVING, a known
item decided correctly over a new connection). RSS of the server process is sampled every
20 ms (`/proc/<pid>/status`): before (after warm-up), peak, and after the attack once it has
settled (at most `--settle` seconds). A class survives when the process is alive, every
health check passed and RSS after is within +20% or +30 MB of before, whichever is more
(Python keeps a few partly used arenas and gRPC a few caches: tens of MB, not the
hundreds an attack of this size would leave if it leaked). Rows also carry `rss_mb`.

Classes (status codes as tests/test_hostile_grpc.py pins them):
  malformed         random, truncated and corrupted bytes to every method; a bad item mid-stream
  oversized         requests of 1x+1, 4x and 16x --max-message-bytes; a stream item over it; a response over it
  batch-limit       batches of --max-batch + 1, 1,000 and 100,000 items
  deep-nesting      annotations nested from --max-depth to 10,000 levels, objects and lists, alone, in batches, in streams
  empty-unknown     empty requests to every method; unknown fields of every wire type at every level
  metadata          100 KB of metadata, 500 headers, request ids that are no legal header value
  deadlines         deadlines of 1 us to 5 ms on every method, explained batches that outlive theirs
  stream-flood      --streams streams at once on --threads 32 (--max-streams 16 may be open); unary probes meanwhile
  idle-connections  --sockets sockets: silent, half an HTTP/2 preface, a preface and nothing more
  fd-exhaustion     --sockets silent sockets against a server whose file descriptor limit is a quarter of that
  stalled-calls     --stalled calls that send headers and never their request, on --threads 32; probes from another client meanwhile
  large-burst       --burst concurrent requests of 1 MB

Writes one row per class to bench/results/reliability/hostile-<class>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc  # noqa: E402
from tests import test_hostile_grpc as h  # noqa: E402
from tests.server_util import Server, start_server  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reliability"
RESPONSE_LIMIT = 64 << 10  # --max-message-bytes of the oversized class's second server, for a response over it
SMALL_LIMITS = ["--max-message-bytes", str(h.MAX_MESSAGE), "--max-batch", str(h.MAX_BATCH), "--max-depth", str(h.MAX_DEPTH)]
METHODS = sorted(set(h.REQUEST_TYPES) - {"EvaluateStream"})


@dataclass
class Tally:
    """What one class tried and what went wrong (filled in by its attack, round by round)."""

    calls: int = 0
    errors: int = 0  # calls that ended with a status other than the expected one
    lost: int = 0  # valid requests that were not decided
    notes: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str = "") -> None:
        self.calls += 1
        if not ok:
            self.errors += 1
            if what and len(self.notes) < 5:
                self.notes.append(what)


@dataclass(frozen=True)
class Attack:
    name: str
    flags: tuple[str, ...]
    inputs: Callable[[argparse.Namespace], str]
    load: Callable[[argparse.Namespace], str]
    faults: Callable[[argparse.Namespace], str]
    run: Callable[[Server, argparse.Namespace, Tally, int], None]  # one round


# ---- the attacks --------------------------------------------------------------------------------


def _pool_map(fn, items, workers: int = 8) -> list:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def malformed(server: Server, args, tally: Tally, round_: int) -> None:
    rng = random.Random(round_)
    with grpc.insecure_channel(server.address) as channel:
        for method in METHODS:
            n = args.malformed // 2 if method == "ValidatePolicy" else args.malformed
            attacks = h.malformed(h.VALID[method] or b"\x0a\x03abc", rng, n // 2)

            def one(data: bytes, method=method) -> tuple[bool, bool, str]:
                code, _, error = h.raw_call(channel, method, data)
                valid = h.parses(method, data)
                ok = code in (h.API_CODES if valid else h.UNPARSEABLE)
                return ok, valid, f"{method} {data[:16]!r}: {code.name} {error.details()[:40] if error else ''}"

            for ok, valid, what in _pool_map(one, attacks):
                tally.expect(ok, what)
                tally.lost += valid and not ok  # a request protobuf accepts, neither decided nor refused by the API's rules
        for data in h.malformed(h.VALID["EvaluateStream"], rng, args.malformed // 20):
            if h.parses("EvaluateStream", data):
                continue
            answers = []
            try:
                answers = list(h.stream_call(channel)(iter([h.VALID["EvaluateStream"], data]), timeout=30))
                tally.expect(False, "stream with a bad item ended OK")
            except grpc.RpcError as e:
                tally.expect(e.code() in h.UNPARSEABLE and len(answers) <= 1, f"stream: {e.code().name}")


def oversized(server: Server, args, tally: Tally, round_: int) -> None:
    with grpc.insecure_channel(server.address) as channel:
        for _ in range(args.oversized):
            for method in METHODS:
                for size in (h.MAX_MESSAGE + 1, 4 * h.MAX_MESSAGE, 16 * h.MAX_MESSAGE):
                    code = h.raw_call(channel, method, h.padded(h.VALID[method], size))[0]
                    tally.expect(code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method} {size}: {code.name}")
            try:
                list(h.stream_call(channel)(iter([h.VALID["EvaluateStream"], h.padded(h.VALID["EvaluateStream"], h.MAX_MESSAGE + 1)]), timeout=30))
                tally.expect(False, "oversized stream item ended OK")
            except grpc.RpcError as e:
                tally.expect(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"stream: {e.code().name}")
    # No answer outgrows SMALL_LIMITS' 1 MiB: content ids are at most 1,024 characters and observed values are
    # cut, so 50 explained items answer in about 1,015 KB. A second server with a 64 KiB limit, as in the test
    # tests/test_hostile_grpc.py::test_response_over_the_size_limit_is_resource_exhausted.
    big_answer = pb.EvaluateBatchRequest(contents=[h.evaluate_request(content_id="c" * 1000).content] * h.MAX_BATCH, explain=True).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="pol-hostile-response-") as tmp:
        small = start_server(Path(tmp) / "stderr.log", "--workers", "1", "--poll", "0", "--max-message-bytes", str(RESPONSE_LIMIT), "--max-batch", str(h.MAX_BATCH))
        try:
            with grpc.insecure_channel(small.address) as channel:
                for _ in range(args.oversized):
                    code = h.raw_call(channel, "EvaluateBatch", big_answer)[0]
                    tally.expect(code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"response over the limit: {code.name}")
        finally:
            tally.expect(small.stop() == 0, "the response-limit server did not exit 0")


def batch_limit(server: Server, args, tally: Tally, round_: int) -> None:
    item = h.field(1, h.field(2, h.struct_bytes(h.OFFER)))
    batches = [item * (h.MAX_BATCH + 1), item * 1000, b"\x0a\x00" * 100_000]  # all under --max-message-bytes
    with grpc.insecure_channel(server.address) as channel:

        def one(data: bytes) -> tuple[bool, str]:
            code = h.raw_call(channel, "EvaluateBatch", data)[0]
            return code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{len(data)} bytes: {code.name}"

        for ok, what in _pool_map(one, batches * args.batches):
            tally.expect(ok, what)


_DEEP: dict[tuple[int, str], bytes] = {}


def _deep_request(levels: int, kind: str) -> bytes:
    if (levels, kind) not in _DEEP:
        _DEEP[levels, kind] = h.with_deep_author(levels, kind)
    return _DEEP[levels, kind]


def deep_nesting(server: Server, args, tally: Tally, round_: int) -> None:
    levels = [*range(h.MAX_DEPTH, 60), 100, 200, 1000, 10_000]
    good = h.struct_bytes(h.OFFER)
    with grpc.insecure_channel(server.address) as channel:
        for _ in range(args.repeat):
            for kind in ("object", "list"):
                for n in levels:
                    annotations = _deep_request(n, kind)
                    data = h.evaluate_bytes(annotations)
                    code, _, error = h.raw_call(channel, "Evaluate", data)
                    if h.parses("Evaluate", data):
                        tally.expect(code == grpc.StatusCode.INVALID_ARGUMENT and h.violations(error) == {"content.annotations": f"annotations nest deeper than {h.MAX_DEPTH} levels"}, f"{kind} {n}: {code.name}")
                    else:
                        tally.expect(code in h.UNPARSEABLE, f"{kind} {n}: {code.name}")
                    batch = b"".join(h.field(1, h.field(2, a)) for a in (good, annotations, good))
                    code, response, _ = h.raw_call(channel, "EvaluateBatch", batch)
                    if h.parses("EvaluateBatch", batch):
                        kinds = [r.WhichOneof("result") for r in pb.EvaluateBatchResponse.FromString(response).results] if response else []
                        tally.expect(kinds == ["response", "error", "response"], f"batch {kind} {n}: {code.name} {kinds}")
                    else:
                        tally.expect(code in h.UNPARSEABLE, f"batch {kind} {n}: {code.name}")
                    items = [h.field(1, h.evaluate_bytes(a)) for a in (good, annotations, good)]
                    try:
                        answers = [a.result.WhichOneof("result") for a in h.stream_call(channel)(iter(items), timeout=30)]
                        tally.expect(answers == ["response", "error", "response"], f"stream {kind} {n}: {answers}")
                    except grpc.RpcError as e:  # an item protobuf cannot parse ends the stream
                        tally.expect(e.code() in h.UNPARSEABLE and not h.parses("EvaluateStream", items[1]), f"stream {kind} {n}: {e.code().name}")


def empty_unknown(server: Server, args, tally: Tally, round_: int) -> None:
    with grpc.insecure_channel(server.address) as channel:
        plain = h.raw_call(channel, "Evaluate", h.VALID["Evaluate"])[1]
        content = h.field(1, b"post-1") + h.field(2, h.struct_bytes(h.OFFER))
        variants = [
            h.VALID["Evaluate"] + h.UNKNOWN_FIELDS,
            h.UNKNOWN_FIELDS + h.VALID["Evaluate"],
            h.field(1, content + h.UNKNOWN_FIELDS) + h.field(4, b"r-1"),
            h.field(1, h.field(1, b"post-1") + h.field(2, h.struct_bytes(h.OFFER) + h.UNKNOWN_FIELDS)) + h.field(4, b"r-1"),
        ]
        empty = {"Evaluate": grpc.StatusCode.INVALID_ARGUMENT, "EvaluateBatch": grpc.StatusCode.OK, "ValidatePolicy": grpc.StatusCode.OK,
                 "ListPolicies": grpc.StatusCode.OK, "GetPolicy": grpc.StatusCode.NOT_FOUND}
        for _ in range(args.repeat):
            for method, expected in empty.items():
                code = h.raw_call(channel, method, b"")[0]
                tally.expect(code == expected, f"empty {method}: {code.name}")
            tally.expect(list(h.stream_call(channel)(iter([]), timeout=30)) == [], "empty stream answered")
            for data in variants:
                code, response, _ = h.raw_call(channel, "Evaluate", data)
                tally.expect(code == grpc.StatusCode.OK and pb.EvaluateResponse.FromString(response) == pb.EvaluateResponse.FromString(plain), f"unknown fields: {code.name}")
                if code != grpc.StatusCode.OK:
                    tally.lost += 1
            for method in METHODS:
                code = h.raw_call(channel, method, h.VALID[method] + h.UNKNOWN_FIELDS)[0]
                tally.expect(code in h.API_CODES, f"{method} with unknown fields: {code.name}")


BAD_IDS = ["caf\u00e9", "a\nb", "\x00", "r" * 100_000]


def metadata(server: Server, args, tally: Tally, round_: int) -> None:
    with grpc.insecure_channel(server.address) as channel:
        for _ in range(args.repeat):
            code = h.raw_call(channel, "Evaluate", h.VALID["Evaluate"], metadata=(("x-junk", "j" * 100_000),))[0]
            tally.expect(code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"100 KB header: {code.name}")
            code = h.raw_call(channel, "Evaluate", h.VALID["Evaluate"], metadata=tuple((f"x-k{i}", "v" * 100) for i in range(500)))[0]
            tally.expect(code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"500 headers: {code.name}")
            for request_id in BAD_IDS:  # refused, naming the field: it could not travel back as metadata
                code, _, error = h.raw_call(channel, "Evaluate", h.evaluate_request(request_id=request_id).SerializeToString())
                named = code == grpc.StatusCode.INVALID_ARGUMENT and list(h.violations(error)) == ["request_id"]
                tally.expect(named, f"request id {request_id[:8]!r}: {code.name}")


def deadlines(server: Server, args, tally: Tally, round_: int) -> None:
    allowed = h.API_CODES | {grpc.StatusCode.DEADLINE_EXCEEDED}
    batch = pb.EvaluateBatchRequest(contents=[h.evaluate_request().content] * h.MAX_BATCH, explain=True).SerializeToString()
    with grpc.insecure_channel(server.address) as channel:
        for _ in range(args.repeat):
            for method in METHODS:
                for timeout in (1e-6, 1e-5, 1e-4, 1e-3, 5e-3):
                    code = h.raw_call(channel, method, h.VALID[method], timeout=timeout)[0]
                    tally.expect(code in allowed, f"{method} {timeout}: {code.name}")
            for timeout in (1e-3, 2e-3, 5e-3):
                code = h.raw_call(channel, "EvaluateBatch", batch, timeout=timeout)[0]
                tally.expect(code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), f"batch {timeout}: {code.name}")
            try:
                list(h.stream_call(channel)(iter([h.VALID["EvaluateStream"]] * 20), timeout=1e-4))
                tally.expect(True)
            except grpc.RpcError as e:
                tally.expect(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"stream: {e.code().name}")


def stream_flood(server: Server, args, tally: Tally, round_: int) -> None:
    result = asyncio.run(h._stream_flood(server.address, args.streams, channels=8))
    served, refused = result["outcomes"].count("served"), result["outcomes"].count("RESOURCE_EXHAUSTED")
    tally.calls += args.streams + 2
    tally.errors += args.streams - served - refused
    tally.expect(served == h.MAX_STREAMS, f"{served} streams served, not {h.MAX_STREAMS}")
    tally.expect(result["unary"] == "offer_smuggling" and result["probe_seconds"] < 10, f"unary probe took {result['probe_seconds']:.1f} s")
    if round_ == 0 or len(tally.notes) < 5:
        tally.notes.append(f"round {round_}: {served} served, {refused} refused, probe answered in {result['probe_seconds'] * 1000:.0f} ms")


def idle_connections(server: Server, args, tally: Tally, round_: int) -> None:
    third = args.sockets // 5
    held = h.open_sockets(server.address, 2 * third, b"") + h.open_sockets(server.address, 2 * third, h.PREFACE[:10])
    held += h.open_sockets(server.address, args.sockets - 4 * third, h.PREFACE + h.EMPTY_SETTINGS)
    start = time.monotonic()
    with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        for _ in range(20):
            try:
                ok = pb_grpc.PolicyServiceStub(channel).Evaluate(h.evaluate_request(), timeout=5).rule == "offer_smuggling"
            except grpc.RpcError:
                ok = False
            tally.expect(ok, "probe failed while sockets were held")
    still_open = h.wait_closed_by_peer(held, 60)
    tally.calls += len(held)
    tally.errors += still_open
    tally.notes.append(f"round {round_}: {len(held)} sockets, {still_open} still open after {time.monotonic() - start:.1f} s")


def fd_limit(args) -> int:
    """The server's file descriptor limit in fd-exhaustion: a quarter of the sockets thrown at it."""
    return max(64, args.sockets // 4)


def fd_exhaustion(server: Server, args, tally: Tally, round_: int) -> None:
    import resource

    resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (fd_limit(args), fd_limit(args)))
    held = h.open_sockets(server.address, args.sockets, b"")  # the kernel queues those the server cannot accept yet
    start = time.monotonic()
    with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            ok = pb_grpc.PolicyServiceStub(channel).Evaluate(h.evaluate_request(), timeout=120, wait_for_ready=True).rule == "offer_smuggling"
        except grpc.RpcError:
            ok = False
    waited = time.monotonic() - start
    tally.expect(ok, "a new client was never served")
    still_open = h.wait_closed_by_peer(held, 120)
    tally.calls += len(held)
    tally.errors += still_open
    tally.notes.append(f"round {round_}: a new client waited {waited:.1f} s behind {len(held)} silent sockets; {still_open} still open at the end")


STALL_PROBES = 5.0  # seconds of probes from another client while the stalled calls wait
STALL_DEADLINE = STALL_PROBES + 5  # the stalled calls' own deadline: the server must end them then
UNARY = ("Evaluate", "EvaluateBatch", "ValidatePolicy", "ListPolicies", "GetPolicy")


async def _stall(address: str, calls: int) -> dict:
    """Open `calls` calls to the unary methods on 8 connections, each sending headers and never its request; probe meanwhile."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    attackers = [grpc.aio.insecure_channel(address, options=options) for _ in range(8)]
    try:
        stalled = [attackers[i % 8].stream_unary(h.SERVICE + UNARY[i % len(UNARY)], request_serializer=None, response_deserializer=None)(timeout=STALL_DEADLINE)
                   for i in range(calls)]  # no request iterator and no write: the request never comes
        await asyncio.sleep(0.5)
        probes, failed, slowest = 0, [], 0.0
        async with grpc.aio.insecure_channel(address, options=options) as other:
            stub, health = pb_grpc.PolicyServiceStub(other), health_pb2_grpc.HealthStub(other)
            batch = pb.EvaluateBatchRequest(contents=[h.evaluate_request().content] * 10)
            end = time.monotonic() + STALL_PROBES
            while time.monotonic() < end:
                start = time.monotonic()
                try:
                    assert (await stub.Evaluate(h.evaluate_request(), timeout=1)).rule == "offer_smuggling"
                    assert len((await stub.EvaluateBatch(batch, timeout=1)).results) == 10
                    stream = stub.EvaluateStream(iter([pb.EvaluateStreamRequest(request=h.evaluate_request())] * 3), timeout=1)
                    assert [r.result.response.rule async for r in stream] == ["offer_smuggling"] * 3
                    assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == health_pb2.HealthCheckResponse.SERVING
                except (grpc.aio.AioRpcError, AssertionError) as e:
                    failed.append(f"probe: {e.code().name if isinstance(e, grpc.aio.AioRpcError) else 'wrong answer'}")
                probes += 4
                slowest = max(slowest, time.monotonic() - start)
        waiting = sum(not c.done() for c in stalled)  # the server dropped none of them early
        codes = []
        for call in stalled:
            try:
                await call
                codes.append("OK")
            except grpc.aio.AioRpcError as e:
                codes.append(e.code().name)
        return {"probes": probes, "failed": failed, "slowest": slowest, "waiting": waiting, "codes": codes}
    finally:
        for c in attackers:
            await c.close()


def stalled_calls(server: Server, args, tally: Tally, round_: int) -> None:
    result = asyncio.run(_stall(server.address, args.stalled))
    tally.calls += result["probes"]
    tally.errors += len(result["failed"])  # probes a legitimate client lost to the stall
    tally.notes.extend(result["failed"][: 5 - len(tally.notes)])
    codes = result["codes"]
    tally.calls += len(codes)
    tally.errors += len(codes) - codes.count("DEADLINE_EXCEEDED")  # each ends at its own deadline, not before, not never
    tally.notes.append(f"round {round_}: {len(codes)} stalled calls, {result['waiting']} still waiting after {STALL_PROBES:g} s of probes "
                       f"({result['probes']} probe calls, slowest round of 4 {result['slowest'] * 1000:.0f} ms), then {codes.count('DEADLINE_EXCEEDED')} DEADLINE_EXCEEDED")


def large_burst(server: Server, args, tally: Tally, round_: int) -> None:
    data = h.evaluate_request({**h.OFFER, "text": "t" * 1_000_000}).SerializeToString()
    outcomes = asyncio.run(h._burst(server.address, args.burst, data))
    tally.calls += len(outcomes)
    failed = len(outcomes) - outcomes.count("OK")
    tally.errors += failed
    tally.lost += failed


ATTACKS = [
    Attack("malformed", tuple(SMALL_LIMITS), lambda a: f"{a.malformed} malformed or corrupted messages per method per round (half for ValidatePolicy), {a.malformed // 20} bad stream items, x {a.rounds} rounds",
           lambda a: "", lambda a: "", malformed),
    Attack("oversized", tuple(SMALL_LIMITS), lambda a: f"requests of 1 MiB+1, 4 MiB and 16 MiB to 5 methods, an oversized stream item, an explained batch's response over a 64 KiB limit (its own server); {a.oversized} each x {a.rounds} rounds",
           lambda a: "", lambda a: "", oversized),
    Attack("batch-limit", tuple(SMALL_LIMITS), lambda a: f"batches of 51, 1,000 and 100,000 items (limit 50); {a.batches} each x {a.rounds} rounds", lambda a: "8 concurrent callers", lambda a: "", batch_limit),
    Attack("deep-nesting", tuple(SMALL_LIMITS), lambda a: f"annotations nested 8 to 60, 100, 200, 1,000, 10,000 levels (objects, lists) via Evaluate, batch and stream; x {a.repeat} x {a.rounds} rounds",
           lambda a: "", lambda a: "", deep_nesting),
    Attack("empty-unknown", tuple(SMALL_LIMITS), lambda a: f"empty requests to 6 methods, unknown fields of 5 wire types at 3 levels; x {a.repeat} x {a.rounds} rounds", lambda a: "", lambda a: "", empty_unknown),
    Attack("metadata", tuple(SMALL_LIMITS), lambda a: f"100 KB header, 500 headers, 4 request ids that are no header value (refused, naming the field); x {a.repeat} x {a.rounds} rounds", lambda a: "", lambda a: "", metadata),
    Attack("deadlines", tuple(SMALL_LIMITS), lambda a: f"deadlines of 1 us to 5 ms on 5 methods and streams, explained 50-item batches at 1-5 ms; x {a.repeat} x {a.rounds} rounds", lambda a: "", lambda a: "", deadlines),
    Attack("stream-flood", ("--threads", "32"), lambda a: f"{a.streams} EvaluateStreams opened at once on 8 connections, held, half then closed and half cancelled; x {a.rounds} rounds",
           lambda a: f"{a.streams} concurrent streams on --threads 32 (--max-streams 16)", lambda a: "", stream_flood),
    Attack("idle-connections", ("--handshake-timeout", "2", "--max-connection-idle", "4"),
           lambda a: f"{a.sockets} TCP connections per round: 40% silent, 40% half an HTTP/2 preface, 20% a preface and nothing more; x {a.rounds} rounds",
           lambda a: f"{a.sockets} idle connections held", lambda a: "connections that never complete a call (--handshake-timeout 2, --max-connection-idle 4)", idle_connections),
    Attack("fd-exhaustion", ("--handshake-timeout", "5"), lambda a: f"{a.sockets} silent TCP connections per round against a file descriptor limit of {fd_limit(a)}; x {a.rounds} rounds",
           lambda a: f"{a.sockets} connections held", lambda a: f"RLIMIT_NOFILE {fd_limit(a)} on the server, exhausted (--handshake-timeout 5)", fd_exhaustion),
    Attack("stalled-calls", ("--threads", "32"), lambda a: f"{a.stalled} calls per round to the 5 unary methods that send headers and never their request, on 8 connections, until their {STALL_DEADLINE:g} s deadline; x {a.rounds} rounds",
           lambda a: f"{a.stalled} stalled calls on --threads 32; unary, batch, stream and health probes from another client meanwhile, 1 s deadline each",
           lambda a: "calls that never send their request (no --max-connection-age)", stalled_calls),
    Attack("large-burst", (), lambda a: f"{a.burst} concurrent valid 1 MB Evaluate requests per round; x {a.rounds} rounds",
           lambda a: f"{a.burst} concurrent calls, {a.burst} MB in flight", lambda a: "", large_burst),
]


# ---- running a class ---------------------------------------------------------------------------


def _settle(pid: int, limit: float, seconds: float) -> float:
    deadline = time.monotonic() + seconds
    while True:
        now = h.rss_mb(pid)
        if now <= limit or time.monotonic() > deadline:
            return now
        time.sleep(0.25)


def _warm_up(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        for method in METHODS:
            h.raw_call(channel, method, h.VALID[method])
        list(h.stream_call(channel)(iter([h.VALID["EvaluateStream"]] * 10), timeout=30))
        for _ in range(20):
            h.raw_call(channel, "EvaluateBatch", pb.EvaluateBatchRequest(contents=[h.evaluate_request().content] * h.MAX_BATCH).SerializeToString())


def run_class(attack: Attack, args, workdir: Path) -> dict:
    flags = ["--workers", "1", "--poll", "0", *attack.flags]
    server = start_server(workdir / f"{attack.name}.log", *flags)
    tally = Tally()
    healthy = True
    try:
        _warm_up(server)
        time.sleep(12)  # one default --trim-interval, so the baseline is what the server keeps
        before = h.rss_mb(server.process.pid)
        watch = h.RssWatch(server.process.pid)
        started = time.monotonic()
        for round_ in range(args.rounds):
            try:
                attack.run(server, args, tally, round_)
            except Exception as e:  # noqa: BLE001 - a client-side surprise is a finding, reported, not a crash of the bench
                tally.errors += 1
                tally.notes.append(f"round {round_}: the attack raised {type(e).__name__}: {e}")
            try:
                h.assert_healthy(server)
            except (AssertionError, grpc.RpcError) as e:
                healthy = False
                tally.notes.append(f"round {round_}: unhealthy: {e}")
        seconds = time.monotonic() - started
        after = _settle(server.process.pid, h.allowed_rss(before), args.settle)
        watch.stop()
        alive = server.process.poll() is None
    finally:
        status = server.stop()
    survived = alive and healthy and after <= h.allowed_rss(before) and status == 0
    described = attack.load(args)
    rss = {"before": round(before), "peak": round(watch.peak), "after": round(after)}
    row = {
        "class": attack.name,
        "inputs": attack.inputs(args),
        "load": f"{described + '; ' if described else ''}{tally.calls} calls in {seconds:.0f} s; server RSS {rss['before']} MB, peak {rss['peak']}, after {rss['after']}",
        "faults": attack.faults(args),
        "survived": survived,
        "errors": tally.errors,
        "lost": tally.lost,
        "command": " ".join(["python", "bench/hostile.py", *sys.argv[1:]]),
        "rss_mb": rss,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"hostile-{attack.name}.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return {**row, "calls": tally.calls, "seconds": seconds, "notes": tally.notes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each attack (default 3)")
    ap.add_argument("--malformed", type=int, default=2000, help="malformed messages per method per round (default 2000)")
    ap.add_argument("--oversized", type=int, default=5, help="repetitions of each oversized request per round (default 5)")
    ap.add_argument("--batches", type=int, default=200, help="repetitions of each over-limit batch per round (default 200)")
    ap.add_argument("--repeat", type=int, default=20, help="repetitions of the small attacks per round (default 20)")
    ap.add_argument("--streams", type=int, default=1000, help="concurrent streams (default 1000)")
    ap.add_argument("--sockets", type=int, default=1000, help="idle connections per round (default 1000)")
    ap.add_argument("--burst", type=int, default=1000, help="concurrent 1 MB requests (default 1000)")
    ap.add_argument("--stalled", type=int, default=1000, help="calls that never send their request, per round (default 1000)")
    ap.add_argument("--settle", type=float, default=30, help="seconds RSS may take to settle after an attack (default 30)")
    ap.add_argument("--only", default="", help="comma-separated classes (default: all)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, small budgets")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.malformed, args.oversized, args.batches, args.repeat = 1, 100, 2, 5, 2
        args.streams, args.sockets, args.burst, args.stalled = 200, 200, 100, 200
    chosen = [a for a in ATTACKS if not args.only or a.name in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {a.name for a in ATTACKS}
    if unknown:
        ap.error(f"unknown classes: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so each server is stopped on the way out
    rows = []
    with tempfile.TemporaryDirectory(prefix="pol-hostile-") as tmp:
        for attack in chosen:
            row = run_class(attack, args, Path(tmp))
            rows.append(row)
            rss = row["rss_mb"]
            print(f"{row['class']:17} {'survived' if row['survived'] else 'FAILED':8} calls {row['calls']:7}  errors {row['errors']:4}  lost {row['lost']:3}  "
                  f"RSS {rss['before']:4} -> peak {rss['peak']:5} -> {rss['after']:4} MB  ({row['seconds']:.0f} s)", flush=True)
            for note in row["notes"]:
                print(f"{'':19}{note}")
    print(f"\nrows in {RESULTS.relative_to(ROOT)}/hostile-<class>.json; RSS margin: +20% or +30 MB over the warmed-up baseline")
    return 0 if all(r["survived"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
