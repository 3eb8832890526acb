"""Format: .pol text to its one canonical layout, keeping every comment.

The layout is printed from the concrete syntax tree (Lark with `keep_all_tokens`), so
parentheses, strings and numbers stay exactly as written; comments come from the gaps
between tokens and are put back beside the token they were written next to. The rules:

- 2-space indentation; one item per line in a block (schema fields, policy headers,
  lets and rules, rule clauses, test cases, `given` and `expect`); the author's blank
  lines between them are kept, at most one, never right after `{` or before `}`;
- spaces around binary operators, `=` and after `,` and `:`; none inside `()` and `[]`,
  one inside `{ }` of an object; `name: type`, `set<string>`, `f(x)`, `-x`;
- lists, objects and argument lists have three forms, chosen by where the author broke
  lines: on one line; broken after commas, continuation lines aligned after the
  opening `{ ` (as a `given` in LANGUAGE.md section 6); or exploded, one element a line
  with a trailing comma, when the author broke the line right after the opening bracket;
- in conditions, the author's line breaks before (or after) `and`/`or` are kept as
  breaks before the operator, aligned with the start of the condition (or the column
  after the innermost open parenthesis); a line longer than `LINE_LIMIT` is broken
  before its loosest `and`/`or`, as late as still fits;
- an `otherwise` clause stays on the `otherwise` line or goes on its own line, indented
  one step, as the author wrote it;
- an own-line comment goes on its own line, indented like the code after it (the
  block's inner indentation before a `}`); a trailing comment keeps the author's
  column when the code before it still leaves two spaces, else it follows two spaces
  after the code, so comments aligned in a column stay aligned.

`format_source` checks its own work: the output must hold the same tokens (but for
trailing commas, which make no difference to the AST) and the same comments in the same
order, or it raises instead of returning text that would change a policy.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import lark
from lark import Token, Tree

from .diagnostics import Diagnostic, render_all
from .parse import parse_text, tokenize

__all__ = ["LINE_LIMIT", "FormatError", "comments", "format_source", "render_error"]

#: Conditions longer than this many columns are broken before `and`/`or`.
LINE_LIMIT = 100
_STEP = 2  # one indentation level
_CONT_STEP = 4  # continuation lines of anything but a condition or a bracketed list


class FormatError(Exception):
    """The text cannot be formatted: its syntax errors, or (a bug) a layout that changes it."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.diagnostics: list[Diagnostic] = diagnostics or []


def format_source(text: str, path: str = "<stdin>") -> str:
    """`text` in the canonical layout. Raises FormatError with the diagnostics if it does not parse."""
    if text.startswith("\ufeff"):
        text = text[1:]
    before, _, diags = parse_text(path, text)
    syntax = [d for d in diags if d.is_error and d.code.startswith("P")]
    if before is None or syntax:
        errors = syntax or [d for d in diags if d.is_error]
        raise FormatError(f"{path}: syntax errors; not formatted", errors)
    tokens = tokenize(text)
    parser = _cst_parser().parse_interactive("")
    for tok in tokens:
        parser.feed_token(tok)
    cst = parser.feed_eof()
    gaps, end = _gaps(text, tokens)
    breaks: set[int] = set()
    while True:  # each round breaks the overlong conditions: usually one round is enough
        printer = _Printer(gaps, breaks)
        out = printer.file(cst, end)
        more = {key for candidates, length in printer.w.overlong for key in _picks(candidates, length)} - breaks
        if not more:
            break
        breaks |= more
    if _essential(out) != _essential(tokens) or comments(out) != comments(text):
        raise FormatError(f"{path}: formatting would change the file's meaning or comments (a bug in pol fmt); left as is")
    return out


def comments(text: str) -> list[str]:
    """The comments of a file that lexes, in order, without trailing whitespace."""
    return [m.group(1).rstrip() for m in _STRING_OR_COMMENT.finditer(text) if m.group(1) is not None]


