"""engine.native, the per-decision hot path: the same decisions from C, from its Python twin and from the
per-policy path, and no crash on a bad program."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings

import engine
from engine import _purepy, native
from engine.evaluate import PolicyDecision
from engine.validate import literal_value
from server import convert

from .conftest import POLICIES, ROOT, SCHEMA, compile_ok
from .server_util import start_server
from .strategies import PolicyCase, policy_cases

try:
    from engine import _native as _c
except ImportError:  # not built: the tests that need it are skipped
    _c = None

C_ONLY = pytest.mark.skipif(native.IMPLEMENTATION != "c", reason="checks the C extension, which is not in use")
ENGINE_TESTS = [
    "tests/test_oracle.py", "tests/test_tree.py", "tests/test_decision.py", "tests/test_language_examples.py", "tests/test_fuzz_eval.py",
    "tests/test_server.py",  # and the service, on the Python walk of a request's Struct (server/convert.py)
    "tests/test_wire.py",  # and the responses, from templates filled in Python
]


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler: pip could not build the extension")
def test_the_c_extensions_are_built_and_used_where_there_is_a_compiler():
    """`make` builds engine/native.c and server/_wire.c with pip, and pol uses them (unless POL_PURE_PYTHON=1 asks otherwise)."""
    pure = os.environ.get("POL_PURE_PYTHON") == "1"
    expected = "python" if pure else "c"
    assert native.IMPLEMENTATION == expected
    assert convert.STRUCT_DECODER == expected


def test_pol_serve_says_which_hot_path_it_runs(tmp_path):
    """The `serving` line names the engine's and the request decoder's implementation, so an operator sees a slow build."""
    server = start_server(tmp_path / "serve.log")
    try:
        serving = [json.loads(line) for line in server.log_lines() if line.startswith("{") and '"event": "serving"' in line]
    finally:
        server.stop()
    assert serving, "no serving line"
    assert {(e["engine"], e["struct_decoder"]) for e in serving} == {(native.IMPLEMENTATION, convert.STRUCT_DECODER)}  # each worker's


@C_ONLY
def test_the_python_twin_passes_the_engine_tests():
    """With POL_PURE_PYTHON=1 (as without a C compiler), the oracle, tree, decision, example, hostile-input and service tests pass."""
    env = {**os.environ, "POL_PURE_PYTHON": "1"}
    probe = subprocess.run([sys.executable, "-c", "import engine.native as n; print(n.IMPLEMENTATION)"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == "python"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *ENGINE_TESTS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


TWO_POLICIES = SCHEMA + '''
policy strict for content {
  combine first_match
  rule young { when has author.account_age_days and author.account_age_days < 30 then intervene check(days: 30) because "young" }
  rule offer { when intent == "offer" then remove because "offer" }
  rule matching { when has text and text matches "(?i)cross.*border" then intervene look because "text" }
  shadow rule per_label { when any l in labels: (l starts_with "ill") then remove because "trial" }
}
policy lenient for content {
  rule ratio { when has author.account_age_days and 10 / author.account_age_days > 1 then intervene slow_down because "ratio" }
  rule unknown_topic { when topic not in ["human_smuggling", "migration"] then allow because "other" }
}
'''


def _inputs() -> list[dict]:
    """The shipped set's test inputs and seed examples, plus some that divide by zero or name unknown enum values."""
    ps = engine.load(POLICIES)
    given = [literal_value(case.given) for test, _ in ps.tests for case in test.cases]
    seeds = [json.loads(line) for line in (POLICIES / "examples" / "seed.jsonl").read_text().splitlines() if line.strip()]
    extra = [
        {"topic": "weapons", "intent": "offer", "confidence": 1, "author": {"account_age_days": 0}, "text": "cross the border"},
        {"topic": "spam_new", "intent": "brand_new", "confidence": 0.5, "labels": ["illegal_border_crossing"]},
        {"topic": "human_smuggling", "intent": "offer", "confidence": 0.8, "author": {"account_age_days": 3}, "mentions_minor": True},
    ]
    return given + seeds + extra


@pytest.mark.parametrize("source", [SCHEMA + (POLICIES / "human_smuggling.pol").read_text(), TWO_POLICIES], ids=["shipped", "two_policies"])
def test_the_c_evaluator_decides_as_the_per_policy_path(source):
    """`evaluate(a)` (validated, decided and combined in C) equals `evaluate(a, policies=every name)` (combined in Python)."""
    ps = compile_ok(source)
    for item in _inputs():
        assert ps.evaluate(item).to_dict() == ps.evaluate(item, ps.policy_names).to_dict(), item


