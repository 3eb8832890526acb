"""Diagnostics: golden outputs for broken policies, the error-code reference, parser limits.

Each golden is a broken policy, `tests/golden/diagnostics/<name>.pol`, and the exact
`engine.render_all` output of compiling it alone under the path `<name>.pol`, in
`<name>.expected` (plus a final newline). Inputs too big to commit (10,000 levels of
nesting) are built by the generators in `GENERATED` below and golden all the same.
After an intended change, regenerate and review the diff:

    UPDATE_GOLDEN=1 /tmp/v/bin/python -m pytest tests/test_diagnostics.py
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import engine
from engine.diagnostics import MAX_LINE
from engine.parse import MAX_ERRORS

GOLDEN = Path(__file__).parent / "golden" / "diagnostics"
ERRORS_DOC = Path(__file__).parent.parent / "docs" / "errors.md"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

#: Codes no golden can show: W204 comes from `pol test` coverage, not from compiling.
NOT_FROM_COMPILING = {"W204"}
#: How deep the nesting tests go, and how long any one of them may take (seconds).
DEEP = 10_000
TIME_LIMIT = 15.0

_SCHEMA = """\
schema content {
  confidence: float
  mentions_minor: bool = false
  labels: set<string> = []
}

"""


def _rule(comment: str, condition: str) -> str:
    """A file whose one rule has `condition` as its `when`."""
    return (
        f"# {comment}\n{_SCHEMA}policy p for content {{\n  rule r {{\n    when {condition}\n"
        '    then remove\n    because "Generated."\n  }\n}\n'
    )


def _case(comment: str, labels: str) -> str:
    """A file whose one test case gives `labels` as its value for `labels`."""
    return (
        f"# {comment}\n{_SCHEMA}policy p for content {{\n  otherwise allow because \"Nothing applies.\"\n}}\n\n"
        f'test p {{\n  case "deep" {{\n    given {{ confidence: 0.5, labels: {labels} }}\n    expect allow\n  }}\n}}\n'
    )


def _long_line(comment: str, terms: int) -> str:
    """A file with one `let` on one line of about 20 * `terms` characters, broken in the middle."""
    half = " or ".join(["confidence > 0.5"] * (terms // 2))
    return f"# {comment}\n{_SCHEMA}policy p for content {{ let big = {half} or confidence >> 0.5 or {half} }}\n"


def _many_errors(comment: str, count: int, broken: str) -> str:
    """A policy with `count` lets, each `broken` (with `{i}` replaced by its number)."""
    lets = "".join(f"  let l{i} = {broken.format(i=i)}\n" for i in range(count))
    return f"# {comment}\n{_SCHEMA}policy p for content {{\n{lets}}}\n"


# name -> source, for goldens whose input is built rather than committed
GENERATED: dict[str, Callable[[], str]] = {
    "deep_parentheses": lambda: _rule(
        "P005: 10,000 nested parentheses are a diagnostic, not a RecursionError.",
        "(" * DEEP + "mentions_minor" + ")" * DEEP,
    ),
    "deep_nots": lambda: _rule(
        "P005: 10,000 `not`s in a row are a diagnostic, not a RecursionError.",
        "not " * DEEP + "mentions_minor",
    ),
    "long_sum": lambda: _rule(
        "P005: a 10,000-term `+` chain nests 10,000 deep (it associates to the left).",
        " + ".join(["confidence"] * DEEP) + " > 1",
    ),
    "deep_given_lists": lambda: _case(
        "P005: 10,000 nested lists in a test input; the help speaks of values, not expressions.",
        "[" * DEEP + "]" * DEEP,
    ),
    "deep_given_objects": lambda: _case(
        "P005: 10,000 nested objects in a test input.",
        "{ a: " * DEEP + "1" + " }" * DEEP,
    ),
    "unclosed_parentheses": lambda: _rule(
        "P001: 10,000 `(` never closed; the help points at the innermost.",
        "(" * DEEP + "mentions_minor",
    ),
    "long_line": lambda: _long_line(
        "P001: an error in the middle of a 20,000-character line is shown in a window around it.",
        1_000,
    ),
}


def _golden_names() -> list[str]:
    committed = sorted(p.stem for p in GOLDEN.glob("*.pol"))
    return committed + sorted(GENERATED)


def _source(name: str) -> bytes:
    if name in GENERATED:
        return GENERATED[name]().encode("utf-8")
    return (GOLDEN / f"{name}.pol").read_bytes()


def _compile(name: str, data: bytes | str) -> engine.CheckResult:
    """Compile one file on its own, as `<name>.pol`, so output is independent of the checkout."""
    return engine.compile_sources({f"{name}.pol": data})


def _codes(result: engine.CheckResult) -> list[str]:
    return [d.code for d in result.diagnostics]


def _timed_compile(name: str, data: str) -> tuple[engine.CheckResult, float]:
    start = time.perf_counter()
    result = _compile(name, data)
    return result, time.perf_counter() - start


# ---- goldens ------------------------------------------------------------------------


@pytest.mark.parametrize("name", _golden_names())
def test_golden(name: str) -> None:
    """Compiling a golden source renders exactly its `.expected` file."""
    rendered = engine.render_all(_compile(name, _source(name)).diagnostics) + "\n"
    expected_path = GOLDEN / f"{name}.expected"
    if UPDATE:
        expected_path.write_text(rendered, encoding="utf-8")
        return
    assert expected_path.exists(), f"no {expected_path.name}; run with UPDATE_GOLDEN=1 and review it"
    assert rendered == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", _golden_names())
def test_golden_source_says_what_it_pins(name: str) -> None:
    """Every golden source opens with a `#` comment line naming the code it pins."""
    first_line = _source(name).split(b"\n", 1)[0].decode("utf-8")
    assert re.match(r"# [PEW]\d{3}: \S", first_line), first_line


def test_every_expected_file_has_a_source() -> None:
    """No `.expected` file is left over from a golden that was renamed or removed."""
    names = set(_golden_names())
    orphans = sorted(p.name for p in GOLDEN.glob("*.expected") if p.stem not in names)
    assert not orphans


def test_goldens_cover_every_code() -> None:
    """Every code in CODES, but those only `pol test` raises, appears in some golden."""
    seen: set[str] = set()
    for path in GOLDEN.glob("*.expected"):
        seen |= set(re.findall(r"^\S+:\d+:\d+: (?:error|warning)\[([PEW]\d{3})\]", path.read_text(encoding="utf-8"), re.M))
    assert sorted(set(engine.CODES) - NOT_FROM_COMPILING - seen) == []


def test_four_broken_rules_give_four_errors() -> None:
    """Syntax errors in four separate rules are all reported, not just the first."""
    result = _compile("four_broken_rules", _source("four_broken_rules"))
    assert _codes(result) == ["P001"] * 4
    assert [d.span.line for d in result.diagnostics] == [10, 16, 27, 34]


@pytest.mark.parametrize("data", [b"", b"\n  \n", b"\xef\xbb\xbf"], ids=["zero-bytes", "blank-lines", "bom-only"])
def test_empty_file_is_one_warning(data: bytes) -> None:
    """A file with nothing in it (a golden must start with a comment) gives W205 alone."""
    assert _codes(_compile("empty", data)) == ["W205"]


# ---- the error-code reference ---------------------------------------------------------


def _documented_codes() -> dict[str, str]:
    """code -> title, from the `### CODE: title` headings of docs/errors.md."""
    text = ERRORS_DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"^#{2,4} ([PEW]\d{3}): (.+?)\s*$", text, re.M))


def test_errors_doc_lists_every_code() -> None:
    """docs/errors.md has a heading for each code in CODES, with the same title, and no others."""
    documented = _documented_codes()
    assert sorted(documented) == sorted(engine.CODES)
    assert {code: title for code, (_, title) in engine.CODES.items()} == documented


def _quoted_diagnostics() -> list[tuple[str, str]]:
    """(golden name, rendered diagnostic) for each diagnostic quoted in docs/errors.md."""
    text = ERRORS_DOC.read_text(encoding="utf-8")
    quoted = []
    for block in re.findall(r"^```text\n(.*?)^```", text, re.M | re.S):
        for diagnostic in block.rstrip("\n").split("\n\n"):
            m = re.match(r"(\w+)\.pol:\d+:\d+: ", diagnostic)
            if m and (GOLDEN / f"{m.group(1)}.expected").exists():
                quoted.append((m.group(1), diagnostic))
    return quoted


def test_errors_doc_quotes_goldens_verbatim() -> None:
    """Every diagnostic docs/errors.md shows from a golden is that golden's output, verbatim."""
    quoted = _quoted_diagnostics()
    assert len(quoted) >= len(engine.CODES) - len(NOT_FROM_COMPILING)
    stale = [name for name, diagnostic in quoted if diagnostic not in (GOLDEN / f"{name}.expected").read_text(encoding="utf-8")]
    assert stale == []


