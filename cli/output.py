"""Output helpers shared by the verbs: paths as the user gave them, colour, machine formats.

Kept free of heavy imports: `cli.main` imports every verb module to build its parser,
and `pol check` on a commit hook must start fast. `json` and the engine are imported
by the functions that need them.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = [
    "Relocator",
    "add_color_argument",
    "anchor",
    "github_annotation",
    "github_escape_data",
    "github_escape_property",
    "paint",
    "plural",
    "render_diagnostic",
    "sarif_log",
    "use_color",
]

# ---------------------------------------------------------------------------------------
# Paths: the engine names files relative to the set directory; people and CI want them
# relative to where they ran pol, so that `policies/human_smuggling.pol:12` opens.
# ---------------------------------------------------------------------------------------


class Relocator:
    """Rewrites set-relative paths (what `engine.load_path` reports) as `PATH`-joined ones.

    A directory PATH prefixes its files; a file PATH prefixes them with its directory,
    since the engine names a single file (and what it imports) relative to that directory.
    """

    def __init__(self, path: str, sources: dict | None = None) -> None:
        base = path if os.path.isdir(path) else os.path.dirname(path)
        self.base = base
        self._sources = {}  # set-relative path -> Source under the joined path
        for rel, source in (sources or {}).items():
            self._source_for(rel, source)

    def path(self, rel: str) -> str:
        joined = os.path.normpath(os.path.join(self.base, rel)) if self.base else rel
        return joined.replace(os.sep, "/")

    def _source_for(self, rel: str, source):
        moved = self._sources.get(rel)
        if moved is None:
            from engine.source import Source

            moved = self._sources[rel] = Source(self.path(rel), source.text)
        return moved

    def span(self, span):
        from engine.source import Span

        return Span(self._source_for(span.path, span.source), span.start, span.end)

    def diagnostic(self, d):
        """`d` with its span and the spans of its notes under joined paths."""
        import dataclasses

        notes = tuple((note, self.span(s)) for note, s in d.notes)
        return dataclasses.replace(d, span=self.span(d.span), notes=notes)


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


# ---------------------------------------------------------------------------------------
# Colour: severity and code on a terminal; never when NO_COLOR is set (no-color.org),
# unless asked for with --color always.
# ---------------------------------------------------------------------------------------

_STYLES = {"error": "1;31", "warning": "1;33", "ok": "32", "fail": "1;31", "bold": "1"}


def add_color_argument(parser) -> None:
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the text format: auto (default) on a terminal unless NO_COLOR is set",
    )


def use_color(choice: str, stream=None) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, style: str, on: bool) -> str:
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m" if on else text


def render_diagnostic(d, color: bool) -> str:
    """`engine.render(d)`, with `severity[CODE]` coloured when `color` is on."""
    import engine

    text = engine.render(d)
    if not color:
        return text
    line, col = d.span.source.line_col(d.span.start)
    location = f"{d.span.path}:{line}:{col}: "
    label = f"{d.severity.value}[{d.code}]"
    if text.startswith(location + label):
        text = location + paint(label, d.severity.value, True) + text[len(location) + len(label) :]
    return text


# ---------------------------------------------------------------------------------------
# GitHub workflow commands: `::error file=...,line=...::message`.
# Escapes as in actions/toolkit: data escapes % CR LF; properties also `:` and `,`.
# ---------------------------------------------------------------------------------------


def github_escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_escape_property(text: str) -> str:
    return github_escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(d) -> str:
    """One `::error` or `::warning` line for a diagnostic (paths already joined).

    GitHub takes `col` and `endColumn` only for a span on one line, so a span that runs
    on is reported by lines alone; a span ending just after a newline ends on its line.
    """
    r = d.to_dict()
    line, col, end_line, end_col = r["line"], r["column"], r["end_line"], r["end_column"]
    if end_line > line and end_col == 1:  # ends at the start of a line: the previous line's end
        end_line -= 1
        end_col = len(d.span.source.line_text(end_line)) + 1
    props = [("file", r["path"]), ("line", str(line))]
    if end_line == line:
        props += [("col", str(col)), ("endLine", str(end_line)), ("endColumn", str(max(end_col, col)))]
    else:
        props += [("endLine", str(end_line))]
    props.append(("title", r["code"]))
    message = r["message"] + (f"\nhelp: {r['help']}" if r["help"] else "")
    for note, span in d.notes:
        nline, ncol = span.source.line_col(span.start)
        message += f"\nnote: {note} ({span.path}:{nline}:{ncol})"
    head = ",".join(f"{k}={github_escape_property(v)}" for k, v in props)
    return f"::{r['severity']} {head}::{github_escape_data(message)}"


# ---------------------------------------------------------------------------------------
# SARIF 2.1.0
# ---------------------------------------------------------------------------------------

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def anchor(code: str) -> str:
    """The GitHub heading anchor of `code` in docs/errors.md (`### CODE: title`)."""
    from engine.diagnostics import CODES

    heading = f"{code}: {CODES[code][1]}".lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _uri(path: str) -> str:
    """A URI reference for a printed path: relative stays relative (percent-encoded)."""
    from urllib.parse import quote

    if os.path.isabs(path):
        rel = os.path.relpath(path)
        if rel.startswith(".."):
            from pathlib import Path

            return Path(path).as_uri()
        path = rel.replace(os.sep, "/")
    return quote(path, safe="/")


def _region(r: dict) -> dict:
    return {"startLine": r["line"], "startColumn": r["column"], "endLine": r["end_line"], "endColumn": r["end_column"]}


def _tool_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pol")
    except PackageNotFoundError:
        return None


def sarif_log(diagnostics, docs_url: str | None = None) -> dict:
    """One run of pol: every code as a rule, every diagnostic as a result.

    `docs_url` is the absolute URL of docs/errors.md; each rule's `helpUri` is its
    anchor there. Without it there is no helpUri (code scanning rejects a relative
    one) and the rule's `help` names the page and anchor instead.
    """
    from engine.diagnostics import CODES

    codes = list(CODES)
    rules = []
    for code in codes:
        severity, title = CODES[code]
        rule = {
            "id": code,
            "name": "".join(w.capitalize() for w in re.findall(r"\w+", title)),
            "shortDescription": {"text": title},
            "help": {"text": f"See docs/errors.md#{anchor(code)} in the pol repository."},
            "defaultConfiguration": {"level": severity.value},
        }
        if docs_url:
            rule["helpUri"] = f"{docs_url}#{anchor(code)}"
        rules.append(rule)
    results = []
    for d in diagnostics:
        r = d.to_dict()
        text = r["message"] + (f"\nhelp: {r['help']}" if r["help"] else "")
        result = {
            "ruleId": r["code"],
            "ruleIndex": codes.index(r["code"]),
            "level": r["severity"],
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(r["path"])}, "region": _region(r)}}],
        }
        if d.notes:
            related = []
            for i, (note, span) in enumerate(d.notes):
                line, col = span.source.line_col(span.start)
                end_line, end_col = span.source.line_col(span.end)
                region = {"startLine": line, "startColumn": col, "endLine": end_line, "endColumn": end_col}
                related.append(
                    {"id": i, "message": {"text": note}, "physicalLocation": {"artifactLocation": {"uri": _uri(span.path)}, "region": region}}
                )
            result["relatedLocations"] = related
        results.append(result)
    driver: dict = {"name": "pol", "rules": rules}
    version = _tool_version()
    if version:
        driver["version"] = version
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "columnKind": "unicodeCodePoints", "results": results}],
    }
