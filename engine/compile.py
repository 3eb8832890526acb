"""Compile: checked policies to decision trees.

Each rule's condition is resolved (lets inlined, names bound to schema fields) into
a small IR. Its atomic predicates -- comparisons, `has`, quantifiers, bare bool
fields -- are interned, so a predicate shared by many rules is one `Atom` evaluated
at most once per decision. Equality and membership tests on one field across rules
become one hash-dispatch node, so the cost of a decision grows with the depth of the
tree, not with the number of rules. The tree is plain data: `pol graph` draws it,
tests inspect it, `codegen` turns it into a Python function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Union

from . import ast
from .check import CheckedPolicy, resolve_name
from .format import expr_text
from .source import Span
from .types import FieldInfo, Type
from .validate import literal_value

__all__ = [
    "Atom",
    "atoms_in",
    "CompiledPolicy",
    "Dispatch",
    "FieldRef",
    "Leaf",
    "Node",
    "Present",
    "RuleInfo",
    "Seq",
    "VarRef",
    "compile_policy",
    "optional_reads",
]

SEVERITY = {"allow": 0, "intervene": 1, "remove": 2}


# ---- IR: expressions with names resolved -------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRef:
    field: FieldInfo = dataclasses.field(compare=False, hash=False)
    index: int = 0
    span: Span | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    @property
    def dotted(self) -> str:
        return self.field.dotted


@dataclass(frozen=True, slots=True)
class VarRef:
    name: str
    type: Type = dataclasses.field(compare=False, hash=False)
    span: Span | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True)
class Present:
    """`has field`."""

    field: FieldRef
    span: Span | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)


IR = Union[FieldRef, VarRef, Present, ast.Literal, ast.ListLiteral, ast.Binary, ast.BoolOp, ast.Not, ast.Unary, ast.Call, ast.Quantifier]


@dataclass(frozen=True, slots=True)
class Atom:
    """An interned atomic predicate."""

    id: int
    expr: IR
    fields: tuple[FieldRef, ...]  # fields it reads, in order of appearance
    may_error: bool  # contains a division
    text: str = dataclasses.field(default="", compare=False, hash=False)  # as pol source, for people


@dataclass(frozen=True, slots=True)
class RuleInfo:
    index: int
    name: str
    shadow: bool
    verdict: str
    interventions: tuple[tuple[str, tuple[tuple[str, object], ...]], ...]
    because: str
    cite: str | None
    tags: tuple[str, ...]
    condition: IR  # resolved; atoms appear as themselves
    span: Span = dataclasses.field(compare=False, hash=False, repr=False)
    # What a match shows (its atoms, and whether each held) when no value can change it; None when one can
    shown: tuple[tuple[Atom, bool], ...] | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    @property
    def severity(self) -> int:
        return SEVERITY[self.verdict]


# ---- the tree -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leaf:
    """Rules whose remaining condition is checked one by one (None: nothing left)."""

    checks: tuple[tuple[int, IR | None], ...]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One hash lookup on a field's value selects the subtree of rules that need it."""

    field: FieldRef
    branches: tuple[tuple[object, Node], ...]


@dataclass(frozen=True, slots=True)
class Seq:
    """Independent subtrees; the matching rules are the union of theirs."""

    children: tuple[Node, ...]


Node = Union[Leaf, Dispatch, Seq]


@dataclass
class CompiledPolicy:
    name: str
    version: str | None
    description: str | None
    owner: str | None
    combine: str
    schema: str
    rules: tuple[RuleInfo, ...]
    otherwise: RuleInfo  # index -1; the default when no rule matches
    atoms: tuple[Atom, ...]
    tree: Node
    path: str
    ranks: tuple[int, ...] = ()  # severity of each rule; -1 for shadow rules
    source: str = ""  # the Python generated for the atoms C does not evaluate itself
    decide: object = None  # set by evaluate.make_tree: the engine.native.Tree of `tree`
    atom_functions: dict = dataclasses.field(default_factory=dict, repr=False)  # atom id -> (*values) -> bool | None


def shown_when_matched(condition: IR) -> tuple[tuple[Atom, bool], ...] | None:
    """The atoms `evaluate.explain` shows for a match of `condition`, with their truth, if the same for every match.

    A match makes the condition true, which settles every operand of an `and` (true) and of
    an `or` under a `not` (false); only a true `or` (or a false `and`) shows whichever operand
    settled it, which depends on the values: then None.
    """
    out = []
    stack = [(condition, True)]
    while stack:
        e, value = stack.pop()
        if isinstance(e, ast.BoolOp):
            if value is (e.op == "or"):
                return None
            stack.extend((c, value) for c in reversed(e.operands))
        elif isinstance(e, ast.Not):
            stack.append((e.operand, not value))
        elif isinstance(e, Atom):
            out.append((e, value))
        else:
            return None
    return tuple(out)


def atoms_in(e) -> list[Atom]:
    """Every atom of a boolean structure, in order of appearance (repeats included)."""
    out = []
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Atom):
            out.append(x)
        elif isinstance(x, ast.BoolOp):
            stack.extend(reversed(x.operands))
        elif isinstance(x, ast.Not):
            stack.append(x.operand)
    return out


