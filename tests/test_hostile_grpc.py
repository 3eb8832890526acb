"""Hostile gRPC clients against a real `pol serve`: it stays up, answers the right status, and gives memory back.

Every attack goes through a real client on loopback; bytes that must reach the server
unparsed are sent with `request_serializer=None`. After each attack the server must
still be alive, SERVING, and decide a known item correctly. The RSS of the server process
is watched throughout (`/proc/<pid>/status`); `test_memory_returns_to_baseline_after_the_attacks`
compares it with the baseline taken after warm-up. Idle connections and stalled calls run
against a second, small server with short connection limits (`strict`).

Status codes pinned here beyond docs/api.md: bytes that are not a valid protobuf message
of the method's request type (malformed, invalid UTF-8 in a string, or nested deeper than
protobuf's parser allows: 100 messages, about 33 objects of annotations) are
INVALID_ARGUMENT "malformed request" (server/guard.py parses requests; grpcio's own path
answers UNKNOWN on its asyncio server). Every other refusal uses the codes of docs/api.md.

`bench/hostile.py` runs the same attacks at full budget and reports RSS figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass

import pytest

grpc = pytest.importorskip("grpc")

from google.protobuf import message as pb_message  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc  # noqa: E402
from tests.server_util import Server, start_server  # noqa: E402

OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
MAX_MESSAGE = 1 << 20
MAX_BATCH = 50
MAX_DEPTH = 8
THREADS = 32
MAX_STREAMS = THREADS // 2  # the default: half of --threads
SERVICE = "/pol.v1.PolicyService/"
REQUEST_TYPES = {
    "Evaluate": pb.EvaluateRequest,
    "EvaluateBatch": pb.EvaluateBatchRequest,
    "EvaluateStream": pb.EvaluateStreamRequest,
    "ValidatePolicy": pb.ValidatePolicyRequest,
    "ListPolicies": pb.ListPoliciesRequest,
    "GetPolicy": pb.GetPolicyRequest,
}
UNPARSEABLE = {grpc.StatusCode.INVALID_ARGUMENT}  # see the module docstring
API_CODES = {  # every code docs/api.md lets a parseable request end with
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


# ---- protobuf wire bytes, built by hand so nothing checks them on the way out -------------


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def struct_bytes(annotations: dict) -> bytes:
    s = struct_pb2.Struct()
    s.update(annotations)
    return s.SerializeToString()


def evaluate_request(annotations: dict | None = None, *, content_id: str = "", request_id: str = "", explain: bool = False) -> pb.EvaluateRequest:
    s = struct_pb2.Struct()
    s.update(OFFER if annotations is None else annotations)
    return pb.EvaluateRequest(content=pb.Content(id=content_id, annotations=s), request_id=request_id, explain=explain)


def nested(levels: int, kind: str) -> bytes:
    """A google.protobuf.Value: `levels` objects {"a": ...} (kind "object") or lists [...] around "x"."""
    value = field(3, b"x")  # string_value
    for _ in range(levels):
        if kind == "object":
            value = field(5, field(1, field(1, b"a") + field(2, value)))  # struct_value { fields { key: "a" value: ... } }
        else:
            value = field(6, field(1, value))  # list_value { values: ... }
    return value


def with_deep_author(levels: int, kind: str) -> bytes:
    """Annotations (a Struct) that decide OFFER but for an `author` nested `levels` deep."""
    return struct_bytes(OFFER) + field(1, field(1, b"author") + field(2, nested(levels, kind)))


def evaluate_bytes(annotations: bytes) -> bytes:
    return field(1, field(2, annotations))  # EvaluateRequest { content { annotations } }


def parses(method: str, data: bytes) -> bool:
    """Whether protobuf itself (the same library the server uses) accepts `data` as the method's request."""
    try:
        REQUEST_TYPES[method].FromString(data)
    except pb_message.DecodeError:
        return False
    return True


