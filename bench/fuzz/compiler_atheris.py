#!/usr/bin/env python3
"""Coverage-guided compiler fuzzing with atheris: bytes in, diagnostics or a policy set out.

Run from the repo root (atheris: `pip install atheris`):

    python bench/fuzz/compiler_atheris.py -max_total_time=300 -timeout=5 bench/fuzz/corpus

Each input is one .pol file's bytes, compiled next to the shipped schema. The invariant is
tests/test_fuzz_compiler.py's `check_invariants`: no exception, under 5 s, every diagnostic
renders with its span inside the file, and a file that parses formats to the same AST.
The corpus directory is seeded with the shipped policies and language examples on first run.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["engine"]):
    from tests.test_fuzz_compiler import check_invariants  # noqa: E402

SCHEMA = (ROOT / "policies" / "schema.pol").read_bytes()


def TestOneInput(data: bytes) -> None:
    check_invariants({"schema.pol": SCHEMA, "fuzz.pol": data}, "fuzz.pol")


def _seed(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for p in [*sorted((ROOT / "policies").glob("*.pol")), *sorted((ROOT / "tests" / "language").glob("*.pol"))]:
        (corpus / p.name).write_bytes(p.read_bytes())


if __name__ == "__main__":
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    for d in dirs:
        _seed(Path(d))
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
