"""Validate: annotations (plain JSON) checked against a schema, before any rule runs.

Each schema gets a generated validator: straight-line Python with one branch per
field, built from the checked schema only (field names and literals are rendered
with `repr`, so no policy text is ever executed). It returns the field values in
schema order, with defaults applied, sets frozen and ints normalised, plus the
warnings for enum values the schema does not declare. Every violation is
collected, so a caller fixes all of them in one round trip.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

from . import ast, native
from .types import FieldInfo, SchemaInfo, Type

__all__ = ["InputError", "Violation", "check_value", "compile_validator", "literal_value", "validate_object"]

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_ECHO = 256  # characters of a caller's value a warning repeats


class Violation(tuple):
    """(field, description): what is wrong with one annotation."""

    __slots__ = ()

    def __new__(cls, field: str, description: str):
        return super().__new__(cls, (field, description))

    @property
    def field(self) -> str:
        return self[0]

    @property
    def description(self) -> str:
        return self[1]


class InputError(ValueError):
    """The annotations break the schema. Each violation names a field."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        shown = "; ".join(f"{v.field or 'input'}: {v.description}" for v in violations[:10])
        more = f" (and {len(violations) - 10} more)" if len(violations) > 10 else ""
        super().__init__(f"annotations do not match the schema: {shown}{more}")


def _kind_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a bool", int: "an integer", float: "a number", str: "a string", list: "a list", tuple: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _expected(t: Type) -> str:
    if t.kind == "enum":
        return "a string (enum)"
    if t.kind == "int":
        return "an integer"
    if t.kind == "float":
        return "a number"
    if t.kind == "bool":
        return "a bool"
    if t.kind == "string":
        return "a string"
    return f"a list of {_expected(t.element)[2:] if _expected(t.element).startswith('a ') else _expected(t.element)}"


def _int_text(value: int) -> str:
    """`value` in digits, or its size when too long to echo (str() of a huge int is slow, and refused past 4300 digits)."""
    return str(value) if value.bit_length() <= 256 else f"of {value.bit_length()} bits"


