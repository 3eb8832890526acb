"""Decisions straight to protobuf wire bytes, for the hot path of the Evaluate RPCs.

Building an `EvaluateResponse` message field by field and serialising it was the largest
cost of a decision in the service (about 40%). Most of a response depends only on the
rule that decided: a deciding rule's verdict and names, a justification's policy,
version, reason, citation, tags and interventions. An `Encoder` belongs to one policy
set, encodes those parts once per rule, and per decision writes only what varies: the
ids, the conditions with their observed values, and the warnings. A decision that no
rule matched (most of them) varies only in its ids: all the rest is encoded once.

The bytes parse to the same message `convert.decision_response` builds (tests compare
the two over the shipped set's test cases and random policies and inputs); fields are
written in field-number order, as protobuf's own serialiser does.
"""

from __future__ import annotations

import struct

from google.protobuf import struct_pb2

import engine
from engine.evaluate import MAX_SHOWN_CHARS
from server.convert import VERDICTS, WIRE

__all__ = ["Encoder", "error_result"]

_LEN, _VARINT, _I64 = 2, 0, 1
_pack_double = struct.Struct("<d").pack


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_LENGTHS = [_varint(n) for n in range(1 << 14)]  # one or two bytes: nearly every length here


def _length(n: int) -> bytes:
    return _LENGTHS[n] if n < 16384 else _varint(n)


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    n = len(data)
    return tag + (_LENGTHS[n] if n < 16384 else _varint(n)) + data


def _string(tag: bytes, text: str | None) -> bytes:
    """A string field; nothing for the empty string (the proto3 default)."""
    return _field(tag, text.encode("utf-8")) if text else b""


def _enum(tag: bytes, number: int) -> bytes:
    return tag + _varint(number) if number else b""


# ---- google.protobuf.Struct -----------------------------------------------------------

_STRUCT_ENTRY = _tag(1, _LEN)  # Struct.fields (a map: entries of key = 1, value = 2)
_ENTRY_KEY = _tag(1, _LEN)
_ENTRY_VALUE = _tag(2, _LEN)
_NULL = _tag(1, _VARINT) + b"\x00"  # Value.null_value = NULL_VALUE
_NUMBER = _tag(2, _I64)
_STRING = _tag(3, _LEN)
_TRUE = _tag(4, _VARINT) + b"\x01"
_FALSE = _tag(4, _VARINT) + b"\x00"
_STRUCT_VALUE = _tag(5, _LEN)
_LIST_VALUE = _tag(6, _LEN)
_LIST_ITEM = _tag(1, _LEN)


def _value(v: object) -> bytes:
    """A google.protobuf.Value, as `Struct.update` would make it (numbers become doubles)."""
    if v is None:
        return _NULL
    if v is True:
        return _TRUE
    if v is False:
        return _FALSE
    if isinstance(v, str):
        return _field(_STRING, v.encode("utf-8"))
    if isinstance(v, (int, float)):
        return _NUMBER + _pack_double(float(v))
    if isinstance(v, dict):
        return _field(_STRUCT_VALUE, _struct(v))
    return _field(_LIST_VALUE, b"".join(_field(_LIST_ITEM, _value(x)) for x in v))


def _struct(mapping: dict) -> bytes:
    return b"".join(_field(_STRUCT_ENTRY, _field(_ENTRY_KEY, k.encode("utf-8")) + _field(_ENTRY_VALUE, _value(v))) for k, v in mapping.items())


# ---- pol.v1 messages ------------------------------------------------------------------

