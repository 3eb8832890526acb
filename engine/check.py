"""Check: names, types, guards and structure of parsed files, against their schemas.

The output is a `Program`: the resolved schemas, each policy with the lets it can
see, and the test blocks, ready for `analyze` and `compile`. Problems are appended
to the diagnostics list; checking goes on after an error so one run reports all.
"""

from __future__ import annotations

import posixpath
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import re2

from . import ast
from .diagnostics import Diagnostic, clip, did_you_mean
from .format import expr_text
from .source import Span
from .types import (
    BOOL,
    FLOAT,
    INT,
    STRING,
    FieldInfo,
    SchemaInfo,
    Type,
    comparable,
)
from .validate import check_value, literal_value, validate_object

__all__ = ["CheckedPolicy", "Program", "check", "resolve_name"]

COMBINE_MODES = ("most_severe", "first_match")
FUNCTIONS = {"len": 1, "lower": 1}
_LIT_TYPES = {"string": STRING, "int": INT, "float": FLOAT, "bool": BOOL}
_PRIMS = {"string": STRING, "int": INT, "float": FLOAT, "bool": BOOL}


@dataclass
class CheckedPolicy:
    policy: ast.Policy
    schema: SchemaInfo
    lets: dict[str, ast.Let]  # every let visible in the policy, its own first
    path: str
    used_lets: set[str] = field(default_factory=set)


@dataclass
class Program:
    schemas: dict[str, SchemaInfo]
    policies: dict[str, CheckedPolicy]
    tests: list[tuple[ast.Test, str]]  # (test block, path)


def resolve_name(name: str, scope_vars: Iterable[str], lets: dict[str, ast.Let], schema: SchemaInfo) -> str:
    """What a bare name refers to: "var", "let", "field" or "unknown". One rule for all stages."""
    if name in scope_vars:
        return "var"
    if name in lets:
        return "let"
    if name in schema.fields:
        return "field"
    return "unknown"


def check(files: list[ast.File], diags: list[Diagnostic]) -> Program:
    return _Checker(files, diags).run()


