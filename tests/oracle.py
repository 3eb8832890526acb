"""A reference interpreter for pol: the parsed AST evaluated rule by rule, as LANGUAGE.md section 5 reads.

Deliberately naive, and independent of the engine past the parser: no IR, no interned
atoms, no decision tree, no generated code, no shared validator. Every rule of every
policy is evaluated with ordinary recursion over its `when`; the results are combined
exactly as the contract says. Tests (tests/test_oracle.py) run random policies and
random inputs through both this and `engine`, and require the same decision.

What it reads, and the semantics it pins:

- **Input.** The oracle does its own defaulting from the schema's AST (it does *not* use
  `engine.validate`), so a validator bug shows up as a disagreement. It assumes the
  input is well-typed (the generators only make well-typed inputs): for each declared
  field, a missing key or `null` takes the default if there is one, else the field is
  absent (`None`); ints given for floats become floats, integral floats given for ints
  become ints, sets become frozensets, lists tuples. An enum value outside the declared
  set is kept (it equals no declared value) and yields an `unknown_enum_value` warning
  naming the field, in schema order.
- **Names** resolve as `engine.check.resolve_name`: quantifier variable, then let, then
  schema field; dotted names are always fields, as are the operands of `has` and the
  collection of `any`/`all`. Let bodies are evaluated with no quantifier variables in
  scope. Lets visible in a policy: top-level lets of the imported files, then of its own
  file, then its own lets (each overriding the one before).
- **Rule conditions** are three-valued. Above the atoms (`and`, `or`, `not`, and lets
  whose body is one of those) logic is Kleene: `and` is False if any operand is False,
  else ERROR if any is ERROR, else True; `or` dually; `not ERROR` is ERROR. An *atom* is
  anything else (comparison, membership, string test, `has`, quantifier, bare bool
  field or literal): ERROR when it divides by zero, otherwise True or False.
- **Missing optional fields.** A predicate that reads an optional field that is absent
  is false. A predicate "reads" the fields it mentions outside `has` and outside any
  nested boolean structure (`and`/`or`/`not`, a quantifier's body), which judge their own
  reads the same way. So `has f == false` is true when `f` is absent, and
  `all x in xs: (not (has f and f > x))` is true when `f` is absent.
- **Inside an atom** (a quantifier body, a boolean operand of `==`) `and`/`or`/`not` are
  ordinary short-circuit Python logic, and a division by zero aborts the whole atom
  (ERROR) -- except across the elements of a quantifier: `any` is true when some element
  satisfies the body, even if another element's body divided by zero; otherwise ERROR
  if some element's body did; otherwise false (`all` dually). The result never depends
  on the iteration order of a set.
- **Decisions**: a rule matches only when its condition is True. `most_severe`: the most
  severe matching non-shadow rule decides, ties going to the earliest in file order;
  `first_match`: the earliest matching non-shadow rule. No match: `otherwise`, or allow
  with "no rule matched". Interventions are returned only for an `intervene` verdict:
  the deciding rule's (or `otherwise`'s) under `first_match` or when `otherwise`
  decides; under `most_severe` those of every matching intervene rule in file order,
  without duplicates (same name and same arguments: argument order does not matter,
  `1` and `1.0` are the same number, `true` is not `1`), each attributed to the first
  rule that asked for it. Shadow rules are evaluated and reported apart. A rule (shadow
  or not) whose condition is ERROR gets a `division_by_zero` warning.
- **Several policies** are decided in name order; the overall verdict is the most severe,
  the first policy (in name order) with it decides; interventions are those of every
  policy whose verdict is the overall verdict when it is `intervene`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import re2

from engine import ast, parse

__all__ = ["ERROR", "Oracle", "OracleDecision", "OraclePolicyDecision", "canonical_args", "parse_text"]

SEVERITY = {"allow": 0, "intervene": 1, "remove": 2}
ERROR = None  # the third truth value: a division by zero


class _DivisionByZero(Exception):
    pass


@lru_cache(maxsize=64)
def parse_text(path: str, text: str):
    """engine.parse.parse_text, cached: ASTs are immutable, and the generators parse the same files."""
    return parse.parse_text(path, text)


@dataclass(frozen=True)
class OraclePolicyDecision:
    policy: str
    verdict: str
    rule: str  # deciding rule or "otherwise"
    matched: tuple[str, ...]  # matching non-shadow rules, file order
    shadow: tuple[str, ...]  # matching shadow rules, file order
    interventions: tuple[tuple[str, tuple, str], ...]  # (name, args, rule)
    errored: tuple[str, ...]  # rules whose condition divided by zero, file order
    justifications: tuple[str, ...]  # deciding first, then the other matching rules


@dataclass(frozen=True)
class OracleDecision:
    verdict: str
    policy: str | None
    rule: str | None
    policies: tuple[OraclePolicyDecision, ...]
    interventions: tuple[tuple[str, str, str, tuple], ...]  # (policy, rule, name, args)
    warnings: tuple[tuple[str, str | None, str | None, str | None], ...]  # (code, field, policy, rule)


def canonical_args(args: Sequence[tuple[str, object]]) -> frozenset:
    """Arguments as a duplicate-detection key: unordered, numbers by value, bools apart."""

    def canon(v: object) -> object:
        if isinstance(v, bool):
            return ("bool", v)
        if isinstance(v, (int, float)):
            return ("num", v)
        if isinstance(v, (list, tuple)):
            return ("list", tuple(canon(i) for i in v))
        return ("str", v)

    return frozenset((k, canon(v)) for k, v in args)


def _literal(lit) -> object:
    if isinstance(lit, ast.Literal):
        return lit.value
    if isinstance(lit, ast.ListLiteral):
        return tuple(_literal(i) for i in lit.items)
    raise AssertionError(f"not a literal: {lit!r}")


@dataclass
class _Policy:
    node: ast.Policy
    schema: ast.Schema
    lets: dict[str, ast.Let]


class Oracle:
    """Parse a policy set once; `evaluate(annotations)` decides with the reference semantics."""

    def __init__(self, files: Mapping[str, str | bytes]) -> None:
        parsed: dict[str, ast.File] = {}
        for path in sorted(files):
            text = files[path]
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            tree, _, diags = parse_text(path, text)
            if tree is None:
                raise ValueError(f"{path} does not parse: {[d.message for d in diags]}")
            parsed[path] = tree
        self.schemas: dict[str, ast.Schema] = {s.name: s for f in parsed.values() for s in f.of(ast.Schema)}
        top = {path: {let.name: let for let in f.of(ast.Let)} for path, f in parsed.items()}
        self.policies: dict[str, _Policy] = {}
        for path, f in parsed.items():
            visible: dict[str, ast.Let] = {}
            for imp in f.of(ast.Import):
                visible.update(top[posixpath.normpath(posixpath.join(posixpath.dirname(path), imp.path))])
            visible.update(top[path])
            for p in f.of(ast.Policy):
                self.policies[p.name] = _Policy(p, self.schemas[p.schema], {**visible, **{let.name: let for let in p.lets}})

    # ---- input ----------------------------------------------------------------------

    @staticmethod
    def values(schema: ast.Schema, annotations: Mapping) -> tuple[dict[str, object], list[str]]:
        """Field values by dotted name (None: absent), and the fields with unknown enum values."""
        values: dict[str, object] = {}
        unknown: list[str] = []
        for decl in schema.fields:
            obj: object = annotations
            for part in decl.path:
                obj = obj.get(part) if isinstance(obj, Mapping) else None
            if obj is None and decl.default is not None:
                obj = _literal(decl.default)
            t = decl.type
            if obj is not None:
                if isinstance(t, ast.PrimType) and t.name == "float":
                    obj = float(obj)
                elif isinstance(t, ast.PrimType) and t.name == "int":
                    obj = int(obj)
                elif isinstance(t, ast.CollectionType):
                    obj = frozenset(obj) if t.kind == "set" else tuple(obj)
                elif isinstance(t, ast.EnumType) and obj not in t.values:
                    unknown.append(decl.dotted)
            values[decl.dotted] = obj
        return values, unknown

    # ---- decisions -----------------------------------------------------------------

    def evaluate(self, annotations: Mapping, policies: Sequence[str] | None = None) -> OracleDecision:
        names = sorted(self.policies) if not policies else list(policies)
        warnings: list[tuple] = []
        decisions: list[OraclePolicyDecision] = []
        inputs: dict[str, dict[str, object]] = {}
        for name in names:
            p = self.policies[name]
            if p.schema.name not in inputs:
                inputs[p.schema.name], unknown = self.values(p.schema, annotations)
                warnings.extend(("unknown_enum_value", f, None, None) for f in unknown)
            decisions.append(_Evaluator(p, inputs[p.schema.name]).decide())
        for d in decisions:
            warnings.extend(("division_by_zero", None, d.policy, r) for r in d.errored)
        if not decisions:
            return OracleDecision("allow", None, None, (), (), tuple(warnings))
        top = max(decisions, key=lambda d: SEVERITY[d.verdict])  # max() keeps the first of equals
        interventions = tuple(
            (d.policy, rule, iv_name, args)
            for d in decisions
            if top.verdict == "intervene" and d.verdict == "intervene"
            for iv_name, args, rule in d.interventions
        )
        return OracleDecision(top.verdict, top.policy, top.rule, tuple(decisions), interventions, tuple(warnings))


class _Evaluator:
    """One policy on one input."""

    def __init__(self, policy: _Policy, values: dict[str, object]) -> None:
        self.policy = policy.node
        self.lets = policy.lets
        self.fields = {d.dotted: d for d in policy.schema.fields}
        self.values = values

    def decide(self) -> OraclePolicyDecision:
        p = self.policy
        normal: list[ast.Rule] = []
        shadow: list[ast.Rule] = []
        errored: list[ast.Rule] = []
        for rule in p.rules:
            v = self.condition(rule.when)
            if v is True:
                (shadow if rule.shadow else normal).append(rule)
            elif v is ERROR:
                errored.append(rule)
        deciding: ast.Rule | None = None
        if normal:
            if p.combine == "first_match":
                deciding = normal[0]
            else:
                deciding = max(normal, key=lambda r: SEVERITY[r.action.verdict])  # earliest of the most severe
        if deciding is not None:
            verdict, rule_name = deciding.action.verdict, deciding.name
        elif p.otherwise is not None:
            verdict, rule_name = p.otherwise.action.verdict, "otherwise"
        else:
            verdict, rule_name = "allow", "otherwise"
        interventions: list[tuple[str, tuple, str]] = []
        if verdict == "intervene":
            if deciding is None:
                sources = [("otherwise", p.otherwise.action)]
            elif p.combine == "first_match":
                sources = [(deciding.name, deciding.action)]
            else:
                sources = [(r.name, r.action) for r in normal if r.action.verdict == "intervene"]
            seen: set = set()
            for rname, action in sources:
                for iv in action.interventions:
                    args = tuple((k, _literal(v)) for k, v in iv.args)
                    key = (iv.name, canonical_args(args))
                    if key not in seen:
                        seen.add(key)
                        interventions.append((iv.name, args, rname))
        justifications = (rule_name,) + tuple(r.name for r in normal if r is not deciding)
        return OraclePolicyDecision(
            policy=p.name,
            verdict=verdict,
            rule=rule_name,
            matched=tuple(r.name for r in normal),
            shadow=tuple(r.name for r in shadow),
            interventions=tuple(interventions),
            errored=tuple(r.name for r in errored),
            justifications=justifications,
        )

    # ---- names ---------------------------------------------------------------------

    def kind(self, name: ast.Name, vars: Mapping[str, object]) -> str:
        """"var", "let" or "field": the same rule as engine.check.resolve_name."""
        if len(name.parts) == 1:
            n = name.parts[0]
            if n in vars:
                return "var"
            if n in self.lets:
                return "let"
        return "field"

    # ---- rule conditions: three-valued logic over atoms ------------------------------

    def condition(self, e: ast.Expr) -> bool | None:
        if isinstance(e, ast.BoolOp):
            parts = [self.condition(c) for c in e.operands]
            if e.op == "and":
                return False if False in parts else (ERROR if ERROR in parts else True)
            return True if True in parts else (ERROR if ERROR in parts else False)
        if isinstance(e, ast.Not):
            v = self.condition(e.operand)
            return ERROR if v is ERROR else not v
        if isinstance(e, ast.Name) and self.kind(e, {}) == "let":
            return self.condition(self.lets[e.parts[0]].expr)
        try:
            return self.predicate(e, {})
        except _DivisionByZero:
            return ERROR

    # ---- inside atoms: two-valued, short-circuit, division raises ------------------

    def predicate(self, e: ast.Expr, vars: Mapping[str, object]) -> bool:
        if isinstance(e, ast.BoolOp):
            if e.op == "and":
                return all(self.predicate(c, vars) for c in e.operands)
            return any(self.predicate(c, vars) for c in e.operands)
        if isinstance(e, ast.Not):
            return not self.predicate(e.operand, vars)
        if isinstance(e, ast.Name) and self.kind(e, vars) == "let":
            return self.predicate(self.lets[e.parts[0]].expr, {})
        if any(self.values[f] is None for f in self.reads(e, vars)):
            return False
        return bool(self.value(e, vars))

    def reads(self, e: ast.Expr, vars: Mapping[str, object]) -> set[str]:
        """Optional fields `e` reads outside `has` and nested boolean structure."""
        out: set[str] = set()
        stack: list[tuple[ast.Expr, Mapping]] = [(e, vars)]
        while stack:
            x, xv = stack.pop()
            if isinstance(x, ast.Name):
                k = self.kind(x, xv)
                if k == "let":
                    stack.append((self.lets[x.parts[0]].expr, {}))
                elif k == "field" and self.fields[x.dotted].optional:
                    out.add(x.dotted)
            elif isinstance(x, ast.Binary):
                stack += [(x.left, xv), (x.right, xv)]
            elif isinstance(x, ast.Unary):
                stack.append((x.operand, xv))
            elif isinstance(x, ast.Call):
                stack += [(a, xv) for a in x.args]
            elif isinstance(x, ast.Quantifier):
                if self.fields[x.collection.dotted].optional:
                    out.add(x.collection.dotted)
            # Has, BoolOp, Not, literals: no direct reads
        return out

    def value(self, e: ast.Expr, vars: Mapping[str, object]) -> object:
        if isinstance(e, ast.Literal):
            return e.value
        if isinstance(e, ast.Name):
            k = self.kind(e, vars)
            if k == "var":
                return vars[e.parts[0]]
            if k == "let":
                return self.value(self.lets[e.parts[0]].expr, {})
            return self.values[e.dotted]
        if isinstance(e, (ast.BoolOp, ast.Not)):
            return self.predicate(e, vars)
        if isinstance(e, ast.Has):
            return self.values[e.field.dotted] is not None
        if isinstance(e, ast.Unary):
            return -self.value(e.operand, vars)
        if isinstance(e, ast.Call):
            arg = self.value(e.args[0], vars)
            return len(arg) if e.function == "len" else arg.lower()
        if isinstance(e, ast.Quantifier):
            return self.quantifier(e, vars)
        if isinstance(e, ast.Binary):
            return self.binary(e, vars)
        raise AssertionError(f"cannot evaluate {e!r}")

    def quantifier(self, e: ast.Quantifier, vars: Mapping[str, object]) -> bool:
        settle = e.kind == "any"  # the element result that settles the whole quantifier
        errored = False
        for item in self.values[e.collection.dotted]:
            try:
                if self.predicate(e.body, {**vars, e.var: item}) is settle:
                    return settle
            except _DivisionByZero:
                errored = True
        if errored:
            raise _DivisionByZero
        return not settle

    def binary(self, e: ast.Binary, vars: Mapping[str, object]) -> object:
        op = e.op
        if op in ("in", "not in") and isinstance(e.right, ast.ListLiteral):
            left = self.value(e.left, vars)
            hit = any(left == item.value for item in e.right.items)
            return hit if op == "in" else not hit
        a = self.value(e.left, vars)
        b = self.value(e.right, vars)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        if op == ">=":
            return a >= b
        if op == "in":
            return a in b
        if op == "not in":
            return a not in b
        if op == "contains":
            return b in a
        if op == "matches":
            return re2.search(b, a) is not None
        if op == "starts_with":
            return a.startswith(b)
        if op == "ends_with":
            return a.endswith(b)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise _DivisionByZero
            return a / b
        raise AssertionError(f"unknown operator {op}")