# EvaluateResponse
_R_REQUEST_ID, _R_CONTENT_ID, _R_VERDICT, _R_POLICY, _R_RULE = (_tag(n, w) for n, w in ((1, _LEN), (2, _LEN), (3, _VARINT), (4, _LEN), (5, _LEN)))
_R_INTERVENTION, _R_JUSTIFICATION, _R_POLICIES, _R_SHADOW, _R_WARNING = (_tag(n, _LEN) for n in (6, 7, 8, 9, 10))
_R_HASH, _R_TRACE = _tag(11, _LEN), _tag(12, _LEN)
# Justification
_J_POLICY, _J_VERSION, _J_RULE, _J_ACTION, _J_INTERVENTION = (_tag(n, w) for n, w in ((1, _LEN), (2, _LEN), (3, _LEN), (4, _VARINT), (5, _LEN)))
_J_REASON, _J_CITATION, _J_TAG, _J_CONDITION = (_tag(n, _LEN) for n in (6, 7, 8, 9))
_J_DECIDING = _tag(10, _VARINT) + b"\x01"
# Condition
_C_EXPRESSION, _C_HELD, _C_OBSERVED = _tag(1, _LEN), _tag(2, _VARINT), _tag(3, _LEN)
# Intervention, PolicyDecision and DecisionWarning: strings and one enum
_S1, _S2, _S3, _S4, _S5 = (_tag(n, _LEN) for n in range(1, 6))
_PD_VERDICT = _tag(3, _VARINT)
# EvaluateBatchResult (also the one field of EvaluateStreamResponse and EvaluateBatchResponse)
_RESULT_RESPONSE, _RESULT_ERROR = _tag(1, _LEN), _tag(2, _LEN)


def _intervention(name: str, arguments: tuple, policy: str, rule: str) -> bytes:
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in arguments}
    return _string(_S1, name) + _field(_S2, _struct(args)) + _string(_S3, policy) + _string(_S4, rule)


def _warning(w: engine.DecisionWarning) -> bytes:
    return _string(_S1, w.code) + _string(_S2, w.message) + _string(_S3, w.field) + _string(_S4, w.policy) + _string(_S5, w.rule)


