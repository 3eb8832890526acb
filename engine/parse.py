"""Parse: .pol text to an AST, reporting every syntax error in one pass.

Lark's LALR parser is driven token by token. Before each statement and after each
brace we keep a cheap copy of the parser state; on an error we report it, restore
the copy taken before the broken statement, skip to the next statement at the same
brace depth, and go on. So four broken rules give four diagnostics, and the rules
between them still parse. Repairs keep one mistake from hiding the next:

- the lexer stands in a plausible token for what it rejects (`&&` reads as `and`,
  `'x'` as `"x"`, `Topic` as `topic`), so the parser carries on as the author meant;
- a keyword at the start of a line that only fits after a `}` (a `rule` inside an
  unclosed rule) closes the open blocks, names the block left open, and parses on;
- otherwise, when one left-out token (`then`, `because`, `)`, `{`, `,`, `:`, `=`)
  makes the failing token and the next one fit, the parser supplies it and parses on.

An error that is most likely the echo of an earlier one (at a token a lexical error
stood in for, at the statement where the parser resumed, or on a line that already
has an error) is not reported. Messages name what was found and what would fit, in
the words of `_FRIENDLY`; `_hint` adds the targeted help line.

The tree Lark builds is turned into frozen AST nodes with an explicit depth budget,
so 10,000 nested parentheses are a diagnostic, never a RecursionError.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from copy import copy
from pathlib import Path

import lark
from lark import Token, Tree
from lark.exceptions import UnexpectedToken

from . import ast
from .diagnostics import Diagnostic, clip
from .source import Source, Span

__all__ = ["MAX_DEPTH", "MAX_ERRORS", "parse_file", "parse_text", "tokenize"]

#: Deepest expression, list or object nesting accepted. Deeper input is P005.
MAX_DEPTH = 100
#: After this many syntax errors in one file, stop (P008).
MAX_ERRORS = 50

_STATEMENT_STARTERS = frozenset(
    "IMPORT SCHEMA POLICY TEST LET RULE SHADOW OTHERWISE VERSION DESCRIPTION OWNER COMBINE CASE".split()
)

# How users read terminal names in "expected ..." messages. One table, as in Cedar.
_FRIENDLY = {
    "NAME": "a name",
    "STRING": "a string",
    "NUMBER": "a number",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "COMMA": "`,`",
    "COLON": "`:`",
    "DOT": "`.`",
    "EQUAL": "`=`",
    "OPTIONAL": "`?`",
    "LT": "`<`",
    "GT": "`>`",
    "SUB": "`-`",
    "ADD_OP": "`+`",
    "MUL_OP": "`*` or `/`",
    "COMP_OP": "a comparison",
    "$END": "end of file",
}
_OPERATORS = frozenset(
    "AND OR IN NOT CONTAINS MATCHES STARTS_WITH ENDS_WITH COMP_OP LT GT ADD_OP SUB MUL_OP DOT".split()
)
_COMPARISONS = frozenset("COMP_OP LT GT IN CONTAINS MATCHES STARTS_WITH ENDS_WITH".split())
_EXPRESSION_START = frozenset("NAME STRING NUMBER TRUE FALSE LPAR LSQB HAS ANY ALL NOT SUB".split())
# literals in defaults, intervention arguments and test inputs
_VALUE_START = frozenset("STRING NUMBER TRUE FALSE SUB LSQB LBRACE".split())
_CLAUSES = ("THEN", "BECAUSE", "CITE", "TAGS", "WHEN")
# Statements live at brace depth 0 to 2; deeper braces are test-input objects, where a
# snapshot would only cost time (10,000 nested objects would copy the parser stack 10,000 times).
_SNAPSHOT_DEPTH = 8
_CHECKPOINT_EVERY = 256
# Brackets nested deeper than this are not parsed inside (`_cut_deep`): far past P005,
# and deeper than anyone writes by hand, so only a syntax error that deep goes unreported.
_CUT_DEPTH = 10 * MAX_DEPTH
# after these, a token may still continue a name (`author.` + NAME) or start a reserved-word misuse
_NAME_FOLLOWERS = frozenset("COLON OPTIONAL EQUAL DOT LBRACE LPAR".split())


def _friendly(terminal: str) -> str:
    if terminal in _FRIENDLY:
        return _FRIENDLY[terminal]
    return f"`{terminal.lower()}`"


def _describe_found(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "NAME":
        return f"name `{tok.value}`"
    if tok.type == "STRING":
        value = tok.value if len(tok.value) <= 30 else tok.value[:27] + '..."'
        return f"string {value}"
    if tok.type == "NUMBER":
        value = tok.value if len(tok.value) <= 30 else tok.value[:27] + "..."
        return f"number `{value}`"
    if tok.value.isalpha() or "_" in tok.value:
        return f"keyword `{tok.value}`"
    return f"`{tok.value}`"


def _describe_expected(expected: set[str], prev: Token | None = None) -> str:
    expected = {e for e in expected if not e.startswith("__")}
    if prev is not None and prev.type == "NAME" and expected & _OPERATORS:
        expected.discard("LPAR")  # `name(` would be a call: true, but never what was meant
    parts: list[str] = []
    clauses = [c for c in _CLAUSES if c in expected]
    if "NAME" not in expected and len(expected & _VALUE_START) >= 4:
        parts.append("a value")
        expected -= _VALUE_START
    if len(expected & _EXPRESSION_START) >= 4:
        parts.append("an expression")
        expected -= _EXPRESSION_START
    for c in clauses:
        parts.append(_friendly(c))
        expected.discard(c)
    if len(expected & _OPERATORS) >= 3:
        parts.append("an operator")
        expected -= _OPERATORS
    parts.extend(sorted(_friendly(e) for e in expected))
    if not parts:
        return "nothing more"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


class _Where:
    """What a hint may look at around a syntax error."""

    __slots__ = ("prev", "next", "first_on_line", "open_block", "open_paren", "closes_block", "inserted")

    def __init__(self, prev, next_, first_on_line, open_block, open_paren, closes_block=False, inserted=None) -> None:
        self.prev: Token | None = prev
        self.next: Token | None = next_
        self.first_on_line: bool = first_on_line
        self.open_block: str | None = open_block  # "rule `r` (opened on line 7)"
        self.open_paren: str | None = open_paren  # "line 9, column 35"
        self.closes_block: bool = closes_block  # the token fits once a `}` closes `open_block`
        self.inserted: str | None = inserted  # a terminal after which the token fits


def _is_keyword(tok: Token) -> bool:
    return tok.type not in ("NAME", "$END") and bool(re.fullmatch(r"[a-z_]+", tok.value))


def _hint(found: Token, expected: set[str], where: _Where) -> str | None:
    """A targeted suggestion for the mistakes authors actually make."""
    prev = where.prev
    if where.open_block and where.closes_block:
        return f"{where.open_block} is missing its closing `}}`"
    if found.type == "RBRACE" and "RBRACE" not in expected and where.open_block is None:
        return "this `}` has no `{` to close: remove it"
    if prev is not None and prev.type == found.type and found.type not in ("NAME", "STRING", "NUMBER"):
        return f"remove the repeated `{found.value}`"
    if found.type == "EQUAL" and "COMP_OP" in expected:
        return "use `==` to compare; `=` only binds a `let` or a default"
    if (
        prev is not None
        and (prev.type in _OPERATORS or prev.type == "EQUAL")
        and prev.type != "DOT"
        and len(expected & _EXPRESSION_START) >= 4
        and found.type not in _EXPRESSION_START
        and found.type != prev.type
    ):
        return f"`{prev.value}` needs an operand after it"
    if found.type in _COMPARISONS and expected & {"AND", "OR"}:
        return "comparisons do not chain: write `a < b and b < c`"
    if found.type in ("ALLOW", "REMOVE", "INTERVENE") and "THEN" in expected:
        return f"write `then {found.value}`: a rule reads `when <condition> then <action> because \"<reason>\"`"
    if found.type == "STRING" and "BECAUSE" in expected and prev is not None and prev.type in ("ALLOW", "REMOVE", "RPAR", "NAME"):
        return "write `because` before the reason: `because \"...\"`"
    if found.type == "NAME" and prev is not None and prev.type == "STRING" and prev.end_pos == found.start_pos:
        return 'a string ends at the next `"`: to put a quote inside a string, write `\\"`'
    if (
        _is_keyword(found)
        and "NAME" in expected
        and found.type not in _OPERATORS
        and found.type not in ("TRUE", "FALSE", "HAS", "ANY", "ALL")
        and (not where.first_on_line or (where.next is not None and where.next.type in _NAME_FOLLOWERS))
    ):
        return f"`{found.value}` is a reserved word and cannot be a name; rename it (`{found.value}_` would do)"
    if where.open_paren and "RPAR" in expected and (found.type in _STATEMENT_STARTERS or found.type in _CLAUSES or found.type in ("RBRACE", "$END")):
        return f"the `(` on {where.open_paren} is never closed"
    if where.open_block and "RBRACE" in expected and (found.type == "$END" or found.type in _STATEMENT_STARTERS):
        return f"{where.open_block} is missing its closing `}}`"
    if found.type == "$END" and "RBRACE" in expected:
        return "a `{` is not closed"
    if found.type == "NAME" and not expected & {"AND", "OR"}:
        words = [word for name, word in _keyword_names().items() if name in expected]
        guess = difflib.get_close_matches(found.value, words, n=1, cutoff=0.8)
        if guess:
            return f"did you mean `{guess[0]}`?"
    if found.type == "NAME" and "COMMA" in expected and prev is not None and prev.type in ("STRING", "NUMBER", "TRUE", "FALSE", "RSQB", "RBRACE"):
        return "separate the entries with `,`"
    if found.type == "NAME" and "COLON" in expected and prev is not None and prev.type == "NAME":
        return "a field is declared as `name: type`"
    if found.type == "NAME" and ("AND" in expected or "OR" in expected):
        return "join conditions with `and` or `or`"
    if where.inserted is not None:
        return f"{_friendly(where.inserted)} may be missing before it"
    return None


@functools.cache
def _parser() -> lark.Lark:
    """One parser per process; the LALR tables are cached on disk between runs."""
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=True,
    )


@functools.cache
def _keywords() -> dict[str, str]:
    """Reserved word -> terminal name, from the grammar itself."""
    return {
        t.pattern.value: t.name
        for t in _parser().terminals
        if t.pattern.type == "str" and re.fullmatch(r"[a-z_]+", t.pattern.value)
    }


@functools.cache
def _keyword_names() -> dict[str, str]:
    """Terminal name -> reserved word."""
    return {name: word for word, name in _keywords().items()}


def parse_file(path: str, data: bytes) -> tuple[ast.File | None, Source, list[Diagnostic]]:
    """Decode and parse one file's bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        good = data[: e.start].decode("utf-8")
        text = data.decode("utf-8", errors="replace")
        source = Source(path, text)
        offset = len(good)
        return (
            None,
            source,
            [
                Diagnostic(
                    "P006",
                    f"file is not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start}",
                    Span(source, offset, offset + 1),
                    help="save the file as UTF-8",
                )
            ],
        )
    if text.startswith("\ufeff"):
        text = " " + text[1:]  # a BOM is harmless; keep offsets stable
    return parse_text(path, text)


