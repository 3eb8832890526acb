"""Operating `pol serve`: worker processes, hot reload, signals, mutual TLS (real subprocesses)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

from google.protobuf import struct_pb2

from engine.policyset import read_files, set_hash
from server.gen.pol.v1 import policy_service_pb2 as pb
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc
from tests.conftest import POLICIES
from tests.server_util import Server, launch, serving

OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
REASON = "Offering or facilitating human smuggling services is prohibited."


class Serve(Server):
    """`pol serve --address 127.0.0.1:0 ARGS` as a subprocess; stderr (JSON lines) in a file."""

    def __init__(self, tmp_path: Path, *args: str, policies: Path | str = "policies", credentials=None, timeout: float = 60) -> None:
        log = tmp_path / f"stderr-{time.monotonic_ns()}.log"
        super().__init__(*launch(log, *args, policies=policies, timeout=timeout), log)
        self.credentials = credentials
        with self.channel() as channel:
            if not serving(channel, timeout):
                self.stop()
                raise AssertionError("never SERVING")

    def channel(self) -> grpc.Channel:
        # a fresh subchannel per channel object, so separate channels may reach different workers
        options = [("grpc.use_local_subchannel_pool", 1)]
        if self.credentials is not None:
            return grpc.secure_channel(self.address, self.credentials, options)
        return grpc.insecure_channel(self.address, options)

    def events(self, name: str) -> list[dict]:
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            if line.startswith("{") and f'"event": "{name}"' in line:
                out.append(json.loads(line))
        return out


def until(condition, timeout: float = 15, what: str = "condition never held") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def request(annotations: dict = OFFER, id: str = "") -> pb.EvaluateRequest:
    s = struct_pb2.Struct()
    s.update(annotations)
    return pb.EvaluateRequest(content=pb.Content(id=id, annotations=s))


def evaluate(channel) -> pb.EvaluateResponse:
    return pb_grpc.PolicyServiceStub(channel).Evaluate(request(), timeout=10)


@pytest.fixture
def policies(tmp_path) -> Path:
    path = tmp_path / "policies"
    shutil.copytree(POLICIES, path)
    return path


def edit(policies: Path, old: str, new: str) -> str:
    """Replace `old` by `new` in human_smuggling.pol (atomically, by rename); the files' new hash."""
    path = policies / "human_smuggling.pol"
    text = path.read_text(encoding="utf-8")
    assert old in text
    tmp = policies.parent / "edit.tmp"
    tmp.write_text(text.replace(old, new), encoding="utf-8")
    os.replace(tmp, path)
    return _files_hash(policies)


def _files_hash(policies: Path) -> str:
    return set_hash(read_files(policies))


# ---- reload ----------------------------------------------------------------------------------------


def test_a_valid_change_is_live_within_two_seconds_with_a_new_hash(tmp_path, policies):
    """Polling picks up an edit: every worker reloads it, Evaluate names the new hash and gives the new reason."""
    server = Serve(tmp_path, "--poll", "0.2", "--workers", "2", policies=policies)
    try:
        with server.channel() as channel:
            before = evaluate(channel).policy_set_hash
            started = time.monotonic()
            expected = edit(policies, REASON, "Offering smuggling is prohibited (v2).")
            until(lambda: evaluate(channel).policy_set_hash != before, 5, "the change never went live")
            took = time.monotonic() - started
            r = evaluate(channel)
        assert r.policy_set_hash == expected and took < 2, took
        assert r.justifications[0].reason == "Offering smuggling is prohibited (v2)."
        until(lambda: len(server.events("reloaded")) == 2, 5, "not every worker reloaded")
        assert {e["policy_set_hash"] for e in server.events("reloaded")} == {expected}
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("change", "diagnostic"),
    [
        ("truncated", "error["),  # a half-written file: fails to parse
        ("failing_test", "test failed"),  # compiles, but its own tests fail (threshold raised)
    ],
)
def test_a_broken_change_is_refused_and_the_old_set_keeps_serving(tmp_path, policies, change, diagnostic):
    """A set that does not parse, or whose tests fail, is refused by every worker, logged with why, and the old set keeps deciding."""
    server = Serve(tmp_path, "--poll", "0.2", "--workers", "2", policies=policies)
    try:
        with server.channel() as channel:
            before = evaluate(channel)
            path = policies / "human_smuggling.pol"
            if change == "truncated":
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            else:
                edit(policies, "confidence >= 0.8\n", "confidence >= 0.9\n")
            until(lambda: len(server.events("reload_failed")) >= 2, 5, "the refusal was never logged by every worker")
            after = evaluate(channel)
        assert after.policy_set_hash == before.policy_set_hash
        assert (after.verdict, after.rule) == (before.verdict, before.rule) == (pb.VERDICT_REMOVE, "offer_smuggling")
        failed = server.events("reload_failed")
        assert {e["worker"] for e in failed} == {0, 1}
        assert all(diagnostic in "\n".join(e["problems"]) and e["policy_set_hash"] == before.policy_set_hash for e in failed)
        assert server.events("reloaded") == []
    finally:
        assert server.stop() == 0


