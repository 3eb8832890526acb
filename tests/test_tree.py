"""The decision tree: shared predicates evaluated once, equality tests folded into dispatch."""

from __future__ import annotations

from collections import Counter

import pytest

import engine
from engine.compile import Dispatch, Leaf, Seq

from .conftest import SCHEMA, compile_ok

SHARED = SCHEMA + '''
policy shared for content {
  let confident = confidence >= 0.8
  let smuggling = topic == "human_smuggling"
  rule a { when smuggling and intent == "offer" and confident then remove because "a" }
  rule b { when smuggling and intent == "solicit" and confident then intervene x because "b" }
  rule c { when confident and not mentions_minor then allow because "c" }
  rule d { when (confident or mentions_minor) and "x" in labels then remove because "d" }
  rule e { when not confident and "x" in labels and not mentions_minor then allow because "e" }
  shadow rule f { when confident and has author.account_age_days and author.account_age_days < 7 then remove because "f" }
  rule g { when any l in labels: (l starts_with "x" and confidence >= 0.8) then intervene y because "g" }
}
'''

INPUTS = [
    {"topic": "human_smuggling", "intent": "offer", "confidence": 0.9, "labels": ["x"]},
    {"topic": "human_smuggling", "intent": "solicit", "confidence": 0.1, "mentions_minor": True, "labels": ["x", "xy"]},
    {"topic": "weapons", "intent": "offer", "confidence": 0.8, "author": {"account_age_days": 1}},
    {"topic": "other", "intent": "report", "confidence": 0.3},
]


@pytest.mark.parametrize("annotations", INPUTS)
def test_each_atom_is_evaluated_at_most_once(annotations):
    """Counting every atom evaluation: none runs twice in one decision, though rules share them."""
    ps = compile_ok(SHARED)
    counts: Counter[int] = Counter()

    def tick(atom_id, value):
        counts[atom_id] += 1
        return value

    counted = ps.instrumented("shared", tick)
    assert counted.evaluate(annotations).to_dict() == ps.evaluate(annotations).to_dict()
    assert counts, "the instrumented build reported no evaluation"
    assert max(counts.values()) == 1, counts
    confident = next(a.id for a in ps.policies["shared"].atoms if a.text == "confidence >= 0.8")
    assert counts[confident] == 1  # used by six rules, computed once


def _dispatches(node) -> list[Dispatch]:
    if isinstance(node, Dispatch):
        return [node] + [d for _, child in node.branches for d in _dispatches(child)]
    if isinstance(node, Seq):
        return [d for child in node.children for d in _dispatches(child)]
    return []


def test_equality_tests_on_one_field_become_one_dispatch_node():
    """200 rules testing `topic ==` different values compile to a single dispatch with 200 branches."""
    values = [f"t{i}" for i in range(200)]
    enum = ", ".join(f'"{v}"' for v in values)
    rules = "\n".join(
        f'  rule r{i} {{ when topic == "{v}" and confidence >= 0.5 then remove because "r{i}" }}' for i, v in enumerate(values)
    )
    source = f'''
schema s {{ topic: enum({enum}) confidence: float }}
policy p for s {{
{rules}
  rule by_list {{ when topic in ["t1", "t2"] then intervene look because "list" }}
  rule unkeyed {{ when confidence > 0.99 then intervene look because "unkeyed" }}
}}
'''
    ps = compile_ok(source)
    tree = ps.policies["p"].tree
    [dispatch] = _dispatches(tree)
    assert dispatch.field.dotted == "topic"
    assert len(dispatch.branches) == 200
    branch = dict(dispatch.branches)
    assert isinstance(branch["t1"], Leaf) and [r for r, _ in branch["t1"].checks] == [1, 200]
    assert ps.evaluate({"topic": "t2", "confidence": 0.6}).rule == "r2"
    assert ps.evaluate({"topic": "t1", "confidence": 0.1}).rule == "by_list"
    assert ps.evaluate({"topic": "t150", "confidence": 0.995}).rule == "r150"
    assert ps.evaluate({"topic": "zzz", "confidence": 0.995}).rule == "unkeyed"


def test_contradictory_equalities_leave_the_rule_out_of_every_branch():
    """`topic == "a" and topic == "b"` can never match: no branch holds it, and analysis warns."""
    result = engine.compile_sources(
        {
            "p.pol": '''
schema s { topic: enum("a", "b", "c") }
policy p for s {
  rule never { when topic == "a" and topic == "b" then remove because "x" }
  rule one { when topic == "a" then allow because "y" }
  rule two { when topic == "b" then allow because "z" }
}
'''
        }
    )
    assert [d.code for d in result.diagnostics] == ["W201"]
    [dispatch] = _dispatches(result.policy_set.policies["p"].tree)
    assert all(0 not in [r for r, _ in child.checks] for _, child in dispatch.branches)
    assert result.policy_set.evaluate({"topic": "a"}).rule == "one"
