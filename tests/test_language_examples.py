"""Every example of the language contract (LANGUAGE.md) parses, checks clean and decides as described."""

from __future__ import annotations

import re

import pytest

import engine

from .conftest import ROOT

EXAMPLES = ROOT / "tests" / "language"
CONTRACT = ROOT.parent / "shared" / "LANGUAGE.md"
BLOCKS = ["section1_import.pol", "section2_schema.pol", "section3_policy.pol", "section6_tests.pol"]


@pytest.fixture(scope="module")
def examples() -> engine.PolicySet:
    result = engine.load_path(EXAMPLES)
    assert result.ok, engine.render_all(result.diagnostics)
    return result.policy_set


@pytest.mark.skipif(not CONTRACT.exists(), reason="the shared contract is not checked out beside the repo")
def test_examples_are_the_contracts_code_blocks():
    """The example files are byte-for-byte the code blocks of LANGUAGE.md, in order."""
    blocks = re.findall(r"```\n(.*?)```", CONTRACT.read_text(encoding="utf-8"), re.S)
    assert blocks == [(EXAMPLES / name).read_text(encoding="utf-8") for name in BLOCKS]


def test_examples_check_clean():
    """The examples, with the common.pol they import, produce no diagnostic at all."""
    result = engine.load_path(EXAMPLES)
    assert result.diagnostics == []


def test_section6_cases_pass(examples):
    """The test block of section 6 runs, and each of its cases passes."""
    report = engine.run_tests(examples)
    names = {c.name: c for c in report.cases if c.policy == "human_smuggling"}
    assert set(names) == {"offering is removed", "asking for a smuggler gets resources", "route information stays up"}
    assert all(c.passed for c in names.values()), [c.failure for c in names.values()]


def test_import_makes_top_level_lets_visible(examples):
    """`import "common.pol"` lets a policy use that file's top-level lets."""
    d = examples.evaluate({"topic": "weapons", "intent": "offer", "confidence": 0.95}, ["weapons"])
    assert (d.verdict, d.rule) == ("remove", "confident_weapons_offer")


def test_schema_defaults_apply(examples):
    """Omitted fields with defaults take them: mentions_minor=false, labels=[], language="und"."""
    d = examples.evaluate({"topic": "human_smuggling", "intent": "report", "confidence": 0.1}, ["human_smuggling"])
    assert d.verdict == "allow" and d.rule == "otherwise"
    assert d.justifications[0].reason == "No rule of this policy applies."


def test_justification_names_condition_and_observed_value(examples):
    """`confidence >= 0.8` held with `confidence = 0.93`, as section 5 describes."""
    d = examples.evaluate({"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}, ["human_smuggling"])
    j = d.justifications[0]
    assert (j.policy, j.version, j.rule, j.verdict, j.deciding) == ("human_smuggling", "2022-06", "offer_smuggling", "remove", True)
    assert j.reason == "Offering or facilitating human smuggling services is prohibited."
    assert j.citation == "Community Standards: Human exploitation, section 1"
    conditions = {c.expression: (c.held, dict(c.observed)) for c in j.conditions}
    assert conditions["confidence >= 0.8"] == (True, {"confidence": 0.93})
    assert conditions['topic == "human_smuggling"'] == (True, {"topic": "human_smuggling"})
    assert conditions['intent == "offer"'] == (True, {"intent": "offer"})


def test_intervention_carries_arguments(examples):
    """An intervene rule returns its interventions with their literal arguments."""
    d = examples.evaluate({"topic": "human_smuggling", "intent": "solicit", "confidence": 0.4}, ["human_smuggling"])
    assert d.verdict == "intervene"
    [iv] = d.interventions
    assert (iv.name, dict(iv.arguments), iv.policy, iv.rule) == (
        "send_resources",
        {"resource": "migrant_safety", "channel": "inbox"},
        "human_smuggling",
        "solicit_smuggling",
    )


def test_most_severe_reports_other_matches(examples):
    """Two remove rules and a shadow rule match: the first decides, the other follows, the shadow is apart."""
    d = examples.evaluate(
        {
            "topic": "human_smuggling",
            "intent": "offer",
            "confidence": 0.95,
            "mentions_minor": True,
            "author": {"account_age_days": 2},
        },
        ["human_smuggling"],
    )
    assert d.verdict == "remove"
    assert [(j.rule, j.deciding) for j in d.justifications] == [("offer_smuggling", True), ("minor_involved", False)]
    assert [j.rule for j in d.shadow] == ["new_account_offer"]
    assert d.shadow[0].verdict == "remove" and not d.shadow[0].deciding


def test_shadow_rule_needs_its_guard(examples):
    """Without `author.account_age_days` the guarded shadow rule does not match, and nothing fails."""
    d = examples.evaluate({"topic": "human_smuggling", "intent": "offer", "confidence": 0.95}, ["human_smuggling"])
    assert d.shadow == ()


def test_unknown_enum_value_is_accepted_with_a_warning(examples):
    """A topic the schema does not declare equals no declared value and adds a warning."""
    d = examples.evaluate({"topic": "organ_trade", "intent": "offer", "confidence": 0.99}, ["human_smuggling"])
    assert d.verdict == "allow"
    [w] = d.warnings
    assert (w.code, w.field) == ("unknown_enum_value", "topic")
    assert "organ_trade" in w.message


def test_extra_annotations_are_ignored(examples):
    """Annotations the schema does not declare are ignored."""
    base = {"topic": "migration", "intent": "share_info", "confidence": 0.9, "labels": ["illegal_border_crossing"]}
    d1 = examples.evaluate(base, ["human_smuggling"])
    d2 = examples.evaluate({**base, "sentiment": -0.4, "author": {"country": "x"}}, ["human_smuggling"])
    assert d1.to_dict() == d2.to_dict()
