"""Evaluate: run the compiled trees on validated values and build the Decision.

The generated function of each policy says which rules matched; this module
combines them (`most_severe` or `first_match`, then across policies), and explains
each matching rule: the conditions that made it hold, with the values observed.
Explanations are computed when first read, from the same immutable values, so a
caller that only needs the verdict does not pay for them, and one that reads them
gets exactly what was decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import ast, native
from .codegen import atom_function, kleene_and, kleene_not, kleene_or, program
from .compile import SEVERITY, Atom, CompiledPolicy, RuleInfo

__all__ = [
    "Condition",
    "Decision",
    "DecisionWarning",
    "Intervention",
    "Justification",
    "PolicyDecision",
    "decide_policy",
    "evaluator",
    "make_tree",
]

VERDICTS = ("allow", "intervene", "remove")
MAX_SHOWN_ITEMS = 32
MAX_SHOWN_CHARS = 256


@dataclass(frozen=True, slots=True)
class Intervention:
    name: str
    arguments: tuple[tuple[str, object], ...]
    policy: str
    rule: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in self.arguments},
            "policy": self.policy,
            "rule": self.rule,
        }


@dataclass(frozen=True, slots=True)
class Condition:
    """One atomic condition of a rule, whether it held, and the field values it read."""

    expression: str
    held: bool | None  # None: it could not be evaluated (division by zero)
    observed: tuple[tuple[str, object], ...]

    def to_dict(self) -> dict:
        return {"expression": self.expression, "held": self.held, "observed": {k: _shown(v) for k, v in self.observed}}

    @staticmethod
    def shown(value: object) -> object:
        """An observed value as a decision shows it: JSON-able and bounded (sets sorted, long values cut)."""
        return _shown(value)


@dataclass(frozen=True, slots=True)
class DecisionWarning:
    code: str  # "unknown_enum_value" | "division_by_zero"
    message: str
    field: str | None = None
    policy: str | None = None
    rule: str | None = None

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field, "policy": self.policy, "rule": self.rule}


class Justification:
    """Why one rule (or `otherwise`) of one policy matched."""

    __slots__ = ("policy", "version", "rule", "deciding", "_policy", "_info", "_values", "_conditions")

    def __init__(self, policy: CompiledPolicy, info: RuleInfo, deciding: bool, values: tuple) -> None:
        self._policy = policy
        self.policy = policy.name
        self.version = policy.version
        self.rule = info.name
        self.deciding = deciding
        self._info = info
        self._values = values
        self._conditions: tuple[Condition, ...] | None = None

    verdict = property(lambda self: self._info.verdict)
    reason = property(lambda self: self._info.because)
    citation = property(lambda self: self._info.cite)
    tags = property(lambda self: self._info.tags)
    shadow = property(lambda self: self._info.shadow)

    @property
    def interventions(self) -> tuple[tuple[str, tuple], ...]:
        return self._info.interventions

    @property
    def info(self) -> RuleInfo:
        """The compiled rule: the same object for every decision of one policy set."""
        return self._info

    @property
    def values(self) -> tuple:
        """The validated input the rule was decided on, indexed by `FieldRef.index`."""
        return self._values

    @property
    def conditions(self) -> tuple[Condition, ...]:
        if self._conditions is None:
            shown, values = self._info.shown, self._values
            if shown is None:
                self._conditions = tuple(explain(self._policy, self._info.condition, values))
            else:  # known when compiled: nothing to evaluate again
                self._conditions = tuple(Condition(a.text, held, tuple([(f.dotted, values[f.index]) for f in a.fields])) for a, held in shown)
        return self._conditions

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "version": self.version,
            "rule": self.rule,
            "action": self.verdict,
            "interventions": [{"name": n, "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in a}} for n, a in self.interventions],
            "reason": self.reason,
            "citation": self.citation,
            "tags": list(self.tags),
            "conditions": [c.to_dict() for c in self.conditions],
            "deciding": self.deciding,
        }

    def __repr__(self) -> str:
        return f"Justification({self.policy}.{self.rule}, {self.verdict}, deciding={self.deciding})"


def _built(index: int, doc: str) -> property:
    """A part of a decision assembled on first read by the owner's `_build()`."""
    return property(lambda self: self._build()[index], doc=doc)


