"""The soak benchmark's short version: 20 s of mixed load on `pol serve --workers 2` with a reload every 3 s.

bench/soak.py runs it for 5 minutes. The RSS baseline is taken after a 5 s warm-up (the
thread pool, gRPC buffers and the first reloads' second compiled set grow memory at first,
without leaking), so drift is measured over the last 15 s.
"""

from __future__ import annotations

import pytest

pytest.importorskip("grpc")

from bench import soak  # noqa: E402


def test_twenty_seconds_of_mixed_load_with_reloads_fails_nothing_and_holds_memory_steady():
    """Unary, batch and stream callers see 0 errors and every version written, and worker RSS drifts under 10%."""
    lines: list[str] = []
    r = soak.run(20, workers=2, warmup=5, reload_every=3, window=10, out=lines.append)
    report = "\n".join(lines)
    assert r.failures == 0 and r.errors == () and r.lost == 0, report
    assert all(r.calls.get(kind, 0) > 0 for kind in ("unary", "batch", "stream")), report
    assert r.reloads >= 4 and r.reloads_seen == r.reloads and r.refused == 0, report
    assert sum(r.reloads_by.values()) >= 2 * r.reloads, report  # each version reloaded by both workers
    assert len(r.rss) >= 15 and r.drift < soak.DRIFT_LIMIT, report