def parse_text(path: str, text: str) -> tuple[ast.File | None, Source, list[Diagnostic]]:
    source = Source(path, text)
    diags: list[Diagnostic] = []
    tokens, quiet, gave_up = _lex(source, diags)
    if gave_up:
        return None, source, diags
    tokens, quiet = _cut_deep(tokens, quiet)
    tree = _parse_tokens(source, tokens, diags, quiet)
    if tree is None or any(d.is_error for d in diags):
        return None, source, diags
    # Problems the builder finds (bad escapes, numbers out of range, ...) leave a
    # complete AST, so checking goes on and reports the rest of the file too.
    return _Builder(source, diags).file(tree), source, diags


def _cut_deep(tokens: list[Token], quiet: set[int]) -> tuple[list[Token], set[int]]:
    """`tokens` with the inside of every bracket pair nested deeper than _CUT_DEPTH left out.

    The builder reports P005 above MAX_DEPTH, and every bracket below the statement
    braces adds a level, so what lies that deep is P005 whatever it is (only a syntax
    error in there goes unreported); the brackets themselves stay, so the P005 span is
    the same. It saves Lark building a tree that deep: 100,000 nested parentheses parse
    in half a second, not five. Unbalanced brackets are parsed as written (their syntax
    error says more). The indexes in `quiet` are mapped to the new list.
    """
    closing = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}
    stack: list[int] = []
    cuts: list[tuple[int, int]] = []  # (opening index, closing index), in order, disjoint
    for i, tok in enumerate(tokens):
        if tok.type in ("LPAR", "LSQB", "LBRACE"):
            stack.append(i)
        elif tok.type in closing:
            if not stack or tokens[stack[-1]].type != closing[tok.type]:
                return tokens, quiet
            opening = stack.pop()
            if len(stack) == _CUT_DEPTH and i > opening + 1:
                cuts.append((opening, i))
    if stack or not cuts:
        return tokens, quiet
    kept: list[Token] = []
    index: dict[int, int] = {}  # old index -> new, for the tokens kept
    start = 0
    for opening, close in cuts:
        for j in range(start, opening + 1):
            index[j] = len(kept)
            kept.append(tokens[j])
        if tokens[opening].type == "LPAR":  # `(...)` needs an expression inside: `true` stands in
            kept.append(Token.new_borrow_pos("TRUE", "true", tokens[close]))
        start = close
    for j in range(start, len(tokens)):
        index[j] = len(kept)
        kept.append(tokens[j])
    return kept, {index[q] for q in quiet if q in index}


