"""`pol test`: run `test` blocks; show each failure with the decision that was made.

Rule coverage: a rule is covered when it decided, or matched, in at least one case;
`--min-coverage` fails the run below a percentage. Formats: `text` for people, `json`
and `junit` for CI (schemas in docs/ci.md). A set that does not compile is reported
with its diagnostics and fails the run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from . import output
from .main import EXIT_OK, EXIT_PROBLEMS, UsageError, load

HELP = "run the test blocks of policy sets"
FORMATS = ("text", "json", "junit")
#: Version of the `--format json` document; bumped only for an incompatible change.
JSON_VERSION = 1


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a policy directory, or a .pol file and what it imports")
    parser.add_argument("--run", metavar="PATTERN", help="only cases whose `policy/case name` matches this glob, or whose name contains it")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument("--min-coverage", type=_percent, metavar="PCT", help="fail when rule coverage is below PCT (0-100)")
    output.add_color_argument(parser)


def _percent(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, not {text}")
    return value


@dataclass
class _Set:
    """One PATH: its diagnostics when it did not compile, else its test report."""

    path: str
    relocate: output.Relocator
    result: object  # engine.CheckResult
    report: object | None  # engine.TestReport, None when the set did not compile


@dataclass
class _Outcome:
    sets: list[_Set]
    cases: int
    failed: int
    broken: int  # sets that did not compile
    rules: int
    covered: int
    min_coverage: float | None

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.rules if self.rules else 100.0

    @property
    def below_minimum(self) -> bool:
        return self.min_coverage is not None and self.percent < self.min_coverage

    @property
    def ok(self) -> bool:
        return not (self.failed or self.broken or self.below_minimum)


def run(args) -> int:
    import engine

    sets = []
    for path in args.paths:  # load every set before printing anything: a bad PATH is exit 2, alone
        result = load(path)
        report = engine.run_tests(result.policy_set, args.run) if result.ok else None
        sets.append(_Set(path, output.Relocator(path, result.sources), result, report))
    reports = [s.report for s in sets if s.report is not None]
    outcome = _Outcome(
        sets=sets,
        cases=sum(len(r.cases) for r in reports),
        failed=sum(len(r.failures) for r in reports),
        broken=len(sets) - len(reports),
        rules=sum(len(c.rules) for r in reports for c in r.coverage.values()),
        covered=sum(len(c.covered) for r in reports for c in r.coverage.values()),
        min_coverage=args.min_coverage,
    )
    if args.run and not outcome.cases and not outcome.broken:
        raise UsageError(f"no test case matches --run {args.run!r}")
    sys.stdout.write(_FORMATTERS[args.format](args, outcome))
    if args.format != "text" and outcome.below_minimum:
        print(_below_minimum(outcome), file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_PROBLEMS


def _below_minimum(outcome: _Outcome) -> str:
    return f"rule coverage {outcome.percent:.1f}% is below --min-coverage {outcome.min_coverage:g}%"


# ---------------------------------------------------------------------------------------
# What a case expected and what it got, in the syntax of `expect`
# ---------------------------------------------------------------------------------------


def _expected(case) -> str:
    e = case.expect
    return " ".join([e.verdict, *e.interventions, *(["by", e.by] if e.by else [])])


def _intervention_names(decision) -> list[str]:
    return list(dict.fromkeys(i.name for i in decision.interventions))


def _actual(case) -> str:
    d = case.decision
    return " ".join([d.verdict, *_intervention_names(d), "by", d.rule])


def _value(v) -> str:
    import json

    return json.dumps(v, ensure_ascii=False)


def _justification_lines(decision) -> list[str]:
    """Why the decision was made: each matching rule, its reason, each condition with the values read."""
    lines = []
    groups = [("decided" if j.deciding else "matched", j) for j in decision.justifications]
    groups += [("shadow", j) for j in decision.shadow]
    for label, j in groups:
        lines.append(f"{label}: {j.rule} -> {j.verdict}: {_value(j.reason)}")
        for c in j.conditions:
            held = {True: "held", False: "did not hold", None: "could not be evaluated"}[c.held]
            seen = ", ".join(f"{k} = {_value(v)}" for k, v in c.to_dict()["observed"].items())
            lines.append(f"  {held}: {c.expression}" + (f"  ({seen})" if seen else ""))
    return lines


def _failure_lines(case) -> list[str]:
    """The failure of a case for a person: what differed, expected against actual, and why."""
    lines = [case.failure or "failed", f"expected: {_expected(case)}"]
    if case.decision is not None:
        lines.append(f"actual:   {_actual(case)}")
        lines.extend(_justification_lines(case.decision))
    return lines


def _location(s: _Set, case) -> tuple[str, int]:
    return s.relocate.path(case.span.path), case.span.line


# ---------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------


def _text(args, outcome: _Outcome) -> str:
    color = output.use_color(args.color)
    out: list[str] = []
    for s in outcome.sets:
        if s.report is None:
            out.append("\n\n".join(output.render_diagnostic(s.relocate.diagnostic(d), color) for d in s.result.diagnostics) + "\n\n")
            out.append(f"{s.path}: not compiled because of errors; no test ran\n")
            continue
        for case in s.report.cases:
            path, line = _location(s, case)
            status = output.paint("ok  ", "ok", color) if case.passed else output.paint("FAIL", "fail", color)
            out.append(f"{status} {case.policy} / {case.name}  ({path}:{line})\n")
            if not case.passed:
                out.extend(f"     {text}\n" for text in _failure_lines(case))
        uncovered = [s.relocate.diagnostic(d) for d in s.report.uncovered_diagnostics(s.result.policy_set)]
        if uncovered:
            out.append("\n" + "\n\n".join(output.render_diagnostic(d, color) for d in uncovered) + "\n")
        out.append("\n")
        for name, cov in s.report.coverage.items():
            out.append(f"coverage {name}: {cov.percent:.0f}% of rules ({len(cov.covered)}/{len(cov.rules)})\n")
    if outcome.below_minimum:
        out.append(_below_minimum(outcome) + "\n")
    out.append(f"{outcome.cases - outcome.failed} passed, {outcome.failed} failed\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------
# json
# ---------------------------------------------------------------------------------------


def _json(args, outcome: _Outcome) -> str:
    import json

    cases, coverage, diagnostics = [], [], []
    for s in outcome.sets:
        if s.report is None:
            diagnostics.extend(s.relocate.diagnostic(d).to_dict() for d in s.result.diagnostics)
            continue
        for case in s.report.cases:
            path, line = _location(s, case)
            e = case.expect
            actual = None
            if case.decision is not None:
                d = case.decision
                actual = {
                    "verdict": d.verdict,
                    "rule": d.rule,
                    "interventions": _intervention_names(d),
                    "justifications": [j.to_dict() for j in d.justifications],
                    "shadow": [j.to_dict() for j in d.shadow],
                }
            cases.append(
                {
                    "policy": case.policy,
                    "name": case.name,
                    "path": path,
                    "line": line,
                    "passed": case.passed,
                    "failure": case.failure,
                    "expected": {"verdict": e.verdict, "interventions": list(e.interventions), "rule": e.by},
                    "actual": actual,
                }
            )
        for name, cov in s.report.coverage.items():
            coverage.append(
                {
                    "policy": name,
                    "path": s.relocate.path(s.result.policy_set.policies[name].path),
                    "rules": list(cov.rules),
                    "decided": [r for r in cov.rules if r in cov.decided],
                    "covered": cov.covered,
                    "uncovered": cov.uncovered,
                    "percent": round(cov.percent, 2),
                }
            )
    document = {
        "version": JSON_VERSION,
        "cases": cases,
        "coverage": coverage,
        "diagnostics": diagnostics,
        "summary": {
            "cases": outcome.cases,
            "passed": outcome.cases - outcome.failed,
            "failed": outcome.failed,
            "errors": sum(1 for d in diagnostics if d["severity"] == "error"),
            "coverage": round(outcome.percent, 2),
            "min_coverage": outcome.min_coverage,
            "ok": outcome.ok,
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------
# junit
# ---------------------------------------------------------------------------------------


def _junit(args, outcome: _Outcome) -> str:
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="pol test")
    total = failures = errors = 0
    for s in outcome.sets:
        if s.report is None:
            errs = s.result.errors
            suite = ET.SubElement(root, "testsuite", name=s.path, tests="1", failures="0", errors="1", skipped="0")
            case = ET.SubElement(suite, "testcase", classname=s.path, name="compile")
            rendered = "\n\n".join(output.render_diagnostic(s.relocate.diagnostic(d), False) for d in s.result.diagnostics)
            error = ET.SubElement(case, "error", message=f"policy set has {output.plural(len(errs), 'error')}", type="pol.check")
            error.text = _xml_text(rendered)
            total, errors = total + 1, errors + 1
            continue
        by_policy: dict[str, list] = {name: [] for name in s.report.coverage}
        for case in s.report.cases:
            by_policy.setdefault(case.policy, []).append(case)
        for name, cases in by_policy.items():
            failed = sum(not c.passed for c in cases)
            suite = ET.SubElement(root, "testsuite", name=name, tests=str(len(cases)), failures=str(failed), errors="0", skipped="0")
            cov = s.report.coverage.get(name)
            if cov is not None:
                suite.set("file", s.relocate.path(s.result.policy_set.policies[name].path))
                props = ET.SubElement(suite, "properties")
                for key, value in (
                    ("coverage.percent", f"{cov.percent:.2f}"),
                    ("coverage.rules", str(len(cov.rules))),
                    ("coverage.covered", ",".join(cov.covered)),
                    ("coverage.uncovered", ",".join(cov.uncovered)),
                ):
                    ET.SubElement(props, "property", name=key, value=value)
            for c in cases:
                path, line = _location(s, c)
                case = ET.SubElement(suite, "testcase", classname=name, name=_xml_text(c.name), file=path, line=str(line))
                if not c.passed:
                    failure = ET.SubElement(case, "failure", message=_xml_text(c.failure or "failed"), type="pol.expect")
                    failure.text = _xml_text("\n".join(_failure_lines(c)))
            total, failures = total + len(cases), failures + failed
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 cannot carry (control characters, lone surrogates)."""
    import re

    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", "\ufffd", text)


_FORMATTERS = {"text": _text, "json": _json, "junit": _junit}
