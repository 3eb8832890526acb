"""Explain: why a decision came out as it did, for a person.

Three parts, all computed from the same immutable policy set and input:

- the **path** through each policy's decision tree: every dispatch (the field, the value
  observed, the branch taken or none, the rules that branch leaves out) and every rule
  checked in the leaves reached, with its remaining condition and each atomic condition's
  observed values;
- **why** the deciding rule wins over the other matching rules (`most_severe`: severity,
  then file order; `first_match`: file order), and across policies;
- the **nearest flip**: the single-field changes that would change the verdict. For every
  field read by an atom of the policies in play, candidate values come from the literals
  the atoms compare it with (the literal, one either side of it, the other enum values,
  the toggled bool, a label added or removed, absent for an optional field); each
  candidate is decided again with `PolicySet.evaluate`, and the flipping changes are
  reported, one per field, nearest first. Deterministic: candidates and ties have a
  fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from . import ast
from .compile import (
    Atom,
    CompiledPolicy,
    FieldRef,
    Leaf,
    Node,
    RuleInfo,
    Seq,
    VarRef,
    atoms_in,
    rules_under,
)
from .evaluate import Condition, Decision, PolicyDecision, truth
from .format import expr_text, literal_text
from .policyset import PolicySet
from .types import FieldInfo
from .validate import InputError

__all__ = ["Check", "Explanation", "Flip", "PolicyTrace", "Route", "explain_decision", "nearest_flips", "trace_policy"]

MAX_SHOWN_CHARS = 60  # observed strings are cut to this in text
_ABSENT = object()


# ---- the path through a tree ------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One rule checked in a reached leaf: its remaining condition and whether it held."""

    rule: RuleInfo
    residual: str | None  # the condition left once the dispatches above have matched; None: nothing left
    held: bool | None  # None: division by zero
    conditions: tuple[Condition, ...]  # every atom of the residual, in order, with its truth

    def to_dict(self) -> dict:
        return {
            "rule": self.rule.name,
            "shadow": self.rule.shadow,
            "action": self.rule.verdict,
            "condition": self.residual,
            "held": self.held,
            "conditions": [c.to_dict() for c in self.conditions],
        }


@dataclass(frozen=True)
class Route:
    """One dispatch on the path: the value observed, the branch taken, what it leaves out."""

    field: str
    observed: object
    taken: bool  # False: no branch for the observed value
    skipped: tuple[str, ...]  # rules under this dispatch that the branch leaves out, in file order
    then: tuple[Step, ...]

    def to_dict(self) -> dict:
        return {
            "dispatch": self.field,
            "observed": _shown(self.observed),
            "branch": _shown(self.observed) if self.taken else None,
            "not_reached": list(self.skipped),
            "then": [s.to_dict() for s in self.then],
        }


Step = Union[Route, Check]


@dataclass(frozen=True)
class PolicyTrace:
    """One policy's path and why its deciding rule decides."""

    policy: CompiledPolicy
    decision: PolicyDecision
    steps: tuple[Step, ...]
    why: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "policy": self.policy.name,
            "version": self.policy.version,
            "combine": self.policy.combine,
            "verdict": self.decision.verdict,
            "rule": self.decision.rule,
            "matched": list(self.decision.matched),
            "path": [s.to_dict() for s in self.steps],
            "why": list(self.why),
        }


def trace_policy(policy: CompiledPolicy, values: tuple) -> tuple[Step, ...]:
    """Walk `policy.tree` with validated `values` as the generated code does."""
    return tuple(_walk(policy, policy.tree, values))


def _walk(policy: CompiledPolicy, node: Node, values: tuple) -> list[Step]:
    if isinstance(node, Seq):
        return [s for child in node.children for s in _walk(policy, child, values)]
    if isinstance(node, Leaf):
        return [_check(policy, policy.rules[i], residual, values) for i, residual in node.checks]
    observed = values[node.field.index]
    child = dict(node.branches).get(observed) if observed is not None else None
    under = rules_under(node)
    if child is None:
        return [Route(node.field.dotted, observed, False, _names(policy, under), ())]
    skipped = under - rules_under(child)
    return [Route(node.field.dotted, observed, True, _names(policy, skipped), tuple(_walk(policy, child, values)))]


