"""The PolicyService servicer: requests in, engine decisions out, errors as gRPC statuses.

Every call reads the live set once (`state.Live`) and uses it to the end, so a hot
reload never changes the set under a call. Status codes:

- annotations that break the schema, or nest too deeply: INVALID_ARGUMENT with a
  google.rpc.BadRequest naming each field (`content.annotations.<field>`);
- an unknown policy name: NOT_FOUND;
- a batch over `max_batch`, a policy source over `max_source_bytes`: RESOURCE_EXHAUSTED
  (messages over `max_message_bytes` are refused by gRPC itself, with the same code);
- a deadline that passes inside a batch or a stream: DEADLINE_EXCEEDED;
- a request id that could not travel as metadata (not 1 to 256 printable ASCII
  characters), a content id over 1,024 characters: INVALID_ARGUMENT naming the field.

ValidatePolicy has its own limits and codes (`server/validation.py`), and the request
guard (`server/guard.py`) answers bytes that do not parse with INVALID_ARGUMENT.

The RPCs are coroutines on the `grpc.aio` server's event loop: a call waiting for its
request holds no thread. Decisions are CPU-bound and run on the loop itself (threads
would add no parallelism under the GIL; `--workers` processes do); a long batch yields
to the loop every few milliseconds so other calls and health checks keep moving.
ValidatePolicy, which waits on a compiler process, waits in the `blocking` thread pool.

Each call's request id comes from the request, else the `x-request-id` metadata, else
is generated; it is echoed in every response and in the `x-request-id` trailing metadata.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

import engine
from server import wire
from server.convert import WIRE, TooDeep, policy_info, struct_to_python
from server.decisionlog import DecisionLog
from server.guard import Malformed
from server.gen.pol.v1 import policy_service_pb2 as pb
from server.state import Live
from server.wire import Encoder

__all__ = ["Limits", "PolicyService", "REQUEST_ID_KEY", "add_to_server"]

REQUEST_ID_KEY = "x-request-id"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name


@dataclass(frozen=True)
class Limits:
    """Configurable limits (the `pol serve` flags of the same names)."""

    max_batch: int = 1000  # items per EvaluateBatch call
    max_depth: int = 32  # nesting of objects and lists in annotations
    max_source_bytes: int = 1 << 20  # ValidatePolicy source text (UTF-8 bytes)
    max_message_bytes: int = 4 << 20  # any request or response (enforced by gRPC)
    validate_policy: bool = True  # False: ValidatePolicy answers UNIMPLEMENTED
    validate_timeout: float = 5.0  # seconds one ValidatePolicy compile may take (server/validation.py)
    validate_memory_mb: int = 512  # address space of the process that compiles it, in MiB
    validate_concurrency: int = 2  # ValidatePolicy calls compiling at once per server process; more are refused


def _status(code: int, message: str, violations: list[tuple[str, str]] | None = None) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]
        )
        status.details.add().Pack(bad)
    return status


YIELD_EVERY = 0.005  # seconds of a batch's work between yields to the event loop (the GIL's switch interval)
IN_C_RUN = 64  # items of a batch decided in C between looks at the clock (about 0.2 ms)


class _Refused(Exception):
    """A call ends with `status` (and `request_id`, if it has a valid one): raised by the helpers, answered by `_end`."""

    def __init__(self, status: status_pb2.Status, request_id: str | None) -> None:
        self.status = status
        self.request_id = request_id


def _end(context: grpc.aio.ServicerContext, refused: _Refused) -> None:
    """Set the call's status (its details in `grpc-status-details-bin`) and the request id; the RPC then returns.

    Not `context.abort`: the asyncio server keeps an abort's exception, whose traceback holds
    the handler's frames, and so its request, in a reference cycle that only the cycle
    collector frees (200 refused batches of 100,000 items held 150 MB).
    """
    grpc_status = rpc_status.to_status(refused.status)
    metadata = grpc_status.trailing_metadata
    if refused.request_id is not None:
        metadata = (*metadata, (REQUEST_ID_KEY, refused.request_id))
    context.set_trailing_metadata(metadata)
    context.set_code(grpc_status.code)
    context.set_details(grpc_status.details)


def _answered(rpc):
    """`rpc`, a coroutine with one response, with a `_Refused` it raises answered as the call's status."""

    @functools.wraps(rpc)
    async def answered(self, request, context):
        try:
            return await rpc(self, request, context)
        except _Refused as refused:
            _end(context, refused)
            return None  # not sent: the status is not OK

    return answered


MAX_REQUEST_ID = 256
MAX_CONTENT_ID = 1024


