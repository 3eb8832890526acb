"""Rendering expressions back to pol syntax, with the fewest parentheses that keep the meaning.

Used wherever a person reads a condition: justifications, `pol explain`, diagrams.
"""

from __future__ import annotations

from . import ast

__all__ = ["expr_text", "literal_text"]

# binding strength, loosest first, as in LANGUAGE.md section 4
_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7, "atom": 8}
_CMP = {"==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "matches", "starts_with", "ends_with"}


def literal_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal_text(v) for v in value) + "]"
    return repr(value)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable():
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _prec(e) -> int:
    if isinstance(e, ast.BoolOp):
        return _PREC[e.op]
    if isinstance(e, ast.Not):
        return _PREC["not"]
    if isinstance(e, ast.Binary):
        return _PREC["cmp"] if e.op in _CMP else _PREC[e.op]
    if isinstance(e, ast.Unary):
        return _PREC["neg"]
    if hasattr(e, "expr") and not isinstance(e, ast.Let):  # an interned atom
        return _prec(e.expr)
    return _PREC["atom"]


def expr_text(e) -> str:
    """`e` (an AST expression or compiled IR) as pol source."""
    if isinstance(e, ast.Literal):
        return literal_text(e.value)
    if isinstance(e, ast.ListLiteral):
        return "[" + ", ".join(expr_text(i) for i in e.items) + "]"
    if isinstance(e, ast.Name):
        return e.dotted
    if isinstance(e, ast.BoolOp):
        p = _PREC[e.op]
        return f" {e.op} ".join(_wrap(c, p + 1) for c in e.operands)
    if isinstance(e, ast.Not):
        return "not " + _wrap(e.operand, _PREC["not"])
    if isinstance(e, ast.Unary):
        return "-" + _wrap(e.operand, _PREC["neg"])
    if isinstance(e, ast.Binary):
        if e.op in _CMP:
            p = _PREC["cmp"]
            return f"{_wrap(e.left, p + 1)} {e.op} {_wrap(e.right, p + 1)}"
        p = _PREC[e.op]
        return f"{_wrap(e.left, p)} {e.op} {_wrap(e.right, p + 1)}"
    if isinstance(e, ast.Has):
        return f"has {e.field.dotted}"
    if isinstance(e, ast.Call):
        return f"{e.function}(" + ", ".join(expr_text(a) for a in e.args) + ")"
    if isinstance(e, ast.Quantifier):
        return f"{e.kind} {e.var} in {expr_text(e.collection)}: ({expr_text(e.body)})"
    # compiled IR nodes
    name = type(e).__name__
    if name == "FieldRef":
        return e.dotted
    if name == "VarRef":
        return e.name
    if name == "Present":
        return f"has {e.field.dotted}"
    if name == "Atom":
        return expr_text(e.expr)
    raise TypeError(f"cannot render {e!r}")


def _wrap(e, min_prec: int) -> str:
    text = expr_text(e)
    return f"({text})" if _prec(e) < min_prec else text