def _check(policy: CompiledPolicy, rule: RuleInfo, residual, values: tuple) -> Check:
    if residual is None:
        return Check(rule, None, True, ())
    conditions = tuple(
        Condition(a.text, truth(policy, a, values), tuple((f.dotted, values[f.index]) for f in a.fields)) for a in _atoms(residual)
    )
    return Check(rule, expr_text(residual), truth(policy, residual, values), conditions)


def _names(policy: CompiledPolicy, indices: set[int]) -> tuple[str, ...]:
    return tuple(policy.rules[i].name for i in sorted(indices))



def _atoms(e) -> list[Atom]:
    """The atoms of a boolean structure, in order of appearance, each once."""
    return list({a.id: a for a in atoms_in(e)}.values())


# ---- why the deciding rule wins ---------------------------------------------------------


def _why(policy: CompiledPolicy, decision: PolicyDecision) -> tuple[str, ...]:
    rules = {r.name: r for r in policy.rules}
    matched = [rules[n] for n in decision.matched]
    deciding = decision.rule
    if not matched:
        return (f"no rule matched, so `otherwise` decides: {policy.otherwise.verdict}",)
    if len(matched) == 1:
        return (f"{deciding} is the only matching rule",)
    win = rules[deciding]
    if policy.combine == "first_match":
        lines = [f"combine first_match: the first matching rule in file order decides, so {deciding}"]
        lines += [f"{r.name} ({r.verdict}) also matched but comes later in the file" for r in matched if r is not win]
        return tuple(lines)
    lines = [f"combine most_severe: the most severe action decides (remove > intervene > allow), then file order, so {deciding} ({win.verdict})"]
    for r in matched:
        if r is win:
            continue
        if r.severity < win.severity:
            reason = f"{r.verdict} is less severe than {win.verdict}"
        else:
            reason = f"as severe, but comes later in the file than {deciding}"
        extra = "; its interventions are returned too" if r.verdict == "intervene" == win.verdict else ""
        lines.append(f"{r.name} ({r.verdict}) also matched: {reason}{extra}")
    return tuple(lines)


def _overall_why(decision: Decision) -> str | None:
    if len(decision.policies) < 2:
        return None
    each = ", ".join(f"{d.policy}: {d.verdict}" for d in decision.policies)
    return f"the overall verdict is the most severe of the policies' verdicts ({each}); among equals the first policy by name decides: {decision.policy}"


# ---- the nearest flip -------------------------------------------------------------------


@dataclass(frozen=True)
class Flip:
    """A single-field change that changes the verdict."""

    field: str
    before: object  # the validated value (None: absent)
    after: object
    kind: str  # "value" | "add" | "remove": a new value, or a label added to / removed from a collection
    item: object  # the label added or removed
    distance: float | None  # numeric fields only
    atoms: tuple[tuple[str, bool | None, bool | None], ...]  # expression, truth before, truth after
    verdict: str
    policy: str | None
    rule: str | None

    def change_text(self) -> str:
        if self.kind == "add":
            return f"{self.field} also had {_text(self.item)}"
        if self.kind == "remove":
            return f"{self.field} did not have {_text(self.item)}"
        return f"{self.field} were {_text(self.after)} (instead of {_text(self.before)})"

    def sentence(self, qualified: bool = False) -> str:
        """"if confidence were 0.79 (instead of 0.93), `confidence >= 0.8` would not hold and the verdict would be ..." """
        parts = [f"`{e}` {_would(after)}" for e, _, after in self.atoms[:3]]
        if len(self.atoms) > 3:
            parts.append(f"{len(self.atoms) - 3} more conditions would change")
        by = f"{self.policy}/{self.rule}" if qualified else self.rule
        tail = f"the verdict would be {self.verdict} ({by})"
        return f"if {self.change_text()}, " + (", ".join(parts) + " and " if parts else "") + tail

    def to_dict(self) -> dict:
        return {
            "field": self.field,
            "change": self.kind,
            "before": _shown(self.before),
            "after": _shown(self.after),
            "item": _shown(self.item) if self.kind != "value" else None,
            "distance": self.distance,
            "conditions": [{"expression": e, "held_before": b, "held_after": a} for e, b, a in self.atoms],
            "verdict": self.verdict,
            "policy": self.policy,
            "rule": self.rule,
        }


