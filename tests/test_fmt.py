"""`pol fmt`: one canonical layout, every comment kept, idempotent, the same AST.

Goldens are messy inputs, `tests/golden/fmt/<name>.pol`, and their formatted text,
`<name>.expected.pol`; `spacing.expected.diff` is what `pol fmt --diff spacing.pol`
prints. After an intended change to the layout, regenerate and review the diff:

    UPDATE_GOLDEN=1 /tmp/v/bin/python -m pytest tests/test_fmt.py
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import formatter
from engine.formatter import LINE_LIMIT, FormatError, _cst_parser, format_source
from engine.parse import parse_text

from .conftest import ROOT
from .strategies import policy_files

GOLDEN = ROOT / "tests" / "golden" / "fmt"
DIAGNOSTICS = ROOT / "tests" / "golden" / "diagnostics"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MESSY = sorted(p.name[: -len(".pol")] for p in GOLDEN.glob("*.pol") if not p.name.endswith(".expected.pol"))


def _parses(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return False
    tree, _, diags = parse_text(str(path), text)
    return tree is not None and not any(d.is_error and d.code.startswith("P") for d in diags)


#: Every file on disk that formats: diagnostics goldens that parse, the shipped set,
#: the language examples and the fmt goldens themselves.
ON_DISK = sorted(
    str(p.relative_to(ROOT))
    for p in [
        *DIAGNOSTICS.glob("*.pol"),
        *(ROOT / "policies").rglob("*.pol"),
        *(ROOT / "tests" / "language").glob("*.pol"),
        *GOLDEN.glob("*.pol"),
    ]
    if _parses(p)
)


def _ast(text: str, path: str = "f.pol"):
    tree, _, diags = parse_text(path, text)
    assert tree is not None, engine.render_all(diags)
    return tree


def _comments(text: str) -> list[str]:
    """The comments of `text`, as the lexer sees them, without trailing whitespace."""
    return [t.value.rstrip() for t in _cst_parser().lex(text, dont_ignore=True) if t.type == "COMMENT"]


def _assert_sound(text: str, path: str = "f.pol") -> str:
    """Format `text` and check the three promises: same AST, same comments, idempotent."""
    out = format_source(text, path)
    assert _ast(out, path) == _ast(text, path)
    assert _comments(out) == _comments(text)
    assert format_source(out, path) == out
    return out


# ---- properties ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ON_DISK)
def test_files_on_disk_format_soundly(path: str) -> None:
    """Every .pol file in the repository that parses formats to the same AST and comments, idempotently."""
    _assert_sound((ROOT / path).read_text(encoding="utf-8"), path)


@settings(max_examples=120, **SETTINGS)
@given(files=policy_files())
def test_generated_policies_format_soundly(files: dict[str, str]) -> None:
    """Generated policy sets format to the same AST, idempotently."""
    for path, text in files.items():
        _assert_sound(text, path)


def _tokens(text: str) -> list:
    return list(_cst_parser().lex(text))


def _respace(text: str, rng: random.Random, with_comments: bool) -> str:
    """`text` with every gap between tokens redrawn, and (maybe) comments put in them."""
    toks = _tokens(text)
    out: list[str] = []
    n = 0
    for k, tok in enumerate(toks):
        if k:
            roll = rng.random()
            if with_comments and roll < 0.08:
                n += 1
                out.append(rng.choice((" ", "   ", "\t")) + f"# trailing {n}\n" + " " * rng.randrange(6))
            elif with_comments and roll < 0.14:
                n += 1
                out.append(rng.choice(("\n", "\n\n", " \n\t")) + " " * rng.randrange(6) + f"# own line {n}\n")
            else:
                out.append(rng.choice((" ", "  ", "\n", "\n\n\n", "\t", " \n      ")))
        out.append(tok.value)
    if with_comments and rng.random() < 0.5:
        out.append(rng.choice(("  # at the end", "\n\n# at the end\n")))
    return "".join(out) + rng.choice(("", "\n", "\n\n"))


def _shift_spaces(text: str, rng: random.Random) -> str:
    """`text` with the spaces between tokens redrawn, line breaks left where they were."""
    toks = _tokens(text)
    out: list[str] = []
    end = 0
    for tok in toks:
        gap = text[end : tok.start_pos]
        if end:
            if "\n" in gap:
                out.append("\n" * gap.count("\n") + rng.choice(("", " ", "\t", "         ")))
            else:
                out.append(rng.choice((" ", "  ", "\t", "    ")))
        out.append(tok.value)
        end = tok.end_pos
    return "".join(out) + "\n"


@settings(max_examples=120, **SETTINGS)
@given(files=policy_files(), seed=st.integers(0, 2**32 - 1))
def test_messy_layouts_format_soundly(files: dict[str, str], seed: int) -> None:
    """Any spacing and line breaking, with comments anywhere, formats to the same AST and keeps every comment."""
    rng = random.Random(seed)
    for path, text in files.items():
        messy = _respace(text, rng, with_comments=True)
        out = _assert_sound(messy, path)
        assert _ast(out, path) == _ast(text, path)


@settings(max_examples=80, **SETTINGS)
@given(files=policy_files(), seed=st.integers(0, 2**32 - 1))
def test_spaces_within_lines_do_not_matter(files: dict[str, str], seed: int) -> None:
    """Two texts that differ only in the spaces within lines format to the same text."""
    rng = random.Random(seed)
    for path, text in files.items():
        assert format_source(_shift_spaces(text, rng), path) == format_source(text, path)


@settings(max_examples=60, **SETTINGS)
@given(files=policy_files(), seed=st.integers(0, 2**32 - 1))
def test_long_conditions_are_broken(files: dict[str, str], seed: int) -> None:
    """Once formatted, no line longer than the limit holds an `and`/`or` after its start."""
    rng = random.Random(seed)
    for path, text in files.items():
        for source in (text, _respace(text, rng, with_comments=False)):
            for line in format_source(source, path).splitlines():
                if len(line) > LINE_LIMIT:
                    words = line.split()
                    assert "and" not in words[1:] and "or" not in words[1:], line


def test_a_ten_thousand_term_condition_formats_in_bounded_time() -> None:
    """10,000 `or`s (some with nested `and`s) format with every line in the limit, idempotently, in seconds not minutes."""
    import time

    terms = " or ".join(f'topic == "t{i}"' + (' and intent == "offer"' if i % 3 == 0 else "") for i in range(10_000))
    schema = (ROOT / "policies/schema.pol").read_text(encoding="utf-8")
    text = schema + f'\npolicy p for content {{\n  rule r {{ when {terms} then remove because "x" }}\n}}\n'
    start = time.monotonic()
    out = format_source(text, "long.pol")
    assert time.monotonic() - start < 120  # about 3 s here; breaking one line per pass took 6 minutes
    assert max(len(line) for line in out.splitlines()) <= LINE_LIMIT
    assert format_source(out, "long.pol") == out


# ---- the layout, pinned ------------------------------------------------------------


@pytest.mark.parametrize("name", ["section1_import", "section2_schema", "section3_policy", "section6_tests"])
def test_language_examples_are_canonical(name: str) -> None:
    """The code blocks of LANGUAGE.md are already in the canonical layout."""
    text = (ROOT / "tests" / "language" / f"{name}.pol").read_text(encoding="utf-8")
    assert format_source(text) == text


@pytest.mark.parametrize("name", MESSY)
def test_golden(name: str) -> None:
    """A messy golden input formats to exactly its `.expected.pol` file."""
    out = format_source((GOLDEN / f"{name}.pol").read_text(encoding="utf-8"), f"{name}.pol")
    expected = GOLDEN / f"{name}.expected.pol"
    if UPDATE:
        expected.write_text(out, encoding="utf-8")
        return
    assert expected.exists(), f"no {expected.name}; run with UPDATE_GOLDEN=1 and review it"
    assert out == expected.read_text(encoding="utf-8")


def test_goldens_change_something() -> None:
    """Every messy golden input is really messy: formatting changes it."""
    same = [n for n in MESSY if format_source((GOLDEN / f"{n}.pol").read_text(encoding="utf-8")) == (GOLDEN / f"{n}.pol").read_text(encoding="utf-8")]
    assert not same


def test_every_expected_file_has_an_input() -> None:
    """No `.expected.pol` is left over from a golden that was renamed or removed."""
    orphans = sorted(p.name for p in GOLDEN.glob("*.expected.pol") if p.name[: -len(".expected.pol")] not in MESSY)
    assert not orphans


def test_trailing_comments_keep_their_column_when_the_code_fits() -> None:
    """An aligned trailing comment stays in its column; one the code reaches moves to two spaces after it."""
    text = 'let a = 1          # aligned\nlet bb=2           # aligned\nlet ccccccccccccccccc = 3 # pushed\n'
    assert format_source(text) == 'let a = 1          # aligned\nlet bb = 2         # aligned\nlet ccccccccccccccccc = 3  # pushed\n'


def test_empty_and_comment_only_files() -> None:
    """An empty file stays empty; a file of comments keeps them, blank lines collapsed, one final newline."""
    assert format_source("") == ""
    assert format_source("\n\n  \n") == ""
    assert format_source("  # a\n\n\n# b   \n\n") == "# a\n\n# b\n"


def test_byte_order_mark_and_crlf_are_dropped() -> None:
    """A leading byte order mark and CRLF line ends come out as plain UTF-8 with LF."""
    assert format_source('\ufefflet a = 1\r\n\r\n\r\nlet b = 2  # x\r\n') == "let a = 1\n\nlet b = 2  # x\n"


def test_syntax_errors_are_not_formatted() -> None:
    """Text that does not parse raises FormatError carrying the parser's diagnostics."""
    with pytest.raises(FormatError) as info:
        format_source('policy p for content {\n  rule r {\n    when a &&\n  }\n}\n', "broken.pol")
    assert info.value.diagnostics
    assert all(d.code.startswith("P") for d in info.value.diagnostics)


