#!/usr/bin/env python3
"""gRPC load benchmark: `pol serve` against a no-op PolicyService with the same process model.

Run from the repo root:

    python bench/grpc_load.py                 # 5 s per scenario (about 2 minutes in all)
    python bench/grpc_load.py --quick         # smoke run: 1 s per scenario
    python bench/grpc_load.py --modes unary,batch --workers 1 --duration 10

Servers: the no-op service (bench/noop_server.py: the same pol.v1.PolicyService proto and
the same server options, grpc.aio event loop and process model, but a fixed answer and no
decision) is the floor, what grpcio itself costs on this machine; `pol serve` on the shipped
policies/ is measured the same way. Each runs with 1 and 2 worker processes (`--workers`;
2 workers share one port through SO_REUSEPORT). If `pol serve --workers 2` is refused
(the flag is not implemented yet), that row is reported as pending.

Modes: unary (one Evaluate per item), batch (EvaluateBatch of `--batch` = 100 items) and
stream (EvaluateStream; each stream keeps at most `--window` messages outstanding).

Load: `--clients` client processes (multiprocessing, spawn), each running grpc.aio on
`--channels` channels (separate TCP connections, so SO_REUSEPORT can spread them) with
`--concurrency` unary calls, `--batch-concurrency` batch calls or `--streams` streams in
flight. Requests are the smuggling corpus of bench/corpus.py (1,000 items, seed 0),
converted to protobuf and serialised once before timing; responses are not parsed in the
timed loop (a sample is parsed and checked before it). Each scenario: a warm-up, then
`--duration` seconds; calls (or stream messages) that complete inside that window are
counted; latency is per call (unary,
batch) or per message from write to its answer (stream). Client and server share this
machine's cores (2 here), so every figure is a figure for the pair; the no-op row pays the
same client cost, which is why pol is read as a percentage of it.

Targets (from the issue): pol unary and stream at >= 80% of the no-op rate for the same
mode and worker count; pol batch at >= 150,000 decisions/s (best worker count).

Results: a table on stdout and bench/results/grpc_load.json (git-ignored). Loopback only;
every server is started in its own process group and killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
MODES = ("unary", "batch", "stream")
CORPUS_SIZE = 1000
LATENCY_CAP = 300_000          # latency samples kept per client process
TARGET_RATIO = 0.80            # pol unary / stream vs no-op
TARGET_BATCH_DPS = 150_000     # pol batch decisions/s
EVALUATE = "/pol.v1.PolicyService/Evaluate"
EVALUATE_BATCH = "/pol.v1.PolicyService/EvaluateBatch"
EVALUATE_STREAM = "/pol.v1.PolicyService/EvaluateStream"


class Pending(Exception):
    """The server cannot run this configuration yet (e.g. `--workers 2` not implemented)."""


# ============================================================================================
# Servers
# ============================================================================================

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess in its own process group; stdout/stderr go to files in `workdir`."""

    def __init__(self, name: str, cmd: list[str], address: str, workdir: Path, env: dict | None = None,
                 ready_text: str | None = "serving on", health: bool = True, start_timeout: float = 60.0) -> None:
        self.name, self.cmd, self.address = name, cmd, address
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        self.ready_text, self.health, self.start_timeout = ready_text, health, start_timeout
        self.env = env
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=self.env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def tail(self, n: int = 2000) -> str:
        text = ""
        for p in (self.out_path, self.err_path):
            with contextlib.suppress(OSError), open(p, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                text += f.read().decode("utf-8", "replace")
        return text.strip()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while self.ready_text:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError):
                if self.ready_text in self.out_path.read_text(errors="replace"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {self.start_timeout:.0f} s: {self.tail()}")
            time.sleep(0.05)
        if self.health:
            wait_serving(self.address, max(1.0, deadline - time.monotonic()))
        else:
            wait_port(self.address, max(1.0, deadline - time.monotonic()), self.proc)

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        # SO_REUSEPORT children may outlive their parent briefly: sweep the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)


def wait_port(address: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{address}: nothing listening after {timeout:.0f} s")
        time.sleep(0.05)


def wait_serving(address: str, timeout: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address}: not SERVING after {timeout:.0f} s")
            time.sleep(0.1)


def pol_command(policies: str | Path, address: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "cli", "serve", "--policies", str(policies), "--address", address,
            "--workers", str(workers), "--grace", "1"]


def start_pol(policies: str | Path, workers: int, workdir: Path, tag: str = "pol") -> ServerProcess:
    """`pol serve` on a free loopback port; Pending if it refuses `--workers N`."""
    address = f"{HOST}:{free_port()}"
    server = ServerProcess(f"{tag}-w{workers}", pol_command(policies, address, workers), address, workdir)
    try:
        server.start()
    except RuntimeError as e:
        if workers > 1 and "--workers" in str(e):
            raise Pending(f"pol serve --workers {workers}: {str(e).splitlines()[-1]}") from None
        raise
    return server


def start_noop(workers: int, workdir: Path) -> ServerProcess:
    address = f"{HOST}:{free_port()}"
    cmd = [sys.executable, str(HERE / "noop_server.py"), "--address", address, "--workers", str(workers)]
    return ServerProcess(f"noop-w{workers}", cmd, address, workdir).__enter__()


def pol_workers_supported() -> bool:
    """Whether this checkout's `pol serve` accepts --workers > 1 (its help text says so)."""
    out = subprocess.run([sys.executable, "-m", "cli", "serve", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    return "--workers" in out.stdout and "only 1" not in out.stdout


# ============================================================================================
# Work: the requests one scenario sends (built inside each client process)
# ============================================================================================

@dataclass
class Work:
    method: str                      # full gRPC method path
    requests: list[bytes]            # serialised request messages, sent round-robin
    items: int                       # decisions per request (or per stream message)
    streaming: bool = False
    check: Callable[[bytes], int] | None = None   # parse one response; number of item errors
    describe: str = ""


def pol_contents(case: str = "smuggling", n: int = CORPUS_SIZE):
    from google.protobuf import struct_pb2

    from bench import corpus as corpus_mod
    from server.gen.pol.v1 import policy_service_pb2 as pb

    items = corpus_mod.smuggling_corpus(n, seed=0) if case == "smuggling" else corpus_mod.generated_corpus(int(case), n)
    out = []
    for i, a in enumerate(items):
        s = struct_pb2.Struct()
        s.update(a)
        out.append(pb.Content(id=f"item-{i}", annotations=s))
    return out


def pol_work(mode: str, case: str = "smuggling", batch: int = 100) -> Work:
    """Requests for `pol serve` (and the no-op service): the `case` corpus (bench/corpus.py)."""
    from server.gen.pol.v1 import policy_service_pb2 as pb

    contents = pol_contents(case)
    if mode == "unary":
        def check(raw: bytes) -> int:
            r = pb.EvaluateResponse.FromString(raw)
            return int(r.verdict == pb.VERDICT_UNSPECIFIED)
        return Work(EVALUATE, [pb.EvaluateRequest(content=c).SerializeToString() for c in contents], 1, check=check)
    if mode == "batch":
        reqs = [pb.EvaluateBatchRequest(contents=contents[i:i + batch]).SerializeToString()
                for i in range(0, len(contents) - batch + 1, batch)]

        def check(raw: bytes) -> int:
            r = pb.EvaluateBatchResponse.FromString(raw)
            return sum(1 for x in r.results if x.WhichOneof("result") != "response") + abs(len(r.results) - batch)
        return Work(EVALUATE_BATCH, reqs, batch, check=check)
    if mode == "stream":
        def check(raw: bytes) -> int:
            r = pb.EvaluateStreamResponse.FromString(raw)
            return int(r.result.WhichOneof("result") != "response")
        reqs = [pb.EvaluateStreamRequest(request=pb.EvaluateRequest(content=c)).SerializeToString() for c in contents]
        return Work(EVALUATE_STREAM, reqs, 1, streaming=True, check=check)
    raise ValueError(mode)


def _load_builder(spec: tuple[str, str, dict]) -> Work:
    where, func, kwargs = spec
    if where.endswith(".py"):
        s = importlib.util.spec_from_file_location(f"_bench_builder_{abs(hash(where))}", where)
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, func)(**kwargs)


# ============================================================================================
# Client processes
# ============================================================================================

@dataclass
class LoadConfig:
    duration: float = 5.0
    warmup: float = 1.0
    clients: int = 2
    channels: int = 4
    concurrency: int = 32        # unary calls in flight per client process
    batch_concurrency: int = 4   # batch calls in flight per client process
    streams: int = 4             # streams per client process
    window: int = 32             # outstanding messages per stream
    timeout: float = 10.0        # per unary / batch call


def _ident(b: bytes) -> bytes:
    return b


async def _client_async(address: str, work: Work, cfg: LoadConfig, mode: str, index: int, ready, go) -> dict:
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(address, options=options + [("bench.channel", f"{index}-{k}")])
                for k in range(cfg.channels)]
    try:
        if work.streaming:
            calls = [ch.stream_stream(work.method, request_serializer=_ident, response_deserializer=_ident) for ch in channels]
        else:
            calls = [ch.unary_unary(work.method, request_serializer=_ident, response_deserializer=_ident) for ch in channels]
        # Before timing: connect every channel and check real answers.
        check_errors = 0
        for k, call in enumerate(calls):
            if work.streaming:
                stream = call(timeout=cfg.timeout)
                for req in work.requests[:5]:
                    await stream.write(req)
                await stream.done_writing()
                async for raw in stream:
                    check_errors += work.check(raw) if work.check else 0
            else:
                for req in work.requests[k:k + 3]:
                    raw = await call(req, timeout=cfg.timeout)
                    check_errors += work.check(raw) if work.check else 0
        ready.put(index)
        while not go.wait(0.01):
            await asyncio.sleep(0)
        t0 = time.perf_counter()
        start = t0 + cfg.warmup
        end = start + cfg.duration
        lat: list[float] = []
        counted = [0]
        errors: list[str] = []
        reqs, n = work.requests, len(work.requests)

        def record(t_send: float, t_done: float) -> None:
            if start <= t_done < end:  # completions inside the window
                counted[0] += 1
                if len(lat) < LATENCY_CAP:
                    lat.append(t_done - t_send)

        async def unary_worker(w: int) -> None:
            call = calls[w % len(calls)]
            i = (w * 37 + index * 101) % n
            while True:
                t = time.perf_counter()
                if t >= end:
                    return
                try:
                    await call(reqs[i], timeout=cfg.timeout)
                except grpc.RpcError as e:
                    if len(errors) < 5:
                        errors.append(f"{e.code().name}: {e.details()}")
                    if len(errors) >= 5:
                        return
                    continue
                record(t, time.perf_counter())
                i = (i + 1) % n

        async def stream_worker(w: int) -> None:
            call = calls[w % len(calls)](timeout=cfg.warmup + cfg.duration + 60)
            window = asyncio.Semaphore(cfg.window)
            sent: list[float] = []
            head = [0]

            async def writer() -> None:
                i = (w * 37 + index * 101) % n
                while time.perf_counter() < end:
                    await window.acquire()
                    sent.append(time.perf_counter())
                    await call.write(reqs[i])
                    i = (i + 1) % n
                await call.done_writing()

            async def reader() -> None:
                async for _ in call:
                    t = sent[head[0]]
                    head[0] += 1
                    window.release()
                    record(t, time.perf_counter())

            try:
                await asyncio.gather(writer(), reader())
            except grpc.RpcError as e:
                errors.append(f"{e.code().name}: {e.details()}")

        if work.streaming:
            workers = [stream_worker(w) for w in range(cfg.streams)]
        else:
            k = cfg.batch_concurrency if work.items > 1 else cfg.concurrency
            workers = [unary_worker(w) for w in range(k)]
        await asyncio.wait_for(asyncio.gather(*workers), timeout=cfg.warmup + cfg.duration + 90)
        return {"count": counted[0], "lat": lat, "errors": errors, "check_errors": check_errors}
    finally:
        for ch in channels:
            await ch.close()


def _client_main(address: str, spec, cfg: LoadConfig, mode: str, index: int, ready, go, results) -> None:
    try:
        work = _load_builder(spec)
        out = asyncio.run(_client_async(address, work, cfg, mode, index, ready, go))
        out["items"] = work.items
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        out = {"fatal": f"{type(e).__name__}: {e}"}
        ready.put(index)
    results.put((index, out))


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def run_load(address: str, spec: tuple[str, str, dict], mode: str, cfg: LoadConfig) -> dict:
    """Drive `cfg.clients` client processes at `address`; aggregate their counts and latencies."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client_main, args=(address, spec, cfg, mode, i, ready, go, results), daemon=True)
             for i in range(cfg.clients)]
    for p in procs:
        p.start()
    outs: dict[int, dict] = {}
    try:
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        limit = time.monotonic() + cfg.warmup + cfg.duration + 120
        while len(outs) < len(procs) and time.monotonic() < limit:
            with contextlib.suppress(Exception):
                i, out = results.get(timeout=1)
                outs[i] = out
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(2)
    fatal = [o["fatal"] for o in outs.values() if "fatal" in o]
    if fatal or len(outs) < len(procs):
        return {"error": "; ".join(fatal) or "client process timed out"}
    count = sum(o["count"] for o in outs.values())
    items = next(iter(outs.values()))["items"]
    lat = sorted(x for o in outs.values() for x in o["lat"])
    errors = [e for o in outs.values() for e in o["errors"]]
    rps = count / cfg.duration
    return {
        "requests_per_s": rps,
        "decisions_per_s": rps * items,
        "items_per_request": items,
        "calls": count,
        "p50_ms": percentile(lat, 0.50) * 1000 if lat else None,
        "p99_ms": percentile(lat, 0.99) * 1000 if lat else None,
        "mean_ms": statistics.fmean(lat) * 1000 if lat else None,
        "check_item_errors": sum(o["check_errors"] for o in outs.values()),
        "rpc_errors": errors[:5],
    }


# ============================================================================================
# Reporting
# ============================================================================================

def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def git_commit() -> str | None:
    with contextlib.suppress(Exception):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False).stdout.strip() or None
    return None


def machine_info() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "commit": git_commit(), "grpcio": _grpc_version()}


def _grpc_version() -> str | None:
    with contextlib.suppress(Exception):
        import grpc
        return grpc.__version__
    return None


def print_table(rows: list[dict], title: str) -> None:
    head = ("server", "mode", "workers", "requests/s", "decisions/s", "p50 ms", "p99 ms", "% of no-op", "note")
    lines = [head]
    for r in rows:
        pct = r.get("pct_of_noop")
        lines.append((r["server"], r["mode"], str(r["workers"]), fmt_rate(r.get("requests_per_s")), fmt_rate(r.get("decisions_per_s")),
                      fmt_ms(r.get("p50_ms")), fmt_ms(r.get("p99_ms")), "-" if pct is None else f"{pct:.0f}%",
                      r.get("note", "")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    print(title)
    for j, line in enumerate(lines):
        print("  ".join(c.rjust(w) if 2 < i < 8 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


# ============================================================================================
# Main
# ============================================================================================

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s scenarios, short warm-up")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per scenario (default 5)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default: 1, 0.3 with --quick)")
    ap.add_argument("--modes", default=",".join(MODES), help="unary,batch,stream")
    ap.add_argument("--workers", default="1,2", help="server worker counts (default 1,2)")
    ap.add_argument("--servers", default="noop,pol", help="noop,pol")
    ap.add_argument("--policies", default=str(ROOT / "policies"), help="policy set for pol serve (default: policies/)")
    ap.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    ap.add_argument("--channels", type=int, default=4, help="channels (connections) per client process (default 4)")
    ap.add_argument("--concurrency", type=int, default=32, help="unary calls in flight per client process (default 32)")
    ap.add_argument("--batch", type=int, default=100, help="items per EvaluateBatch (default 100)")
    ap.add_argument("--batch-concurrency", type=int, default=4, help="batch calls in flight per client process (default 4)")
    ap.add_argument("--streams", type=int, default=4, help="streams per client process (default 4)")
    ap.add_argument("--window", type=int, default=32, help="outstanding messages per stream (default 32)")
    ap.add_argument("--out", default=str(HERE / "results" / "grpc_load.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.duration = 1.0
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 1.0
    args.modes = [m for m in args.modes.split(",") if m]
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.servers = [s for s in args.servers.split(",") if s]
    if not set(args.modes) <= set(MODES):
        ap.error(f"--modes: choose from {','.join(MODES)}")
    if not (0 < args.duration <= 600):
        ap.error("--duration: 0 < seconds <= 600")
    if not (1 <= args.clients <= 8):
        ap.error("--clients: 1 to 8")
    return args


def load_config(args) -> LoadConfig:
    return LoadConfig(duration=args.duration, warmup=args.warmup, clients=args.clients, channels=args.channels,
                      concurrency=args.concurrency, batch_concurrency=args.batch_concurrency, streams=args.streams,
                      window=args.window)


def measure_server(server_name: str, workers: int, modes: list[str], cfg: LoadConfig, workdir: Path, args,
                   spec_for: Callable[[str], tuple] | None = None) -> list[dict]:
    """Start one server (noop or pol) with `workers`, run every mode against it, stop it."""
    rows = []
    base = {"server": server_name, "workers": workers}
    try:
        server = start_noop(workers, workdir) if server_name == "noop" else start_pol(args.policies, workers, workdir)
    except Pending as e:
        return [{**base, "mode": m, "pending": str(e), "note": "pending: --workers not implemented yet"} for m in modes]
    except RuntimeError as e:
        return [{**base, "mode": m, "error": str(e)[:2000], "note": "server failed to start"} for m in modes]
    try:
        for mode in modes:
            spec = spec_for(mode) if spec_for else ("bench.grpc_load", "pol_work", {"mode": mode, "batch": args.batch})
            print(f"  {server_name} workers={workers} {mode} ...", end="", flush=True, file=sys.stderr)
            r = run_load(server.address, spec, mode, cfg)
            print(" " + (fmt_rate(r.get("decisions_per_s")) + " decisions/s" if "error" not in r else r["error"]), file=sys.stderr)
            note = ""
            if r.get("check_item_errors"):
                note = f"{r['check_item_errors']} item errors in checked sample"
            if r.get("rpc_errors"):
                note = (note + "; " if note else "") + "rpc errors: " + r["rpc_errors"][0]
            rows.append({**base, "mode": mode, **r, "note": r.get("error", note)})
    finally:
        server.stop()
    return rows


def evaluate_targets(rows: list[dict]) -> list[dict]:
    def row(server, mode, workers):
        return next((r for r in rows if r["server"] == server and r["mode"] == mode and r["workers"] == workers
                     and r.get("calls")), None)  # no completed call: not measured

    for r in rows:
        if r["server"] == "pol" and r.get("decisions_per_s") is not None:
            n = row("noop", r["mode"], r["workers"])
            if n and n["decisions_per_s"]:
                r["pct_of_noop"] = 100 * r["decisions_per_s"] / n["decisions_per_s"]
    targets = []
    workers = sorted({r["workers"] for r in rows})
    for mode in ("unary", "stream"):
        for w in workers:
            p, n = row("pol", mode, w), row("noop", mode, w)
            pend = next((r for r in rows if r["server"] == "pol" and r["mode"] == mode and r["workers"] == w and r.get("pending")), None)
            t = {"target": f"pol {mode} >= {TARGET_RATIO:.0%} of no-op, {w} worker(s)"}
            if p and n:
                ratio = p["decisions_per_s"] / n["decisions_per_s"]
                t.update(value=f"{ratio:.0%}", result="PASS" if ratio >= TARGET_RATIO else "FAIL")
            else:
                t.update(value="-", result="PENDING" if pend else "NOT RUN")
            targets.append(t)
    batch = [r for r in rows if r["server"] == "pol" and r["mode"] == "batch" and r.get("decisions_per_s") is not None]
    t = {"target": f"pol batch >= {TARGET_BATCH_DPS:,} decisions/s (best worker count)"}
    if batch:
        best = max(batch, key=lambda r: r["decisions_per_s"])
        t.update(value=f"{best['decisions_per_s']:,.0f} ({best['workers']} worker(s))",
                 result="PASS" if best["decisions_per_s"] >= TARGET_BATCH_DPS else "FAIL")
        if any(r["server"] == "pol" and r["mode"] == "batch" and r.get("pending") for r in rows):
            t["note"] = "2-worker pol batch pending"
    else:
        t.update(value="-", result="NOT RUN")
    targets.append(t)
    return targets


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args)
    print(f"pol gRPC load benchmark  (python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"{args.clients} client processes x {args.channels} channels, {cfg.duration:g} s per scenario after "
          f"{cfg.warmup:g} s warm-up; client and server share the machine)", flush=True)
    if 2 in args.workers and "pol" in args.servers and not pol_workers_supported():
        print("note: `pol serve --help` says only 1 worker is supported: 2-worker pol rows are pending", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pol-grpc-load-") as tmp:
        workdir = Path(tmp)
        for w in args.workers:
            for s in args.servers:
                rows += measure_server(s, w, args.modes, cfg, workdir, args)
    targets = evaluate_targets(rows)
    order = {m: i for i, m in enumerate(MODES)}
    rows.sort(key=lambda r: (order[r["mode"]], r["workers"], r["server"] != "noop"))
    print()
    print_table(rows, "Results (decisions/s = requests/s x items per request; latency per call, or per stream message):")
    print()
    print("Targets:")
    for t in targets:
        print(f"  {t['result']:8} {t['target']}: {t['value']}" + (f"  ({t['note']})" if t.get("note") else ""))
    report = {
        "benchmark": "grpc_load",
        "machine": machine_info(),
        "config": {k: v for k, v in vars(cfg).items()} | {"batch": args.batch, "policies": str(args.policies),
                                                          "corpus": f"bench.corpus.smuggling_corpus({CORPUS_SIZE}, seed=0)"},
        "rows": [{k: v for k, v in r.items()} for r in rows],
        "targets": targets,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