def _would(held: bool | None) -> str:
    return "would hold" if held else "could not be evaluated" if held is None else "would not hold"


def nearest_flips(ps: PolicySet, annotations: dict, policies: Sequence[str] | None, decision: Decision) -> tuple[tuple[Flip, ...], int]:
    """The verdict-flipping single-field changes, one per field, nearest first; and how many were tried."""
    compiled = [ps.policies[n] for n in (policies or ps.policy_names)]
    base = {p.schema: ps.values(annotations, p.schema) for p in compiled}
    fields: dict[tuple[str, str], FieldInfo] = {}
    literals: dict[tuple[str, str], list[object]] = {}
    for p in compiled:
        for atom in p.atoms:
            for f in atom.fields:
                fields.setdefault((p.schema, f.dotted), f.field)
            _collect(atom.expr, p.schema, {}, literals)
    tried = 0
    best: list[tuple[tuple, Flip]] = []
    for key in sorted(fields, key=lambda k: (k[0], fields[k].index)):
        schema, dotted = key
        info = fields[key]
        before = base[schema][info.index]
        found: tuple[tuple, Flip] | None = None
        for order, (kind, item, after) in enumerate(_candidates(info, before, literals.get(key, []))):
            tried += 1
            changed = _with(annotations, info.path, after)
            try:
                d = ps.evaluate(changed, policies or None)
            except InputError:
                continue  # e.g. an int nudged out of range
            if d.verdict == decision.verdict:
                continue
            distance = _distance(before, after)
            rank = (distance is None, distance or 0.0, order)
            if found is None or rank < found[0]:
                atoms = _changed_atoms(ps, compiled, base, changed, schema, info)
                shown_after = ps.values(changed, schema)[info.index]  # as validated: 1 for 1.0, a set for a list
                found = (rank, Flip(dotted, before, shown_after, kind, item, distance, atoms, d.verdict, d.policy, d.rule))
        if found is not None:
            best.append(((found[0][0], found[0][1], info.index, schema), found[1]))
    best.sort(key=lambda x: x[0])
    return tuple(f for _, f in best), tried


def _changed_atoms(ps: PolicySet, compiled: list[CompiledPolicy], base: dict, changed: dict, schema: str, info: FieldInfo) -> tuple:
    """The atoms reading the changed field whose truth changes, each expression once."""
    out: dict[str, tuple[str, bool | None, bool | None]] = {}
    after = ps.values(changed, schema)
    for p in compiled:
        if p.schema != schema:
            continue
        for atom in p.atoms:
            if not any(f.index == info.index for f in atom.fields):
                continue
            b, a = truth(p, atom, base[schema]), truth(p, atom, after)
            if b != a:
                out.setdefault(atom.text, (atom.text, b, a))
    return tuple(out.values())


def _distance(before: object, after: object) -> float | None:
    if isinstance(before, bool) or isinstance(after, bool):
        return None
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return round(abs(after - before), 12)  # 0.14, not 0.14000000000000001
    return None


