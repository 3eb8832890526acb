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
from server.convert import VERDICTS

__all__ = ["Encoder", "error_result", "result"]

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

    The caches are keyed by the identity of objects the set owns (its compiled rules),
    and hold those objects, so a key cannot be reused while the encoder lives.
    """

    def __init__(self, policy_set: engine.PolicySet) -> None:
        self.policy_set = policy_set
        self._hash = _string(_R_HASH, policy_set.hash)
        self._rules: dict[int, tuple[object, tuple[bytes, bytes]]] = {}  # id(RuleInfo) -> (info, Encoder._rule's parts)
        self._interventions: dict[tuple, bytes] = {}
        self._decided: dict[int, tuple[object, bytes]] = {}  # id(RuleInfo) -> (info, its PolicyDecision entry)
        self._by_default: dict[tuple, bytes] = {}  # the deciding policies' names -> the response after the ids
        self._request_id = ("", b"")  # the last request id and its encoding

    def response(self, decision: engine.Decision, request_id: str, content_id: str, trace: dict | None = None) -> bytes:
        """The EvaluateResponse for `decision`, serialised."""
        last = self._request_id  # a batch's items share theirs: encoded once
        if last[0] != request_id:
            last = self._request_id = (request_id, _string(_R_REQUEST_ID, request_id))
        head = last[1] + _string(_R_CONTENT_ID, content_id)
        if trace is None and decision.by_default:  # alike for every such input: encoded once per choice of policies
            key = tuple([p.policy for p in decision.policies])
            tail = self._by_default.get(key)
            if tail is None:
                if len(self._by_default) > 1_000:  # callers naming many different subsets of policies
                    self._by_default.clear()
                tail = self._by_default[key] = self._tail(decision, None)
            return head + tail
        return head + self._tail(decision, trace)

    def _tail(self, decision: engine.Decision, trace: dict | None) -> bytes:
        """Everything of the response after the ids."""
        justifications = decision.justifications
        top = justifications[0] if justifications else None
        parts = []
        if top is not None:
            parts.append(self._rule(top)[1])
        for i in decision.interventions:
            key = (i.name, i.arguments, i.policy, i.rule)
            data = self._interventions.get(key)
            if data is None:
                data = self._interventions[key] = _field(_R_INTERVENTION, _intervention(*key))
            parts.append(data)
        for j in justifications:
            parts.append(_field(_R_JUSTIFICATION, self._justification(j)))
        for p in decision.policies:
            parts.append(self._policy_decision(p))
        for j in decision.shadow:
            parts.append(_field(_R_SHADOW, self._justification(j)))
        for w in decision.warnings:
            parts.append(_field(_R_WARNING, _warning(w)))
        parts.append(self._hash)
        if trace is not None:
            s = struct_pb2.Struct()
            s.update(trace)
            parts.append(_field(_R_TRACE, s.SerializeToString()))
        return b"".join(parts)

    def _rule(self, j: engine.Justification) -> tuple[bytes, bytes]:
        """(the justification's fields that depend only on its rule, the response's verdict/policy/rule)."""
        return _per_rule(self._rules, j.info, _rule_parts, j)

    def _policy_decision(self, p: engine.PolicyDecision) -> bytes:
        """One `EvaluateResponse.policies` entry: all of it depends on the deciding rule."""
        return _per_rule(self._decided, p.info, _policy_entry, p)

    def _justification(self, j: engine.Justification) -> bytes:
        parts = [self._rule(j)[0]]
        parts.extend(_field(_J_CONDITION, _condition(c)) for c in j.conditions)
        if j.deciding:
            parts.append(_J_DECIDING)
        return b"".join(parts)


def _per_rule(cache: dict, info: object, build, arg):
    """`build(arg)` for the compiled rule `info`, made once: keyed by its id, holding it so the id is not reused."""
    entry = cache.get(id(info))
    if entry is None or entry[0] is not info:
        entry = cache[id(info)] = (info, build(arg))
    return entry[1]


def _rule_parts(j: engine.Justification) -> tuple[bytes, bytes]:
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
    return head, _enum(_R_VERDICT, VERDICTS[j.verdict]) + _string(_R_POLICY, j.policy) + _string(_R_RULE, j.rule)


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


def result(response: bytes) -> bytes:
    """An EvaluateBatchResult holding `response`, as field 1 of its container.

    Those are the bytes of one entry of `EvaluateBatchResponse.results` and of a whole
    `EvaluateStreamResponse`: both hold the result as their field 1.
    """
    return _field(_RESULT_RESPONSE, _field(_RESULT_RESPONSE, response))


def error_result(status: bytes) -> bytes:
    """The same, holding a serialised google.rpc.Status."""
    return _field(_RESULT_RESPONSE, _field(_RESULT_ERROR, status))