class _Checker:
    def __init__(self, files: list[ast.File], diags: list[Diagnostic]) -> None:
        self.files = files
        self.by_path = {f.path: f for f in files}
        self.diags = diags

    def error(self, code: str, message: str, span: Span, help: str | None = None, notes=()) -> None:
        self.diags.append(Diagnostic(code, message, span, help=help, notes=tuple(notes)))

    # ---- the whole set -------------------------------------------------------------

    def run(self) -> Program:
        schemas: dict[str, SchemaInfo] = {}
        schema_spans: dict[str, Span] = {}
        for f in self.files:
            for s in f.of(ast.Schema):
                if s.name in schemas:
                    self.error("E105", f"schema `{s.name}` is declared twice", s.name_span, notes=[("first declared here", schema_spans[s.name])])
                    continue
                schemas[s.name] = self.schema(s)
                schema_spans[s.name] = s.name_span

        file_lets = {f.path: self.top_lets(f) for f in self.files}
        visible_top: dict[str, dict[str, ast.Let]] = {}
        for f in self.files:
            visible: dict[str, ast.Let] = {}
            for imp in f.of(ast.Import):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(f.path), imp.path))
                if target not in self.by_path:
                    known = [posixpath.relpath(p, posixpath.dirname(f.path) or ".") for p in self.by_path if p != f.path]
                    guess = did_you_mean(imp.path, known)
                    self.error(
                        "E110",
                        f'cannot import "{imp.path}": no such file in this policy set',
                        imp.span,
                        help=f'did you mean "{guess}"?' if guess else "imports are paths relative to the importing file",
                    )
                    continue
                visible.update(file_lets[target])
            visible.update(file_lets[f.path])
            visible_top[f.path] = visible

        policies: dict[str, CheckedPolicy] = {}
        policy_spans: dict[str, Span] = {}
        for f in self.files:
            for p in f.of(ast.Policy):
                if p.name in policies:
                    self.error("E105", f"policy `{p.name}` is declared twice", p.name_span, notes=[("first declared here", policy_spans[p.name])])
                    continue
                policy_spans[p.name] = p.name_span
                checked = self.policy(p, f.path, schemas, visible_top[f.path])
                if checked is not None:
                    policies[p.name] = checked

        tests: list[tuple[ast.Test, str]] = []
        for f in self.files:
            for t in f.of(ast.Test):
                self.test(t, policies, policy_spans)
                tests.append((t, f.path))
        return Program(schemas, policies, tests)

    def top_lets(self, f: ast.File) -> dict[str, ast.Let]:
        lets: dict[str, ast.Let] = {}
        for let in f.of(ast.Let):
            if let.name in lets:
                self.error("E105", f"let `{let.name}` is declared twice", let.name_span, notes=[("first declared here", lets[let.name].name_span)])
                continue
            lets[let.name] = let
        return lets

    # ---- schemas ------------------------------------------------------------------

    def type_expr(self, t: ast.TypeExpr) -> Type | None:
        if isinstance(t, ast.PrimType):
            if t.name in _PRIMS:
                return _PRIMS[t.name]
            guess = did_you_mean(t.name, [*_PRIMS, "enum", "list", "set"])
            self.error("E117", f"unknown type `{t.name}`", t.span, help=f"did you mean `{guess}`?" if guess else "types are string, int, float, bool, enum(...), list<T> and set<T>")
            return None
        if isinstance(t, ast.EnumType):
            seen: set[str] = set()
            for v in t.values:
                if v in seen:
                    self.error("E117", f'enum value "{v}" is listed twice', t.span)
                seen.add(v)
            return Type("enum", tuple(dict.fromkeys(map(sys.intern, t.values))))  # interned: callers' literals match by identity
        element = self.type_expr(t.element)
        if element is None or t.kind not in ("list", "set"):  # an unknown collection: reported by parse
            return None
        if element.is_collection:
            self.error("E117", "collections of collections are not supported", t.element.span)
            return None
        return Type(t.kind, element=element)

    def schema(self, s: ast.Schema) -> SchemaInfo:
        fields: dict[str, FieldInfo] = {}
        spans: dict[str, Span] = {}
        for decl in s.fields:
            dotted = decl.dotted
            if dotted in fields:
                self.error("E105", f"field `{dotted}` is declared twice", decl.span, notes=[("first declared here", spans[dotted])])
                continue
            clash = next(
                (other for other in fields if other.startswith(dotted + ".") or dotted.startswith(other + ".")),
                None,
            )
            if clash is not None:
                self.error(
                    "E117",
                    f"field `{dotted}` clashes with `{clash}`: a name is either a value or an object of fields",
                    decl.span,
                    notes=[("declared here", spans[clash])],
                )
                continue
            type_ = self.type_expr(decl.type)
            if type_ is None:
                continue
            default = None
            if decl.default is not None:
                if decl.optional:
                    self.error("E117", f"field `{dotted}` is optional and has a default; choose one", decl.default.span, help="a default already makes the field optional for callers")
                default = self.default_value(dotted, type_, decl.default)
            fields[dotted] = FieldInfo(decl.path, type_, decl.optional, decl.default is not None, default, len(fields))
            spans[dotted] = decl.span
        return SchemaInfo(s.name, fields)

    def default_value(self, dotted: str, type_: Type, lit) -> object:
        errors = check_value(type_, literal_value(lit))
        if errors:
            self.error("E117", f"default for `{dotted}` {errors}", lit.span)
            return None
        value = literal_value(lit)
        if type_.kind == "set":
            return frozenset(value)
        if type_.kind == "list":
            return tuple(value)
        if type_.kind == "float":
            return float(value)
        return value

    # ---- policies -----------------------------------------------------------------

    def policy(self, p: ast.Policy, path: str, schemas: dict[str, SchemaInfo], top: dict[str, ast.Let]) -> CheckedPolicy | None:
        schema = schemas.get(p.schema)
        if schema is None:
            guess = did_you_mean(p.schema, schemas)
            self.error(
                "E113",
                f"unknown schema `{p.schema}`",
                p.schema_span,
                help=f"did you mean `{guess}`?" if guess else (f"schemas in this set: {', '.join(sorted(schemas))}" if schemas else "declare it with `schema NAME { ... }`"),
            )
            schema = SchemaInfo(p.schema, {})
        seen: dict[str, Span] = {}
        for c in p.clauses:
            if c.keyword in seen:
                self.error("E106", f"policy `{p.name}` has more than one `{c.keyword}`", c.span, notes=[("first given here", seen[c.keyword])])
            else:
                seen[c.keyword] = c.span
            if c.keyword == "combine" and c.value[0] not in COMBINE_MODES:
                guess = did_you_mean(c.value[0], COMBINE_MODES)
                self.error("E106", f"unknown combine mode `{c.value[0]}`", c.value[1], help=f"did you mean `{guess}`?" if guess else "use `most_severe` or `first_match`")

        lets = dict(top)
        own: dict[str, ast.Let] = {}
        for let in p.lets:
            if let.name in own:
                self.error("E105", f"let `{let.name}` is declared twice", let.name_span, notes=[("first declared here", own[let.name].name_span)])
                continue
            if let.name in schema.fields:
                self.error("E105", f"let `{let.name}` hides the field `{let.name}` of schema `{schema.name}`", let.name_span, help="rename the let")
            own[let.name] = let
        lets.update(own)
        checked = CheckedPolicy(p, schema, lets, path)
        ctx = _Context(self, checked)
        for let in own.values():
            ctx.let_type(let.name, let.name_span)
        for let in top.values():
            if let.name not in own and any(_mentions(r.when, let.name) for r in p.rules if r.when is not None):
                ctx.let_type(let.name, let.name_span)

        names: dict[str, Span] = {}
        for r in p.rules:
            if r.name in names:
                self.error("E105", f"rule `{r.name}` is declared twice in policy `{p.name}`", r.name_span, notes=[("first declared here", names[r.name])])
            else:
                names[r.name] = r.name_span
            self.rule(r, ctx)
        if p.otherwise is not None:
            if p.otherwise.because is None:
                self.error("E104", "`otherwise` has no `because`", p.otherwise.span, help='every verdict needs a reason: `otherwise allow because "..."`')
            self.action(p.otherwise.action, ctx)
        return checked

    def rule(self, r: ast.Rule, ctx: _Context) -> None:
        seen: dict[str, Span] = {}
        for c in r.clauses:
            if c.keyword in seen:
                self.error("E106", f"rule `{r.name}` has more than one `{c.keyword}`", c.span, notes=[("first given here", seen[c.keyword])])
            else:
                seen[c.keyword] = c.span
        if r.when is None:
            self.error("E106", f"rule `{r.name}` has no `when` condition", r.name_span, help="add `when <condition>`")
        else:
            t = ctx.expr(r.when, frozenset(), {})
            if t is not None and t != BOOL:
                self.error(
                    "E103",
                    f"the condition of rule `{r.name}` must be a bool, found {t}",
                    r.when.span,
                    help=f"compare the value, as in `{clip(expr_text(r.when))} >= ...`" if t.is_numeric else "compare the value with `==`, or test it with `contains`, `in` or `has`",
                )
        if r.action is None:
            self.error("E106", f"rule `{r.name}` has no `then` action", r.name_span, help="add `then allow`, `then remove` or `then intervene <name>`")
        else:
            self.action(r.action, ctx)
        if r.because is None:
            self.error("E104", f"rule `{r.name}` has no `because`", r.name_span, help='every verdict needs a reason: add `because "..."`')

    def action(self, a: ast.Action, ctx: _Context) -> None:
        for iv in a.interventions:
            seen: set[str] = set()
            for key, value in iv.args:
                if key in seen:
                    self.error("E105", f"argument `{key}` is given twice to `{iv.name}`", iv.span)
                seen.add(key)
                if isinstance(value, ast.ObjectLiteral):
                    self.error("E103", f"argument `{key}` of `{iv.name}` must be a string, number, bool or list", value.span)

    # ---- tests --------------------------------------------------------------------

    def test(self, t: ast.Test, policies: dict[str, CheckedPolicy], spans: dict[str, Span]) -> None:
        checked = policies.get(t.policy)
        if checked is None:
            guess = did_you_mean(t.policy, spans)
            self.error("E111", f"test for unknown policy `{t.policy}`", t.name_span, help=f"did you mean `{guess}`?" if guess else "`test NAME` names the policy it tests")
            return
        policy = checked.policy
        rules = {r.name: r for r in policy.rules}
        interventions = {iv.name for r in policy.rules if r.action for iv in r.action.interventions}
        if policy.otherwise is not None:
            interventions |= {iv.name for iv in policy.otherwise.action.interventions}
        names: dict[str, Span] = {}
        for case in t.cases:
            if case.name in names:
                self.error("E105", f'case "{case.name}" is declared twice in this test', case.span, notes=[("first declared here", names[case.name])])
            names.setdefault(case.name, case.span)
            problems = validate_given(checked.schema, case.given)
            # a misspelt field is reported once, as unknown, not also as a missing one
            misspelt = {m.partition("; did you mean ")[2].rstrip("?") for _, m, _ in problems}
            for path, message, span in problems:
                if message == "is required" and path in misspelt:
                    continue
                message, _, guess = message.partition("; did you mean ")
                if guess:
                    help_ = f"did you mean {guess}"
                elif message == "is required":
                    help_ = f"add `{path.strip('`')}: ...` to the `given`, or give the field a default in the schema"
                else:
                    help_ = None
                self.error("E112", f'case "{case.name}": {path} {message}', span, help=help_)
            e = case.expect
            if e.interventions and e.verdict != "intervene":
                self.error(
                    "E116",
                    f"only `expect intervene` names interventions, not `expect {e.verdict}`",
                    _word_span(e.span, e.interventions[0]),
                    help=f"write `expect intervene {', '.join(e.interventions)}`, or drop the names",
                )
            else:
                for name in e.interventions:
                    if name not in interventions:
                        guess = did_you_mean(name, interventions)
                        self.error(
                            "E116",
                            f"policy `{policy.name}` has no intervention `{name}`",
                            _word_span(e.span, name),
                            help=f"did you mean `{guess}`?" if guess else (f"its interventions are {_alternatives(sorted(interventions))}" if interventions else None),
                        )
            if e.by is None or e.by == "otherwise":
                if e.by == "otherwise":
                    verdict = policy.otherwise.action.verdict if policy.otherwise else "allow"
                    if verdict != e.verdict:
                        self.error(
                            "E116",
                            f"`otherwise` of `{policy.name}` decides {verdict}, so it cannot decide {e.verdict}",
                            e.by_span,
                            help=f"write `expect {verdict} by otherwise`, or name the rule that decides {e.verdict}",
                        )
                continue
            rule = rules.get(e.by)
            if rule is None:
                guess = did_you_mean(e.by, rules)
                self.error("E116", f"policy `{policy.name}` has no rule `{e.by}`", e.by_span, help=f"did you mean `{guess}`?" if guess else None)
            elif rule.shadow:
                self.error(
                    "E116",
                    f"rule `{e.by}` is a shadow rule: it never decides",
                    e.by_span,
                    help="name the rule (or `otherwise`) that decides, or leave out `by`; `pol test` reports shadow matches apart",
                )
            elif rule.action is not None and rule.action.verdict != e.verdict:
                self.error(
                    "E116",
                    f"rule `{e.by}` decides {rule.action.verdict}, so it cannot decide {e.verdict}",
                    e.by_span,
                    help=f"write `expect {rule.action.verdict} by {e.by}`, or name the rule that decides {e.verdict}",
                )


