"""Evaluation fuzzing through the service: hostile annotations over gRPC get the engine's decision or INVALID_ARGUMENT.

The hostile inputs of tests/test_fuzz_eval.py (wrong types, NaN, the infinities, -0.0,
integers beyond 64 bits, deep nesting, unicode edge cases), plus wire-sized ones (huge
strings and lists, nesting around --max-depth and protobuf's own limit, odd keys), are
sent to a real `pol serve` as `google.protobuf.Struct` annotations. Each call must end
with a decision or INVALID_ARGUMENT, and agree with `engine` deciding in process what
the server received:

- the Struct carries JSON, so the engine is given the annotations as the wire has them:
  every number a double (an integer beyond a double's range is sent as an infinity, as
  a JSON parser reads it), tuples and sets as lists, and lone surrogates, which protobuf
  cannot encode as UTF-8, replaced by "?"; values no JSON client could send (bytes,
  complex numbers, objects) are not drawn;
- a decision must be the engine's: verdict, policy, rule, justifications, warnings, set hash;
- INVALID_ARGUMENT must be the engine's InputError (the same fields and descriptions,
  under `content.annotations.`), or nesting deeper than --max-depth (named `content.annotations`);
- bytes protobuf itself cannot parse (nesting deeper than its 100-message limit) are
  INVALID_ARGUMENT "malformed request" (nesting is cut at 150 levels when the request is
  built: refused all the same); they are refused like any unparseable request (tests/test_hostile_grpc.py).

Batches and streams of the same inputs must answer item for item as Evaluate does.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

grpc = pytest.importorskip("grpc")

import engine  # noqa: E402
from engine.policyset import read_files  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402
from server import convert  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from tests.conftest import POLICIES  # noqa: E402
from tests.server_util import start_server  # noqa: E402
from tests.strategies import annotations_for  # noqa: E402
from tests.test_fuzz_eval import WEIRD, _set, hostile  # noqa: E402
from tests.test_hostile_grpc import UNPARSEABLE, field, field_violations, parses, raw_call, violations  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
MAX_DEPTH = 32  # the default
CUT = 150  # levels of nesting kept by to_wire; protobuf parses at most 100 nested messages
VERDICTS = {pb.VERDICT_ALLOW: "allow", pb.VERDICT_INTERVENE: "intervene", pb.VERDICT_REMOVE: "remove"}
SHIPPED = {k: v.decode("utf-8") for k, v in read_files(POLICIES).items()}


# ---- annotations as the wire carries them ---------------------------------------------------------


class Unsendable(Exception):
    """A value no JSON client could put in a Struct."""


def to_wire(value: object, level: int = 0) -> object:
    """`value` as a Struct carries it: numbers as doubles, sequences and sets as lists, UTF-8-safe strings.

    Nesting is cut at CUT levels (with "x"): protobuf refuses far less, so the outcome is the same.
    """
    if level >= CUT:
        return "x"
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [to_wire(v, level + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_wire(v, level + 1) for v in value), key=repr)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {to_wire(k): to_wire(v, level + 1) for k, v in value.items()}
    raise Unsendable(type(value).__name__)


def value_bytes(value: object) -> bytes:
    """A google.protobuf.Value, serialised by hand (NaN and -0.0 exactly as given)."""
    if value is None:
        return b"\x08\x00"  # null_value
    if isinstance(value, bool):
        return b"\x20" + (b"\x01" if value else b"\x00")  # bool_value
    if isinstance(value, float):
        return b"\x11" + struct.pack("<d", value)  # number_value
    if isinstance(value, str):
        return field(3, value.encode("utf-8"))
    if isinstance(value, list):
        return field(6, b"".join(field(1, value_bytes(v)) for v in value))
    return field(5, struct_bytes(value))


def struct_bytes(mapping: dict) -> bytes:
    return b"".join(field(1, field(1, k.encode("utf-8")) + field(2, value_bytes(v))) for k, v in mapping.items())


def request_bytes(annotations: dict, request_id: str = "fuzz") -> bytes:
    return field(1, field(2, struct_bytes(annotations))) + field(4, request_id.encode())


def depth(value: object) -> int:
    """The deepest object or list, the annotations object being 1 (as --max-depth counts)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            stack += [(x, d + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, d + 1) for x in v]
        else:
            continue
        deepest = max(deepest, d)
    return deepest