def wrong(t: Type, value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if t.kind == "int" and isinstance(value, float):
        return f"must be an integer, got {value!r}"
    if t.kind == "int" and type(value) is int:
        return f"integer {_int_text(value)} is out of range (64-bit)"
    return f"must be {_expected(t)}, got {_kind_name(value)}"


def _unicode(value: str) -> bool:
    """Whether `value` is valid Unicode text: no lone surrogates (json.loads makes them from `\\ud800`)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_unicode(value: str) -> str:
    at = next(i for i, c in enumerate(value) if 0xD800 <= ord(c) <= 0xDFFF)
    return f"must be valid Unicode text, got a lone surrogate U+{ord(value[at]):04X} at index {at}"


def check_value(t: Type, value: object) -> str | None:
    """What is wrong with `value` as a `t`, or None. Used for defaults and test inputs."""
    _, err = _convert(t, value)
    return err


def _convert(t: Type, value: object) -> tuple[object, str | None]:
    k = t.kind
    vt = type(value)
    if k in ("string", "enum"):
        if vt is not str:
            return None, wrong(t, value)
        return (value, None) if _unicode(value) else (None, _not_unicode(value))
    if k == "bool":
        return (value, None) if vt is bool else (None, wrong(t, value))
    if k == "int":
        if vt is int and INT_MIN <= value <= INT_MAX:
            return value, None
        if vt is float and math.isfinite(value) and value.is_integer() and INT_MIN <= value <= INT_MAX:
            return int(value), None
        return None, wrong(t, value)
    if k == "float":
        if vt is float and math.isfinite(value):
            return value, None
        if vt is int:
            try:
                return float(value), None
            except OverflowError:
                return None, f"number {_int_text(value)} is out of range"
        return None, wrong(t, value)
    if vt not in (list, tuple, set, frozenset):
        return None, wrong(t, value)
    if t.element.kind in ("string", "enum") and set(map(type, value)) <= {str} and all(map(_unicode, value)):
        return (frozenset(value) if k == "set" else tuple(value)), None
    out = []
    for i, item in enumerate(value):
        conv, err = _convert(t.element, item)
        if err is not None:
            return None, f"item {i} {err}"
        out.append(conv)
    return (frozenset(out) if k == "set" else tuple(out)), None


def literal_value(lit: ast.Literal | ast.ListLiteral | ast.ObjectLiteral) -> object:
    """The plain Python (JSON-like) value of a literal in a default, argument or `given`."""
    if isinstance(lit, ast.Literal):
        return lit.value
    if isinstance(lit, ast.ListLiteral):
        return [literal_value(i) for i in lit.items]
    out: dict = {}
    for path, value in lit.entries:
        target = out
        for part in path[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = target[part] = {}
            target = nxt
        target[path[-1]] = literal_value(value)
    return out


def validate_object(schema: SchemaInfo, value: object, strict: bool = False) -> list[Violation]:
    """Every violation of `value` against `schema`; `strict` also rejects unknown keys."""
    try:
        compile_validator(schema)(value)
        violations: list[Violation] = []
    except InputError as e:
        violations = list(e.violations)
    if strict and isinstance(value, dict):
        objects = {".".join(f.path[:i]) for f in schema.fields.values() for i in range(1, len(f.path))}

        def walk(obj: dict, prefix: str) -> None:
            for key, item in obj.items():
                dotted = f"{prefix}{key}"
                if dotted in schema.fields:
                    continue
                if dotted in objects and isinstance(item, dict):
                    walk(item, dotted + ".")
                elif dotted not in objects:
                    from .diagnostics import did_you_mean

                    guess = did_you_mean(dotted, schema.fields)
                    violations.append(Violation(dotted, "is not a field of the schema" + (f"; did you mean `{guess}`?" if guess else "")))

        walk(value, "")
    return violations


# Keyed by the schema's id, holding the schema so the id is not reused while the entry
# lives. Bounded: a long-lived server compiles a new schema on every reload and every
# ValidatePolicy call, and each PolicySet keeps its own validators anyway.
_CACHE: dict[int, tuple[SchemaInfo, Callable]] = {}
_CACHE_SIZE = 64


def compile_validator(schema: SchemaInfo) -> native.Validator:
    """The validator of `schema`: annotations -> (values, warnings or None).

    C takes the common case, every field already valid and final; anything else goes
    to the generated Python validator, which collects every violation and warning.
    """
    cached = _CACHE.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    fields = tuple(_field_spec(f) for f in sorted(schema.fields.values(), key=lambda f: f.index))
    fn = native.Validator(fields, _generate(schema))
    if len(_CACHE) >= _CACHE_SIZE:
        del _CACHE[next(iter(_CACHE))]  # the oldest entry
    _CACHE[id(schema)] = (schema, fn)
    return fn


def _excerpt(text: str) -> str:
    """The caller's text as echoed in a warning: at most MAX_ECHO characters, so a huge value is not sent back whole."""
    return text if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text) - MAX_ECHO} more characters)"


_NATIVE_KINDS = {"string": native.K_STRING, "enum": native.K_ENUM, "int": native.K_INT, "float": native.K_FLOAT, "bool": native.K_BOOL}


def _field_spec(f: FieldInfo) -> tuple:
    """One field as the C validator's fast path takes it; kinds it does not know always go to Python."""
    t = f.type
    kind, values = _NATIVE_KINDS.get(t.kind, native.K_OTHER), None
    if t.kind == "enum":
        values = tuple(t.values)  # in their declared order: C's dispatch nodes find a value's branch by its place
    elif t.is_collection and t.element.kind in ("string", "enum"):
        kind = native.K_STRINGS_SET if t.kind == "set" else native.K_STRINGS_LIST
        values = frozenset(t.element.values) if t.element.kind == "enum" else None
    path = tuple(sys.intern(part) for part in f.path)  # the same object as an interned key: found without comparing text
    return (path, kind, values, f.has_default, f.default, f.optional, f.dotted)


def _fixer(f: FieldInfo) -> Callable[[object], tuple[object, str | None, tuple | None]]:
    """The slow path of one field: absent, defaulted, converted, wrong, or an unknown enum value."""
    t = f.type
    enum = frozenset(t.values) if t.kind == "enum" else None
    element_enum = frozenset(t.element.values) if t.is_collection and t.element.kind == "enum" else None

    def fix(value: object) -> tuple[object, str | None, tuple | None]:
        if value is None:
            return (f.default if f.has_default else None), ("is required" if f.required else None), None
        converted, error = _convert(t, value)
        if error is not None:
            return None, error, None
        if enum is not None and converted not in enum:
            return converted, None, (f.dotted, _excerpt(converted))
        if element_enum is not None and not element_enum.issuperset(converted):
            return converted, None, (f.dotted, _excerpt(sorted(set(converted) - element_enum)[0]))
        return converted, None, None

    return fix


