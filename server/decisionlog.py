"""The decision log: one JSON line per decision, with no annotation values unless asked.

A line has the same shape as the service's other structlog JSON lines (`event`,
`level`, `timestamp`, and `worker`/`pid` under a supervisor) plus the request id,
content id, verdict, deciding policy and rule, set hash and latency. It is rendered
here rather than by structlog's processor chain because that chain cost about 9 us per
decision, a quarter of the service's time per item; here the part that depends only on
the decision's shape (verdict, policy, rule, set hash) is rendered once per shape, and a
batch's lines go out in one write. server/_wire.c writes the lines of the items it
decides from the same parts (`line_parts`, `rule_parts`). On a terminal, where structlog
renders for people, decisions go through structlog.

Every line is written whole by one write(2), so lines of concurrent calls and of
several workers sharing stderr never interleave.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote

import structlog

__all__ = ["DecisionLog"]


class DecisionLog:
    """Where decision lines go: JSON to a file descriptor, or through structlog."""

    def __init__(self, fd: int | None, *, static: dict | None = None, annotations: bool = False) -> None:
        """`fd` None: log through structlog. `static`: fields every line carries (worker, pid)."""
        self.fd = fd
        self.annotations = annotations
        self._end = '"' + _members((static or {}).items()) + "}\n"  # closes the timestamp, then the static fields
        self._rules: dict[str, dict[tuple, str]] = {}  # set hash -> Decision.shape -> _rule_part
        self._clock = (-2, "")  # (a second, its ISO 8601 rendering as a %-format of the microseconds): one attribute, so threads see a consistent pair
        self._log = structlog.get_logger("pol.decision")

    def line(self, decision, shape: tuple | None, request_id: str, content_id: str, latency: float, annotations: dict | None = None) -> str | None:
        """The JSON line for one decision (newline included); None when it went through structlog.

        `shape`: `decision.shape`, which keys the part of the line that depends on it (None: not cached).
        A line is `_head(request_id)`, the content id, the rule part, `_BETWEEN`, the latency in ms
        to 3 decimals, `_BEFORE_TIME`, the ISO 8601 UTC time to the microsecond, then `_end`:
        server/_wire.c's `decide` writes its lines from the same parts.
        """
        latency_ms = f"{latency * 1000:.3f}"
        if self.fd is None:
            extra = {"annotations": annotations} if self.annotations and annotations is not None else {}
            self._log.info(
                "decision", request_id=request_id, content_id=content_id, verdict=decision.verdict, policy=decision.policy,
                rule=decision.rule, policy_set_hash=decision.policy_set_hash, latency_ms=float(latency_ms), **extra,
            )
            return None
        middle = self.rule_parts(decision.policy_set_hash).get(shape) if shape is not None else None
        if middle is None:
            middle = self._rule_part(decision, shape)
        if self.annotations and annotations is not None:
            latency_ms += ', "annotations": ' + json.dumps(annotations, ensure_ascii=True, default=str)
        now = time.time()
        second, stamp = self._clock
        if now - second >= 1.0 or now < second:
            second = int(now)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + ".%06dZ"
            self._clock = (second, stamp)
        return "".join((_head(request_id), _quote(content_id), middle, _BETWEEN, latency_ms, _BEFORE_TIME, stamp % ((now - second) * 1_000_000), self._end))

    def line_parts(self, request_id: str) -> tuple[Callable[[str], str], tuple[str, str, str, str]] | None:
        """For server/_wire.c's `decide`: (how a content id is quoted, the fixed parts of a call's lines);
        None when lines go through structlog, or carry annotations."""
        if self.fd is None or self.annotations:
            return None
        return _quote, (_head(request_id), _BETWEEN, _BEFORE_TIME, self._end)

    def rule_parts(self, policy_set_hash: str) -> dict[tuple, str]:
        """The rule parts of one set's lines, by Decision.shape."""
        parts = self._rules.get(policy_set_hash)
        if parts is None:
            if len(self._rules) >= 4:  # sets replaced by reloads
                self._rules.clear()
            parts = self._rules[policy_set_hash] = {}
        return parts

    def write(self, lines: list[str | None]) -> None:
        """Write the lines of one call at once."""
        if self.fd is None:
            return
        data = "".join(line for line in lines if line).encode("ascii")
        while data:
            data = data[os.write(self.fd, data):]

    def _rule_part(self, decision, shape: tuple | None) -> str:
        """`, "verdict": ..., "policy_set_hash": ...` for `decision`; kept for its shape."""
        part = _members(zip(("verdict", "policy", "rule", "policy_set_hash"), (decision.verdict, decision.policy, decision.rule, decision.policy_set_hash)))
        if shape is not None:
            parts = self.rule_parts(decision.policy_set_hash)
            if len(parts) > 10_000:  # callers naming many subsets of policies: start over
                parts.clear()
            parts[shape] = part
        return part


_BETWEEN = ', "latency_ms": '
_BEFORE_TIME = ', "event": "decision", "level": "info", "timestamp": "'


def _head(request_id: str) -> str:
    return f'{{"request_id": {_quote(request_id)}, "content_id": '


def _members(pairs) -> str:
    """`, "key": value` for each pair: JSON object members to splice into a line."""
    return "".join(f", {_quote(k)}: {json.dumps(v)}" for k, v in pairs)
