"""Bad input to evaluation: a clear error naming the field, or a decision in bounded time."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine

from .conftest import SCHEMA, compile_ok

GOOD = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.9}


@pytest.fixture(scope="module")
def text_rules() -> engine.PolicySet:
    return compile_ok(
        SCHEMA
        + '''
policy text_rules for content {
  rule pattern { when has text and text matches "(a+)+b" then remove because "pattern" }
  rule many_labels { when len(labels) > 100 and "spam" in labels then intervene review because "many" }
}
'''
    )


def violations(ps, annotations) -> list[tuple[str, str]]:
    with pytest.raises(engine.InputError) as info:
        ps.evaluate(annotations)
    return [(v.field, v.description) for v in info.value.violations]


def test_missing_required_fields_are_all_named(shipped):
    """Every missing required field is reported at once, by its name."""
    assert violations(shipped, {"topic": "migration"}) == [("intent", "is required"), ("confidence", "is required")]


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"topic": 5}, "topic", "must be a string (enum), got an integer"),
        ({"confidence": "high"}, "confidence", "must be a number, got a string"),
        ({"confidence": True}, "confidence", "must be a number, got a bool"),
        ({"mentions_minor": "yes"}, "mentions_minor", "must be a bool, got a string"),
        ({"labels": "spam"}, "labels", "must be a list of string, got a string"),
        ({"labels": ["ok", 3]}, "labels", "item 1 must be a string, got an integer"),
        ({"author": "alice"}, "author", "must be an object, got a string"),
        ({"author": {"account_age_days": 2.5}}, "author.account_age_days", "must be an integer, got 2.5"),
        ({"author": {"account_age_days": 2**70}}, "author.account_age_days", f"integer {2**70} is out of range (64-bit)"),
        ({"confidence": math.nan}, "confidence", "must be a finite number, got nan"),
        ({"confidence": math.inf}, "confidence", "must be a finite number, got inf"),
        ({"confidence": -math.inf}, "confidence", "must be a finite number, got -inf"),
    ],
)
def test_wrong_types_name_the_field(shipped, patch, field, message):
    """A value of the wrong type is an input error naming the field and what was expected."""
    assert violations(shipped, {**GOOD, **patch}) == [(field, message)]


def test_integral_floats_are_ints(shipped):
    """Numbers arrive as doubles over gRPC: 3.0 is accepted for an int field, null as absent."""
    d = shipped.evaluate({**GOOD, "author": {"account_age_days": 3.0}, "text": None})
    assert [j.rule for j in d.shadow] == ["new_account_offer"]


def test_not_an_object(shipped):
    """Annotations that are not a JSON object are rejected as a whole."""
    assert violations(shipped, ["topic"]) == [("", "annotations must be an object, got list")]


def test_deep_nesting_is_an_error_not_a_crash(shipped):
    """A value nested 10,000 levels deep where a number belongs is a type error; no recursion."""
    deep: object = 1
    for _ in range(10_000):
        deep = {"a": deep}
    assert violations(shipped, {**GOOD, "author": {"account_age_days": deep}}) == [
        ("author.account_age_days", "must be an integer, got an object")
    ]
    deep_list: object = "x"
    for _ in range(10_000):
        deep_list = [deep_list]
    assert violations(shipped, {**GOOD, "labels": [deep_list]}) == [("labels", "item 0 must be a string, got a list")]
    assert shipped.evaluate({**GOOD, "unrelated": deep}).verdict == "remove"  # unknown keys are never walked


def test_ten_megabyte_string_is_decided(text_rules):
    """A 10 MB text is matched by RE2 in linear time, even against a catastrophic pattern."""
    text = "a" * 10_000_000
    d = text_rules.evaluate({**GOOD, "text": text})
    assert d.verdict == "allow"
    assert text_rules.evaluate({**GOOD, "text": text + "b"}).verdict == "remove"


def test_million_labels_are_decided(text_rules):
    """A list of 1,000,000 labels is validated and decided, and shown bounded in justifications."""
    labels = [f"l{i}" for i in range(1_000_000)] + ["spam"]
    d = text_rules.evaluate({**GOOD, "labels": labels}, ["text_rules"])
    assert (d.verdict, d.rule) == ("intervene", "many_labels")
    observed = dict(d.justifications[0].conditions[0].to_dict()["observed"])
    assert len(observed["labels"]) == 33 and observed["labels"][-1] == "... (999969 more)"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
KEYS = st.sampled_from(["topic", "intent", "confidence", "mentions_minor", "labels", "language", "author", "text"])


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(KEYS, JSON | st.sampled_from(["human_smuggling", "offer", 0.8, ["illegal_border_crossing"]]), max_size=8))
def test_any_json_gets_a_decision_or_an_input_error(shipped, annotations):
    """Whatever JSON arrives, evaluation returns a decision or raises InputError; nothing else."""
    try:
        d = shipped.evaluate(annotations)
    except engine.InputError as e:
        assert e.violations and all(isinstance(v.field, str) for v in e.violations)
    else:
        assert d.verdict in ("allow", "intervene", "remove")
        d.to_dict()
