"""`pol eval` as a caller runs it: the real command in a subprocess, JSON out, exit statuses.

Inputs and golden outputs live in `tests/golden/cli/eval/`: `<name>.json` is the input,
`<name>.expected.json` the exact stdout (the policy set hash written as `sha256:<hash>`,
and checked separately, so a change to the shipped policies does not touch every golden).
After an intended change, regenerate and review the diff:

    UPDATE_GOLDEN=1 /tmp/v/bin/python -m pytest tests/test_cli_eval.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import engine
from engine.validate import literal_value

from .conftest import ROOT, assert_golden, pol

GOLDEN = ROOT / "tests" / "golden" / "cli" / "eval"
HASH = "sha256:<hash>"




@pytest.fixture(scope="module")
def shipped() -> engine.PolicySet:
    return engine.load(ROOT / "policies")


def unhash(text: str, ps: engine.PolicySet) -> str:
    assert ps.hash in text, "the output does not name the set's hash"
    return text.replace(ps.hash, HASH)


def cases(ps: engine.PolicySet) -> list[tuple[str, str, dict]]:
    """(policy, case name, annotations) for every case of the shipped tests."""
    return [(test.policy, case.name, literal_value(case.given)) for test, _ in ps.tests for case in test.cases]


def as_json(value: object) -> object:
    return json.loads(json.dumps(value))


INPUTS = sorted(p.stem for p in GOLDEN.glob("*.json") if not p.name.endswith(".expected.json"))


@pytest.mark.parametrize("name", INPUTS)
def test_golden_decision(name: str, shipped: engine.PolicySet) -> None:
    """A decision's exact JSON: verdict, interventions, justifications with observed values, shadow, hash."""
    result = pol("eval", "--policies", "policies", f"tests/golden/cli/eval/{name}.json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"verdict", "interventions", "justifications", "shadow", "warnings", "policy_set_hash"} <= out.keys()
    assert out["policy_set_hash"] == shipped.hash
    assert_golden(GOLDEN / f"{name}.expected.json", unhash(result.stdout, shipped))


def test_stdin_is_the_default_input() -> None:
    """With no FILE (or `-`), the item is read from stdin."""
    item = (GOLDEN / "solicit.json").read_text()
    assert pol("eval", stdin=item).stdout == pol("eval", "-", stdin=item).stdout == pol("eval", "tests/golden/cli/eval/solicit.json").stdout


def test_jsonl_bad_lines_get_errors_and_the_rest_are_decided(shipped: engine.PolicySet) -> None:
    """--jsonl: one line out per item; a schema error and invalid JSON name their line, the others are decided; exit 1."""
    result = pol("eval", "--jsonl", "tests/golden/cli/eval/mixed.jsonl")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [x.get("verdict") or x["error"]["code"] for x in lines] == ["remove", "intervene", "invalid_argument", "invalid_json", "allow"]
    assert lines[2]["line"] == 3 and lines[2]["error"]["violations"] == [{"field": "confidence", "description": "must be a number, got a string"}]
    assert lines[3]["line"] == 4
    assert "line 3: annotations do not match the schema: confidence" in result.stderr
    assert_golden(GOLDEN / "mixed.expected.jsonl", unhash(result.stdout, shipped))


def test_schema_error_names_the_field() -> None:
    """An item that breaks the schema: an error naming each field, on stdout (JSON) and stderr; exit 1."""
    result = pol("eval", stdin='{"topic": "human_smuggling", "intent": "offer"}')
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["violations"] == [{"field": "confidence", "description": "is required"}]
    assert result.stderr == "pol eval: annotations do not match the schema: confidence: is required\n"


def test_invalid_json_exits_1() -> None:
    """Text that is not JSON is an input error (exit 1), not a crash."""
    result = pol("eval", stdin='{"topic": ')
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "invalid_json"
    assert result.stderr.startswith("pol eval: invalid JSON:")


def test_unknown_policy_exits_2_with_one_line() -> None:
    """--policy naming no loaded policy: exit 2, one line listing the loaded ones, nothing on stdout."""
    result = pol("eval", "--policy", "human_smugling", stdin="{}")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "pol eval: unknown policy `human_smugling`; loaded: human_smuggling\n"


def test_missing_file_exits_2() -> None:
    """An input file that does not exist is a usage error (exit 2), with one line."""
    result = pol("eval", "tests/golden/cli/eval/no_such_item.json")
    assert result.returncode == 2
    assert result.stderr == "pol eval: tests/golden/cli/eval/no_such_item.json: No such file or directory\n"


def test_policy_set_with_errors_exits_1(tmp_path: Path) -> None:
    """A policy set with errors: its diagnostics on stderr, nothing decided, exit 1."""
    (tmp_path / "broken.pol").write_text("policy p for missing {\n  rule r { when x then remove because \"r\" }\n}\n")
    result = pol("eval", "--policies", str(tmp_path), stdin="{}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "error[" in result.stderr


def test_explain_adds_the_trace(shipped: engine.PolicySet) -> None:
    """--explain: the same decision plus `trace`: each policy's path, why its rule decides, the nearest flips."""
    item = (GOLDEN / "offer_new_account.json").read_text()
    plain = json.loads(pol("eval", stdin=item).stdout)
    explained = json.loads(pol("eval", "--explain", stdin=item).stdout)
    trace = explained.pop("trace")
    assert explained == plain
    [policy] = trace["policies"]
    assert policy["policy"] == "human_smuggling" and policy["rule"] == "offer_smuggling"
    assert [step["dispatch"] for step in policy["path"] if "dispatch" in step] == ["topic"]
    first = trace["nearest_flips"][0]
    assert (first["field"], first["after"], first["verdict"], first["rule"]) == ("confidence", 0.79, "intervene", "low_confidence_offer")
    assert_golden(GOLDEN / "offer_new_account.explain.expected.json", json.dumps(trace, indent=2, ensure_ascii=False) + "\n")


def test_eval_agrees_with_the_engine_on_every_shipped_case(shipped: engine.PolicySet) -> None:
    """Every case of the shipped tests, through `pol eval --jsonl --policy P`, decides exactly as `PolicySet.evaluate`."""
    by_policy: dict[str, list[dict]] = {}
    for policy, _, given in cases(shipped):
        by_policy.setdefault(policy, []).append(given)
    assert sum(len(v) for v in by_policy.values()) >= 20
    for policy, items in by_policy.items():
        result = pol("eval", "--jsonl", "--policy", policy, stdin="".join(json.dumps(i) + "\n" for i in items))
        assert result.returncode == 0, result.stderr
        got = [json.loads(line) for line in result.stdout.splitlines()]
        assert got == [as_json(shipped.evaluate(i, [policy]).to_dict()) for i in items]
