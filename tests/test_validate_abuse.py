"""ValidatePolicy under abuse: bounded time and memory, others served meanwhile, and an off switch.

Every test talks to a real `pol serve` subprocess. Hostile sources: over the size limit,
10 MB, 100,000 nested parentheses, catastrophic regexes, thousands of rules, a compile
slower than --validate-timeout, one bigger than --validate-memory-mb. Full-size runs
with timings and memory are `bench/validate_abuse.py`.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

import engine  # noqa: E402
import re2  # noqa: E402
from server.client import PolError, PolicyClient  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from tests.conftest import SCHEMA  # noqa: E402
from tests.server_util import start_server  # noqa: E402

OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
SLOW = 30  # the default server's --validate-timeout
BIG = str(32 << 20)  # --max-message-bytes / --max-source-bytes where 10 MB sources must get through
# classic catastrophic-backtracking patterns; RE2 runs each in time linear in the input
REDOS = ["(a+)+$", "(a|aa)+$", "(a|a?)+$", "^(a+)+b", "(.*a){20}", "(\\\\w+\\\\s?)*$"]


def rules(n: int) -> str:
    """A policy with `n` distinct rules."""
    body = "".join(f'  rule r{i} {{ when confidence >= 0.{i % 10} and topic == "weapons" then remove because "rule {i}" }}\n' for i in range(n))
    return f"policy many for content {{\n{body}}}\n"


def parentheses(n: int) -> str:
    return 'policy deep for content {\n  rule a { when ' + "(" * n + "mentions_minor" + ")" * n + ' then remove because "x" }\n}\n'


def regex_policy(pattern: str) -> str:
    return f'policy redos for content {{\n  rule a {{ when has text and text matches "{pattern}" then remove because "x" }}\n  otherwise allow because "n"\n}}\n'


def descendants(pid: int) -> set[int]:
    """Every live process under `pid` (children, their children, ...), from /proc."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for path in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = {int(k) for k in path.read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return {p for p in found if alive(p)}


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def refused(call) -> tuple[PolError, float]:
    """The PolError `call()` raises, and how long it took to."""
    start = time.monotonic()
    with pytest.raises(PolError) as e:
        call()
    return e.value, time.monotonic() - start


def timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """`pol serve` with the default limits, but --validate-timeout 30 (not 5): on a busy CI machine a
    0.5 s compile can take ten times that, and the limits under test here are size, memory and correctness."""
    s = start_server(tmp_path_factory.mktemp("defaults") / "stderr.log", "--workers", "1", "--poll", "0", "--validate-timeout", str(SLOW))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def default_client(default_server):
    with PolicyClient(default_server.address, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory):
    """Big messages and sources let through, but a 1 s compile limit and one compile at a time."""
    s = start_server(
        tmp_path_factory.mktemp("tight") / "stderr.log",
        "--workers", "1", "--poll", "0", "--max-message-bytes", BIG, "--max-source-bytes", BIG,
        "--validate-timeout", "1", "--validate-concurrency", "1",
    )
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def tight_client(tight_server):
    with PolicyClient(tight_server.address, timeout=60) as c:
        yield c


# ---- default limits, with a roomier time limit ------------------------------------------------


def test_a_source_over_the_size_limit_is_refused_fast(default_client):
    """2 MB (over --max-source-bytes) and 10 MB (over --max-message-bytes too) are RESOURCE_EXHAUSTED at once."""
    error, seconds = refused(lambda: default_client.validate("# " + "x" * (2 << 20) + "\n"))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-source-bytes" in str(error)
    assert seconds < 10
    error, seconds = refused(lambda: default_client.validate(rules(110_000)))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and seconds < 10


def test_a_hundred_thousand_nested_parentheses_are_p005(default_client):
    """100,000 nested parentheses come back as a P005 diagnostic, within the default memory limit."""
    response = default_client.validate(parentheses(100_000), "deep.pol")
    assert not response.ok
    assert "P005" in [d.code for d in response.diagnostics]


