"""`server.wire` writes decision responses byte by byte; they must be the messages the protobuf API builds.

The reference here builds each `EvaluateResponse` field by field with the generated
classes, from the decision's plain `to_dict()`. The encoder's bytes must parse to an
equal message, and re-serialise to the same bytes (which also tells -0.0 from 0.0).
"""

from __future__ import annotations

import math

from google.protobuf import struct_pb2
from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import given, settings

import engine
from server import wire
from server.convert import VERDICTS
from server.gen.pol.v1 import policy_service_pb2 as pb
from tests.conftest import POLICIES
from tests.strategies import PolicyCase, annotations_for, policy_cases
from tests.test_oracle import SETTINGS, _SHIPPED, compile_clean


def _struct(mapping: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(mapping)
    return s


def _justification(j: dict) -> pb.Justification:
    message = pb.Justification(
        policy=j["policy"], version=j["version"] or "", rule=j["rule"], action=VERDICTS[j["action"]],
        interventions=[pb.Intervention(name=i["name"], arguments=_struct(i["arguments"]), policy=j["policy"], rule=j["rule"]) for i in j["interventions"]],
        reason=j["reason"] or "", citation=j["citation"] or "", tags=j["tags"], deciding=j["deciding"],
    )
    for c in j["conditions"]:
        condition = message.conditions.add(expression=c["expression"])
        if c["observed"]:
            condition.observed.update(c["observed"])
        if c["held"] is not None:
            condition.held = c["held"]
    return message


def _field_1(data: bytes) -> bytes:
    return b"\x0a" + _VarintBytes(len(data)) + data


def reference(decision: engine.Decision, request_id: str, content_id: str, trace: dict | None = None) -> pb.EvaluateResponse:
    d = decision.to_dict()
    response = pb.EvaluateResponse(
        request_id=request_id, content_id=content_id, verdict=VERDICTS[d["verdict"]], policy=d["policy"] or "", rule=d["rule"] or "",
        interventions=[pb.Intervention(name=i["name"], arguments=_struct(i["arguments"]), policy=i["policy"], rule=i["rule"]) for i in d["interventions"]],
        justifications=[_justification(j) for j in d["justifications"]],
        policies=[pb.PolicyDecision(policy=p["policy"], version=p["version"] or "", verdict=VERDICTS[p["verdict"]], rule=p["rule"]) for p in d["policies"]],
        shadow=[_justification(j) for j in d["shadow"]],
        warnings=[pb.DecisionWarning(**{k: v or "" for k, v in w.items()}) for w in d["warnings"]],
        policy_set_hash=d["policy_set_hash"],
    )
    if trace is not None:
        response.trace.update(trace)
    return response


def assert_same(encoder: wire.Encoder, decision: engine.Decision, request_id: str = "req-1", content_id: str = "item-1", trace: dict | None = None) -> None:
    data = encoder.response(decision, decision.shape, request_id, content_id, trace)
    assert data == encoder.response(decision, None, request_id, content_id, trace)  # the template and the whole encoding agree
    assert encoder.result(decision, decision.shape, request_id, content_id, trace) == _field_1(_field_1(data))  # an EvaluateBatchResult entry
    got, want = pb.EvaluateResponse.FromString(data), reference(decision, request_id, content_id, trace)
    assert got == want
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)


def test_every_shipped_test_case_encodes_as_the_protobuf_api_builds_it() -> None:
    """Each decision of the shipped set's own test cases encodes to the message the protobuf API builds."""
    from engine.validate import literal_value

    ps = engine.load(POLICIES)
    encoder = wire.Encoder(ps)
    cases = [case for test, _ in ps.tests for case in test.cases]
    assert len(cases) >= 20
    for i, case in enumerate(cases):
        assert_same(encoder, ps.evaluate(literal_value(case.given)), content_id=f"case-{i}")


@settings(max_examples=300, **SETTINGS)
@given(annotations=annotations_for(_SHIPPED))
def test_shipped_decisions_encode_as_the_protobuf_api_builds_them(annotations: dict) -> None:
    """Random inputs to the shipped set: every decision, with conditions and observed values, encodes identically."""
    ps = _shipped()
    assert_same(_encoder(ps), ps.evaluate(annotations))


@settings(max_examples=150, **SETTINGS)
@given(case=policy_cases(inputs=4))
def test_random_policy_decisions_encode_as_the_protobuf_api_builds_them(case: PolicyCase) -> None:
    """Random sets (several policies, shadow rules, interventions with arguments, warnings) encode identically."""
    ps = compile_clean(case.files)
    encoder = wire.Encoder(ps)
    for annotations, policies in case.inputs:
        assert_same(encoder, ps.evaluate(annotations, policies))


def test_edge_values_ids_and_traces_encode_as_the_protobuf_api_builds_them() -> None:
    """Unicode and empty ids, -0.0, huge and tiny numbers, long lists and an explain trace all survive the encoder."""
    ps = _shipped()
    encoder = _encoder(ps)
    base = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.9, "labels": ["x"] * 40, "author": {"account_age_days": 3}}
    for confidence in (-0.0, 0.0, 1e-300, 1.0, math.inf):
        for request_id, content_id in (("", ""), ("é✓\u2028", "🙂" * 100), ("r" * 20_000, "c")):
            annotations = {**base, "confidence": confidence}
            try:
                decision = ps.evaluate(annotations)
            except engine.InputError:
                continue
            assert_same(encoder, decision, request_id, content_id)
    from engine.explain import explain_decision

    explanation = explain_decision(ps, base, None)
    assert_same(encoder, explanation.decision, trace=explanation.to_dict())


def test_results_are_the_entries_of_a_batch_and_whole_stream_responses() -> None:
    """`Encoder.result` and `error_result` bytes are one EvaluateBatchResponse entry each, and a whole EvaluateStreamResponse."""
    from google.rpc import status_pb2

    ps = _shipped()
    decision = ps.evaluate({"topic": "human_smuggling", "intent": "offer", "confidence": 0.9})
    response = pb.EvaluateResponse.FromString(_encoder(ps).response(decision, decision.shape, "r", "c"))
    status = status_pb2.Status(code=3, message="bad")
    ok, error = _encoder(ps).result(decision, decision.shape, "r", "c"), wire.error_result(status.SerializeToString())
    batch = pb.EvaluateBatchResponse.FromString(ok + error)
    assert [r.WhichOneof("result") for r in batch.results] == ["response", "error"]
    assert batch.results[0].response == response and batch.results[1].error == status
    assert pb.EvaluateStreamResponse.FromString(ok).result.response == response
    assert pb.EvaluateStreamResponse.FromString(error).result.error == status
_CACHE: dict = {}


def _shipped() -> engine.PolicySet:
    if "ps" not in _CACHE:
        _CACHE["ps"] = compile_clean(_SHIPPED)
    return _CACHE["ps"]


def _encoder(ps: engine.PolicySet) -> wire.Encoder:
    if _CACHE.get("encoder") is None or _CACHE["encoder"].policy_set is not ps:
        _CACHE["encoder"] = wire.Encoder(ps)
    return _CACHE["encoder"]