class Encoder:
    """Encodes the decisions of one policy set; caches what depends only on its rules.

    Decisions of one `Decision.shape` differ only in the values their conditions observed,
    so each shape's response is encoded once as a template: bytes, with a slot for each
    observed value (`_fill`). A decision that no rule matched has no slot: its template is
    the response, after the ids. Rules whose shown conditions depend on the values, and
    explain traces, are encoded whole each time.

    The rule cache is keyed by the identity of objects the set owns (its compiled rules),
    and holds those objects, so a key cannot be reused while the encoder lives.
    """

    def __init__(self, policy_set: engine.PolicySet) -> None:
        self.policy_set = policy_set
        self._hash = _string(_R_HASH, policy_set.hash)
        self._rules: dict[int, tuple[object, tuple]] = {}  # id(RuleInfo) -> (info, _rule_parts of it)
        self._templates: dict[tuple, tuple] = {}  # Decision.shape -> (template, tail) of _template; (None, None): not reusable
        self._request_id = ("", b"")  # the last request id and its encoding

    def response(self, decision: engine.Decision, shape: tuple | None, request_id: str, content_id: str, trace: dict | None = None) -> bytes:
        """The EvaluateResponse for `decision`, serialised. `shape`: `decision.shape` (the caller may need it too),
        or None to encode the decision whole; always None with a `trace`."""
        return b"".join(self._response(decision, shape, request_id, content_id, trace))

    def result(self, decision: engine.Decision, shape: tuple | None, request_id: str, content_id: str, trace: dict | None = None) -> bytes:
        """The response as an EvaluateBatchResult, as field 1 of its container (see `error_result`)."""
        parts = self._response(decision, shape, request_id, content_id, trace)
        n = len(parts[0]) + len(parts[1]) + len(parts[2]) + len(parts[3])
        inner = _length(n)
        return b"".join((_RESULT_RESPONSE, _length(n + 1 + len(inner)), _RESULT_RESPONSE, inner, *parts))

    def _response(self, decision: engine.Decision, shape: tuple | None, request_id: str, content_id: str, trace: dict | None) -> tuple[bytes, bytes, bytes, bytes]:
        """The response's bytes in four parts: request id, content id, up to the input's warnings, from them on."""
        rid = self.request_id_field(request_id)
        if shape is None or trace is not None:
            template, tail, _ = self._template(decision, trace)
        else:
            known = self._templates.get(shape)
            if known is None:
                if len(self._templates) > 10_000:  # callers naming many different subsets of policies
                    self._templates.clear()
                template, tail, reusable = self._template(decision, None)
                self._templates[shape] = (template, tail) if reusable else (None, None)
            elif known[0] is None:
                template, tail, _ = self._template(decision, None)
            else:
                template, tail = known
        body = template if type(template) is bytes else fill(template, decision.values)
        return rid, _string(_R_CONTENT_ID, content_id), body, self.input_warnings_field(decision) + tail

    @staticmethod
    def input_warnings_field(decision: engine.Decision) -> bytes:
        """The response's warnings about the input's unknown enum values, encoded (b"" for none): the first of its warnings."""
        return b"".join([_field(_R_WARNING, _warning(w)) for w in decision.input_warnings])

    def request_id_field(self, request_id: str) -> bytes:
        """The response's request_id field, encoded (a batch's items share theirs: encoded once)."""
        last = self._request_id
        if last[0] != request_id:
            last = self._request_id = (request_id, _string(_R_REQUEST_ID, request_id))
        return last[1]

    @property
    def templates(self) -> dict[tuple, tuple]:
        """Decision.shape -> (template, tail): the response after the ids, but for the input's warnings
        (`_template`); (None, None) for a shape whose template serves no other decision."""
        return self._templates

    def _template(self, decision: engine.Decision, trace: dict | None) -> tuple[tuple | bytes, bytes, bool]:
        """The response after the ids, but for the input's warnings: (up to them, as a template; after them,
        which depends on its shape only; whether the template serves every decision of its shape)."""
        justifications = decision.justifications
        parts: list = [self._rule(justifications[0])[1]] if justifications else []
        parts.extend(_field(_R_INTERVENTION, _intervention(i.name, i.arguments, i.policy, i.rule)) for i in decision.interventions)
        reusable = True
        for tag, js in ((_R_JUSTIFICATION, justifications), (_R_POLICIES, None), (_R_SHADOW, decision.shadow)):
            if js is None:
                parts.extend(_policy_entry(p) for p in decision.policies)
                continue
            for j in js:
                body, known = self._justification(j)
                parts.append((tag, body))
                reusable = reusable and known
        tail = [_field(_R_WARNING, _warning(w)) for w in decision.warnings[len(decision.input_warnings):]]
        tail.append(self._hash)
        if trace is not None:
            s = struct_pb2.Struct()
            s.update(trace)
            tail.append(_field(_R_TRACE, s.SerializeToString()))
        return _compact(parts), b"".join(tail), reusable

    def _rule(self, j: engine.Justification) -> tuple[bytes, bytes, tuple | None]:
        """`_rule_parts(j)`, made once per rule."""
        entry = self._rules.get(id(j.info))
        if entry is None or entry[0] is not j.info:
            entry = self._rules[id(j.info)] = (j.info, _rule_parts(j))
        return entry[1]

    def _justification(self, j: engine.Justification) -> tuple[list, bool]:
        """(A Justification's template parts, whether they serve every match of its rule)."""
        head, _, conditions = self._rule(j)
        parts: list = [head]
        if conditions is None:  # which conditions it shows depends on the values
            parts.extend(_field(_J_CONDITION, _condition(c)) for c in j.conditions)
        else:
            for static, expression, observed in conditions:
                if static is not None:
                    parts.append(static)
                else:
                    entries = [(_STRUCT_ENTRY, [key, (_ENTRY_VALUE, [index])]) for key, index in observed]
                    parts.append((_J_CONDITION, [expression, (_C_OBSERVED, entries)]))
        if j.deciding:
            parts.append(_J_DECIDING)
        return parts, conditions is not None


def _compact(parts: list) -> tuple | bytes:
    """Template parts with every run of bytes joined, and every field without slots encoded: bytes if no slot is left.

    A part is bytes, a slot (an int: the place of an observed value in the decision's values,
    encoded as a google.protobuf.Value), or a length-delimited field (tag, its parts).
    """
    out: list = []
    for p in parts:
        if type(p) is tuple:
            body = _compact(p[1])
            p = _field(p[0], body) if type(body) is bytes else (p[0], body)
        if type(p) is bytes and out and type(out[-1]) is bytes:
            out[-1] += p
        else:
            out.append(p)
    if not out:
        return b""
    return out[0] if len(out) == 1 and type(out[0]) is bytes else tuple(out)


