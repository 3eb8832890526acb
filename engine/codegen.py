"""Codegen: a compiled policy's decision tree as a program for `engine.native.Tree`.

The tree's nodes become nested tuples C walks: a dispatch is one hash lookup, a leaf
lists its rules with their remaining conditions in three-valued logic. The usual atoms
(a field compared with a literal, membership, `has`) are evaluated by C with Python's
own operators; every other atom becomes a generated Python function of the field values.
An atom read by more than one rule gets a memo slot, so each atom is evaluated at most
once per decision.

Everything is built only from the checked IR: field values are parameters, literals are
rendered with `repr` or passed in as constants, so policy text never reaches `exec` as code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import re2

from . import ast, native
from .compile import (
    Atom,
    CompiledPolicy,
    Dispatch,
    FieldRef,
    Leaf,
    Node,
    Present,
    Seq,
    VarRef,
    _may_error,
    atoms_in,
    optional_reads,
)

__all__ = ["DivisionByZero", "atom_function", "kleene_and", "kleene_not", "kleene_or", "program"]

# `matches` only asks whether there is a match. Without captures RE2 answers from its DFA;
# with them it also runs its NFA for the groups' spans, which for `(.*a){20}` over 1 MB
# takes seconds instead of milliseconds.
_PATTERN_OPTIONS = re2.Options()
_PATTERN_OPTIONS.never_capture = True


class DivisionByZero(Exception):
    """Raised inside an atom; the atom's value becomes None (an error)."""


def _div(a, b):
    if b == 0:
        raise DivisionByZero
    return a / b


def _any3(body: Callable[[object], object], items) -> bool:
    """`any` whose body may divide by zero: true when some element satisfies it, whatever
    the others do; else a division by zero if one divided; else false. Never order-dependent."""
    error = False
    for item in items:
        try:
            if body(item):
                return True
        except DivisionByZero:
            error = True
    if error:
        raise DivisionByZero
    return False


def _all3(body: Callable[[object], object], items) -> bool:
    """`all` whose body may divide by zero: false when some element fails it, whatever the others do."""
    error = False
    for item in items:
        try:
            if not body(item):
                return False
        except DivisionByZero:
            error = True
    if error:
        raise DivisionByZero
    return True


def _guarded(fn: Callable[[], bool]) -> bool | None:
    try:
        return bool(fn())
    except DivisionByZero:
        return None


def kleene_and(*values: bool | None) -> bool | None:
    """False if any is false; else None (error) if any errored; else True."""
    if False in values:
        return False
    return None if None in values else True


def kleene_or(*values: bool | None) -> bool | None:
    if True in values:
        return True
    return None if None in values else False


def kleene_not(value: bool | None) -> bool | None:
    return None if value is None else not value


