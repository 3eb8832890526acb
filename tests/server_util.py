"""Start `pol serve` as a real subprocess, the way users do, and wait until it is SERVING."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT


@dataclass
class Server:
    process: subprocess.Popen
    address: str
    log: Path  # the server's stderr: structlog JSON lines

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            self.process.stdout.close()

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


def launch(log: Path, *args: str, policies: Path | str = "policies", timeout: float = 30, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`pol serve --address 127.0.0.1:0 ARGS`, stderr into `log`, `env` added to the environment; the process and the address it printed."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--policies", str(policies), "--address", "127.0.0.1:0", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not first or not first[0].startswith("serving on "):
        process.kill()
        process.wait()
        raise AssertionError(f"server did not start: {first!r}\n{log.read_text()}")
    return process, first[0].split()[-1]


def serving(channel, timeout: float) -> bool:
    """Wait until the health service on `channel` says SERVING; False if it never does."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                return True
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def start_server(log: Path, *args: str, policies: Path | str = "policies", timeout: float = 30, env: dict | None = None) -> Server:
    """`pol serve --address 127.0.0.1:0 ARGS`; read `serving on HOST:PORT`; wait for health SERVING."""
    import grpc

    server = Server(*launch(log, *args, policies=policies, timeout=timeout, env=env), log)
    with grpc.insecure_channel(server.address) as channel:
        if not serving(channel, timeout):
            server.stop()
            raise AssertionError("server never became SERVING")
    return server
