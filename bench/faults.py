#!/usr/bin/env python3
"""Faults during reload: a broken or half-written policy set never goes live, and no call fails.

    python bench/faults.py                         # 50 rounds of every class, pol serve --workers 2
    python bench/faults.py --rounds 5 --classes vanish,unreadable --workers 1

A round of a class takes the policy directory through a sequence of states while client
threads call Evaluate non-stop, each on its own connection. Each state is held until every
worker has logged its outcome, so no state goes unseen: a broken state must be refused
(`reload_failed` naming the problem, the old set still serving); the last state of a round
is a new valid version, which must go live on every worker (`reloaded`). Every answer is
checked against the version whose hash it carries; an error is a failed call, a hash that
is no valid version written (a broken set went live), a wrong reason, or an older version
after a newer one on the same connection.

Classes:
  vanish      the directory is deleted (rm -rf), recreated empty, refilled file by file;
              then renamed away, changed, renamed back
  unreadable  the test file becomes a FIFO, a broken symlink, a directory, and (not as root,
              where mode 000 does not stop reads) mode 000; refused on a poll and on SIGHUP
  half        an editor's save (truncate; pause; half the file; pause; the rest) of the test
              file and of the policy; a `git checkout` (each file unlinked, then written, in
              index order) where for a while the schema and the policy disagree
  content     invalid UTF-8, an empty file, a 20 MB garbage file, a 5 MB valid file, a file
              name that is not UTF-8

The test file is the one broken where it matters: without it the rest is a valid set that
would go live. tests/test_reload_faults.py runs one round of each class. Writes one row per
class to bench/results/reliability/faults-<class>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402

from engine.policyset import read_files, set_hash  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reliability"
POLICY, TESTS, SCHEMA = "human_smuggling.pol", "human_smuggling_test.pol", "schema.pol"
REASON = "Offering or facilitating human smuggling services is prohibited."
OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
STEP_TIMEOUT = 30.0  # seconds a state may take to be refused or go live on every worker (normally < 1)

_SHIPPED = read_files(ROOT / "policies")


def reason(n: int) -> str:
    return f"{REASON} (v{n})"


def version(n: int, probe: int = 0, pad: int = 0) -> dict[str, bytes]:
    """The shipped set as version `n`, its offer rule's reason ending "(vN)".

    Plus a schema field `probe_P` with a rule and a test case using it, so changing P changes
    all three files (and any mix of two P's fails to check); and `pad` bytes of comment.
    """
    schema = _SHIPPED[SCHEMA].decode().rstrip().removesuffix("}")
    schema += f"\n  # Renamed by the fault benchmarks to change schema, policy and tests at once.\n  probe_{probe}: bool = false\n}}\n"
    rule = f'  rule probe_{probe} {{\n    when probe_{probe} and topic == "weapons"\n    then remove\n    because "Probe {probe}."\n  }}\n\n'
    policy = _SHIPPED[POLICY].decode().replace(REASON, reason(n)).replace("  otherwise allow", rule + "  otherwise allow")
    policy += ("#" + "x" * 78 + "\n") * (pad // 80)
    tests = _SHIPPED[TESTS].decode().rstrip().removesuffix("}")
    tests += f'\n  case "probe {probe}" {{\n    given {{ topic: "weapons", intent: "other", confidence: 0.5, probe_{probe}: true }}\n    expect remove by probe_{probe}\n  }}\n}}\n'
    return {SCHEMA: schema.encode(), POLICY: policy.encode(), TESTS: tests.encode()}


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.parent.parent / f".{path.name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


class StepFailed(AssertionError):
    """A state was not refused, or a version did not go live, on every worker in time (or a refusal left the wrong set serving)."""

    def __init__(self, message: str, live: bool) -> None:
        super().__init__(message)
        self.live = live  # a valid version that never went live: a lost reload


class Log:
    """The server's stderr: reload events, read incrementally (decision lines are skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[tuple[int, dict]] = []  # (byte offset, event)

    def read(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        at = 0
        while (end := data.find(b"\n", at)) != -1:  # a line still being written is read next time
            line = data[at:end]
            if line.startswith(b"{") and b'"event": "reload' in line:
                self.events.append((self.offset + at, json.loads(line)))
            at = end + 1
        self.offset += at

    def mark(self) -> int:
        """A position in the log: events after it happened after this call."""
        return self.path.stat().st_size

    def since(self, mark: int, name: str) -> list[dict]:
        self.read()
        return [e for at, e in self.events if at >= mark and e["event"] == name]


class Callers:
    """Client threads calling Evaluate non-stop, each on its own connection, checking every answer."""

    def __init__(self, address: str, expected: dict[str, tuple[int, str]], threads: int) -> None:
        self.address = address
        self.expected = expected  # set hash -> (version number, offer reason); grows as versions are written
        self.stop = threading.Event()
        self.calls = [0] * threads
        self.failures = 0
        self.errors: list[str] = []  # the first few failures, described
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"caller-{i}") for i in range(threads)]

    def __enter__(self) -> Callers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, i: int) -> None:
        annotations = struct_pb2.Struct()
        annotations.update(OFFER)
        request = pb.EvaluateRequest(content=pb.Content(id=f"c{i}", annotations=annotations))
        last = -1
        with grpc.insecure_channel(self.address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            while not self.stop.is_set():
                try:
                    r = stub.Evaluate(request, timeout=10)
                except grpc.RpcError as e:
                    self._fail(f"caller {i}: {e.code().name}: {e.details()}")
                    continue
                self.calls[i] += 1
                self.seen.add(r.policy_set_hash)
                known = self.expected.get(r.policy_set_hash)
                if known is None:
                    self._fail(f"caller {i}: answered by {r.policy_set_hash}, no valid version written: a broken set went live")
                elif (r.verdict, r.rule, r.justifications[0].reason) != (pb.VERDICT_REMOVE, "offer_smuggling", known[1]):
                    self._fail(f"caller {i}: wrong answer from v{known[0]}: {r.verdict} {r.rule} {r.justifications[0].reason!r}")
                elif known[0] < last:
                    self._fail(f"caller {i}: v{known[0]} after v{last} on the same connection")
                else:
                    last = known[0]

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures += 1
            if len(self.errors) < 20:
                self.errors.append(what)


class Rig:
    """A running `pol serve` (supervisor pid, address, stderr log) on `policies`, and the versions written to it."""

    def __init__(self, address: str, pid: int, log: Path, policies: Path, workers: int, files: dict[str, bytes]) -> None:
        self.address, self.pid, self.policies, self.workers = address, pid, policies, workers
        self.log = Log(log)
        self.n, self.probe = 0, 0
        self.current = files  # the version live on every worker
        self.expected: dict[str, tuple[int, str]] = {set_hash(files): (0, reason(0))}
        self.refusals = 0  # broken states refused by every worker
        self.versions = 0  # new versions live on every worker
        self.status: int | None = None  # pol serve's exit status, once stopped

    def callers(self, threads: int) -> Callers:
        return Callers(self.address, self.expected, threads)

    def next_version(self, *, probe: bool = False, pad: int = 0) -> dict[str, bytes]:
        """A new valid version (registered as a valid answer before any of it is written)."""
        self.n += 1
        self.probe += probe
        files = version(self.n, self.probe, pad)
        self.expected[set_hash(files)] = (self.n, reason(self.n))
        return files

    def deploy(self, files: dict[str, bytes]) -> None:
        """Write `files` as a deploy tool does: each changed file by rename; others removed."""
        for name, data in files.items():
            if not (self.policies / name).is_file() or (self.policies / name).read_bytes() != data:
                write_atomic(self.policies / name, data)
        for p in self.policies.iterdir():
            if p.name not in files:
                os.remove(p)

    def mark(self) -> int:
        return self.log.mark()

    def sighup(self) -> None:
        os.kill(self.pid, signal.SIGHUP)

    def _every_worker(self, mark: int, name: str, match: Callable[[dict], bool], what: str, live: bool) -> list[dict]:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            found = [e for e in self.log.since(mark, name) if match(e)]
            if len({e.get("worker") for e in found}) >= self.workers:
                return found
            if time.monotonic() > deadline:
                raise StepFailed(f"{what}: not seen from every worker within {STEP_TIMEOUT:.0f} s; seen: {found}", live)
            time.sleep(0.02)

    def refused(self, mark: int, *, files: dict[str, bytes] | None = None, text: str = "", trigger: str = "change") -> list[dict]:
        """Wait until every worker refused a state (the `files` tried, or a read error naming `text`) and kept the live set."""
        tried = set_hash(files) if files is not None else None
        live = set_hash(self.current)

        def match(e: dict) -> bool:
            return e.get("trigger") == trigger and (tried is None or e.get("tried_hash") == tried) and text.lower() in "\n".join(e["problems"]).lower()

        found = self._every_worker(mark, "reload_failed", match, f"refusal ({trigger}, {text or tried})", live=False)
        if any(e["policy_set_hash"] != live for e in found):
            raise StepFailed(f"refused, but not serving the live set: {found}", live=False)
        self.refusals += 1
        return found

    def live(self, mark: int, files: dict[str, bytes]) -> None:
        """Wait until every worker has reloaded `files`."""
        want = set_hash(files)
        self._every_worker(mark, "reloaded", lambda e: e["policy_set_hash"] == want, f"v{self.expected[want][0]} going live", live=True)
        self.current = files
        self.versions += 1

    def step_forward(self) -> None:
        """Deploy the next version and wait until it is live."""
        files = self.next_version()
        mark = self.mark()
        self.deploy(files)
        self.live(mark, files)


# ---- the fault classes: one round each ------------------------------------------------------


def vanish(rig: Rig) -> None:
    """rm -rf; recreated empty; refilled file by file. Renamed away; changed; renamed back."""
    path = rig.policies
    mark = rig.mark()
    shutil.rmtree(path)
    rig.refused(mark, text="no such file or directory")
    mark = rig.mark()
    path.mkdir()
    rig.refused(mark, files={}, text="no policies")
    files = rig.next_version()
    mark = rig.mark()
    for name in (SCHEMA, TESTS, POLICY):  # the tests before the policy: every state in between is refused
        (path / name).write_bytes(files[name])
    rig.live(mark, files)

    away = path.with_name(path.name + ".away")
    mark = rig.mark()
    path.rename(away)
    rig.refused(mark, text="no such file or directory")
    files = rig.next_version()
    write_atomic(away / POLICY, files[POLICY])
    mark = rig.mark()
    away.rename(path)
    rig.live(mark, files)


def reads_blocked_by_mode() -> bool:
    """Whether mode 000 stops this process reading a file (not as root, nor with CAP_DAC_OVERRIDE)."""
    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        try:
            open(f.name, "rb").close()
        except PermissionError:
            return True
        return False


def _fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)  # no writer ever: a blocking open would hang the reader for good


