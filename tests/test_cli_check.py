"""`pol check` as CI runs it: the real command in a subprocess, every format, exit statuses.

Golden outputs live in `tests/golden/cli/check/<case>.<format>` (stdout, exactly). The
fixtures are `tests/data/check_errors/` (errors and a warning) and
`tests/data/check_warnings/` (warnings only). After an intended change, regenerate and
review the diff:

    UPDATE_GOLDEN=1 /tmp/v/bin/python -m pytest tests/test_cli_check.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import engine
from cli.output import anchor, github_escape_data, github_escape_property

from .conftest import ROOT, assert_golden, pol

GOLDEN = ROOT / "tests" / "golden" / "cli" / "check"
SARIF_SCHEMA = ROOT / "tests" / "data" / "sarif-schema-2.1.0.json"

SETS = {
    "shipped": "policies",
    "errors": "tests/data/check_errors",
    "warnings": "tests/data/check_warnings",
}
EXIT = {"shipped": 0, "errors": 1, "warnings": 0}
ANSI = re.compile(r"\x1b\[[0-9;]*m")




@pytest.mark.parametrize("fmt", ["text", "json", "github"])
@pytest.mark.parametrize("case", sorted(SETS))
def test_golden_output(case: str, fmt: str) -> None:
    """Each format's exact stdout for the shipped set and both fixtures, with the exit status."""
    result = pol("check", "--format", fmt, SETS[case])
    assert result.returncode == EXIT[case], result.stderr
    assert result.stderr == ""
    assert_golden(GOLDEN / f"{case}.{fmt}", result.stdout)


def test_shipped_set_is_clean() -> None:
    """The shipped policies have no diagnostic at all, warnings included."""
    result = pol("check", "--strict", "--format", "json", "policies")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["diagnostics"] == []
    assert (document["summary"]["errors"], document["summary"]["warnings"]) == (0, 0)


def test_warnings_fail_only_with_strict() -> None:
    """A set with warnings only exits 0, and 1 under --strict, in every format."""
    for fmt in ("text", "json", "github", "sarif"):
        assert pol("check", "--format", fmt, SETS["warnings"]).returncode == 0
        assert pol("check", "--strict", "--format", fmt, SETS["warnings"]).returncode == 1


def test_errors_fail_in_every_format() -> None:
    """A set with errors exits 1 whatever the format."""
    for fmt in ("text", "json", "github", "sarif"):
        assert pol("check", "--format", fmt, SETS["errors"]).returncode == 1


@pytest.mark.parametrize("fmt", ["text", "json", "github", "sarif"])
def test_missing_path_is_a_usage_error(fmt: str) -> None:
    """A PATH that does not exist: exit 2, one line on stderr, nothing on stdout, no traceback."""
    result = pol("check", "--format", fmt, "policies", "no/such/dir")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "pol check: no/such/dir: no such file or directory\n"


def test_bad_arguments_are_usage_errors() -> None:
    """An unknown format exits 2 with argparse's message, never a traceback."""
    result = pol("check", "--format", "xml", "policies")
    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_diagnostics_are_sorted_by_location_and_complete() -> None:
    """JSON carries every field of Diagnostic.to_dict plus notes, sorted by path then position."""
    document = json.loads(pol("check", "--format", "json", SETS["errors"]).stdout)
    assert document["version"] == 1
    diagnostics = document["diagnostics"]
    keys = ["path", "line", "column", "end_line", "end_column", "severity", "code", "message", "help", "notes"]
    assert all(list(d) == keys for d in diagnostics)
    assert diagnostics == sorted(diagnostics, key=lambda d: (d["path"], d["line"], d["column"]))
    assert document["summary"] == {
        "errors": sum(d["severity"] == "error" for d in diagnostics),
        "warnings": sum(d["severity"] == "warning" for d in diagnostics),
        "files": 4,
    }
    duplicate = next(d for d in diagnostics if d["code"] == "E105")
    assert duplicate["notes"] == [{"message": "first declared here", "path": "tests/data/check_errors/smuggling.pol", "line": 3, "column": 8}]


def test_paths_name_real_files() -> None:
    """Every path printed is the PATH argument joined with the file, so it opens from the repo root."""
    for path in ("tests/data/check_errors", "tests/data/check_errors/", "./tests/data/check_errors"):
        out = pol("check", "--format", "github", path).stdout
        files = set(re.findall(r"file=([^,]+),", out))
        assert files == {"tests/data/check_errors/minors.pol", "tests/data/check_errors/notes.pol", "tests/data/check_errors/smuggling.pol"}
        assert all((ROOT / f).is_file() for f in files)


def test_a_file_path_is_joined_with_its_directory() -> None:
    """`pol check DIR/FILE.pol` reports `DIR/FILE.pol`, not the bare file name."""
    out = pol("check", "--format", "json", "tests/data/check_errors/minors.pol").stdout
    assert {d["path"] for d in json.loads(out)["diagnostics"]} == {"tests/data/check_errors/minors.pol"}


def test_several_paths_are_merged_and_sorted() -> None:
    """Two PATHs give one sorted list; the text summary has a line per PATH."""
    result = pol("check", SETS["warnings"], SETS["errors"])
    assert result.returncode == 1
    headers = [line.split(": ")[0] for line in result.stdout.splitlines() if re.match(r"^tests/\S+:\d+:\d+: ", line)]
    assert headers == sorted(headers, key=lambda h: (h.split(":")[0], int(h.split(":")[1]), int(h.split(":")[2])))
    assert "tests/data/check_warnings: 2 files, 1 policy, 2 rules\n" in result.stdout
    assert "tests/data/check_errors: 4 files, not compiled because of errors\n" in result.stdout


