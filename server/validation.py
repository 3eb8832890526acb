"""ValidatePolicy's compiler, run in child processes: bounded in time and memory, off the serving process.

The source a caller sends to ValidatePolicy is untrusted, and compiling it costs time
and memory that grow with what the author wrote. So the compile never runs in the
serving process: it cannot hold that process's GIL or grow its heap.

- Each server process keeps up to `concurrency` compiler processes (multiprocessing,
  "spawn": fresh interpreters that import the engine, not gRPC). They start on the
  first call that needs them and then serve call after call.
- A compiler process caps its own address space at `memory_mb` MiB (RLIMIT_AS): a
  compile that needs more fails with MemoryError inside it, is reported as `memory`,
  and that process is replaced. One that ends a compile holding more than half the cap
  is replaced too, so one huge source does not leave a bloated process behind.
- The parent waits at most `timeout` seconds (wall clock) for the answer, less if the
  caller's deadline comes first, and kills the process past it (SIGKILL; nothing in a
  compile can hold it up). A caller that goes away has its compile killed the same way.
- A compile also runs under RLIMIT_CPU (the CPU time it has used plus `timeout` + 1 s),
  so a compiler process whose server died mid-compile dies soon after; an idle one sees
  its pipe close and exits.
- At most `concurrency` validations run at once per server process; one more is
  refused at once (`busy`) rather than queued. `validate` blocks while it waits for the
  compiler process: the server calls it from a thread of its own, never its event loop.

Results are plain dicts (`Diagnostic.to_dict()`, with "" for no path or help).
`shutdown()` kills every compiler process; the server calls it when it stops.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

__all__ = ["Refused", "Validation", "Validator", "shutdown", "validator"]

STARTUP = 30.0  # seconds a new compiler process may take to import the engine; not part of the compile's time
_SLICE = 0.1  # seconds between checks that the caller is still there
_WARM_UP = 'schema s { x: int }\npolicy p for s { rule r { when x > 1 and "a" matches "a+" then remove because "w" } }\n'


class Refused(Exception):
    """A validation that was not run to the end: `reason` says why, `code` is the gRPC status code's name."""

    CODES = {
        "busy": "RESOURCE_EXHAUSTED",  # --validate-concurrency calls already compiling
        "timeout": "RESOURCE_EXHAUSTED",  # over --validate-timeout
        "memory": "RESOURCE_EXHAUSTED",  # over --validate-memory-mb
        "deadline": "DEADLINE_EXCEEDED",  # the caller's deadline came first
        "cancelled": "CANCELLED",  # the caller went away
        "stopping": "UNAVAILABLE",  # the server is stopping
        "failed": "INTERNAL",  # the compiler raised, or its process died or did not start
    }

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.code = self.CODES[reason]
        super().__init__(message)


@dataclass(frozen=True)
class Validation:
    """A compile run to the end: every diagnostic, as `Diagnostic.to_dict()` with "" for no path or help."""

    diagnostics: tuple[dict, ...]
    seconds: float  # wall clock, parent side, compile only (not a compiler process's start-up)
    peak_kb: int  # the compiler process's peak resident memory during this compile (VmHWM), 0 if unknown


def _status_kb(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM, VmSize); 0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _child_main(conn, memory_mb: int, timeout: float) -> None:
    """A compiler process: import and warm up the engine, cap memory, then compile what the pipe brings."""
    import engine

    engine.compile_sources({"warm.pol": _WARM_UP})
    cap = memory_mb << 20
    idle_kb = _status_kb("VmSize")
    if idle_kb and idle_kb << 10 >= cap:
        conn.send(("failed", f"--validate-memory-mb {memory_mb} is below the compiler process's own size ({idle_kb >> 10} MiB)"))
        return
    _set_soft_limit(resource.RLIMIT_AS, cap)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            reply = _compile_next(conn, engine, timeout)
        except (EOFError, OSError):
            return  # the server is gone
        conn.send((*reply, _status_kb("VmHWM"), _status_kb("VmRSS")))
        if reply[0] != "ok":
            return  # the pipe may be mid-message, the heap in pieces: the server starts a fresh process