def _broken_symlink(p: Path) -> None:
    p.unlink()
    p.symlink_to(p.with_name("gone.txt"))


def _directory(p: Path) -> None:
    p.unlink()
    p.mkdir()


def breakers() -> list[tuple[Callable[[Path], None], str]]:
    """Ways to make the file at a path unreadable, each with what the refusal says about it."""
    ways = [(_fifo, "not a regular file (a FIFO)"), (_broken_symlink, "broken symbolic link"), (_directory, "not a regular file (a directory)")]
    if reads_blocked_by_mode():
        ways.append((lambda p: p.chmod(0), "Permission denied"))
    return ways


def unreadable(rig: Rig) -> None:
    """The test file becomes unreadable in each way; refused on a poll and on SIGHUP; then a new version goes live."""
    target = rig.policies / TESTS
    for breaker, text in breakers():
        mark = rig.mark()
        breaker(target)
        rig.refused(mark, text=f"{TESTS}: {text}")
        mark = rig.mark()
        rig.sighup()
        rig.refused(mark, text=f"{TESTS}: {text}", trigger="SIGHUP")
        if target.is_dir() and not target.is_symlink():
            target.rmdir()
        else:
            target.unlink()
        rig.step_forward()


def half(rig: Rig) -> None:
    """An editor's save of the test file and of the policy in steps; a git checkout of a schema change."""
    path = rig.policies
    mark = rig.mark()
    with open(path / TESTS, "wb") as f:  # the editor truncates, pauses, writes
        rig.refused(mark, files={**rig.current, TESTS: b""}, text="empty file")
        f.write(rig.current[TESTS])  # the same tests again: the live set, nothing to reload

    files = rig.next_version()
    data = files[POLICY]
    cut = data.index(b'because "') + 20  # inside the first reason: the half file ends in an open string
    mark = rig.mark()
    with open(path / POLICY, "wb") as f:
        rig.refused(mark, files={**rig.current, POLICY: b""})
        f.write(data[:cut])
        f.flush()
        mark = rig.mark()
        rig.refused(mark, files={**rig.current, POLICY: data[:cut]}, text="error[")
        mark = rig.mark()
        f.write(data[cut:])
    rig.live(mark, files)

    files = rig.next_version(probe=True)  # schema, policy and tests change together
    state = dict(rig.current)
    for name in sorted(files):  # git's index order: policy, tests, schema
        mark = rig.mark()
        (path / name).unlink()
        del state[name]
        rig.refused(mark, files=state)
        mark = rig.mark()
        (path / name).write_bytes(files[name])
        state[name] = files[name]
        if state != files:
            rig.refused(mark, files=state, text="unknown field `probe_")  # the policy and the schema disagree
    rig.live(mark, files)


