"""The live policy set: read lock-free, replaced atomically.

A `Live` holds one immutable `engine.PolicySet`. Handlers read `live.policy_set` once
per call and use that object throughout, so a call is decided by one set from start to
finish; a reload builds a new set and swaps it in with a single attribute assignment
(atomic in CPython), so readers never see a half-built set and never take a lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import engine

__all__ = ["Live"]


class Live:
    """The policy set decisions are made with (None until the first one is loaded)."""

    def __init__(self, policy_set: engine.PolicySet | None = None) -> None:
        self.policy_set = policy_set

    def swap(self, policy_set: engine.PolicySet) -> engine.PolicySet | None:
        """Make `policy_set` live; return the one it replaces."""
        old, self.policy_set = self.policy_set, policy_set
        return old