# in pol, `#` starts a comment everywhere but inside a string
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|(#[^\n]*)')
_CLOSING = frozenset(("RBRACE", "RSQB", "RPAR"))


def _essential(source: str | list[Token]) -> list[str] | None:
    """The tokens that make the meaning: all but a comma right before a closing bracket."""
    if isinstance(source, str):
        source = tokenize(source)
        if source is None:
            return None
    return [
        t.value
        for k, t in enumerate(source)
        if not (t.type == "COMMA" and k + 1 < len(source) and source[k + 1].type in _CLOSING)
    ]


@functools.cache
def _cst_parser() -> lark.Lark:
    """The pol grammar, keeping every token (brackets and commas too) in the tree."""
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return lark.Lark(grammar, parser="lalr", lexer="basic", keep_all_tokens=True, maybe_placeholders=False, cache=True)


# ---- what lies between tokens -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Comment:
    text: str
    column: int  # in the source line, in characters
    own_line: bool  # nothing but whitespace before it on its line
    blank_before: bool  # a blank line between it and the code or comment before it


@dataclass(frozen=True, slots=True)
class _Gap:
    """The comments and line breaks before one token (or the end of the file)."""

    comments: tuple[_Comment, ...] = ()
    newline: bool = False  # the token starts a line
    blank: bool = False  # a blank line right before the token


_NO_GAP = _Gap()


def _gaps(text: str, tokens: list[Token]) -> tuple[dict[int, _Gap], _Gap]:
    """The gap before each token, by the token's offset, and the gap before the end of the file."""
    gaps: dict[int, _Gap] = {}
    pos = 0
    for tok in tokens:
        gaps[tok.start_pos] = _scan(text, pos, tok.start_pos, first=pos == 0)
        pos = tok.end_pos
    return gaps, _scan(text, pos, len(text), first=pos == 0)


def _scan(text: str, start: int, end: int, first: bool) -> _Gap:
    found: list[_Comment] = []
    line_start = text.rfind("\n", 0, start) + 1
    newlines = 0  # since the last token or comment
    any_newline = False
    pos = start
    while pos < end:
        ch = text[pos]
        if ch == "\n":
            newlines += 1
            any_newline = True
            pos += 1
            line_start = pos
        elif ch == "#":
            stop = text.find("\n", pos, end)
            stop = end if stop == -1 else stop
            found.append(_Comment(text[pos:stop].rstrip(), pos - line_start, first or newlines > 0, newlines >= 2))
            newlines = 0
            pos = stop
        else:
            pos += 1
    return _Gap(tuple(found), any_newline, newlines >= 2)


def _merge(a: _Gap | None, b: _Gap) -> _Gap:
    """The gap before a token that follows a token left out (a dropped trailing comma)."""
    if a is None:
        return b
    later = list(b.comments)
    if later and not later[0].own_line and a.newline:
        first = later[0]
        later[0] = _Comment(first.text, first.column, True, first.blank_before)
    return _Gap(a.comments + tuple(later), a.newline or b.newline, b.blank or (a.blank and not b.comments))


# ---- the writer: lines, comments, continuation columns ---------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    """Start the token on a new line at `indent`."""

    indent: int
    blank: bool = True  # keep a blank line the author left before the token
    comment_indent: int | None = None  # own-line comments before the token (default: indent)


_CONT = "cont"
_Candidate = tuple[tuple[int, int], int, int, int]  # (rank, column, token position, continuation column)  # a break the layout keeps: a new line at the innermost continuation column


@dataclass
class _Writer:
    gaps: dict[int, _Gap]
    lines: list[str] = field(default_factory=list)
    cur: str | None = None  # the line being written
    cont: list[int] = field(default_factory=lambda: [_CONT_STEP])  # continuation columns
    anchors: int = 0  # continuation columns to take from the next token written
    pending: _Gap | None = None  # the gap of tokens left out, for the next token written
    after_opener: bool = False  # the last line opens a block: no blank line after it
    candidates: list[_Candidate] = field(default_factory=list)
    overlong: list[tuple[list[_Candidate], int]] = field(default_factory=list)  # with the line's length

    def emit(self, tok: Token | str, how, candidate: tuple[int, int] | None = None) -> None:
        """Write a token: after `how` (a separator, `_CONT` or a `_Line`), with the comments before it."""
        gap = self.gaps[tok.start_pos] if isinstance(tok, Token) else _NO_GAP
        if self.pending is not None:
            gap, self.pending = _merge(self.pending, gap), None
        notes = gap.comments
        forced = False
        if notes and not notes[0].own_line and self.cur is not None:
            self._end(notes[0])
            notes = notes[1:]
            forced = True
        text = str(tok)
        if isinstance(how, _Line) or how == _CONT or forced or notes:
            if isinstance(how, _Line):
                indent, blank_ok, comment_blanks = how.indent, how.blank, True
                comment_indent = how.indent if how.comment_indent is None else how.comment_indent
            else:
                indent = comment_indent = self.cont[-1]
                blank_ok = comment_blanks = False
            if self.cur is not None:
                self._end()
            for note in notes:
                if note.blank_before and comment_blanks:
                    self._blank()
                self._put(" " * comment_indent + note.text)
            if gap.blank and blank_ok:
                self._blank()
            column = indent
            self.cur = " " * indent + text
        else:
            column = len(self.cur) + len(how) if self.cur is not None else 0
            self.cur = (self.cur or "") + how + text
            if candidate is not None:
                self.candidates.append((candidate, column, tok.start_pos, self.cont[-1]))
        for _ in range(self.anchors):
            self.cont.append(column)
        self.anchors = 0

    def skip(self, tok: Token) -> None:
        """Leave a token out; its comments go with the next token written."""
        self.pending = _merge(self.pending, self.gaps[tok.start_pos])

    def hoist(self, tok: Token) -> None:
        """Write a comma right after the code before it; comments before it move after it."""
        self.skip(tok)
        self.emit(",", "")

    def anchor(self) -> None:
        """Continuation lines align with the next token written, until `pop`."""
        self.anchors += 1

    def push(self, column: int) -> None:
        self.cont.append(column)

    def pop(self) -> None:
        self.cont.pop()

    def line_indent(self) -> int:
        assert self.cur is not None
        return len(self.cur) - len(self.cur.lstrip(" "))

    def finish(self, end: _Gap) -> str:
        if self.pending is not None:
            end, self.pending = _merge(self.pending, end), None
        notes = end.comments
        if notes and not notes[0].own_line and self.cur is not None:
            self._end(notes[0])
            notes = notes[1:]
        if self.cur is not None:
            self._end()
        for note in notes:
            if note.blank_before:
                self._blank()
            self._put(note.text)
        return "\n".join(self.lines) + "\n" if self.lines else ""

    def _end(self, note: _Comment | None = None) -> None:
        assert self.cur is not None
        code = self.cur.rstrip()
        if len(code) > LINE_LIMIT and self.candidates:
            self.overlong.append((self.candidates, len(code)))
        self.candidates = []
        line = code
        if note is not None:
            line = code.ljust(note.column) + note.text if note.column >= len(code) + 2 else code + "  " + note.text
        self.cur = None
        self._put(line, opener=code.endswith(("{", "[", "(")))

    def _put(self, line: str, opener: bool = False) -> None:
        self.lines.append(line)
        self.after_opener = opener

    def _blank(self) -> None:
        if self.lines and self.lines[-1] != "" and not self.after_opener:
            self._put("")


def _picks(candidates: list[_Candidate], length: int) -> list[int]:
    """Where to break an overlong line: before its loosest `and`/`or`, as late as still fits;
    then the same again on the rest of the line, until what is left fits.

    Breaking once per round would take a round, each a whole pass, per line of output:
    quadratic in a long chain of `or`s. Linear here: each pick scans forward from the last.
    """
    n = len(candidates)
    loosest_after = [(0, 0)] * n  # the loosest rank among candidates[i:]
    best = None
    for i in range(n - 1, -1, -1):
        best = candidates[i][0] if best is None else min(best, candidates[i][0])
        loosest_after[i] = best
    picks: list[int] = []
    shift = 0  # how far left the rest of the line has moved so far
    i = 0
    while i < n and length - shift > LINE_LIMIT:
        rank = loosest_after[i]
        chosen = None
        j = i
        while j < n and candidates[j][1] - shift - 1 <= LINE_LIMIT:
            if candidates[j][0] == rank:
                chosen = j
            j += 1
        if chosen is None:  # nothing fits: break at the first loosest
            chosen = next(k for k in range(i, n) if candidates[k][0] == rank)
        _, column, key, cont = candidates[chosen]
        picks.append(key)
        shift = column - cont  # the operator starts the next line, at its continuation column
        i = chosen + 1
    return picks


def _first(node: Tree | Token) -> Token:
    while isinstance(node, Tree):
        node = node.children[0]
    return node


def _is(node: Tree | Token, kind: str) -> bool:
    return isinstance(node, Token) and node.type == kind


# ---- the printer: one method per tree node ------------------------------------------------


class _Printer:
    def __init__(self, gaps: dict[int, _Gap], breaks: set[int]) -> None:
        self.gaps = gaps
        self.breaks = breaks  # `and`/`or` tokens to break before, to shorten overlong lines
        self.w = _Writer(gaps)
        self.indent = 0

    def file(self, tree: Tree, end: _Gap) -> str:
        for item in tree.children:
            self.w.push(_CONT_STEP)
            self.node(item, _Line(0))
            self.w.pop()
        return self.w.finish(end)

    def node(self, node: Tree | Token, how) -> None:
        if isinstance(node, Token):
            self.w.emit(node, how)
        else:
            getattr(self, "_" + node.data)(node, how)

    def tokens(self, children, how, seps: str) -> None:
        """Children in a row: the first after `how`, the others after one space ("s") or none ("n")."""
        for child, sep in zip(children, [how, *(" " if s == "s" else "" for s in seps)], strict=True):
            self.node(child, sep)

    def block(self, lbrace: Token, items: list, rbrace: Token) -> None:
        """`{`, one item a line one level in, `}`; `{}` when there is nothing inside."""
        self.w.emit(lbrace, " ")
        outer = self.indent
        if not items and not self.gaps[rbrace.start_pos].comments:
            self.w.emit(rbrace, "")
            return
        self.indent = inner = outer + _STEP
        for item in items:
            self.w.push(inner + _CONT_STEP)
            self.node(item, _Line(inner))
            self.w.pop()
        self.indent = outer
        self.w.emit(rbrace, _Line(outer, blank=False, comment_indent=inner))

    def sequence(self, children: list, how, spaced: bool = False, trailing_comma: bool = True) -> None:
        """A bracketed, comma-separated list (`children` from the opening to the closing bracket)."""
        opening, *inside, closing = children
        items = [c for c in inside if not _is(c, "COMMA")]
        commas = [c for c in inside if _is(c, "COMMA")]
        self.w.emit(opening, how)
        outer = self.w.line_indent()
        if not items:
            self.w.emit(closing, "")
            return
        if self.gaps[_first(items[0]).start_pos].newline:  # exploded: one element a line
            self.w.push(outer + _STEP + _CONT_STEP)
            for k, item in enumerate(items):
                self.node(item, _Line(outer + _STEP))
                if k < len(commas):
                    self.w.hoist(commas[k])
                elif trailing_comma:
                    self.w.emit(",", "")
            self.w.pop()
            self.w.emit(closing, _Line(outer, blank=False, comment_indent=outer + _STEP))
            return
        self.w.anchor()
        for k, item in enumerate(items):
            if k == 0:
                self.node(item, " " if spaced else "")
                continue
            comma = commas[k - 1]
            broken = self.gaps[comma.start_pos].newline or self.gaps[_first(item).start_pos].newline
            self.w.hoist(comma)
            self.node(item, _CONT if broken else " ")
        if len(commas) == len(items):
            self.w.skip(commas[-1])
        self.w.pop()
        self.w.push(outer)  # a comment before the closing bracket puts it under the line's start
        self.w.emit(closing, " " if spaced else "")
        self.w.pop()

    def condition(self, expr: Tree, how) -> None:
        """An expression whose continuation lines align with its first token."""
        self.w.anchor()
        self.node(expr, how)
        self.w.pop()

    # ---- files, schemas ----

    def _import_(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "s")

    def _schema(self, t: Tree, how) -> None:
        self.tokens(t.children[:2], how, "s")
        self.block(t.children[2], t.children[3:-1], t.children[-1])

    def _field_decl(self, t: Tree, how) -> None:
        self.node(t.children[0], how)
        for child in t.children[1:]:
            self.node(child, "" if _is(child, "OPTIONAL") or _is(child, "COLON") else " ")

    def _named_type(self, t: Tree, how) -> None:
        self.node(t.children[0], how)

    def _enum_type(self, t: Tree, how) -> None:
        self.node(t.children[0], how)
        self.sequence(t.children[1:], "")

    def _collection_type(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "nnn")

    # ---- policies ----

    def _policy(self, t: Tree, how) -> None:
        self.tokens(t.children[:4], how, "sss")
        self.block(t.children[4], t.children[5:-1], t.children[-1])

    def _header(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "s")

    def _let(self, t: Tree, how) -> None:
        self.tokens(t.children[:3], how, "ss")
        self.condition(t.children[3], " ")

    def _rule(self, t: Tree, how) -> None:
        head = 3 if _is(t.children[0], "SHADOW") else 2
        self.tokens(t.children[:head], how, "s" * (head - 1))
        self.block(t.children[head], t.children[head + 1 : -1], t.children[-1])

    def _clause(self, t: Tree, how) -> None:
        keyword, value = t.children
        self.node(keyword, how)
        if _is(keyword, "WHEN"):
            self.condition(value, " ")
        else:
            self.node(value, " ")

    def _otherwise(self, t: Tree, how) -> None:
        keyword, action, *clauses = t.children
        self.node(keyword, how)
        self.node(action, " ")
        for clause in clauses:
            own_line = self.gaps[_first(clause).start_pos].newline
            self.node(clause, _Line(self.indent + _STEP, blank=False) if own_line else " ")

    def _string_list(self, t: Tree, how) -> None:
        self.sequence(t.children, how)

    def _action(self, t: Tree, how) -> None:
        verdict, *rest = t.children
        self.node(verdict, how)
        if not rest:
            return
        self.w.anchor()
        self.node(rest[0], " ")
        for k in range(1, len(rest), 2):
            comma, intervention = rest[k], rest[k + 1]
            broken = self.gaps[comma.start_pos].newline or self.gaps[_first(intervention).start_pos].newline
            self.w.hoist(comma)
            self.node(intervention, _CONT if broken else " ")
        self.w.pop()

    def _intervention(self, t: Tree, how) -> None:
        self.node(t.children[0], how)
        if len(t.children) > 1:
            self.sequence(t.children[1:], "")

    def _argument(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "ns")

    # ---- tests ----

    def _test(self, t: Tree, how) -> None:
        self.tokens(t.children[:2], how, "s")
        self.block(t.children[2], t.children[3:-1], t.children[-1])

    def _case(self, t: Tree, how) -> None:
        case, name, lbrace, given, obj, expect, expectation, rbrace = t.children
        self.tokens([case, name, lbrace], how, "ss")
        outer = self.indent
        inner = outer + _STEP
        self.node(given, _Line(inner, blank=False))
        self.node(obj, " ")
        self.node(expect, _Line(inner, blank=False))
        self.node(expectation, " ")
        self.w.emit(rbrace, _Line(outer, blank=False, comment_indent=inner))

    def _expectation(self, t: Tree, how) -> None:
        verdict, *rest = t.children
        self.node(verdict, how)
        for child in rest:
            if _is(child, "COMMA"):
                self.w.hoist(child)
            else:
                self.node(child, " ")

    def _verdict(self, t: Tree, how) -> None:
        self.node(t.children[0], how)

    def _object(self, t: Tree, how) -> None:
        self.sequence(t.children, how, spaced=True)

    def _entry(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "ns")

    def _negative(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "n")

    def _list_value(self, t: Tree, how) -> None:
        self.sequence(t.children, how)

    def _dotted(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "n" * (len(t.children) - 1))

    # ---- expressions ----

    def _or_(self, t: Tree, how) -> None:
        children = t.children
        self.node(children[0], how)
        for k in range(1, len(children), 2):
            op, operand = children[k], children[k + 1]
            after = self.gaps[_first(operand).start_pos]
            broken = (
                self.gaps[op.start_pos].newline
                or (after.newline and not after.comments)
                or op.start_pos in self.breaks
            )
            rank = (len(self.w.cont), 0 if op.type == "OR" else 1)
            self.w.emit(op, _CONT if broken else " ", candidate=rank)
            self.node(operand, " ")

    _and_ = _or_

    def _not_(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "s")

    def _binary(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "ss")

    def _not_in(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "sss")

    def _neg(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "n")

    def _name(self, t: Tree, how) -> None:
        self.node(t.children[0], how)

    def _has(self, t: Tree, how) -> None:
        self.tokens(t.children, how, "s")

    def _call(self, t: Tree, how) -> None:
        self.node(t.children[0], how)
        self.sequence(t.children[1:], "", trailing_comma=False)

    def _quantifier(self, t: Tree, how) -> None:
        kind, var, in_, collection, colon, lpar, body, rpar = t.children
        self.tokens([kind, var, in_, collection, colon, lpar], how, "sssns")
        self.condition(body, "")
        self.node(rpar, "")

    def _list_literal(self, t: Tree, how) -> None:
        self.sequence(t.children, how)

    def _primary(self, t: Tree, how) -> None:
        lpar, body, rpar = t.children
        self.node(lpar, how)
        self.condition(body, "")
        self.node(rpar, "")

    def _string(self, t: Tree, how) -> None:
        self.node(t.children[0], how)

    _number = _true = _false = _string


def render_error(error: FormatError) -> str:
    """What `pol fmt` prints for a file it cannot format."""
    return render_all(error.diagnostics) if error.diagnostics else str(error)