class PolicyDecision(native.PolicyDecisionCore):
    """One policy's decision, made by its tree (`Tree.settle`).

    The verdict and the deciding rule are settled when it is made; justifications,
    interventions and warnings are built from the same immutable inputs when first read.
    Its storage (`verdict`, `_compiled`, `_values`, `_matched`, `_errored`, `_index` of
    the deciding rule or -1 for `otherwise`, `_built`) is `engine.native.PolicyDecisionCore`.
    """

    __slots__ = ()

    @property
    def _deciding(self) -> RuleInfo:
        index = self._index
        return self._compiled.rules[index] if index >= 0 else self._compiled.otherwise

    @property
    def policy(self) -> str:
        return self._compiled.name

    @property
    def rule(self) -> str:
        """The deciding rule, or "otherwise"."""
        return self._deciding.name

    @property
    def version(self) -> str | None:
        return self._compiled.version

    @property
    def info(self) -> RuleInfo:
        """The deciding compiled rule (or `otherwise`): the same object for every decision of one policy set."""
        return self._deciding

    @property
    def matched(self) -> tuple[str, ...]:
        """Names of the matching non-shadow rules, in file order."""
        rules = self._compiled.rules
        return tuple(rules[i].name for i in self._matched if not rules[i].shadow)

    justifications = _built(0, "The deciding rule first, then the other matching rules in file order.")
    shadow = _built(1, "The matching shadow rules, in file order.")
    interventions = _built(2, "When the verdict is intervene: its interventions, without duplicates.")
    warnings = _built(3, "Rules that divided by zero, so did not match.")

    def _build(self) -> tuple:
        if self._built is not None:
            return self._built
        policy, values, deciding = self._compiled, self._values, self._deciding
        if not self._matched and not self._errored:  # decided by `otherwise`, nothing else to say (the common case)
            interventions = _interventions(policy, (deciding,)) if deciding.verdict == "intervene" else ()
            self._built = ((Justification(policy, deciding, True, values),), (), interventions, ())
            return self._built
        rules = policy.rules
        normal = [rules[i] for i in self._matched if not rules[i].shadow]
        interventions = ()
        if deciding.verdict == "intervene":
            sources = [deciding] if deciding.index < 0 or policy.combine == "first_match" else [r for r in normal if r.verdict == "intervene"]
            interventions = _interventions(policy, sources)
        justifications = [Justification(policy, deciding, True, values)]
        justifications.extend(Justification(policy, r, False, values) for r in normal if r is not deciding)
        shadow = tuple(Justification(policy, rules[i], False, values) for i in self._matched if rules[i].shadow)
        warnings = tuple(
            DecisionWarning(
                "division_by_zero",
                f"rule `{rules[i].name}` divides by zero, so it does not match",
                policy=policy.name,
                rule=rules[i].name,
            )
            for i in sorted(self._errored)
        )
        self._built = (tuple(justifications), shadow, interventions, warnings)
        return self._built

    def __repr__(self) -> str:
        return f"PolicyDecision({self.policy}: {self.verdict} by {self.rule})"