def rules_under(node: Node) -> set[int]:
    """Indices of the rules a subtree can match."""
    if isinstance(node, Leaf):
        return {i for i, _ in node.checks}
    if isinstance(node, Seq):
        return set().union(*(rules_under(c) for c in node.children))
    return set().union(*(rules_under(c) for _, c in node.branches))


def _literal_key(lit: ast.Literal) -> object:
    return lit.value


class _Resolver:
    def __init__(self, cp: CheckedPolicy) -> None:
        self.cp = cp
        self.atoms: dict[IR, Atom] = {}

    def resolve(self, e: ast.Expr, scope: dict[str, Type], stack: tuple[str, ...] = ()) -> IR:
        if isinstance(e, ast.Name):
            if len(e.parts) == 1:
                kind = resolve_name(e.parts[0], scope, self.cp.lets, self.cp.schema)
                if kind == "var":
                    return VarRef(e.parts[0], scope[e.parts[0]], e.span)
                if kind == "let":
                    return self.resolve(self.cp.lets[e.parts[0]].expr, {}, stack + (e.parts[0],))
            f = self.cp.schema.fields[e.dotted]
            return FieldRef(f, f.index, e.span)
        if isinstance(e, ast.Has):
            f = self.cp.schema.fields[e.field.dotted]
            return Present(FieldRef(f, f.index, e.field.span), e.span)
        if isinstance(e, ast.BoolOp):
            operands: list[IR] = []
            for c in e.operands:
                r = self.resolve(c, scope, stack)
                if isinstance(r, ast.BoolOp) and r.op == e.op:
                    operands.extend(r.operands)  # let-inlined `and` flattens into ours
                else:
                    operands.append(r)
            return ast.BoolOp(e.op, tuple(operands), e.span)
        if isinstance(e, ast.Not):
            return ast.Not(self.resolve(e.operand, scope, stack), e.span)
        if isinstance(e, ast.Binary):
            return ast.Binary(e.op, self.resolve(e.left, scope, stack), self.resolve(e.right, scope, stack), e.span)
        if isinstance(e, ast.Unary):
            return ast.Unary(e.op, self.resolve(e.operand, scope, stack), e.span)
        if isinstance(e, ast.Call):
            return ast.Call(e.function, tuple(self.resolve(a, scope, stack) for a in e.args), e.span, e.name_span)
        if isinstance(e, ast.Quantifier):
            f = self.cp.schema.fields[e.collection.dotted]
            coll = FieldRef(f, f.index, e.collection.span)
            body = self.resolve(e.body, {**scope, e.var: f.type.element}, stack)
            return ast.Quantifier(e.kind, e.var, coll, body, e.span)  # type: ignore[arg-type]
        return e  # literals

    def intern(self, e: IR) -> IR:
        """Replace every atomic predicate of a boolean structure by its interned Atom."""
        if isinstance(e, ast.BoolOp):
            return ast.BoolOp(e.op, tuple(self.intern(c) for c in e.operands), e.span)
        if isinstance(e, ast.Not):
            return ast.Not(self.intern(e.operand), e.span)
        atom = self.atoms.get(e)
        if atom is None:
            atom = Atom(len(self.atoms), e, tuple(_fields(e)), _may_error(e), expr_text(e))
            self.atoms[e] = atom
        return atom


def _walk(e: IR):
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        if isinstance(x, ast.BoolOp):
            stack.extend(reversed(x.operands))
        elif isinstance(x, (ast.Not, ast.Unary)):
            stack.append(x.operand)
        elif isinstance(x, ast.Binary):
            stack.extend((x.right, x.left))
        elif isinstance(x, ast.Call):
            stack.extend(reversed(x.args))
        elif isinstance(x, ast.Quantifier):
            stack.extend((x.body, x.collection))
        elif isinstance(x, Present):
            stack.append(x.field)
        elif isinstance(x, Atom):
            stack.append(x.expr)


def _fields(e: IR) -> list[FieldRef]:
    seen: dict[int, FieldRef] = {}
    for x in _walk(e):
        if isinstance(x, FieldRef) and x.index not in seen:
            seen[x.index] = x
    return list(seen.values())


def _may_error(e: IR) -> bool:
    return any(isinstance(x, ast.Binary) and x.op == "/" for x in _walk(e))


def optional_reads(e: IR) -> tuple[FieldRef, ...]:
    """The optional fields predicate `e` reads itself: a predicate that reads an absent one is false.

    Reads under `has`, and under nested `and`/`or`/`not` or a quantifier's body, do not
    count: those are predicates of their own and judge their own reads. So `has f == false`
    holds when `f` is absent, and so does `all x in xs: (not (has f and f > x))`.
    """
    seen: dict[int, FieldRef] = {}
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, FieldRef):
            if x.field.optional:
                seen.setdefault(x.index, x)
        elif isinstance(x, ast.Binary):
            stack.extend((x.right, x.left))
        elif isinstance(x, ast.Unary):
            stack.append(x.operand)
        elif isinstance(x, ast.Call):
            stack.extend(reversed(x.args))
        elif isinstance(x, ast.Quantifier):
            stack.append(x.collection)
    return tuple(seen.values())


