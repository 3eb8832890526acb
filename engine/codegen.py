"""Codegen: a compiled policy's decision tree as one Python function.

The function takes the validated field values (positional, in schema order) and
returns `(matched, errored)`: the indices of the rules whose condition held, and of
those whose condition hit a division by zero. It is built only from the checked IR:
field values are parameters, literals are rendered with `repr` or passed in as
constants, so policy text never reaches `exec` as code.

An atom used in more than one place is memoised in a local with `:=`, so each atom
is evaluated at most once per decision. Dispatch nodes become one dict lookup; when
many branches share the same shape (the usual case: "topic is X and the confidence
threshold holds"), they share one copy of the code and differ only in rule indices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import re2

from . import ast
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

__all__ = ["DivisionByZero", "atom_function", "generate", "kleene_and", "kleene_not", "kleene_or"]

_UNSET = object()
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
    def __init__(self, policy: CompiledPolicy, field_count: int, instrument: bool) -> None:
        self.policy = policy
        self.field_count = field_count
        self.instrument = instrument
        self.consts: dict[str, object] = {
            "_U": _UNSET,
            "_div": _div,
            "_guarded": _guarded,
            "_any3": _any3,
            "_all3": _all3,
            "_and3": kleene_and,
            "_or3": kleene_or,
            "_not3": kleene_not,
        }
        self.const_ids: dict[tuple, str] = {}
        self.lines: list[str] = []
        self.uses: Counter[int] = Counter()
        self.memo: set[int] = set()
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
        if self.instrument:
            code = f"_tick({a.id}, {code})"
        return code

    def atom(self, a: Atom) -> str:
        if a.id in self.memo:
            return f"(a{a.id} if a{a.id} is not _U else (a{a.id} := {self.atom_value(a)}))"
        return self.atom_value(a)

    # ---- rule conditions -------------------------------------------------------------

    def condition(self, e) -> tuple[str, bool]:
        """Code for a rule condition, and whether it is three-valued (may error)."""
        kleene = any(isinstance(x, Atom) and x.may_error for x in atoms_in(e))
        return (self.kleene(e) if kleene else self.plain(e)), kleene

    def plain(self, e) -> str:
        if isinstance(e, ast.BoolOp):
            return "(" + f" {e.op} ".join(_once(self.plain(c) for c in e.operands)) + ")"
        if isinstance(e, ast.Not):
            return f"(not {self.plain(e.operand)})"
        return self.atom(e)

    def kleene(self, e) -> str:
        if isinstance(e, ast.BoolOp):
            fn = "_and3" if e.op == "and" else "_or3"
            return f"{fn}(" + ", ".join(_once(self.kleene(c) for c in e.operands)) + ")"
        if isinstance(e, ast.Not):
            return f"_not3({self.kleene(e.operand)})"
        return self.atom(e)

    # ---- tree ---------------------------------------------------------------------------

    def count_uses(self, node: Node) -> None:
        if isinstance(node, Leaf):
            for _, residual in node.checks:
                if residual is not None:
                    for a in atoms_in(residual):
                        self.uses[a.id] += 1
        elif isinstance(node, Dispatch):
            shapes: set = set()
            for _, child in node.branches:
                key = _shape(child)
                if key is not None and key in shapes:
                    continue  # shared code: counted once
                if key is not None:
                    shapes.add(key)
                self.count_uses(child)
        else:
            for child in node.children:
                self.count_uses(child)

    def leaf(self, node: Leaf, indent: str, rule_ref: Callable[[int, int], str]) -> None:
        for j, (rule, residual) in enumerate(node.checks):
            ref = rule_ref(j, rule)
            if residual is None:
                self.lines.append(f"{indent}m.append({ref})")
                continue
            code, kleene = self.condition(residual)
            if kleene:
                self.lines.append(f"{indent}k = {code}")
                self.lines.append(f"{indent}if k:")
                self.lines.append(f"{indent}    m.append({ref})")
                self.lines.append(f"{indent}elif k is None:")
                self.lines.append(f"{indent}    err.append({ref})")
            else:
                self.lines.append(f"{indent}if {code}:")
                self.lines.append(f"{indent}    m.append({ref})")

    def node(self, node: Node, indent: str) -> None:
        if isinstance(node, Leaf):
            self.leaf(node, indent, lambda j, rule: str(rule))
        elif isinstance(node, Seq):
            for child in node.children:
                self.node(child, indent)
        else:
            self.dispatch(node, indent)

    def dispatch(self, node: Dispatch, indent: str) -> None:
        shapes: dict[object, int] = {}
        shape_nodes: list[Node] = []
        table: dict[object, tuple[int, tuple[int, ...]]] = {}
        for value, child in node.branches:
            key = _shape(child)
            if key is None:
                key = ("unique", len(shape_nodes))
            sid = shapes.get(key)
            if sid is None:
                sid = shapes[key] = len(shape_nodes)
                shape_nodes.append(child)
            rules = tuple(r for r, _ in child.checks) if isinstance(child, Leaf) else ()
            table[value] = (sid, rules)
        self.var_counter += 1
        hit = f"d{self.var_counter}"
        field_value = f"v{node.field.index}"
        if len(shape_nodes) == 1 and isinstance(shape_nodes[0], Leaf):
            # one shape: the table holds the rule indices directly
            tname = self.const({k: v[1] for k, v in table.items()}, "_T")
            self.lines.append(f"{indent}{hit} = {tname}.get({field_value})")
            self.lines.append(f"{indent}if {hit} is not None:")
            self.leaf(shape_nodes[0], indent + "    ", lambda j, rule: f"{hit}[{j}]")
            return
        tname = self.const(table, "_T")
        self.lines.append(f"{indent}{hit} = {tname}.get({field_value})")
        self.lines.append(f"{indent}if {hit} is not None:")
        sid_var, rules_var = f"s{self.var_counter}", f"r{self.var_counter}"
        self.lines.append(f"{indent}    {sid_var}, {rules_var} = {hit}")
        self.shape_switch(shape_nodes, 0, len(shape_nodes), sid_var, rules_var, indent + "    ")

    def shape_switch(self, shapes: list[Node], lo: int, hi: int, sid: str, rules: str, indent: str) -> None:
        """Binary search over shape ids, so thousands of distinct shapes stay O(log n)."""
        if hi - lo <= 4:
            for k in range(lo, hi):
                kw = "if" if k == lo else "elif"
                if hi - lo == 1:
                    self.shape_body(shapes[k], rules, indent)
                    return
                cond = f"{sid} == {k}" if k < hi - 1 else "True"
                self.lines.append(f"{indent}{kw} {cond}:" if kw == "if" or k < hi - 1 else f"{indent}else:")
                self.shape_body(shapes[k], rules, indent + "    ")
            return
        mid = (lo + hi) // 2
        self.lines.append(f"{indent}if {sid} < {mid}:")
        self.shape_switch(shapes, lo, mid, sid, rules, indent + "    ")
        self.lines.append(f"{indent}else:")
        self.shape_switch(shapes, mid, hi, sid, rules, indent + "    ")

    def shape_body(self, node: Node, rules: str, indent: str) -> None:
        before = len(self.lines)
        if isinstance(node, Leaf):
            self.leaf(node, indent, lambda j, rule: f"{rules}[{j}]")
        else:
            self.node(node, indent)
        if len(self.lines) == before:
            self.lines.append(f"{indent}pass")

    def function(self) -> str:
        p = self.policy
        self.count_uses(p.tree)
        self.memo = {a for a, n in self.uses.items() if n > 1} if not self.instrument else {a.id for a in p.atoms}
        body_start = len(self.lines)
        self.node(p.tree, "    ")
        body = self.lines[body_start:]
        params = ", ".join(f"v{i}" for i in range(self.field_count))
        head = [f"def decide({params}):", "    m = []", "    err = []"]
        if self.memo:
            head.append("    " + " = ".join(f"a{i}" for i in sorted(self.memo)) + " = _U")
        return "\n".join(head + body + ["    return m, err"]) + "\n"



def _once(operands) -> list[str]:
    """Operands of one `and`/`or` with repeats dropped: both are idempotent and operands have no side effects,
    so `x and x` is `x`, and a condition repeated 10,000 times does not become 10,000 copies of code."""
    return list(dict.fromkeys(operands))


def _shape(node: Node) -> object | None:
    """A key equal for leaves that differ only in which rules they hold."""
    if isinstance(node, Leaf):
        return ("leaf", tuple(residual for _, residual in node.checks))
    return None


def atom_function(policy: CompiledPolicy, atom: Atom, field_count: int) -> Callable[..., bool | None]:
    """One atom as a function of the field values: True, False, or None (division by zero).

    The same code the decide function inlines, so an explanation reports exactly the
    truth values the decision used.
    """
    gen = _Gen(policy, field_count, instrument=False)
    params = ", ".join(f"v{i}" for i in range(field_count))
    source = f"def atom({params}):\n    return {gen.atom_value(atom)}\n"
    namespace = dict(gen.consts)
    exec(compile(source, f"<atom {policy.name}#{atom.id}>", "exec"), namespace)
    return namespace["atom"]


def generate(
    policy: CompiledPolicy, field_count: int, tick: Callable[[int, object], object] | None = None
) -> tuple[Callable, str]:
    """The decide function of `policy` and its source.

    With `tick`, every atom is memoised and reported to `tick(atom_id, value)` when
    it is computed: tests count evaluations through it.
    """
    gen = _Gen(policy, field_count, instrument=tick is not None)
    source = gen.function()
    namespace = dict(gen.consts)
    namespace["_tick"] = tick
    exec(compile(source, f"<policy {policy.name}>", "exec"), namespace)
    return namespace["decide"], source
