"""The committed generated code under server/gen/ is exactly what proto/ generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("grpc_tools", reason="grpcio-tools is in the [test] extra")

GEN = ROOT / "server" / "gen"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    """Regenerating from proto/ gives byte-identical server/gen/ files (run `python -m server.gen.regenerate`)."""
    from server.gen.regenerate import generate

    written = generate(tmp_path)
    assert written, "protoc generated nothing"
    committed = sorted(p.relative_to(GEN) for p in GEN.rglob("*") if p.is_file() and p.name != "regenerate.py" and "__pycache__" not in p.parts and p.relative_to(GEN) != Path("__init__.py"))
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert committed == fresh
    for rel in fresh:
        assert (GEN / rel).read_text(encoding="utf-8") == (tmp_path / rel).read_text(encoding="utf-8"), f"{rel} is stale"


def test_generated_code_imports_as_server_gen() -> None:
    """The service stubs import their messages as `server.gen.pol.v1`, with no sys.path tricks."""
    from server.gen.pol.v1 import policy_service_pb2, policy_service_pb2_grpc

    assert policy_service_pb2.DESCRIPTOR.package == "pol.v1"
    assert policy_service_pb2_grpc.PolicyServiceStub is not None
    assert "PolicyService" in policy_service_pb2.DESCRIPTOR.services_by_name