def test_no_call_fails_during_repeated_reloads_under_load(tmp_path, policies):
    """4 client threads call Evaluate non-stop while the set is rewritten 5 times: every call succeeds with a known hash."""
    server = Serve(tmp_path, "--poll", "0.2", "--workers", "2", policies=policies)
    stop = threading.Event()
    errors: list[Exception] = []
    seen: set[str] = set()
    counts = [0] * 4

    def load(i: int) -> None:
        with server.channel() as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            while not stop.is_set():
                try:
                    seen.add(stub.Evaluate(request(id=f"t{i}"), timeout=10).policy_set_hash)
                    counts[i] += 1
                except grpc.RpcError as e:
                    errors.append(e)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    try:
        with server.channel() as channel:
            hashes = {evaluate(channel).policy_set_hash}
            for t in threads:
                t.start()
            text = REASON
            for n in range(5):
                new = f"Offering smuggling is prohibited (version {n % 2})."
                expected = edit(policies, text, new)
                text = new
                hashes.add(expected)
                until(lambda expected=expected: evaluate(channel).policy_set_hash == expected, 5, f"reload {n} never went live")
                time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        status = server.stop()
    assert errors == [] and status == 0
    assert all(c > 0 for c in counts) and seen <= hashes
    assert server.events("reload_failed") == []


# ---- workers and signals ---------------------------------------------------------------------------


def test_sigterm_with_two_workers_under_load_finishes_calls_in_flight_and_exits_zero(tmp_path):
    """Streams in flight on several connections get every answer after SIGTERM; unary calls fail only after it, refused."""
    server = Serve(tmp_path, "--poll", "0", "--workers", "2")
    gate = threading.Event()
    sent = threading.Event()
    results: dict[int, list[str]] = {}
    failures: list[tuple[bool, grpc.StatusCode]] = []

    def items(i: int):
        for j in range(10):
            if j == 5:
                gate.wait(30)
            yield pb.EvaluateStreamRequest(request=request(id=f"s{i}-{j}"))

    def stream(i: int, channel, started: threading.Event) -> None:
        answers = pb_grpc.PolicyServiceStub(channel).EvaluateStream(items(i), timeout=60)
        got = [next(answers).result.response.content_id for _ in range(5)]
        started.set()
        results[i] = got + [a.result.response.content_id for a in answers]

    def unary(channel) -> None:
        stub = pb_grpc.PolicyServiceStub(channel)
        while not gate.is_set():
            after = sent.is_set()
            try:
                stub.Evaluate(request(), timeout=10)
            except grpc.RpcError as e:
                failures.append((after, e.code()))
                time.sleep(0.01)

    channels = [server.channel() for _ in range(6)]
    try:
        starts = [threading.Event() for _ in range(4)]
        threads = [threading.Thread(target=stream, args=(i, channels[i], starts[i])) for i in range(4)]
        threads += [threading.Thread(target=unary, args=(channels[4 + i],)) for i in range(2)]
        for t in threads:
            t.start()
        for s in starts:
            assert s.wait(20)
        time.sleep(0.2)
        sent.set()
        server.process.send_signal(signal.SIGTERM)
        until(lambda: len(server.events("draining")) >= 3, 10, "the workers never started draining")  # 2 workers + supervisor
        gate.set()
        for t in threads:
            t.join(30)
        assert server.process.wait(30) == 0
    finally:
        gate.set()
        for c in channels:
            c.close()
        server.stop()
    assert results == {i: [f"s{i}-{j}" for j in range(10)] for i in range(4)}
    # a call begun after SIGTERM is refused: UNAVAILABLE, or CANCELLED when it reaches a worker as its server stops
    assert all(after and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) for after, code in failures), failures