def _mentions(expr: ast.Expr, name: str) -> bool:
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, ast.Name) and e.parts == (name,):
            return True
        stack.extend(_children(e))
    return False


def _children(e: ast.Expr) -> tuple:
    if isinstance(e, ast.BoolOp):
        return e.operands
    if isinstance(e, (ast.Not, ast.Unary)):
        return (e.operand,)
    if isinstance(e, ast.Binary):
        return (e.left, e.right)
    if isinstance(e, ast.Call):
        return e.args
    if isinstance(e, ast.Quantifier):
        return (e.collection, e.body)
    if isinstance(e, ast.ListLiteral):
        return e.items
    if isinstance(e, ast.Has):
        return (e.field,)
    return ()



def validate_given(schema: SchemaInfo, given: ast.ObjectLiteral) -> list[tuple[str, str, Span]]:
    """Problems of a test case's `given` against the schema, with the span to blame."""
    spans: dict[str, Span] = {}

    def collect(obj: ast.ObjectLiteral, prefix: tuple[str, ...]) -> None:
        for (path, value), span in zip(obj.entries, obj.key_spans):
            full = prefix + path
            spans[".".join(full)] = span
            if isinstance(value, ast.ObjectLiteral):
                collect(value, full)

    collect(given, ())
    out = []
    for path, message in validate_object(schema, literal_value(given), strict=True):
        span = spans.get(path)
        while span is None and "." in path:
            path_prefix = path.rsplit(".", 1)[0]
            span = spans.get(path_prefix)
            path = path_prefix if span is None else path
        out.append((f"`{path}`" if path else "input", message, span or given.span))
    return out


