"""The compiled engine against the reference interpreter (tests/oracle.py), on random and shipped policies.

The engine interns atoms, builds dispatch trees and generates Python; the oracle walks
the AST rule by rule. For every policy set and input both must agree on the verdict,
the deciding policy and rule, every policy's decision, the matching and shadow rules,
the interventions and the warnings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from engine import compile_sources, render_all
from engine.policyset import read_files

from .oracle import Oracle
from .strategies import PolicyCase, annotations_for, policy_cases

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def _typed(value: object) -> object:
    """A value with its type made explicit, so `1`, `1.0` and `true` compare unequal."""
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_typed(v) for v in value))
    return (type(value).__name__, value)


def _args(args) -> tuple:
    return tuple((k, _typed(v)) for k, v in args)


def engine_summary(decision) -> dict:
    return {
        "verdict": decision.verdict,
        "policy": decision.policy,
        "rule": decision.rule,
        "policies": [
            {
                "policy": p.policy,
                "verdict": p.verdict,
                "rule": p.rule,
                "matched": p.matched,
                "shadow": tuple(j.rule for j in p.shadow),
                "interventions": tuple((i.name, _args(i.arguments), i.rule) for i in p.interventions),
                "justifications": tuple(j.rule for j in p.justifications),
            }
            for p in decision.policies
        ],
        "interventions": [(i.policy, i.rule, i.name, _args(i.arguments)) for i in decision.interventions],
        "warnings": [(w.code, w.field, w.policy, w.rule) for w in decision.warnings],
    }


def oracle_summary(decision) -> dict:
    return {
        "verdict": decision.verdict,
        "policy": decision.policy,
        "rule": decision.rule,
        "policies": [
            {
                "policy": p.policy,
                "verdict": p.verdict,
                "rule": p.rule,
                "matched": p.matched,
                "shadow": p.shadow,
                "interventions": tuple((n, _args(a), r) for n, a, r in p.interventions),
                "justifications": p.justifications,
            }
            for p in decision.policies
        ],
        "interventions": [(p, r, n, _args(a)) for p, r, n, a in decision.interventions],
        "warnings": list(decision.warnings),
    }


def compile_clean(files: dict[str, str]):
    result = compile_sources(files)
    errors = [d for d in result.diagnostics if d.is_error]
    assert not errors, render_all(errors)
    return result.policy_set


def assert_agree(ps, oracle: Oracle, annotations: dict, policies: list[str] | None = None) -> None:
    decision = ps.evaluate(annotations, policies)
    decision.to_dict()  # justifications and their conditions must render for every decision
    assert engine_summary(decision) == oracle_summary(oracle.evaluate(annotations, policies)), (annotations, policies)


@settings(max_examples=250, **SETTINGS)
@given(case=policy_cases(inputs=8))
def test_random_policies_agree_with_oracle(case: PolicyCase) -> None:
    """Random well-typed policy sets compile clean and decide every input as the reference interpreter does."""
    ps = compile_clean(case.files)
    oracle = Oracle(case.files)
    for annotations, policies in case.inputs:
        assert_agree(ps, oracle, annotations, policies)


_SHIPPED = read_files(ROOT / "policies")


@pytest.fixture(scope="module")
def shipped_pair():
    return compile_clean(_SHIPPED), Oracle(_SHIPPED)


@settings(max_examples=300, **SETTINGS)
@given(annotations=annotations_for(_SHIPPED))
def test_shipped_policies_agree_with_oracle(shipped_pair, annotations: dict) -> None:
    """The shipped policy set decides random inputs as the reference interpreter does."""
    ps, oracle = shipped_pair
    assert_agree(ps, oracle, annotations)


# ---- regressions: engine bugs the oracle found ----------------------------------------------

SCHEMA = """
schema s {
  topic: enum("a", "b")
  labels: set<string> = []
  nums: list<int> = []
  o?: int
  t?: string
}
"""


def decide(policy: str, annotations: dict):
    """The engine's decision, after checking that the oracle agrees with it."""
    files = {"s.pol": SCHEMA + policy}
    ps = compile_clean(files)
    assert_agree(ps, Oracle(files), annotations)
    return ps.evaluate(annotations)


def test_has_compared_with_a_bool_is_true_for_an_absent_field() -> None:
    """`has o == false` reads no value of `o`: it holds when `o` is absent."""
    policy = 'policy p for s { rule r { when has o == false then remove because "x" } }'
    d = decide(policy, {"topic": "a"})
    assert (d.verdict, d.rule) == ("remove", "r")
    assert decide(policy, {"topic": "a", "o": 1}).verdict == "allow"


def test_guard_inside_an_atom_does_not_falsify_the_atom() -> None:
    """A `has` guard inside a quantifier body or a compared conjunction decides there, not the whole atom."""
    policy = 'policy p for s { rule r { when all l in labels: (not (has t and t contains l)) then remove because "x" } }'
    assert decide(policy, {"topic": "a", "labels": ["x"]}).verdict == "remove"
    assert decide(policy, {"topic": "a", "labels": ["x"], "t": "x y"}).verdict == "allow"
    assert decide(policy, {"topic": "a", "labels": ["x"], "t": "y"}).verdict == "remove"
    vacuous = 'policy p for s { rule r { when all n in nums: (has o and n < o) then remove because "x" } }'
    assert decide(vacuous, {"topic": "a"}).verdict == "remove"  # `all` over nothing holds
    assert decide(vacuous, {"topic": "a", "nums": [1]}).verdict == "allow"
    compared = 'policy p for s { rule r { when (has o and o > 3) == false then remove because "x" } }'
    assert decide(compared, {"topic": "a"}).verdict == "remove"
    assert decide(compared, {"topic": "a", "o": 5}).verdict == "allow"