# ---- lexing -----------------------------------------------------------------------


def _too_many(source: Source, pos: int) -> Diagnostic:
    return Diagnostic(
        "P008",
        f"too many syntax errors; stopped after {MAX_ERRORS}",
        Span(source, pos, min(pos + 1, len(source.text))),
        help="fix the errors above and check again",
    )


def _lex(source: Source, diags: list[Diagnostic]) -> tuple[list[Token], set[int], bool]:
    """The tokens, the indexes where a parse error would only echo a lexical one, and
    whether lexing gave up (P008)."""
    text = source.text
    tokens: list[Token] = []
    quiet: set[int] = set()
    offset = 0
    errors = 0
    while True:
        pos = _scan(text, offset, tokens)
        if pos is None:
            return tokens, quiet, False
        if errors >= MAX_ERRORS:
            diags.append(_too_many(source, pos))
            return tokens, quiet, True
        errors += 1
        skip, stand_in = _lex_error(source, pos, tokens, diags)
        if stand_in is not None:
            tokens.append(stand_in)
        # whatever the parser says about the stand-in, or the token after a skipped
        # character, the lexical error already said
        quiet.add(len(tokens) - 1 if stand_in is not None else len(tokens))
        offset = stand_in.end_pos if stand_in is not None else pos + skip


@functools.cache
def _scanner() -> tuple[re.Pattern, re.Pattern, dict[str, str]]:
    """The grammar's terminals as one regex, ignored text and then one token a match.

    Equivalent to Lark's basic lexer (same terminals, same order, keywords lexed as
    NAME and then retyped), at less than half its cost per token: Lark tries its regexes
    in Python and counts lines in every token, which made lexing most of the time a
    large file took. No token can hold a newline, so lines are counted between tokens.
    """
    conf = _parser().lexer_conf
    keywords = _keywords()
    ignored = [t for t in conf.terminals if t.name in conf.ignore]
    terminals = [t for t in conf.terminals if t.name not in conf.ignore and not (t.pattern.type == "str" and t.pattern.value in keywords)]
    terminals.sort(key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name))  # Lark's own order
    skip = "(?>(?:" + "|".join(t.pattern.to_regexp() for t in ignored) + ")*)"  # atomic: a comment never gives back its tail
    token = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals)
    return re.compile(f"{skip}(?:{token})"), re.compile(skip), keywords


def _scan(text: str, pos: int, tokens: list[Token]) -> int | None:
    """Append the tokens of `text` from `pos` on; the position of a character no token
    matches, or None at the end."""
    pattern, skip, keywords = _scanner()
    match = pattern.match
    new = Token._future_new  # Token() itself only adds a deprecation check
    count = text.count
    line = count("\n", 0, pos) + 1
    line_start = text.rfind("\n", 0, pos) + 1
    while m := match(text, pos):
        kind = m.lastgroup
        start = m.start(kind)
        end = m.end()
        if newlines := count("\n", pos, start):
            line += newlines
            line_start = text.rfind("\n", pos, start) + 1
        value = text[start:end]
        if kind == "NAME":
            kind = keywords.get(value, "NAME")
        column = start - line_start + 1
        tokens.append(new(kind, value, start, line, column, line, column + end - start, end))
        pos = end
    pos = skip.match(text, pos).end()
    return None if pos == len(text) else pos


def tokenize(text: str) -> list[Token] | None:
    """Every token of `text`, comments and whitespace left out; None if a character lexes as no token."""
    tokens: list[Token] = []
    return tokens if _scan(text, 0, tokens) is None else None


def _next_line(text: str, line_end: int) -> str | None:
    """The line after the one ending at `line_end`, if any."""
    if line_end >= len(text):
        return None
    end = text.find("\n", line_end + 1)
    return text[line_end + 1 :] if end == -1 else text[line_end + 1 : end]


def _even_quotes(text: str) -> bool:
    """Whether `text` holds an even number of unescaped double quotes."""
    return len(re.findall(r'(?<!\\)"', text)) % 2 == 0


def _stand_in(source: Source, type_: str, value: str, start: int, end: int) -> Token:
    line, col = source.line_col(start)
    end_line, end_col = source.line_col(end)
    return Token(type_, value, start, line, col, end_line, end_col, end)