def _invalid(field: str, problem: str) -> status_pb2.Status:
    """INVALID_ARGUMENT for one field of the request (not the annotations)."""
    return _status(code_pb2.INVALID_ARGUMENT, f"{field}: {problem}", [(field, problem)])


def _bad_request_id(request_id: str) -> str | None:
    """Why `request_id` cannot be one (it travels in metadata and log lines), or None."""
    if len(request_id) > MAX_REQUEST_ID or not (request_id.isascii() and request_id.isprintable()):
        return f"must be 1 to {MAX_REQUEST_ID} printable ASCII characters, as a metadata value is"
    return None


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if name else prefix


class PolicyService:
    """The service. Evaluate, EvaluateBatch and EvaluateStream answer with serialised bytes
    (`server.wire`), so they are registered by `add_to_server`, not the generated helper."""

    def __init__(self, live: Live, limits: Limits = Limits(), log: DecisionLog | None = None, blocking: Executor | None = None) -> None:
        """`blocking`: the threads ValidatePolicy waits in (None: the event loop's default executor)."""
        self.live = live
        self.limits = limits
        self.log = log if log is not None else DecisionLog(None)
        self.blocking = blocking
        self._encoder: Encoder | None = None

    # ---- helpers ----------------------------------------------------------------------

    def _begin(self, context: grpc.aio.ServicerContext, request_id: str) -> tuple[engine.PolicySet, str]:
        """The live set and the call's request id (also set as trailing metadata)."""
        where = "request_id"
        if not request_id:
            where = REQUEST_ID_KEY
            request_id = next((v for k, v in context.invocation_metadata() or () if k == REQUEST_ID_KEY and v), "") or _new_request_id()
        problem = _bad_request_id(request_id)
        if problem is not None:
            raise _Refused(_invalid(where, problem), None)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        ps = self.live.policy_set
        if ps is None:
            raise _Refused(_status(code_pb2.UNAVAILABLE, "no policy set is loaded yet"), request_id)
        return ps, request_id

    def _check_policies(self, ps: engine.PolicySet, names, request_id: str) -> None:
        for name in names:
            if name not in ps.policies:
                raise _Refused(_status(code_pb2.NOT_FOUND, str(engine.UnknownPolicyError(name, ps.policies))), request_id)

    def _encoder_for(self, ps: engine.PolicySet) -> Encoder:
        encoder = self._encoder
        if encoder is None or encoder.policy_set is not ps:
            encoder = self._encoder = Encoder(ps)  # the first call after a reload
        return encoder

    def _decide(self, ps: engine.PolicySet, content: pb.Content, names: list[str] | None, explain: bool, request_id: str, index: int | None, entry: bool) -> tuple[bytes | None, status_pb2.Status | None, str | None]:
        """Decide one item (`index`: its place in a batch): the serialised EvaluateResponse (`entry`: as the EvaluateBatchResult
        entry of `Encoder.result`), or the status saying why not; and its log line."""
        start = time.perf_counter()
        if len(content.id) > MAX_CONTENT_ID:
            where, problem = "content.id" if index is None else f"contents[{index}].id", f"longer than {MAX_CONTENT_ID} characters"
            return None, _invalid(where, problem), None
        try:
            annotations = struct_to_python(content.annotations, self.limits.max_depth)
            if explain:
                from engine.explain import explain_decision

                explanation = explain_decision(ps, annotations, names)
                decision, trace = explanation.decision, explanation.to_dict()
            else:
                decision, trace = ps.evaluate(annotations, names), None
        except (TooDeep, engine.InputError) as e:
            where = "content.annotations" if index is None else f"contents[{index}].annotations"
            violations = [(where, str(e))] if isinstance(e, TooDeep) else [(_field(where, v.field), v.description) for v in e.violations]
            return None, _status(code_pb2.INVALID_ARGUMENT, str(e), violations), None
        except engine.UnknownPolicyError as e:
            return None, _status(code_pb2.NOT_FOUND, str(e)), None
        shape = decision.shape if trace is None else None
        encoder = self._encoder_for(ps)
        response = (encoder.result if entry else encoder.response)(decision, shape, request_id, content.id, trace)
        return response, None, self.log.line(decision, shape, request_id, content.id, time.perf_counter() - start, annotations)

    def _in_c(self, ps: engine.PolicySet, names: list[str] | None, request_id: str, contents, results: list, lines: list, entry: bool = True):
        """`decide(start, stop)`: items of `contents` from `start` decided in C (server/_wire.c), each exactly as
        `_decide(..., entry)` would, their responses and log lines appended to `results` and `lines`, up to `stop`
        or the first item that is not usual (bad input, a shape not seen yet, an id too long); it returns that
        item's index. None when the C module is not in use, or log lines go through structlog or carry annotations."""
        parts = self.log.line_parts(request_id)
        if WIRE is None or parts is None:
            return None
        quote, parts = parts
        encoder = self._encoder_for(ps)
        args = (
            results, lines, ps.evaluator_for(names), self.limits.max_depth, TooDeep, MAX_CONTENT_ID, encoder.templates,
            encoder.input_warnings_field, encoder.request_id_field(request_id), self.log.rule_parts(ps.hash), parts, quote, *wire.SHOWN,
        )
        decide = WIRE.decide
        return lambda start, stop: decide(contents, start, stop, entry, *args)

    # ---- RPCs ---------------------------------------------------------------------------

    @_answered
    async def Evaluate(self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext) -> bytes:
        ps, request_id = self._begin(context, request.request_id)
        self._check_policies(ps, request.policies, request_id)
        names, results, lines = list(request.policies) or None, [], []
        fast = None if request.explain else self._in_c(ps, names, request_id, (request.content,), results, lines, False)
        if fast is not None and fast(0, 1) == 1:
            response, line = results[0], lines[0]
        else:
            response, error, line = self._decide(ps, request.content, names, request.explain, request_id, None, False)
            if error is not None:
                raise _Refused(error, request_id)
        self.log.write([line])
        return response

    @_answered
    async def EvaluateBatch(self, request: pb.EvaluateBatchRequest, context: grpc.aio.ServicerContext) -> bytes:
        ps, request_id = self._begin(context, request.request_id)
        contents = request.contents
        if len(contents) > self.limits.max_batch:
            message = f"batch of {len(contents)} items is over the limit of {self.limits.max_batch}"
            raise _Refused(_status(code_pb2.RESOURCE_EXHAUSTED, message), request_id)
        self._check_policies(ps, request.policies, request_id)
        names, explain = list(request.policies) or None, request.explain
        results, lines = [], []
        fast = None if explain else self._in_c(ps, names, request_id, contents, results, lines)
        i, n, pause = 0, len(contents), 0.0
        while i < n:
            if time.perf_counter() >= pause:  # at the first item, then every YIELD_EVERY seconds
                if _expired(context):
                    raise _Refused(_deadline_exceeded(i), request_id)
                if i:
                    await asyncio.sleep(0)  # let other calls run; a cancelled call stops here
                pause = time.perf_counter() + YIELD_EVERY
            if fast is not None:
                stop = min(n, i + IN_C_RUN)
                i = fast(i, stop)
                if i == stop:
                    continue
            response, error, line = self._decide(ps, contents[i], names, explain, request_id, i, True)  # one C left to Python
            results.append(response if error is None else _error_result(error))
            lines.append(line)
            i += 1
        self.log.write(lines)
        return b"".join(results)  # EvaluateBatchResponse: its results, each field 1

    async def EvaluateStream(self, request_iterator, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            ps, call_id = self._begin(context, "")
            done = 0
            # the C path of the last (request id, policies), kept while they do not change: usually the whole stream
            in_c, key, item_box, results, lines = None, None, [None], [], []
            async for item in request_iterator:
                if isinstance(item, Malformed):  # bytes that are not a message (the guard leaves this check to us)
                    raise _Refused(_status(code_pb2.INVALID_ARGUMENT, item.message), call_id)
                if _expired(context):
                    raise _Refused(_deadline_exceeded(done), call_id)
                request = item.request
                problem = _bad_request_id(request.request_id) if request.request_id else None
                if problem is not None:
                    response, error, line = None, _invalid("request_id", problem), None
                else:
                    names, request_id = list(request.policies) or None, request.request_id or call_id
                    if not request.explain and key != (request_id, names):
                        key, in_c = (request_id, names), self._in_c(ps, names, request_id, item_box, results, lines)
                    item_box[0] = request.content
                    if not request.explain and in_c is not None and in_c(0, 1) == 1:
                        response, error, line = results.pop(), None, lines.pop()
                    else:
                        response, error, line = self._decide(ps, request.content, names, request.explain, request_id, None, True)
                    self.log.write([line])
                yield response if error is None else _error_result(error)  # EvaluateStreamResponse: its result, field 1
                done += 1
        except _Refused as refused:
            _end(context, refused)

    EvaluateStream.checks_requests = True

    @_answered
    async def ValidatePolicy(self, request: pb.ValidatePolicyRequest, context: grpc.aio.ServicerContext) -> pb.ValidatePolicyResponse:
        from server import validation
        from server.convert import SEVERITIES

        ps, request_id = self._begin(context, "")
        limits = self.limits
        if not limits.validate_policy:
            raise _Refused(_status(code_pb2.UNIMPLEMENTED, "ValidatePolicy is disabled on this server (pol serve --no-validate-policy)"), request_id)
        source = request.source.encode("utf-8")  # sent on as bytes: no second encoding to hand it over
        if len(source) > limits.max_source_bytes:
            message = f"policy source of {len(source)} bytes is over the limit of {limits.max_source_bytes} (--max-source-bytes)"
            raise _Refused(_status(code_pb2.RESOURCE_EXHAUSTED, message), request_id)
        # compiled in a separate process, within --validate-timeout and --validate-memory-mb (server/validation.py);
        # the wait for it is blocking, so it runs in a thread, which stops waiting once the call is over
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        ended = threading.Event()
        context.add_done_callback(lambda _context: ended.set())
        validator = validation.validator(limits.validate_timeout, limits.validate_memory_mb, limits.validate_concurrency)
        files = {**schema_files(ps), request.path or "policy.pol": source}
        validate = functools.partial(validator.validate, files, deadline=deadline, active=lambda: not ended.is_set(), request_id=request_id)
        try:
            found = await asyncio.get_running_loop().run_in_executor(self.blocking, validate)
        except validation.Refused as e:
            raise _Refused(_status(getattr(code_pb2, e.code), str(e)), request_id) from None
        diagnostics = [pb.Diagnostic(**{**d, "severity": SEVERITIES.get(d["severity"], pb.SEVERITY_UNSPECIFIED)}) for d in found.diagnostics]
        return pb.ValidatePolicyResponse(ok=all(d["severity"] != "error" for d in found.diagnostics), diagnostics=diagnostics)

    @_answered
    async def ListPolicies(self, request: pb.ListPoliciesRequest, context: grpc.aio.ServicerContext) -> pb.ListPoliciesResponse:
        ps, _ = self._begin(context, "")
        return pb.ListPoliciesResponse(policies=[policy_info(ps, name) for name in ps.policy_names], policy_set_hash=ps.hash)

    @_answered
    async def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.aio.ServicerContext) -> pb.GetPolicyResponse:
        ps, request_id = self._begin(context, "")
        if request.name not in ps.policies:
            raise _Refused(_status(code_pb2.NOT_FOUND, str(engine.UnknownPolicyError(request.name, ps.policies))), request_id)
        info = policy_info(ps, request.name)
        source = ps.files.get(info.path, b"").decode("utf-8", errors="replace")
        return pb.GetPolicyResponse(policy=info, source=source, policy_set_hash=ps.hash)