_CMP = {"==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "starts_with", "ends_with"}


def _collect(e, schema: str, qvars: dict[str, FieldRef], out: dict) -> None:
    """Literal values each field is compared with, anywhere in an atom."""
    if isinstance(e, ast.Binary) and e.op in _CMP:
        for side, other in ((e.left, e.right), (e.right, e.left)):
            target = _target(side, qvars)
            if target is not None:
                for v in _literal_values(other):
                    bucket = out.setdefault((schema, target.dotted), [])
                    if not any(type(v) is type(b) and v == b for b in bucket):
                        bucket.append(v)
    for child in _children(e):
        _collect(child, schema, qvars, out)
    if isinstance(e, ast.Quantifier):
        _collect(e.body, schema, {**qvars, e.var: e.collection}, out)


def _target(e, qvars: dict[str, FieldRef]) -> FieldRef | None:
    if isinstance(e, FieldRef):
        return e
    if isinstance(e, VarRef):
        return qvars.get(e.name)  # an element of the quantified collection
    if isinstance(e, ast.Call) and e.function == "lower" and isinstance(e.args[0], FieldRef):
        return e.args[0]
    return None


def _literal_values(e) -> list[object]:
    if isinstance(e, ast.Literal):
        return [e.value]
    if isinstance(e, ast.ListLiteral):
        return [i.value for i in e.items if isinstance(i, ast.Literal)]
    return []


def _children(e) -> list:
    if isinstance(e, ast.Binary):
        return [e.left, e.right]
    if isinstance(e, (ast.Unary, ast.Not)):
        return [e.operand]
    if isinstance(e, ast.BoolOp):
        return list(e.operands)
    if isinstance(e, ast.Call):
        return list(e.args)
    if isinstance(e, Atom):
        return [e.expr]
    return []  # a quantifier's body is walked with its variable bound


def _candidates(info: FieldInfo, before: object, lits: list[object]) -> list[tuple[str, object, object]]:
    """(kind, item, new value) for one field, in a fixed order; the value `_ABSENT` removes the field."""
    t = info.type
    out: list[tuple[str, object, object]] = []
    seen: list[object] = []

    def value(v: object) -> None:
        if v is _ABSENT:
            if before is not None:
                out.append(("value", None, _ABSENT))
            return
        if before is not None and type(v) is type(before) and v == before:
            return
        if any(type(v) is type(s) and v == s for s in seen):
            return
        seen.append(v)
        out.append(("value", None, v))

    if info.optional:
        value(_ABSENT)
    if t.kind == "bool":
        for v in ((not before,) if before is not None else (True, False)):
            value(v)
    elif t.kind == "enum":
        for v in t.values:
            value(v)
    elif t.kind in ("int", "float"):
        nums = _numbers(lits)
        for x in nums:
            for v in _around(x, nums, t.kind):
                value(v)
        if before is None and not out:
            value(0 if t.kind == "int" else 0.0)
    elif t.kind == "string":
        for v in lits:
            if isinstance(v, str):
                value(v)
        if info.has_default:
            value(info.default)
        if before is None and not out:
            value("")
    elif t.is_collection:
        current = sorted(before, key=_order) if isinstance(before, frozenset) else list(before or ())
        items = [v for v in lits if not isinstance(v, bool) or t.element.kind == "bool"]
        if t.element.kind in ("int", "float"):
            nums = _numbers(lits)
            items = [v for x in nums for v in _around(x, nums, t.element.kind)]
        done: list[object] = []
        for item in items:
            if any(type(item) is type(d) and item == d for d in done):
                continue
            done.append(item)
            if item in current:
                out.append(("remove", item, sorted((v for v in current if v != item), key=_order)))
            else:
                out.append(("add", item, sorted(current + [item], key=_order) if t.kind == "set" else current + [item]))
        if before is None and not out:
            out.append(("value", None, []))
    return out


def _around(x: float, nums: list, kind: str) -> list:
    """Values on and either side of a literal threshold: one apart for ints, just apart for floats."""
    if kind == "int":
        return [int(v) for v in (math.floor(x) - 1, math.floor(x), math.ceil(x), math.ceil(x) + 1)]
    return [_below(x, nums), float(x), _above(x, nums)]


def _numbers(lits: list[object]) -> list[float | int]:
    return sorted({v for v in lits if isinstance(v, (int, float)) and not isinstance(v, bool)}, key=float)


def _below(x: float, others: list) -> float:
    """A readable value just under `x` (0.79 for 0.8) when no other literal lies between; else the next float down."""
    nice = _nice(x, -1)
    if nice is not None and not any(nice <= o < x for o in others):
        return nice
    return math.nextafter(float(x), -math.inf)


def _above(x: float, others: list) -> float:
    nice = _nice(x, +1)
    if nice is not None and not any(x < o <= nice for o in others):
        return nice
    return math.nextafter(float(x), math.inf)


def _nice(x: float, sign: int) -> float | None:
    text = repr(float(x))
    if "e" in text or "inf" in text or "nan" in text:
        return None
    decimals = len(text.split(".")[1].rstrip("0")) if "." in text else 0
    places = decimals + 1
    if places > 12:
        return None
    v = round(float(x) + sign * 10.0**-places, places)
    return v if (v < x if sign < 0 else v > x) else None


def _order(v: object) -> tuple:
    return (type(v).__name__, v)


def _with(annotations: dict, path: tuple[str, ...], value: object) -> dict:
    """A copy of `annotations` with the field at `path` set to `value` (removed for `_ABSENT`)."""
    out = dict(annotations)
    cur = out
    for part in path[:-1]:
        nxt = cur.get(part)
        nxt = dict(nxt) if isinstance(nxt, dict) else {}
        cur[part] = nxt
        cur = nxt
    if value is _ABSENT:
        cur.pop(path[-1], None)
    else:
        cur[path[-1]] = _json(value)
    return out


# ---- the whole explanation --------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    traces: tuple[PolicyTrace, ...]
    flips: tuple[Flip, ...]
    tried: int  # candidate changes decided again

    def to_dict(self) -> dict:
        """The trace `pol eval --explain` adds to a decision."""
        return {
            "policies": [t.to_dict() for t in self.traces],
            "overall": _overall_why(self.decision),
            "nearest_flips": [f.to_dict() for f in self.flips],
            "changes_tried": self.tried,
        }

    def text(self) -> str:
        """The explanation for a person, as `pol explain` prints it."""
        d = self.decision
        qualified = len(d.policies) > 1
        lines = [f"verdict: {d.verdict}"]
        top = d.justifications[0] if d.justifications else None
        if top is not None:
            lines.append(f"policy: {top.policy}" + (f" (version {top.version})" if top.version else ""))
            lines.append(f"rule: {top.rule}")
            lines.append(f"reason: {top.reason}")
            if top.citation:
                lines.append(f"citation: {top.citation}")
            if d.interventions:
                lines.append("interventions:")
                lines += [f"  {_intervention(i.name, i.arguments)}  (by {i.rule})" for i in d.interventions]
            if top.conditions:
                lines.append("conditions:")
                lines += [f"  {_condition(c)}" for c in top.conditions]
        overall = _overall_why(d)
        if overall:
            lines += ["", overall]
        for t in self.traces:
            p = t.policy
            lines += ["", f"path through {p.name} (combine {p.combine}):"]
            lines += _steps_text(t.steps, "  ")
            if not t.steps:
                lines.append("  (no rules)")
            lines += ["", f"why {t.decision.rule} decides {p.name}:"]
            lines += [f"  {w}" for w in t.why]
        lines.append("")
        if d.shadow:
            lines.append("shadow matches (reported, never decide):")
            for j in d.shadow:
                lines.append(f"  {j.policy}/{j.rule} -> {j.verdict}: {j.reason}")
                lines += [f"    {_condition(c)}" for c in j.conditions]
        else:
            lines.append("shadow matches: none")
        if d.warnings:
            lines.append("warnings:")
            lines += [f"  {w.code}: {w.message}" for w in d.warnings]
        else:
            lines.append("warnings: none")
        lines.append("")
        if self.flips:
            lines.append("nearest change that flips the verdict:")
            lines.append(f"  {self.flips[0].sentence(qualified)}")
            if len(self.flips) > 1:
                lines.append("other single-field changes that flip it:")
                lines += [f"  {f.sentence(qualified)}" for f in self.flips[1:]]
        else:
            lines.append(f"no single-field change flips the verdict ({self.tried} changes tried)")
        return "\n".join(lines) + "\n"


def explain_decision(ps: PolicySet, annotations: object, policies: Sequence[str] | None = None) -> Explanation:
    """Decide `annotations` and explain the decision. Raises what `PolicySet.evaluate` raises."""
    decision = ps.evaluate(annotations, policies or None)
    traces = []
    for pd in decision.policies:
        p = ps.policies[pd.policy]
        values = ps.values(annotations, p.schema)
        traces.append(PolicyTrace(p, pd, trace_policy(p, values), _why(p, pd)))
    flips, tried = nearest_flips(ps, annotations, policies, decision)  # type: ignore[arg-type]
    return Explanation(decision, tuple(traces), flips, tried)


# ---- text ---------------------------------------------------------------------------------


def _steps_text(steps: Sequence[Step], indent: str) -> list[str]:
    lines: list[str] = []
    for s in steps:
        if isinstance(s, Route):
            where = f'branch {_text(s.observed)}' if s.taken else "no branch"
            skipped = f"; not reached: {', '.join(s.skipped)}" if s.skipped else ""
            lines.append(f"{indent}dispatch on {s.field} = {_text(s.observed)}: {where}{skipped}")
            lines += _steps_text(s.then, indent + "  ")
            continue
        r = s.rule
        head = f"{indent}{'shadow rule' if r.shadow else 'rule'} {r.name} -> {_action(r)}: "
        if s.residual is None:
            lines.append(head + "no further condition, matched")
        elif len(s.conditions) == 1 and s.conditions[0].expression == s.residual:
            lines.append(head + _condition(s.conditions[0]))
        else:
            lines.append(head + f"`{s.residual}` {_held(s.held)}")
            lines += [f"{indent}  {_condition(c)}" for c in s.conditions]
    return lines


def _condition(c: Condition) -> str:
    seen = ", ".join(f"{k} = {_text(v)}" for k, v in c.observed)
    return f"`{c.expression}` {_held(c.held)}" + (f" ({seen})" if seen else "")


def _held(held: bool | None) -> str:
    return "held" if held else "could not be evaluated" if held is None else "did not hold"


def _action(r: RuleInfo) -> str:
    if r.verdict != "intervene":
        return r.verdict
    return "intervene " + ", ".join(name for name, _ in r.interventions)


def _intervention(name: str, args: tuple) -> str:
    return name + ("(" + ", ".join(f"{k}: {literal_text(list(v) if isinstance(v, tuple) else v)}" for k, v in args) + ")" if args else "")


def _text(value: object) -> str:
    """An observed value in pol syntax, bounded; `absent` for a missing optional field."""
    if value is None or value is _ABSENT:
        return "absent"
    if isinstance(value, (frozenset, set)):
        value = sorted(value, key=_order)
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
        return literal_text(value[:MAX_SHOWN_CHARS]) + f"... ({len(value) - MAX_SHOWN_CHARS} more characters)"
    if isinstance(value, list) and len(value) > 8:
        return literal_text(value[:8])[:-1] + f", ... ({len(value) - 8} more)]"
    return literal_text(value)


def _shown(value: object) -> object:
    """A JSON-able, bounded value for output (long strings and collections cut)."""
    value = _json(value)
    if isinstance(value, str) and len(value) > 256:
        return value[:256] + f"... ({len(value) - 256} more characters)"
    if isinstance(value, list) and len(value) > 32:
        return [_shown(v) for v in value[:32]] + [f"... ({len(value) - 32} more)"]
    return value


def _json(value: object) -> object:
    if value is _ABSENT:
        return None
    if isinstance(value, (frozenset, set)):
        return sorted(value, key=_order)
    if isinstance(value, tuple):
        return list(value)
    return value


