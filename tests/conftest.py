"""Shared fixtures: the shipped policy set and a helper to compile policy text."""

from __future__ import annotations

import os
import subprocess
import sys
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


UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"


def pol(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `pol` command (`python -m cli ARGS`) from the repo root, as a user or CI would."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=environ, input=stdin, capture_output=True, text=True, timeout=120
    )


def assert_golden(path: Path, actual: str) -> None:
    """`actual` equals the golden file; UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"no {path.name}; run with UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text(encoding="utf-8")
