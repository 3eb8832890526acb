#!/usr/bin/env python3
"""A no-op pol.v1.PolicyService: the floor for bench/grpc_load.py.

It speaks the same proto as `pol serve` (so the load generator, its requests and the
wire format are identical) but decides nothing: Evaluate returns a fixed EvaluateResponse
(verdict allow, request and content ids echoed), EvaluateBatch one such response per item,
EvaluateStream one per message. What it measures is what grpcio itself costs here.

Server setup mirrors `server.app.serve` (server/app.py builds its server inline, so
there is no function to import): a `grpc.aio` server on an asyncio event loop with
coroutine handlers, the same max message sizes, the asyncio health service and
reflection. No decision log is written. With `--workers N` (N > 1) it runs N processes that each bind the same
port with `grpc.so_reuseport` = 1 (the kernel spreads connections over them); with one
worker `grpc.so_reuseport` is 0, as in `pol serve`.

    python bench/noop_server.py --address 127.0.0.1:50099 --workers 2

The first stdout line is `serving on HOST:PORT` once every worker is listening. SIGTERM
or SIGINT stops every worker. A benchmark helper, not a product: loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

MAX_MESSAGE_BYTES = 4 << 20  # server.service.Limits().max_message_bytes


def _servicer_class():
    from server.gen.pol.v1 import policy_service_pb2 as pb
    from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc

    allow = pb.VERDICT_ALLOW

    class NoopService(pb_grpc.PolicyServiceServicer):
        async def Evaluate(self, request, context):
            return pb.EvaluateResponse(request_id=request.request_id or "noop", content_id=request.content.id,
                                       verdict=allow, policy_set_hash="noop")

        async def EvaluateBatch(self, request, context):
            rid = request.request_id or "noop"
            return pb.EvaluateBatchResponse(results=[
                pb.EvaluateBatchResult(response=pb.EvaluateResponse(request_id=rid, content_id=c.id, verdict=allow,
                                                                    policy_set_hash="noop"))
                for c in request.contents
            ])

        async def EvaluateStream(self, request_iterator, context):
            async for item in request_iterator:
                r = item.request
                yield pb.EvaluateStreamResponse(result=pb.EvaluateBatchResult(response=pb.EvaluateResponse(
                    request_id=r.request_id or "noop", content_id=r.content.id, verdict=allow, policy_set_hash="noop")))

    return NoopService, pb, pb_grpc


def serve_one(address: str, reuseport: bool, ready=None) -> None:
    """One worker: serve until SIGTERM/SIGINT."""
    asyncio.run(_serve(address, reuseport, ready))


async def _serve(address: str, reuseport: bool, ready) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio
    from grpc_reflection.v1alpha import reflection

    NoopService, pb, pb_grpc = _servicer_class()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if reuseport else 0),
        ],
    )
    pb_grpc.add_PolicyServiceServicer_to_server(NoopService(), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    name = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
    reflection.enable_server_reflection((name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                         reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    await server.start()
    for n in ("", name):
        await health_servicer.set(n, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if ready is not None:
        ready.put(port)
    else:
        print(f"serving on {address.rsplit(':', 1)[0]}:{port}", flush=True)
    await stop.wait()
    await server.stop(0.5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", default="127.0.0.1:50099", metavar="HOST:PORT")
    ap.add_argument("--workers", type=int, default=1, metavar="N")
    args = ap.parse_args(argv)
    host, port = args.address.rsplit(":", 1)
    if not host.startswith(("127.", "localhost")):
        ap.error("loopback addresses only")
    if args.workers <= 1:
        serve_one(args.address, reuseport=False)
        return 0
    if port == "0":
        ap.error("--workers > 1 needs an explicit port (SO_REUSEPORT workers share it)")
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    procs = [ctx.Process(target=serve_one, args=(args.address, True, ready), daemon=True)
             for _ in range(args.workers)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=30)
        print(f"serving on {args.address}", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while not stop.wait(0.2):
            if not all(p.is_alive() for p in procs):
                print("noop_server: a worker died", file=sys.stderr)
                return 1
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(3)
            if p.is_alive():
                p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
