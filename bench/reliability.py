#!/usr/bin/env python3
"""Collect the reliability benchmarks' rows into the table of docs/reliability.md.

    python bench/reliability.py                      # bench/results/reliability/*.json -> docs/reliability.md
    python bench/reliability.py --results DIR --doc FILE
    python bench/reliability.py --check              # exit 1 if the doc's table is not what the rows give

Each benchmark (bench/hostile.py, bench/validate_abuse.py, bench/soak.py, bench/faults.py,
bench/fuzz/run.py) writes one JSON object per input class to
`bench/results/reliability/<script>-<class>.json` with the keys of `FIELDS`. This script
renders them, in file-name order, as one Markdown table and puts it in the doc between
`<!-- reliability:begin -->` and `<!-- reliability:end -->`, leaving the rest of the doc as
it is. A row that is not such an object is an error naming its file, and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "reliability"
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"

#: (key in the JSON row, column heading, the type the value must have)
FIELDS = (
    ("class", "class", str),
    ("inputs", "inputs tried", str),
    ("load", "load held", str),
    ("faults", "faults injected", str),
    ("survived", "survived", bool),
    ("errors", "errors", int),
    ("lost", "data lost", int),
    ("command", "command", str),
)


class RowError(ValueError):
    """A results file that is not one row of the expected shape."""


def read_rows(results: Path) -> list[dict]:
    """Every `*.json` row under `results`, in file-name order; RowError names the first bad file."""
    rows = []
    for path in sorted(results.glob("*.json")):
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RowError(f"{path}: not readable JSON: {e}") from None
        if not isinstance(row, dict):
            raise RowError(f"{path}: a row is a JSON object, got {type(row).__name__}")
        for key, _, kind in FIELDS:
            if key not in row:
                raise RowError(f"{path}: no `{key}`")
            value = row[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise RowError(f"{path}: `{key}` must be {kind.__name__}, got {json.dumps(value)}")
        rows.append(row)
    return rows


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, `|` escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    """A command as inline code, with a fence longer than any backtick run inside it."""
    longest = run = 0
    for c in text:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{_cell(text)}{pad}{fence}"


def render(rows: list[dict]) -> str:
    """The Markdown table of `rows` (a line saying there are none when empty)."""
    head = "| " + " | ".join(title for _, title, _ in FIELDS) + " |"
    rule = "| " + " | ".join("---:" if kind is int else "---" for _, _, kind in FIELDS) + " |"
    lines = [head, rule]
    for row in rows:
        cells = []
        for key, _, kind in FIELDS:
            value = row[key]
            if key == "command":
                cells.append(_code(value))
            elif kind is bool:
                cells.append("yes" if value else "**no**")
            elif kind is int:
                cells.append(f"{value:,}" if value == 0 else f"**{value:,}**")
            else:
                cells.append(_cell(value) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| " + " | ".join(["no results yet: run the benchmarks"] + [""] * (len(FIELDS) - 1)) + " |")
    return "\n".join(lines) + "\n"


def replace_table(doc: str, table: str) -> str:
    """`doc` with the text between the markers replaced by `table`; ValueError without both markers in order."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start == -1 or end == -1 or end < start:
        raise ValueError(f"the doc needs `{BEGIN}` and then `{END}`")
    return doc[: start + len(BEGIN)] + "\n" + table + doc[end:]


def _relative(path: Path) -> Path:
    """`path` from the repository root when it is under it, for shorter messages."""
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the rows are (default: bench/results/reliability)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the doc to update (default: docs/reliability.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the doc's table differs from the rows")
    args = parser.parse_args(argv)
    try:
        rows = read_rows(args.results)
        doc = args.doc.read_text(encoding="utf-8")
        updated = replace_table(doc, render(rows))
    except (RowError, ValueError, OSError) as e:
        print(f"reliability: {e}", file=sys.stderr)
        return 2
    if args.check:
        if updated != doc:
            print(f"reliability: {args.doc} is out of date; run python bench/reliability.py", file=sys.stderr)
            return 1
        return 0
    args.doc.write_text(updated, encoding="utf-8")
    failed = [r["class"] for r in rows if not r["survived"] or r["errors"] or r["lost"]]
    print(f"{_relative(args.doc)}: {len(rows)} row(s) from {_relative(args.results)}" + (f"; failing (not survived, errors or data lost): {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