@pytest.mark.parametrize("pattern", REDOS)
def test_catastrophic_regexes_are_accepted(default_client, pattern):
    """Patterns that backtrack catastrophically elsewhere compile cleanly: `matches` is RE2, linear time."""
    response = default_client.validate(regex_policy(pattern), "redos.pol")
    assert response.ok, [(d.code, d.message) for d in response.diagnostics]


@pytest.mark.parametrize("pattern", REDOS)
def test_a_catastrophic_regex_decides_a_megabyte_in_bounded_time(pattern):
    """Each pattern against a million `a`s and a `!` decides in bounded time (milliseconds: RE2, no captures), rightly."""
    result = engine.compile_sources({"schema.pol": SCHEMA, "redos.pol": regex_policy(pattern)})
    assert not result.errors
    expected = "remove" if re2.search(pattern.replace("\\\\", "\\"), "a" * 1000 + "!") else "allow"
    annotations = {"topic": "other", "intent": "other", "confidence": 0.1, "text": "a" * 1_000_000 + "!"}
    decision, seconds = timed(lambda: result.policy_set.evaluate(annotations))
    assert decision.verdict == expected and seconds < 10


def test_five_thousand_rules_validate_or_are_refused_cleanly(default_client, default_server):
    """5,000 rules: diagnostics, or RESOURCE_EXHAUSTED naming the limit; never a crash, and the server goes on."""
    start = time.monotonic()
    try:
        response = default_client.validate(rules(5_000), "many.pol")
        assert response.ok, [(d.code, d.message) for d in response.diagnostics][:5]
    except PolError as e:
        assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--validate-" in str(e)
    assert time.monotonic() - start < SLOW + 15  # the time limit, plus start-up and slack
    assert default_client.evaluate(OFFER).verdict == "remove"


# ---- tight limits --------------------------------------------------------------------------------


def test_a_ten_megabyte_source_is_answered_or_refused_within_bounds(tight_client):
    """With the size limits raised, 10 MB sources get diagnostics or a time/memory refusal, within bounds."""
    huge_string = 'policy s for content {\n  rule a { when confidence > 0.5 then remove because "' + "x" * 10_000_000 + '" }\n}\n'
    for source in (rules(110_000), huge_string, "# " + "x" * 10_000_000 + "\n"):
        start = time.monotonic()
        try:
            response = tight_client.validate(source, "big.pol")
            assert [d.code for d in response.diagnostics if d.severity == pb.SEVERITY_ERROR] == []
        except PolError as e:
            assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and ("--validate-timeout" in str(e) or "--validate-memory-mb" in str(e)), e
        assert time.monotonic() - start < 1 + 15
    assert tight_client.evaluate(OFFER).verdict == "remove"


def test_a_slow_compile_is_refused_while_evaluate_keeps_serving(tight_server, tight_client):
    """A compile over --validate-timeout is RESOURCE_EXHAUSTED, and Evaluate calls made meanwhile all succeed."""
    outcome: list = []

    def validate() -> None:
        try:
            outcome.append(tight_client.validate(rules(20_000), "slow.pol"))
        except PolError as e:
            outcome.append(e)

    thread = threading.Thread(target=validate)
    start = time.monotonic()
    thread.start()
    verdicts = []
    with PolicyClient(tight_server.address, timeout=10) as other:
        while thread.is_alive():
            verdicts.append(other.evaluate(OFFER).verdict)
    thread.join()
    (error,) = outcome
    assert isinstance(error, PolError) and error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert "--validate-timeout" in str(error)
    assert time.monotonic() - start < 1 + 15
    assert len(verdicts) >= 5 and set(verdicts) == {"remove"}


