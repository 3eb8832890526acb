"""What a decision carries (LANGUAGE.md section 5), and that it is reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import engine

from .conftest import POLICIES, ROOT, SCHEMA, compile_ok

TWO_POLICIES = SCHEMA + '''
policy spam for content {
  version "1"
  combine first_match
  rule link_farm {
    when "link_farm" in labels
    then intervene add_friction(level: 2), warn_user
    because "Link farms get friction."
    cite "Spam policy 2"
  }
  rule any_label {
    when len(labels) > 0
    then remove
    because "Never decides when link_farm matched first."
  }
  otherwise allow because "Not spam."
}

policy ratio for content {
  version "3"
  rule odd_ratio {
    when confidence / (len(labels) - 1) > 0.5
    then remove
    because "Divides by zero when there is exactly one label."
  }
  rule review {
    when "review" in labels
    then intervene queue_review, warn_user
    because "Reviewers look at these."
  }
}
'''


@pytest.fixture(scope="module")
def two() -> engine.PolicySet:
    return compile_ok(TWO_POLICIES)


def item(**kw):
    return {"topic": "other", "intent": "other", "confidence": 0.5, **kw}


def test_first_match_decides_by_file_order(two):
    """Under first_match the earlier matching rule decides even when a later one is more severe."""
    d = two.evaluate(item(labels=["link_farm"]), ["spam"])
    assert (d.verdict, d.rule) == ("intervene", "link_farm")
    assert [(j.rule, j.deciding) for j in d.justifications] == [("link_farm", True), ("any_label", False)]
    assert [(i.name, dict(i.arguments)) for i in d.interventions] == [("add_friction", {"level": 2}), ("warn_user", {})]


def test_several_policies_most_severe_wins(two):
    """Each policy decides; the overall verdict is the most severe and its justification comes first."""
    d = two.evaluate(item(labels=["link_farm", "x"], confidence=0.9))
    assert [(p.policy, p.verdict, p.rule) for p in d.policies] == [
        ("ratio", "remove", "odd_ratio"),
        ("spam", "intervene", "link_farm"),
    ]
    assert (d.verdict, d.policy, d.rule) == ("remove", "ratio", "odd_ratio")
    assert d.justifications[0].rule == "odd_ratio" and d.justifications[0].deciding
    assert d.interventions == ()  # a removal sends no interventions


def test_interventions_merge_across_policies_without_duplicates(two):
    """When the overall verdict is intervene, every intervening policy contributes its interventions."""
    d = two.evaluate(item(labels=["link_farm", "review", "x"], confidence=0.1))
    assert d.verdict == "intervene"
    assert [(i.policy, i.name) for i in d.interventions] == [
        ("ratio", "queue_review"),
        ("ratio", "warn_user"),
        ("spam", "add_friction"),
        ("spam", "warn_user"),
    ]


def test_division_by_zero_does_not_match_and_warns(two):
    """A rule that divides by zero does not match; the decision carries a warning naming it."""
    d = two.evaluate(item(labels=["review"]), ["ratio"])
    assert (d.verdict, d.rule) == ("intervene", "review")
    [w] = d.warnings
    assert (w.code, w.policy, w.rule) == ("division_by_zero", "ratio", "odd_ratio")


def test_policy_without_otherwise_allows_with_default_reason(two):
    """With no `otherwise`, no match means allow because "no rule matched"."""
    d = two.evaluate(item(), ["ratio"])
    assert d.verdict == "allow" and d.rule == "otherwise"
    assert d.justifications[0].reason == "no rule matched"


def test_unknown_policy_is_an_error(two):
    """Asking for a policy that is not loaded names it."""
    with pytest.raises(engine.UnknownPolicyError, match="nope"):
        two.evaluate(item(), ["nope"])


def test_decision_dict_has_every_documented_key(shipped):
    """to_dict() carries verdict, interventions, justifications, shadow, warnings and the set hash."""
    d = shipped.evaluate({"topic": "human_smuggling", "intent": "solicit", "confidence": 0.7}).to_dict()
    assert set(d) >= {"verdict", "interventions", "justifications", "shadow", "warnings", "policy_set_hash"}
    j = d["justifications"][0]
    assert set(j) >= {"policy", "version", "rule", "action", "reason", "citation", "conditions", "deciding"}
    assert d["policy_set_hash"] == shipped.hash and shipped.hash.startswith("sha256:")
    json.dumps(d)  # plain JSON


def test_hash_changes_with_any_source_byte():
    """The set hash covers every file's path and bytes."""
    a = engine.compile_sources({"a.pol": SCHEMA}).policy_set.hash
    b = engine.compile_sources({"a.pol": SCHEMA + "\n"}).policy_set.hash
    c = engine.compile_sources({"b.pol": SCHEMA}).policy_set.hash
    assert len({a, b, c}) == 3


SCRIPT = """
import json, sys, engine
ps = engine.load(sys.argv[1])
items = [json.loads(line) for line in open(sys.argv[2])]
print(json.dumps([ps.evaluate(i).to_dict() for i in items], sort_keys=True))
"""


def test_same_set_and_input_give_identical_decisions_in_two_processes(tmp_path):
    """Two interpreters with different hash seeds produce byte-identical decisions."""
    items = tmp_path / "items.jsonl"
    corpus = [
        {"topic": "human_smuggling", "intent": "offer", "confidence": 0.9, "mentions_minor": True,
         "labels": ["z", "illegal_border_crossing", "a", "m"], "author": {"account_age_days": 1}},
        {"topic": "migration", "intent": "share_info", "confidence": 0.2, "labels": ["illegal_border_crossing", "b"]},
        {"topic": "new_topic", "intent": "solicit", "confidence": 1},
    ]
    items.write_text("\n".join(json.dumps(c) for c in corpus))
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(POLICIES), str(items)], capture_output=True, text=True, env=env, check=True)
        outputs.append(out.stdout)
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])[0]["verdict"] == "remove"


def test_a_policy_set_is_freed_as_soon_as_it_is_dropped(shipped):
    """A set's evaluator holds no reference back to it: a set a reload replaces is freed at once, not by the collector."""
    import gc
    import weakref

    ps = engine.compile_sources(dict(shipped.files)).policy_set
    ps.evaluate({"topic": "migration", "intent": "other", "confidence": 0.5}, ["human_smuggling"])
    gone = weakref.ref(ps)
    gc.disable()
    try:
        del ps
        assert gone() is None
    finally:
        gc.enable()


def test_evaluate_takes_the_policies_by_position_or_name(two):
    """`evaluate(a, names)` and `evaluate(a, policies=names)` decide alike; no names, or none, means every policy."""
    a = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.9}
    everything = two.evaluate(a).to_dict()
    assert two.evaluate(a, None).to_dict() == two.evaluate(a, []).to_dict() == two.evaluate(a, policies=()).to_dict() == everything
    one = two.evaluate(a, policies=[two.policy_names[0]])
    assert one.to_dict() == two.evaluate(a, [two.policy_names[0]]).to_dict() and len(one.policies) == 1
    with pytest.raises(TypeError):
        two.evaluate(a, [two.policy_names[0]], extra=1)