def _fill(template: tuple | bytes, values: tuple) -> bytes:
    """The bytes of a template for one decision's values: the specification of `_wire.fill`, and its stand-in."""
    if type(template) is bytes:
        return template
    out = []
    for p in template:
        t = type(p)
        if t is bytes:
            out.append(p)
        elif t is int:
            out.append(_observed(values[p]))
        else:
            out.append(_field(p[0], _fill(p[1], values)))
    return b"".join(out)


SHOWN = (engine.Condition.shown, MAX_SHOWN_CHARS)  # how an observed value is shown: the last arguments of C's fill and decide

if WIRE is not None:

    def fill(template: tuple | bytes, values: tuple) -> bytes:
        return WIRE.fill(template, values, *SHOWN)
else:
    fill = _fill


def _rule_parts(j: engine.Justification) -> tuple[bytes, bytes, tuple | None]:
    """(the justification's fields that depend only on its rule, the response's verdict/policy/rule, its conditions).

    The conditions, when the rule shows the same ones for every match (`RuleInfo.shown`), are
    encoded but for the observed values: per condition, (the whole Condition field when it
    reads no field, else None; its expression and `held`; per field read, its Struct key and
    its place in the values). Observed keys are distinct, as `Condition.to_dict` makes them.
    """
    head = b"".join(
        [
            _string(_J_POLICY, j.policy),
            _string(_J_VERSION, j.version),
            _string(_J_RULE, j.rule),
            _enum(_J_ACTION, VERDICTS[j.verdict]),
            *(_field(_J_INTERVENTION, _intervention(name, args, j.policy, j.rule)) for name, args in j.interventions),
            _string(_J_REASON, j.reason),
            _string(_J_CITATION, j.citation),
            *(_string(_J_TAG, t) if t else _J_TAG + b"\x00" for t in j.tags),
        ]
    )
    conditions = None
    if j.info.shown is not None:
        conditions = []
        for atom, held in j.info.shown:
            expression = _string(_C_EXPRESSION, atom.text) + _C_HELD + (b"\x01" if held else b"\x00")
            observed = tuple((_field(_ENTRY_KEY, k.encode("utf-8")), i) for k, i in {f.dotted: f.index for f in atom.fields}.items())
            conditions.append((None if observed else _field(_J_CONDITION, expression), expression, observed))
        conditions = tuple(conditions)
    return head, _enum(_R_VERDICT, VERDICTS[j.verdict]) + _string(_R_POLICY, j.policy) + _string(_R_RULE, j.rule), conditions


def _observed(v: object) -> bytes:
    """An observed value's google.protobuf.Value, as `_value(Condition.shown(v))`, without the call for the usual kinds."""
    t = type(v)
    if t is str and len(v) <= MAX_SHOWN_CHARS:
        return _field(_STRING, v.encode("utf-8"))
    if t is float or t is int:
        return _NUMBER + _pack_double(v)
    if t is bool:
        return _TRUE if v else _FALSE
    return _value(engine.Condition.shown(v))


def _policy_entry(p: engine.PolicyDecision) -> bytes:
    body = _string(_S1, p.policy) + _string(_S2, p.version) + _enum(_PD_VERDICT, VERDICTS[p.verdict]) + _string(_S4, p.rule)
    return _field(_R_POLICIES, body)


def _condition(c: engine.Condition) -> bytes:
    body = _string(_C_EXPRESSION, c.expression)
    if c.held is not None:
        body += _C_HELD + (b"\x01" if c.held else b"\x00")
    if c.observed:
        body += _field(_C_OBSERVED, _struct(c.to_dict()["observed"]))
    return body


def error_result(status: bytes) -> bytes:
    """An EvaluateBatchResult holding a serialised google.rpc.Status, as field 1 of its container.

    Those are the bytes of one entry of `EvaluateBatchResponse.results` and of a whole
    `EvaluateStreamResponse`: both hold the result as their field 1 (as `Encoder.result`).
    """
    return _field(_RESULT_RESPONSE, _field(_RESULT_ERROR, status))