class _Gen:
    def __init__(self, policy: CompiledPolicy, field_count: int) -> None:
        self.policy = policy
        self.field_count = field_count
        self.consts: dict[str, object] = {
            "_div": _div,
            "_guarded": _guarded,
            "_any3": _any3,
            "_all3": _all3,
        }
        self.const_ids: dict[tuple, str] = {}
        self.var_counter = 0

    def const(self, value: object, prefix: str = "_C") -> str:
        key = (prefix, type(value).__name__, repr(value))
        name = self.const_ids.get(key)
        if name is None:
            name = f"{prefix}{len(self.const_ids)}"
            self.const_ids[key] = name
            self.consts[name] = value
        return name

    # ---- expressions ----------------------------------------------------------------

    def value(self, e, vars: dict[str, str]) -> str:
        if isinstance(e, FieldRef):
            return f"v{e.index}"
        if isinstance(e, VarRef):
            return vars[e.name]
        if isinstance(e, ast.Literal):
            return repr(e.value)
        if isinstance(e, Present):
            return f"(v{e.field.index} is not None)" if e.field.field.optional else "True"
        if isinstance(e, ast.Unary):
            return f"(-{self.value(e.operand, vars)})"
        if isinstance(e, ast.Call):
            arg = self.value(e.args[0], vars)
            return f"len({arg})" if e.function == "len" else f"{arg}.lower()"
        if isinstance(e, ast.Quantifier):
            self.var_counter += 1
            var = f"q{self.var_counter}"
            body = self.boolean_plain(e.body, {**vars, e.var: var})
            if _may_error(e.body):  # an error in one element must not hide another that settles it
                return f"_{e.kind}3(lambda {var}: {body}, v{e.collection.index})"
            return f"{e.kind}({body} for {var} in v{e.collection.index})"
        if isinstance(e, ast.Binary):
            return self.binary(e, vars)
        if isinstance(e, (ast.BoolOp, ast.Not)):
            return self.boolean_plain(e, vars)
        raise AssertionError(f"cannot generate {e!r}")

    def boolean_plain(self, e, vars: dict[str, str]) -> str:
        """A boolean expression inside an atom (quantifier bodies): plain Python logic."""
        if isinstance(e, ast.BoolOp):
            return "(" + f" {e.op} ".join(_once(self.boolean_plain(c, vars) for c in e.operands)) + ")"
        if isinstance(e, ast.Not):
            return f"(not {self.boolean_plain(e.operand, vars)})"
        if isinstance(e, Atom):
            e = e.expr
        return self.guard(e, self.value(e, vars))

    def guard(self, e, code: str) -> str:
        """`code` for predicate `e`, false when an optional field it reads is absent."""
        missing = [f"v{f.index} is not None" for f in optional_reads(e)]
        return f"({' and '.join(missing)} and {code})" if missing else code

    def binary(self, e: ast.Binary, vars: dict[str, str]) -> str:
        op = e.op
        if op in ("in", "not in") and isinstance(e.right, ast.ListLiteral):
            values = frozenset(i.value for i in e.right.items)
            return f"({self.value(e.left, vars)} {op} {self.const(values)})"
        left = self.value(e.left, vars)
        right = self.value(e.right, vars)
        if op in ("==", "!=", "<", "<=", ">", ">=", "+", "-", "*"):
            return f"({left} {op} {right})"
        if op == "/":
            return f"_div({left}, {right})"
        if op in ("in", "not in"):
            return f"({left} {op} {right})"
        if op == "contains":
            return f"({right} in {left})"
        if op == "matches":
            pattern = self.const(re2.compile(e.right.value, _PATTERN_OPTIONS), "_R")
            return f"({pattern}.search({left}) is not None)"
        if op == "starts_with":
            return f"{left}.startswith({right})"
        if op == "ends_with":
            return f"{left}.endswith({right})"
        raise AssertionError(op)

    def atom_value(self, a: Atom) -> str:
        """The atom's raw computation: an absent optional field it reads makes it False."""
        code = self.guard(a.expr, self.value(a.expr, {}))
        if a.may_error:
            code = f"_guarded(lambda: {code})"
        return code


def _once(operands) -> list[str]:
    """Operands of one `and`/`or` with repeats dropped: both are idempotent and operands have no side effects,
    so `x and x` is `x`, and a condition repeated 10,000 times does not become 10,000 copies of code."""
    return list(dict.fromkeys(operands))


# ---- the tree, for engine.native --------------------------------------------------------

_COMPARE_OPS = {"<": 0, "<=": 1, "==": 2, "!=": 3, ">": 4, ">=": 5}  # Python's Py_LT ... Py_GE


def _operand(e) -> tuple[int, object] | None:
    """(field index, None) or (-1, constant) for an operand C reads directly; None otherwise."""
    if isinstance(e, FieldRef):
        return e.index, None
    if isinstance(e, ast.Literal):
        return -1, e.value
    return None


def _direct_atom(a: Atom) -> tuple[int, int, tuple[int, object], tuple[int, object]] | None:
    """(kind, op, left, right) when C evaluates the atom itself with Python's operators, else None."""
    e = a.expr
    if isinstance(e, FieldRef):
        return native.A_TRUTH, 0, (e.index, None), (-1, None)
    if isinstance(e, Present):
        return native.A_PRESENT, 0, (e.field.index, None), (-1, None)
    if not isinstance(e, ast.Binary):
        return None
    left, right = _operand(e.left), _operand(e.right)
    if left is None:
        return None
    if e.op in _COMPARE_OPS and right is not None:
        return native.A_COMPARE, _COMPARE_OPS[e.op], left, right
    kind = native.A_IN if e.op in ("in", "contains") else native.A_NOT_IN
    if e.op in ("in", "not in") and isinstance(e.right, ast.ListLiteral) and all(isinstance(i, ast.Literal) for i in e.right.items):
        return kind, 0, left, (-1, frozenset(i.value for i in e.right.items))
    if e.op in ("in", "not in") and isinstance(e.right, FieldRef):
        return kind, 0, left, right
    if e.op == "contains" and isinstance(e.left, FieldRef) and right is not None:
        return kind, 0, right, left  # `left contains right` is `right in left`
    return None


