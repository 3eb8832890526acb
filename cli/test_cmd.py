"""`pol test`: run `test` blocks; show each failure with the decision that was made."""

from __future__ import annotations

from .main import EXIT_OK, EXIT_PROBLEMS, load

HELP = "run the test blocks of policy sets"


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--run", metavar="PATTERN", help="only cases whose `policy/case` matches this glob")
    parser.add_argument("--min-coverage", type=float, metavar="PCT", help="fail below this rule coverage")


def run(args) -> int:
    import engine

    failed = False
    for path in args.paths:
        result = load(path)
        if not result.ok:
            print(engine.render_all(result.diagnostics))
            failed = True
            continue
        ps = result.policy_set
        report = engine.run_tests(ps, args.run)
        for case in report.cases:
            line = case.span.source.line_col(case.span.start)[0]
            status = "ok  " if case.passed else "FAIL"
            print(f"{status} {case.policy} / {case.name}  ({case.span.path}:{line})")
            if not case.passed:
                print(f"     {case.failure}")
                if case.decision is not None:
                    for j in case.decision.justifications:
                        mark = "decided" if j.deciding else "matched"
                        print(f"     {mark}: {j.rule} -> {j.verdict}: {j.reason}")
                        for c in j.conditions:
                            seen = ", ".join(f"{k} = {v!r}" for k, v in c.to_dict()["observed"].items())
                            print(f"       {'held' if c.held else 'did not hold'}: {c.expression}  ({seen})")
        passed = sum(c.passed for c in report.cases)
        print(f"{passed} passed, {len(report.cases) - passed} failed")
        for name, cov in report.coverage.items():
            print(f"coverage {name}: {cov.percent:.0f}% of rules ({len(cov.covered)}/{len(cov.rules)})")
            for rule in cov.uncovered:
                print(f"  not exercised: {rule}")
        if not report.passed:
            failed = True
        if args.min_coverage is not None and report.percent < args.min_coverage:
            print(f"rule coverage {report.percent:.1f}% is below --min-coverage {args.min_coverage:g}%")
            failed = True
    return EXIT_PROBLEMS if failed else EXIT_OK
