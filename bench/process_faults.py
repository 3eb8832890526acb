#!/usr/bin/env python3
"""Process faults under load: a worker killed with SIGKILL, and SIGTERM with calls in flight.

    python bench/process_faults.py                  # 20 rounds of each class
    python bench/process_faults.py --rounds 3 --classes sigkill

Classes:
  sigkill  `pol serve --workers 2` under load from 8 callers (unary and batch, each on its
           own connection); one worker is killed with SIGKILL. The supervisor must start a
           new one, which must serve; the other must serve throughout. A call that fails
           UNAVAILABLE (in flight on the killed worker, or queued in its listening socket)
           is retried, as a client of any server behind a load balancer does: `lost` counts
           the items never decided after 5 tries, `errors` any other failure.
  sigterm  `pol serve --workers 2` with 8 streams of 50 items in flight, each paused half
           way; SIGTERM; then the streams go on. Every item sent before SIGTERM must be
           answered, in order, and the process must exit 0 (`lost`: items unanswered).

tests/test_server_ops.py pins the same behaviour, one round each. Writes one row per class to
bench/results/reliability/process-<class>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402

from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reliability"
OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
CALLERS = 8
TRIES = 5


def content(i: int) -> pb.Content:
    s = struct_pb2.Struct()
    s.update(OFFER)
    return pb.Content(id=f"item-{i}", annotations=s)


class Serve:
    """`pol serve --workers 2` on the shipped policies, its stderr events readable."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "stderr.log"
        with open(self.log, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--policies", "policies", "--address", "127.0.0.1:0", "--workers", "2", "--poll", "0"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
            )
        line = self.process.stdout.readline()
        if not line.startswith("serving on "):
            self.process.kill()
            raise RuntimeError(f"pol serve did not start: {line!r}\n{self.log.read_text()}")
        self.address = line.split()[-1]

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{") and f'"event": "{name}"' in line:
                found.append(json.loads(line))
        return found

    def wait_for(self, name: str, check, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events(name):
                if check(e):
                    return e
            time.sleep(0.05)
        raise RuntimeError(f"no `{name}` event as expected within {timeout} s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        finally:
            self.process.stdout.close()


class Tally:
    def __init__(self) -> None:
        self.calls = self.errors = self.lost = self.retried = 0
        self.notes: list[str] = []
        self.lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


def sigkill_round(tmp: Path, tally: Tally) -> None:
    server = Serve(tmp)
    stop = threading.Event()

    def caller(i: int) -> None:
        with grpc.insecure_channel(server.address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            n = 0
            while not stop.is_set():
                n += 1
                batch = i % 2 == 1
                for attempt in range(TRIES):
                    try:
                        if batch:
                            r = stub.EvaluateBatch(pb.EvaluateBatchRequest(contents=[content(n)] * 20), timeout=10, wait_for_ready=True)
                            ok = all(x.response.verdict == pb.VERDICT_REMOVE for x in r.results) and len(r.results) == 20
                        else:
                            ok = stub.Evaluate(pb.EvaluateRequest(content=content(n)), timeout=10, wait_for_ready=True).verdict == pb.VERDICT_REMOVE
                        tally.add(calls=1, errors=0 if ok else 1)
                        break
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.UNAVAILABLE:
                            tally.add(calls=1, errors=1)
                            break
                        tally.add(retried=1)
                else:
                    tally.add(calls=1, lost=1)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    try:
        pids = server.wait_for("supervising", lambda e: len(e["pids"]) == 2)["pids"]
        for t in threads:
            t.start()
        time.sleep(1.0)
        os.kill(pids[0], signal.SIGKILL)
        new = server.wait_for("worker_started", lambda e: True)["pid"]
        server.wait_for("serving", lambda e: e.get("pid") == new)
        time.sleep(1.0)  # the new worker under load
        if not Path(f"/proc/{pids[1]}").exists():
            tally.add(errors=1)
            tally.notes.append("the other worker died")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        status = server.stop()
    if status != 0:
        tally.add(errors=1)
        tally.notes.append(f"exit status {status}")


def sigterm_round(tmp: Path, tally: Tally) -> None:
    server = Serve(tmp)
    gate, half = threading.Event(), [threading.Event() for _ in range(CALLERS)]
    items = 50

    def requests(i: int):
        for j in range(items):
            if j == items // 2:
                half[i].set()
                gate.wait(60)
            yield pb.EvaluateStreamRequest(request=pb.EvaluateRequest(content=pb.Content(id=f"s{i}-{j}", annotations=content(j).annotations)))

    def stream(i: int) -> None:
        with grpc.insecure_channel(server.address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            try:
                got = [a.result.response.content_id for a in pb_grpc.PolicyServiceStub(channel).EvaluateStream(requests(i), timeout=60)]
            except grpc.RpcError as e:
                got = []
                tally.notes.append(f"stream {i}: {e.code().name}")
            want = [f"s{i}-{j}" for j in range(items)]
            tally.add(calls=len(got), lost=sum(1 for w in want if w not in got), errors=0 if got == want[: len(got)] else 1)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(CALLERS)]
    try:
        for t in threads:
            t.start()
        for h in half:
            h.wait(30)
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while len(server.events("draining")) < 3 and time.monotonic() < deadline:  # the supervisor and both workers
            time.sleep(0.02)
        gate.set()
        for t in threads:
            t.join(60)
        status = server.process.wait(60)
    finally:
        gate.set()
        server.stop()
    if status != 0:
        tally.add(errors=1)
        tally.notes.append(f"exit status {status}")


CLASSES = {
    "sigkill": (sigkill_round, "one of 2 workers killed with SIGKILL per round, under 8 callers (unary, batches of 20)"),
    "sigterm": (sigterm_round, "SIGTERM with 8 streams of 50 items in flight, paused half way, per round"),
}


def run(name: str, rounds: int) -> dict:
    fault, what = CLASSES[name]
    tally = Tally()
    start = time.monotonic()
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix=f"pol-{name}-") as tmp:
            fault(Path(tmp), tally)
    seconds = time.monotonic() - start
    return {
        "class": f"process fault: {name}",
        "inputs": f"{rounds} rounds: {what}",
        "load": f"{tally.calls} calls answered in {seconds:.0f} s; pol serve --workers 2"
        + (f"; {tally.retried} UNAVAILABLE retried (calls in flight on, or queued for, the killed worker)" if name == "sigkill" else ""),
        "faults": f"{rounds} x {'SIGKILL of a worker (restarted by the supervisor)' if name == 'sigkill' else 'SIGTERM, drained, exit 0'}",
        "survived": tally.errors == 0 and tally.lost == 0,
        "errors": tally.errors,
        "lost": tally.lost,
        "command": f"python bench/process_faults.py --classes {name} --rounds {rounds}",
        "notes": tally.notes[:10],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--classes", default=",".join(CLASSES))
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.classes.split(","):
        row = run(name, args.rounds)
        (RESULTS / f"process-{name}.json").write_text(json.dumps(row, indent=2) + "\n")
        failed |= not row["survived"]
        print(f"{row['class']:24} {'survived' if row['survived'] else 'FAILED':8} errors {row['errors']}  lost {row['lost']}  {row['load']}")
        for note in row["notes"]:
            print(f"    {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
