"""Between protobuf messages and the engine's plain values (decisions go out through `server.wire`)."""

from __future__ import annotations

import os

from google.protobuf import struct_pb2

import engine
from server.gen.pol.v1 import policy_service_pb2 as pb

__all__ = ["STRUCT_DECODER", "TooDeep", "VERDICTS", "WIRE", "diagnostic_message", "policy_info", "struct_to_python", "walk_struct"]

VERDICTS = {"allow": pb.VERDICT_ALLOW, "intervene": pb.VERDICT_INTERVENE, "remove": pb.VERDICT_REMOVE}
SEVERITIES = {"error": pb.SEVERITY_ERROR, "warning": pb.SEVERITY_WARNING}


class TooDeep(ValueError):
    """The annotations nest deeper than the configured limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"annotations nest deeper than {limit} levels")


def struct_to_python(struct: struct_pb2.Struct, max_depth: int) -> dict:
    """The Struct as plain JSON (numbers are floats, as JSON has them); TooDeep past `max_depth`."""
    if _decode is not None:
        try:
            return _decode(struct.SerializeToString(), max_depth, TooDeep)
        except TooDeep:
            raise
        except ValueError:  # bytes upb wrote that the C reader does not know: never the caller's problem
            pass
    return walk_struct(struct, max_depth)


def walk_struct(struct: struct_pb2.Struct, max_depth: int) -> dict:
    """`struct_to_python` in Python: the specification of server/_wire.c, and its stand-in where it was not built."""
    return _object(struct, 1, max_depth)


WIRE = None  # server/_wire.c, unless it was not built or POL_PURE_PYTHON=1 asks for the Python (as engine.native)
if os.environ.get("POL_PURE_PYTHON") != "1":
    try:
        from server import _wire as WIRE
    except ImportError:  # no C compiler where pip ran
        pass
_decode = None if WIRE is None else WIRE.decode
STRUCT_DECODER = "python" if WIRE is None else "c"


# Module-level rather than closures: a closure pair made per call cost 10% of a conversion.
def _value(v: struct_pb2.Value, depth: int, max_depth: int) -> object:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        return v.number_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return _object(v.struct_value, depth + 1, max_depth)
    if kind == "list_value":
        if depth + 1 > max_depth:
            raise TooDeep(max_depth)
        return [_value(x, depth + 1, max_depth) for x in v.list_value.values]
    return None  # null_value, or no kind set


def _object(s: struct_pb2.Struct, depth: int, max_depth: int) -> dict:
    if depth > max_depth:
        raise TooDeep(max_depth)
    fields = s.fields
    return {k: _value(fields[k], depth, max_depth) for k in fields}  # not .items(): its iterator is Python code


def diagnostic_message(d: engine.Diagnostic) -> pb.Diagnostic:
    j = d.to_dict()
    return pb.Diagnostic(
        code=j["code"],
        severity=SEVERITIES.get(j["severity"], pb.SEVERITY_UNSPECIFIED),
        message=j["message"],
        path=j["path"] or "",
        line=j["line"],
        column=j["column"],
        end_line=j["end_line"],
        end_column=j["end_column"],
        help=j["help"] or "",
    )


def policy_info(ps: engine.PolicySet, name: str) -> pb.PolicyInfo:
    import hashlib

    p = ps.policies[name]
    data = ps.files.get(p.path, b"")
    return pb.PolicyInfo(
        name=p.name,
        version=p.version or "",
        description=p.description or "",
        owner=p.owner or "",
        schema=p.schema,
        combine=p.combine,
        rule_names=[r.name for r in p.rules],
        path=p.path,
        source_hash="sha256:" + hashlib.sha256(data).hexdigest(),
    )
