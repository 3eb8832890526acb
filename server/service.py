"""The PolicyService servicer: requests in, engine decisions out, errors as gRPC statuses.

Every call reads the live set once (`state.Live`) and uses it to the end, so a hot
reload never changes the set under a call. Status codes:

- annotations that break the schema, or nest too deeply: INVALID_ARGUMENT with a
  google.rpc.BadRequest naming each field (`content.annotations.<field>`);
- an unknown policy name: NOT_FOUND;
- a batch over `max_batch`, a policy source over `max_source_bytes`: RESOURCE_EXHAUSTED
  (messages over `max_message_bytes` are refused by gRPC itself, with the same code);
- a deadline that passes inside a batch or a stream: DEADLINE_EXCEEDED.

Each call's request id comes from the request, else the `x-request-id` metadata, else
is generated; it is echoed in every response and in the `x-request-id` trailing metadata.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import structlog
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

import engine
from server.convert import TooDeep, decision_response, diagnostic_message, policy_info, struct_to_python
from server.gen.pol.v1 import policy_service_pb2 as pb
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc
from server.state import Live

__all__ = ["Limits", "PolicyService", "REQUEST_ID_KEY"]

REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class Limits:
    """Configurable limits (the `pol serve` flags of the same names)."""

    max_batch: int = 1000  # items per EvaluateBatch call
    max_depth: int = 32  # nesting of objects and lists in annotations
    max_source_bytes: int = 1 << 20  # ValidatePolicy source text (UTF-8 bytes)
    max_message_bytes: int = 4 << 20  # any request or response (enforced by gRPC)


class _ItemError(Exception):
    """One item could not be decided; `status` says why (a google.rpc.Status)."""

    def __init__(self, status: status_pb2.Status) -> None:
        self.status = status
        super().__init__(status.message)


def _status(code: int, message: str, violations: list[tuple[str, str]] | None = None) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]
        )
        status.details.add().Pack(bad)
    return status


def _abort(context: grpc.ServicerContext, status: status_pb2.Status, request_id: str) -> None:
    """End the call with `status` (its details in `grpc-status-details-bin`) and the request id."""
    grpc_status = rpc_status.to_status(status)
    grpc_status = grpc_status._replace(trailing_metadata=(*grpc_status.trailing_metadata, (REQUEST_ID_KEY, request_id)))
    context.abort_with_status(grpc_status)


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if name else prefix


class PolicyService(pb_grpc.PolicyServiceServicer):
    def __init__(self, live: Live, limits: Limits = Limits(), log=None) -> None:
        self.live = live
        self.limits = limits
        self.log = log if log is not None else structlog.get_logger("pol.decision")

    # ---- helpers ----------------------------------------------------------------------

    def _begin(self, context: grpc.ServicerContext, request_id: str) -> tuple[engine.PolicySet, str]:
        """The live set and the call's request id (also set as trailing metadata)."""
        if not request_id:
            request_id = next((v for k, v in context.invocation_metadata() or () if k == REQUEST_ID_KEY and v), "") or uuid.uuid4().hex
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        ps = self.live.policy_set
        if ps is None:
            _abort(context, _status(code_pb2.UNAVAILABLE, "no policy set is loaded yet"), request_id)
        return ps, request_id

    def _check_policies(self, ps: engine.PolicySet, names, context, request_id: str) -> None:
        for name in names:
            if name not in ps.policies:
                _abort(context, _status(code_pb2.NOT_FOUND, str(engine.UnknownPolicyError(name, ps.policies))), request_id)

    def _deadline(self, context: grpc.ServicerContext, request_id: str, done: int) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            _abort(context, _status(code_pb2.DEADLINE_EXCEEDED, f"deadline exceeded after {done} item(s)"), request_id)
        if not context.is_active():
            _abort(context, _status(code_pb2.CANCELLED, "call cancelled"), request_id)

    def _decide(self, ps: engine.PolicySet, content: pb.Content, policies, explain: bool, request_id: str, prefix: str) -> pb.EvaluateResponse:
        """Decide one item; raises _ItemError for input that breaks the schema."""
        start = time.perf_counter()
        where = f"{prefix}.annotations"
        try:
            annotations = struct_to_python(content.annotations, self.limits.max_depth)
            names = list(policies) or None
            if explain:
                from engine.explain import explain_decision

                explanation = explain_decision(ps, annotations, names)
                decision, trace = explanation.decision, explanation.to_dict()
            else:
                decision, trace = ps.evaluate(annotations, names), None
        except TooDeep as e:
            raise _ItemError(_status(code_pb2.INVALID_ARGUMENT, str(e), [(where, str(e))])) from None
        except engine.InputError as e:
            violations = [(_field(where, v.field), v.description) for v in e.violations]
            raise _ItemError(_status(code_pb2.INVALID_ARGUMENT, str(e), violations)) from None
        except engine.UnknownPolicyError as e:
            raise _ItemError(_status(code_pb2.NOT_FOUND, str(e))) from None
        response = decision_response(decision, request_id=request_id, content_id=content.id, trace=trace)
        self.log.info(
            "decision",
            request_id=request_id,
            content_id=content.id,
            verdict=decision.verdict,
            policy=decision.policy,
            rule=decision.rule,
            policy_set_hash=decision.policy_set_hash,
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
        )
        return response

    # ---- RPCs ---------------------------------------------------------------------------

    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext) -> pb.EvaluateResponse:
        ps, request_id = self._begin(context, request.request_id)
        self._check_policies(ps, request.policies, context, request_id)
        try:
            return self._decide(ps, request.content, request.policies, request.explain, request_id, "content")
        except _ItemError as e:
            _abort(context, e.status, request_id)

    def EvaluateBatch(self, request: pb.EvaluateBatchRequest, context: grpc.ServicerContext) -> pb.EvaluateBatchResponse:
        ps, request_id = self._begin(context, request.request_id)
        if len(request.contents) > self.limits.max_batch:
            message = f"batch of {len(request.contents)} items is over the limit of {self.limits.max_batch}"
            _abort(context, _status(code_pb2.RESOURCE_EXHAUSTED, message), request_id)
        self._check_policies(ps, request.policies, context, request_id)
        results = []
        for i, content in enumerate(request.contents):
            self._deadline(context, request_id, i)
            try:
                results.append(pb.EvaluateBatchResult(response=self._decide(ps, content, request.policies, request.explain, request_id, f"contents[{i}]")))
            except _ItemError as e:
                results.append(pb.EvaluateBatchResult(error=e.status))
        return pb.EvaluateBatchResponse(results=results)

    def EvaluateStream(self, request_iterator, context: grpc.ServicerContext) -> Iterator[pb.EvaluateStreamResponse]:
        ps, call_id = self._begin(context, "")
        for i, item in enumerate(request_iterator):
            self._deadline(context, call_id, i)
            request = item.request
            try:
                response = self._decide(ps, request.content, request.policies, request.explain, request.request_id or call_id, "content")
                yield pb.EvaluateStreamResponse(result=pb.EvaluateBatchResult(response=response))
            except _ItemError as e:
                yield pb.EvaluateStreamResponse(result=pb.EvaluateBatchResult(error=e.status))

    def ValidatePolicy(self, request: pb.ValidatePolicyRequest, context: grpc.ServicerContext) -> pb.ValidatePolicyResponse:
        ps, request_id = self._begin(context, "")
        size = len(request.source.encode("utf-8"))
        if size > self.limits.max_source_bytes:
            message = f"policy source of {size} bytes is over the limit of {self.limits.max_source_bytes}"
            _abort(context, _status(code_pb2.RESOURCE_EXHAUSTED, message), request_id)
        path = request.path or "policy.pol"
        result = engine.compile_sources({**schema_files(ps), path: request.source})
        return pb.ValidatePolicyResponse(ok=not result.errors, diagnostics=[diagnostic_message(d) for d in result.diagnostics])

    def ListPolicies(self, request: pb.ListPoliciesRequest, context: grpc.ServicerContext) -> pb.ListPoliciesResponse:
        ps, _ = self._begin(context, "")
        return pb.ListPoliciesResponse(policies=[policy_info(ps, name) for name in ps.policy_names], policy_set_hash=ps.hash)

    def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.ServicerContext) -> pb.GetPolicyResponse:
        ps, request_id = self._begin(context, "")
        if request.name not in ps.policies:
            _abort(context, _status(code_pb2.NOT_FOUND, str(engine.UnknownPolicyError(request.name, ps.policies))), request_id)
        info = policy_info(ps, request.name)
        source = ps.files.get(info.path, b"").decode("utf-8", errors="replace")
        return pb.GetPolicyResponse(policy=info, source=source, policy_set_hash=ps.hash)


def schema_files(ps: engine.PolicySet) -> dict[str, bytes]:
    """The files of `ps` that define neither a policy nor tests: its schemas and shared lets."""
    taken = {p.path for p in ps.policies.values()} | {path for _, path in ps.tests}
    return {path: data for path, data in ps.files.items() if path not in taken}