def test_a_call_over_the_concurrency_limit_is_refused_at_once(tight_client):
    """With one compile running and --validate-concurrency 1, another ValidatePolicy is RESOURCE_EXHAUSTED at once."""
    done = threading.Event()

    def slow() -> None:
        while True:  # until it is the one holding the slot (a small call may hold it when it arrives)
            try:
                tight_client.validate(rules(20_000), "slow.pol")
            except PolError as e:
                if "--validate-concurrency" in str(e):
                    continue
            break
        done.set()

    threading.Thread(target=slow).start()
    busy = []
    while not done.is_set():
        try:
            tight_client.validate(rules(1), "small.pol")
        except PolError as e:
            busy.append((e.code, str(e)))
            break
        time.sleep(0.05)
    done.wait(30)
    assert busy and busy[0][0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "--validate-concurrency" in busy[0][1]
    assert tight_client.validate(rules(1), "small.pol").ok  # the slot is free again


def test_a_caller_deadline_stops_its_compile(default_server, default_client):
    """A caller whose deadline passes gets DEADLINE_EXCEEDED, and the server stops that compile then, not at --validate-timeout."""
    assert default_client.validate(rules(1), "warm.pol").ok  # a compiler process is running, so the deadline falls in the compile
    error, seconds = refused(lambda: default_client.validate(rules(10_000), "slow.pol", timeout=0.5))  # under 1 MiB, 6 s or more
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED and seconds < 10
    deadline = time.monotonic() + 10
    while not (lines := [line for line in default_server.log_lines() if '"deadline"' in line and "validation_refused" in line]):
        assert time.monotonic() < deadline, "the server never logged the refusal"
        time.sleep(0.05)
    (line,) = lines
    assert json.loads(line)["seconds"] < 3  # not at --validate-timeout (30 s)
    assert default_client.validate(rules(1), "small.pol").ok


def test_a_compile_over_the_memory_limit_is_refused_and_the_next_is_served(tmp_path):
    """A compile that needs more than --validate-memory-mb is RESOURCE_EXHAUSTED; a fresh compiler serves the next call."""
    server = start_server(
        tmp_path / "stderr.log", "--workers", "1", "--poll", "0", "--max-message-bytes", BIG, "--max-source-bytes", BIG,
        "--validate-memory-mb", "100", "--validate-timeout", "60",
    )
    try:
        with PolicyClient(server.address, timeout=90) as client:
            error, seconds = refused(lambda: client.validate(rules(110_000), "big.pol"))
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--validate-memory-mb" in str(error), error
            assert seconds < 60
            assert client.validate(rules(2), "small.pol").ok
            assert client.evaluate(OFFER).verdict == "remove"
    finally:
        assert server.stop() == 0


# ---- process hygiene and the off switch ----------------------------------------------------------------


def test_sigterm_leaves_no_compiler_process_behind_with_workers(tmp_path):
    """With --workers 2 and a compile under way, SIGTERM exits 0 and leaves no worker or compiler process running."""
    server = start_server(tmp_path / "stderr.log", "--workers", "2", "--poll", "0", "--validate-timeout", "1", "--grace", "5")
    try:
        channels = []
        for _ in range(4):  # separate connections, so both workers are likely used
            client = PolicyClient(server.address, timeout=30, options=[("grpc.use_local_subchannel_pool", 1)])
            channels.append(client)
            assert client.validate(rules(1), "small.pol").ok
        before = descendants(server.process.pid)
        assert len(before) >= 3, before  # two workers, and at least one compiler process
        threading.Thread(target=_validate_quietly, args=(channels[0], rules(20_000)), daemon=True).start()
        time.sleep(0.3)  # the compile is under way
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        deadline = time.monotonic() + 10
        while any(alive(p) for p in before) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in before if alive(p)] == []
    finally:
        for c in channels:
            c.close()
        server.stop()


def _validate_quietly(client: PolicyClient, source: str) -> None:
    try:
        client.validate(source, "slow.pol")
    except PolError:
        pass  # the server is stopping: any answer will do


def test_no_validate_policy_answers_unimplemented_and_starts_no_compiler(tmp_path):
    """`--no-validate-policy`: ValidatePolicy is UNIMPLEMENTED saying it is disabled; no compiler process starts; Evaluate serves."""
    server = start_server(tmp_path / "stderr.log", "--workers", "1", "--poll", "0", "--no-validate-policy")
    try:
        with PolicyClient(server.address, timeout=10) as client:
            error, _ = refused(lambda: client.validate(rules(1), "small.pol"))
            assert error.code == grpc.StatusCode.UNIMPLEMENTED and "disabled" in str(error)
            assert client.evaluate(OFFER).verdict == "remove"
        assert descendants(server.process.pid) == set()
    finally:
        assert server.stop() == 0