def content(rig: Rig, garbage: int = 20_000_000, valid: int = 5_000_000) -> None:
    """Invalid UTF-8, an empty file, a huge garbage file, a huge valid file, a file name that is not UTF-8 (sizes in bytes)."""
    path = rig.policies
    live = rig.current
    faults: list[tuple[dict[str, bytes], str]] = [
        ({**live, POLICY: live[POLICY].replace(b"Offering", b"Offering \xff\xfe", 1)}, "not valid UTF-8"),
        ({**live, TESTS: b""}, "empty file"),
        ({**live, "huge.pol": b"\x01" * garbage}, "error["),
    ]
    for state, text in faults:
        mark = rig.mark()
        rig.deploy(state)
        rig.refused(mark, files=state, text=text)
        rig.deploy(live)  # back to the live set: nothing to reload

    files = rig.next_version(pad=valid)  # huge, but valid: goes live
    mark = rig.mark()
    rig.deploy(files)
    rig.live(mark, files)

    odd = os.path.join(os.fsencode(path), b"\xff.pol")
    with open(odd, "wb") as f:
        f.write(b"# a name that is not UTF-8\n")
    mark = rig.mark()
    rig.refused(mark, text="file name is not valid UTF-8")
    os.remove(odd)
    rig.step_forward()


