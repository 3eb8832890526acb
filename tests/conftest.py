"""Shared fixtures: the shipped policy set and a helper to compile policy text."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


@pytest.fixture(scope="session")
def shipped() -> engine.PolicySet:
    return engine.load(POLICIES)


def compile_ok(*sources: str, **named: str) -> engine.PolicySet:
    """Compile policy text that must check clean; fail the test with the diagnostics if not."""
    files = {f"f{i}.pol": s for i, s in enumerate(sources)} | named
    result = engine.compile_sources(files)
    errors = [d for d in result.diagnostics if d.is_error]
    assert not errors, engine.render_all(errors)
    return result.policy_set


SCHEMA = (POLICIES / "schema.pol").read_text()
