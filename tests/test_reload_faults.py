"""Faults during reload, one round of each class of bench/faults.py against a real `pol serve --workers 2`.

While 4 client threads call Evaluate non-stop, each state of the policy directory is held
until every worker has logged its outcome: broken states refused with `reload_failed`
naming the problem, valid versions live. Every answer must come from a valid version and
name it; no call may fail. (SIGKILL of a worker under load is in test_server_ops.py.)
"""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("grpc")

from bench import faults  # noqa: E402
from tests.conftest import pol  # noqa: E402


def run_round(tmp_path, fault) -> faults.Rig:
    with faults.serving(tmp_path, workers=2, poll=0.1) as rig:
        with rig.callers(4) as callers:
            fault(rig)
    assert callers.errors == [] and callers.failures == 0
    assert min(callers.calls) > 0, callers.calls
    assert rig.status == 0
    assert {e["policy_set_hash"] for e in rig.log.since(0, "reloaded")} <= set(rig.expected)
    return rig


def test_a_vanished_directory_is_refused_until_it_comes_back_valid(tmp_path):
    """rm -rf, an empty directory, a refill file by file, a rename away and back: only complete sets go live, no call fails."""
    rig = run_round(tmp_path, faults.vanish)
    assert rig.versions == 2 and rig.refusals == 3


def test_an_unreadable_file_is_refused_on_poll_and_on_sighup_without_hanging(tmp_path):
    """The test file as a FIFO, a broken symlink, a directory (and mode 000, not as root): refused by name, then a new version goes live."""
    rig = run_round(tmp_path, faults.unreadable)
    ways = len(faults.breakers())
    assert rig.refusals == 2 * ways and rig.versions == ways


def test_a_half_written_file_or_checkout_never_goes_live(tmp_path):
    """An editor's truncate-then-write save and a file-by-file checkout of a schema change: every partial state refused."""
    rig = run_round(tmp_path, faults.half)
    assert rig.versions == 2 and rig.refusals == 1 + 2 + 5


def test_bad_content_is_refused_and_a_huge_valid_file_goes_live(tmp_path):
    """Invalid UTF-8, an empty file, 4 MB of garbage, a non-UTF-8 file name: refused; a 2 MB valid file goes live."""
    rig = run_round(tmp_path, functools.partial(faults.content, garbage=4_000_000, valid=2_000_000))  # bench/faults.py: 20 and 5 MB
    assert rig.versions == 2 and rig.refusals == 4


@pytest.mark.parametrize(("files", "problem"), [({}, "no policies"), ({"empty.pol": b""}, "empty file")])
def test_serve_refuses_to_start_on_an_empty_set_or_an_empty_file(tmp_path, files, problem):
    """An empty directory (no policies) or a set with an empty file is what a half-done write looks like: never served."""
    policies = tmp_path / "policies"
    policies.mkdir()
    if files:
        for name, data in {**faults.version(0), **files}.items():
            (policies / name).write_bytes(data)
    r = pol("serve", "--policies", str(policies), "--address", "127.0.0.1:0", "--workers", "1")
    assert r.returncode == 1 and problem in r.stderr and "refusing to start" in r.stderr, r.stderr