class _Context:
    """Type-checks the expressions of one policy, with its schema and lets."""

    def __init__(self, checker: _Checker, policy: CheckedPolicy) -> None:
        self.checker = checker
        self.policy = policy
        self.schema = policy.schema
        self.lets = policy.lets
        self.let_types: dict[str, Type | None] = {}
        self.in_progress: list[str] = []

    def error(self, code: str, message: str, span: Span, help: str | None = None) -> None:
        self.checker.error(code, message, span, help)

    def let_type(self, name: str, use_span: Span) -> Type | None:
        if name in self.let_types:
            return self.let_types[name]
        if name in self.in_progress:
            cycle = self.in_progress[self.in_progress.index(name) :] + [name]
            let = self.lets[name]
            self.error("E109", f"lets refer to each other in a cycle: {' -> '.join(cycle)}", let.name_span, help="a let may use other lets, never itself, directly or not")
            for n in cycle:
                self.let_types[n] = None
            return None
        self.in_progress.append(name)
        let = self.lets[name]
        t = self.expr(let.expr, frozenset(), {})
        self.in_progress.pop()
        self.let_types.setdefault(name, t)
        return self.let_types[name]

    def guards_of(self, e: ast.Expr, seen: frozenset[str] = frozenset()) -> set[str]:
        """Fields that `e` being true proves present: `has f`, lets and conjunctions of them."""
        if isinstance(e, ast.Has):
            return {e.field.dotted}
        if isinstance(e, ast.BoolOp) and e.op == "and":
            out: set[str] = set()
            for c in e.operands:
                out |= self.guards_of(c, seen)
            return out
        if isinstance(e, ast.Name) and len(e.parts) == 1 and e.parts[0] in self.lets and e.parts[0] not in seen:
            return self.guards_of(self.lets[e.parts[0]].expr, seen | {e.parts[0]})
        return set()

    def name(self, e: ast.Name, guards: frozenset[str], scope: dict[str, Type]) -> Type | None:
        dotted = e.dotted
        if len(e.parts) == 1:
            kind = resolve_name(dotted, scope, self.lets, self.schema)
            if kind == "var":
                return scope[dotted]
            if kind == "let":
                self.policy.used_lets.add(dotted)
                return self.let_type(dotted, e.span)
        f = self.schema.field(dotted)
        if f is None:
            objects = sorted(k for k in self.schema.fields if k.startswith(dotted + "."))
            if objects:
                self.error("E101", f"`{dotted}` is an object, not a field", e.span, help=f"name one of its fields: {_alternatives(objects)}")
                return None
            candidates = [*self.schema.fields, *self.lets, *scope]
            guess = did_you_mean(dotted, candidates)
            code = "E101" if len(e.parts) > 1 or guess in self.schema.fields or not guess else "E114"
            what = "field" if code == "E101" else "name"
            self.error(code, f"unknown {what} `{dotted}` in schema `{self.schema.name}`" if code == "E101" else f"unknown name `{dotted}`", e.span, help=f"did you mean `{guess}`?" if guess else None)
            return None
        if f.optional and dotted not in guards:
            self.error(
                "E107",
                f"optional field `{dotted}` is used without a `has` guard",
                e.span,
                help=f"write `has {dotted} and ...` in the same condition",
            )
        return f.type

    def expr(self, e: ast.Expr, guards: frozenset[str], scope: dict[str, Type]) -> Type | None:
        if isinstance(e, ast.Literal):
            return _LIT_TYPES[e.kind]
        if isinstance(e, ast.Name):
            return self.name(e, guards, scope)
        if isinstance(e, ast.BoolOp):
            if e.op == "and":
                inner = set(guards)
                for c in e.operands:
                    inner |= self.guards_of(c)
                guards = frozenset(inner)
            ok = True
            for c in e.operands:
                t = self.expr(c, guards, scope)
                if t is not None and t != BOOL:
                    self.error("E103", f"`{e.op}` needs bool operands, found {t}", c.span)
                ok = ok and t is not None
            return BOOL
        if isinstance(e, ast.Not):
            t = self.expr(e.operand, guards, scope)
            if t is not None and t != BOOL:
                self.error("E103", f"`not` needs a bool, found {t}", e.operand.span)
            return BOOL
        if isinstance(e, ast.Has):
            f = self.schema.field(e.field.dotted)
            if f is None:
                guess = did_you_mean(e.field.dotted, self.schema.fields)
                self.error("E101", f"unknown field `{e.field.dotted}` in schema `{self.schema.name}`", e.field.span, help=f"did you mean `{guess}`?" if guess else None)
            return BOOL
        if isinstance(e, ast.Unary):
            t = self.expr(e.operand, guards, scope)
            if t is not None and not t.is_numeric:
                self.error("E103", f"`-` needs a number, found {t}", e.operand.span)
                return None
            return t
        if isinstance(e, ast.Binary):
            return self.binary(e, guards, scope)
        if isinstance(e, ast.Call):
            return self.call(e, guards, scope)
        if isinstance(e, ast.Quantifier):
            coll = self.schema.field(e.collection.dotted)
            if coll is None or not coll.type.is_collection:
                if coll is None:
                    guess = did_you_mean(e.collection.dotted, [k for k, f in self.schema.fields.items() if f.type.is_collection])
                    self.error("E101", f"unknown field `{e.collection.dotted}` in schema `{self.schema.name}`", e.collection.span, help=f"did you mean `{guess}`?" if guess else None)
                else:
                    self.error("E103", f"`{e.kind}` ranges over a list or set field; `{e.collection.dotted}` is {coll.type}", e.collection.span)
                return BOOL
            self.name(e.collection, guards, scope)
            t = self.expr(e.body, frozenset(guards), {**scope, e.var: coll.type.element})
            if t is not None and t != BOOL:
                self.error("E103", f"the body of `{e.kind}` must be a bool, found {t}", e.body.span)
            return BOOL
        if isinstance(e, ast.ListLiteral):
            self.error("E103", "a list literal can only follow `in` or `not in`", e.span)
            return None
        raise AssertionError(f"unexpected node {e!r}")

    def list_items(self, e: ast.ListLiteral) -> list[ast.Literal] | None:
        items = []
        for item in e.items:
            if not isinstance(item, ast.Literal):
                self.error("E103", "list items must be literals", item.span)
                return None
            items.append(item)
        return items

    def enum_literal(self, t: Type, lit: ast.Expr) -> None:
        """An enum compared with a literal string: the literal must be a declared value."""
        if t.kind != "enum" or not isinstance(lit, ast.Literal) or lit.kind != "string":
            return
        if lit.value in t.values:
            return
        guess = did_you_mean(lit.value, t.values)
        self.error(
            "E102",
            f'"{clip(lit.value)}" is not a value of {t}',
            lit.span,
            help=f'did you mean "{guess}"?' if guess else f"the values are: {', '.join(repr(v).replace(chr(39), chr(34)) for v in t.values)}",
        )

    def binary(self, e: ast.Binary, guards: frozenset[str], scope: dict[str, Type]) -> Type | None:
        op = e.op
        if op in ("in", "not in") and isinstance(e.right, ast.ListLiteral):
            left = self.expr(e.left, guards, scope)
            items = self.list_items(e.right)
            if left is None or items is None:
                return BOOL
            if not left.is_scalar:
                self.error("E103", f"`{op}` a list literal needs a single value on the left, found {left}", e.left.span)
                return BOOL
            for item in items:
                it = _LIT_TYPES[item.kind]
                if not comparable(left, it):
                    self.error("E103", f"cannot compare {left} with {it}", item.span)
                else:
                    self.enum_literal(left, item)
            return BOOL
        left = self.expr(e.left, guards, scope)
        right = self.expr(e.right, guards, scope)
        if left is None or right is None:
            return BOOL if op not in "+-*/" else None
        if op in ("==", "!="):
            if not comparable(left, right):
                self.error("E103", f"cannot compare {left} with {right}", e.span, help=_compare_help(e, left, right))
            self.enum_literal(left, e.right)
            self.enum_literal(right, e.left)
            return BOOL
        if op in ("<", "<=", ">", ">="):
            if not (left.is_numeric and right.is_numeric):
                bad = e.left if not left.is_numeric else e.right
                self.error("E103", f"`{op}` compares numbers, found {left if not left.is_numeric else right}", bad.span)
            return BOOL
        if op in ("in", "not in"):
            if right.is_collection:
                if not comparable(left, right.element):
                    self.error("E103", f"cannot look for {left} in {right}", e.span)
                self.enum_literal(right.element, e.left)
            else:
                self.error("E103", f"`{op}` needs a list or set on the right, found {right}", e.right.span, help="use `contains` to find a substring" if right.is_stringy else None)
            return BOOL
        if op == "contains":
            if left.is_collection:
                if not comparable(right, left.element):
                    self.error("E103", f"cannot look for {right} in {left}", e.span)
                self.enum_literal(left.element, e.right)
            elif left.is_stringy:
                if not right.is_stringy:
                    self.error("E103", f"`contains` on a string needs a string, found {right}", e.right.span)
            else:
                self.error("E103", f"`contains` needs a string, list or set on the left, found {left}", e.left.span)
            return BOOL
        if op == "matches":
            if not left.is_stringy:
                self.error("E103", f"`matches` needs a string on the left, found {left}", e.left.span)
            if not (isinstance(e.right, ast.Literal) and e.right.kind == "string"):
                self.error("E103", "the pattern of `matches` must be a string literal", e.right.span, help="patterns are checked when the policy compiles")
            else:
                problem = regex_problem(e.right.value)
                if problem is not None:
                    self.error("E108", f"invalid regular expression: {problem[0]}", e.right.span, help=problem[1])
            return BOOL
        if op in ("starts_with", "ends_with"):
            if not (left.is_stringy and right.is_stringy):
                bad = e.left if not left.is_stringy else e.right
                self.error("E103", f"`{op}` needs strings, found {left if not left.is_stringy else right}", bad.span)
            return BOOL
        # arithmetic
        if not (left.is_numeric and right.is_numeric):
            bad = e.left if not left.is_numeric else e.right
            self.error("E103", f"`{op}` needs numbers, found {left if not left.is_numeric else right}", bad.span)
            return None
        if op == "/" or FLOAT in (left, right):
            return FLOAT
        return INT

    def call(self, e: ast.Call, guards: frozenset[str], scope: dict[str, Type]) -> Type | None:
        if e.function not in FUNCTIONS:
            guess = did_you_mean(e.function, FUNCTIONS)
            self.error("E115", f"unknown function `{e.function}`", e.name_span, help=f"did you mean `{guess}`?" if guess else "functions are `len(x)` and `lower(x)`")
            return None
        if len(e.args) != FUNCTIONS[e.function]:
            self.error("E115", f"`{e.function}` takes 1 argument, found {len(e.args)}", e.span)
            return None
        t = self.expr(e.args[0], guards, scope)
        if t is None:
            return None
        if e.function == "len":
            if not (t.is_stringy or t.is_collection):
                self.error("E103", f"`len` needs a string, list or set, found {t}", e.args[0].span)
            return INT
        if not t.is_stringy:
            self.error("E103", f"`lower` needs a string, found {t}", e.args[0].span)
        return STRING