CLASSES: dict[str, tuple[Callable[[Rig], None], str]] = {
    "vanish": (vanish, "directory removed (rm -rf), recreated empty, refilled file by file; renamed away, changed, renamed back"),
    "unreadable": (unreadable, "test file replaced by a FIFO, a broken symlink, a directory{mode}; each refused on a poll and on SIGHUP"),
    "half": (half, "editor save in steps (truncate, half, rest) of the tests and the policy; git checkout where schema and policy disagree"),
    "content": (content, "invalid UTF-8, an empty file, a 20 MB garbage file, a 5 MB valid file, a non-UTF-8 file name"),
}


# ---- the benchmark ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    name: str
    rounds: int  # rounds completed
    seconds: float
    calls: int
    failures: int  # calls failed or answered wrongly
    errors: tuple[str, ...]  # the first few of them
    threads: int
    refusals: int
    versions: int
    reload_failed_lines: int
    lost: int  # valid versions that never went live on every worker
    failure: str  # why the class stopped early, or ""
    status: int  # pol serve's exit status


@contextlib.contextmanager
def serving(tmp: Path, *, workers: int, poll: float) -> Iterator[Rig]:
    """`pol serve --workers W --poll P` on version 0 written under `tmp`; stopped on exit (`rig.status`)."""
    from tests.server_util import start_server  # the launcher the tests use: a real subprocess, SERVING

    policies = tmp / "policies"
    policies.mkdir()
    files = version(0)
    for name, data in files.items():
        (policies / name).write_bytes(data)
    log = tmp / "stderr.log"
    server = start_server(log, "--workers", str(workers), "--poll", str(poll), policies=policies, timeout=60)
    rig = Rig(server.address, server.process.pid, log, policies, workers, files)
    try:
        yield rig
    finally:
        rig.status = server.stop()