def _compile_next(conn, engine, timeout: float) -> tuple[str, object]:
    """Receive one set of files and compile it: ("ok", diagnostics), ("memory", None) or ("failed", why)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # restart VmHWM, so it is this compile's peak
    except OSError:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _set_soft_limit(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime + timeout) + 1)
    try:
        files = {path: conn.recv_bytes() for path in conn.recv()}
        return "ok", [_plain(d) for d in engine.compile_sources(files).diagnostics]
    except MemoryError:
        return "memory", None
    except (EOFError, OSError):
        raise
    except Exception as e:  # an engine bug: say so
        return "failed", f"{type(e).__name__}: {e}"[:500]


def _set_soft_limit(which: int, soft: int) -> None:
    """Set the soft limit `which` to `soft` (capped at the hard limit, which stays as it is)."""
    hard = resource.getrlimit(which)[1]
    resource.setrlimit(which, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _plain(d) -> dict:
    j = d.to_dict()
    return {**j, "path": j["path"] or "", "help": j["help"] or ""}


class _Child:
    """One compiler process and the parent's end of its pipe."""

    def __init__(self, context, memory_mb: int, timeout: float) -> None:
        self.conn, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=_child_main, args=(child_end, memory_mb, timeout), name="pol-validate", daemon=True)
        self.process.start()
        child_end.close()
        self.ready = False

    def kill(self) -> None:
        """SIGKILL and reap the process (the pipe stays open: the thread using it closes it)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


class Validator:
    """Compiles sources in at most `concurrency` compiler processes, each within `timeout` seconds and `memory_mb` MiB."""

    def __init__(self, timeout: float, memory_mb: int, concurrency: int) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.concurrency = concurrency
        self._context = multiprocessing.get_context("spawn")
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()  # idle and busy, for close()
        self._closed = False
        self._log = structlog.get_logger("pol.validate")

    def validate(
        self, files: Mapping[str, str | bytes], *, deadline: float | None = None, active: Callable[[], bool] = lambda: True, request_id: str = ""
    ) -> Validation:
        """Compile `files` ({path: text}); raises Refused. `deadline`: the caller's, on the time.monotonic() clock."""
        if not self._slots.acquire(blocking=False):
            self._log.warning("validation_refused", request_id=request_id, reason="busy")
            raise Refused("busy", f"{self.concurrency} ValidatePolicy call(s) already running in this server process, the limit (--validate-concurrency); retry later")
        start = time.monotonic()
        try:
            child = self._take()
            try:
                self._wait_ready(child, deadline, active)
                validation, rss_kb = self._compile(child, dict(files), deadline, active)
            except Refused as e:
                self._drop(child)
                self._log.warning("validation_refused", request_id=request_id, reason=e.reason, seconds=round(time.monotonic() - start, 3), message=str(e))
                raise
            except BaseException:
                self._drop(child)
                raise
            self._give_back(child, rss_kb)
            self._log.info("validated", request_id=request_id, seconds=round(validation.seconds, 3), peak_kb=validation.peak_kb, diagnostics=len(validation.diagnostics))
            return validation
        finally:
            self._slots.release()

    def close(self) -> None:
        """Kill every compiler process, busy or idle; calls still waiting on one are refused."""
        with self._lock:
            self._closed = True
            children, idle = list(self._children), self._idle
            self._children, self._idle = set(), []
        for child in children:
            child.kill()
        for child in idle:
            child.conn.close()

    # ---- internals ------------------------------------------------------------------

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise Refused("stopping", "the server is stopping")
            if self._idle:
                return self._idle.pop()
            child = _Child(self._context, self.memory_mb, self.timeout)
            self._children.add(child)
        self._log.info("validator_started", pid=child.process.pid, memory_mb=self.memory_mb, timeout=self.timeout)
        return child

    def _give_back(self, child: _Child, rss_kb: int) -> None:
        """Keep `child` for the next call, unless it holds more than half its memory cap or the validator is closed."""
        bloated = rss_kb > (self.memory_mb << 10) // 2
        with self._lock:
            if not bloated and child in self._children:
                self._idle.append(child)
                return
        if bloated:
            self._log.info("validator_replaced", pid=child.process.pid, rss_kb=rss_kb)
        self._drop(child)

    def _drop(self, child: _Child) -> None:
        with self._lock:
            self._children.discard(child)
        child.kill()
        child.conn.close()

    def _wait(self, child: _Child, until: float, deadline: float | None, active: Callable[[], bool], reason: str, message: str) -> None:
        """Return once `child` has something to read (or has died); raise Refused past `until` or the caller's deadline."""
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline and deadline <= until:
                raise Refused("deadline", "the call's deadline passed before the policy was compiled")
            if now >= until:
                raise Refused(reason, message)
            if not active():
                raise Refused("cancelled", "the caller went away")
            end = until if deadline is None else min(until, deadline)
            try:
                if child.conn.poll(max(0.0, min(_SLICE, end - now))):
                    return
            except OSError:  # closed by close(): the receive below says the process died
                return

    def _receive(self, child: _Child) -> tuple:
        try:
            return child.conn.recv()
        except (EOFError, OSError):
            child.process.join(1)
            raise Refused("failed", f"the compiler process died (exit code {child.process.exitcode}); nothing was validated") from None

    def _wait_ready(self, child: _Child, deadline: float | None, active: Callable[[], bool]) -> None:
        if child.ready:
            return
        self._wait(child, time.monotonic() + STARTUP, deadline, active, "failed", f"the compiler process did not start within {STARTUP:g} s")
        kind, detail = self._receive(child)
        if kind != "ready":
            raise Refused("failed", detail)
        child.ready = True

    def _compile(self, child: _Child, files: dict, deadline: float | None, active: Callable[[], bool]) -> tuple[Validation, int]:
        """The validation and the compiler process's resident memory after it."""
        start = time.monotonic()
        try:
            # the paths, then each file's bytes as they are: no pickled copy of a 10 MB source
            child.conn.send(list(files))
            for data in files.values():
                child.conn.send_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        except OSError:
            pass  # it stopped reading and exited (out of memory, say): its reply, or its death, says why
        over_time = f"compiling the policy took longer than the limit of {self.timeout:g} s (--validate-timeout)"
        self._wait(child, start + self.timeout, deadline, active, "timeout", over_time)
        kind, detail, peak_kb, rss_kb = self._receive(child)
        if kind == "memory":
            raise Refused("memory", f"compiling the policy needed more memory than the limit of {self.memory_mb} MiB (--validate-memory-mb)")
        if kind == "failed":
            raise Refused("failed", f"the compiler failed: {detail}")
        return Validation(tuple(detail), time.monotonic() - start, peak_kb), rss_kb


# ---- one validator per server process ---------------------------------------------------

_validators: dict[tuple[float, int, int], Validator] = {}
_validators_lock = threading.Lock()


def validator(timeout: float, memory_mb: int, concurrency: int) -> Validator:
    """This process's validator for these limits, made on first use."""
    key = (timeout, memory_mb, concurrency)
    with _validators_lock:
        found = _validators.get(key)
        if found is None:
            found = _validators[key] = Validator(timeout, memory_mb, concurrency)
        return found


def shutdown() -> None:
    """Kill every compiler process this process started (the server calls it when it stops)."""
    with _validators_lock:
        validators = list(_validators.values())
        _validators.clear()
    for v in validators:
        v.close()