def test_dispatch_on_an_enum_finds_each_value_as_by_its_text():
    """The C evaluator's dispatch by a value's place in its enum (found through inline text, or the string when long or
    wide) decides as dispatch by value: every declared value, equal strings that are other objects, undeclared ones."""
    values = ["a", "b", "ab", "eight_ch", "nine_chars", "é", "ñandú", "✓", "😀", "a" * 40, "", "A"]
    enum = ", ".join(json.dumps(v, ensure_ascii=False) for v in values)
    rules = "\n".join(f'  rule r{i} {{ when kind == {json.dumps(v, ensure_ascii=False)} and n >= {i} then remove because "r{i}" }}' for i, v in enumerate(values[:-2]))
    ps = compile_ok(f"schema s {{\n  kind: enum({enum})\n  n: int = 0\n}}\npolicy p for s {{\n{rules}\n}}\n")
    others = ["c", "eight_cH", "nine_charz", "e", "✗", "a" * 39, "aa", "😁"]
    for text in values + others + ["".join(list(v)) for v in values]:  # the last: equal strings, other objects
        for n in (0, 3, 20):
            item = {"kind": text, "n": n}
            assert ps.evaluate(item).to_dict() == ps.evaluate(item, ["p"]).to_dict(), item
    assert ps.evaluate({"kind": "nine_chars", "n": 4}).rule == "r4" and ps.evaluate({"kind": "é", "n": 9}).rule == "r5"


def test_a_tree_reports_matches_and_errors_in_file_order():
    """`Tree.match` gives the matching rules and the rules that divided by zero; `settle` picks the first matching one."""
    ps = compile_ok(TWO_POLICIES)
    lenient = ps.policies["lenient"]
    values = ps.values({"topic": "weapons", "intent": "offer", "confidence": 0.5, "author": {"account_age_days": 0}}, "content")
    assert lenient.decide.match(values) == ((1,), (0,))
    strict = ps.policies["strict"]
    values = ps.values({"topic": "weapons", "intent": "offer", "confidence": 0.5, "author": {"account_age_days": 3}}, "content")
    decided = strict.decide.settle(strict, values)
    assert isinstance(decided, PolicyDecision) and (decided.verdict, decided.rule) == ("intervene", "young")
    assert decided.matched == ("young", "offer")


def _tree_args(**change) -> dict:
    ps = compile_ok(TWO_POLICIES)
    p = ps.policies["strict"]
    kwargs, _ = engine.codegen.program(p, len(ps.schemas["content"].fields))
    return {**kwargs, "decision_type": PolicyDecision, **change}


@C_ONLY
@pytest.mark.parametrize(
    "change",
    [
        {"root": (9, ())},
        {"root": (native.N_LEAF, ((99, None),))},
        {"root": (native.N_LEAF, ((0, (native.C_ATOM, 999)),))},
        {"root": (native.N_DISPATCH, 0, {"x": 5}, ())},
        {"root": (native.N_LEAF, ((0, (native.C_AND, ())),))},
        {"atoms": ((native.A_TRUTH, 0, 99, None, -1, None, (), None, 0, -1),)},
        {"atoms": ((native.A_CALL, 0, -1, None, -1, None, (), "not callable", 0, -1),)},
        {"verdicts": (1, 2, 3, 4)},
        {"ranks": (1,)},
        {"decision_type": dict},
    ],
    ids=["node-kind", "rule-index", "atom-position", "dispatch-entry", "empty-and", "field-index", "call", "verdicts", "ranks", "type"],
)
def test_a_malformed_tree_program_is_an_error_not_a_crash(change):
    """C checks the program Python hands it: a bad one raises ValueError or TypeError."""
    with pytest.raises((ValueError, TypeError)):
        native.Tree(**_tree_args(**change))


@C_ONLY
def test_a_tree_refuses_values_of_the_wrong_length():
    """Running a tree on a tuple that is not one value per field raises TypeError, never reads past it."""
    tree = native.Tree(**_tree_args())
    with pytest.raises(TypeError, match="tuple of 9 field values"):
        tree.match((1, 2))
    with pytest.raises(TypeError):
        tree.match([None] * 9)


@C_ONLY
def test_a_malformed_validator_spec_is_an_error_not_a_crash():
    """A field spec C cannot use (no path, an unknown kind, an enum without values) raises ValueError or TypeError."""
    for spec in [((), 0, None, False, None, False, "x"), (("x",), 99, None, False, None, False, "x"), (("x",), 1, None, False, None, False, "x"), ("x",)]:
        with pytest.raises((ValueError, TypeError)):
            native.Validator((spec,), lambda a: ((), None))


