"""End to end over a real `pol serve` process and a real gRPC client."""

from __future__ import annotations

import json
import shutil
import signal
import threading


import pytest

grpc = pytest.importorskip("grpc")

import engine  # noqa: E402
from engine.validate import literal_value  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402
from server.client import EvaluateResult, PolError, PolicyClient  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc  # noqa: E402
from tests.conftest import POLICIES, ROOT, pol  # noqa: E402
from tests.server_util import start_server  # noqa: E402

OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
OTHER = {"topic": "other", "intent": "other", "confidence": 0.1}
MAX_MESSAGE = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("serve") / "stderr.log", "--max-message-bytes", str(MAX_MESSAGE), "--max-source-bytes", "20000", "--max-depth", "8", "--poll", "0")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    with PolicyClient(server.address, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.PolicyServiceStub(channel)


def content(annotations: dict, id: str = "") -> pb.Content:
    s = struct_pb2.Struct()
    s.update(annotations)
    return pb.Content(id=id, annotations=s)


def comparable(d: dict) -> dict:
    """The parts of a decision compared between engine and server, with `None`s as the proto's defaults."""
    return {
        "verdict": d["verdict"],
        "policy": d["policy"],
        "rule": d["rule"],
        "interventions": [{**i, "arguments": dict(i["arguments"])} for i in d["interventions"]],
        "justifications": [
            {
                "rule": j["rule"],
                "action": j["action"],
                "reason": j["reason"],
                "citation": j["citation"] or "",
                "deciding": j["deciding"],
                "conditions": [{"expression": c["expression"], "held": c.get("held"), "observed": c["observed"]} for c in j["conditions"]],
            }
            for j in d["justifications"]
        ],
        "shadow": [j["rule"] for j in d["shadow"]],
        "policy_set_hash": d["policy_set_hash"],
    }


def as_dict(r: EvaluateResult) -> dict:
    return {
        "verdict": r.verdict, "policy": r.policy, "rule": r.rule, "interventions": list(r.interventions),
        "justifications": list(r.justifications), "shadow": list(r.shadow), "policy_set_hash": r.policy_set_hash,
    }


# ---- Evaluate -----------------------------------------------------------------------------


def test_evaluate_decides_with_the_reasons(client, shipped):
    """Evaluate returns the verdict, deciding rule, conditions with observed values and the set's hash."""
    r = client.evaluate(OFFER, content_id="post-1")
    assert (r.verdict, r.policy, r.rule, r.content_id) == ("remove", "human_smuggling", "offer_smuggling", "post-1")
    assert r.policy_set_hash == shipped.hash
    assert r.justifications[0]["deciding"] and r.justifications[0]["conditions"][-1] == {"expression": "confidence >= 0.8", "held": True, "observed": {"confidence": 0.93}}
    assert r.policies == ({"policy": "human_smuggling", "version": "2022-06", "verdict": "remove", "rule": "offer_smuggling"},)
    assert r.trace is None


def test_evaluate_explain_adds_the_trace(client):
    """With explain set, the response carries the trace that `pol eval --explain` prints."""
    r = client.evaluate(OFFER, explain=True)
    assert set(r.trace) >= {"policies", "nearest_flips"}


def test_same_decisions_as_the_engine_for_every_shipped_case(client, shipped):
    """Every test case of the shipped set is decided over gRPC exactly as the engine decides it in process."""
    cases = [(test.policy, case) for test, _ in shipped.tests for case in test.cases]
    assert len(cases) >= 20
    for policy, case in cases:
        given = literal_value(case.given)
        expected = comparable(shipped.evaluate(given, [policy]).to_dict())
        got = comparable(as_dict(client.evaluate(given, policies=[policy])))
        assert got == expected, case.name


def test_request_id_from_metadata_is_echoed(stub):
    """An `x-request-id` metadata value comes back in the response and in the trailing metadata."""
    response, call = stub.Evaluate.with_call(pb.EvaluateRequest(content=content(OFFER)), metadata=(("x-request-id", "req-42"),), timeout=10)
    assert response.request_id == "req-42"
    assert ("x-request-id", "req-42") in tuple(call.trailing_metadata())


def test_request_id_in_the_request_wins_and_one_is_made_up_otherwise(client):
    """The request's own request_id is echoed; without one, the server generates a fresh id per call."""
    assert client.evaluate(OTHER, request_id="mine").request_id == "mine"
    a, b = client.evaluate(OTHER).request_id, client.evaluate(OTHER).request_id
    assert a and b and a != b


def test_evaluate_schema_violations_are_invalid_argument_naming_each_field(client):
    """Annotations that break the schema are INVALID_ARGUMENT with a BadRequest violation per field."""
    with pytest.raises(PolError) as e:
        client.evaluate({"topic": 3, "confidence": "high"})
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = dict(e.value.violations)
    assert set(fields) == {"content.annotations.topic", "content.annotations.intent", "content.annotations.confidence"}
    assert fields["content.annotations.intent"] == "is required"


def test_annotations_nested_too_deeply_are_invalid_argument(client):
    """Annotations nested past --max-depth are INVALID_ARGUMENT naming content.annotations."""
    deep: dict = {}
    for _ in range(10):
        deep = {"x": deep}
    with pytest.raises(PolError) as e:
        client.evaluate({**OFFER, "deep": deep})
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in e.value.violations] == ["content.annotations"]


