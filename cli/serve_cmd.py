"""`pol serve`: serve a policy set over gRPC (PolicyService, health, reflection).

Refuses to start on a set with errors or failing tests (exit 1). Prints
`serving on HOST:PORT` on stdout once listening (useful with port 0), logs JSON lines
on stderr. SIGHUP reloads; SIGTERM drains and exits 0. `--workers N` (default: one per
core) runs a supervisor and N worker processes sharing the port. See docs/operations.md.
grpc is imported inside `run`, so other verbs never pay for it.
"""

from __future__ import annotations

import os

from .main import UsageError

HELP = "serve a policy set over gRPC"


def add_arguments(parser) -> None:
    parser.add_argument("--policies", default="policies", metavar="DIR", help="the policy set (default: policies)")
    parser.add_argument("--address", default="127.0.0.1:50051", metavar="HOST:PORT", help="where to listen (default: 127.0.0.1:50051; port 0 picks one)")
    parser.add_argument("--workers", type=_positive, default=None, metavar="N", help="server processes sharing the port through SO_REUSEPORT (default: one per core; 1: no supervisor)")
    parser.add_argument("--threads", type=_positive, default=32, metavar="N", help="concurrent calls per process (default: 32)")
    parser.add_argument("--max-message-bytes", type=_positive, default=4 << 20, metavar="N", help="largest request or response (default: 4 MiB)")
    parser.add_argument("--max-batch", type=_positive, default=1000, metavar="N", help="most items in one EvaluateBatch (default: 1000)")
    parser.add_argument("--max-depth", type=_positive, default=32, metavar="N", help="deepest nesting of annotations (default: 32)")
    parser.add_argument("--max-source-bytes", type=_positive, default=1 << 20, metavar="N", help="largest ValidatePolicy source (default: 1 MiB)")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS", help="time in-flight calls get after SIGTERM (default: 10)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help="how often to look for changes under DIR; 0: reload on SIGHUP only (default: 1)")
    parser.add_argument("--plaintext", action="store_true", help="allow plaintext on a non-loopback address (loopback is plaintext without TLS flags)")
    parser.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM); enables TLS")
    parser.add_argument("--tls-key", metavar="FILE", help="server private key (PEM)")
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
    limits = Limits(max_batch=args.max_batch, max_depth=args.max_depth, max_source_bytes=args.max_source_bytes, max_message_bytes=args.max_message_bytes)
    options = Options(
        policies=args.policies,
        address=args.address,
        limits=limits,
        threads=args.threads,
        grace=args.grace,
        poll=args.poll,
        plaintext=args.plaintext,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        workers=args.workers if args.workers is not None else (os.cpu_count() or 1),
    )
    return serve(options)