@C_ONLY
@settings(max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(case=policy_cases(inputs=8))
def test_the_c_tree_and_its_python_twin_agree_on_random_policies(case: PolicyCase):
    """The same program, run by engine/_native.c and by engine/_purepy.py: the same matches, errors and deciding rule."""
    ps = compile_ok(**case.files)
    for p in ps.policies.values():
        fields = len(ps.schemas[p.schema].fields)
        kwargs, _ = engine.codegen.program(p, fields)
        trees = [impl.Tree(**kwargs, decision_type=decision_type) for impl, decision_type in ((_c, PolicyDecision), (_purepy, _TwinDecision))]
        for item, _ in case.inputs:
            try:
                values = ps.values(item, p.schema)
            except engine.InputError:
                continue
            c, twin = (tree.match(values) for tree in trees)
            assert c == twin, item
            c, twin = ((d.verdict, d._index, d._matched, d._errored) for d in (tree.settle(p, values) for tree in trees))
            assert c == twin, item


class _TwinDecision(_purepy.PolicyDecisionCore):
    __slots__ = ()


@C_ONLY
def test_atoms_of_two_literals_are_evaluated_as_written_by_both_implementations():
    """`1 < 2` and `"a" in ["a", "b"]` read no field: neither implementation may take a literal's -1 for a field's index."""
    ps = compile_ok('schema s { topic: enum("a", "b") n: int }\npolicy p for s {\n'
                    '  rule r { when 1 < 2 and "a" in ["a", "b"] and n > 0 then remove because "x" }\n'
                    '  rule q { when 2 < 1 or "c" in ["a", "b"] then intervene look because "never" }\n}\n')
    p = ps.policies["p"]
    kwargs, _ = engine.codegen.program(p, 2)
    values = ps.values({"topic": "b", "n": 1}, "s")
    assert _c.Tree(**kwargs, decision_type=PolicyDecision).match(values) == ((0,), ())
    assert _purepy.Tree(**kwargs, decision_type=_TwinDecision).match(values) == ((0,), ())


@pytest.mark.skipif(convert.STRUCT_DECODER != "c", reason="server/_wire.c is not built or not in use")
def test_a_batch_decided_in_c_answers_and_logs_as_the_python_path(tmp_path):
    """Usual items decided in C (server/_wire.c `decide`) get the bytes and log lines the Python path gives: batch, unary, stream.

    The items mix what C decides (no match, matches with observed values, unknown enum values)
    with what it leaves to Python (bad input, nesting too deep, an id too long, a shape not seen
    yet), in several calls, so C and Python take turns within one batch.
    """
    import random

    import grpc
    from google.protobuf import struct_pb2

    from server.gen.pol.v1 import policy_service_pb2 as pb

    good = [
        {"topic": "human_smuggling", "intent": "offer", "labels": ["b", "a"], "author": {"account_age_days": 3}},
        {"topic": "human_smuggling", "intent": "solicit", "text": "é✓ \u2028 🙂"},
        {"topic": "migration", "intent": "share_info", "labels": ["illegal_border_crossing"], "language": "x" * 300},
        {"topic": "organ_trade", "intent": "recruit"},  # unknown enum values
        {"topic": "weapons", "intent": "other", "mentions_minor": True},
        {"topic": "human_smuggling", "intent": "offer", "mentions_minor": True, "author": {"account_age_days": 400, "is_verified": True}},
    ]
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    bad = [{"intent": "offer", "confidence": 0.9}, {"topic": "weapons", "intent": "other", "confidence": "high"}, {"topic": "weapons", "a": deep}]
    rng = random.Random(7)
    items = []
    for i in range(300):
        annotations = dict(rng.choice(bad)) if i % 7 == 0 else {**rng.choice(good), "confidence": rng.choice([0.0, 0.5, 0.8, 0.95, rng.random()])}
        s = struct_pb2.Struct()
        s.update(annotations)
        content_id = ("c" * 1100) if i == 50 else ("" if i == 60 else f"item-{i}-é")
        items.append(pb.Content(id=content_id, annotations=s))
    requests = [pb.EvaluateBatchRequest(contents=items[k:k + 100], request_id=f"req-{k}").SerializeToString() for k in range(0, 300, 100)] * 2

    def answers(env: dict | None) -> tuple[list[bytes], list[dict]]:
        server = start_server(tmp_path / f"serve-{bool(env)}.log", "--workers", "1", env=env)
        try:
            with grpc.insecure_channel(server.address) as channel:
                call = channel.unary_unary("/pol.v1.PolicyService/EvaluateBatch", request_serializer=None, response_deserializer=None)
                responses = [call(r, timeout=30) for r in requests]
                one = channel.unary_unary("/pol.v1.PolicyService/Evaluate", request_serializer=None, response_deserializer=None)
                for i, content in enumerate(items[:70]):
                    try:
                        responses.append(one(pb.EvaluateRequest(content=content, request_id=f"one-{i}").SerializeToString(), timeout=30))
                    except grpc.RpcError as e:
                        responses.append(f"{e.code()}: {e.details()}".encode())
                stream = channel.stream_stream("/pol.v1.PolicyService/EvaluateStream", request_serializer=None, response_deserializer=None)
                messages = (pb.EvaluateStreamRequest(request=pb.EvaluateRequest(content=c, request_id=f"s-{i}")).SerializeToString() for i, c in enumerate(items[:70]))
                responses.extend(stream(messages, timeout=30))
        finally:
            server.stop()
        lines = [json.loads(line) for line in server.log_lines() if '"event": "decision"' in line]
        for line in lines:
            assert line.pop("timestamp").endswith("Z") and isinstance(line.pop("latency_ms"), float)
            line.pop("pid", None), line.pop("worker", None)
        return responses, lines

    in_c, in_python = answers(None), answers({"POL_PURE_PYTHON": "1"})
    assert in_c[0] == in_python[0]
    assert in_c[1] == in_python[1] and len(in_c[1]) > 600
    results = [r for data in in_c[0][:6] for r in pb.EvaluateBatchResponse.FromString(data).results]
    assert len(results) == 600 and 0 < sum(r.WhichOneof("result") == "error" for r in results) < 150
