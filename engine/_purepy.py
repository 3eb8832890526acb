"""engine._native in Python, for a machine where pip could not build the C extension.

The same types, taking the same arguments and giving the same answers as
engine/_native.c, only slower. tests/test_native.py runs both on the same random
programs, and runs the engine's decision and service tests on this one too, so the two
cannot drift apart.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

A_COMPARE, A_TRUTH, A_IN, A_NOT_IN, A_PRESENT, A_CALL = range(6)
C_AND, C_OR, C_NOT, C_ATOM = range(4)
N_LEAF, N_DISPATCH, N_SEQ = range(3)
K_STRING, K_ENUM, K_INT, K_FLOAT, K_BOOL, K_STRINGS_LIST, K_STRINGS_SET, K_OTHER = range(8)

_COMPARE = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)
_ERROR = None  # an atom or condition that divided by zero
_UNSET = object()  # a memo slot not yet computed


class PolicyDecisionCore:
    __slots__ = ("_built", "_compiled", "_errored", "_index", "_matched", "_values", "verdict")


class DecisionCore:
    __slots__ = ("_built", "_input_warnings", "_top", "policies", "policy_set_hash", "verdict")

    @property
    def shape(self) -> tuple | None:
        """All a decision's justification depends on beside `values` and `input_warnings`: decisions of one set with
        equal shapes differ only in the values their conditions observed and the unknown enum values they name.
        None when its policies read different schemas."""
        values = self.values
        shape = []
        for p in self.policies:
            if p._values is not values:
                return None
            shape.append((p._compiled.name, p._index, p._matched, p._errored))
        return tuple(shape)

    @property
    def values(self) -> tuple:
        """The validated input its (first) policy decided on, indexed by `FieldRef.index`."""
        return self.policies[0]._values if self.policies else ()


class Validator:
    """Only the generated Python validator: C's fast path gives the same answers, faster."""

    __slots__ = ("__weakref__", "_fallback")

    def __init__(self, fields: tuple, fallback: Callable) -> None:
        self._fallback = fallback

    def __call__(self, annotations: object) -> tuple[tuple, list | None]:
        return self._fallback(annotations)


class Tree:
    """The program compiled once into nested closures, each node and atom a function: a walk
    over the tuples on every decision cost three times as much."""

    __slots__ = (
        "__weakref__", "_fields", "_first_match", "_otherwise_severity", "_otherwise_verdict", "_ranks", "_run", "_severities",
        "_slots", "_type", "_verdicts",
    )

    def __init__(
        self, fields: int, atoms: tuple, slots: int, root: tuple, verdicts: tuple, ranks: tuple, severities: tuple,
        otherwise_verdict: str, otherwise_severity: int, first_match: bool, decision_type: type, tick: Callable | None = None,
    ) -> None:
        if not issubclass(decision_type, PolicyDecisionCore):
            raise TypeError("decision_type must subclass PolicyDecisionCore")
        self._fields, self._slots = fields, slots
        self._verdicts, self._ranks, self._severities = verdicts, ranks, severities
        self._otherwise_verdict, self._otherwise_severity, self._first_match = otherwise_verdict, otherwise_severity, first_match
        self._type = decision_type
        compiled_atoms = [_atom(spec, tick) for spec in atoms]
        self._run = _node(root, compiled_atoms)

    def _match(self, values: tuple) -> tuple[list, list]:
        if type(values) is not tuple or len(values) != self._fields:
            raise TypeError(f"expected a tuple of {self._fields} field values")
        matched: list = []
        errored: list = []
        self._run(values, [_UNSET] * self._slots, matched, errored)
        return matched, errored

    def match(self, values: tuple) -> tuple[tuple, tuple]:
        matched, errored = self._match(values)
        return tuple(matched), tuple(errored)

    def _settle(self, compiled: object, values: tuple) -> tuple[PolicyDecisionCore, int]:
        matched, errored = self._match(values)
        matched.sort()
        index, best = -1, -1
        for rule in matched:
            rank = self._ranks[rule]
            if rank >= 0 if self._first_match else rank > best:
                index, best = rule, rank
                if self._first_match:
                    break
        pd = self._type.__new__(self._type)
        pd.verdict = self._verdicts[index] if index >= 0 else self._otherwise_verdict
        pd._compiled, pd._values, pd._matched, pd._errored = compiled, values, tuple(matched), tuple(errored)
        pd._index, pd._built = index, None
        return pd, self._severities[index] if index >= 0 else self._otherwise_severity

    def settle(self, compiled: object, values: tuple) -> PolicyDecisionCore:
        return self._settle(compiled, values)[0]


