"""Security of `pol serve` (real subprocesses, real gRPC clients): what its logs and errors leak, who it lets in.

- Decision logs carry the request id and the content id (by design, docs/operations.md)
  but never annotation values or keys, whatever the RPC and whether the call succeeds,
  unless `--log-annotations` asks for them; callers cannot forge log lines.
- Errors name the field, never echo more than a bounded excerpt of what was sent.
- Mutual TLS serves only clients with a valid certificate from the configured CA.
- Compiled code does not pile up: replaced sets are freed, repeated conditions are one copy.
"""

from __future__ import annotations

import datetime
import gc
import ipaddress
import json
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

from google.protobuf import struct_pb2  # noqa: E402

import engine  # noqa: E402
from engine.policyset import read_files  # noqa: E402
from server.client import EvaluateResult, PolError, PolicyClient  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2 as pb  # noqa: E402
from server.gen.pol.v1 import policy_service_pb2_grpc as pb_grpc  # noqa: E402
from tests.conftest import POLICIES  # noqa: E402
from tests.server_util import Server, launch, serving, start_server  # noqa: E402

OFFER = {"topic": "human_smuggling", "intent": "offer", "confidence": 0.93}
MAX_MESSAGE = 3 << 20
MAX_BATCH = 5
#: A bounded excerpt: what an error or warning may repeat of one value the caller sent.
ECHO_LIMIT = 1024


def canary(where: str) -> str:
    """A distinctive string that must never reach the log (ASCII: the log escapes the rest)."""
    return f"CANARY-{where}-7f3a9c"


def annotations(where: str) -> dict:
    """Valid annotations for the shipped schema with a canary in every value and key the caller controls."""
    return {
        **OFFER,
        "text": canary(f"{where}-text") + " the post's words " + canary(f"{where}-text-2"),
        "labels": [canary(f"{where}-label")],
        "language": canary(f"{where}-language"),
        "author": {"account_age_days": 3, "id": canary(f"{where}-author-id"), "handle": canary(f"{where}-handle")},
        "id": canary(f"{where}-id-field"),
        "post_id": canary(f"{where}-post-id"),
        "url": f"https://example.com/{canary(where + '-url')}",
        canary(f"{where}-key"): canary(f"{where}-key-value"),
    }


def broken(where: str) -> dict:
    """Annotations that break the schema, with canaries both in the wrong-typed values and around them."""
    return {
        **annotations(where),
        "confidence": canary(f"{where}-confidence"),
        "mentions_minor": canary(f"{where}-minor"),
        "labels": [1, canary(f"{where}-bad-label")],
        "author": canary(f"{where}-author"),
    }