def _lex_error(source: Source, pos: int, tokens: list[Token], diags: list[Diagnostic]) -> tuple[int, Token | None]:
    """Report the bad text at `pos`; return how much to skip, or a token standing in for it."""
    text = source.text
    ch = text[pos]
    line_end = text.find("\n", pos)
    line_end = len(text) if line_end == -1 else line_end
    if ch == '"':
        end = line_end
        following = _next_line(text, line_end)
        wrapped = re.match(r'(?:[^"\\]|\\.)*+"', following) if following is not None else None
        if wrapped is not None and _even_quotes(following[wrapped.end() :]):
            # a string wrapped onto the next line, closed there: one error, and the
            # string ends where its author ended it
            close = line_end + 1 + wrapped.end()
            diags.append(
                Diagnostic(
                    "P003",
                    "a string cannot span lines",
                    Span(source, pos, end),
                    help="join the two lines, or write `\\n` for a line break inside the string",
                )
            )
            return close - pos, _stand_in(source, "STRING", '""', pos, close)
        line_start = text.rfind("\n", 0, pos) + 1
        # brackets closing the line are more likely the author's than the string's:
        # leave them to the parser, so a `given { a: "x }` still closes its object
        while end > pos + 1 and text[end - 1] in " \t\r{}[](),":
            end -= 1
        diags.append(
            Diagnostic(
                "P003",
                "unterminated string",
                Span(source, pos, end),
                help='close the string with `"` on the same line, or remove a stray `"` before it (a quote inside a string is `\\"`)'
                if text.count('"', line_start, pos)
                else 'close the string with `"` on the same line; write `\\n` for a line break',
            )
        )
        return end - pos, _stand_in(source, "STRING", '""', pos, end)
    if ch == "'":
        close = text.find("'", pos + 1, line_end)
        if close != -1:
            inner = text[pos + 1 : close]
            diags.append(
                Diagnostic(
                    "P002",
                    "strings are written in double quotes, not `'`",
                    Span(source, pos, close + 1),
                    help=f"write \"{inner}\"" if '"' not in inner and len(inner) <= 60 else 'write "..."',
                )
            )
            return close + 1 - pos, _stand_in(source, "STRING", '""', pos, close + 1)
    if ch.isalpha() or ch == "_":
        start = pos
        if tokens and tokens[-1].type == "NAME" and tokens[-1].end_pos == pos:
            start = tokens.pop().start_pos  # `näme`: the lexer took `n` as a name
        end = pos
        while end < len(text) and (text[end].isalnum() or text[end] == "_"):
            end += 1
        word = text[start:end]
        lower = word.lower()
        ascii_ok = lower.isascii() and re.fullmatch(r"[a-z_][a-z0-9_]*", lower) is not None
        diags.append(
            Diagnostic(
                "P002",
                f"invalid name `{word}`",
                Span(source, start, end),
                help=f"names are lowercase letters, digits and `_`: try `{lower}`"
                if ascii_ok
                else "names are lowercase ASCII letters, digits and `_`",
            )
        )
        kind = _keywords().get(lower, "NAME") if ascii_ok else "NAME"
        return end - pos, _stand_in(source, kind, lower if ascii_ok else "name", start, end)
    two = text[pos : pos + 2]
    pairs = {"&&": ("AND", "and"), "||": ("OR", "or")}
    if two in pairs:
        kind, word = pairs[two]
        diags.append(Diagnostic("P002", f"unexpected `{two}`", Span(source, pos, pos + 2), help=f"use `{word}`"))
        return 2, _stand_in(source, kind, word, pos, pos + 2)
    singles = {
        "!": ("NOT", "not", "use `not` for negation (`!=` is fine for inequality)"),
        "&": ("AND", "and", "use `and`"),
        "|": ("OR", "or", "use `or`"),
    }
    if ch in singles:
        kind, word, help_ = singles[ch]
        diags.append(Diagnostic("P002", f"unexpected character `{ch}`", Span(source, pos, pos + 1), help=help_))
        return 1, _stand_in(source, kind, word, pos, pos + 1)
    helps = {
        ";": "pol needs no `;`: a clause ends where the next one begins",
        "%": "pol has no `%`: write a share as a fraction, such as `0.8`",
        "'": 'strings are written in double quotes: "..."',
    }
    shown = repr(ch) if not ch.isprintable() or ch.isspace() else f"`{ch}`"
    diags.append(Diagnostic("P002", f"unexpected character {shown}", Span(source, pos, pos + 1), help=helps.get(ch)))
    return 1, None


# ---- parsing with recovery ----------------------------------------------------------