class Decision(native.DecisionCore):
    """The answer for one item: a verdict, and everything that justifies it.

    `verdict`, `policy` and `rule` are settled at once; the rest is assembled from
    the per-policy decisions when first read (and is the same whenever it is read).
    Its storage is `engine.native.DecisionCore`, so `evaluator` makes one in C; `shape`
    and `values` are computed there too.
    """

    __slots__ = ()

    def __init__(self, policies: tuple[PolicyDecision, ...], policy_set_hash: str, input_warnings: Sequence[tuple[str, str]] = ()) -> None:
        """`input_warnings`: the validator's unknown enum values, (field, value); worded when `warnings` is read."""
        top: PolicyDecision | None = policies[0] if policies else None
        for d in policies[1:]:
            if SEVERITY[d.verdict] > SEVERITY[top.verdict]:
                top = d
        self.verdict = top.verdict if top is not None else "allow"
        self.policies = policies
        self.policy_set_hash = policy_set_hash
        self._input_warnings = input_warnings
        self._top = top
        self._built = None

    @property
    def policy(self) -> str | None:
        """The policy whose verdict is the overall verdict (the first, among equals)."""
        return self._top.policy if self._top is not None else None

    @property
    def rule(self) -> str | None:
        """That policy's deciding rule, or "otherwise"."""
        return self._top.rule if self._top is not None else None

    @property
    def input_warnings(self) -> tuple[DecisionWarning, ...]:
        """The input's unknown enum values: the first of `warnings`."""
        return _enum_warnings(self._input_warnings) if self._input_warnings else ()

    justifications = _built(0, "The overall deciding justification first, then every other, policy by policy.")
    shadow = _built(1, "Every policy's matching shadow rules.")
    interventions = _built(2, "When the verdict is intervene: the interventions of every intervening policy.")
    warnings = _built(3, "Unknown enum values, then each policy's division-by-zero warnings.")

    def _build(self) -> tuple:
        if self._built is not None:
            return self._built
        top = self._top
        if len(self.policies) == 1 and not self._input_warnings:  # one policy: its parts are the decision's
            self._built = top._build()
            return self._built
        justifications: list[Justification] = list(top.justifications) if top else []
        shadow: list[Justification] = []
        interventions: list[Intervention] = []
        warnings: list[DecisionWarning] = list(self.input_warnings)
        for d in self.policies:
            if d is not top:
                justifications.extend(d.justifications)
            shadow.extend(d.shadow)
            if self.verdict == "intervene" and d.verdict == "intervene":
                interventions.extend(d.interventions)
            warnings.extend(d.warnings)
        self._built = (tuple(justifications), tuple(shadow), tuple(interventions), tuple(warnings))
        return self._built

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "policy": self.policy,
            "rule": self.rule,
            "interventions": [i.to_dict() for i in self.interventions],
            "justifications": [j.to_dict() for j in self.justifications],
            "shadow": [j.to_dict() for j in self.shadow],
            "warnings": [w.to_dict() for w in self.warnings],
            "policies": [{"policy": p.policy, "version": p.version, "verdict": p.verdict, "rule": p.rule} for p in self.policies],
            "policy_set_hash": self.policy_set_hash,
        }

    def __repr__(self) -> str:
        return f"Decision({self.verdict} by {self.policy}.{self.rule})"


def make_tree(policy: CompiledPolicy, field_count: int, tick: Callable[[int, object], object] | None = None) -> native.Tree:
    """`policy`'s decision tree, run by `engine.native` (C, or its Python twin).

    With `tick`, every atom is memoised and reported to `tick(atom_id, value)` when it
    is computed: tests count evaluations through it.
    """
    kwargs, policy.source = program(policy, field_count, memo_all=tick is not None)
    return native.Tree(**kwargs, decision_type=PolicyDecision, tick=tick)


def decide_policy(policy: CompiledPolicy, values: tuple) -> PolicyDecision:
    """Run one policy's tree and settle its verdict: most severe, or first, matching rule."""
    return policy.decide.settle(policy, values)


def evaluator(validator: native.Validator, policies: tuple[CompiledPolicy, ...], policy_set_hash: str, named: Callable | None = None) -> native.Evaluator:
    """(annotations, policies=None) -> Decision of every policy in `policies` (all of one schema), in one call to
    `engine.native`; with policies named, `named(annotations, policies)` decides."""
    return native.Evaluator(validator, tuple(p.decide for p in policies), policies, policy_set_hash, Decision, named)


