"""`pol test` as CI runs it: the real command in a subprocess; failures, coverage, formats.

Golden outputs live in `tests/golden/cli/test/<case>.<format>` (stdout, exactly). The
fixture `tests/data/test_failing/` has two passing and three failing cases (verdict,
interventions, deciding rule) and a rule no case reaches. After an intended change,
regenerate and review the diff:

    UPDATE_GOLDEN=1 /tmp/v/bin/python -m pytest tests/test_cli_test.py
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from .conftest import ROOT, assert_golden, pol

GOLDEN = ROOT / "tests" / "golden" / "cli" / "test"
FAILING = "tests/data/test_failing"




@pytest.mark.parametrize("fmt", ["text", "json", "junit"])
def test_failing_fixture_golden(fmt: str) -> None:
    """Each format's exact stdout for the failing fixture; failures exit 1."""
    result = pol("test", "--format", fmt, FAILING)
    assert result.returncode == 1
    assert result.stderr == ""
    assert_golden(GOLDEN / f"failing.{fmt}", result.stdout)


def test_shipped_tests_pass_with_full_coverage() -> None:
    """`pol test policies` passes, every rule is covered, and --min-coverage 100 holds."""
    result = pol("test", "policies")
    assert result.returncode == 0, result.stdout
    assert "W204" not in result.stdout
    assert result.stdout.endswith(" passed, 0 failed\n")
    assert pol("test", "--min-coverage", "100", "policies").returncode == 0
    summary = json.loads(pol("test", "--format", "json", "policies").stdout)["summary"]
    assert summary["failed"] == 0 and summary["cases"] > 0
    assert summary["coverage"] == 100.0 and summary["ok"] is True


def test_failure_shows_expected_actual_and_justification() -> None:
    """A failing case shows what differed, expected against actual, and each condition with its value."""
    out = pol("test", FAILING).stdout
    block = out.split("FAIL smuggling / offer below the threshold is removed  (tests/data/test_failing/tests.pol:8)\n")[1]
    lines = block.splitlines()[:7]
    assert lines == [
        "     expected remove, got intervene",
        "     expected: remove",
        "     actual:   intervene queue_review by low_confidence_offer",
        '     decided: low_confidence_offer -> intervene: "A possible offer goes to review."',
        '       held: topic == "human_smuggling"  (topic = "human_smuggling")',
        '       held: intent == "offer"  (intent = "offer")',
        "       held: confidence < 0.8  (confidence = 0.5)",
    ]


def test_uncovered_rules_are_w204_diagnostics_in_text() -> None:
    """Rules no case reached are printed as W204 warnings at the rule, with the joined path."""
    out = pol("test", FAILING).stdout
    assert "tests/data/test_failing/smuggling.pol:23:3: warning[W204]: rule `solicit` of policy `smuggling` is not exercised by any test case\n" in out
    assert "coverage smuggling: 75% of rules (3/4)\n" in out


def test_json_cases_and_coverage() -> None:
    """JSON lists every case with expected and actual, and coverage per policy."""
    document = json.loads(pol("test", "--format", "json", FAILING).stdout)
    assert document["version"] == 1
    assert [(c["policy"], c["passed"]) for c in document["cases"]] == [
        ("smuggling", True),
        ("smuggling", False),
        ("smuggling", False),
        ("smuggling", False),
        ("spam", True),
    ]
    wrong_rule = document["cases"][3]
    assert wrong_rule["expected"] == {"verdict": "remove", "interventions": [], "rule": "near_certain_offer"}
    assert {k: wrong_rule["actual"][k] for k in ("verdict", "rule", "interventions")} == {"verdict": "remove", "rule": "offer", "interventions": []}
    assert [j["rule"] for j in wrong_rule["actual"]["justifications"]] == ["offer", "near_certain_offer"]
    coverage = {c["policy"]: c for c in document["coverage"]}
    assert coverage["smuggling"]["uncovered"] == ["solicit"]
    assert coverage["smuggling"]["percent"] == 75.0
    assert document["summary"] == {"cases": 5, "passed": 2, "failed": 3, "errors": 0, "coverage": 80.0, "min_coverage": None, "ok": False}