def test_unknown_policy_is_not_found(client):
    """Naming a policy that is not loaded is NOT_FOUND, with the loaded names in the message."""
    with pytest.raises(PolError) as e:
        client.evaluate(OFFER, policies=["no_such_policy"])
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert "human_smuggling" in e.value.message


def test_message_over_the_size_limit_is_resource_exhausted(client):
    """A request larger than --max-message-bytes is refused with RESOURCE_EXHAUSTED."""
    with pytest.raises(PolError) as e:
        client.evaluate({**OFFER, "text": "x" * (MAX_MESSAGE + 1000)})
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


# ---- EvaluateBatch and EvaluateStream -------------------------------------------------------


def test_batch_bad_item_gets_its_own_error_and_the_rest_are_decided(client):
    """In a batch, one bad item gets INVALID_ARGUMENT with a BadRequest naming its field; the others are decided."""
    results = client.evaluate_many([("a", OFFER), ("b", {**OFFER, "confidence": "high"}), ("c", OTHER)], request_id="batch-1")
    assert [type(r) for r in results] == [EvaluateResult, PolError, EvaluateResult]
    assert (results[0].verdict, results[0].content_id, results[0].request_id) == ("remove", "a", "batch-1")
    assert (results[2].verdict, results[2].content_id) == ("allow", "c")
    assert results[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in results[1].violations] == ["contents[1].annotations.confidence"]


def test_batch_over_the_limit_is_resource_exhausted(client):
    """A batch of more than --max-batch items (default 1000) fails as a whole with RESOURCE_EXHAUSTED."""
    with pytest.raises(PolError) as e:
        client.evaluate_many([OTHER] * 1001)
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(client.evaluate_many([OTHER] * 1000)) == 1000


def test_batch_with_unknown_policy_is_not_found(client):
    """A batch naming an unknown policy fails as a whole with NOT_FOUND."""
    with pytest.raises(PolError) as e:
        client.evaluate_many([OTHER], policies=["nope"])
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_tiny_deadline_on_a_big_batch_is_deadline_exceeded(client):
    """A deadline far shorter than a 1000-item batch takes ends it with DEADLINE_EXCEEDED."""
    with pytest.raises(PolError) as e:
        client.evaluate_many([OFFER] * 1000, explain=True, timeout=0.005)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_stream_answers_in_order(client):
    """200 streamed items are answered one each, in order, with their content ids; a bad one gets its own error."""
    items = [(f"id-{i}", OFFER if i % 3 else OTHER) for i in range(200)]
    items[57] = ("id-57", {"topic": "nope"})
    results = list(client.evaluate_stream(items))
    assert len(results) == 200
    assert isinstance(results[57], PolError) and results[57].code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("content.annotations.intent", "is required") in results[57].violations
    decided = [(i, r) for i, r in enumerate(results) if i != 57]
    assert all(r.content_id == f"id-{i}" for i, r in decided)
    assert all(r.verdict == ("remove" if i % 3 else "allow") for i, r in decided)


# ---- the servicer's deadline checks, without a network -------------------------------------


class _ExpiredContext:
    """A grpc.aio ServicerContext whose deadline has already passed; it keeps the status the handler sets."""

    def __init__(self) -> None:
        self.code = None

    def invocation_metadata(self):
        return ()

    def set_trailing_metadata(self, md):
        pass

    def time_remaining(self):
        return 0.0

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        pass


async def _items(*requests):
    for request in requests:
        yield request


async def _drain(stream) -> list:
    return [item async for item in stream]


