"""A typed Python client for PolicyService.

    with PolicyClient("127.0.0.1:50051", timeout=1.0) as client:
        result = client.evaluate({"topic": "migration", "intent": "share_info", "confidence": 0.9})
        result.verdict, result.rule, result.justifications[0]["reason"]

Errors are raised as `PolError` with the gRPC status code, the message and the field
violations of a google.rpc.BadRequest. In `evaluate_many` and `evaluate_stream` an
item's own error is returned in its place (a `PolError`, not raised).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.gen.pol.v1 import policy_service_pb2 as pb
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc

__all__ = ["EvaluateResult", "PolError", "PolicyClient"]

_VERDICTS = {pb.VERDICT_ALLOW: "allow", pb.VERDICT_INTERVENE: "intervene", pb.VERDICT_REMOVE: "remove"}


class PolError(Exception):
    """A call (or one item of a batch or stream) failed: status code, message, field violations."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        self.code = code
        self.message = message
        self.violations = tuple(violations)  # (field, description)
        super().__init__(f"{code.name}: {message}")

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> PolError:
        code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
        violations = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
        return cls(code, status.message, violations)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> PolError:
        try:
            status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        except ValueError:  # details that disagree with the call's code and message: keep the call's own
            status = None
        if status is not None:
            return cls.from_status(status)
        return cls(error.code(), error.details() or "")


@dataclass(frozen=True)
class EvaluateResult:
    """An EvaluateResponse as plain Python: verdict and names as strings, the rest as JSON-like dicts."""

    verdict: str
    policy: str
    rule: str
    interventions: tuple[dict, ...]
    justifications: tuple[dict, ...]
    shadow: tuple[dict, ...]
    policies: tuple[dict, ...]
    warnings: tuple[dict, ...]
    policy_set_hash: str
    request_id: str
    content_id: str
    trace: dict | None = None

    @classmethod
    def from_message(cls, m: pb.EvaluateResponse) -> EvaluateResult:
        def plain(msg) -> dict:
            d = json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for key in ("action", "verdict"):
                if key in d:
                    d[key] = d[key].removeprefix("VERDICT_").lower()
            return d

        return cls(
            verdict=_VERDICTS.get(m.verdict, "unspecified"),
            policy=m.policy,
            rule=m.rule,
            interventions=tuple(plain(i) for i in m.interventions),
            justifications=tuple(plain(j) for j in m.justifications),
            shadow=tuple(plain(j) for j in m.shadow),
            policies=tuple(plain(p) for p in m.policies),
            warnings=tuple(plain(w) for w in m.warnings),
            policy_set_hash=m.policy_set_hash,
            request_id=m.request_id,
            content_id=m.content_id,
            trace=json_format.MessageToDict(m.trace) if m.HasField("trace") else None,
        )


def _content(annotations: Mapping, content_id: str = "") -> pb.Content:
    s = struct_pb2.Struct()
    s.update(dict(annotations))
    return pb.Content(id=content_id, annotations=s)


def _result(r: pb.EvaluateBatchResult) -> EvaluateResult | PolError:
    if r.WhichOneof("result") == "response":
        return EvaluateResult.from_message(r.response)
    return PolError.from_status(r.error)


class PolicyClient:
    """A channel to a pol server; `credentials` (grpc.ChannelCredentials) for TLS, else plaintext."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None, timeout: float | None = None, options: Sequence = ()) -> None:
        self.timeout = timeout
        self.channel = grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
        self.stub = pb_grpc.PolicyServiceStub(self.channel)

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request, timeout: float | None, metadata=None):
        try:
            return method(request, timeout=timeout if timeout is not None else self.timeout, metadata=metadata)
        except grpc.RpcError as e:
            raise PolError.from_rpc_error(e) from None

    def evaluate(
        self,
        annotations: Mapping,
        *,
        content_id: str = "",
        policies: Sequence[str] = (),
        explain: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> EvaluateResult:
        """Decide one item; raises PolError (INVALID_ARGUMENT with `violations`, NOT_FOUND, ...)."""
        request = pb.EvaluateRequest(content=_content(annotations, content_id), policies=list(policies), explain=explain, request_id=request_id or "")
        return EvaluateResult.from_message(self._call(self.stub.Evaluate, request, timeout))

    def evaluate_many(
        self,
        items: Iterable[Mapping | tuple[str, Mapping]],
        *,
        policies: Sequence[str] = (),
        explain: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> list[EvaluateResult | PolError]:
        """Decide a batch (items are annotations, or (content_id, annotations)); one result or error per item."""
        contents = [_content(i[1], i[0]) if isinstance(i, tuple) else _content(i) for i in items]
        request = pb.EvaluateBatchRequest(contents=contents, policies=list(policies), explain=explain, request_id=request_id or "")
        response = self._call(self.stub.EvaluateBatch, request, timeout)
        return [_result(r) for r in response.results]

    def evaluate_stream(
        self,
        items: Iterable[Mapping | tuple[str, Mapping]],
        *,
        policies: Sequence[str] = (),
        explain: bool = False,
        timeout: float | None = None,
    ) -> Iterator[EvaluateResult | PolError]:
        """Decide a stream, lazily; yields one result or error per item, in order."""

        def requests():
            for i in items:
                content = _content(i[1], i[0]) if isinstance(i, tuple) else _content(i)
                yield pb.EvaluateStreamRequest(request=pb.EvaluateRequest(content=content, policies=list(policies), explain=explain))

        try:
            for response in self.stub.EvaluateStream(requests(), timeout=timeout if timeout is not None else self.timeout):
                yield _result(response.result)
        except grpc.RpcError as e:
            raise PolError.from_rpc_error(e) from None

    def validate(self, source: str, path: str = "policy.pol", *, timeout: float | None = None) -> pb.ValidatePolicyResponse:
        return self._call(self.stub.ValidatePolicy, pb.ValidatePolicyRequest(source=source, path=path), timeout)

    def list_policies(self, *, timeout: float | None = None) -> pb.ListPoliciesResponse:
        return self._call(self.stub.ListPolicies, pb.ListPoliciesRequest(), timeout)

    def get_policy(self, name: str, *, timeout: float | None = None) -> pb.GetPolicyResponse:
        return self._call(self.stub.GetPolicy, pb.GetPolicyRequest(name=name), timeout)