def run(name: str, rounds: int, *, workers: int = 2, threads: int = 4, poll: float = 0.2) -> Outcome:
    """`rounds` rounds of one class against a fresh `pol serve`, with `threads` callers checking every answer."""
    fault = CLASSES[name][0]
    done, failure, lost = 0, "", 0
    with tempfile.TemporaryDirectory(prefix=f"pol-faults-{name}-") as tmp:
        with serving(Path(tmp), workers=workers, poll=poll) as rig:
            started = time.monotonic()
            with rig.callers(threads) as callers:
                for _ in range(rounds):
                    try:
                        fault(rig)
                    except StepFailed as e:
                        failure, lost = str(e), int(e.live)
                        break
                    done += 1
            seconds = time.monotonic() - started
        failed_lines = len(rig.log.since(0, "reload_failed"))
    return Outcome(name, done, seconds, sum(callers.calls), callers.failures, tuple(callers.errors), threads, rig.refusals, rig.versions, failed_lines, lost, failure, rig.status)


def row(o: Outcome, rounds: int, workers: int, command: str) -> dict:
    description = CLASSES[o.name][1].format(mode=", mode 000" if reads_blocked_by_mode() else " (not mode 000: this process reads through it, as root does)")
    return {
        "class": f"reload fault: {o.name}",
        "inputs": f"{rounds} rounds ({o.rounds} completed): {description}",
        "load": f"{o.calls} Evaluate calls on {o.threads} connections in {o.seconds:.0f} s ({o.calls / max(o.seconds, 1e-9):.0f}/s), pol serve --workers {workers}, every answer checked against its set hash",
        "faults": f"{o.refusals} broken states, each refused by every worker ({o.reload_failed_lines} reload_failed lines); {o.versions} new versions live on every worker",
        "survived": not o.failures and not o.lost and not o.failure and o.status == 0 and o.rounds == rounds,
        "errors": o.failures,
        "lost": o.lost,
        "command": command,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50, help="rounds per class (default 50)")
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated: " + ", ".join(CLASSES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="client threads calling Evaluate (default 4)")
    parser.add_argument("--poll", type=float, default=0.2, help="pol serve --poll (default 0.2)")
    args = parser.parse_args(argv)
    names = [c for c in args.classes.split(",") if c]
    unknown = set(names) - set(CLASSES)
    if unknown:
        parser.error(f"unknown class(es): {', '.join(sorted(unknown))}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    ok = True
    print(f"{'class':<12} {'rounds':>6} {'refused':>8} {'live':>6} {'calls':>8} {'errors':>6} {'lost':>4} {'seconds':>8}")
    for name in names:
        o = run(name, args.rounds, workers=args.workers, threads=args.threads, poll=args.poll)
        command = f"python bench/faults.py --classes {name} --rounds {args.rounds} --workers {args.workers}"
        r = row(o, args.rounds, args.workers, command)
        (RESULTS / f"faults-{name}.json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
        print(f"{name:<12} {o.rounds:>6} {o.refusals:>8} {o.versions:>6} {o.calls:>8} {o.failures:>6} {o.lost:>4} {o.seconds:>8.1f}")
        for problem in [*o.errors[:5], *([o.failure] if o.failure else [])]:
            print(f"  {problem}")
        ok = ok and r["survived"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
