"""Source text and spans: where every AST node and diagnostic points back to."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field


class Source:
    """One file's text; computes line and column for an offset on demand."""

    __slots__ = ("path", "text", "_line_starts")

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        starts = [0]
        find = text.find
        i = find("\n")
        while i != -1:
            starts.append(i + 1)
            i = find("\n", i + 1)
        self._line_starts = starts

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column (in characters) of `offset`."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def line_text(self, line: int) -> str:
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end == -1 else self.text[start:end]

    def __repr__(self) -> str:
        return f"Source({self.path!r})"


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open character range [start, end) in one source."""

    source: Source = field(compare=False, hash=False, repr=False)
    start: int
    end: int

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def line(self) -> int:
        return self.source.line_col(self.start)[0]

    @property
    def column(self) -> int:
        return self.source.line_col(self.start)[1]

    @property
    def end_line_col(self) -> tuple[int, int]:
        return self.source.line_col(self.end)

    @property
    def text(self) -> str:
        return self.source.text[self.start : self.end]

    def to(self, other: Span) -> Span:
        """The span covering both `self` and `other`."""
        return Span(self.source, min(self.start, other.start), max(self.end, other.end))
