"""Small value records shared by the core and the wire: the work's data and a heartbeat answer."""

from __future__ import annotations

from typing import Any

import attrs

from workstate._table import State

__all__ = ["WORK_DATA_TYPES", "HeartbeatResult", "WorkData"]

WORK_DATA_TYPES = frozenset({"session", "healthcheck"})
"""The ``data.type`` values the API and the newer SDKs know."""


@attrs.frozen(kw_only=True)
class WorkData:
    """What the work is about: ``{"type": "session", "id": "sesn_..."}``."""

    type: str = "session"
    """``session`` (or ``healthcheck``, known to newer SDKs)."""
    id: str
    """The session id."""

    def to_json(self) -> dict[str, Any]:
        """The API shape."""
        return {"type": self.type, "id": self.id}


@attrs.frozen(kw_only=True)
class HeartbeatResult:
    """The answer to a successful heartbeat (``BetaSelfHostedWorkHeartbeatResponse``)."""

    last_heartbeat: str
    """The token to echo next time; an empty string when no heartbeat was ever recorded."""
    lease_extended: bool
    """Whether this heartbeat extended the lease."""
    state: State
    """The item's state after the heartbeat."""
    ttl_seconds: int
    """The effective TTL of the lease."""

    def to_json(self) -> dict[str, Any]:
        """The API shape."""
        return {
            "type": "work_heartbeat",
            "last_heartbeat": self.last_heartbeat,
            "lease_extended": self.lease_extended,
            "state": self.state.value,
            "ttl_seconds": self.ttl_seconds,
        }