def test_a_killed_worker_is_restarted_and_the_service_keeps_answering(tmp_path):
    """SIGKILL one of two workers: the supervisor starts a new one, and callers keep being answered."""
    server = Serve(tmp_path, "--poll", "0", "--workers", "2")
    stop = threading.Event()
    ok_after_kill = [0] * 4
    failures: list[grpc.StatusCode] = []
    killed = threading.Event()

    def load(i: int) -> None:
        with server.channel() as channel:
            stub = pb_grpc.PolicyServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.Evaluate(request(), timeout=10, wait_for_ready=True)
                    if killed.is_set():
                        ok_after_kill[i] += 1
                except grpc.RpcError as e:  # only a call in flight on the killed worker's connection
                    failures.append(e.code())

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    try:
        (supervising,) = server.events("supervising")
        pids = supervising["pids"]
        assert len(pids) == 2 and all(Path(f"/proc/{p}").exists() for p in pids)
        for t in threads:
            t.start()
        time.sleep(0.5)
        os.kill(pids[0], signal.SIGKILL)
        killed.set()
        until(lambda: server.events("worker_started"), 10, "the worker was never restarted")
        new = server.events("worker_started")[0]["pid"]
        until(lambda: any(e.get("pid") == new for e in server.events("serving")), 30, "the new worker never served")
        time.sleep(0.5)
        with server.channel() as channel:
            assert evaluate(channel).verdict == pb.VERDICT_REMOVE
        assert new not in pids and Path(f"/proc/{new}").exists() and Path(f"/proc/{pids[1]}").exists()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        status = server.stop()
    assert status == 0
    assert all(n > 0 for n in ok_after_kill), ok_after_kill
    # UNAVAILABLE only: the calls in flight on the killed worker, and calls on connections the
    # kernel had queued on its listening socket (reset when it closed): a few per caller at most
    assert len(failures) <= 3 * len(threads) and set(failures) <= {grpc.StatusCode.UNAVAILABLE}, failures
    (exited,) = server.events("worker_exited")
    assert exited["pid"] == pids[0] and exited["exitcode"] == -signal.SIGKILL


# ---- TLS and mutual TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA, a server certificate (127.0.0.1, localhost) and a client certificate, made at test time."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert, key) -> None:
        (out / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def builder(subject: str, issuer: x509.Name, key):
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        builder("pol test CA", name("pol test CA"), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca, ca_key)
    for stem, usage, sans in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("pol-client")]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(f"pol test {stem}", ca.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write(stem, cert, key)
    return {stem: out / stem for stem in ("ca", "server", "client")}


def _tls_flags(pki, mutual: bool) -> list[str]:
    flags = ["--tls-cert", f"{pki['server']}.pem", "--tls-key", f"{pki['server']}.key", "--poll", "0", "--workers", "2"]
    return flags + (["--tls-client-ca", f"{pki['ca']}.pem"] if mutual else [])


def test_tls_serves_a_client_that_trusts_the_ca(tmp_path, pki):
    """With --tls-cert/--tls-key, a client trusting the CA is served over TLS; a plaintext client is not."""
    ca = Path(f"{pki['ca']}.pem").read_bytes()
    server = Serve(tmp_path, *_tls_flags(pki, mutual=False), credentials=grpc.ssl_channel_credentials(root_certificates=ca))
    try:
        with server.channel() as channel:
            assert evaluate(channel).rule == "offer_smuggling"
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as e:
                evaluate(channel)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.events("serving")[0]["tls"] is True
    finally:
        assert server.stop() == 0


def test_mutual_tls_refuses_a_client_without_a_certificate_and_serves_one_with(tmp_path, pki):
    """With --tls-client-ca, the handshake fails (UNAVAILABLE) without a client certificate; with one signed by the CA, calls are served."""
    ca = Path(f"{pki['ca']}.pem").read_bytes()
    key, cert = Path(f"{pki['client']}.key").read_bytes(), Path(f"{pki['client']}.pem").read_bytes()
    with_cert = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    server = Serve(tmp_path, *_tls_flags(pki, mutual=True), credentials=with_cert)
    try:
        with server.channel() as channel:
            assert evaluate(channel).rule == "offer_smuggling"
        with grpc.secure_channel(server.address, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
            with pytest.raises(grpc.RpcError) as e:
                evaluate(channel)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0