def _conjuncts(e: IR) -> list[IR]:
    if isinstance(e, ast.BoolOp) and e.op == "and":
        return list(e.operands)
    return [e]


def _dispatch_values(c: IR) -> tuple[int, frozenset] | None:
    """(field index, allowed values) when conjunct `c` is `field == lit` or `field in [lits]`."""
    if not isinstance(c, Atom):
        return None
    e = c.expr
    if not isinstance(e, ast.Binary):
        return None
    left, right = e.left, e.right
    if e.op == "==" and isinstance(right, FieldRef) and isinstance(left, ast.Literal):
        left, right = right, left
    if not isinstance(left, FieldRef) or left.field.type.is_collection:
        return None
    if e.op == "==" and isinstance(right, ast.Literal):
        return left.index, frozenset((_literal_key(right),))
    if e.op == "in" and isinstance(right, ast.ListLiteral) and all(isinstance(i, ast.Literal) for i in right.items):
        return left.index, frozenset(_literal_key(i) for i in right.items)
    return None


def _residual(conjuncts: list[IR], span) -> IR | None:
    if not conjuncts:
        return None
    if len(conjuncts) == 1:
        return conjuncts[0]
    return ast.BoolOp("and", tuple(conjuncts), span)


def build_tree(rules: list[tuple[int, list[IR], Span]], fields: dict[int, FieldRef]) -> Node:
    """Pick the field most rules test for equality; dispatch on it; recurse."""
    if not rules:
        return Leaf(())
    counts: dict[int, int] = {}
    for _, conj, _ in rules:
        for fi in {dv[0] for c in conj if (dv := _dispatch_values(c)) is not None}:
            counts[fi] = counts.get(fi, 0) + 1
    best = max(counts.items(), key=lambda kv: (kv[1], -kv[0]), default=None)
    if best is None or best[1] < 2:
        return Leaf(tuple((i, _residual(conj, span)) for i, conj, span in rules))
    fi = best[0]
    branches: dict[object, list[tuple[int, list[IR], Span]]] = {}
    rest: list[tuple[int, list[IR], Span]] = []
    for i, conj, span in rules:
        allowed: frozenset | None = None
        remaining = []
        for c in conj:
            dv = _dispatch_values(c)
            if dv is not None and dv[0] == fi:
                allowed = dv[1] if allowed is None else allowed & dv[1]
            else:
                remaining.append(c)
        if allowed is None:
            rest.append((i, conj, span))
            continue
        for value in sorted(allowed, key=repr):  # a contradiction leaves no branch: never matches
            branches.setdefault(value, []).append((i, remaining, span))
    node = Dispatch(
        fields[fi],
        tuple((value, build_tree(sub, fields)) for value, sub in branches.items()),
    )
    if not rest:
        return node
    other = build_tree(rest, fields)
    if isinstance(other, Seq):
        return Seq((node, *other.children))
    return Seq((node, other))


def compile_policy(cp: CheckedPolicy) -> CompiledPolicy:
    p = cp.policy
    resolver = _Resolver(cp)
    infos: list[RuleInfo] = []
    tree_input: list[tuple[int, list[IR], Span]] = []
    for i, r in enumerate(p.rules):
        condition = resolver.intern(resolver.resolve(r.when, {}))
        infos.append(
            RuleInfo(
                index=i,
                name=r.name,
                shadow=r.shadow,
                verdict=r.action.verdict,
                interventions=_interventions(r.action),
                because=r.because,
                cite=r.cite,
                tags=r.tags,
                condition=condition,
                span=r.span,
                shown=shown_when_matched(condition),
            )
        )
        tree_input.append((i, _conjuncts(condition), r.span))
    ow = p.otherwise
    otherwise = RuleInfo(
        index=-1,
        name="otherwise",
        shadow=False,
        verdict=ow.action.verdict if ow else "allow",
        interventions=_interventions(ow.action) if ow else (),
        because=ow.because if ow else "no rule matched",
        cite=ow.cite if ow else None,
        tags=(),
        condition=ast.Literal(True, "bool"),
        span=ow.span if ow else p.name_span,
        shown=(),
    )
    fields = {f.index: FieldRef(f, f.index) for f in cp.schema.fields.values()}
    tree = build_tree(tree_input, fields)
    return CompiledPolicy(
        name=p.name,
        version=p.version,
        description=p.description,
        owner=p.owner,
        combine=p.combine,
        schema=cp.schema.name,
        rules=tuple(infos),
        otherwise=otherwise,
        atoms=tuple(sorted(resolver.atoms.values(), key=lambda a: a.id)),
        tree=tree,
        path=cp.path,
        ranks=tuple(-1 if r.shadow else r.severity for r in infos),
    )


def _interventions(action: ast.Action) -> tuple:
    return tuple((iv.name, tuple((k, _freeze(literal_value(v))) for k, v in iv.args)) for iv in action.interventions)


def _freeze(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value