class _Program:
    """A compiled policy as the arguments of `engine.native.Tree`."""

    def __init__(self, policy: CompiledPolicy, field_count: int, memo_all: bool) -> None:
        self.policy = policy
        self.field_count = field_count
        self.uses: Counter[int] = Counter()
        self.count(policy.tree)
        self.slots = {a: i for i, a in enumerate(sorted(a for a, n in self.uses.items() if n > 1 or memo_all))}
        self.positions: dict[int, int] = {}
        self.atoms: list[Atom] = []

    def count(self, node: Node) -> None:
        if isinstance(node, Leaf):
            for _, residual in node.checks:
                if residual is not None:
                    for a in {a.id for a in atoms_in(residual)}:
                        self.uses[a] += 1
        elif isinstance(node, Dispatch):
            for _, child in node.branches:
                self.count(child)
        else:
            for child in node.children:
                self.count(child)

    def condition(self, e) -> tuple:
        if isinstance(e, ast.BoolOp):
            kind = native.C_AND if e.op == "and" else native.C_OR
            kids = tuple(dict.fromkeys(self.condition(c) for c in e.operands))  # `x and x` is `x`: no side effects
            return kids[0] if len(kids) == 1 else (kind, kids)
        if isinstance(e, ast.Not):
            return (native.C_NOT, self.condition(e.operand))
        position = self.positions.get(e.id)
        if position is None:
            position = self.positions[e.id] = len(self.atoms)
            self.atoms.append(e)
        return (native.C_ATOM, position)

    def node(self, node: Node) -> tuple:
        if isinstance(node, Leaf):
            return (native.N_LEAF, tuple((rule, None if residual is None else self.condition(residual)) for rule, residual in node.checks))
        if isinstance(node, Seq):
            return (native.N_SEQ, tuple(self.node(c) for c in node.children))
        table = {value: i for i, (value, _) in enumerate(node.branches)}
        field_type = node.field.field.type
        # on an enum field, C goes to a branch by the value's place in the declaration, which its validator finds
        by_ordinal = tuple(table.get(v, -1) for v in field_type.values) if field_type.kind == "enum" else None
        return (native.N_DISPATCH, node.field.index, table, tuple(self.node(child) for _, child in node.branches), by_ordinal)

    def atom_specs(self) -> tuple[tuple, str]:
        """Each atom for C, and the source of the generated functions of those C does not evaluate itself."""
        gen = _Gen(self.policy, self.field_count)
        params = ", ".join(f"v{i}" for i in range(self.field_count))
        lines: list[str] = []
        specs: list = []
        for a in self.atoms:
            direct = _direct_atom(a)
            if direct is None:
                lines.append(f"def atom{a.id}({params}):\n    return {gen.atom_value(a)}\n")
                specs.append((native.A_CALL, 0, (-1, None), (-1, None), (), f"atom{a.id}"))
            else:
                kind, op, left, right = direct
                guards = tuple(f.index for f in optional_reads(a.expr))
                specs.append((kind, op, left, right, guards, None))
        source = "\n".join(lines)
        namespace = dict(gen.consts)
        if source:
            exec(compile(source, f"<atoms {self.policy.name}>", "exec"), namespace)
        out = tuple(
            (kind, op, left[0], left[1], right[0], right[1], guards, namespace[fn] if fn else None, a.id, self.slots.get(a.id, -1))
            for a, (kind, op, left, right, guards, fn) in zip(self.atoms, specs)
        )
        return out, source


def program(policy: CompiledPolicy, field_count: int, memo_all: bool = False) -> tuple[dict, str]:
    """The keyword arguments of `engine.native.Tree` for `policy`, and the Python generated for it.

    An atom read by more than one rule gets a memo slot, so it is evaluated at most once
    per decision (`memo_all`: every atom gets one, for tests that count evaluations).
    """
    p = _Program(policy, field_count, memo_all)
    root = p.node(policy.tree)
    atoms, source = p.atom_specs()
    kwargs = {
        "fields": field_count,
        "atoms": atoms,
        "slots": len(p.slots),
        "root": root,
        "verdicts": tuple(r.verdict for r in policy.rules),
        "ranks": policy.ranks,
        "severities": tuple(r.severity for r in policy.rules),
        "otherwise_verdict": policy.otherwise.verdict,
        "otherwise_severity": policy.otherwise.severity,
        "first_match": policy.combine == "first_match",
    }
    return kwargs, source


def atom_function(policy: CompiledPolicy, atom: Atom, field_count: int) -> Callable[..., bool | None]:
    """One atom as a function of the field values: True, False, or None (division by zero).

    The same code the tree runs for atoms it calls, and the same operators C applies to
    the others, so an explanation reports exactly the truth values the decision used.
    """
    gen = _Gen(policy, field_count)
    params = ", ".join(f"v{i}" for i in range(field_count))
    source = f"def atom({params}):\n    return {gen.atom_value(atom)}\n"
    namespace = dict(gen.consts)
    exec(compile(source, f"<atom {policy.name}#{atom.id}>", "exec"), namespace)
    return namespace["atom"]