def test_a_layout_that_loses_a_token_or_comment_is_refused(monkeypatch) -> None:
    """If the printer ever dropped a token or a comment, format_source raises instead of returning the text."""
    text = "let a = x and y  # why\n"
    monkeypatch.setattr(formatter._Writer, "finish", lambda self, end: "let a = x\n")
    with pytest.raises(FormatError, match="left as is") as info:
        format_source(text)
    assert info.value.diagnostics == []
    monkeypatch.setattr(formatter._Writer, "finish", lambda self, end: "let a = x and y\n")
    with pytest.raises(FormatError, match="left as is"):
        format_source(text)


def test_deep_nesting_within_the_limit_formats() -> None:
    """Conditions and test inputs nested close to the parser's depth limit format without recursion errors."""
    text = "let a = " + "(" * 95 + "x" + ")" * 95 + "\nlet b = " + "not " * 95 + "x\n"
    _assert_sound(text)


# ---- the command ----------------------------------------------------------------------


def _pol(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli", "fmt", *args], cwd=cwd, env=env, input=stdin, capture_output=True, timeout=120
    )


def _copy_golden(name: str, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(GOLDEN / f"{name}.pol", to / f"{name}.pol"))


def test_cli_rewrites_changed_files_in_place(tmp_path: Path) -> None:
    """`pol fmt DIR` rewrites the files that change, names them on stderr, and leaves formatted files alone."""
    messy = _copy_golden("spacing", tmp_path / "set" / "sub")
    tidy = tmp_path / "set" / "tidy.pol"
    shutil.copy(GOLDEN / "spacing.expected.pol", tidy)
    os.utime(tidy, (1_000_000, 1_000_000))
    result = _pol("set", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert messy.read_text(encoding="utf-8") == (GOLDEN / "spacing.expected.pol").read_text(encoding="utf-8")
    assert result.stderr.decode() == f"formatted {Path('set/sub/spacing.pol')}\n"
    assert result.stdout == b""
    assert tidy.stat().st_mtime == 1_000_000


def test_cli_default_path_is_the_current_directory(tmp_path: Path) -> None:
    """`pol fmt` without a PATH formats the .pol files under the current directory, hidden directories left out."""
    messy = _copy_golden("indentation", tmp_path)
    hidden = _copy_golden("indentation", tmp_path / ".hidden")
    result = _pol(cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert messy.read_text(encoding="utf-8") == (GOLDEN / "indentation.expected.pol").read_text(encoding="utf-8")
    assert hidden.read_text(encoding="utf-8") == (GOLDEN / "indentation.pol").read_text(encoding="utf-8")


def test_cli_exclude(tmp_path: Path) -> None:
    """`--exclude GLOB` leaves matching files and directories out of a directory walk."""
    kept = _copy_golden("indentation", tmp_path / "a")
    skipped = _copy_golden("indentation", tmp_path / "golden")
    result = _pol("--check", "--exclude", "golden", ".", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.decode().splitlines() == [str(kept.relative_to(tmp_path))]
    assert skipped.exists()


def test_cli_check(tmp_path: Path) -> None:
    """`--check` writes nothing, lists the files that would change and exits 1; 0 once they are formatted."""
    messy = _copy_golden("comments", tmp_path / "set")
    shutil.copy(GOLDEN / "comments.expected.pol", tmp_path / "set" / "done.pol")
    before = messy.read_bytes()
    result = _pol("--check", "set", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.decode() == f"{Path('set/comments.pol')}\n"
    assert messy.read_bytes() == before
    assert _pol("set", cwd=tmp_path).returncode == 0
    again = _pol("--check", "set", cwd=tmp_path)
    assert (again.returncode, again.stdout) == (0, b"")


def test_cli_diff(tmp_path: Path) -> None:
    """`--diff` prints a unified diff (golden), writes nothing and exits 1."""
    messy = _copy_golden("spacing", tmp_path)
    before = messy.read_bytes()
    result = _pol("--diff", "spacing.pol", cwd=tmp_path)
    golden = GOLDEN / "spacing.expected.diff"
    if UPDATE:
        golden.write_bytes(result.stdout)
    assert result.returncode == 1, result.stderr.decode()
    assert result.stdout.decode() == golden.read_text(encoding="utf-8")
    assert messy.read_bytes() == before
    tidy = tmp_path / "tidy.pol"
    shutil.copy(GOLDEN / "spacing.expected.pol", tidy)
    clean = _pol("--diff", "tidy.pol", cwd=tmp_path)
    assert (clean.returncode, clean.stdout) == (0, b"")


def test_cli_stdin_to_stdout(tmp_path: Path) -> None:
    """`pol fmt -` reads standard input and writes the formatted text to standard output."""
    result = _pol("-", cwd=tmp_path, stdin=(GOLDEN / "escapes.pol").read_bytes())
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == (GOLDEN / "escapes.expected.pol").read_bytes()
    check = _pol("--check", "-", cwd=tmp_path, stdin=(GOLDEN / "escapes.pol").read_bytes())
    assert (check.returncode, check.stdout) == (1, b"<stdin>\n")


def test_cli_syntax_error_is_reported_and_others_still_formatted(tmp_path: Path) -> None:
    """A file with syntax errors is left alone with its diagnostics on stderr; the others are formatted; exit 1."""
    broken_text = 'policy p for content {\n  rule r {\n    when a && b\n    then remove\n  }\n}\n'
    broken = tmp_path / "set" / "a_broken.pol"
    broken.parent.mkdir()
    broken.write_text(broken_text, encoding="utf-8")
    messy = _copy_golden("one_line", tmp_path / "set")
    result = _pol("set", cwd=tmp_path)
    assert result.returncode == 1
    path = str(Path("set/a_broken.pol"))
    _, _, diags = parse_text(path, broken_text)
    assert result.stderr.decode() == engine.render_all(diags) + "\n\n" + f"formatted {Path('set/one_line.pol')}\n"
    assert broken.read_text(encoding="utf-8") == broken_text
    assert messy.read_text(encoding="utf-8") == (GOLDEN / "one_line.expected.pol").read_text(encoding="utf-8")


def test_cli_not_utf8_is_a_diagnostic(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported with P006 and left alone; exit 1."""
    (tmp_path / "bad.pol").write_bytes(b'let a = "\xff"\n')
    result = _pol("bad.pol", cwd=tmp_path)
    assert result.returncode == 1
    assert "error[P006]" in result.stderr.decode()


def test_cli_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    """A PATH that does not exist exits 2 with a one-line message and no traceback."""
    result = _pol("nope.pol", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.decode() == "pol fmt: nope.pol: no such file or directory\n"
    assert result.stdout == b""


def test_repository_is_formatted() -> None:
    """Every committed .pol file that is meant to parse is already formatted: `pol fmt --check` exits 0."""
    try:
        listed = subprocess.run(["git", "ls-files", "*.pol"], cwd=ROOT, capture_output=True, check=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    messy = {f"tests/golden/fmt/{n}.pol" for n in MESSY}
    files = [f for f in listed if not f.startswith("tests/golden/diagnostics/") and f not in messy]
    assert files
    result = _pol("--check", *files, cwd=ROOT)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