def _fast_check(f: FieldInfo, v: str) -> str:
    """A cheap test that is true exactly when `v` is already a valid, final value."""
    k = f.type.kind
    if k == "string":
        return f"type({v}) is str and _U({v})"
    if k == "bool":
        return f"type({v}) is bool"
    if k == "enum":
        return f"type({v}) is str and {v} in _E{f.index}"
    if k == "int":
        return f"type({v}) is int and {INT_MIN} <= {v} <= {INT_MAX}"
    if k == "float":
        return f"type({v}) is float and {v} - {v} == 0.0"  # v - v is nan for nan and the infinities
    return "False"  # collections always convert (to a tuple or frozenset)


def _generate(schema: SchemaInfo) -> Callable:
    consts: dict[str, object] = {"InputError": InputError, "Violation": Violation, "_kind": _kind_name, "_NOGET": {}.get, "_U": _unicode}
    lines = [
        "def validate(a):",
        "    if type(a) is not dict:",
        "        raise InputError([Violation('', 'annotations must be an object, got ' + type(a).__name__)])",
        "    get = a.get",
        "    errs = None",
        "    warns = None",
    ]
    fetched: dict[tuple[str, ...], str] = {(): "get"}

    def getter(path: tuple[str, ...]) -> str:
        """The local name of the `.get` of the object at `path` (an empty dict's when absent)."""
        if path in fetched:
            return fetched[path]
        parent = getter(path[:-1])
        obj = f"o{len(fetched)}"
        name = f"{obj}get"
        lines.extend(
            [
                f"    {obj} = {parent}({path[-1]!r})",
                f"    if type({obj}) is dict:",
                f"        {name} = {obj}.get",
                "    else:",
                f"        {name} = _NOGET",
                f"        if {obj} is not None:",
                f"            errs = (errs or []) + [Violation({'.'.join(path)!r}, 'must be an object, got ' + _kind({obj}))]",
            ]
        )
        fetched[path] = name
        return name

    for f in sorted(schema.fields.values(), key=lambda f: f.index):
        get = getter(f.path[:-1])
        v = f"v{f.index}"
        consts[f"_F{f.index}"] = _fixer(f)
        if f.type.kind == "enum":
            consts[f"_E{f.index}"] = frozenset(f.type.values)
        lines.append(f"    {v} = {get}({f.path[-1]!r})")
        fast = _fast_check(f, v)
        if f.type.is_collection and f.type.element.kind == "string":
            # the common list of strings converts inline; anything else takes the slow path
            make = "frozenset" if f.type.kind == "set" else "tuple"
            consts["_STR"] = frozenset((str,))
            lines.append(f"    if type({v}) is list and set(map(type, {v})) <= _STR and all(map(_U, {v})):")
            lines.append(f"        {v} = {make}({v})")
            lines.append(f"    elif {v} is None:")
            if f.has_default:
                consts[f"_D{f.index}"] = f.default
                lines.append(f"        {v} = _D{f.index}")
            else:
                lines.append("        pass" if f.optional else f"        errs = (errs or []) + [Violation({f.dotted!r}, 'is required')]")
            lines.append("    else:")
        elif f.has_default:
            consts[f"_D{f.index}"] = f.default
            lines.append(f"    if {v} is None:")
            lines.append(f"        {v} = _D{f.index}")
            lines.append(f"    elif not ({fast}):" if fast != "False" else "    else:")
        elif f.optional:
            lines.append(f"    if {v} is not None and not ({fast}):")
        else:
            lines.append(f"    if not ({fast}):")
        lines.extend(
            [
                f"        {v}, _e, _w = _F{f.index}({v})",
                "        if _e is not None:",
                f"            errs = (errs or []) + [Violation({f.dotted!r}, _e)]",
                "        elif _w is not None:",
                "            warns = (warns or []) + [_w]",
            ]
        )
    lines.append("    if errs:")
    lines.append("        raise InputError(errs)")
    values = ", ".join(f"v{f.index}" for f in sorted(schema.fields.values(), key=lambda f: f.index))
    lines.append(f"    return ({values}{',' if len(schema.fields) == 1 else ''}), warns")
    code = "\n".join(lines)
    namespace = dict(consts)
    exec(compile(code, f"<validator {schema.name}>", "exec"), namespace)
    return namespace["validate"]
