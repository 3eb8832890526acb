"""Defences of one `pol serve` process against clients that send garbage, hold its threads or its memory.

`Guard` wraps every method handler of the server (a gRPC server interceptor):

- **Requests are parsed without gRPC's error path.** When a request's deserializer
  raises, grpcio (1.85) answers INTERNAL "Exception deserializing request!" and then
  leaks the call: about 16 KB per such request, never freed, so a client sending garbage
  grows the server without bound. The guard's deserializer never raises; a request that
  is not a valid message of its type (malformed bytes, invalid UTF-8 in a string, more
  than 100 nested messages) ends the call with INVALID_ARGUMENT instead, a stream at
  the bad item.
- **Streaming calls are capped.** gRPC's synchronous server runs every call on one of
  `--threads` threads, and a stream keeps its thread until it ends. At most `max_streams`
  streaming calls (`--max-streams`) hold threads at once; one more ends at once with
  RESOURCE_EXHAUSTED, so idle streams never take the threads unary calls and health
  checks need. The health service's `Watch` runs without a thread and is not counted.

`MemoryTrim` hands freed memory back to the operating system: after a burst of large
requests the process otherwise keeps hundreds of megabytes of free heap in glibc's
per-thread arenas.
"""

from __future__ import annotations

import ctypes
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


def _refuse_malformed(request, context) -> None:
    if isinstance(request, Malformed):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _checked(requests, context):
    """The request stream, ending the call at the first malformed item."""
    for request in requests:
        _refuse_malformed(request, context)
        yield request


class Guard(grpc.ServerInterceptor):
    """Every method handler, wrapped: tolerant parsing for all, the `max_streams` cap for streaming ones."""

    def __init__(self, max_streams: int, on_call=None) -> None:
        self.max_streams = max_streams
        self._slots = threading.BoundedSemaphore(max_streams)
        self._on_call = on_call  # told of every call as it arrives (MemoryTrim.touch)
        self._guarded: dict[int, tuple] = {}  # id(handler) -> (handler, guarded handler): wrapped once per method

    def intercept_service(self, continuation, handler_call_details):
        if self._on_call is not None:
            self._on_call()
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        known = self._guarded.get(id(handler))
        if known is not None and known[0] is handler:
            return known[1]
        if len(self._guarded) > 1000:  # services that make a handler per call: never the case here
            self._guarded.clear()
        guarded = self._guard(handler)
        self._guarded[id(handler)] = (handler, guarded)
        return guarded

    def _guard(self, handler):
        parse, send = _tolerant(handler.request_deserializer), handler.response_serializer
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            def unary_unary(request, context):
                _refuse_malformed(request, context)
                return behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, parse, send)
        if handler.unary_stream is not None and getattr(handler.unary_stream, "experimental_non_blocking", False):
            return grpc.unary_stream_rpc_method_handler(_non_blocking(handler.unary_stream), parse, send)  # health Watch
        slots, limit = self._slots, self.max_streams

        def hold_slot(context) -> None:
            if not slots.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"over the limit of {limit} concurrent streaming calls; try again later")

        if handler.unary_stream is not None:
            behavior = handler.unary_stream

            def unary_stream(request, context):
                _refuse_malformed(request, context)
                hold_slot(context)
                try:
                    yield from behavior(request, context)
                finally:  # also when the call is cancelled: the server closes the generator
                    slots.release()

            return grpc.unary_stream_rpc_method_handler(unary_stream, parse, send)
        if handler.stream_unary is not None:
            behavior = handler.stream_unary

            def stream_unary(requests, context):
                hold_slot(context)
                try:
                    return behavior(_checked(requests, context), context)
                finally:
                    slots.release()

            return grpc.stream_unary_rpc_method_handler(stream_unary, parse, send)
        behavior = handler.stream_stream

        def stream_stream(requests, context):
            hold_slot(context)
            try:
                yield from behavior(_checked(requests, context), context)
            finally:
                slots.release()

        return grpc.stream_stream_rpc_method_handler(stream_stream, parse, send)


def _non_blocking(behavior):
    """A non-blocking response-streaming behavior (answers through a callback, holds no thread), guarded."""

    def unary_stream(request, context, send_response_callback=None):
        _refuse_malformed(request, context)
        return behavior(request, context, send_response_callback)

    unary_stream.experimental_non_blocking = True
    unary_stream.experimental_thread_pool = getattr(behavior, "experimental_thread_pool", None)
    return unary_stream


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