def _expired(context: grpc.aio.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def _deadline_exceeded(done: int) -> status_pb2.Status:
    return _status(code_pb2.DEADLINE_EXCEEDED, f"deadline exceeded after {done} item(s)")


def add_to_server(service: PolicyService, server: grpc.aio.Server) -> None:
    """Register `service`; the evaluate methods send the bytes they return as they are."""
    handlers = {
        "Evaluate": grpc.unary_unary_rpc_method_handler(service.Evaluate, request_deserializer=pb.EvaluateRequest.FromString),
        "EvaluateBatch": grpc.unary_unary_rpc_method_handler(service.EvaluateBatch, request_deserializer=pb.EvaluateBatchRequest.FromString),
        "EvaluateStream": grpc.stream_stream_rpc_method_handler(service.EvaluateStream, request_deserializer=pb.EvaluateStreamRequest.FromString),
    }
    for name in ("ValidatePolicy", "ListPolicies", "GetPolicy"):
        method = pb.DESCRIPTOR.services_by_name["PolicyService"].methods_by_name[name]
        request, response = (getattr(pb, t.name) for t in (method.input_type, method.output_type))
        handlers[name] = grpc.unary_unary_rpc_method_handler(getattr(service, name), request_deserializer=request.FromString, response_serializer=response.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _new_request_id() -> str:
    """Unique across processes and restarts (a random per-process prefix), and cheap."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def _error_result(error: status_pb2.Status) -> bytes:
    return wire.error_result(error.SerializeToString())


def schema_files(ps: engine.PolicySet) -> dict[str, bytes]:
    """The files of `ps` that define neither a policy nor tests: its schemas and shared lets."""
    taken = {p.path for p in ps.policies.values()} | {path for _, path in ps.tests}
    return {path: data for path, data in ps.files.items() if path not in taken}
