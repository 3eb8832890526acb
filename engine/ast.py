"""The abstract syntax tree: frozen dataclasses, each carrying the span it came from.

Spans are excluded from equality and hashing, so two nodes are equal when they mean
the same thing: the formatter's round-trip tests and the compiler's interning of
atomic predicates both rely on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .source import Span


def _span() -> Span:
    return field(default=None, compare=False, hash=False, repr=False)  # type: ignore[return-value]


# ---- types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrimType:
    name: str  # "string" | "int" | "float" | "bool"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class EnumType:
    values: tuple[str, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class CollectionType:
    kind: str  # "list" | "set"
    element: TypeExpr
    span: Span = _span()


TypeExpr = Union[PrimType, EnumType, CollectionType]


# ---- expressions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | int | float | bool
    kind: str  # "string" | "int" | "float" | "bool"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Literal, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Name:
    """A field, a let or a quantifier variable; dotted for nested fields."""

    parts: tuple[str, ...]
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-"
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # comparisons, membership, string tests, arithmetic
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Has:
    field: Name
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Expr, ...]
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Quantifier:
    kind: str  # "any" | "all"
    var: str
    collection: Name
    body: Expr
    span: Span = _span()


Expr = Union[Literal, ListLiteral, Name, Unary, Binary, BoolOp, Not, Has, Call, Quantifier]


# ---- declarations --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDecl:
    path: tuple[str, ...]
    type: TypeExpr
    optional: bool
    default: Literal | ListLiteral | None
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    fields: tuple[FieldDecl, ...]
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Let:
    name: str
    expr: Expr
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Intervention:
    name: str
    args: tuple[tuple[str, Literal | ListLiteral], ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Action:
    verdict: str  # "allow" | "intervene" | "remove"
    interventions: tuple[Intervention, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Clause:
    """One `keyword value` line of a rule or policy header, before check sorts them out."""

    keyword: str
    value: object
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    shadow: bool
    when: Expr | None
    action: Action | None
    because: str | None
    cite: str | None
    tags: tuple[str, ...]
    clauses: tuple[Clause, ...] = field(compare=False, hash=False, repr=False)
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Otherwise:
    action: Action
    because: str | None
    cite: str | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    schema: str
    version: str | None
    description: str | None
    owner: str | None
    combine: str  # "most_severe" | "first_match"
    lets: tuple[Let, ...]
    rules: tuple[Rule, ...]
    otherwise: Otherwise | None
    clauses: tuple[Clause, ...] = field(compare=False, hash=False, repr=False)
    span: Span = _span()
    name_span: Span = _span()
    schema_span: Span = _span()


@dataclass(frozen=True, slots=True)
class ObjectLiteral:
    entries: tuple[tuple[tuple[str, ...], Literal | ListLiteral | ObjectLiteral], ...]
    span: Span = _span()
    key_spans: tuple[Span, ...] = _span()


@dataclass(frozen=True, slots=True)
class Expect:
    verdict: str
    interventions: tuple[str, ...]
    by: str | None
    span: Span = _span()
    by_span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    given: ObjectLiteral
    expect: Expect
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Test:
    policy: str
    cases: tuple[Case, ...]
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Import:
    path: str
    span: Span = _span()


Item = Union[Import, Schema, Policy, Test, Let]


@dataclass(frozen=True, slots=True)
class File:
    path: str
    items: tuple[Item, ...]
    span: Span = _span()

    def of(self, kind: type) -> list:
        return [i for i in self.items if isinstance(i, kind)]