def _parse_tokens(source: Source, tokens: list[Token], diags: list[Diagnostic], quiet: set[int]) -> Tree | None:
    parser = _parser()
    state = parser.parse_interactive("").parser_state
    n = len(tokens)
    # depth_before[i]: open braces before token i (tokens[n] is the end of file);
    # opener[i]: the index of the innermost `{` open before token i, or -1
    depth_before = [0] * (n + 1)
    opener = [-1] * (n + 1)
    stack: list[int] = []
    for i, tok in enumerate(tokens):
        depth_before[i] = len(stack)
        opener[i] = stack[-1] if stack else -1
        if tok.type == "LBRACE":
            stack.append(i)
        elif tok.type == "RBRACE" and stack:
            stack.pop()
    depth_before[n] = len(stack)
    opener[n] = stack[-1] if stack else -1
    closed: set[int] = set()  # `{`s closed by a `}` the parser supplied

    def open_block(i: int) -> str | None:
        k = opener[i]
        while k in closed:
            k = opener[k]
        return _describe_block(source, tokens, k) if k != -1 else None

    # snapshots: states at statement boundaries, to resume from after an error;
    # checkpoint: the latest state on the path actually parsed, at most _CHECKPOINT_EVERY
    # tokens back, to rebuild the state just before a failing token cheaply. Only the
    # latest is kept: each copies the parser stack, so keeping them all would cost
    # tokens / _CHECKPOINT_EVERY * nesting depth (gigabytes for 100,000 nested parentheses)
    snapshots: list[tuple[int, object]] = [(0, state.copy(deepcopy_values=False))]
    checkpoint: tuple[int, object] = snapshots[0]
    reported = sum(1 for d in diags if d.is_error)  # lexical errors count too
    # a second error on a line, after a lexical or syntax error there, is most likely
    # an echo of the first: not reported
    noisy_lines = {d.span.line for d in diags}
    repaired_at: set[int] = set()  # a token gets one repair attempt
    last_resume = -1
    resumed_here = False
    i = 0
    prev: Token | None = None
    while i <= n:
        is_end = i == n
        if not is_end:
            tok = tokens[i]
            if i > 0 and not resumed_here:
                if depth_before[i] <= _SNAPSHOT_DEPTH and (
                    tok.type in _STATEMENT_STARTERS or prev is not None and prev.type in ("LBRACE", "RBRACE")
                ):
                    snapshots.append((i, state.copy(deepcopy_values=False)))
                    checkpoint = snapshots[-1]
                elif i - checkpoint[0] >= _CHECKPOINT_EVERY:
                    checkpoint = (i, state.copy(deepcopy_values=False))
        else:
            tok = _end_token(source, tokens)
        resumed_here = False
        try:
            result = state.feed_token(tok, is_end)
        except UnexpectedToken as e:
            before = _replay(checkpoint, tokens, i)
            first = _first_on_line(source, tokens, i)
            repaired = inserted = None
            if before is not None and not is_end and i not in repaired_at:
                repaired_at.add(i)
                if _is_keyword(tok) and first:
                    repaired = _close_blocks(before, tok, depth_before[i])
                if repaired is None:
                    inserted = _insert_missing(before, tok, tokens[i + 1] if i + 1 < n else None)
            line = _tok_span(source, tok).line
            if i not in quiet and i != last_resume and line not in noisy_lines:
                if reported >= MAX_ERRORS:
                    diags.append(_too_many(source, _tok_span(source, tok).start))
                    return None
                expected = _accepts(before) if before is not None else set(e.expected)
                where = _Where(
                    prev,
                    tokens[i + 1] if i + 1 < n else None,
                    first,
                    _unclosed_at_end(source, tokens) if is_end else open_block(i),
                    _open_paren(source, tokens, i),
                    closes_block=repaired is not None,
                    inserted=inserted[0] if inserted is not None else None,
                )
                diags.append(_syntax_error(source, tok, expected, where))
                noisy_lines.add(line)
                reported += 1
            if is_end:
                return None
            if repaired is not None:
                # parse on as if the missing `}`s were there
                m, state = repaired
                k = opener[i]
                for _ in range(m):
                    while k in closed:
                        k = opener[k]
                    closed.add(k)
                for j in range(i, n + 1):
                    depth_before[j] = max(0, depth_before[j] - m)
                snapshots.append((i, state.copy(deepcopy_values=False)))
                checkpoint = snapshots[-1]
                resumed_here = True
                continue
            if inserted is not None:
                # parse on as if the missing token were there
                kind, state = inserted
                if kind == "LBRACE":
                    for j in range(i, n + 1):
                        depth_before[j] += 1
                checkpoint = (i, state.copy(deepcopy_values=False))
                resumed_here = True
                continue
            # restore the latest snapshot no deeper than here, skip to the next statement
            here = depth_before[i]
            k = len(snapshots) - 1
            while k > 0 and depth_before[snapshots[k][0]] > here:
                k -= 1
            snap_index, snap_state = snapshots[k]
            del snapshots[k + 1 :]
            target = depth_before[snap_index]
            j = i + 1 if last_resume == i else i
            j = max(j, snap_index + 1)
            while j < n and not (
                depth_before[j] == target
                and (tokens[j].type in _STATEMENT_STARTERS or (tokens[j].type == "RBRACE" and target > 0))
            ):
                j += 1
            # the tree is thrown away now: parse on without building it
            state = snap_state.copy(deepcopy_values=False)
            state.parse_conf = _no_callbacks(state.parse_conf)
            checkpoint = (j, state.copy(deepcopy_values=False))
            resumed_here = True
            last_resume = i = j
            prev = tokens[j - 1] if j > 0 else None
            continue
        if is_end:
            return result if reported == 0 else None
        prev = tok
        i += 1
    return None


def _end_token(source: Source, tokens: list[Token]) -> Token:
    last = tokens[-1] if tokens else None
    tok = Token.new_borrow_pos("$END", "", last) if last is not None else Token("$END", "", 0, 1, 1)
    tok.start_pos = tok.end_pos = last.end_pos if last is not None else len(source.text)
    return tok


def _first_on_line(source: Source, tokens: list[Token], i: int) -> bool:
    if i == 0 or i >= len(tokens):
        return True
    return source.line_col(tokens[i - 1].end_pos)[0] < source.line_col(tokens[i].start_pos)[0]


def _describe_block(source: Source, tokens: list[Token], k: int) -> str:
    """How an author names the block opened by the `{` at tokens[k]."""
    line = source.line_col(tokens[k].start_pos)[0]
    kinds = [t.type for t in tokens[max(0, k - 4) : k]]
    values = [t.value for t in tokens[max(0, k - 4) : k]]
    if kinds[-2:] == ["RULE", "NAME"]:
        what = f"rule `{values[-1]}`"
    elif kinds[-4:] == ["POLICY", "NAME", "FOR", "NAME"]:
        what = f"policy `{values[-3]}`"
    elif kinds[-2:] == ["SCHEMA", "NAME"]:
        what = f"schema `{values[-1]}`"
    elif kinds[-2:] == ["TEST", "NAME"]:
        what = f"test `{values[-1]}`"
    elif kinds[-2:] == ["CASE", "STRING"]:
        shown = values[-1] if len(values[-1]) <= 30 else values[-1][:27] + '..."'
        what = f"case {shown}"
    elif kinds[-1:] == ["GIVEN"]:
        what = "the `given` object"
    else:
        what = "the `{`"
    return f"{what} (opened on line {line})"


def _unclosed_at_end(source: Source, tokens: list[Token]) -> str | None:
    """The block most likely left open at the end of the file.

    Braces are matched by counting; a block whose `}` (so matched) sits at another
    indentation than the line that opened it is the likelier culprit than the
    outermost block the count leaves open.
    """
    stack: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.type == "LBRACE":
            stack.append(i)
        elif tok.type == "RBRACE" and stack:
            k = stack.pop()
            open_line, _ = source.line_col(tokens[k].start_pos)
            close_line, close_col = source.line_col(tok.start_pos)
            if close_line != open_line and _first_on_line(source, tokens, i) and close_col - 1 != _indent(source, open_line):
                return _describe_block(source, tokens, k)
    return _describe_block(source, tokens, stack[-1]) if stack else None


def _indent(source: Source, line: int) -> int:
    text = source.line_text(line)
    return len(text) - len(text.lstrip(" \t"))