def test_quantifier_with_division_does_not_depend_on_element_order() -> None:
    """`any` holds when one element satisfies the body even if another divides by zero, in any set order."""
    policy = 'policy p for s { rule r { when any l in labels: (l == "x" or 1 / len(l) > 5) then remove because "x" } }'
    for labels in (["x", ""], ["", "x"], ["", "b", "x", "c", "d", "e", "f"]):
        d = decide(policy, {"topic": "a", "labels": labels})
        assert (d.verdict, d.warnings) == ("remove", ()), labels
    d = decide(policy, {"topic": "a", "labels": ["", "b"]})
    assert d.verdict == "allow" and [w.code for w in d.warnings] == ["division_by_zero"]
    nums = 'policy p for s { rule r { when all n in nums: (10 / n > 1) then remove because "x" } }'
    assert decide(nums, {"topic": "a", "nums": [0, 20]}).warnings == ()  # 20 settles `all` as false
    assert decide(nums, {"topic": "a", "nums": [20, 0]}).warnings == ()
    assert [w.code for w in decide(nums, {"topic": "a", "nums": [0, 5]}).warnings] == ["division_by_zero"]


def test_quantifier_decision_is_the_same_under_every_hash_seed() -> None:
    """A set quantifier whose body can divide by zero decides the same in processes with different hash seeds."""
    policy = 'policy p for s { rule r { when any l in labels: (l == "x" or 1 / len(l) > 5) then remove because "x" } }'
    script = (
        "import engine\n"
        f"ps = engine.compile_sources({{'s.pol': {SCHEMA + policy!r}}}).policy_set\n"
        "print(ps.evaluate({'topic': 'a', 'labels': ['x', '', 'b', 'c']}).verdict)\n"
    )
    seen = set()
    for seed in ("0", "1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True)
        seen.add(out.stdout.strip())
    assert seen == {"remove"}


def test_interventions_with_different_argument_types_are_not_duplicates() -> None:
    """`f(k: 1)` and `f(k: true)` are two interventions; `g(a: 1, b: 2)` and `g(b: 2, a: 1.0)` are one."""
    policy = """policy p for s {
      rule r { when topic == "a" then intervene f(k: 1), f(k: true), g(a: 1, b: 2) because "x" }
      rule q { when topic == "a" then intervene g(b: 2, a: 1.0), f(k: 1.0) because "y" }
    }"""
    d = decide(policy, {"topic": "a"})
    assert [(i.name, _args(i.arguments), i.rule) for i in d.interventions] == [
        ("f", (("k", ("int", 1)),), "r"),
        ("f", (("k", ("bool", True)),), "r"),
        ("g", (("a", ("int", 1)), ("b", ("int", 2))), "r"),
    ]


def test_quantifier_variable_hides_a_field_and_a_let_compared_is_one_atom() -> None:
    """A quantifier variable hides the field of the same name; a boolean let compared with `true` keeps its guard."""
    policy = """policy p for s {
      let small = has o and o < 3
      rule r { when any t in labels: (t == "x") and small == true then remove because "x" }
    }"""
    assert decide(policy, {"topic": "a", "labels": ["x"], "o": 1}).verdict == "remove"
    assert decide(policy, {"topic": "a", "labels": ["x"]}).verdict == "allow"
    assert decide(policy, {"topic": "a", "labels": ["y"], "o": 1}).verdict == "allow"


@settings(max_examples=150, **SETTINGS)
@given(case=policy_cases(inputs=6))
def test_conditions_known_when_compiled_are_the_ones_evaluation_finds(case: PolicyCase) -> None:
    """A rule whose shown conditions are settled at compile time shows exactly what evaluating its condition shows."""
    from engine.evaluate import explain

    ps = compile_clean(case.files)
    for annotations, policies in case.inputs:
        decision = ps.evaluate(annotations, policies)
        for j in (*decision.justifications, *decision.shadow):
            if j.info.index >= 0:
                assert j.conditions == tuple(explain(ps.policies[j.policy], j.info.condition, j.values)), j


def test_which_rules_show_the_same_conditions_for_every_match() -> None:
    """`and`, and `or` under `not`, settle every operand of a match; a true `or` shows the operand that settled it."""
    ps = compile_clean({"s.pol": SCHEMA + """
policy p for s {
  rule both { when topic == "a" and not (has o or "x" in labels) then remove because "b" }
  rule either { when topic == "b" or 3 in nums then remove because "e" }
}
"""})
    both, either = ps.policies["p"].rules
    assert [(a.text, held) for a, held in both.shown] == [('topic == "a"', True), ("has o", False), ('"x" in labels', False)]
    assert either.shown is None
    assert ps.policies["p"].otherwise.shown == ()
    for annotations, shown in (({"topic": "b", "nums": [3]}, 'topic == "b"'), ({"topic": "a", "labels": ["x"], "nums": [3]}, "3 in nums")):
        j = ps.evaluate(annotations).justifications[0]
        assert [c.expression for c in j.conditions] == [shown]