def _deep(levels: int, kind: str) -> object:
    out: object = "x"
    for _ in range(levels):
        out = {"a": out} if kind == "object" else [out]
    return out


WIRE = [
    "x" * 300_000, "\u00e9" * 100_000, "\x00" * 10_000, [f"l{i}" for i in range(20_000)], ["illegal_border_crossing"] * 5_000,
    2.0**53 + 2, -(2.0**63), 1e308, -1e-308, 5e-324, math.nan, -math.inf, -0.0, 0.8, 0.7999999999999999, 0.8000000000000002,
    *(_deep(n, kind) for n in (29, 30, 31, 32, 33, 40) for kind in ("object", "list")),
    "\u202e\u2066", "\U0010ffff", "\ufffe", "\uffff", "e\u0301\u0301\u0301", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "human_smuggling\u200b", "HUMAN_SMUGGLING", "offer ", "\u0130", {"": 1}, {"a.b": 1}, {"k" * 10_000: 1},
]
ODD_KEYS = ["", "author.account_age_days", "topic ", "TOPIC", "\x00", "\ud800", "k" * 10_000, "\u00e9"]


@st.composite
def wire_hostile(draw) -> dict:
    """Shipped-set inputs with hostile values, the wire-sized ones included, sendable as a Struct."""
    annotations = draw(st.one_of(hostile(SHIPPED), annotations_for(SHIPPED)))  # hostile, or well-typed before the wire values
    assume(isinstance(annotations, dict))
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from([("topic",), ("intent",), ("confidence",), ("labels",), ("text",), ("language",), ("author",),
                                     ("author", "account_age_days"), ("author", "is_verified"), ("mentions_minor",)]))
        _set(annotations, path, draw(st.sampled_from(WIRE)))
    if draw(st.integers(0, 4)) == 0:
        annotations[draw(st.sampled_from(ODD_KEYS))] = draw(st.sampled_from(WEIRD[:20] + WIRE[:3]))
    try:
        return to_wire(annotations)
    except Unsendable:
        assume(False)


# ---- the server and the comparison --------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("fuzz-service") / "stderr.log", "--workers", "1", "--poll", "0")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def shipped_set() -> engine.PolicySet:
    return engine.load(POLICIES)


def summary(r: pb.EvaluateResponse) -> dict:
    return {
        "verdict": VERDICTS[r.verdict], "policy": r.policy, "rule": r.rule,
        "justifications": [(j.policy, j.rule, j.deciding) for j in r.justifications],
        "warnings": [(w.code, w.field or None) for w in r.warnings], "policy_set_hash": r.policy_set_hash,
    }


def engine_summary(d: engine.Decision) -> dict:
    return {
        "verdict": d.verdict, "policy": d.policy or "", "rule": d.rule or "",
        "justifications": [(j.policy, j.rule, j.deciding) for j in d.justifications],
        "warnings": [(w.code, w.field) for w in d.warnings], "policy_set_hash": d.policy_set_hash,
    }


def expected_violations(annotations: dict, ps: engine.PolicySet, prefix: str = "content.annotations") -> dict | None:
    """The field violations the service must name for `annotations`; None when they must be decided."""
    if depth(annotations) > MAX_DEPTH:
        return {prefix: f"annotations nest deeper than {MAX_DEPTH} levels"}
    try:
        ps.evaluate(annotations)
    except engine.InputError as e:
        return {f"{prefix}.{v.field}" if v.field else prefix: v.description for v in e.violations}
    return None