def _compare_help(e: ast.Binary, a: Type, b: Type) -> str | None:
    """How to fix `a == b` between types that never compare equal."""
    if {a.kind, b.kind} & {"list", "set"}:
        return "use `in` or `contains` to test membership"
    for side, t, other in ((e.left, a, e.right), (e.right, b, e.left)):
        if not (isinstance(other, ast.Literal) and not isinstance(side, ast.Literal)):
            continue
        shown = clip(expr_text(side))
        if t.is_numeric and other.kind == "string":
            if _is_number(other.value):
                return f"`{shown}` is a number: write `{other.value}` without quotes"
            return f"`{shown}` is a number: compare it with a number, such as `0.8`"
        if t.kind == "bool":
            return f"`{shown}` is a bool: compare it with `true` or `false`, or test it on its own"
        if t.is_stringy:
            return f"`{shown}` is a string: compare it with a string in double quotes"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _alternatives(names: list[str], limit: int = 4) -> str:
    """`a`, `b` or `c` (and how many more)."""
    shown = [f"`{n}`" for n in names[:limit]]
    more = len(names) - limit
    if more > 0:
        return ", ".join(shown) + f" or {more} more"
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _word_span(span: Span, word: str) -> Span:
    """The first whole-word `word` inside `span` (after its first word), or `span` itself."""
    m = re.compile(rf"(?<![a-z0-9_]){re.escape(word)}(?![a-z0-9_])").search(span.text, 1)
    if m is None:
        return span
    return Span(span.source, span.start + m.start(), span.start + m.end())


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is reported as a diagnostic, not on stderr