# ---- limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["deep_parentheses", "deep_nots", "long_sum", "deep_given_lists", "deep_given_objects"])
def test_deep_nesting_is_a_diagnostic(name: str) -> None:
    """10,000 levels of nesting give one P005, quickly, never a RecursionError."""
    result, seconds = _timed_compile(name, GENERATED[name]())
    assert _codes(result) == ["P005"]
    assert seconds < TIME_LIMIT


def test_a_file_whose_only_policy_is_too_deep_gets_p005_alone() -> None:
    """The policy dropped for nesting too deep is an error, not also "file defines nothing" (W205)."""
    text = "policy p for content {\n  rule r { when " + "(" * 5000 + 'topic == "spam"' + ")" * 5000 + ' then remove because "x" }\n}\n'
    assert _codes(_compile("only_deep", text.encode())) == ["P005"]


def test_long_line_is_shown_in_a_window() -> None:
    """A 1 MB one-line file renders a window of the line, with the caret under the error."""
    source = _long_line("P001: a 1 MB line.", 56_000)
    assert len(source) > 1_000_000
    result, seconds = _timed_compile("long_line", source)
    assert _codes(result) == ["P001"]
    assert seconds < TIME_LIMIT
    rendered = engine.render(result.diagnostics[0])
    assert len(rendered) < 1_000
    source_line, caret_line = rendered.splitlines()[2:4]
    shown = source_line.split(" | ", 1)[1]
    carets = caret_line.split(" | ", 1)[1]
    assert shown.startswith("...") and shown.endswith("...")
    assert len(shown) <= MAX_LINE + 6
    column = carets.index("^")
    assert shown[column - 1 : column + 2] == ">> "  # the second `>` of `>>` is the error
    assert carets.strip() == "^"


@pytest.mark.parametrize(
    ("broken", "code"),
    [("confidence >= = 0.{i}", "P001"), ("confidence >= 80%", "P002")],
    ids=["parser", "lexer"],
)
def test_syntax_errors_stop_at_max_errors(broken: str, code: str) -> None:
    """After MAX_ERRORS syntax errors the file is abandoned with a single P008."""
    source = _many_errors("P008", MAX_ERRORS + 10, broken)
    codes = _codes(_compile("many", source))
    assert codes == [code] * MAX_ERRORS + ["P008"]
