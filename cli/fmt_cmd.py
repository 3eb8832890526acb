"""`pol fmt`: rewrite .pol files in the one canonical layout, keeping every comment.

PATHs are files or directories (every `*.pol` below them, hidden directories left
out); the default is the current directory; `-` reads standard input and writes the
formatted text to standard output. Without flags, files that change are rewritten and
named on stderr (`formatted PATH`). `--check` writes nothing and lists on stdout the
files that would change; `--diff` writes nothing and prints a unified diff. Either
exits 1 when anything would change. A file with syntax errors is left alone: its
diagnostics are printed, the other files are still formatted, and the exit status is 1.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from pathlib import Path

from .main import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, UsageError

HELP = "rewrite .pol files in the canonical layout"
STDIN = "-"


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH", help="files or directories (default: .); - for stdin")
    parser.add_argument("--check", action="store_true", help="write nothing; list the files that would change, exit 1 if any")
    parser.add_argument("--diff", action="store_true", help="write nothing; print a unified diff, exit 1 if anything would change")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files and directories whose path matches GLOB when walking a directory (repeatable)",
    )


def _files(path: str, exclude: list[str]) -> list[Path]:
    """The .pol files a PATH names; a usage error if it does not exist."""
    p = Path(path)
    if p.is_dir():
        found = []
        for root, dirs, names in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _excluded(Path(root) / d, exclude))
            found += [Path(root) / n for n in sorted(names) if n.endswith(".pol") and not _excluded(Path(root) / n, exclude)]
        return found
    if p.exists():
        return [p]
    raise UsageError(f"{path}: no such file or directory")


def _excluded(path: Path, patterns: list[str]) -> bool:
    text = path.as_posix()
    return any(fnmatch.fnmatch(text, pat) or fnmatch.fnmatch(path.name, pat) for pat in patterns)


def run(args) -> int:
    from engine import formatter
    from engine.parse import parse_file

    targets: list[str | Path] = []
    for path in args.paths:
        targets += [STDIN] if path == STDIN else _files(path, args.exclude)

    write = not (args.check or args.diff)
    status = EXIT_OK
    for target in targets:
        name = "<stdin>" if target == STDIN else str(target)
        try:
            data = sys.stdin.buffer.read() if target == STDIN else Path(target).read_bytes()
        except OSError as e:
            print(f"pol fmt: cannot read {name}: {e.strerror or e}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            _, _, diags = parse_file(name, data)  # the P006 diagnostic, pointing at the bad byte
            print(formatter.render_error(formatter.FormatError("not UTF-8", diags)), file=sys.stderr)
            status = max(status, EXIT_PROBLEMS)
            continue
        try:
            formatted = formatter.format_source(text, name)
        except formatter.FormatError as e:
            print(formatter.render_error(e), file=sys.stderr)
            if e.diagnostics:
                print(file=sys.stderr)
            status = max(status, EXIT_PROBLEMS)
            continue
        if target == STDIN and write:
            sys.stdout.write(formatted)
            continue
        if formatted == text:
            continue
        if args.diff:
            _print_diff(name, text, formatted)
        if args.check:
            print(name)
        if not write:
            status = max(status, EXIT_PROBLEMS)
            continue
        try:
            _replace(Path(target), formatted)
        except OSError as e:
            print(f"pol fmt: cannot write {name}: {e.strerror or e}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        print(f"formatted {name}", file=sys.stderr)
    return status


def _print_diff(name: str, before: str, after: str) -> None:
    import difflib

    lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True), name, name)
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` all at once: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.fmt-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8", newline="\n")
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