def _open_paren(source: Source, tokens: list[Token], i: int) -> str | None:
    """Where the innermost `(` still open before tokens[i] in this clause is, if any."""
    depth = 0
    for k in range(i - 1, -1, -1):
        kind = tokens[k].type
        if kind == "RPAR":
            depth += 1
        elif kind == "LPAR":
            if depth == 0:
                line, col = source.line_col(tokens[k].start_pos)
                return f"line {line}, column {col}"
            depth -= 1
        elif kind in _STATEMENT_STARTERS or kind in _CLAUSES or kind in ("LBRACE", "RBRACE"):
            return None
    return None


def _replay(snapshot: tuple[int, object], tokens: list[Token], i: int):
    """The parser state just before token `i`, rebuilt from a snapshot (None if that fails)."""
    index, state = snapshot
    state = state.copy(deepcopy_values=False)
    state.parse_conf = _no_callbacks(state.parse_conf)
    try:
        for tok in tokens[index:i]:
            state.feed_token(tok)
    except UnexpectedToken:
        return None
    return state


def _virtual(kind: str, at: Token) -> Token:
    tok = Token.new_borrow_pos(kind, _keyword_names().get(kind, ""), at)
    tok.end_pos = tok.start_pos
    return tok


# Tokens an author most often leaves out, in the order a repair tries them.
_INSERTABLE = ("THEN", "BECAUSE", "RPAR", "RSQB", "LBRACE", "COMMA", "COLON", "EQUAL")


def _insert_missing(before, tok: Token, nxt: Token | None):
    """The one left-out token after which `tok` (and the token after it) fit: (kind, state), or None."""
    for kind in _INSERTABLE:
        state = before.copy(deepcopy_values=False)
        try:
            state.feed_token(_virtual(kind, tok))
            probe = state.copy(deepcopy_values=False)
            probe.feed_token(tok)
            if nxt is not None:
                probe.feed_token(nxt)
        except UnexpectedToken:
            continue
        return kind, state
    return None


def _close_blocks(before, tok: Token, limit: int):
    """Feed up to `limit` `}`s until `tok` fits: (how many, the state), or None."""
    state = before.copy(deepcopy_values=False)
    for m in range(1, limit + 1):
        try:
            state.feed_token(_virtual("RBRACE", tok))
        except UnexpectedToken:
            return None
        try:
            state.copy(deepcopy_values=False).feed_token(tok)
        except UnexpectedToken:
            continue
        return m, state
    return None


def _accepts(state) -> set[str]:
    """The terminals that the parser would really accept in `state`.

    LALR default reductions make the table's "expected" set at the failure point
    too broad; probing each terminal on a copy of the state before the failing
    token is exact, and errors are rare enough that the cost does not matter.
    """
    accepted = set()
    for terminal in state.parse_conf.states[state.position]:
        if not terminal.isupper():
            continue
        try:
            state.copy(deepcopy_values=False).feed_token(Token(terminal, ""), terminal == "$END")
        except UnexpectedToken:
            continue
        accepted.add(terminal)
    return accepted


class _NoTree(dict):
    """Callbacks that build nothing: every reduction yields None."""

    def __missing__(self, key):
        return _nothing


def _nothing(*_args):
    return None


def _no_callbacks(conf):
    """The parse configuration without tree-building callbacks, for replaying and probing."""
    if isinstance(conf.callbacks, _NoTree):
        return conf
    quiet = copy(conf)
    quiet.callbacks = _NoTree()
    return quiet


def _tok_span(source: Source, tok: Token) -> Span:
    start = tok.start_pos if tok.start_pos is not None else len(source.text)
    end = tok.end_pos if tok.end_pos is not None else start
    return Span(source, start, max(end, start))


def _syntax_error(source: Source, tok: Token, expected: set[str], where: _Where) -> Diagnostic:
    span = _tok_span(source, tok)
    if tok.type == "$END":
        if span.start > 0:  # point at the last character, which is visible
            span = Span(source, span.start - 1, span.start)
        return Diagnostic(
            "P007",
            f"unexpected end of file, expected {_describe_expected(expected, where.prev)}",
            span,
            help=_hint(tok, expected, where),
        )
    return Diagnostic(
        "P001",
        f"unexpected {_describe_found(tok)}, expected {_describe_expected(expected, where.prev)}",
        span,
        help=_hint(tok, expected, where),
    )


# ---- tree to AST ------------------------------------------------------------------------

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


class _TooDeep(Exception):
    """Unwinds the builder out of an over-deep subtree; reported once as P005."""

    def __init__(self, span: Span, help: str) -> None:
        self.span = span
        self.help = help


_SPLIT_EXPRESSION = "split the expression into named parts with `let`s"
_FLATTEN_VALUE = "lists and objects in defaults, arguments and test inputs nest at most 100 levels"


