"""`pol serve`: serve a policy set over gRPC (PolicyService, health, reflection).

Refuses to start on a set with errors or failing tests (exit 1). Prints
`serving on HOST:PORT` on stdout once listening (useful with port 0), logs JSON lines
on stderr. SIGHUP reloads; SIGTERM drains and exits 0. `--workers N` (default: one per
core) runs a supervisor and N worker processes sharing the port. See docs/operations.md.
grpc is imported inside `run`, so other verbs never pay for it.
"""

from __future__ import annotations

import dataclasses
import os

from .main import UsageError

HELP = "serve a policy set over gRPC"


def _named(cls, args) -> dict:
    """The parsed flags named like the fields of dataclass `cls`."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def add_arguments(parser) -> None:
    parser.add_argument("--policies", default="policies", metavar="DIR", help="the policy set (default: policies)")
    parser.add_argument("--address", default="127.0.0.1:50051", metavar="HOST:PORT", help="where to listen (default: 127.0.0.1:50051; port 0 picks one)")
    parser.add_argument("--workers", type=_positive, default=None, metavar="N", help="server processes sharing the port through SO_REUSEPORT (default: one per core; 1: no supervisor)")
    parser.add_argument("--threads", type=_positive, default=32, metavar="N", help="threads per process for blocking work: a ValidatePolicy call holds one while its compile runs; calls themselves hold none (default: 32)")
    parser.add_argument("--max-streams", type=_positive, default=None, metavar="N", help="streaming calls open at once per process; more are refused with RESOURCE_EXHAUSTED (default: half of --threads)")
    parser.add_argument("--handshake-timeout", type=_timeout(allow_off=False), default=20.0, metavar="SECONDS", help="time a new connection gets to complete its handshake (default: 20)")
    parser.add_argument("--max-connection-idle", type=_timeout(allow_off=True), default=300.0, metavar="SECONDS", help="close a connection that carries no call for this long; 0: never (default: 300)")
    parser.add_argument("--max-connection-age", type=_timeout(allow_off=True), default=0.0, metavar="SECONDS", help="close every connection after this long, its calls getting --grace to finish; 0: never (default: 0)")
    parser.add_argument("--trim-interval", type=_timeout(allow_off=True), default=10.0, metavar="SECONDS", help="how often freed memory is returned to the system after calls; 0: never (default: 10)")
    parser.add_argument("--max-message-bytes", type=_positive, default=4 << 20, metavar="N", help="largest request or response (default: 4 MiB)")
    parser.add_argument("--max-batch", type=_positive, default=1000, metavar="N", help="most items in one EvaluateBatch (default: 1000)")
    parser.add_argument("--max-depth", type=_positive, default=32, metavar="N", help="deepest nesting of annotations (default: 32)")
    parser.add_argument("--max-source-bytes", type=_positive, default=1 << 20, metavar="N", help="largest ValidatePolicy source (default: 1 MiB)")
    parser.add_argument("--no-validate-policy", dest="validate_policy", action="store_false", help="turn the ValidatePolicy RPC off: it answers UNIMPLEMENTED")
    parser.add_argument("--validate-timeout", type=_seconds, default=5.0, metavar="SECONDS", help="longest one ValidatePolicy compile may take (default: 5)")
    parser.add_argument("--validate-memory-mb", type=_positive, default=512, metavar="N", help="memory cap of the process compiling a ValidatePolicy source, in MiB (default: 512)")
    parser.add_argument("--validate-concurrency", type=_positive, default=2, metavar="N", help="ValidatePolicy calls compiling at once per server process; more are refused (default: 2)")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS", help="time in-flight calls get after SIGTERM (default: 10)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help="how often to look for changes under DIR; 0: reload on SIGHUP only (default: 1)")
    parser.add_argument("--plaintext", action="store_true", help="allow plaintext on a non-loopback address (loopback is plaintext without TLS flags)")
    parser.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM); enables TLS")
    parser.add_argument("--tls-key", metavar="FILE", help="server private key (PEM)")
    parser.add_argument("--log-annotations", action="store_true", help="put each decision's annotations in its log line (default: no annotation values are logged)")
    parser.add_argument("--tls-client-ca", metavar="FILE", help="CA for client certificates (PEM); enables mutual TLS")


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _timeout(*, allow_off: bool):
    """A number of seconds for a gRPC channel argument (whole milliseconds in a C int); 0 too when `allow_off`."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (0 <= value <= MAX_SECONDS) or (value < 0.001 and not (allow_off and value == 0)):
            least = "0, or from 0.001" if allow_off else "from 0.001"
            raise argparse.ArgumentTypeError(f"must be {least} to {MAX_SECONDS} seconds, not {text}")
        return value

    return parse


MAX_SECONDS = 2_000_000  # about 23 days: gRPC takes these as milliseconds in a C int


def run(args) -> int:
    from server.app import Options, configure_logging, is_loopback, serve
    from server.service import Limits

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    if not args.tls_cert and not args.plaintext and not is_loopback(args.address):
        raise UsageError(f"{args.address} is not a loopback address: give --tls-cert/--tls-key, or --plaintext to serve without TLS")
    configure_logging()
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    # the flags carry the fields' names, so a new field reaches the server by its name alone
    options = Options(**{**_named(Options, args), "limits": Limits(**_named(Limits, args)), "max_streams": args.max_streams or 0, "workers": workers})
    return serve(options)
