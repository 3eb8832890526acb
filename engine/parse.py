"""Parse: .pol text to an AST, reporting every syntax error in one pass.

Lark's LALR parser is driven token by token. Before each statement and after each
brace we keep a cheap copy of the parser state; on an error we report it, restore
the copy taken before the broken statement, skip to the next statement at the same
brace depth, and go on. So four broken rules give four diagnostics, and the rules
between them still parse.

The tree Lark builds is turned into frozen AST nodes with an explicit depth budget,
so 10,000 nested parentheses are a diagnostic, never a RecursionError.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import lark
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from . import ast
from .diagnostics import Diagnostic
from .source import Source, Span

__all__ = ["MAX_DEPTH", "parse_file", "parse_text"]

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
_EXPRESSION_START = frozenset("NAME STRING NUMBER TRUE FALSE LPAR LSQB HAS ANY ALL NOT SUB".split())
_CLAUSES = ("THEN", "BECAUSE", "CITE", "TAGS", "WHEN")


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
        return f"number `{tok.value}`"
    if tok.value.isalpha() or "_" in tok.value:
        return f"keyword `{tok.value}`"
    return f"`{tok.value}`"


def _describe_expected(expected: set[str]) -> str:
    expected = {e for e in expected if not e.startswith("__")}
    parts: list[str] = []
    clauses = [c for c in _CLAUSES if c in expected]
    if expected & _EXPRESSION_START and len(expected & _EXPRESSION_START) >= 4:
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


def _hint(found: Token, expected: set[str], prev: Token | None) -> str | None:
    """A targeted suggestion for the mistakes authors actually make."""
    if found.type == "EQUAL" and ("COMP_OP" in expected or expected & _OPERATORS):
        return "use `==` to compare; `=` only binds a `let` or a default"
    if found.type in ("ALLOW", "REMOVE", "INTERVENE") and "THEN" in expected:
        return f"write `then {found.value}`: a rule reads `when <condition> then <action> because \"<reason>\"`"
    if found.type == "STRING" and "BECAUSE" in expected and prev is not None and prev.type in (
        "ALLOW",
        "REMOVE",
        "RPAR",
        "NAME",
    ):
        return "write `because` before the reason: `because \"...\"`"
    if found.type == "$END" and "RBRACE" in expected:
        return "a `{` is not closed"
    if found.type in _STATEMENT_STARTERS and "RBRACE" in expected:
        return "the block before it may be missing its closing `}`"
    if found.type == "NAME" and "COLON" in expected and prev is not None and prev.type == "NAME":
        return "a field is declared as `name: type`"
    if found.type == "NAME" and ("AND" in expected or "OR" in expected):
        return "join conditions with `and` or `or`"
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
    tokens = _lex(source, diags)
    tree = _parse_tokens(source, tokens, diags)
    if tree is None or any(d.is_error for d in diags):
        return None, source, diags
    builder = _Builder(source, diags)
    file = builder.file(tree)
    if any(d.is_error for d in diags):
        return None, source, diags
    return file, source, diags


# ---- lexing -----------------------------------------------------------------------


def _lex(source: Source, diags: list[Diagnostic]) -> list[Token]:
    text = source.text
    parser = _parser()
    tokens: list[Token] = []
    offset = 0
    errors = 0
    while True:
        try:
            for tok in parser.lex(text[offset:] if offset else text):
                if offset:
                    tok.start_pos += offset
                    tok.end_pos += offset
                tokens.append(tok)
            return tokens
        except UnexpectedCharacters as e:
            pos = offset + e.pos_in_stream
            errors += 1
            if errors > MAX_ERRORS:
                diags.append(Diagnostic("P008", f"too many syntax errors; stopped after {MAX_ERRORS}", Span(source, pos, pos + 1)))
                return tokens
            skip = _lex_error(source, pos, diags)
            offset = pos + skip


def _lex_error(source: Source, pos: int, diags: list[Diagnostic]) -> int:
    """Report the bad character at `pos`; return how many characters to skip."""
    text = source.text
    ch = text[pos]
    if ch == '"':
        end = text.find("\n", pos)
        end = len(text) if end == -1 else end
        diags.append(
            Diagnostic(
                "P003",
                "unterminated string",
                Span(source, pos, end),
                help='close the string with `"` on the same line; write `\\n` for a line break',
            )
        )
        return max(1, end - pos)
    if ch.isalpha() or ch == "_":
        end = pos
        while end < len(text) and (text[end].isalnum() or text[end] == "_"):
            end += 1
        word = text[pos:end]
        diags.append(
            Diagnostic(
                "P002",
                f"invalid name `{word}`",
                Span(source, pos, end),
                help=f"names are lowercase letters, digits and `_`: try `{word.lower()}`"
                if word.lower().isascii()
                else "names are lowercase ASCII letters, digits and `_`",
            )
        )
        return end - pos
    two = text[pos : pos + 2]
    hints = {
        "&&": ("`&&`", "use `and`"),
        "||": ("`||`", "use `or`"),
    }
    if two in hints:
        what, help_ = hints[two]
        diags.append(Diagnostic("P002", f"unexpected {what}", Span(source, pos, pos + 2), help=help_))
        return 2
    single = {
        "!": "use `not` for negation, `!=` for inequality",
        "'": 'strings use double quotes: "..."',
        "&": "use `and`",
        "|": "use `or`",
    }
    shown = repr(ch) if not ch.isprintable() or ch.isspace() else f"`{ch}`"
    diags.append(
        Diagnostic("P002", f"unexpected character {shown}", Span(source, pos, pos + 1), help=single.get(ch))
    )
    return 1


# ---- parsing with recovery ----------------------------------------------------------


def _parse_tokens(source: Source, tokens: list[Token], diags: list[Diagnostic]) -> Tree | None:
    parser = _parser()
    state = parser.parse_interactive("").parser_state
    n = len(tokens)
    # depth_before[i]: open braces before token i (tokens[n] is the end of file)
    depth_before = [0] * (n + 1)
    depth = 0
    for i, tok in enumerate(tokens):
        depth_before[i] = depth
        if tok.type == "LBRACE":
            depth += 1
        elif tok.type == "RBRACE":
            depth = max(0, depth - 1)
    depth_before[n] = depth

    snapshots: list[tuple[int, object]] = [(0, state.copy(deepcopy_values=False))]
    errors = 0
    last_resume = -1
    i = 0
    prev: Token | None = None
    while i <= n:
        if i < n:
            tok = tokens[i]
            if i > 0 and (tok.type in _STATEMENT_STARTERS or prev is not None and prev.type in ("LBRACE", "RBRACE")):
                snapshots.append((i, state.copy(deepcopy_values=False)))
            is_end = False
        else:
            last = tokens[-1] if tokens else None
            tok = Token.new_borrow_pos("$END", "", last) if last is not None else Token("$END", "", 0, 1, 1)
            if last is not None:
                tok.start_pos = tok.end_pos = last.end_pos
            else:
                tok.start_pos = tok.end_pos = len(source.text)
            is_end = True
        try:
            result = state.feed_token(tok, is_end)
        except UnexpectedToken as e:
            errors += 1
            if errors > MAX_ERRORS:
                diags.append(Diagnostic("P008", f"too many syntax errors; stopped after {MAX_ERRORS}", _tok_span(source, tok)))
                return None
            # restore the latest snapshot no deeper than here, skip to the next statement
            here = depth_before[i]
            k = len(snapshots) - 1
            while k > 0 and depth_before[snapshots[k][0]] > here:
                k -= 1
            snap_index, snap_state = snapshots[k]
            if not any(d.span.line == _tok_span(source, tok).line for d in diags):
                expected = _accepts(snapshots[-1], tokens, i) or set(e.expected)
                diags.append(_syntax_error(source, tok, expected, prev))
            if is_end:
                return None
            del snapshots[k + 1 :]
            target = depth_before[snap_index]
            j = i + 1 if last_resume == i else i
            j = max(j, snap_index + 1)
            while j < n and not (
                depth_before[j] == target
                and (tokens[j].type in _STATEMENT_STARTERS or (tokens[j].type == "RBRACE" and target > 0))
            ):
                j += 1
            if j >= n:
                return None
            state = snap_state.copy(deepcopy_values=False)
            last_resume = i = j
            prev = tokens[j - 1] if j > 0 else None
            continue
        if is_end:
            return result if errors == 0 else None
        prev = tok
        i += 1
    return None


def _accepts(snapshot: tuple[int, object], tokens: list[Token], i: int) -> set[str]:
    """The terminals that the parser would really accept before token `i`.

    LALR default reductions make the table's "expected" set at the failure point
    too broad; replaying from the last snapshot and probing each terminal is exact,
    and errors are rare enough that the replay costs nothing that matters.
    """
    index, state = snapshot
    state = state.copy(deepcopy_values=False)
    try:
        for tok in tokens[index:i]:
            state.feed_token(tok)
    except UnexpectedToken:
        return set()
    accepted = set()
    for terminal in state.parse_conf.states[state.position]:
        if not terminal.isupper():
            continue
        probe = state.copy(deepcopy_values=False)
        probe.parse_conf = _NO_CALLBACKS(probe.parse_conf)
        try:
            probe.feed_token(Token(terminal, ""), terminal == "$END")
        except UnexpectedToken:
            continue
        except Exception:  # a reduce on a fake token may trip a callback; it was accepted
            pass
        accepted.add(terminal)
    return accepted


def _NO_CALLBACKS(conf):
    """The parse configuration without tree-building callbacks, for cheap probing."""
    from copy import copy

    quiet = copy(conf)
    quiet.callbacks = {}
    return quiet


def _tok_span(source: Source, tok: Token) -> Span:
    start = tok.start_pos if tok.start_pos is not None else len(source.text)
    end = tok.end_pos if tok.end_pos is not None else start
    return Span(source, start, max(end, start))


def _syntax_error(source: Source, tok: Token, expected: set[str], prev: Token | None) -> Diagnostic:
    span = _tok_span(source, tok)
    if tok.type == "$END":
        if span.start > 0:  # point at the last character, which is visible
            span = Span(source, span.start - 1, span.start)
        return Diagnostic(
            "P007",
            f"unexpected end of file, expected {_describe_expected(expected)}",
            span,
            help=_hint(tok, expected, prev),
        )
    return Diagnostic(
        "P001",
        f"unexpected {_describe_found(tok)}, expected {_describe_expected(expected)}",
        span,
        help=_hint(tok, expected, prev),
    )


# ---- tree to AST ------------------------------------------------------------------------

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


class _TooDeep(Exception):
    """Unwinds the builder out of an over-deep subtree; reported once as P005."""

    def __init__(self, span: Span) -> None:
        self.span = span


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
                self.error("P004", "invalid unicode escape", Span(self.source, start, end), help="write `\\u{1F600}`: 1 to 6 hex digits naming a code point")
                i = (close + 1) if close != -1 else i + 2
                continue
            start = tok.start_pos + 1 + i
            self.error(
                "P004",
                f"invalid escape sequence `\\{nxt}`",
                Span(self.source, start, start + 2),
                help='valid escapes are `\\"`, `\\\\`, `\\n`, `\\t` and `\\u{...}`',
            )
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
                self.error("P005", f"nesting too deep (more than {MAX_DEPTH} levels)", e.span, help="split the expression with `let`s")
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
            raise _TooDeep(self.span(tree))
        kind = tree.data
        if kind == "object":
            return self.object(tree, depth + 1)
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
            raise _TooDeep(self.span(tree))
        kind = tree.data
        span = self.span(tree)
        d = depth + 1
        if kind in ("or_", "and_"):
            operands = [c for c in tree.children if isinstance(c, Tree)]
            if len(operands) == 1:
                return self.expr(operands[0], depth)
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