def check_one(channel, ps: engine.PolicySet, annotations: dict) -> str:
    """Send `annotations` to Evaluate; the outcome must match the engine's. Returns which outcome it was."""
    data = request_bytes(annotations)
    code, response, error = raw_call(channel, "Evaluate", data)
    if not parses("Evaluate", data):
        assert code in UNPARSEABLE, error
        return "unparseable"
    expected = expected_violations(annotations, ps)
    if expected is None:
        assert code == grpc.StatusCode.OK, (error, annotations if len(data) < 2000 else len(data))
        assert summary(pb.EvaluateResponse.FromString(response)) == engine_summary(ps.evaluate(annotations))
        return "decision"
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (error, expected)
    assert violations(error) == expected
    return "invalid_argument"


@settings(max_examples=300, **SETTINGS)
@given(annotations=wire_hostile())
def test_hostile_annotations_over_grpc_get_the_engines_decision_or_invalid_argument(channel, shipped_set, annotations):
    """Hostile annotations sent to Evaluate: the engine's decision, or INVALID_ARGUMENT naming what the engine names."""
    event(check_one(channel, shipped_set, annotations))  # pytest --hypothesis-show-statistics shows the mix


@pytest.mark.parametrize("levels", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 5, 200])
@pytest.mark.parametrize("kind", ["object", "list"])
def test_nesting_around_the_limits(channel, shipped_set, kind: str, levels: int):
    """`author` nested around --max-depth and protobuf's limit: decided, INVALID_ARGUMENT, or refused unparsed, as the engine and parser say."""
    outcome = check_one(channel, shipped_set, {"topic": "other", "intent": "other", "confidence": 0.5, "author": _deep(levels, kind)})
    if levels == 200:
        assert outcome == "unparseable"
    else:  # the innermost object or list is at depth levels + 1
        assert outcome in (("invalid_argument", "unparseable") if levels + 1 > MAX_DEPTH else ("decision", "invalid_argument"))


def test_numbers_arrive_as_doubles(channel, shipped_set):
    """Integers travel as doubles: 3 and 3.0 decide alike, 2**64 is a float, NaN and -0.0 survive the trip."""
    base = {"topic": "human_smuggling", "intent": "offer", "author": {"account_age_days": 3}}
    outcomes = [check_one(channel, shipped_set, to_wire({**base, "confidence": c})) for c in (0.8, 1, -0.0, math.nan, math.inf, 2**64)]
    assert outcomes.count("decision") >= 4
    assert check_one(channel, shipped_set, to_wire({**base, "confidence": 0.9, "author": {"account_age_days": 3.0}})) == "decision"
    assert check_one(channel, shipped_set, to_wire({**base, "confidence": 0.9, "author": {"account_age_days": 2.5}})) == "invalid_argument"


@settings(max_examples=40, **SETTINGS)
@given(items=st.lists(wire_hostile(), min_size=1, max_size=8))
def test_batch_and_stream_answer_each_item_as_evaluate_does(channel, items):
    """The same hostile items in one EvaluateBatch and one EvaluateStream: item for item, Evaluate's answer."""
    # a stream item is one message deeper than Evaluate's request: keep what protobuf parses in all three
    items = [a for a in items if parses("EvaluateStream", field(1, request_bytes(a))) and len(request_bytes(a)) < 300_000]
    assume(items)
    single = []
    for a in items:
        code, response, error = raw_call(channel, "Evaluate", request_bytes(a))
        single.append(("response", pb.EvaluateResponse.FromString(response)) if code == grpc.StatusCode.OK else ("error", code.value[0], violations(error)))
    batch = b"".join(field(1, field(2, struct_bytes(a))) for a in items) + field(4, b"fuzz")
    code, response, error = raw_call(channel, "EvaluateBatch", batch)
    assert code == grpc.StatusCode.OK, error
    stream = channel.stream_stream("/pol.v1.PolicyService/EvaluateStream", request_serializer=None, response_deserializer=pb.EvaluateStreamResponse.FromString)
    answers = [a.result for a in stream(iter(field(1, request_bytes(a)) for a in items), timeout=60)]
    for i, (want, from_batch, from_stream) in enumerate(zip(single, pb.EvaluateBatchResponse.FromString(response).results, answers, strict=True)):
        for got, prefix in ((from_batch, f"contents[{i}].annotations"), (from_stream, "content.annotations")):
            if want[0] == "response":
                assert got.WhichOneof("result") == "response" and got.response == want[1]
            else:
                assert got.WhichOneof("result") == "error" and got.error.code == want[1]
                assert {f.replace("content.annotations", prefix, 1): d for f, d in want[2].items()} == field_violations(got.error)


