"""The `pol serve` process: load and test the set, serve it, reload it, drain on SIGTERM.

Start-up refuses a set with errors or failing tests (diagnostics or failures on stderr,
exit 1). Once serving, the first line on stdout is `serving on HOST:PORT` (the bound
port, also when asked for port 0). Logs are structlog lines on stderr: JSON, or a
readable form on a terminal; one `decision` line per decision, with no annotation values.

Process model: with `workers == 1` the `pol serve` process serves itself. With more, it
is a small supervisor that creates no gRPC object: it checks the set, picks the port
(a concrete free one for port 0, held bound with SO_REUSEPORT but not listening), then
spawns N worker processes that each serve the whole API on that port through
SO_REUSEPORT, so the kernel spreads connections over them. It forwards SIGHUP and
SIGTERM to every worker and restarts a worker that dies.

Each server process runs a `grpc.aio` server on an asyncio event loop: a call is a
coroutine, so a call that has sent its headers but not its request (or a stream waiting
for its next message) holds no thread. Decisions run on the loop; the `threads` pool
is for blocking work (ValidatePolicy's wait on its compiler process); reloads run on a
thread of their own.

Signals: SIGHUP (and, with polling on, a change under the policy directory) recompiles
the set and runs its tests; only a set with no errors and no failing tests is swapped
in, otherwise the old one keeps serving and the failure is logged. SIGTERM or SIGINT:
health turns NOT_SERVING, new calls are refused, calls in flight get `grace` seconds to
finish, exit 0.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, replace

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

import engine
from engine.policyset import read_files, set_hash
from server.convert import STRUCT_DECODER
from server.decisionlog import DecisionLog
from server.guard import Guard, MemoryTrim
from server.service import SERVICE_NAME, Limits, PolicyService, add_to_server
from server.state import Live

__all__ = ["Options", "configure_logging", "serve"]

SETTLE = 0.1  # seconds a changed directory must stay unchanged before a reload reads it


def _ms(seconds: float) -> int:
    """Whole milliseconds for a gRPC channel argument (a C int)."""
    return min(round(seconds * 1000), 2**31 - 1)


@dataclass(frozen=True)
class Options:
    policies: str = "policies"
    address: str = "127.0.0.1:50051"
    limits: Limits = Limits()
    threads: int = 32  # threads for blocking work (ValidatePolicy's wait on its compiler process); calls hold none
    grace: float = 10.0  # seconds in-flight calls get after SIGTERM
    poll: float = 1.0  # seconds between checks of the policy directory; 0: only SIGHUP reloads
    plaintext: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    workers: int = 1  # server processes; more than 1: a supervisor and N SO_REUSEPORT workers
    log_annotations: bool = False  # decision log lines carry the annotations (off: they hold no values)
    max_streams: int = 0  # streaming calls open at once; 0: half of `threads` (server/guard.py)
    handshake_timeout: float = 20.0  # seconds a new connection gets to complete its handshake
    max_connection_idle: float = 300.0  # seconds a connection may carry no call before it is closed; 0: never
    max_connection_age: float = 0.0  # seconds before a connection is closed (its calls get `grace`); 0: never
    trim_interval: float = 10.0  # seconds between returns of freed memory to the system; 0: never


class _LineWriter:
    """A structlog logger that writes each line with one write(2) on stderr's descriptor.

    Several processes share stderr with --workers: one system call per line means lines
    from different workers never interleave, and a killed worker never leaves half a line.
    """

    def __init__(self, *_args) -> None:
        self.fd = sys.stderr.fileno()

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.fd, data):]

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


def configure_logging(worker: int | None = None, *, shared: bool = False) -> None:
    """structlog to stderr: JSON lines, or the console renderer on a terminal.

    `shared` (the supervisor and its workers): whole lines in one write each; workers add `worker` and `pid`.
    """
    renderer = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    processors = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if worker is not None:
        pid = os.getpid()

        def add_worker(_logger, _name, event: dict) -> dict:
            event.setdefault("worker", worker)
            event.setdefault("pid", pid)
            return event

        processors.append(add_worker)
    structlog.configure(
        processors=[*processors, renderer],
        logger_factory=_LineWriter if shared or worker is not None else structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def load_tested(path: str, files: dict[str, bytes] | None = None) -> tuple[engine.PolicySet | None, list[str]]:
    """The set at `path` (or made of `files`, read from it) if it compiles and its tests pass; else None and what went wrong.

    Also refused: an empty file, or a set with no policy, which is what a save or a deploy
    caught half-way looks like (a truncated file; a directory emptied or not yet filled).
    Never raises: a compiler bug refuses the set instead of taking the server down.
    """
    try:
        if files is None:
            files = read_files(path)
        empty = [f"{path}/{name}: empty file (a save in progress?)" for name, data in sorted(files.items()) if not data.strip()]
        if empty:
            return None, empty
        result = engine.compile_sources(files)
        if result.policy_set is None:
            return None, [engine.render_all(result.diagnostics)]
        if not result.policy_set.policies:
            return None, [f"{path}: no policies (an empty or half-written directory?)"]
        report = engine.run_tests(result.policy_set)
    except engine.LoadError as e:
        return None, [str(e)]
    except Exception as e:  # see the docstring
        return None, [f"{path}: internal error while loading: {type(e).__name__}: {e}"]
    if not report.passed:
        return None, [f"test failed: {c.id}: {c.failure}" for c in report.failures]
    return result.policy_set, []


def _credentials(options: Options) -> grpc.ServerCredentials | None:
    if not options.tls_cert:
        return None
    with open(options.tls_cert, "rb") as f:
        cert = f.read()
    with open(options.tls_key, "rb") as f:
        key = f.read()
    ca = None
    if options.tls_client_ca:
        with open(options.tls_client_ca, "rb") as f:
            ca = f.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def serve(options: Options) -> int:
    """Run the server (or, with several workers, the supervisor) until SIGTERM; the exit status."""
    if options.workers > 1:
        return _supervise(options)
    return _serve_one(options)


def _serve_one(options: Options, *, worker: int | None = None, ready=None, parent: int | None = None) -> int:
    """Serve in this process. As a worker: SO_REUSEPORT, no stdout line, `ready` told the outcome, exit if `parent` goes."""
    ps, problems = load_tested(options.policies)
    if ps is None:
        for p in problems:
            print(p, file=sys.stderr)
        return _failed(f"pol serve: {options.policies}: refusing to start", 1, ready)
    return asyncio.run(_serve(options, ps, worker=worker, ready=ready, parent=parent))


def _failed(message: str, status: int, ready) -> int:
    """Say why the server cannot start (stderr, and the supervisor through `ready`); the exit status."""
    print(message, file=sys.stderr, flush=True)
    if ready is not None:
        ready.send(("failed", status))
    return status


WATCH = "/grpc.health.v1.Health/Watch"  # open on every load-balanced connection: not counted as a stream


async def _serve(options: Options, ps: engine.PolicySet, *, worker: int | None, ready, parent: int | None) -> int:
    log = structlog.get_logger("pol.serve")
    live = Live(ps)
    limits = options.limits
    connections = [("grpc.server_handshake_timeout_ms", _ms(options.handshake_timeout))]
    if options.max_connection_idle:
        connections.append(("grpc.max_connection_idle_ms", _ms(options.max_connection_idle)))
    if options.max_connection_age:
        connections += [("grpc.max_connection_age_ms", _ms(options.max_connection_age)), ("grpc.max_connection_age_grace_ms", _ms(options.grace))]
    trim = MemoryTrim(options.trim_interval)
    server = grpc.aio.server(
        interceptors=[Guard(options.max_streams or max(1, options.threads // 2), uncounted=(WATCH,), on_call=trim.touch)],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.so_reuseport", 1 if worker is not None else 0),
            *connections,
        ],
    )
    decisions = DecisionLog(
        None if sys.stderr.isatty() else sys.stderr.fileno(),
        static={"worker": worker, "pid": os.getpid()} if worker is not None else None,
        annotations=options.log_annotations,
    )
    # at least one thread per ValidatePolicy compile allowed at once: one more is refused at once, never queued for a thread
    blocking = futures.ThreadPoolExecutor(max_workers=max(options.threads, limits.validate_concurrency), thread_name_prefix="pol-blocking")
    add_to_server(PolicyService(live, limits, decisions, blocking), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((SERVICE_NAME, health_name, reflection.SERVICE_NAME), server)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    credentials = _credentials(options)
    try:
        port = server.add_secure_port(options.address, credentials) if credentials else server.add_insecure_port(options.address)
    except RuntimeError as e:
        return _failed(f"pol serve: cannot listen on {options.address}: {e}", 2, ready)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: queue.SimpleQueue[str] = queue.SimpleQueue()  # SIGHUPs, for the reload thread
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloads.put, "SIGHUP")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = options.address.rsplit(":", 1)[0]
    log.info("serving", address=f"{host}:{port}", tls=credentials is not None, policy_set_hash=ps.hash, policies=list(ps.policy_names),
             memory_trim=trim.active, engine=engine.native.IMPLEMENTATION, struct_decoder=STRUCT_DECODER)
    # logged before it is announced: whoever sees the announcement finds the line
    if ready is None:
        print(f"serving on {host}:{port}", flush=True)
    else:
        ready.send(("ready", port))

    threading.Thread(target=_reloader, args=(live, options, log, reloads), name="pol-reload", daemon=True).start()
    watcher = asyncio.create_task(_watch_parent(parent, stop, log)) if parent is not None else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    return await _drain(server, health_servicer, blocking, options.grace, log)


async def _watch_parent(parent: int, stop: asyncio.Event, log) -> None:
    """Set `stop` if the supervisor goes (this process is handed to another parent)."""
    while os.getppid() == parent:
        await asyncio.sleep(0.05)
    log.warning("supervisor_gone", supervisor=parent)
    stop.set()


def _reloader(live: Live, options: Options, log, requests: queue.SimpleQueue) -> None:
    """The reload thread: a reload per SIGHUP in `requests` and, every `poll` seconds, one per settled change.

    Apart from the main thread, so a slow compile or a stuck file never delays SIGTERM.
    A reading already tried (the same files, or the same read error) is not tried or
    logged again; files equal to the live set need no reload.
    """
    tried = live.policy_set.hash  # the last reading tried: the files' hash, or the read error
    next_poll = time.monotonic() + options.poll
    while True:
        try:
            why = requests.get(timeout=max(0.0, next_poll - time.monotonic())) if options.poll else requests.get()
        except queue.Empty:
            why = "change"
        try:
            if why == "SIGHUP":
                tried = _reload(live, options.policies, log, why)
                continue
            next_poll = time.monotonic() + options.poll
            reading = _settled_files(options.policies)
            if reading is not None:
                key = str(reading) if isinstance(reading, engine.LoadError) else set_hash(reading)
                if key != tried:
                    tried = key if key == live.policy_set.hash else _reload(live, options.policies, log, why, reading)
        except Exception as e:  # the thread must outlive any bug: later changes still reload
            log.error("reload_failed", trigger=why, problems=[f"internal error: {type(e).__name__}: {e}"], policy_set_hash=live.policy_set.hash)


def _settled_files(path: str) -> dict[str, bytes] | engine.LoadError | None:
    """The files under `path` (or the error reading them), read twice SETTLE apart: the second reading if both agree, else None (still changing)."""

    def reading() -> dict[str, bytes] | engine.LoadError:
        try:
            return read_files(path)
        except engine.LoadError as e:
            return e

    first = reading()
    time.sleep(SETTLE)
    second = reading()
    if isinstance(first, engine.LoadError) and isinstance(second, engine.LoadError):
        return second if str(first) == str(second) else None
    return second if first == second else None


def _reload(live: Live, path: str, log, why: str, reading: dict[str, bytes] | engine.LoadError | None = None) -> str:
    """Compile and test one reading of the files (made now if None); swap the set in only if clean.

    What was tried: the files' hash, or the read error. Every refusal is logged (`reload_failed`).
    """
    if reading is None:
        try:
            reading = read_files(path)
        except engine.LoadError as e:
            reading = e
    if isinstance(reading, engine.LoadError):
        log.error("reload_failed", trigger=why, problems=[str(reading)], policy_set_hash=live.policy_set.hash)
        return str(reading)
    tried = set_hash(reading)
    ps, problems = load_tested(path, reading)
    if ps is None:
        log.error("reload_failed", trigger=why, problems=problems, tried_hash=tried, policy_set_hash=live.policy_set.hash)
        return tried
    old = live.swap(ps)
    log.info("reloaded", trigger=why, policy_set_hash=ps.hash, previous=old.hash if old else None)
    return tried


async def _drain(server: grpc.aio.Server, health_servicer, blocking: futures.Executor, grace: float, log) -> int:
    log.info("draining", grace_seconds=grace)
    await health_servicer.enter_graceful_shutdown()  # watchers are told before new calls are refused
    await server.stop(grace)
    from server import validation

    validation.shutdown()  # ValidatePolicy's compiler processes: none outlives the server
    blocking.shutdown(wait=False)
    log.info("stopped")
    return 0


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT names a loopback interface: `localhost` or a loopback IP (127.0.0.0/8, ::1)."""
    host = address.rsplit(":", 1)[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it could resolve anywhere
        return False


# ---- the supervisor (workers > 1) ------------------------------------------------------------


def _worker_main(options: Options, index: int, ready, parent: int) -> None:
    """A worker process's entry point (spawned: a fresh interpreter, no gRPC state inherited)."""
    configure_logging(worker=index)
    sys.exit(_serve_one(options, worker=index, ready=ready, parent=parent))


def _reserve_port(address: str) -> tuple[str, socket.socket | None]:
    """`address` with a concrete port. For port 0, a free port is bound (SO_REUSEPORT, not listening) and the socket kept."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise OSError(f"not HOST:PORT: {address!r}")
    if int(port) != 0:
        return address, None
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family, kind, proto, _, sockaddr = socket.getaddrinfo(bare, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(sockaddr)
    return f"{host}:{sock.getsockname()[1]}", sock


class _Worker:
    def __init__(self, context, options: Options, index: int) -> None:
        self.index = index
        receive, send = context.Pipe(duplex=False)
        self.ready = receive
        self.process = context.Process(target=_worker_main, args=(options, index, send, os.getpid()), name=f"pol-worker-{index}", daemon=False)
        self.process.start()
        send.close()
        self.started = time.monotonic()
        self.state = "starting"  # starting, ready, failed

    def poll_ready(self):
        """("ready", port) or ("failed", status) once the worker says so; None until then."""
        try:
            if self.state == "starting" and self.ready.poll():
                message = self.ready.recv()
                self.state = message[0]
                return message
        except (EOFError, OSError):
            self.state = "failed"
            return ("failed", None)
        return None


def _supervise(options: Options) -> int:
    configure_logging(shared=True)
    log = structlog.get_logger("pol.supervisor")
    ps, problems = load_tested(options.policies)
    if ps is None:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"pol serve: {options.policies}: refusing to start", file=sys.stderr)
        return 1
    try:
        address, reserved = _reserve_port(options.address)
    except OSError as e:
        print(f"pol serve: cannot listen on {options.address}: {e}", file=sys.stderr)
        return 2
    worker_options = replace(options, address=address)
    context = multiprocessing.get_context("spawn")

    signals: collections.deque[str] = collections.deque()
    signal.signal(signal.SIGTERM, lambda *_: signals.append("stop"))
    signal.signal(signal.SIGINT, lambda *_: signals.append("stop"))
    signal.signal(signal.SIGHUP, lambda *_: signals.append("reload"))

    workers = [_Worker(context, worker_options, i) for i in range(options.workers)]
    try:
        # start-up: every worker listening, or none
        deadline = time.monotonic() + 120
        while any(w.state == "starting" for w in workers):
            for w in workers:
                message = w.poll_ready()
                if message is None and w.state == "starting" and not w.process.is_alive():
                    w.state, message = "failed", ("failed", w.process.exitcode)
                if message and message[0] == "failed":
                    _stop_all(workers, 5, log)
                    return message[1] if message[1] in (1, 2) else 1
            if signals and "stop" in signals or time.monotonic() > deadline:
                _stop_all(workers, options.grace, log)
                return 0 if signals else 1
            time.sleep(0.02)
        log.info("supervising", address=address, workers=options.workers, pids=[w.process.pid for w in workers], policy_set_hash=ps.hash)
        print(f"serving on {address}", flush=True)

        restart_at: dict[int, float] = {}
        while True:
            while signals:
                if signals.popleft() == "stop":
                    return _stop_all(workers, options.grace, log)
                for w in workers:
                    if w.process.is_alive():
                        os.kill(w.process.pid, signal.SIGHUP)
            for i, w in enumerate(workers):
                message = w.poll_ready()
                if message:
                    (log.info if message[0] == "ready" else log.error)(f"worker_{message[0]}", worker=i, pid=w.process.pid)
                if i not in restart_at and not w.process.is_alive():
                    w.process.join()
                    lived = time.monotonic() - w.started
                    restart_at[i] = time.monotonic() + (0 if lived > 5 else 1.0)  # a worker that cannot start is retried each second
                    log.warning("worker_exited", worker=i, pid=w.process.pid, exitcode=w.process.exitcode)
                elif i in restart_at and time.monotonic() >= restart_at[i]:
                    del restart_at[i]
                    workers[i] = _Worker(context, worker_options, i)
                    log.info("worker_started", worker=i, pid=workers[i].process.pid)
            time.sleep(0.05)
    finally:
        if reserved is not None:
            reserved.close()


def _stop_all(workers: list[_Worker], grace: float, log) -> int:
    """SIGTERM every worker, wait for them to drain (killing any that outlive `grace` by 10 s); 0 if all exited 0."""
    log.info("draining", grace_seconds=grace, workers=len(workers))
    alive = [w for w in workers if w.process.is_alive()]
    for w in alive:
        os.kill(w.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace + 10
    status = 0
    for w in alive:  # a worker already dead (restart pending) has nothing to drain
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            log.error("worker_killed", worker=w.index, pid=w.process.pid)
            w.process.kill()
            w.process.join()
            status = 1
        elif w.process.exitcode != 0 and not (w.state == "starting" and w.process.exitcode == -signal.SIGTERM):
            status = 1  # (a worker stopped before it was listening had nothing to drain)
    log.info("stopped")
    return status
