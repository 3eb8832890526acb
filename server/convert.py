"""Between protobuf messages and the engine's plain values: annotations in, decisions out."""

from __future__ import annotations

from google.protobuf import struct_pb2

import engine
from server.gen.pol.v1 import policy_service_pb2 as pb

__all__ = ["TooDeep", "decision_response", "diagnostic_message", "policy_info", "struct_to_python"]

VERDICTS = {"allow": pb.VERDICT_ALLOW, "intervene": pb.VERDICT_INTERVENE, "remove": pb.VERDICT_REMOVE}
SEVERITIES = {"error": pb.SEVERITY_ERROR, "warning": pb.SEVERITY_WARNING}


class TooDeep(ValueError):
    """The annotations nest deeper than the configured limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"annotations nest deeper than {limit} levels")


def struct_to_python(struct: struct_pb2.Struct, max_depth: int) -> dict:
    """The Struct as plain JSON (numbers are floats, as JSON has them); TooDeep past `max_depth`."""

    def value(v: struct_pb2.Value, depth: int) -> object:
        kind = v.WhichOneof("kind")
        if kind == "string_value":
            return v.string_value
        if kind == "number_value":
            return v.number_value
        if kind == "bool_value":
            return v.bool_value
        if kind == "struct_value":
            return obj(v.struct_value, depth + 1)
        if kind == "list_value":
            if depth + 1 > max_depth:
                raise TooDeep(max_depth)
            return [value(x, depth + 1) for x in v.list_value.values]
        return None  # null_value, or no kind set

    def obj(s: struct_pb2.Struct, depth: int) -> dict:
        if depth > max_depth:
            raise TooDeep(max_depth)
        return {k: value(v, depth) for k, v in s.fields.items()}

    return obj(struct, 1)


def _struct(mapping: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if mapping:
        s.update(mapping)
    return s


def _intervention(d: dict) -> pb.Intervention:
    return pb.Intervention(name=d["name"], arguments=_struct(d["arguments"]), policy=d.get("policy") or "", rule=d.get("rule") or "")


# The parts of a justification that depend only on the rule, built once per compiled
# rule and copied into each response. Keyed by the RuleInfo's id, holding the RuleInfo
# itself so the id cannot be reused while the entry lives; a reload brings new RuleInfos.
_TEMPLATES: dict[int, tuple[object, pb.Justification]] = {}
_MAX_TEMPLATES = 100_000


def _template(j: engine.Justification) -> pb.Justification:
    info = j.info
    entry = _TEMPLATES.get(id(info))
    if entry is not None and entry[0] is info:
        return entry[1]
    if len(_TEMPLATES) >= _MAX_TEMPLATES:  # sets replaced many times: start over
        _TEMPLATES.clear()
    template = pb.Justification(
        policy=j.policy,
        version=j.version or "",
        rule=j.rule,
        action=VERDICTS[j.verdict],
        interventions=[
            pb.Intervention(name=name, arguments=_struct({k: list(v) if isinstance(v, tuple) else v for k, v in args}), policy=j.policy, rule=j.rule)
            for name, args in j.interventions
        ],
        reason=j.reason or "",
        citation=j.citation or "",
        tags=j.tags,
    )
    _TEMPLATES[id(info)] = (info, template)
    return template


def _justification(j: engine.Justification) -> pb.Justification:
    message = pb.Justification()
    message.CopyFrom(_template(j))
    message.deciding = j.deciding
    for c in j.conditions:
        d = c.to_dict()
        condition = message.conditions.add(expression=d["expression"])
        if d["observed"]:
            condition.observed.update(d["observed"])
        if d["held"] is not None:
            condition.held = d["held"]
    return message


def decision_response(decision: engine.Decision, *, request_id: str, content_id: str, trace: dict | None = None) -> pb.EvaluateResponse:
    """The EvaluateResponse for an engine Decision."""
    response = pb.EvaluateResponse(
        request_id=request_id,
        content_id=content_id,
        verdict=VERDICTS[decision.verdict],
        policy=decision.policy or "",
        rule=decision.rule or "",
        interventions=[_intervention(i.to_dict()) for i in decision.interventions],
        justifications=[_justification(j) for j in decision.justifications],
        policies=[pb.PolicyDecision(policy=p.policy, version=p.version or "", verdict=VERDICTS[p.verdict], rule=p.rule) for p in decision.policies],
        shadow=[_justification(j) for j in decision.shadow],
        warnings=[
            pb.DecisionWarning(code=w.code, message=w.message, field=w.field or "", policy=w.policy or "", rule=w.rule or "")
            for w in decision.warnings
        ],
        policy_set_hash=decision.policy_set_hash,
    )
    if trace is not None:
        response.trace.update(trace)
    return response


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
