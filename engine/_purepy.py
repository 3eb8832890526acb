"""engine._native in Python, for a machine where pip could not build the C extension.

The same types, taking the same arguments and giving the same answers as
engine/_native.c, only slower. `make test` runs the engine's decision tests on this
module too (tests/test_native.py), so the two cannot drift apart.
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


class Validator:
    """Only the generated Python validator: C's fast path gives the same answers, faster."""

    __slots__ = ("__weakref__", "_fallback")

    def __init__(self, fields: tuple, fallback: Callable) -> None:
        self._fallback = fallback

    def __call__(self, annotations: object) -> tuple[tuple, list | None]:
        return self._fallback(annotations)


class Tree:
    __slots__ = (
        "__weakref__", "_atoms", "_fields", "_first_match", "_otherwise_severity", "_otherwise_verdict", "_ranks", "_root",
        "_severities", "_slots", "_tick", "_type", "_verdicts",
    )

    def __init__(
        self, fields: int, atoms: tuple, slots: int, root: tuple, verdicts: tuple, ranks: tuple, severities: tuple,
        otherwise_verdict: str, otherwise_severity: int, first_match: bool, decision_type: type, tick: Callable | None = None,
    ) -> None:
        if not issubclass(decision_type, PolicyDecisionCore):
            raise TypeError("decision_type must subclass PolicyDecisionCore")
        self._fields, self._atoms, self._slots, self._root = fields, atoms, slots, root
        self._verdicts, self._ranks, self._severities = verdicts, ranks, severities
        self._otherwise_verdict, self._otherwise_severity, self._first_match = otherwise_verdict, otherwise_severity, first_match
        self._type, self._tick = decision_type, tick

    def _atom(self, position: int, values: tuple, memo: list) -> bool | None:
        kind, op, left, lconst, right, rconst, guards, fn, atom_id, slot = self._atoms[position]
        if slot >= 0 and memo[slot] is not _UNSET:
            return memo[slot]
        if any(values[g] is None for g in guards):
            result: bool | None = False
        elif kind == A_TRUTH:
            result = bool(values[left])
        elif kind == A_PRESENT:
            result = values[left] is not None
        elif kind == A_COMPARE:
            a = values[left] if left >= 0 else lconst
            b = values[right] if right >= 0 else rconst
            result = bool(_COMPARE[op](a, b))
        elif kind in (A_IN, A_NOT_IN):
            found = (values[left] if left >= 0 else lconst) in (values[right] if right >= 0 else rconst)
            result = found if kind == A_IN else not found
        else:
            out = fn(*values)
            result = _ERROR if out is None else bool(out)
        if self._tick is not None:
            out = self._tick(atom_id, result)
            result = _ERROR if out is None else bool(out)
        if slot >= 0:
            memo[slot] = result
        return result

    def _condition(self, c: tuple, values: tuple, memo: list) -> bool | None:
        kind, arg = c
        if kind == C_ATOM:
            return self._atom(arg, values, memo)
        if kind == C_NOT:
            r = self._condition(arg, values, memo)
            return _ERROR if r is _ERROR else not r
        error = False
        for kid in arg:
            r = self._condition(kid, values, memo)
            if r is _ERROR:
                error = True
            elif r is (kind == C_OR):  # true settles `or`, false settles `and`
                return r
        return _ERROR if error else kind == C_AND

    def _run(self, node: tuple, values: tuple, memo: list, matched: list, errored: list) -> None:
        kind = node[0]
        if kind == N_LEAF:
            for rule, cond in node[1]:
                r = True if cond is None else self._condition(cond, values, memo)
                if r is True:
                    matched.append(rule)
                elif r is _ERROR:
                    errored.append(rule)
        elif kind == N_DISPATCH:
            hit = node[2].get(values[node[1]])
            if hit is not None:
                self._run(node[3][hit], values, memo, matched, errored)
        else:
            for kid in node[1]:
                self._run(kid, values, memo, matched, errored)

    def _match(self, values: tuple) -> tuple[list, list]:
        if type(values) is not tuple or len(values) != self._fields:
            raise TypeError(f"expected a tuple of {self._fields} field values")
        memo = [_UNSET] * self._slots
        matched: list = []
        errored: list = []
        self._run(self._root, values, memo, matched, errored)
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


class Evaluator:
    __slots__ = ("_compiled", "_hash", "_trees", "_type", "_validator")

    def __init__(self, validator: Validator, trees: tuple, compiled: tuple, hash: str, decision_type: type) -> None:
        if len(trees) != len(compiled) or not trees:
            raise ValueError("one tree per compiled policy, at least one")
        if not issubclass(decision_type, DecisionCore):
            raise TypeError("decision_type must subclass DecisionCore")
        self._validator, self._trees, self._compiled, self._hash = validator, trees, compiled, hash
        self._type = decision_type

    def __call__(self, annotations: object) -> DecisionCore:
        values, warns = self._validator(annotations)
        policies, top, best = [], None, -1
        for tree, compiled in zip(self._trees, self._compiled):
            pd, severity = tree._settle(compiled, values)
            policies.append(pd)
            if severity > best:
                top, best = pd, severity
        d = self._type.__new__(self._type)
        d.verdict, d.policies, d.policy_set_hash = top.verdict, tuple(policies), self._hash
        d._input_warnings, d._top, d._built = warns or (), top, None
        return d