def test_servicer_checks_the_deadline_before_each_batch_and_stream_item(shipped):
    """Batch and stream handlers stop with DEADLINE_EXCEEDED once the deadline has passed, deciding nothing."""
    import asyncio

    from server.service import PolicyService
    from server.state import Live

    service = PolicyService(Live(shipped))
    ctx = _ExpiredContext()
    assert asyncio.run(service.EvaluateBatch(pb.EvaluateBatchRequest(contents=[content(OFFER)]), ctx)) is None
    assert ctx.code == grpc.StatusCode.DEADLINE_EXCEEDED
    ctx = _ExpiredContext()
    assert asyncio.run(_drain(service.EvaluateStream(_items(pb.EvaluateStreamRequest(request=pb.EvaluateRequest(content=content(OFFER)))), ctx))) == []
    assert ctx.code == grpc.StatusCode.DEADLINE_EXCEEDED


# ---- ValidatePolicy, ListPolicies, GetPolicy -----------------------------------------------


def test_validate_policy_returns_every_diagnostic_and_loads_nothing(client, shipped):
    """ValidatePolicy compiles against the loaded schema, returns every diagnostic, and leaves the set as it was."""
    bad = 'policy p for content {\n  rule a { when intnet == "offer" then remove because "x" }\n  rule b { when topic == "smuggling" then remove because "y" }\n}\n'
    response = client.validate(bad, "p.pol")
    assert not response.ok
    assert [d.code for d in response.diagnostics][:1] == ["E101"] and len(response.diagnostics) >= 2
    assert response.diagnostics[0].path == "p.pol" and response.diagnostics[0].line == 2
    assert response.diagnostics[0].severity == pb.SEVERITY_ERROR and "intent" in response.diagnostics[0].help
    good = 'policy p for content {\n  rule a { when intent == "offer" then remove because "x" }\n}\n'
    assert client.validate(good, "p.pol").ok
    assert [p.name for p in client.list_policies().policies] == ["human_smuggling"]
    assert client.list_policies().policy_set_hash == shipped.hash


def test_validate_policy_over_the_source_limit_is_resource_exhausted(client):
    """Policy source over --max-source-bytes is RESOURCE_EXHAUSTED."""
    with pytest.raises(PolError) as e:
        client.validate("# " + "x" * 30000 + "\n")
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_list_policies_names_versions_rules_and_hash(client, shipped):
    """ListPolicies gives each policy's name, version, rule names and source file hash."""
    (info,) = client.list_policies().policies
    assert (info.name, info.version, info.schema, info.path) == ("human_smuggling", "2022-06", "content", "human_smuggling.pol")
    assert list(info.rule_names) == [r.name for r in shipped.policies["human_smuggling"].rules]
    assert info.source_hash.startswith("sha256:")


def test_get_policy_returns_its_source(client):
    """GetPolicy returns the policy's info and the text of its file."""
    response = client.get_policy("human_smuggling")
    assert response.source == (POLICIES / "human_smuggling.pol").read_text(encoding="utf-8")
    assert response.policy.name == "human_smuggling"


def test_get_unknown_policy_is_not_found(client):
    """GetPolicy for a name that is not loaded is NOT_FOUND."""
    with pytest.raises(PolError) as e:
        client.get_policy("nope")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


# ---- health, reflection, logs -----------------------------------------------------------------


def test_health_is_serving_for_the_server_and_the_service(server):
    """Once the set is loaded, health reports SERVING overall and for pol.v1.PolicyService."""
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "pol.v1.PolicyService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server):
    """Server reflection lists pol.v1.PolicyService and health, so grpcurl works without the .proto."""
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (response,) = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
        assert {"pol.v1.PolicyService", "grpc.health.v1.Health"} <= names
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="pol.v1.PolicyService")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert response.file_descriptor_response.file_descriptor_proto


def test_decision_log_has_one_line_per_decision_and_no_annotation_values(server, client):
    """Each decision logs one JSON line: request id, content id, verdict, policy, rule, set hash, latency; no annotation values."""
    client.evaluate({**OFFER, "text": "secret-text-7731"}, content_id="logged-1", request_id="log-req-1")
    client.evaluate_many([("logged-2", OTHER), ("logged-3", OFFER)], request_id="log-req-2")
    lines = [json.loads(line) for line in server.log_lines() if "log-req-" in line]
    assert [(d["request_id"], d["content_id"]) for d in lines] == [("log-req-1", "logged-1"), ("log-req-2", "logged-2"), ("log-req-2", "logged-3")]
    first = lines[0]
    assert first["event"] == "decision"
    assert {k: first[k] for k in ("verdict", "policy", "rule")} == {"verdict": "remove", "policy": "human_smuggling", "rule": "offer_smuggling"}
    assert first["policy_set_hash"].startswith("sha256:") and first["latency_ms"] >= 0
    assert "secret-text-7731" not in server.log.read_text(encoding="utf-8")
    assert "0.93" not in json.dumps(lines)


