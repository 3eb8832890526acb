"""Policy text is data, never code: Python injections in every name and string a policy can hold.

engine/codegen.py turns each compiled policy (and engine/validate.py each schema) into
Python source and `exec`s it. Every payload below either gets a clean diagnostic, or
compiles into a set whose decisions carry the text back verbatim (reason, citation, tags,
version, observed values, intervention arguments, test case names) while nothing runs:
the sentinel file is never created, the canary builtin never set, and the generated code
uses exactly the identifiers it uses for a harmless text.
"""

from __future__ import annotations

import ast as pyast
import builtins
import functools
import keyword
import os
import tempfile
from pathlib import Path

import pytest
import re2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import engine
import engine.codegen
import engine.validate
from engine.validate import validate_object

SENTINEL = Path(tempfile.gettempdir()) / f"pol-injection-sentinel-{os.getpid()}"
CANARY = "POL_INJECTION_CANARY"
#: One Python expression with both side effects; the payloads wrap it to escape every kind of literal.
RUN = f"__import__('pathlib').Path({str(SENTINEL)!r}).touch() or setattr(__import__('builtins'), {CANARY!r}, 1)"

STRING_PAYLOADS = {
    "close-double-quote": f'"); {RUN} #',
    "close-single-quote": f"'); {RUN} #",
    "concat-double": f'" + str({RUN}) + "',
    "concat-single": f"' + str({RUN}) + '",
    "or-double": f'" or {RUN} or "',
    "triple-single": f"''' + str({RUN}) + '''",
    "triple-double": f'""" + str({RUN}) + """',
    "backslash": "\\",
    "backslash-quote": f"\\'); {RUN} #",
    "trailing-backslash": "a\\",
    "newline-code": f"\n{RUN}\n",
    "newline-indented-code": f"x\n    {RUN}",
    "crlf-code": f"\r\n{RUN}",
    "format-class": "{0.__class__}",
    "format-globals": "{__import__}{self.__dict__}",
    "percent": "%s%r%n%(x)s",
    "line-separator": f"\u2028{RUN}",
    "paragraph-separator": f"\u2029{RUN}",
    "next-line": f"\u0085{RUN}",
    "nul": f"\x00{RUN}",
    "form-feed": f"\x0c{RUN}",
    "escape-sequence": "\x1b[2J\x1b[31m",
    "bom-and-bidi": "\ufeff\u202eevil",
    "dunder-import": "__import__",
    "dunder-class": "__class__",
    "exec": "exec",
    "python-constants": "None True False self",
    "lambda": f"lambda: {RUN}",
    "generated-helper": "_any3",
    "emoji": "\U0001f600",
    "empty": "",
    "long": "x" * 200,
}

#: Python keywords, builtins and every lowercase name codegen.py and validate.py use for
#: their own locals and helpers (the uppercase ones, `_U`, `_C0`..., cannot be pol names).
GENERATED_NAMES = (
    "atom atom0 atom1 validate a v0 v1 v2 q1 o1 o1get get errs warns _e _w "
    "_div _guarded _any3 _all3 _kind _u _c0 _r0 _ _0"
).split()
BUILTIN_NAMES = (
    "__import__ __class__ __builtins__ __name__ __dict__ __globals__ exec eval compile open self none "
    "print len any all type set map tuple frozenset dict str list bool int float getattr setattr globals locals"
).split()
POL_KEYWORDS = {"and", "or", "not", "in", "for", "import", "any", "all", "case", "true", "false", "has", "let", "rule", "test"}
NAME_PAYLOADS = sorted({k for k in keyword.kwlist + keyword.softkwlist if k.islower()} | set(GENERATED_NAMES) | set(BUILTIN_NAMES)) + [
    "a" * 5000,
    "_" * 300,
]


@pytest.fixture(autouse=True)
def nothing_ran():
    """Every test here ends with no sentinel file and no canary builtin."""
    SENTINEL.unlink(missing_ok=True)
    assert not hasattr(builtins, CANARY)
    yield
    ran = SENTINEL.exists() or hasattr(builtins, CANARY)
    SENTINEL.unlink(missing_ok=True)
    if hasattr(builtins, CANARY):
        delattr(builtins, CANARY)
    assert not ran, "policy text was executed as code"


@pytest.fixture
def generated(monkeypatch) -> list[str]:
    """Every Python source codegen.py and validate.py compile, in order (a spy on their `compile`)."""
    sources: list[str] = []

    def spy(source, filename, mode, *args, **kwargs):
        sources.append(source)
        return compile(source, filename, mode, *args, **kwargs)

    monkeypatch.setattr(engine.codegen, "compile", spy, raising=False)
    monkeypatch.setattr(engine.validate, "compile", spy, raising=False)
    return sources