def test_github_annotations_escape_per_the_toolkit_rules() -> None:
    """Data escapes %, CR and LF; properties also `:` and `,`; a help line is a %0A away."""
    assert github_escape_data("50% off\r\nnext: a, b") == "50%25 off%0D%0Anext: a, b"
    assert github_escape_property("dir:a,b%/x.pol\n") == "dir%3Aa%2Cb%25/x.pol%0A"
    out = pol("check", "--format", "github", SETS["errors"]).stdout
    lines = out.splitlines()
    assert all(re.match(r"^::(error|warning) file=[^:]+,line=\d+,(col=\d+,)?endLine=\d+,(endColumn=\d+,)?title=[PEW]\d{3}::\S", line) for line in lines)
    assert '::error file=tests/data/check_errors/smuggling.pol,line=16,col=19,endLine=16,endColumn=27,title=E102::"50%25 of" is not a value' in out
    assert all("\n" not in line and "\r" not in line for line in lines)


def _sarif_validator():
    import jsonschema

    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


@pytest.mark.parametrize("case", sorted(SETS))
def test_sarif_validates_against_the_schema(case: str) -> None:
    """SARIF output for each set is valid SARIF 2.1.0 (the OASIS JSON schema)."""
    result = pol("check", "--format", "sarif", SETS[case])
    assert result.returncode == EXIT[case]
    log = json.loads(result.stdout)
    errors = sorted(_sarif_validator().iter_errors(log), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])


def test_sarif_run_describes_every_code_and_result() -> None:
    """One run by `pol`, a rule per engine code, results with rule, level, message and region."""
    log = json.loads(pol("check", "--format", "sarif", SETS["errors"]).stdout)
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "pol"
    assert [r["id"] for r in driver["rules"]] == list(engine.CODES)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] == engine.CODES[rule["id"]][1]
        assert rule["defaultConfiguration"]["level"] == engine.CODES[rule["id"]][0].value
        assert "helpUri" not in rule  # relative URIs are rejected by code scanning: only with --docs-url
        assert f"docs/errors.md#{anchor(rule['id'])}" in rule["help"]["text"]
    expected = json.loads(pol("check", "--format", "json", SETS["errors"]).stdout)["diagnostics"]
    assert len(run["results"]) == len(expected)
    for result, d in zip(run["results"], expected):
        assert result["ruleId"] == d["code"]
        assert driver["rules"][result["ruleIndex"]]["id"] == d["code"]
        assert result["level"] == d["severity"]
        assert result["message"]["text"].startswith(d["message"])
        [location] = result["locations"]
        assert location["physicalLocation"]["artifactLocation"] == {"uri": d["path"]}
        assert (ROOT / d["path"]).is_file()
        assert location["physicalLocation"]["region"] == {
            "startLine": d["line"],
            "startColumn": d["column"],
            "endLine": d["end_line"],
            "endColumn": d["end_column"],
        }


def test_sarif_help_uri_with_docs_url() -> None:
    """--docs-url gives each rule an absolute helpUri at its section of docs/errors.md."""
    base = "https://example.org/pol/blob/main/docs/errors.md"
    log = json.loads(pol("check", "--format", "sarif", "--docs-url", base, "policies").stdout)
    assert not list(_sarif_validator().iter_errors(log))
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert {r["id"]: r["helpUri"] for r in rules}["E104"] == base + "#e104-missing-because"


def test_rule_anchors_exist_in_the_error_reference() -> None:
    """Every code's anchor is the GitHub anchor of its `### CODE: title` heading in docs/errors.md."""
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    headings = re.findall(r"^### (.+)$", text, re.M)
    slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    missing = [code for code in engine.CODES if anchor(code) not in slugs]
    assert not missing


def test_color_always_colours_severity_and_code() -> None:
    """--color always wraps `severity[CODE]` in ANSI colour; the text is otherwise unchanged."""
    plain = pol("check", SETS["errors"]).stdout
    coloured = pol("check", "--color", "always", SETS["errors"]).stdout
    assert "\x1b[1;31merror[E104]\x1b[0m" in coloured
    assert "\x1b[1;33mwarning[W205]\x1b[0m" in coloured
    assert ANSI.sub("", coloured) == plain


def test_no_color_when_piped() -> None:
    """Piped stdout (the default --color auto) carries no escape sequence."""
    assert "\x1b[" not in pol("check", SETS["errors"]).stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False)])
def test_terminal_colour_respects_no_color(no_color: str | None, coloured: bool) -> None:
    """On a terminal, colour is on unless NO_COLOR is set; --color never always wins."""
    import pty

    def on_tty(*args: str) -> str:
        main, child = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"PYTHONPATH": str(ROOT)}
        if no_color:
            env["NO_COLOR"] = no_color
        proc = subprocess.Popen([sys.executable, "-m", "cli", "check", *args], cwd=ROOT, env=env, stdout=child, stderr=subprocess.DEVNULL)
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=60)
        os.close(main)
        return b"".join(chunks).decode()

    assert ("\x1b[1;31merror[E104]" in on_tty(SETS["errors"])) == coloured
    assert "\x1b[" not in on_tty("--color", "never", SETS["errors"])
