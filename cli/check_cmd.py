"""`pol check`: every diagnostic of one or more policy sets, sorted by location."""

from __future__ import annotations

import sys

from .main import EXIT_OK, EXIT_PROBLEMS, load

HELP = "report every diagnostic of policy sets"


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--strict", action="store_true", help="warnings fail too")


def run(args) -> int:
    import engine

    errors = warnings = 0
    for path in args.paths:
        result = load(path)
        if result.diagnostics:
            print(engine.render_all(result.diagnostics))
            print()
        errors += len(result.errors)
        warnings += len(result.warnings)
        if result.ok:
            ps = result.policy_set
            print(f"{path}: {len(ps.policies)} policies, {sum(len(p.rules) for p in ps.policies.values())} rules, {ps.hash[:19]}", file=sys.stderr)
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    failed = errors > 0 or (args.strict and warnings > 0)
    return EXIT_PROBLEMS if failed else EXIT_OK