class _Builder:
    def __init__(self, source: Source, diags: list[Diagnostic]) -> None:
        self.source = source
        self.diags = diags

    # spans
    def span(self, node: Tree | Token) -> Span:
        if isinstance(node, Token):
            return Span(self.source, node.start_pos, node.end_pos)
        meta = node.meta
        if getattr(meta, "empty", True):
            return Span(self.source, 0, 0)
        return Span(self.source, meta.start_pos, meta.end_pos)

    def error(self, code: str, message: str, span: Span, help: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, help=help))

    # leaves
    def string(self, tok: Token) -> str:
        raw = tok.value[1:-1]
        if "\\" not in raw:
            return raw
        out: list[str] = []
        i = 0
        while i < len(raw):
            c = raw[i]
            if c != "\\":
                out.append(c)
                i += 1
                continue
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and raw[i + 2 : i + 3] == "{":
                close = raw.find("}", i + 3)
                digits = raw[i + 3 : close] if close != -1 else ""
                if close != -1 and 1 <= len(digits) <= 6 and all(d in "0123456789abcdefABCDEF" for d in digits):
                    cp = int(digits, 16)
                    if cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF:
                        out.append(chr(cp))
                        i = close + 1
                        continue
                start = tok.start_pos + 1 + i
                end = tok.start_pos + 1 + (close + 1 if close != -1 else i + 2)
                span = Span(self.source, start, end)
                if close != -1 and 1 <= len(digits) <= 6 and all(d in "0123456789abcdefABCDEF" for d in digits):
                    self.error("P004", f"`{span.text}` is not a Unicode character", span, help="code points run from 0 to 10FFFF, without the surrogates D800 to DFFF")
                else:
                    self.error("P004", "invalid unicode escape", span, help="write `\\u{1F600}`: 1 to 6 hex digits naming a code point")
                i = (close + 1) if close != -1 else i + 2
                continue
            start = tok.start_pos + 1 + i
            help_ = 'valid escapes are `\\"`, `\\\\`, `\\n`, `\\t` and `\\u{...}`'
            if nxt == "u":
                digits = re.match(r"[0-9a-fA-F]{1,6}", raw[i + 2 :])
                help_ = f"write `\\u{{{digits.group() if digits else '41'}}}`: the hex digits go in braces"
            elif nxt == "x":
                help_ = "write `\\u{41}`: the hex digits go in braces"
            elif nxt in ("d", "w", "s", "b", ".", "(", ")", "[", "]", "+", "*", "?"):
                help_ = f"for a regex escape, double the backslash: `\\\\{nxt}`"
            self.error(
                "P004",
                f"invalid escape sequence `\\{clip(nxt, 1)}`",
                Span(self.source, start, start + 2),
                help=help_,
            )
            out.append("\\" + nxt)  # keep what was written, so a regex does not cascade into E108
            i += 2
        return "".join(out)

    def number(self, tok: Token, negative: bool = False) -> ast.Literal:
        text = tok.value
        span = self.span(tok)
        try:
            if "." in text or "e" in text or "E" in text:
                value: int | float = float(text)
                if math.isinf(value):
                    raise ValueError
                kind = "float"
            else:
                value = int(text)
                kind = "int"
        except ValueError:
            self.error("E118", f"number `{text[:40]}` is out of range", span, help="numbers must fit in a 64-bit float")
            return ast.Literal(0, "int", span)
        if kind == "int" and abs(value) > 2**63:
            self.error("E118", f"integer `{text[:40]}` is out of range", span, help="integers must fit in 64 bits")
        return ast.Literal(-value if negative else value, kind, span)

    def dotted(self, tree: Tree) -> tuple[tuple[str, ...], Span]:
        return tuple(t.value for t in tree.children), self.span(tree)

    # file structure
    def file(self, tree: Tree) -> ast.File:
        items = []
        for child in tree.children:
            try:
                item = getattr(self, "item_" + child.data)(child)
            except _TooDeep as e:
                self.error("P005", f"nesting too deep (more than {MAX_DEPTH} levels)", e.span, help=e.help)
                continue
            items.append(item)
        return ast.File(self.source.path, tuple(items), Span(self.source, 0, len(self.source.text)))

    def item_import_(self, tree: Tree) -> ast.Import:
        return ast.Import(self.string(tree.children[1]), self.span(tree))

    def item_let(self, tree: Tree) -> ast.Let:
        _, name, expr = tree.children
        return ast.Let(name.value, self.expr(expr, 0), self.span(tree), self.span(name))

    def item_schema(self, tree: Tree) -> ast.Schema:
        name = tree.children[1]
        fields = tuple(self.field_decl(c) for c in tree.children[2:] if isinstance(c, Tree))
        return ast.Schema(name.value, fields, self.span(tree), self.span(name))

    def field_decl(self, tree: Tree) -> ast.FieldDecl:
        path, _ = self.dotted(tree.children[0])
        rest = tree.children[1:]
        optional = bool(rest and isinstance(rest[0], Token) and rest[0].type == "OPTIONAL")
        if optional:
            rest = rest[1:]
        type_ = self.type_expr(rest[0])
        default = self.value(rest[1], 0) if len(rest) > 1 else None
        return ast.FieldDecl(path, type_, optional, default, self.span(tree))

    def type_expr(self, tree: Tree) -> ast.TypeExpr:
        span = self.span(tree)
        if tree.data == "named_type":
            return ast.PrimType(tree.children[0].value, span)
        if tree.data == "enum_type":
            head = tree.children[0]
            values = tuple(self.string(t) for t in tree.children[1:])
            if head.value != "enum":
                self.error("E117", f"unknown type `{head.value}(...)`", self.span(head), help='an enumeration is written `enum("a", "b")`')
            return ast.EnumType(values, span)
        head, _, element, _ = tree.children
        if head.value not in ("list", "set"):
            self.error("E117", f"unknown collection type `{head.value}<...>`", self.span(head), help="collections are `list<T>` and `set<T>`")
        return ast.CollectionType(head.value, self.type_expr(element), span)

    def item_policy(self, tree: Tree) -> ast.Policy:
        _, name, _, schema, *body = tree.children
        lets: list[ast.Let] = []
        rules: list[ast.Rule] = []
        clauses: list[ast.Clause] = []
        otherwise: ast.Otherwise | None = None
        for child in body:
            kind = child.data
            if kind == "let":
                lets.append(self.item_let(child))
            elif kind == "rule":
                rules.append(self.rule(child))
            elif kind == "otherwise":
                ow = self.otherwise(child)
                clauses.append(ast.Clause("otherwise", ow, ow.span))
                otherwise = otherwise or ow
            else:  # header
                kw, value = child.children
                text = self.string(value) if value.type == "STRING" else value.value
                clauses.append(ast.Clause(kw.value, (text, self.span(value)), self.span(child)))
        header: dict[str, str] = {}
        for c in clauses:
            if c.keyword != "otherwise" and c.keyword not in header:
                header[c.keyword] = c.value[0]
        return ast.Policy(
            name=name.value,
            schema=schema.value,
            version=header.get("version"),
            description=header.get("description"),
            owner=header.get("owner"),
            combine=header.get("combine", "most_severe"),
            lets=tuple(lets),
            rules=tuple(rules),
            otherwise=otherwise,
            clauses=tuple(clauses),
            span=self.span(tree),
            name_span=self.span(name),
            schema_span=self.span(schema),
        )

    def clauses(self, trees: list[Tree]) -> list[ast.Clause]:
        out = []
        for c in trees:
            kw, value = c.children
            span = self.span(c)
            if kw.type == "WHEN":
                out.append(ast.Clause("when", self.expr(value, 0), span))
            elif kw.type == "THEN":
                out.append(ast.Clause("then", self.action(value), span))
            elif kw.type in ("BECAUSE", "CITE"):
                out.append(ast.Clause(kw.value, self.string(value), span))
            else:  # tags
                out.append(ast.Clause("tags", tuple(self.string(t) for t in value.children), span))
        return out

    def rule(self, tree: Tree) -> ast.Rule:
        children = list(tree.children)
        shadow = children[0].type == "SHADOW"
        if shadow:
            children = children[1:]
        _, name, *body = children
        clauses = self.clauses(body)
        first = {}
        for c in clauses:
            first.setdefault(c.keyword, c.value)
        return ast.Rule(
            name=name.value,
            shadow=shadow,
            when=first.get("when"),
            action=first.get("then"),
            because=first.get("because"),
            cite=first.get("cite"),
            tags=first.get("tags", ()),
            clauses=tuple(clauses),
            span=self.span(tree),
            name_span=self.span(name),
        )

    def otherwise(self, tree: Tree) -> ast.Otherwise:
        _, action, *body = tree.children
        clauses = self.clauses(body)
        first = {}
        for c in clauses:
            first.setdefault(c.keyword, c.value)
        for c in clauses:
            if c.keyword not in ("because", "cite"):
                self.error("E106", f"`otherwise` takes only `because` and `cite`, not `{c.keyword}`", c.span)
        return ast.Otherwise(self.action(action), first.get("because"), first.get("cite"), self.span(tree))

    def action(self, tree: Tree) -> ast.Action:
        verdict = tree.children[0].value
        interventions = []
        for iv in tree.children[1:]:
            name, *args = iv.children
            parsed = []
            for arg in args:
                key, value = arg.children
                parsed.append((key.value, self.value(value, 0)))
            interventions.append(ast.Intervention(name.value, tuple(parsed), self.span(iv)))
        return ast.Action(verdict, tuple(interventions), self.span(tree))

    def item_test(self, tree: Tree) -> ast.Test:
        _, name, *cases = tree.children
        return ast.Test(name.value, tuple(self.case(c) for c in cases), self.span(tree), self.span(name))

    def case(self, tree: Tree) -> ast.Case:
        _, name, _, given, _, expectation = tree.children
        verdict_tree, *rest = expectation.children
        verdict = verdict_tree.children[0].value
        names: list[str] = []
        by: str | None = None
        by_span: Span | None = None
        seen_by = False
        for t in rest:
            if t.type == "BY":
                seen_by = True
            elif seen_by:
                by, by_span = t.value, self.span(t)
            else:
                names.append(t.value)
        expect = ast.Expect(verdict, tuple(names), by, self.span(expectation), by_span)
        return ast.Case(self.string(name), self.object(given, 0), expect, self.span(tree))

    # values (literals in defaults, arguments and test inputs)
    def value(self, tree: Tree | Token, depth: int):
        if depth > MAX_DEPTH:
            raise _TooDeep(self.span(tree), _FLATTEN_VALUE)
        kind = tree.data
        if kind == "object":
            return self.object(tree, depth)
        if kind == "list_value":
            return ast.ListLiteral(tuple(self.value(c, depth + 1) for c in tree.children), self.span(tree))
        if kind == "negative":
            return self.number(tree.children[1], negative=True)
        return self.literal(tree)

    def object(self, tree: Tree, depth: int) -> ast.ObjectLiteral:
        entries = []
        key_spans = []
        for entry in tree.children:
            path, span = self.dotted(entry.children[0])
            entries.append((path, self.value(entry.children[1], depth + 1)))
            key_spans.append(span)
        return ast.ObjectLiteral(tuple(entries), self.span(tree), tuple(key_spans))

    def literal(self, tree: Tree) -> ast.Literal:
        kind = tree.data
        span = self.span(tree)
        if kind == "string":
            return ast.Literal(self.string(tree.children[0]), "string", span)
        if kind == "number":
            return self.number(tree.children[0])
        if kind == "true":
            return ast.Literal(True, "bool", span)
        return ast.Literal(False, "bool", span)

    # expressions
    def expr(self, tree: Tree | Token, depth: int) -> ast.Expr:
        if depth > MAX_DEPTH:
            raise _TooDeep(self.span(tree), _SPLIT_EXPRESSION)
        kind = tree.data
        span = self.span(tree)
        d = depth + 1
        if kind in ("or_", "and_"):
            operands = [c for c in tree.children if isinstance(c, Tree)]
            if len(operands) == 1:
                # a lone operand: an `or_` here is a parenthesised group, one level deeper
                return self.expr(operands[0], d if kind == "or_" else depth)
            return ast.BoolOp(kind[:-1], tuple(self.expr(c, d) for c in operands), span)
        if kind == "not_":
            return ast.Not(self.expr(tree.children[1], d), span)
        if kind == "binary":
            left, op, right = tree.children
            return ast.Binary(op.value, self.expr(left, d), self.expr(right, d), span)
        if kind == "not_in":
            left, _, _, right = tree.children
            return ast.Binary("not in", self.expr(left, d), self.expr(right, d), span)
        if kind == "neg":
            operand = self.expr(tree.children[1], d)
            if isinstance(operand, ast.Literal) and operand.kind in ("int", "float"):
                return ast.Literal(-operand.value, operand.kind, span)
            return ast.Unary("-", operand, span)
        if kind == "name":
            path, _ = self.dotted(tree.children[0])
            return ast.Name(path, span)
        if kind == "has":
            path, nspan = self.dotted(tree.children[1])
            return ast.Has(ast.Name(path, nspan), span)
        if kind == "call":
            name, *args = tree.children
            return ast.Call(name.value, tuple(self.expr(a, d) for a in args), span, self.span(name))
        if kind == "quantifier":
            q, var, _, coll, body = tree.children
            path, cspan = self.dotted(coll)
            return ast.Quantifier(q.value, var.value, ast.Name(path, cspan), self.expr(body, d), span)
        if kind == "list_literal":
            items = []
            for c in tree.children:
                item = self.expr(c, d)
                items.append(item)
            return ast.ListLiteral(tuple(items), span)  # type: ignore[arg-type]
        return self.literal(tree)
