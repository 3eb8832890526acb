"""bench/reliability.py: benchmark rows in, the table of docs/reliability.md out (sample rows in a temp dir)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "bench" / "reliability.py"
DOC = "# Reliability\n\nIntro stays.\n\n<!-- reliability:begin -->\nold table\n<!-- reliability:end -->\n\nOutro stays.\n"

SOAK = {
    "class": "soak: mixed",
    "inputs": "unary, batch and stream | reloads",
    "load": "120,000 calls at 400/s for 300 s",
    "faults": "10 reloads",
    "survived": True,
    "errors": 0,
    "lost": 0,
    "command": "python bench/soak.py --seconds 300",
}
FUZZ = {
    "class": "compiler fuzzing",
    "inputs": "100,000 mutated\npolicy sets",
    "load": "",
    "faults": "",
    "survived": False,
    "errors": 2,
    "lost": 0,
    "command": "python bench/fuzz/run.py --cases 100000 --seed 0",
}


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(tmp_path / "rows"), "--doc", str(tmp_path / "doc.md"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def setup(tmp_path: Path, rows: dict[str, object]) -> None:
    (tmp_path / "rows").mkdir(parents=True)
    for name, row in rows.items():
        (tmp_path / "rows" / name).write_text(row if isinstance(row, str) else json.dumps(row), encoding="utf-8")
    (tmp_path / "doc.md").write_text(DOC, encoding="utf-8")


def table(tmp_path: Path) -> list[str]:
    doc = (tmp_path / "doc.md").read_text(encoding="utf-8")
    return doc.split("<!-- reliability:begin -->\n")[1].split("<!-- reliability:end -->")[0].splitlines()


def test_rows_become_one_table_line_each_in_file_name_order_between_the_markers(tmp_path):
    """Each JSON row is one line of the table, in file-name order; the rest of the doc is untouched."""
    setup(tmp_path, {"soak-mixed.json": SOAK, "fuzz-compiler.json": FUZZ, "notes.txt": "ignored"})
    result = run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert table(tmp_path) == [
        "| class | inputs tried | load held | faults injected | survived | errors | data lost | command |",
        "| --- | --- | --- | --- | --- | ---: | ---: | --- |",
        "| compiler fuzzing | 100,000 mutated policy sets | – | – | **no** | **2** | 0 | `python bench/fuzz/run.py --cases 100000 --seed 0` |",
        "| soak: mixed | unary, batch and stream \\| reloads | 120,000 calls at 400/s for 300 s | 10 reloads | yes | 0 | 0 | `python bench/soak.py --seconds 300` |",
    ]
    doc = (tmp_path / "doc.md").read_text(encoding="utf-8")
    assert doc.startswith("# Reliability\n\nIntro stays.\n\n<!-- reliability:begin -->\n") and doc.endswith("<!-- reliability:end -->\n\nOutro stays.\n")
    assert "failing (not survived, errors or data lost): compiler fuzzing" in result.stdout


def test_rendering_twice_gives_the_same_doc_and_check_agrees(tmp_path):
    """Regenerating is idempotent; --check passes on a fresh doc and fails once a row changes."""
    setup(tmp_path, {"soak-mixed.json": SOAK})
    assert run(tmp_path).returncode == 0
    first = (tmp_path / "doc.md").read_text(encoding="utf-8")
    assert run(tmp_path).returncode == 0
    assert (tmp_path / "doc.md").read_text(encoding="utf-8") == first
    assert run(tmp_path, "--check").returncode == 0
    (tmp_path / "rows" / "soak-mixed.json").write_text(json.dumps({**SOAK, "errors": 1}), encoding="utf-8")
    assert run(tmp_path, "--check").returncode == 1
    assert (tmp_path / "doc.md").read_text(encoding="utf-8") == first


def test_no_rows_says_so(tmp_path):
    """With no results yet, the table says to run the benchmarks."""
    setup(tmp_path, {})
    assert run(tmp_path).returncode == 0
    assert "no results yet" in table(tmp_path)[2]


def test_a_bad_row_names_its_file_and_writes_nothing(tmp_path):
    """A row that is not JSON, misses a key or has a wrong type is an error naming the file; the doc is left as it was."""
    bad = {
        "broken.json": "{not json",
        "missing.json": {k: v for k, v in SOAK.items() if k != "lost"},
        "typed.json": {**SOAK, "errors": "0"},
        "list.json": [SOAK],
    }
    for name, row in bad.items():
        setup(tmp_path / name, {name: row})
        result = run(tmp_path / name)
        assert result.returncode == 2 and name in result.stderr, (name, result.stderr)
        assert (tmp_path / name / "doc.md").read_text(encoding="utf-8") == DOC


def test_a_doc_without_the_markers_is_an_error(tmp_path):
    """The table goes only between the markers: a doc without them is left alone, exit 2."""
    setup(tmp_path, {"soak-mixed.json": SOAK})
    (tmp_path / "doc.md").write_text("# no markers\n", encoding="utf-8")
    result = run(tmp_path)
    assert result.returncode == 2 and "reliability:begin" in result.stderr
    assert (tmp_path / "doc.md").read_text(encoding="utf-8") == "# no markers\n"