def _atom(spec: tuple, tick: Callable | None) -> Callable[[tuple, list], bool | None]:
    """One atom as a function of (values, memo): True, False, or None for a division by zero."""
    kind, op, left, lconst, right, rconst, guards, fn, atom_id, slot = spec
    if kind == A_TRUTH:
        compute = lambda v: bool(v[left])
    elif kind == A_PRESENT:
        compute = lambda v: v[left] is not None
    elif kind == A_COMPARE:
        compare = _COMPARE[op]
        if left >= 0 and right < 0:  # the usual shape: a field and a literal
            compute = lambda v: bool(compare(v[left], rconst))
        else:
            compute = lambda v: bool(compare(v[left] if left >= 0 else lconst, v[right] if right >= 0 else rconst))
    elif kind in (A_IN, A_NOT_IN):
        wanted = kind == A_IN
        if left >= 0 and right < 0:  # a field in a list literal
            compute = lambda v: (v[left] in rconst) is wanted
        elif left < 0 and right >= 0:  # a literal in a collection field
            compute = lambda v: (lconst in v[right]) is wanted
        else:
            compute = lambda v: ((v[left] if left >= 0 else lconst) in (v[right] if right >= 0 else rconst)) is wanted
    else:
        def compute(v: tuple) -> bool | None:
            out = fn(*v)
            return _ERROR if out is None else bool(out)
    if guards:  # an absent optional field it reads makes it false
        unguarded = compute
        if len(guards) == 1:
            (guard,) = guards
            compute = lambda v: False if v[guard] is None else unguarded(v)
        else:
            compute = lambda v: False if any(v[g] is None for g in guards) else unguarded(v)
    if tick is not None:
        untold = compute

        def compute(v: tuple) -> bool | None:
            out = tick(atom_id, untold(v))
            return _ERROR if out is None else bool(out)
    if slot < 0:
        return lambda v, memo: compute(v)

    def memoised(v: tuple, memo: list) -> bool | None:
        value = memo[slot]
        if value is _UNSET:
            value = memo[slot] = compute(v)
        return value

    return memoised


def _condition(c: tuple, atoms: list) -> Callable[[tuple, list], bool | None]:
    """A condition in three-valued logic as a function of (values, memo)."""
    kind, arg = c
    if kind == C_ATOM:
        return atoms[arg]
    if kind == C_NOT:
        operand = _condition(arg, atoms)
        return lambda v, memo: _ERROR if (r := operand(v, memo)) is _ERROR else not r
    operands = [_condition(kid, atoms) for kid in arg]
    settles = kind == C_OR  # true settles `or`, false settles `and`

    def combined(v: tuple, memo: list) -> bool | None:
        error = False
        for operand in operands:
            r = operand(v, memo)
            if r is settles:
                return r
            if r is _ERROR:
                error = True
        return _ERROR if error else not settles

    return combined


def _node(node: tuple, atoms: list) -> Callable[[tuple, list, list, list], None]:
    """A node as a function of (values, memo, matched, errored) that adds its rules to the lists."""
    kind = node[0]
    if kind == N_LEAF:
        checks = [(rule, None if cond is None else _condition(cond, atoms)) for rule, cond in node[1]]

        def leaf(v: tuple, memo: list, matched: list, errored: list) -> None:
            for rule, condition in checks:
                r = True if condition is None else condition(v, memo)
                if r is True:
                    matched.append(rule)
                elif r is _ERROR:
                    errored.append(rule)

        return leaf
    if kind == N_DISPATCH:
        field, table, kids = node[1], node[2], [_node(kid, atoms) for kid in node[3]]

        def dispatch(v: tuple, memo: list, matched: list, errored: list) -> None:
            hit = table.get(v[field])
            if hit is not None:
                kids[hit](v, memo, matched, errored)

        return dispatch
    kids = [_node(kid, atoms) for kid in node[1]]

    def seq(v: tuple, memo: list, matched: list, errored: list) -> None:
        for kid in kids:
            kid(v, memo, matched, errored)

    return seq


class Evaluator:
    __slots__ = ("_compiled", "_hash", "_named", "_trees", "_type", "_validator")

    def __init__(self, validator: Validator, trees: tuple, compiled: tuple, hash: str, decision_type: type, named: Callable | None = None) -> None:
        if len(trees) != len(compiled) or not trees:
            raise ValueError("one tree per compiled policy, at least one")
        if not issubclass(decision_type, DecisionCore):
            raise TypeError("decision_type must subclass DecisionCore")
        self._validator, self._trees, self._compiled, self._hash = validator, trees, compiled, hash
        self._type, self._named = decision_type, named

    def __call__(self, annotations: object, policies: object = None) -> DecisionCore:
        if policies:
            if self._named is None:
                raise TypeError("this evaluator decides with every policy only")
            return self._named(annotations, policies)
        values, warns = self._validator(annotations)
        decided, top, best = [], None, -1
        for tree, compiled in zip(self._trees, self._compiled):
            pd, severity = tree._settle(compiled, values)
            decided.append(pd)
            if severity > best:
                top, best = pd, severity
        d = self._type.__new__(self._type)
        d.verdict, d.policies, d.policy_set_hash = top.verdict, tuple(decided), self._hash
        d._input_warnings, d._top, d._built = warns or (), top, None
        return d
