"""Types and resolved schemas, shared by check, compile and input validation."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Type:
    """A pol type. `kind` is string|int|float|bool|enum|list|set; enums carry values."""

    kind: str
    values: tuple[str, ...] = ()
    element: Type | None = None

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("int", "float")

    @property
    def is_stringy(self) -> bool:
        return self.kind in ("string", "enum")

    @property
    def is_collection(self) -> bool:
        return self.kind in ("list", "set")

    @property
    def is_scalar(self) -> bool:
        return not self.is_collection

    def __str__(self) -> str:
        if self.kind == "enum":
            shown = ", ".join(f'"{v}"' for v in self.values[:4])
            return f"enum({shown}{', ...' if len(self.values) > 4 else ''})"
        if self.is_collection:
            return f"{self.kind}<{self.element}>"
        return self.kind


STRING = Type("string")
INT = Type("int")
FLOAT = Type("float")
BOOL = Type("bool")


def comparable(a: Type, b: Type) -> bool:
    """Whether `==` between values of these types can ever be true."""
    if a.is_numeric and b.is_numeric:
        return True
    if a.is_stringy and b.is_stringy:
        return True
    if a.kind == b.kind == "bool":
        return True
    return False



@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One leaf field of a schema, with its position in the validated value tuple."""

    path: tuple[str, ...]
    type: Type
    optional: bool
    has_default: bool
    default: object
    index: int

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def required(self) -> bool:
        return not self.optional and not self.has_default


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    name: str
    fields: dict[str, FieldInfo] = field(hash=False, compare=False)

    def field(self, dotted: str) -> FieldInfo | None:
        return self.fields.get(dotted)
