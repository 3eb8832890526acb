"""Analyze: warnings about policies that compile but do not mean what they say.

Runs on compiled policies, where lets are inlined and predicates interned, so two
spellings of the same test are recognised as one.
"""

from __future__ import annotations

import math

from . import ast
from .check import Program
from .compile import Atom, CompiledPolicy, FieldRef, RuleInfo
from .diagnostics import Diagnostic

__all__ = ["analyze"]


def analyze(program: Program, compiled: dict[str, CompiledPolicy], diags: list[Diagnostic]) -> None:
    for name, cp in program.policies.items():
        for let in cp.policy.lets:
            if let.name not in cp.used_lets:
                diags.append(Diagnostic("W203", f"let `{let.name}` is never used", let.name_span, help="remove it, or use it in a rule"))
        policy = compiled[name]
        written = {r.name: r for r in cp.policy.rules}
        for rule in policy.rules:
            why = contradiction(rule.condition)
            if why:
                when = written[rule.name].when if rule.name in written else None
                span = when.span if when is not None and when.span is not None else rule.span
                diags.append(Diagnostic("W201", f"rule `{rule.name}` can never match: {why}", span, help="check the condition for a typo"))
        if policy.combine == "first_match":
            _unreachable(policy, written, diags)


def _conjuncts(e) -> list:
    if isinstance(e, ast.BoolOp) and e.op == "and":
        return list(e.operands)
    return [e]


def _unreachable(policy: CompiledPolicy, written: dict[str, ast.Rule], diags: list[Diagnostic]) -> None:
    earlier: list[RuleInfo] = []
    for rule in policy.rules:
        if rule.shadow:
            continue
        mine = set(_conjuncts(rule.condition))
        for prev in earlier:
            if set(_conjuncts(prev.condition)) <= mine:
                diags.append(
                    Diagnostic(
                        "W202",
                        f"rule `{rule.name}` is unreachable: `{prev.name}` matches whenever it does, and comes first",
                        written[rule.name].name_span if rule.name in written else rule.span,
                        help="under `combine first_match` the first matching rule decides; move it above, or make it more specific",
                        notes=(("the earlier rule", written[prev.name].name_span if prev.name in written else prev.span),),
                    )
                )
                break
        earlier.append(rule)


def contradiction(condition) -> str | None:
    """Why the conjunction `condition` can never hold, if an obvious reason exists."""
    conj = _conjuncts(condition)
    positive = {c for c in conj if isinstance(c, Atom)}
    for c in conj:
        if isinstance(c, ast.Not) and c.operand in positive:
            from .format import expr_text

            return f"it requires both `{expr_text(c.operand)}` and its negation"
    allowed: dict[int, tuple[set, str]] = {}
    excluded: dict[int, set] = {}
    low: dict[int, tuple[float, bool]] = {}
    high: dict[int, tuple[float, bool]] = {}
    names: dict[int, str] = {}
    for c in conj:
        if not isinstance(c, Atom) or not isinstance(c.expr, ast.Binary):
            continue
        e = c.expr
        left, op, right = e.left, e.op, e.right
        if isinstance(right, FieldRef) and isinstance(left, ast.Literal) and op in _FLIP:
            left, right, op = right, left, _FLIP[op]
        if not isinstance(left, FieldRef):
            continue
        f = left.index
        names[f] = left.dotted
        if op == "==" and isinstance(right, ast.Literal):
            values = {right.value}
        elif op == "in" and isinstance(right, ast.ListLiteral):
            values = {i.value for i in right.items}
        elif op == "!=" and isinstance(right, ast.Literal):
            excluded.setdefault(f, set()).add(right.value)
            continue
        elif op == "not in" and isinstance(right, ast.ListLiteral):
            excluded.setdefault(f, set()).update(i.value for i in right.items)
            continue
        elif op in ("<", "<=", ">", ">=") and isinstance(right, ast.Literal) and right.kind in ("int", "float"):
            bound = (float(right.value), op in ("<=", ">="))
            table = low if op in (">", ">=") else high
            current = table.get(f)
            tighter = current is None or (bound[0] > current[0] if table is low else bound[0] < current[0]) or (bound[0] == current[0] and not bound[1])
            if tighter:
                table[f] = bound
            continue
        else:
            continue
        prev = allowed.get(f)
        allowed[f] = (values if prev is None else prev[0] & values, left.dotted)
    for f, (values, dotted) in allowed.items():
        remaining = values - excluded.get(f, set())
        if not remaining:
            return f"no value of `{dotted}` satisfies all of its tests"
        numeric = [v for v in remaining if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numeric and len(numeric) == len(remaining) and not any(_within(v, low.get(f), high.get(f)) for v in numeric):
            return f"no value of `{dotted}` satisfies all of its tests"
    for f in set(low) & set(high):
        (lo, lo_incl), (hi, hi_incl) = low[f], high[f]
        if lo > hi or (lo == hi and not (lo_incl and hi_incl)):
            return f"no value of `{names[f]}` is both {'>=' if lo_incl else '>'} {_num(lo)} and {'<=' if hi_incl else '<'} {_num(hi)}"
    return None


_FLIP = {"==": "==", "<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!="}


def _within(v: float, lo, hi) -> bool:
    if lo is not None and (v < lo[0] or (v == lo[0] and not lo[1])):
        return False
    if hi is not None and (v > hi[0] or (v == hi[0] and not hi[1])):
        return False
    return True


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x.is_integer() else repr(x)