def _enum_warnings(warns: Sequence[tuple[str, str]]) -> tuple[DecisionWarning, ...]:
    """The validator's unknown enum values as decision warnings."""
    return tuple(
        DecisionWarning("unknown_enum_value", f'"{value}" is not a declared value of `{path}`', field=path) for path, value in warns
    )


def _interventions(policy: CompiledPolicy, sources) -> tuple[Intervention, ...]:
    """The interventions of the rules in `sources`, in order, without duplicates."""
    seen, out = set(), []
    for r in sources:
        for name, args in r.interventions:
            key = (name, _arguments_key(args))
            if key not in seen:
                seen.add(key)
                out.append(Intervention(name, args, policy.name, r.name))
    return tuple(out)


def _arguments_key(args: tuple[tuple[str, object], ...]) -> frozenset:
    """When two interventions are the same: same arguments, in any order; `1` is `1.0`, not `true`."""

    def canon(v: object) -> object:
        if isinstance(v, bool):
            return ("bool", v)
        if isinstance(v, (int, float)):
            return ("num", v)
        if isinstance(v, tuple):
            return ("list", tuple(canon(i) for i in v))
        return ("str", v)

    return frozenset((k, canon(v)) for k, v in args)


# ---- explanation ------------------------------------------------------------------------


def _shown(value: object) -> object:
    """A JSON-able, bounded rendering of an observed value (sets sorted, long values cut)."""
    if isinstance(value, (frozenset, set)):
        value = sorted(value, key=lambda v: (type(v).__name__, v))
    if isinstance(value, (list, tuple)):
        items = [_shown(v) for v in value[:MAX_SHOWN_ITEMS]]
        if len(value) > MAX_SHOWN_ITEMS:
            items.append(f"... ({len(value) - MAX_SHOWN_ITEMS} more)")
        return items
    if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
        return value[:MAX_SHOWN_CHARS] + f"... ({len(value) - MAX_SHOWN_CHARS} more characters)"
    return value


def explain(policy: CompiledPolicy, condition, values: tuple) -> list[Condition]:
    """The atomic conditions that decided a rule's condition, with observed values."""
    memo: dict[int, bool | None] = {}
    value = truth(policy, condition, values, memo)
    out: list[Condition] = []
    _explain(condition, value, values, out, memo)
    return out


def _explain(e, value: bool | None, values: tuple, out: list[Condition], memo: dict[int, bool | None]) -> None:
    """`memo`: the truth of every node under `e`, by id, from `truth`: nothing is evaluated twice."""
    if isinstance(e, ast.BoolOp):
        decisive = False if e.op == "and" else True
        if value is decisive:  # one operand was enough: show the first that settled it
            c = next(c for c in e.operands if memo[id(c)] is decisive)
            _explain(c, decisive, values, out, memo)
        else:  # every operand counted
            for c in e.operands:
                _explain(c, memo[id(c)], values, out, memo)
        return
    if isinstance(e, ast.Not):
        _explain(e.operand, kleene_not(value), values, out, memo)
        return
    atom: Atom = e
    out.append(Condition(atom.text, value, tuple((f.dotted, values[f.index]) for f in atom.fields)))


def truth(policy: CompiledPolicy, e, values: tuple, memo: dict[int, bool | None] | None = None) -> bool | None:
    """Three-valued truth of a resolved condition (None: division by zero); each node's also in `memo`, by id."""
    if isinstance(e, ast.BoolOp):
        parts = [truth(policy, c, values, memo) for c in e.operands]
        value = kleene_and(*parts) if e.op == "and" else kleene_or(*parts)
    elif isinstance(e, ast.Not):
        value = kleene_not(truth(policy, e.operand, values, memo))
    else:
        fn = policy.atom_functions.get(e.id)
        if fn is None:
            fn = policy.atom_functions[e.id] = atom_function(policy, e, len(values))
        value = fn(*values)
    if memo is not None:
        memo[id(e)] = value
    return value
