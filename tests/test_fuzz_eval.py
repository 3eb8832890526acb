"""Evaluation fuzzing: hostile annotations get a decision equal to the oracle's, or an InputError.

Inputs drawn for a policy set (tests/strategies.py) have some fields replaced with wrong
types, NaN, the infinities, -0.0, integers beyond 64 bits, deep nesting, unicode edge cases
(lone surrogates, NUL, BOM, combining marks), or are not objects at all. Evaluation must
return a decision or raise `engine.InputError`, nothing else; and a decision must equal
the reference interpreter's (tests/oracle.py), compared as tests/test_oracle.py does.
Huge lists (100,000 items) and strings (1 MB) run as fixed cases.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.policyset import read_files
from engine.validate import _generate as generate_validator

from .oracle import Oracle
from .strategies import _pools, annotations_for, policy_files
from .test_oracle import compile_clean, engine_summary, oracle_summary

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def _deep_list(n: int) -> object:
    out: object = "x"
    for _ in range(n):
        out = [out]
    return out


def _deep_dict(n: int) -> object:
    out: object = 1
    for _ in range(n):
        out = {"a": out}
    return out


WEIRD = [
    None, True, False, 0, -0.0, 0.0, 1, 3.0, 0.5, -1,
    2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, -(2**70), 2**1100, 1e308, 5e-324,
    math.nan, math.inf, -math.inf, -math.nan,
    "", "\x00", "\ufeff", "\ufeffspam", "\ud800", "a\udfff", "\udbff\udc00", "e\u0301", "\u202espam", "\U0001f600",
    "ab\x00c", "human_smuggling\x00", "x" * 1000, "AB", "ab",
    [], [None], [1, "a"], ["\ud800"], ["ab", "\udc00"], [2**64], [math.nan], [-0.0, 1], [True], [[]], ["x"] * 50,
    {}, {"a": 1}, {"age": "x"}, (), ("ab",), frozenset({"ab"}), {"ab"}, b"ab", bytearray(b"x"), object(), 1j,
    _deep_list(2_000), _deep_dict(2_000),
]


def _set(annotations: dict, path: tuple[str, ...], value: object) -> None:
    target = annotations
    for part in path[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = target[part] = {}
        target = nxt
    target[path[-1]] = value


@st.composite
def hostile(draw, files: dict[str, str]) -> object:
    """Inputs for `files`, with one to three fields (or the whole input) replaced by something hostile."""
    decls, _ = _pools(files)
    annotations = draw(annotations_for(files))
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(WEIRD))  # not an object at all
    paths = [d.path for d in decls] + [("author",), ("unknown",), ("topic", "x")]
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.one_of(st.sampled_from(WEIRD), st.floats(), st.integers(), st.text(st.characters(codec=None, exclude_categories=()), max_size=6)))
        _set(annotations, draw(st.sampled_from(paths)), value)
    return annotations


def agree_or_input_error(ps: engine.PolicySet, oracle: Oracle, annotations: object, policies=None) -> str:
    """A decision equal to the oracle's, or InputError; returns which."""
    try:
        decision = ps.evaluate(annotations, policies)
    except engine.InputError as e:
        assert e.violations and all(isinstance(v.field, str) and isinstance(v.description, str) for v in e.violations)
        str(e)
        return "input_error"
    decision.to_dict()
    assert engine_summary(decision) == oracle_summary(oracle.evaluate(annotations, policies)), annotations
    return "decision"


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), files=policy_files())
def test_hostile_inputs_on_random_policies(files: dict[str, str], data) -> None:
    """On random policies, hostile inputs get the oracle's decision or an InputError."""
    ps = compile_clean(files)
    oracle = Oracle(files)
    for _ in range(4):
        agree_or_input_error(ps, oracle, data.draw(hostile(files)))


def _validated(validate, annotations: object) -> object:
    """What a validator answers: (values with their types, warnings), or the violations it raises."""
    try:
        values, warns = validate(annotations)
    except engine.InputError as e:
        return ("error", e.violations)
    return ("ok", [(type(v), v) for v in values], warns)