def test_junit_parses_and_counts() -> None:
    """JUnit XML: a testsuite per policy, a testcase per case, a failure element per failing case."""
    root = ET.fromstring(pol("test", "--format", "junit", FAILING).stdout)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "3", "0")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"smuggling", "spam"}
    cases = list(root.iter("testcase"))
    assert len(cases) == 5
    assert all(c.get("classname") in suites and c.get("file") == "tests/data/test_failing/tests.pol" and int(c.get("line")) > 0 for c in cases)
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert len(failures) == 3
    assert failures[0].get("message") == "expected remove, got intervene"
    assert "decided: low_confidence_offer -> intervene" in failures[0].text
    props = {p.get("name"): p.get("value") for p in suites["smuggling"].iter("property")}
    assert props == {"coverage.percent": "75.00", "coverage.rules": "4", "coverage.covered": "offer,low_confidence_offer,near_certain_offer", "coverage.uncovered": "solicit"}


def test_junit_for_the_shipped_set() -> None:
    """The shipped set's JUnit report parses, with no failure and full coverage."""
    result = pol("test", "--format", "junit", "policies")
    assert result.returncode == 0
    root = ET.fromstring(result.stdout)
    assert root.get("failures") == "0" and int(root.get("tests")) > 0
    assert {p.get("name"): p.get("value") for p in root.iter("property")}["coverage.percent"] == "100.00"


def test_run_filters_cases() -> None:
    """--run keeps the cases whose `policy/case` matches the glob, or whose name contains it."""
    result = pol("test", "--format", "json", "--run", "spam/*", FAILING)
    assert result.returncode == 0
    assert [c["name"] for c in json.loads(result.stdout)["cases"]] == ["spam is removed"]
    result = pol("test", "--format", "json", "--run", "wrong queue", FAILING)
    assert result.returncode == 1
    assert [c["name"] for c in json.loads(result.stdout)["cases"]] == ["offer below the threshold goes to the wrong queue"]


def test_run_matching_nothing_is_a_usage_error() -> None:
    """A --run pattern that selects no case is a mistake: exit 2 with one line."""
    result = pol("test", "--run", "no such case", "policies")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "pol test: no test case matches --run 'no such case'\n"


def test_min_coverage_below_fails() -> None:
    """Coverage under --min-coverage exits 1 and says so; at or above it, 0."""
    args = ("test", "--run", "*minor*", "policies")  # the minor cases leave rules uncovered
    assert pol(*args).returncode == 0
    result = pol(*args, "--min-coverage", "100")
    assert result.returncode == 1
    assert "is below --min-coverage 100%" in result.stdout
    junit = pol(*args[:-1], "--format", "junit", "--min-coverage", "100", "policies")
    assert junit.returncode == 1
    assert "is below --min-coverage 100%" in junit.stderr
    percent = json.loads(pol(*args, "--format", "json").stdout)["summary"]["coverage"]
    assert 0 < percent < 100
    assert pol(*args, "--min-coverage", str(percent)).returncode == 0


def test_min_coverage_out_of_range_is_a_usage_error() -> None:
    """--min-coverage takes a percentage from 0 to 100."""
    result = pol("test", "--min-coverage", "150", "policies")
    assert result.returncode == 2
    assert "must be between 0 and 100" in result.stderr


def test_set_with_errors_prints_diagnostics_and_fails() -> None:
    """A set that does not compile: its diagnostics, no case run, exit 1 (JSON and JUnit say so too)."""
    result = pol("test", "tests/data/check_errors")
    assert result.returncode == 1
    assert "tests/data/check_errors/minors.pol:3:8: error[E104]: rule `minors` has no `because`\n" in result.stdout
    document = json.loads(pol("test", "--format", "json", "tests/data/check_errors").stdout)
    assert document["cases"] == [] and document["summary"]["errors"] == 6 and document["summary"]["ok"] is False
    root = ET.fromstring(pol("test", "--format", "junit", "tests/data/check_errors").stdout)
    assert root.get("errors") == "1"
    assert "error[E104]" in root.find("testsuite/testcase/error").text


def test_missing_path_is_a_usage_error() -> None:
    """A PATH that does not exist: exit 2, one line on stderr, no traceback."""
    result = pol("test", "no/such/dir")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "pol test: no/such/dir: no such file or directory\n"
