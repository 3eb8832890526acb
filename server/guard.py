"""Defences of one `pol serve` process against clients that send garbage, or hold its streams or its memory.

`Guard` wraps every method handler of the server (a `grpc.aio` server interceptor):

- **Requests are parsed without gRPC's error path.** When a request's deserializer
  raises, grpcio answers with a status of its own choosing (INTERNAL, or UNKNOWN on the
  asyncio server) rather than the caller's fault; the sync server also leaked about
  16 KB per such call. The guard's deserializer never raises; a request that is not a
  valid message of its type (malformed bytes, invalid UTF-8 in a string, more than 100
  nested messages) ends the call with INVALID_ARGUMENT instead, a stream at the bad item.
- **Streaming calls are capped.** A stream holds no thread on the asyncio server, but
  it holds its buffers and its place in the server for as long as it is open, idle or
  not. At most `max_streams` streaming calls (`--max-streams`) are open at once; one
  more ends at once with RESOURCE_EXHAUSTED. Methods named in `uncounted` (the health
  service's `Watch`, which load balancers keep open on every connection) are not counted.

Every handler behind the guard is a coroutine function or an async generator function,
and request-streaming ones read their requests from the iterator they are given. A
request-streaming handler marked with `checks_requests` gets the stream as it comes, a
`Malformed` item included, and ends the call at one itself: a wrapping generator around
every item of a stream cost 3% of a streamed decision.

`MemoryTrim` hands freed memory back to the operating system: after a burst of large
requests the process otherwise keeps hundreds of megabytes of free heap in glibc's
per-thread arenas.
"""

from __future__ import annotations

import ctypes
import inspect
import threading
import time

import grpc

__all__ = ["Guard", "Malformed", "MemoryTrim"]


class Malformed:
    """What the guard's deserializer returns for bytes that are not a valid request."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(deserializer):
    if deserializer is None:
        return None

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as e:  # DecodeError, or whatever a parser raises on garbage
            return Malformed(f"malformed request: {e}")

    return parse


async def _refuse_malformed(request, context):
    """The request, if it parsed; else the call ends INVALID_ARGUMENT.

    `abort` leaves these frames in a reference cycle until the collector runs (see
    `server.service._end`); they hold a `Malformed`, not a request, so that costs little.
    """
    if isinstance(request, Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
    return request


async def _checked(requests, context):
    """The request stream, ending the call at the first malformed item."""
    async for request in requests:
        yield await _refuse_malformed(request, context)


def _wrap(behavior, before):
    """`behavior` called with `await before(request, context)` in place of its request; of the same kind (coroutine or async generator)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request, context):
            async for response in behavior(await before(request, context), context):
                yield response

        return stream

    async def call(request, context):
        return await behavior(await before(request, context), context)

    return call


class Guard(grpc.aio.ServerInterceptor):
    """Every method handler, wrapped: tolerant parsing for all, the `max_streams` cap for streaming ones."""

    def __init__(self, max_streams: int, *, uncounted: tuple[str, ...] = (), on_call=None) -> None:
        self.max_streams = max_streams
        self.open_streams = 0  # changed on the event loop only
        self._uncounted = frozenset(uncounted)  # full method names, e.g. "/grpc.health.v1.Health/Watch"
        self._on_call = on_call  # told of every call as it arrives (MemoryTrim.touch)
        self._guarded: dict[int, tuple] = {}  # id(handler) -> (handler, guarded handler): wrapped once per method

    async def intercept_service(self, continuation, handler_call_details):
        if self._on_call is not None:
            self._on_call()
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        known = self._guarded.get(id(handler))
        if known is not None and known[0] is handler:
            return known[1]
        if len(self._guarded) > 1000:  # services that make a handler per call: never the case here
            self._guarded.clear()
        guarded = self._guard(handler, counted=handler_call_details.method not in self._uncounted)
        self._guarded[id(handler)] = (handler, guarded)
        return guarded

    async def _hold_slot(self, context) -> None:
        """Count this streaming call until it ends, or refuse it if `max_streams` are open."""
        if self.open_streams >= self.max_streams:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"over the limit of {self.max_streams} concurrent streaming calls; try again later")
        self.open_streams += 1
        context.add_done_callback(self._release_slot)  # however the call ends: answered, failed, cancelled

    def _release_slot(self, _context) -> None:
        self.open_streams -= 1

    def _guard(self, handler, *, counted: bool):
        parse, send = _tolerant(handler.request_deserializer), handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_wrap(handler.unary_unary, _refuse_malformed), parse, send)
        hold = self._hold_slot if counted else None

        async def one(request, context):
            request = await _refuse_malformed(request, context)
            if hold is not None:
                await hold(context)
            return request

        async def stream(requests, context):
            if hold is not None:
                await hold(context)
            return _checked(requests, context)

        async def held(requests, context):
            if hold is not None:
                await hold(context)
            return requests

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_wrap(handler.unary_stream, one), parse, send)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_wrap(handler.stream_unary, stream), parse, send)
        behavior = handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(_wrap(behavior, held if getattr(behavior, "checks_requests", False) else stream), parse, send)


class MemoryTrim:
    """A daemon thread that calls glibc's `malloc_trim(0)` every `interval` seconds while calls
    arrive, and in the few quiet intervals after: gRPC and the collector free a finished call's
    buffers some time after the handler returns, so a trim in the last busy interval can run
    before the memory is free.

    Trimming costs about a millisecond when there is little to give back, and a few hundred
    milliseconds after a gigabyte burst. Without glibc (musl, macOS) it does nothing.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._calls = 0
        self._seen = 0
        self._trim = _malloc_trim()
        self.active = interval > 0 and self._trim is not None
        if self.active:
            threading.Thread(target=self._run, name="pol-malloc-trim", daemon=True).start()

    def touch(self) -> None:
        self._calls += 1  # under the GIL; a lost increment only delays a trim by one interval

    AFTERWARDS = 3  # quiet intervals trimmed after the last call

    def _run(self) -> None:
        quiet = self.AFTERWARDS
        while True:
            time.sleep(self.interval)
            quiet = 0 if self._calls != self._seen else quiet + 1
            self._seen = self._calls
            if quiet <= self.AFTERWARDS:
                self._trim(0)


def _malloc_trim():
    """glibc's malloc_trim, looked up in the running process (which has libc loaded) rather
    than by `ctypes.util.find_library`, which shells out to ldconfig or gcc and finds nothing
    where those are missing."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