@settings(max_examples=300, **SETTINGS)
@given(data=st.data(), files=policy_files())
def test_c_validator_answers_as_the_generated_validator(files: dict[str, str], data) -> None:
    """The C fast path of validation (engine/_native.c) gives the values, types and warnings the Python specification gives."""
    ps = compile_clean(files)
    for name, schema in ps.schemas.items():
        python = generate_validator(schema)
        for _ in range(4):
            annotations = data.draw(hostile(files))
            assert _validated(ps._validators[name], annotations) == _validated(python, annotations), annotations


_SHIPPED = {k: v.decode("utf-8") for k, v in read_files(ROOT / "policies").items()}


@pytest.fixture(scope="module")
def shipped_pair():
    return compile_clean(_SHIPPED), Oracle(_SHIPPED)


@settings(max_examples=250, **SETTINGS)
@given(annotations=hostile(_SHIPPED))
def test_hostile_inputs_on_shipped_policies(shipped_pair, annotations) -> None:
    """On the shipped set, hostile inputs get the oracle's decision or an InputError."""
    agree_or_input_error(*shipped_pair, annotations)


GOOD = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.9}
MB = "\u00e9" * 500_000  # 1 MB of UTF-8
HUGE = {
    "labels_100k": {**GOOD, "labels": [f"l{i}" for i in range(100_000)] + ["illegal_border_crossing"]},
    "labels_100k_bad_last": {**GOOD, "labels": ["x"] * 100_000 + [3]},
    "labels_100k_surrogate_last": {**GOOD, "labels": ["x"] * 100_000 + ["\ud800"]},
    "text_1mb": {**GOOD, "text": MB},
    "text_1mb_nul": {**GOOD, "text": "\x00" * 1_000_000},
    "text_1mb_surrogate_last": {**GOOD, "text": MB + "\udfff"},
    "language_1mb": {**GOOD, "language": "x" * 1_000_000},
    "topic_1mb": {**GOOD, "topic": "x" * 1_000_000},
    "deep_author": {**GOOD, "author": _deep_dict(10_000)},
    "deep_labels": {**GOOD, "labels": [_deep_list(10_000)]},
}


@pytest.mark.parametrize("what", sorted(HUGE))
def test_huge_inputs_on_shipped_policies(shipped_pair, what: str) -> None:
    """100,000 labels, 1 MB strings, 10,000 levels of nesting: the oracle's decision or an InputError."""
    agree_or_input_error(*shipped_pair, HUGE[what])


# ---- regressions ---------------------------------------------------------------------------------

SURROGATE_POLICY = """
schema s {
  topic: enum("a", "b")
  text?: string
  labels: set<string> = []
}
policy p for s {
  rule r { when has text and text matches "^x" then remove because "x" }
  rule q { when any l in labels: (l matches "y$") then remove because "y" }
}
"""


@pytest.mark.parametrize(
    ("annotations", "field"),
    [
        ({"topic": "a", "text": "x\ud800"}, "text"),
        ({"topic": "a", "labels": ["ok", "\udfffy"]}, "labels"),
        ({"topic": "\ud800"}, "topic"),
    ],
)
def test_lone_surrogates_are_an_input_error(annotations: dict, field: str) -> None:
    """A string with a lone surrogate (json.loads makes one from `"\\ud800"`) is an InputError, not a UnicodeEncodeError in RE2."""
    ps = compile_clean({"s.pol": SURROGATE_POLICY})
    with pytest.raises(engine.InputError) as info:
        ps.evaluate(annotations)
    assert [v.field for v in info.value.violations] == [field]
    assert "lone surrogate" in info.value.violations[0].description
    assert ps.evaluate({"topic": "a", "text": "x\U0001f600", "labels": ["\u00e9y"]}).verdict == "remove"  # a real astral character is fine