def regex_problem(pattern: str) -> tuple[str, str] | None:
    """What is wrong with an RE2 pattern, as (message, help), or None when it compiles."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        raw = err.args[0] if err.args else ""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    else:
        return None
    reason, _, fragment = text.partition(": ")
    fragment = clip(fragment)
    escape_help = "in a pol string a regex backslash is written `\\\\` (`\\\\d` for a digit)"
    if reason == "invalid perl operator":
        return f"`{fragment}` is not supported", "RE2 has no lookahead, lookbehind or backreferences; match the text itself, or split the test with `and`"
    if reason == "invalid escape sequence":
        if fragment[1:].isdigit():
            return f"backreference `{fragment}` is not supported", "RE2 has no backreferences"
        return f"unknown escape `{fragment}`", escape_help
    if reason == "missing )":
        return f"missing `)` in `{fragment}`", "close every `(`; a literal parenthesis is `\\\\(`"
    if reason == "unexpected )":
        return f"unmatched `)` in `{fragment}`", "a literal parenthesis is `\\\\)`"
    if reason == "missing ]":
        return f"missing `]` in `{fragment}`", "close every `[`; a literal bracket is `\\\\[`"
    if "repetition" in reason:
        return f"{reason} `{fragment}`", "`*`, `+`, `?` and `{n,m}` follow what they repeat, once; counts go up to 1000"
    return (f"{reason} in `{fragment}`" if fragment else reason), "patterns use RE2 syntax"