def vocabulary(sources: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The identifiers and attribute names of generated Python: what code it can reach."""
    names, attributes = set(), set()
    for source in sources:
        for node in pyast.walk(pyast.parse(source)):
            if isinstance(node, pyast.Name):
                names.add(node.id)
            elif isinstance(node, pyast.Attribute):
                attributes.add(node.attr)
            elif isinstance(node, (pyast.FunctionDef, pyast.arg)):
                names.add(node.name if isinstance(node, pyast.FunctionDef) else node.arg)
    return frozenset(names), frozenset(attributes)


def pol_string(text: str, raw: bool = False) -> str:
    """`text` as a pol string literal: escaped, or with every character but `"`, `\\` and newline written raw."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif raw:
            out.append(c)
        elif c == "\t":
            out.append("\\t")
        elif not c.isprintable() or c in "\u2028\u2029\x85":
            out.append(f"\\u{{{ord(c):x}}}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def exact_regex(text: str) -> str:
    """An RE2 pattern matching exactly `text`: every character but ASCII alphanumerics as `\\x{...}`."""
    return "^" + "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text) + "$"


def string_policy(t: dict[str, str], raw: bool = False) -> str:
    """A policy with a text in every string position: `t` maps position to text ("value" is the matched one)."""
    q = {k: pol_string(v, raw) for k, v in t.items()}
    v = q["value"]
    return f"""
schema content {{
  kind: enum({v}, "other")
  note: string = {v}
  bag: set<string> = [{v}]
  score: float
}}

policy p for content {{
  version {q["version"]}
  description {q["description"]}
  owner {q["owner"]}

  rule r {{
    when kind == {v} and note == {v} and {v} in bag and note contains {v} and note starts_with {v}
         and note ends_with {v} and note in [{v}, "other"] and note matches {pol_string(exact_regex(t["value"]), raw)}
         and any x in bag: (x == {v})
    then intervene act(arg: {q["arg"]}, list: [{q["arg"]}, 1])
    because {q["because"]}
    cite {q["cite"]}
    tags [{q["tag"]}]
  }}

  otherwise allow because {q["otherwise"]}
}}

test p {{
  case {q["case"]} {{
    given {{ kind: {v}, score: 0.5 }}
    expect intervene act by r
  }}
}}
"""


POSITIONS = ("value", "version", "description", "owner", "arg", "because", "cite", "tag", "otherwise", "case")


def assert_carried_verbatim(t: dict[str, str], raw: bool = False) -> None:
    """Compile `string_policy(t)` cleanly and check that each position's text comes back unchanged."""
    result = engine.compile_sources({"p.pol": string_policy(t, raw)})
    assert result.policy_set is not None, engine.render_all(result.errors)
    ps = result.policy_set
    value = t["value"]
    for given_ in ({"kind": value, "score": 0.5}, {"kind": value, "note": value, "bag": [value], "score": 0.5, "extra": value}):
        d = ps.evaluate(given_)
        assert (d.verdict, d.rule) == ("intervene", "r")
        (j,) = d.justifications
        assert (j.reason, j.citation, j.tags, j.version) == (t["because"], t["cite"], (t["tag"],), t["version"])
        assert [(i.name, i.arguments) for i in d.interventions] == [("act", (("arg", t["arg"]), ("list", (t["arg"], 1))))]
        assert {k: v for c in j.conditions for k, v in c.observed} == {"kind": value, "note": value, "bag": frozenset({value})}
        assert d.to_dict()["justifications"][0]["reason"] == t["because"]
    other = ps.evaluate({"kind": "other", "score": 0.5})
    assert (other.verdict, other.justifications[0].reason) == ("allow", t["otherwise"])
    policy = ps.policies["p"]
    assert (policy.description, policy.owner) == (t["description"], t["owner"])
    report = engine.run_tests(ps)
    assert report.passed and [c.name for c in report.cases] == [t["case"]]


# ---- strings --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True], ids=["escaped", "raw"])
@pytest.mark.parametrize("payload", list(STRING_PAYLOADS.values()), ids=list(STRING_PAYLOADS))
def test_string_payloads_in_every_position_come_back_verbatim_and_never_run(payload, raw):
    """A payload in every string of a policy (schema, metadata, literals, regex, reasons, arguments, case name) stays data."""
    assert_carried_verbatim(dict.fromkeys(POSITIONS, payload), raw)


def test_generated_code_has_the_same_identifiers_whatever_the_strings(generated):
    """The Python generated for a payload-filled policy uses the identifiers of the harmless one: text only ever becomes constants."""
    assert_carried_verbatim(dict.fromkeys(POSITIONS, "harmless"))
    baseline = vocabulary(generated)
    assert "validate" in baseline[0] and any(name.startswith("atom") for name in baseline[0])  # the spy sees both generators
    for payload in STRING_PAYLOADS.values():
        generated.clear()
        assert_carried_verbatim(dict.fromkeys(POSITIONS, payload))
        assert vocabulary(generated) == baseline, payload


def test_an_import_path_crafted_as_code_is_a_clean_diagnostic():
    """`import` of a payload path is an error diagnostic that renders, nothing else."""
    for payload in STRING_PAYLOADS.values():
        result = engine.compile_sources({"a.pol": f"import {pol_string(payload)}\n"})
        assert result.policy_set is None and result.errors, payload
        engine.render_all(result.diagnostics)


def test_a_regex_crafted_as_code_is_a_regex_or_a_diagnostic():
    """Payloads used as `matches` patterns compile as RE2 patterns or get E108; none runs."""
    for payload in STRING_PAYLOADS.values():
        source = f'schema s {{ note: string }}\npolicy p for s {{\n  rule r {{ when note matches {pol_string(payload)} then remove because "r" }}\n}}\n'
        result = engine.compile_sources({"a.pol": source})
        engine.render_all(result.diagnostics)
        try:
            pattern = re2.compile(payload)
        except re2.error:
            assert result.policy_set is None and {d.code for d in result.errors} == {"E108"}, payload
            continue
        assert result.policy_set is not None, engine.render_all(result.errors)
        matched = pattern.search(payload) is not None
        assert result.policy_set.evaluate({"note": payload}).verdict == ("remove" if matched else "allow")


# ---- names ----------------------------------------------------------------------------------


def name_policy(n: str) -> str:
    """`n` as the schema, policy, let, rule, quantifier variable, intervention, argument and test name."""
    return f"""
schema {n} {{
  topic: enum("x", "y")
  bag: set<string> = []
}}
policy {n} for {n} {{
  let {n} = topic == "x"
  rule {n} {{
    when {n} and any {n} in bag: ({n} == "b")
    then intervene {n}({n}: "v")
    because "r"
  }}
}}
test {n} {{
  case "c" {{
    given {{ topic: "x", bag: ["b"] }}
    expect intervene {n} by {n}
  }}
}}
"""


def field_policy(n: str) -> str:
    """`n` as a top-level field, a nested field's last part, and both parts of a two-level path."""
    return f"""
schema content {{
  {n}: enum("x", "y")
  o.{n}?: int
  p.{n}.{n}: float = 1
}}
policy p for content {{
  rule r {{
    when {n} == "x" and has o.{n} and o.{n} > 2 and p.{n}.{n} < 5
    then remove
    because "r"
  }}
}}
"""


@pytest.mark.parametrize("name", NAME_PAYLOADS, ids=[n[:24] for n in NAME_PAYLOADS])
def test_names_that_shadow_python_and_the_generated_code_stay_names(name):
    """Keywords, builtins, dunders and the generated code's own locals as every kind of pol name: a decision naming them, or a parse error for pol keywords."""
    results = [engine.compile_sources({"a.pol": name_policy(name)}), engine.compile_sources({"a.pol": field_policy(name)})]
    if name in POL_KEYWORDS:
        for result in results:
            assert result.policy_set is None and {d.code for d in result.errors} == {"P001"}
            engine.render_all(result.diagnostics)
        return
    named, fields = (r.policy_set for r in results)
    assert named is not None and fields is not None, engine.render_all([d for r in results for d in r.errors])
    d = named.evaluate({"topic": "x", "bag": ["b"]})
    assert (d.verdict, d.policy, d.rule) == ("intervene", name, name)
    assert [(i.name, i.arguments) for i in d.interventions] == [(name, ((name, "v"),))]
    assert engine.run_tests(named).passed
    d = fields.evaluate({name: "x", "o": {name: 3}, "p": {name: {name: 4}}})
    assert d.verdict == "remove"
    assert [c.observed for c in d.justifications[0].conditions] == [((name, "x"),), ((f"o.{name}", 3),), ((f"o.{name}", 3),), ((f"p.{name}.{name}", 4.0),)]
    with pytest.raises(engine.InputError) as e:
        fields.evaluate({name: 1, "o": {name: "3"}, "p": {name: []}})
    assert sorted(v.field for v in e.value.violations) == sorted([name, f"o.{name}", f"p.{name}"])


def explained(source: str, annotations: dict) -> tuple[engine.Condition, ...]:
    """Compile, decide and explain: every piece of Python the engine generates for `source` gets made."""
    return engine.compile_sources({"a.pol": source}).policy_set.evaluate(annotations).justifications[0].conditions


def test_generated_code_has_the_same_identifiers_whatever_the_names(generated):
    """The Python generated for a policy depends on its shape, not on what its names are."""
    assert explained(name_policy("harmless"), {"topic": "x", "bag": ["b"]})
    assert explained(field_policy("harmless"), {"harmless": "x", "o": {"harmless": 3}})
    baseline = vocabulary(generated)
    for name in NAME_PAYLOADS:
        if name in POL_KEYWORDS:
            continue
        generated.clear()
        assert explained(name_policy(name), {"topic": "x", "bag": ["b"]})
        assert explained(field_policy(name), {name: "x", "o": {name: 3}})
        assert vocabulary(generated) == baseline, name


# ---- annotations: keys and values from callers -----------------------------------------------------

#: A schema whose fields are named like the validator's own locals and helpers.
LOCALS_SCHEMA = """
schema s {
  a: string
  get: string = "g"
  errs?: string
  warns: enum("w", "other") = "w"
  _e: set<string> = []
  _w: list<int> = []
  o1.o1get: string = "o"
  v0: bool = false
  type.__class__: string = "t"
}
policy p for s {
  rule r { when a == get then remove because "same" }
}
"""
LOCALS_TOP_LEVEL = {"a", "get", "errs", "warns", "_e", "_w", "o1", "v0", "type"}


@functools.cache
def _locals_set() -> engine.PolicySet:
    return engine.compile_sources({"s.pol": LOCALS_SCHEMA}).policy_set


def test_annotation_values_and_keys_crafted_as_code_stay_data():
    """Payloads as annotation values come back as the values seen; as keys they are ignored, or named verbatim in strict validation."""
    ps = _locals_set()
    assert ps is not None
    for payload in STRING_PAYLOADS.values():
        annotations = {
            "a": payload, "get": payload, "errs": payload, "warns": payload, "_e": [payload], "_w": [1],
            "o1": {"o1get": payload}, "type": {"__class__": payload}, payload: payload, "__class__": {payload: RUN},
        }
        assert ps.values(annotations, "s") == (payload, payload, payload, payload, frozenset({payload}), (1,), payload, False, payload)
        d = ps.evaluate(annotations)
        assert d.verdict == "remove" and d.justifications[0].conditions[0].observed == (("a", payload), ("get", payload))
        assert [w.field for w in d.warnings] == (["warns"] if payload not in ("w", "other") else [])
        unknown = {v.field for v in validate_object(ps.schemas["s"], annotations, strict=True)}
        assert payload in unknown or payload in ("a", "get", "errs", "warns", "_e", "_w")


def test_annotation_values_of_the_wrong_type_are_violations_that_do_not_echo_them():
    """A payload where a number, bool, list or object belongs is a violation naming the field; the text is not repeated."""
    ps = _locals_set()

    def message(text: str) -> str:
        with pytest.raises(engine.InputError) as e:
            ps.evaluate({"a": [text], "v0": text, "_w": [text], "o1": text, "type": {"__class__": {text: text}}})
        assert sorted(v.field for v in e.value.violations) == ["_w", "a", "o1", "type.__class__", "v0"]
        return str(e.value)

    harmless = message("harmless")
    for payload in STRING_PAYLOADS.values():
        assert message(payload) == harmless


# ---- arbitrary text --------------------------------------------------------------------------------

TEXT = st.text(max_size=40)


@settings(max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(texts=st.fixed_dictionaries({p: TEXT for p in POSITIONS}), raw=st.booleans())
def test_any_text_in_any_string_position_comes_back_verbatim(texts, raw):
    """Arbitrary Unicode (no lone surrogates) in every string of a valid policy: the decision carries each one back unchanged."""
    assume(texts["value"] != "other")
    assert_carried_verbatim(texts, raw)


@settings(max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(extra=st.dictionaries(st.text(max_size=20), st.text(max_size=20) | st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), max_size=5), value=st.text(max_size=40))
def test_any_annotation_keys_and_values_stay_data(extra, value):
    """Arbitrary extra keys are ignored and an arbitrary value is observed as sent, through the validator and the decision."""
    ps = _locals_set()
    annotations = {**{k: v for k, v in extra.items() if k not in LOCALS_TOP_LEVEL}, "a": value, "get": value}
    d = ps.evaluate(annotations)
    assert d.verdict == "remove"
    assert d.justifications[0].conditions[0].observed == (("a", value), ("get", value))
