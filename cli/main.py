"""`pol`: argument parsing and exit statuses shared by every verb.

Exit status everywhere: 0 clean, 1 problems found (errors, failing tests),
2 usage or I/O error, always with a one-line message and never a traceback.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with how pol was called or what it was pointed at (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pol", description="Policy-as-code decisions for content moderation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="report every diagnostic of policy sets")
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.add_argument("--strict", action="store_true", help="warnings fail too")

    test = sub.add_parser("test", help="run the test blocks of policy sets")
    test.add_argument("paths", nargs="+", metavar="PATH")
    test.add_argument("--run", metavar="PATTERN", help="only cases whose `policy/case` matches this glob")
    test.add_argument("--min-coverage", type=float, metavar="PCT", help="fail below this rule coverage")

    ev = sub.add_parser("eval", help="decide annotated content (JSON) with a policy set")
    ev.add_argument("input", nargs="?", default="-", metavar="FILE", help="JSON file, or - for stdin (default)")
    ev.add_argument("--policies", default="policies", metavar="DIR")
    ev.add_argument("--policy", action="append", default=[], metavar="NAME", help="decide with this policy only (repeatable)")
    ev.add_argument("--jsonl", action="store_true", help="one JSON object per line in, one decision per line out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            from .check import run
        elif args.command == "test":
            from .test import run
        else:
            from .eval import run
        return run(args)
    except UsageError as e:
        print(f"pol {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def load(path: str):
    """Check and compile a policy set, turning unreadable paths into usage errors."""
    import engine

    try:
        return engine.load_path(path)
    except engine.LoadError as e:
        raise UsageError(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
