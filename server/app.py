"""The `pol serve` process: load and test the set, serve it, reload it, drain on SIGTERM.

Start-up refuses a set with errors or failing tests (diagnostics or failures on stderr,
exit 1). Once serving, the first line on stdout is `serving on HOST:PORT` (the bound
port, also when asked for port 0). Logs are structlog lines on stderr: JSON, or a
readable form on a terminal; one `decision` line per decision, with no annotation values.

Signals: SIGHUP (and, with polling on, a change under the policy directory) recompiles
the set and runs its tests; only a set with no errors and no failing tests is swapped
in, otherwise the old one keeps serving and the failure is logged. SIGTERM or SIGINT:
health turns NOT_SERVING, new calls are refused, calls in flight get `grace` seconds to
finish, exit 0.
"""

from __future__ import annotations

import collections
import signal
import sys
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import engine
from engine.policyset import read_files, set_hash
from server.gen.pol.v1 import policy_service_pb2 as pb
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc
from server.service import Limits, PolicyService
from server.state import Live

__all__ = ["Options", "configure_logging", "serve"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
LOOPBACK = ("127.", "localhost", "[::1]", "::1")


@dataclass(frozen=True)
class Options:
    policies: str = "policies"
    address: str = "127.0.0.1:50051"
    limits: Limits = Limits()
    threads: int = 32  # concurrent calls (each stream holds one thread)
    grace: float = 10.0  # seconds in-flight calls get after SIGTERM
    poll: float = 1.0  # seconds between checks of the policy directory; 0: only SIGHUP reloads
    plaintext: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None


def configure_logging() -> None:
    """structlog to stderr: JSON lines, or the console renderer on a terminal."""
    renderer = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def load_tested(path: str) -> tuple[engine.PolicySet | None, list[str]]:
    """The set at `path` if it compiles and its tests pass; else None and what went wrong."""
    try:
        result = engine.load_path(path)
    except engine.LoadError as e:
        return None, [str(e)]
    if result.policy_set is None:
        return None, [engine.render_all(result.diagnostics)]
    report = engine.run_tests(result.policy_set)
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
    """Run the server until SIGTERM; the exit status."""
    log = structlog.get_logger("pol.serve")
    ps, problems = load_tested(options.policies)
    if ps is None:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"pol serve: {options.policies}: refusing to start", file=sys.stderr)
        return 1

    live = Live(ps)
    limits = options.limits
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="pol-rpc"),
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_PolicyServiceServicer_to_server(PolicyService(live, limits), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((SERVICE_NAME, health_name, reflection.SERVICE_NAME), server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    credentials = _credentials(options)
    try:
        port = server.add_secure_port(options.address, credentials) if credentials else server.add_insecure_port(options.address)
    except RuntimeError as e:
        print(f"pol serve: cannot listen on {options.address}: {e}", file=sys.stderr)
        return 2
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = options.address.rsplit(":", 1)[0]
    print(f"serving on {host}:{port}", flush=True)
    log.info("serving", address=f"{host}:{port}", tls=credentials is not None, policy_set_hash=ps.hash, policies=list(ps.policy_names))

    signals: collections.deque[str] = collections.deque()  # appended by handlers: no locks in a signal handler
    signal.signal(signal.SIGTERM, lambda *_: signals.append("stop"))
    signal.signal(signal.SIGINT, lambda *_: signals.append("stop"))
    signal.signal(signal.SIGHUP, lambda *_: signals.append("reload"))

    files_hash = set_hash(read_files(options.policies))
    next_poll = time.monotonic() + options.poll
    while True:
        while signals:
            if signals.popleft() == "stop":
                return _drain(server, health_servicer, options.grace, log)
            files_hash = _reload(live, options.policies, log, "SIGHUP")
        if options.poll and time.monotonic() >= next_poll:
            next_poll = time.monotonic() + options.poll
            try:
                current = set_hash(read_files(options.policies))
            except engine.LoadError:
                current = files_hash
            if current != files_hash:
                files_hash = _reload(live, options.policies, log, "change")
        time.sleep(0.05)


def _reload(live: Live, path: str, log, why: str) -> str:
    """Recompile and test the set; swap it in only if clean. The files' hash that was tried."""
    try:
        tried = set_hash(read_files(path))
    except engine.LoadError as e:
        log.error("reload_failed", trigger=why, problems=[str(e)])
        return ""
    ps, problems = load_tested(path)
    if ps is None:
        log.error("reload_failed", trigger=why, problems=problems, policy_set_hash=live.policy_set.hash)
        return tried
    old = live.swap(ps)
    log.info("reloaded", trigger=why, policy_set_hash=ps.hash, previous=old.hash if old else None)
    return tried


def _drain(server: grpc.Server, health_servicer, grace: float, log) -> int:
    log.info("draining", grace_seconds=grace)
    health_servicer.enter_graceful_shutdown()
    done = server.stop(grace)
    done.wait()
    log.info("stopped")
    return 0


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith(LOOPBACK)


