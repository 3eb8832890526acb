"""`pol explain` as a person runs it: the real command in a subprocess, text out, exit statuses.

Inputs and golden outputs live in `tests/golden/cli/explain/`: `<name>.json` is the item,
`<name>.expected.txt` the exact stdout. After an intended change, regenerate and review:

    UPDATE_GOLDEN=1 /tmp/v/bin/python -m pytest tests/test_cli_explain.py
"""

from __future__ import annotations

import json
import re

import pytest

import engine
from engine.explain import Route, explain_decision
from engine.validate import literal_value

from .conftest import ROOT, assert_golden, pol

GOLDEN = ROOT / "tests" / "golden" / "cli" / "explain"
SMALL = "tests/golden/cli/graph/small"  # two policies, one of them first_match
SETS = {"first_match_two_policies": SMALL}  # every other input is decided by the shipped set




@pytest.fixture(scope="module")
def shipped() -> engine.PolicySet:
    return engine.load(ROOT / "policies")


def cases(ps: engine.PolicySet) -> list[tuple[str, str, dict]]:
    """(policy, case name, annotations) for every case of the shipped tests."""
    return [(test.policy, case.name, literal_value(case.given)) for test, _ in ps.tests for case in test.cases]


def header(text: str) -> dict[str, str]:
    """The `key: value` lines before the first blank line."""
    head = text.split("\n\n", 1)[0]
    return dict(line.split(": ", 1) for line in head.splitlines() if re.match(r"^[a-z]+: ", line))


INPUTS = sorted(p.stem for p in GOLDEN.glob("*.json"))


@pytest.mark.parametrize("name", INPUTS)
def test_golden_explanation(name: str) -> None:
    """The exact text: verdict and deciding rule, the path through the tree, why it wins, shadow, warnings, nearest flip."""
    result = pol("explain", "--policies", SETS.get(name, "policies"), f"tests/golden/cli/explain/{name}.json")
    assert result.returncode == 0, result.stderr
    assert_golden(GOLDEN / f"{name}.expected.txt", result.stdout)


def test_flip_on_a_confidence_threshold() -> None:
    """A confident offer: the nearest flip is confidence just under the 0.8 threshold, to low_confidence_offer."""
    out = pol("explain", "tests/golden/cli/explain/offer_high_confidence.json").stdout
    nearest = out.split("nearest change that flips the verdict:\n", 1)[1].splitlines()[0]
    assert nearest == (
        "  if confidence were 0.79 (instead of 0.93), `confidence >= 0.8` would not hold"
        " and the verdict would be intervene (low_confidence_offer)"
    )


def test_flip_on_an_enum() -> None:
    """A report of smuggling: the nearest flip is the intent enum becoming "offer", to remove."""
    out = pol("explain", "tests/golden/cli/explain/report_intent.json").stdout
    nearest = out.split("nearest change that flips the verdict:\n", 1)[1].splitlines()[0]
    assert nearest.startswith('  if intent were "offer" (instead of "report"), `intent == "offer"` would hold')
    assert nearest.endswith("the verdict would be remove (offer_smuggling)")


def test_no_flip_is_said_so() -> None:
    """When no single-field change flips the verdict, the explanation says so."""
    out = pol("explain", stdin=(ROOT / "tests/golden/cli/eval/route_information.json").read_text()).stdout
    assert re.search(r"^no single-field change flips the verdict \(\d+ changes tried\)$", out, re.M)


def test_every_flip_really_flips(shipped: engine.PolicySet) -> None:
    """Each reported change, applied to the item and decided again by the engine, gives the reported verdict and rule."""
    for policy, _, given in cases(shipped):
        e = explain_decision(shipped, given, [policy])
        for flip in e.flips:
            changed = json.loads(json.dumps(given))
            target = changed
            *parents, last = flip.field.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            if flip.after is None:
                target.pop(last, None)
            else:
                target[last] = sorted(flip.after) if isinstance(flip.after, frozenset) else flip.after
            d = shipped.evaluate(changed, [policy])
            assert (d.verdict, d.rule) == (flip.verdict, flip.rule) != (e.decision.verdict, e.decision.rule)


def test_the_path_matches_the_decision(shipped: engine.PolicySet) -> None:
    """On every shipped case the rules that held along the traced path are exactly the rules the decision matched."""

    def held(steps) -> set[str]:
        out: set[str] = set()
        for s in steps:
            out |= held(s.then) if isinstance(s, Route) else ({s.rule.name} if s.held else set())
        return out

    for policy, name, given in cases(shipped):
        e = explain_decision(shipped, given, [policy])
        pd = e.decision.policies[0]
        assert held(e.traces[0].steps) == set(pd.matched) | {j.rule for j in pd.shadow}, name


def test_explain_agrees_with_the_engine_on_every_shipped_case(shipped: engine.PolicySet) -> None:
    """`pol explain` on every case of the shipped tests names the engine's verdict, deciding policy and rule."""
    all_cases = cases(shipped)
    assert len(all_cases) >= 20
    for policy, name, given in all_cases:
        result = pol("explain", "--policy", policy, stdin=json.dumps(given))
        assert result.returncode == 0, (name, result.stderr)
        d = shipped.evaluate(given, [policy])
        head = header(result.stdout)
        assert (head["verdict"], head["policy"].split()[0], head["rule"]) == (d.verdict, d.policy, d.rule), name
        assert head["reason"] == d.justifications[0].reason


def test_schema_error_exits_1_naming_the_field() -> None:
    """An item that breaks the schema: one line naming each field on stderr, nothing on stdout, exit 1."""
    result = pol("explain", stdin='{"topic": "human_smuggling", "intent": 3}')
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "pol explain: annotations do not match the schema: intent: must be a string (enum), got an integer; confidence: is required\n"
    )


def test_unknown_policy_exits_2() -> None:
    """--policy naming no loaded policy: exit 2 with one line listing the loaded ones."""
    result = pol("explain", "--policy", "nope", stdin="{}")
    assert result.returncode == 2
    assert result.stderr == "pol explain: unknown policy `nope`; loaded: human_smuggling\n"