def test_wire_helpers_match_protobuf():
    """The hand-made Struct bytes are what protobuf makes of the same JSON (a check of this file's encoder)."""
    from google.protobuf import struct_pb2

    sample = {"a": [1.0, "x", None, True, {"b": -0.0}], "c": {"d": []}, "\u00e9": 1e308}
    made = struct_pb2.Struct.FromString(struct_bytes(sample))
    expected = struct_pb2.Struct()
    expected.update(sample)
    assert made == expected


def _decoded(decode, struct, max_depth: int) -> object:
    from server.convert import TooDeep

    try:
        return json.dumps(decode(struct, max_depth), sort_keys=True)  # NaN, -0.0, true and 1 stay distinct
    except TooDeep as e:
        return ("too deep", e.limit, str(e))


@pytest.mark.skipif(convert._decode is None, reason="server/_wire.c is not built or not in use")
@settings(max_examples=300, **SETTINGS)
@given(annotations=wire_hostile(), max_depth=st.integers(1, 40))
def test_the_c_struct_decoder_reads_what_the_python_walk_reads(annotations, max_depth):
    """server/_wire.c gives a Struct the values the Python walk gives it, and is too deep exactly when the walk is."""
    try:
        struct_ = struct_pb2.Struct.FromString(struct_bytes(annotations))  # parsed as the server parses a request
    except DecodeError:
        assume(False)  # nested past protobuf's own limit: the server never gets that far
    assert _decoded(convert.struct_to_python, struct_, max_depth) == _decoded(convert.walk_struct, struct_, max_depth)


def test_the_c_struct_decoder_skips_unknown_fields_of_every_wire_type():
    """Unknown fields (groups included), which upb keeps and writes back, are skipped in a Struct, an entry, a Value and a list."""
    if convert._decode is None:
        pytest.skip("server/_wire.c is not built or not in use")
    from tests.test_hostile_grpc import UNKNOWN_FIELDS

    entry = field(1, b"a") + field(2, field(6, field(1, b"\x11" + struct.pack("<d", 1.5) + UNKNOWN_FIELDS) + UNKNOWN_FIELDS) + UNKNOWN_FIELDS)
    parsed = struct_pb2.Struct.FromString(UNKNOWN_FIELDS + field(1, entry + UNKNOWN_FIELDS) + UNKNOWN_FIELDS)
    kept = parsed.SerializeToString()  # what the server decodes
    assert len(kept) > len(struct_bytes(convert.walk_struct(parsed, 32))), "upb dropped every unknown field: nothing is tested"
    assert convert._decode(kept, 32, convert.TooDeep) == convert.walk_struct(parsed, 32)
    deep_entry = field(1, field(1, b"d") + field(2, value_bytes(_deep(20, "object"))) + UNKNOWN_FIELDS)  # kept out of the map
    parsed = struct_pb2.Struct.FromString(deep_entry + field(1, field(1, b"b") + field(2, value_bytes(True))))
    assert convert._decode(parsed.SerializeToString(), 5, convert.TooDeep) == {"b": True} == convert.walk_struct(parsed, 5)


def test_the_c_struct_decoder_refuses_malformed_bytes():
    """Bytes that are not a serialised Struct (cut short, a length past the end, bad UTF-8) are a ValueError, never a crash."""
    if convert._decode is None:
        pytest.skip("server/_wire.c is not built or not in use")
    good = struct_bytes({"topic": "human_smuggling", "labels": ["a", "b"], "n": 1.5})
    for bad in (good[:-1], good[:5], b"\x0a\xff\xff\xff\xff\x0f", field(1, field(1, b"\xff\xfe")), b"\x0b", b"\x0a\x02\x12\x05"):
        with pytest.raises(ValueError, match="malformed|utf-8"):
            convert._decode(bad, 32, convert.TooDeep)
