"""Diagnostics: problems as values with a stable code, a span and a help line.

Every stage appends to a list of these instead of raising, so one run reports
every problem in a file. Codes never change meaning once shipped; docs/errors.md
documents each one, and a test keeps that page and `CODES` in step.
"""

from __future__ import annotations

import difflib
import enum
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .source import Span

__all__ = ["CODES", "MAX_LINE", "Diagnostic", "Severity", "clip", "did_you_mean", "render", "render_all", "sort_key"]


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


# code -> (severity, one-line title). The title is what docs/errors.md lists.
CODES: dict[str, tuple[Severity, str]] = {
    # parse
    "P001": (Severity.ERROR, "unexpected token"),
    "P002": (Severity.ERROR, "unexpected character"),
    "P003": (Severity.ERROR, "unterminated string"),
    "P004": (Severity.ERROR, "invalid escape sequence"),
    "P005": (Severity.ERROR, "nesting too deep"),
    "P006": (Severity.ERROR, "file is not valid UTF-8"),
    "P007": (Severity.ERROR, "unexpected end of file"),
    "P008": (Severity.ERROR, "too many syntax errors"),
    # names and structure
    "E101": (Severity.ERROR, "unknown field"),
    "E102": (Severity.ERROR, "value not in enum"),
    "E103": (Severity.ERROR, "type mismatch"),
    "E104": (Severity.ERROR, "missing `because`"),
    "E105": (Severity.ERROR, "duplicate name"),
    "E106": (Severity.ERROR, "missing or repeated clause"),
    "E107": (Severity.ERROR, "optional field used without a `has` guard"),
    "E108": (Severity.ERROR, "invalid regular expression"),
    "E109": (Severity.ERROR, "cycle between lets"),
    "E110": (Severity.ERROR, "unknown import"),
    "E111": (Severity.ERROR, "test for an unknown policy"),
    "E112": (Severity.ERROR, "test input breaks the schema"),
    "E113": (Severity.ERROR, "unknown schema"),
    "E114": (Severity.ERROR, "unknown name"),
    "E115": (Severity.ERROR, "unknown function or wrong arguments"),
    "E116": (Severity.ERROR, "test expectation names an unknown rule or intervention"),
    "E117": (Severity.ERROR, "invalid field declaration"),
    "E118": (Severity.ERROR, "number out of range"),
    # analysis
    "W201": (Severity.WARNING, "rule can never match"),
    "W202": (Severity.WARNING, "rule is unreachable"),
    "W203": (Severity.WARNING, "unused let"),
    "W204": (Severity.WARNING, "rule not exercised by any test case"),
    "W205": (Severity.WARNING, "file defines nothing"),
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    message: str
    span: Span
    help: str | None = None
    notes: tuple[tuple[str, Span], ...] = ()

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_dict(self) -> dict:
        """The stable JSON shape used by `pol check --format json`."""
        line, col = self.span.source.line_col(self.span.start)
        end_line, end_col = self.span.source.line_col(self.span.end)
        return {
            "path": self.span.path,
            "line": line,
            "column": col,
            "end_line": end_line,
            "end_column": end_col,
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "help": self.help,
        }


def sort_key(d: Diagnostic) -> tuple:
    return (d.span.path, d.span.start, d.span.end, d.code, d.message)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt `word`, if one is close enough."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


#: Longest source line shown whole; a longer one is cut to a window around the span.
MAX_LINE = 120


def clip(text: str, limit: int = 40) -> str:
    """`text` cut to `limit` characters with `...`, for user text quoted in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cell_width(text: str) -> int:
    """Terminal columns `text` takes: wide East Asian characters take two, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


_CONTROL = {i: " " for i in [*range(0x20), 0x7F] if i != 0x09}


def _window(text: str, start: int, end: int) -> tuple[str, str]:
    """The source line to show and the caret line under characters [start, end).

    A line longer than MAX_LINE is cut to a window of MAX_LINE characters around
    `start`, marked with `...` on the side(s) cut; the carets stay under the span.
    """
    text = text.expandtabs(1).translate(_CONTROL)  # one column per character, nothing that moves the cursor
    lo, hi = 0, len(text)
    if len(text) > MAX_LINE:
        lo = max(0, start - MAX_LINE // 3)
        hi = min(len(text), lo + MAX_LINE)
        lo = max(0, hi - MAX_LINE)
    end = max(min(end, hi), start + 1)
    prefix = "..." if lo > 0 else ""
    suffix = "..." if hi < len(text) else ""
    shown = prefix + text[lo:hi] + suffix
    pad = len(prefix) + _cell_width(text[lo:start])
    carets = max(1, _cell_width(text[start:end]))
    return shown, " " * pad + "^" * carets


def render(d: Diagnostic) -> str:
    """`path:line:col: severity[CODE]: message`, the source line, a caret line, notes, help."""
    src = d.span.source
    line, col = src.line_col(d.span.start)
    text = src.line_text(line)
    end_line, end_col = src.line_col(d.span.end)
    end = end_col - 1 if end_line == line else len(text)
    shown, carets = _window(text, col - 1, end)
    gutter = str(line)
    pad = " " * len(gutter)
    out = [
        f"{d.span.path}:{line}:{col}: {d.severity.value}[{d.code}]: {d.message}",
        f"{pad} |",
        f"{gutter} | {shown}".rstrip(),
        f"{pad} | {carets}",
    ]
    for note, span in d.notes:
        nline, ncol = span.source.line_col(span.start)
        out.append(f"{pad} = note: {note} ({span.path}:{nline}:{ncol})")
    if d.help:
        out.append(f"{pad} = help: {d.help}")
    return "\n".join(out)


def render_all(diagnostics: Sequence[Diagnostic]) -> str:
    return "\n\n".join(render(d) for d in sorted(diagnostics, key=sort_key))
