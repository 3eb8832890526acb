"""`pol`: argument parsing and exit statuses shared by every verb.

Each verb is a module of this package with `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Verb modules import `engine` (and anything heavy) inside `run`,
so `pol check` on a commit hook pays only for what it uses.

Exit status everywhere: 0 clean, 1 problems found (errors, failing tests, format
differences), 2 usage or I/O error, always with a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

VERBS = ("check", "fmt", "test", "eval", "explain", "graph", "serve")


class UsageError(Exception):
    """A problem with how pol was called or what it was pointed at (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit status is 2 as well
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _module(verb: str):
    return importlib.import_module(f"cli.{verb}_cmd")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pol", description="Policy-as-code decisions for content moderation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for verb in VERBS:
        module = _module(verb)
        module.add_arguments(sub.add_parser(verb, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _module(args.command).run(args)
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

