"""Tests written in the language: run a set's `test` blocks, report per case and coverage."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from . import ast
from .diagnostics import Diagnostic
from .evaluate import PolicyDecision
from .policyset import PolicySet
from .source import Span
from .validate import InputError, literal_value

__all__ = ["CaseResult", "Coverage", "TestReport", "run_tests"]


@dataclass(frozen=True)
class CaseResult:
    policy: str
    name: str
    span: Span
    expect: ast.Expect
    passed: bool
    failure: str | None  # what differed, for a person
    decision: PolicyDecision | None  # None when the input was rejected

    @property
    def id(self) -> str:
        return f"{self.policy}/{self.name}"


@dataclass
class Coverage:
    policy: str
    rules: tuple[str, ...]  # every rule, shadow rules included, in file order
    decided: set[str] = field(default_factory=set)
    matched: set[str] = field(default_factory=set)

    @property
    def covered(self) -> list[str]:
        return [r for r in self.rules if r in self.decided or r in self.matched]

    @property
    def uncovered(self) -> list[str]:
        return [r for r in self.rules if r not in self.decided and r not in self.matched]

    @property
    def percent(self) -> float:
        return 100.0 * len(self.covered) / len(self.rules) if self.rules else 100.0


@dataclass
class TestReport:
    cases: list[CaseResult]
    coverage: dict[str, Coverage]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    @property
    def percent(self) -> float:
        total = sum(len(c.rules) for c in self.coverage.values())
        covered = sum(len(c.covered) for c in self.coverage.values())
        return 100.0 * covered / total if total else 100.0

    def uncovered_diagnostics(self, policy_set: PolicySet) -> list[Diagnostic]:
        """W204 for each rule that no case exercised."""
        out = []
        for name, cov in self.coverage.items():
            policy = policy_set.policies[name]
            spans = {r.name: r.span for r in policy.rules}
            for rule in cov.uncovered:
                out.append(Diagnostic("W204", f"rule `{rule}` of policy `{name}` is not exercised by any test case", spans[rule], help="add a `case` in which it matches"))
        return out


def run_tests(policy_set: PolicySet, pattern: str | None = None) -> TestReport:
    """Run every case (or those whose `policy/case name` matches the glob `pattern`)."""
    cases: list[CaseResult] = []
    coverage = {
        name: Coverage(name, tuple(r.name for r in p.rules)) for name, p in sorted(policy_set.policies.items())
    }
    for test, _path in policy_set.tests:
        for case in test.cases:
            if pattern and not fnmatch.fnmatchcase(f"{test.policy}/{case.name}", pattern) and pattern not in case.name:
                continue
            result = run_case(policy_set, test.policy, case)
            cases.append(result)
            if result.decision is not None:
                cov = coverage[test.policy]
                cov.decided.add(result.decision.rule)
                cov.matched.update(j.rule for j in result.decision.justifications)
                cov.matched.update(j.rule for j in result.decision.shadow)
    return TestReport(cases, coverage)


def run_case(policy_set: PolicySet, policy: str, case: ast.Case) -> CaseResult:
    given = literal_value(case.given)
    expect = case.expect
    try:
        decision = policy_set.evaluate(given, [policy]).policies[0]
    except InputError as e:
        return CaseResult(policy, case.name, case.span, expect, False, f"input rejected: {e}", None)
    problems = []
    if decision.verdict != expect.verdict:
        problems.append(f"expected {expect.verdict}, got {decision.verdict}")
    if expect.interventions:
        got = sorted({i.name for i in decision.interventions})
        if sorted(set(expect.interventions)) != got:
            problems.append(f"expected interventions {', '.join(expect.interventions)}, got {', '.join(got) or 'none'}")
    if expect.by is not None and decision.rule != expect.by:
        problems.append(f"expected the deciding rule `{expect.by}`, got `{decision.rule}`")
    return CaseResult(policy, case.name, case.span, expect, not problems, "; ".join(problems) or None, decision)