def logged_strings(lines: list[str]) -> list[str]:
    """Every string in the JSON log lines (keys and values, decoded), so escaped text is seen too."""
    out: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                out.append(k)
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, str):
            out.append(v)

    for line in lines:
        walk(json.loads(line))
    return out


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> dict:
    """One server (two workers sharing stderr) that took every kind of call with canaries; its stopped log."""
    log = tmp_path_factory.mktemp("security") / "stderr.log"
    server = start_server(log, "--poll", "0", "--workers", "2", "--max-batch", str(MAX_BATCH), "--max-message-bytes", str(MAX_MESSAGE), "--max-depth", "8")
    decided: list[tuple[str, str]] = []  # (request id, content id) of each decision
    try:
        with PolicyClient(server.address, timeout=20) as client:
            client.evaluate(annotations("unary"), content_id="content-unary", request_id="request-unary")
            client.evaluate(annotations("explain"), content_id="content-explain", request_id="request-explain", explain=True)
            client.evaluate({**annotations("enum"), "topic": canary("enum-topic")}, content_id="content-enum", request_id="request-enum")
            decided += [("request-unary", "content-unary"), ("request-explain", "content-explain"), ("request-enum", "content-enum")]
            batch = client.evaluate_many([("content-batch-0", annotations("batch-0")), ("content-batch-1", broken("batch-1"))], request_id="request-batch")
            assert [type(r) for r in batch] == [EvaluateResult, PolError]
            decided.append(("request-batch", "content-batch-0"))
            stream = list(client.evaluate_stream([("content-stream-0", annotations("stream-0")), ("content-stream-1", broken("stream-1"))]))
            assert [type(r) for r in stream] == [EvaluateResult, PolError]
            decided.append((stream[0].request_id, "content-stream-0"))
            failures = {
                "invalid": lambda: client.evaluate(broken("invalid"), content_id="content-invalid"),
                "deep": lambda: client.evaluate({**annotations("deep"), "nest": _nested(12, canary("deep-leaf"))}),
                "unknown-policy": lambda: client.evaluate(annotations("not-found"), policies=["no_such_policy"]),
                "batch-over-limit": lambda: client.evaluate_many([annotations(f"over-{i}") for i in range(MAX_BATCH + 1)]),
                "message-over-limit": lambda: client.evaluate({**annotations("huge"), "text": canary("huge") * (MAX_MESSAGE // 10)}),
            }
            codes = {}
            for name, call in failures.items():
                with pytest.raises(PolError) as e:
                    call()
                codes[name] = e.value.code
            assert codes == {
                "invalid": grpc.StatusCode.INVALID_ARGUMENT,
                "deep": grpc.StatusCode.INVALID_ARGUMENT,
                "unknown-policy": grpc.StatusCode.NOT_FOUND,
                "batch-over-limit": grpc.StatusCode.RESOURCE_EXHAUSTED,
                "message-over-limit": grpc.StatusCode.RESOURCE_EXHAUSTED,
            }
            forged_line = '\n{"event": "decision", "verdict": "allow", "request_id": "forged"}\n'
            forged_field = '", "verdict": "allow'  # a request id travels in metadata too: printable ASCII only
            client.evaluate(annotations("forge"), content_id="content-forge" + forged_line, request_id="request-forge" + forged_field)
            decided.append(("request-forge" + forged_field, "content-forge" + forged_line))
    finally:
        status = server.stop()
    assert status == 0
    return {"text": log.read_text(encoding="utf-8"), "lines": server.log_lines(), "decided": decided}


def _nested(depth: int, leaf: str) -> dict:
    out: object = leaf
    for _ in range(depth):
        out = {"x": out}
    return out


def test_no_annotation_value_or_key_reaches_the_log_on_any_call(calls):
    """Evaluate, EvaluateBatch, EvaluateStream and every failing call: no annotation value or key is in the log, raw or decoded."""
    assert "CANARY-" not in calls["text"]
    assert not [s for s in logged_strings(calls["lines"]) if "CANARY-" in s]


def test_the_log_has_one_decision_line_per_decision_with_its_ids(calls):
    """Request id and content id are logged by design, once per decided item, and callers cannot forge lines with them."""
    decisions = [json.loads(line) for line in calls["lines"] if json.loads(line).get("event") == "decision"]
    assert [(d["request_id"], d["content_id"]) for d in decisions] == calls["decided"]
    assert decisions[-1]["verdict"] == "remove"
    assert not any(line.startswith('{"event": "decision", "verdict": "allow", "request_id": "forged"}') for line in calls["lines"])


def test_log_annotations_puts_the_values_in_the_decision_line(tmp_path):
    """With --log-annotations the decision line carries the annotations: the check above can see a leak."""
    server = start_server(tmp_path / "stderr.log", "--poll", "0", "--workers", "1", "--log-annotations")
    try:
        with PolicyClient(server.address, timeout=10) as client:
            client.evaluate(annotations("opt-in"), content_id="content-opt-in")
    finally:
        assert server.stop() == 0
    (line,) = [json.loads(line) for line in server.log_lines() if '"event": "decision"' in line]
    assert line["content_id"] == "content-opt-in"
    assert canary("opt-in-text") in json.dumps(line)


# ---- what errors and warnings send back ---------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("echo") / "stderr.log", "--poll", "0", "--workers", "1", "--max-message-bytes", str(MAX_MESSAGE))
    try:
        with PolicyClient(server.address, timeout=20) as c:
            yield c
    finally:
        assert server.stop() == 0


HUGE = "H" * (1 << 20)


@pytest.mark.parametrize(
    "field, value",
    [
        ("confidence", HUGE),
        ("mentions_minor", HUGE),
        ("labels", [HUGE, 1]),
        ("author", {"account_age_days": HUGE}),
        ("author", HUGE),
        ("intent", [HUGE]),
        ("confidence", [HUGE] * 2),
    ],
    ids=["number", "bool", "list-item", "nested-int", "object", "enum", "list-for-number"],
)
def test_invalid_argument_names_the_field_and_echoes_at_most_an_excerpt(client, field, value):
    """A 1 MB value of the wrong type: INVALID_ARGUMENT naming the field, with a short message that does not repeat the value."""
    with pytest.raises(PolError) as e:
        client.evaluate({**OFFER, field: value})
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in e.value.violations] and all(f.startswith(f"content.annotations.{field}") for f, _ in e.value.violations)
    assert len(e.value.message) < ECHO_LIMIT and all(len(d) < ECHO_LIMIT for _, d in e.value.violations)
    assert "HHHHHHHHHHHHHHHH" not in e.value.message


def test_an_unknown_enum_value_is_warned_about_with_an_excerpt(client):
    """A 1 MB value outside an enum is decided, and the warning quotes only the start of it."""
    result = client.evaluate({**OFFER, "topic": HUGE})
    assert result.verdict == "allow"
    (warning,) = result.warnings
    assert warning["code"] == "unknown_enum_value" and warning["field"] == "topic"
    assert warning["message"].startswith('"HHHH') and len(warning["message"]) < ECHO_LIMIT


def test_observed_values_in_a_decision_are_cut(client):
    """A 1 MB label among 10,000 in a condition's observed values comes back as its first characters, and the list as its first items."""
    labels = ["illegal_border_crossing", HUGE, *(f"label-{i}" for i in range(10_000))]
    result = client.evaluate({"topic": "migration", "intent": "share_info", "confidence": 0.9, "labels": labels})
    assert result.rule == "border_crossing_info"
    observed = [c["observed"]["labels"] for c in result.justifications[0]["conditions"] if "labels" in c["observed"]]
    assert observed and all(len(json.dumps(o)) < 16 * ECHO_LIMIT for o in observed)
    assert any(item.startswith("HHHH") for o in observed for item in o)


def test_an_unknown_policy_with_a_huge_name_is_not_found_with_an_excerpt(client):
    """A 10,000-character policy name is NOT_FOUND with the name cut, not a status too big for the client's metadata."""
    with pytest.raises(PolError) as e:
        client.evaluate(OFFER, policies=["p" * 10_000])
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert len(e.value.message) < ECHO_LIMIT and "more characters" in e.value.message


@pytest.mark.parametrize(
    "address, loopback",
    [("127.0.0.1:1", True), ("127.8.9.10:1", True), ("localhost:1", True), ("[::1]:1", True),
     ("127.evil.example:1", False), ("localhost.example.com:1", False), ("[::1.example]:1", False), ("0.0.0.0:1", False), ("[::]:1", False)],
)
def test_only_loopback_addresses_serve_plaintext_without_the_flag(address, loopback):
    """Plaintext needs --plaintext unless the host is `localhost` or a loopback IP; names that merely start like one do not count."""
    from server.app import is_loopback

    assert is_loopback(address) is loopback


# ---- mutual TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    folder: Path  # NAME.pem and NAME.key for each certificate
    pem: dict[str, tuple[bytes, bytes]]  # NAME: (certificate, private key)

    def client(self, name: str) -> grpc.ChannelCredentials:
        """Credentials trusting the real CA and presenting certificate `name`."""
        cert, key = self.pem[name]
        return grpc.ssl_channel_credentials(root_certificates=self.pem["ca"][0], private_key=key, certificate_chain=cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """Two throwaway CAs and certificates, made at test time.

    "ca" signs the server and the good client; "other-ca" signs a client with the same
    name; "self-signed" signs itself; "expired" is from the right CA but out of date.
    """
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    out: dict[str, tuple[bytes, bytes]] = {}
    certs: dict[str, tuple[object, object]] = {}

    def name(cn: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def make(stem: str, cn: str, issuer: str | None, usage=None, sans=(), start=now - day, end=now + day) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        issuer_cert, issuer_key = certs[issuer] if issuer else (None, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer_cert.subject if issuer_cert else name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )
        if usage is None:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        certs[stem] = (cert, key)
        out[stem] = (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )

    client_auth, server_auth = ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH
    make("ca", "pol test CA", None)
    make("other-ca", "pol test CA", None)  # same name as the real CA, different key
    make("server", "pol test server", "ca", server_auth, [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    make("client", "pol test client", "ca", client_auth, [x509.DNSName("pol-client")])
    make("other-client", "pol test client", "other-ca", client_auth, [x509.DNSName("pol-client")])
    make("self-signed", "pol test client", None)
    make("expired", "pol test client", "ca", client_auth, [x509.DNSName("pol-client")], start=now - 3 * day, end=now - 2 * day)
    folder = tmp_path_factory.mktemp("pki")
    for stem, (cert, key) in out.items():
        (folder / f"{stem}.pem").write_bytes(cert)
        (folder / f"{stem}.key").write_bytes(key)
    return Pki(folder, out)


def test_mutual_tls_serves_only_a_valid_certificate_from_the_configured_ca(tmp_path, pki):
    """--tls-client-ca: no certificate, one from another CA (even with the same names), a self-signed or an expired one are refused; the good one is served."""
    folder = pki.folder
    log = tmp_path / "stderr.log"
    tls = ["--tls-cert", str(folder / "server.pem"), "--tls-key", str(folder / "server.key"), "--tls-client-ca", str(folder / "ca.pem")]
    server = Server(*launch(log, "--poll", "0", "--workers", "1", *tls), log)
    with grpc.secure_channel(server.address, pki.client("client")) as channel:
        if not serving(channel, 30):
            server.stop()
            raise AssertionError("never SERVING")

    def call(credentials) -> grpc.StatusCode | str:
        channel = grpc.secure_channel(server.address, credentials) if credentials else grpc.insecure_channel(server.address)
        with channel:
            request = pb.EvaluateRequest(content=pb.Content(annotations=_struct(OFFER)))
            try:
                return pb_grpc.PolicyServiceStub(channel).Evaluate(request, timeout=10).rule
            except grpc.RpcError as e:
                return e.code()

    try:
        refused = {
            "plaintext": call(None),
            "no certificate": call(grpc.ssl_channel_credentials(root_certificates=pki.pem["ca"][0])),
            "other CA": call(pki.client("other-client")),
            "self-signed": call(pki.client("self-signed")),
            "expired": call(pki.client("expired")),
        }
        assert refused == dict.fromkeys(refused, grpc.StatusCode.UNAVAILABLE)
        assert call(pki.client("client")) == "offer_smuggling"
    finally:
        assert server.stop() == 0


def _struct(mapping: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(mapping)
    return s


# ---- memory: compiled code is not kept forever ------------------------------------------------------


def test_a_replaced_policy_sets_generated_code_is_freed():
    """Every reload and ValidatePolicy compiles new Python; once a set is dropped its generated functions go too."""
    files = read_files(POLICIES)
    ps = engine.compile_sources(files).policy_set
    refs = [weakref.ref(p.decide) for p in ps.policies.values()] + [weakref.ref(v) for v in ps._validators.values()]
    del ps
    for _ in range(80):
        engine.compile_sources(files)
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


def test_a_condition_repeated_many_times_generates_one_copy_of_its_code():
    """`x and x and …` 2,000 times is `x`: generated code (and its compile time) does not grow with repeats."""
    schema = 'schema s {\n  topic: enum("spam", "news")\n  n?: int\n}\n'
    conditions = {
        "and": " and ".join(['topic == "spam"'] * 2_000),
        "or": " or ".join(["(has n and 10 / n > 1)"] * 2_000),  # may divide by zero: three-valued code
    }
    for name, condition in conditions.items():
        ps = engine.compile_sources({"f.pol": schema + f'policy p for s {{ rule r {{ when {condition} then remove because "x" }} }}\n'}).policy_set
        assert len(ps.policies["p"].source) < 2_000, name
    assert ps.evaluate({"topic": "news", "n": 2}).verdict == "remove"
    assert [w.code for w in ps.evaluate({"topic": "news", "n": 0}).warnings] == ["division_by_zero"]


def test_a_huge_integer_is_a_violation_that_gives_its_size_not_a_crash():
    """An integer of thousands of digits (Python callers, not JSON) is an input error that states its size, never a ValueError."""
    ps = engine.load(POLICIES)
    for annotations, field in (({**OFFER, "confidence": 10**5000}, "confidence"), ({**OFFER, "author": {"account_age_days": -(10**5000)}}, "author.account_age_days")):
        with pytest.raises(engine.InputError) as e:
            ps.evaluate(annotations)
        (violation,) = e.value.violations
        assert violation.field == field and "of 16610 bits" in violation.description and len(str(e.value)) < ECHO_LIMIT