def test_decision_log_lines_are_whole_json_with_structlog_fields_for_every_rpc(server, client):
    """Unary, batch and stream decisions each log one parseable JSON line with level and an ISO UTC timestamp."""
    client.evaluate(OTHER, content_id="shape-1", request_id="shape-req-1")
    client.evaluate_many([("shape-2", OFFER)] * 3 + [("shape-bad", {"topic": 5})], request_id="shape-req-2")
    list(client.evaluate_stream([("shape-3", OTHER)]))
    lines = [json.loads(line) for line in server.log_lines() if '"shape-' in line]
    assert [d["content_id"] for d in lines] == ["shape-1", "shape-2", "shape-2", "shape-2", "shape-3"]
    for d in lines:
        assert d["event"] == "decision" and d["level"] == "info"
        assert len(d["timestamp"]) == 27 and d["timestamp"].endswith("Z") and d["timestamp"][10] == "T"
        assert set(d) - {"worker", "pid"} == {"request_id", "content_id", "verdict", "policy", "rule", "policy_set_hash", "latency_ms", "event", "level", "timestamp"}


# ---- process life: refusing to start, draining, reloading -----------------------------------------


def test_broken_policy_set_refuses_to_start_with_the_diagnostics(tmp_path):
    """`pol serve` on a set with errors prints the diagnostics and exits 1 without listening."""
    result = pol("serve", "--policies", str(ROOT / "tests/data/check_errors"), "--address", "127.0.0.1:0")
    assert result.returncode == 1
    assert "error[E" in result.stderr and "refusing to start" in result.stderr
    assert "serving on" not in result.stdout


def test_failing_tests_refuse_to_start(tmp_path):
    """`pol serve` on a set whose tests fail names the failures and exits 1."""
    result = pol("serve", "--policies", str(ROOT / "tests/data/test_failing"), "--address", "127.0.0.1:0")
    assert result.returncode == 1
    assert "test failed" in result.stderr


def test_plaintext_on_a_public_address_must_be_asked_for():
    """Without TLS flags, a non-loopback address needs --plaintext (usage error, exit 2)."""
    result = pol("serve", "--address", "0.0.0.0:0")
    assert result.returncode == 2 and "--plaintext" in result.stderr


def test_sigterm_drains_in_flight_calls_and_exits_zero(tmp_path):
    """On SIGTERM health turns NOT_SERVING, a stream in flight still gets every answer, and the process exits 0."""
    server = start_server(tmp_path / "stderr.log", "--poll", "0")
    gate = threading.Event()

    def requests():
        for i in range(10):
            if i == 5:
                gate.wait(20)
            yield pb.EvaluateStreamRequest(request=pb.EvaluateRequest(content=content(OFFER, f"s{i}")))

    try:
        with grpc.insecure_channel(server.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            answers = pb_grpc.PolicyServiceStub(channel).EvaluateStream(requests(), timeout=30)
            got = [next(answers).result.response.content_id for _ in range(5)]
            server.process.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            gate.set()
            got += [a.result.response.content_id for a in answers]
        assert got == [f"s{i}" for i in range(10)]
        assert server.process.wait(20) == 0
    finally:
        gate.set()
        server.stop()
    assert any('"event": "draining"' in line for line in server.log_lines())


def test_sighup_reloads_a_good_set_and_keeps_serving_the_old_one_on_errors(tmp_path):
    """SIGHUP swaps in a recompiled set that passes its tests; a broken set is logged and the old one keeps serving."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    server = start_server(tmp_path / "stderr.log", "--poll", "0", policies=policies)
    try:
        with PolicyClient(server.address, timeout=10) as c:
            before = c.list_policies().policy_set_hash
            path = policies / "human_smuggling.pol"
            path.write_text(path.read_text() + "\n# edited\n")
            expected = engine.load(policies).hash
            server.process.send_signal(signal.SIGHUP)
            _until(lambda: c.list_policies().policy_set_hash == expected)
            assert expected != before and c.evaluate(OFFER).policy_set_hash == expected
            path.write_text(path.read_text().replace("topic ==", "topicc =="))
            server.process.send_signal(signal.SIGHUP)
            _until(lambda: any('"reload_failed"' in line for line in server.log_lines()))
            assert c.evaluate(OFFER).policy_set_hash == expected
    finally:
        assert server.stop() == 0


def _until(condition, timeout: float = 15) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