def malformed(valid: bytes, rng: random.Random, n: int) -> list[bytes]:
    """Broken encodings of every kind, then `n` random byte strings and `n` corruptions of `valid`."""
    out = [
        b"\xff", b"\x80" * 11, b"\x0a", b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\x0f", b"\x0f", b"\x0b", b"\x0c",
        b"\x0a\x02\xff\xfe", b"\x12\x02\xc3\x28", b"\x00", b"\x08" + b"\xff" * 10 + b"\x01", bytes(range(256)),
        valid[:-1], valid[: len(valid) // 2], valid + b"\x0a", b"\x0a" + varint(len(valid) + 10) + valid,
    ]
    out += [rng.randbytes(rng.choice((1, 2, 3, 7, 40, 500, 5000))) for _ in range(n)]
    for _ in range(n):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        out.append(bytes(data))
    return out


# ---- the server and what "healthy" means ------------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssWatch:
    """Samples a process's RSS every 20 ms in a thread, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def raw_call(channel: grpc.Channel, method: str, data: bytes, *, timeout: float = 30, metadata=None) -> tuple[grpc.StatusCode, bytes | None, grpc.RpcError | None]:
    """Call `method` with `data` as the request bytes, exactly as given; (code, response bytes, the error)."""
    call = channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
    try:
        return grpc.StatusCode.OK, call(data, timeout=timeout, metadata=metadata), None
    except grpc.RpcError as e:
        return e.code(), None, e


def violations(error: grpc.RpcError) -> dict[str, str]:
    """The BadRequest field violations in an error's status details."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    return field_violations(status)


def field_violations(status) -> dict[str, str]:
    """The BadRequest field violations in a google.rpc.Status."""
    found = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found |= {v.field: v.description for v in bad.field_violations}
    return found


def assert_healthy(server: Server) -> None:
    """Alive, SERVING, and a known item decided correctly, over a new connection."""
    assert server.process.poll() is None, "the server process died"
    with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        r = pb_grpc.PolicyServiceStub(channel).Evaluate(evaluate_request(), timeout=10)
        assert (r.verdict, r.policy, r.rule) == (pb.VERDICT_REMOVE, "human_smuggling", "offer_smuggling")


@dataclass(frozen=True)
class Target:
    """The server under attack, its RSS after warm-up (MB) and its RSS watch."""

    server: Server
    baseline: float
    watch: RssWatch

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def process(self):
        return self.server.process


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """`pol serve` with small limits, warmed up, its RSS baseline taken and watched."""
    flags = ["--workers", "1", "--threads", str(THREADS), "--max-message-bytes", str(MAX_MESSAGE), "--max-batch", str(MAX_BATCH),
             "--max-depth", str(MAX_DEPTH), "--poll", "0", "--trim-interval", "1"]
    server = start_server(tmp_path_factory.mktemp("hostile") / "stderr.log", *flags)
    with grpc.insecure_channel(server.address) as channel:  # warm-up: every method once, then a batch
        for method in REQUEST_TYPES:
            if method != "EvaluateStream":
                raw_call(channel, method, evaluate_request().SerializeToString() if method == "Evaluate" else b"")
        raw_call(channel, "EvaluateBatch", pb.EvaluateBatchRequest(contents=[evaluate_request().content] * MAX_BATCH).SerializeToString())
    time.sleep(2.5)  # past one --trim-interval
    target = Target(server, rss_mb(server.process.pid), RssWatch(server.process.pid))
    yield target
    target.watch.stop()
    assert server.stop() == 0


@pytest.fixture(scope="module")
def channel(target):
    with grpc.insecure_channel(target.address) as channel:
        yield channel


# ---- malformed bytes ------------------------------------------------------------------------------


VALID = {
    "Evaluate": evaluate_request(content_id="post-1", request_id="r-1").SerializeToString(),
    "EvaluateBatch": pb.EvaluateBatchRequest(contents=[evaluate_request().content] * 3, policies=["human_smuggling"]).SerializeToString(),
    "EvaluateStream": pb.EvaluateStreamRequest(request=evaluate_request()).SerializeToString(),
    "ValidatePolicy": pb.ValidatePolicyRequest(source="policy p for content {\n}\n", path="p.pol").SerializeToString(),
    "ListPolicies": b"",
    "GetPolicy": pb.GetPolicyRequest(name="human_smuggling").SerializeToString(),
}


@pytest.mark.parametrize("method", sorted(set(REQUEST_TYPES) - {"EvaluateStream"}))
def test_malformed_request_bytes_are_refused_and_parseable_ones_answered(target, channel, method: str):
    """Random, truncated and corrupted bytes to a unary method: unparseable ones are refused, the rest get an API status."""
    rng = random.Random(method)
    attacks = malformed(VALID[method] or b"\x0a\x03abc", rng, 12 if method == "ValidatePolicy" else 40)
    unparseable = 0
    for data in attacks:
        code, _, error = raw_call(channel, method, data)
        if parses(method, data):
            assert code in API_CODES, (data[:40], code, error)
        else:
            unparseable += 1
            assert code in UNPARSEABLE and error.details().startswith("malformed request"), (data[:40], code, error)
    assert unparseable >= len(attacks) // 3, "the corpus barely exercised the parser"
    assert_healthy(target)


def stream_call(channel: grpc.Channel):
    return channel.stream_stream(SERVICE + "EvaluateStream", request_serializer=None, response_deserializer=pb.EvaluateStreamResponse.FromString)


def test_malformed_stream_item_ends_only_that_stream(target, channel):
    """A stream item that is not a valid message ends its stream after the items before it were answered."""
    for bad in (b"\xff", b"\x0a\x05ab", b"\x0a\x02\x0a\x00" + b"\x0a\x02\xff\xfe", VALID["EvaluateStream"][:-3]):
        assert not parses("EvaluateStream", bad)
        answers = []
        with pytest.raises(grpc.RpcError) as e:
            for r in stream_call(channel)(iter([VALID["EvaluateStream"], bad, VALID["EvaluateStream"]]), timeout=30):
                answers.append(r)
        assert e.value.code() in UNPARSEABLE
        assert len(answers) == 1 and answers[0].result.response.rule == "offer_smuggling"
    assert_healthy(target)


def test_malformed_requests_leak_no_memory(target, channel):
    """3,000 unparseable requests leave RSS where it was (grpcio's sync server kept about 16 KB of each on its own error path: +48 MB)."""
    for method in ("Evaluate", "ListPolicies", "Evaluate"):
        raw_call(channel, method, b"\xff")
    before = rss_mb(target.process.pid)
    for i in range(3000):
        assert raw_call(channel, ("Evaluate", "EvaluateBatch", "GetPolicy")[i % 3], b"\xff")[0] in UNPARSEABLE
    assert rss_mb(target.process.pid) - before < 10
    assert_healthy(target)


def test_unknown_method_is_unimplemented(target, channel):
    """A method the server does not serve is UNIMPLEMENTED, whatever bytes come with it."""
    for method in ("Nope", "evaluate", "Evaluate/x", "../Evaluate"):
        assert raw_call(channel, method, b"\xff\x00")[0] == grpc.StatusCode.UNIMPLEMENTED
    assert_healthy(target)


def test_health_watch_and_reflection_pass_the_guard_and_refuse_garbage(target, channel):
    """Health Watch (not counted as a stream) and reflection still answer; garbage to them is INVALID_ARGUMENT."""
    watches = [health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30) for _ in range(MAX_STREAMS + 4)]
    assert {next(w).status for w in watches} == {health_pb2.HealthCheckResponse.SERVING}
    for w in watches:
        w.cancel()
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    listing = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30))
    assert "pol.v1.PolicyService" in {s.name for s in listing.list_services_response.service}
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=None, response_deserializer=None)
    info = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", request_serializer=None, response_deserializer=None)
    for call in (lambda: list(watch(b"\xff", timeout=30)), lambda: list(info(iter([b"\xff"]), timeout=30))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() in UNPARSEABLE
    assert_healthy(target)


def test_guard_caps_and_checks_client_streaming_methods_too():
    """A client-streaming method (pol serves none yet) gets the same stream cap and malformed-item refusal, in process."""
    from server.guard import Guard

    async def scenario() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def total(requests, context):
            values = [len(r) async for r in requests]
            entered.set()
            await release.wait()
            return str(sum(values)).encode()

        def strict_parse(data: bytes) -> bytes:
            if data.startswith(b"\xff"):
                raise ValueError("bad item")
            return data

        handler = grpc.stream_unary_rpc_method_handler(total, request_deserializer=strict_parse)
        server = grpc.aio.server(interceptors=[Guard(1)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"Sum": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = ch.stream_unary("/t.T/Sum", request_serializer=None, response_deserializer=None)
                first = asyncio.ensure_future(call(iter([b"ab", b"c"]), timeout=30))
                await asyncio.wait_for(entered.wait(), 10)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(iter([b"x"]), timeout=30)
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                release.set()
                assert await first == b"3"
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(iter([b"ok", b"\xffno"]), timeout=30)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bad item" in e.value.details()
                assert await call(iter([b"four"]), timeout=30) == b"4"  # the slot came back each time
        finally:
            await server.stop(0)

    asyncio.run(scenario())


# ---- size limits ----------------------------------------------------------------------------------


def padded(valid: bytes, size: int) -> bytes:
    """`valid` plus an unknown field (number 1000) that brings it to `size` bytes."""
    head = len(valid) + len(varint(1000 << 3 | 2)) + len(varint(size))
    return valid + field(1000, b"p" * (size - head))


@pytest.mark.parametrize("method", sorted(set(REQUEST_TYPES) - {"EvaluateStream"}))
def test_message_over_the_size_limit_is_resource_exhausted(target, channel, method: str):
    """A request just over --max-message-bytes, or many times over it, is RESOURCE_EXHAUSTED; one just under is read."""
    under = padded(VALID[method], MAX_MESSAGE - 64)
    assert raw_call(channel, method, under)[0] in API_CODES
    for size in (MAX_MESSAGE + 1, 4 * MAX_MESSAGE, 16 * MAX_MESSAGE):
        over = padded(VALID[method], size)
        assert len(over) == size
        code, _, error = raw_call(channel, method, over)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert_healthy(target)


def test_stream_item_over_the_size_limit_ends_the_stream_with_resource_exhausted(target, channel):
    """In a stream, an item over --max-message-bytes ends it with RESOURCE_EXHAUSTED after the items before it."""
    answers = []
    with pytest.raises(grpc.RpcError) as e:
        items = iter([VALID["EvaluateStream"], padded(VALID["EvaluateStream"], MAX_MESSAGE + 1)])
        for r in stream_call(channel)(items, timeout=30):
            answers.append(r)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(answers) == 1
    assert_healthy(target)


def test_response_over_the_size_limit_is_resource_exhausted(tmp_path):
    """A batch whose request fits but whose explained response would not is RESOURCE_EXHAUSTED, and the server serves on."""
    limit = 64 << 10
    server = start_server(tmp_path / "stderr.log", "--workers", "1", "--poll", "0", "--max-message-bytes", str(limit), "--max-batch", str(MAX_BATCH))
    try:
        with grpc.insecure_channel(server.address) as channel:
            one = pb_grpc.PolicyServiceStub(channel).Evaluate(evaluate_request(explain=True), timeout=30).ByteSize()
            id_length = 1000  # under the 1,024 a content id may have
            request = pb.EvaluateBatchRequest(contents=[evaluate_request(content_id="c" * id_length).content] * MAX_BATCH, explain=True)
            assert request.ByteSize() < limit < MAX_BATCH * (one + id_length)  # the request fits, its answer does not
            code, _, error = raw_call(channel, "EvaluateBatch", request.SerializeToString())
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            code, data, error = raw_call(channel, "Evaluate", evaluate_request(request_id="after").SerializeToString())
            assert code == grpc.StatusCode.OK and pb.EvaluateResponse.FromString(data).request_id == "after", error
    finally:
        assert server.stop() == 0


def test_batch_over_the_limit_is_resource_exhausted_in_bounded_time(target, channel):
    """A batch one over --max-batch, or of 100,000 empty items, is RESOURCE_EXHAUSTED within seconds."""
    for contents in (MAX_BATCH + 1, 100_000):
        data = field(1, field(2, struct_bytes(OFFER))) * contents if contents < 1000 else b"\x0a\x00" * contents
        assert len(data) < MAX_MESSAGE
        start = time.monotonic()
        code, _, error = raw_call(channel, "EvaluateBatch", data)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert f"over the limit of {MAX_BATCH}" in error.details()
        assert time.monotonic() - start < 10
    assert_healthy(target)


# ---- deep nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["object", "list"])
def test_annotations_nested_past_max_depth_are_invalid_argument_up_to_where_protobuf_refuses(target, channel, kind: str):
    """Nesting past --max-depth is INVALID_ARGUMENT naming content.annotations; past protobuf's own limit (up to 10,000 levels), a clean refusal."""
    deepest_parsed = max(n for n in range(MAX_DEPTH, 120) if parses("Evaluate", evaluate_bytes(with_deep_author(n, kind))))
    assert deepest_parsed >= 30  # protobuf's parser takes 100 message levels: 3 per object, 2 per list
    code, _, error = raw_call(channel, "Evaluate", evaluate_bytes(with_deep_author(MAX_DEPTH - 1, kind)))  # innermost at depth MAX_DEPTH
    assert code == grpc.StatusCode.OK or "content.annotations" not in violations(error)
    for levels in range(MAX_DEPTH, deepest_parsed + 1):
        code, _, error = raw_call(channel, "Evaluate", evaluate_bytes(with_deep_author(levels, kind)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (levels, error)
        assert violations(error) == {"content.annotations": f"annotations nest deeper than {MAX_DEPTH} levels"}
    for levels in (deepest_parsed + 1, 100, 1000, 10_000):
        data = evaluate_bytes(with_deep_author(levels, kind))
        start = time.monotonic()
        code, _, error = raw_call(channel, "Evaluate", data)
        assert code in UNPARSEABLE, (levels, error)
        assert time.monotonic() - start < 10
    assert_healthy(target)


def test_too_deep_item_in_a_batch_or_stream_gets_its_own_error(target, channel):
    """A batch item or stream item nested past --max-depth gets its own INVALID_ARGUMENT; the items around it are decided."""
    good, deep = struct_bytes(OFFER), with_deep_author(20, "object")
    batch = b"".join(field(1, field(2, a)) for a in (good, deep, good))
    code, data, error = raw_call(channel, "EvaluateBatch", batch)
    assert code == grpc.StatusCode.OK, error
    results = pb.EvaluateBatchResponse.FromString(data).results
    assert [r.WhichOneof("result") for r in results] == ["response", "error", "response"]
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    items = [field(1, evaluate_bytes(a)) for a in (good, deep, good)]
    answers = list(channel.stream_stream(SERVICE + "EvaluateStream", request_serializer=None, response_deserializer=pb.EvaluateStreamResponse.FromString)(iter(items), timeout=30))
    assert [a.result.WhichOneof("result") for a in answers] == ["response", "error", "response"]
    assert_healthy(target)


# ---- empty requests and unknown fields --------------------------------------------------------


def test_empty_requests_get_the_status_their_content_deserves(target, channel):
    """Empty requests: Evaluate names each missing required field; an empty batch and ListPolicies succeed; GetPolicy is NOT_FOUND."""
    code, _, error = raw_call(channel, "Evaluate", b"")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == {f"content.annotations.{f}": "is required" for f in ("topic", "intent", "confidence")}
    code, data, _ = raw_call(channel, "EvaluateBatch", b"")
    assert code == grpc.StatusCode.OK and pb.EvaluateBatchResponse.FromString(data).results == []
    code, data, _ = raw_call(channel, "ListPolicies", b"")
    assert code == grpc.StatusCode.OK and [p.name for p in pb.ListPoliciesResponse.FromString(data).policies] == ["human_smuggling"]
    assert raw_call(channel, "GetPolicy", b"")[0] == grpc.StatusCode.NOT_FOUND
    assert list(stream_call(channel)(iter([]), timeout=30)) == []
    code, data, _ = raw_call(channel, "EvaluateBatch", b"\x0a\x00")  # one empty item
    assert code == grpc.StatusCode.OK and pb.EvaluateBatchResponse.FromString(data).results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert_healthy(target)


UNKNOWN_FIELDS = (
    varint(99 << 3) + varint(2**63)  # varint
    + varint(100 << 3 | 1) + b"\x01" * 8  # fixed64
    + field(101, b"\xff\x00 not utf-8")  # length-delimited
    + varint(102 << 3 | 5) + b"\x02" * 4  # fixed32
    + varint(103 << 3 | 3) + varint(1 << 3) + b"\x07" + varint(103 << 3 | 4)  # a group holding a varint
)


def test_unknown_fields_anywhere_are_ignored(target, channel):
    """Unknown fields of every wire type, at the top, in Content or in the annotations, change nothing."""
    plain = pb.EvaluateResponse.FromString(raw_call(channel, "Evaluate", VALID["Evaluate"])[1])
    content = field(1, b"post-1") + field(2, struct_bytes(OFFER))
    for data in (
        VALID["Evaluate"] + UNKNOWN_FIELDS,
        UNKNOWN_FIELDS + VALID["Evaluate"],
        field(1, content + UNKNOWN_FIELDS) + field(4, b"r-1"),
        field(1, field(1, b"post-1") + field(2, struct_bytes(OFFER) + UNKNOWN_FIELDS)) + field(4, b"r-1"),
    ):
        assert parses("Evaluate", data)
        code, response, error = raw_call(channel, "Evaluate", data)
        assert code == grpc.StatusCode.OK, error
        assert pb.EvaluateResponse.FromString(response) == plain
    code, data, _ = raw_call(channel, "ListPolicies", UNKNOWN_FIELDS)
    assert code == grpc.StatusCode.OK
    assert_healthy(target)


# ---- headers and request ids --------------------------------------------------------------------


def test_oversized_metadata_is_refused(target, channel):
    """A call with 100 KB of metadata is refused with RESOURCE_EXHAUSTED; the server is unharmed."""
    code, _, _ = raw_call(channel, "Evaluate", VALID["Evaluate"], metadata=(("x-junk", "j" * 100_000),))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, _, _ = raw_call(channel, "Evaluate", VALID["Evaluate"], metadata=tuple((f"x-k{i}", "v" * 100) for i in range(500)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_healthy(target)


@pytest.mark.parametrize("request_id", ["caf\u00e9", "a\nb", "\x00", "r" * 100_000], ids=["non-ascii", "newline", "nul", "100k"])
def test_request_id_that_cannot_be_a_header_is_refused_naming_the_field(target, channel, request_id: str):
    """A request_id that cannot travel as metadata is INVALID_ARGUMENT naming `request_id`, decided nowhere; the next call is served."""
    code, _, error = raw_call(channel, "Evaluate", evaluate_request(request_id=request_id).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert list(violations(error)) == ["request_id"]
    code, data, error = raw_call(channel, "Evaluate", evaluate_request(request_id="fine-1").SerializeToString())
    assert code == grpc.StatusCode.OK and pb.EvaluateResponse.FromString(data).request_id == "fine-1", error


def test_an_overlong_content_id_is_refused_for_its_item_only(target, channel):
    """A content id over 1,024 characters is INVALID_ARGUMENT naming `contents[i].id`; the batch's other items are decided."""
    code, _, error = raw_call(channel, "Evaluate", evaluate_request(content_id="c" * 1025).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and list(violations(error)) == ["content.id"], error
    good, long = evaluate_request(content_id="c" * 1024).content, evaluate_request(content_id="c" * 5000).content
    code, data, error = raw_call(channel, "EvaluateBatch", pb.EvaluateBatchRequest(contents=[good, long]).SerializeToString())
    assert code == grpc.StatusCode.OK, error
    results = pb.EvaluateBatchResponse.FromString(data).results
    assert results[0].response.content_id == "c" * 1024
    assert list(field_violations(results[1].error)) == ["contents[1].id"]


# ---- deadlines ------------------------------------------------------------------------------------


def test_calls_with_tiny_deadlines_end_deadline_exceeded_or_answered(target, channel):
    """Deadlines from 1 us to 5 ms on every method: each call is DEADLINE_EXCEEDED or gets its usual answer; the server serves on."""
    codes = set()
    for method in sorted(set(REQUEST_TYPES) - {"EvaluateStream"}):
        for timeout in (1e-6, 1e-5, 1e-4, 1e-3, 5e-3):
            for _ in range(4):
                code, _, error = raw_call(channel, method, VALID[method], timeout=timeout)
                assert code in API_CODES | {grpc.StatusCode.DEADLINE_EXCEEDED}, (method, timeout, error)
                codes.add(code)
    for timeout in (1e-6, 1e-4, 1e-3):
        try:
            list(stream_call(channel)(iter([VALID["EvaluateStream"]] * 20), timeout=timeout))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    batch = pb.EvaluateBatchRequest(contents=[evaluate_request().content] * MAX_BATCH, explain=True).SerializeToString()
    for timeout in (1e-3, 2e-3, 5e-3):  # an explained batch takes longer: the deadline passes inside it
        code, _, error = raw_call(channel, "EvaluateBatch", batch, timeout=timeout)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), error
        codes.add(code)
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert_healthy(target)


# ---- many streams -------------------------------------------------------------------------------


async def _until_stable(count, quiet: float = 1.0, limit: float = 30) -> None:
    """Wait until `count()` has not changed for `quiet` seconds (at most `limit` seconds)."""
    last, since, start = count(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - start < limit:
        await asyncio.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()


async def _stream_flood(address: str, streams: int, channels: int = 4) -> dict:
    """Open `streams` EvaluateStreams at once, each sending one item and holding on; probe unary calls meanwhile."""
    opened = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(channels)]
    item = pb.EvaluateStreamRequest(request=evaluate_request())
    try:
        calls = [opened[i % channels].stream_stream(SERVICE + "EvaluateStream", request_serializer=pb.EvaluateStreamRequest.SerializeToString,
                                                    response_deserializer=pb.EvaluateStreamResponse.FromString)(timeout=60) for i in range(streams)]

        # A stream over the limit is refused as soon as the server sees it; the others wait for their
        # first item. Nothing is written before the refusals are in: a write racing a refusal makes
        # the aio client report INTERNAL in place of the server's status.
        await _until_stable(lambda: sum(c.done() for c in calls))

        async def first_answer(call) -> str:
            if call.done():
                return (await call.code()).name
            await call.write(item)
            answer = await call.read()
            return "served" if answer.result.response.rule == "offer_smuggling" else "wrong"

        outcomes = await asyncio.gather(*(first_answer(c) for c in calls))
        async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as probe:
            start = time.monotonic()
            health = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=10)
            unary = await pb_grpc.PolicyServiceStub(probe).Evaluate(evaluate_request(), timeout=10)
            probe_seconds = time.monotonic() - start
        served = [c for c, o in zip(calls, outcomes) if o == "served"]
        ends = []
        for i, call in enumerate(served):  # half end cleanly, half are cancelled: both must free their slot
            if i % 2:
                call.cancel()
                ends.append("CANCELLED")
            else:
                await call.done_writing()
                while await call.read() is not grpc.aio.EOF:
                    pass
                ends.append((await call.code()).name)
        return {"outcomes": outcomes, "health": health.status, "unary": unary.rule, "probe_seconds": probe_seconds, "ends": ends}
    finally:
        for c in opened:
            await c.close()


def test_stream_flood_extra_streams_are_refused_and_unary_calls_still_served(target):
    """200 streams at once on --threads 32: --max-streams are served, the rest RESOURCE_EXHAUSTED, and unary calls and health still answer."""
    result = asyncio.run(_stream_flood(target.address, 200))
    assert result["outcomes"].count("served") == MAX_STREAMS
    assert result["outcomes"].count("RESOURCE_EXHAUSTED") == 200 - MAX_STREAMS
    assert result["health"] == health_pb2.HealthCheckResponse.SERVING and result["unary"] == "offer_smuggling"
    assert result["probe_seconds"] < 10
    assert set(result["ends"]) <= {"OK", "CANCELLED"}
    again = asyncio.run(_stream_flood(target.address, MAX_STREAMS))  # every slot was given back
    assert again["outcomes"].count("served") == MAX_STREAMS
    assert_healthy(target)


# ---- memory -----------------------------------------------------------------------------------------


async def _burst(address: str, calls: int, data: bytes) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.unary_unary(SERVICE + "Evaluate", request_serializer=None, response_deserializer=None)

        async def one() -> str:
            try:
                await method(data, timeout=60)
                return "OK"
            except grpc.aio.AioRpcError as e:
                return e.code().name

        return await asyncio.gather(*(one() for _ in range(calls)))


def settled_rss(pid: int, limit: float, seconds: float = 15) -> float:
    """The RSS once it is at most `limit` MB, or after `seconds` (a few --trim-interval periods)."""
    deadline = time.monotonic() + seconds
    while True:
        now = rss_mb(pid)
        if now <= limit or time.monotonic() > deadline:
            return now
        time.sleep(0.25)


def allowed_rss(baseline: float) -> float:
    """+20% or +30 MB, whichever is more: room for pymalloc arenas and gRPC caches, far below a leak of what the attacks sent."""
    return max(baseline * 1.2, baseline + 30)


def test_server_returns_freed_memory_to_the_system(target):
    """On glibc the server finds malloc_trim and says so at start-up; without it the memory tests below cannot hold."""
    serving = [json.loads(line) for line in target.server.log_lines() if line.startswith("{") and '"event": "serving"' in line]
    assert [event["memory_trim"] for event in serving] == [True]


def test_burst_of_large_requests_gives_its_memory_back(target):
    """200 concurrent 0.9 MB requests raise RSS by their size; freed memory is returned within a few seconds."""
    data = evaluate_request({**OFFER, "text": "t" * 900_000}).SerializeToString()
    assert asyncio.run(_burst(target.address, 200, data)) == ["OK"] * 200
    after = settled_rss(target.process.pid, allowed_rss(target.baseline))
    assert after <= allowed_rss(target.baseline), f"baseline {target.baseline:.0f} MB, peak {target.watch.peak:.0f} MB, after {after:.0f} MB"
    assert_healthy(target)


def test_memory_returns_to_baseline_after_the_attacks(target):
    """After every attack above, the server's RSS settles within +20% / +30 MB of its warmed-up baseline."""
    after = settled_rss(target.process.pid, allowed_rss(target.baseline))
    assert after <= allowed_rss(target.baseline), f"baseline {target.baseline:.0f} MB, peak {target.watch.peak:.0f} MB, after {after:.0f} MB"
    assert_healthy(target)


# ---- connections that never become calls, and calls that never send ------------------------


STRICT_THREADS = 4


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A small server with short connection limits: 4 threads, 1 s handshakes, 2 s idle, 3 s connection age."""
    flags = ["--workers", "1", "--threads", str(STRICT_THREADS), "--poll", "0", "--handshake-timeout", "1", "--max-connection-idle", "2",
             "--max-connection-age", "3", "--grace", "1"]
    server = start_server(tmp_path_factory.mktemp("strict") / "stderr.log", *flags)
    yield server
    assert server.stop() == 0


def open_sockets(address: str, count: int, first_bytes: bytes) -> list[socket.socket]:
    host, port = address.rsplit(":", 1)
    out = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)), timeout=5)
        if first_bytes:
            s.sendall(first_bytes)
        s.setblocking(False)
        out.append(s)
    return out


def wait_closed_by_peer(sockets: list[socket.socket], seconds: float) -> int:
    """Read and discard until the server closes each socket, for up to `seconds`; how many are still open."""
    selector = selectors.DefaultSelector()
    for s in sockets:
        selector.register(s, selectors.EVENT_READ)
    open_ = len(sockets)
    deadline = time.monotonic() + seconds
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            try:
                data = key.fileobj.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                open_ -= 1
    selector.close()
    for s in sockets:
        s.close()
    return open_


def test_idle_and_half_open_connections_are_closed_and_others_served(strict):
    """Silent sockets, half an HTTP/2 preface, or a preface and nothing more: others are served meanwhile and the server closes them all."""
    held = open_sockets(strict.address, 100, b"") + open_sockets(strict.address, 100, PREFACE[:10]) + open_sockets(strict.address, 50, PREFACE + EMPTY_SETTINGS)
    with grpc.insecure_channel(strict.address) as idle_client:
        assert pb_grpc.PolicyServiceStub(idle_client).Evaluate(evaluate_request(), timeout=10).rule == "offer_smuggling"
        assert_healthy(strict)
        assert wait_closed_by_peer(held, 15) == 0  # by --handshake-timeout 1 and --max-connection-idle 2
        assert pb_grpc.PolicyServiceStub(idle_client).Evaluate(evaluate_request(), timeout=10).rule == "offer_smuggling"  # a closed idle channel reconnects
    assert_healthy(strict)


def test_stalled_calls_hold_no_thread_and_other_callers_are_served(strict):
    """Three times --threads stalled calls (headers, never a message), unary and streaming: another client's calls all succeed meanwhile."""
    release = threading.Event()

    def never():
        release.wait()
        yield from ()

    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(strict.address, options=options) as attacker, grpc.insecure_channel(strict.address, options=options) as other:
        stall_unary = attacker.stream_unary(SERVICE + "Evaluate", request_serializer=None, response_deserializer=None)
        stalled = [stall_unary.future(never(), timeout=60) for _ in range(3 * STRICT_THREADS)]
        stalled_stream = stream_call(attacker)(never(), timeout=60)  # a stream waiting for its first item
        try:
            time.sleep(0.3)
            served = [other.unary_unary(SERVICE + m, request_serializer=None, response_deserializer=None).future(VALID[m], timeout=2)
                      for m in ("Evaluate", "EvaluateBatch", "ListPolicies", "GetPolicy") for _ in range(10)]
            assert {f.exception(timeout=10) for f in served} == {None}
            assert pb.EvaluateResponse.FromString(served[0].result()).rule == "offer_smuggling"
            assert [r.result.response.rule for r in stream_call(other)(iter([VALID["EvaluateStream"]] * 3), timeout=2)] == ["offer_smuggling"] * 3
            health = health_pb2_grpc.HealthStub(other).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # --max-connection-age still ends calls that never send: the attacker's connection is closed after 3 s, + 1 s of grace
            assert {f.exception(timeout=15).code() for f in stalled} == {grpc.StatusCode.UNAVAILABLE}
            with pytest.raises(grpc.RpcError) as e:
                next(stalled_stream)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            release.set()
    assert_healthy(strict)
