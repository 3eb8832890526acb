"""pol's engine: policy text in, decisions out. No gRPC, no network.

The public face, used by the CLI and the server::

    result = engine.load_path("policies")      # CheckResult: diagnostics + PolicySet or None
    ps = engine.load("policies")               # PolicySet, or PolicyError with every diagnostic
    ps = engine.compile_sources({"a.pol": text}).policy_set
    decision = ps.evaluate({"topic": "migration", ...}, policies=["human_smuggling"])
    decision.verdict, decision.justifications, decision.to_dict()
    report = engine.run_tests(ps)              # per-case results and rule coverage
    print(engine.render_all(result.diagnostics))
"""

from .diagnostics import CODES, Diagnostic, Severity, render, render_all
from .evaluate import (
    Condition,
    Decision,
    DecisionWarning,
    Intervention,
    Justification,
    PolicyDecision,
)
from .policyset import (
    CheckResult,
    LoadError,
    PolicyError,
    PolicySet,
    UnknownPolicyError,
    compile_sources,
    load,
    load_path,
)
from .testing import CaseResult, Coverage, TestReport, run_tests
from .validate import InputError, Violation

__all__ = [
    "CODES",
    "CaseResult",
    "CheckResult",
    "Condition",
    "Coverage",
    "Decision",
    "DecisionWarning",
    "Diagnostic",
    "InputError",
    "Intervention",
    "Justification",
    "LoadError",
    "PolicyDecision",
    "PolicyError",
    "PolicySet",
    "Severity",
    "TestReport",
    "UnknownPolicyError",
    "Violation",
    "compile_sources",
    "load",
    "load_path",
    "render",
    "render_all",
    "run_tests",
]
