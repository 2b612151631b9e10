"""Small value records shared by the core and the wire: the work's data and a heartbeat answer."""

from __future__ import annotations

from typing import Any, TypeGuard

import attrs

from workstate._errors import InvalidInputError
from workstate._table import State

__all__ = [
    "WORK_DATA_TYPES",
    "HeartbeatResult",
    "WorkData",
    "check_id",
    "check_work_data",
    "is_int",
]

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


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool`` (JSON's true is no number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_id(value: object, key: str, prefix: str = "", *, got_key: str | None = None) -> str:
    """``value`` if it is a string of ``prefix`` and at least one more character, else a 400.

    The one rule for API ids (``work_...``, ``env_...``) and, with no prefix, non-empty strings.
    """
    if not isinstance(value, str) or not value.startswith(prefix) or len(value) <= len(prefix):
        shape = f"a string starting with {prefix!r}" if prefix else "a non-empty string"
        raise InvalidInputError(
            f"{key} must be {shape}, got {value!r}", key=key, expected=shape, got=value
        )
    return value


def check_work_data(kind: object, ident: object) -> WorkData:
    """A :class:`WorkData` of ``kind`` and ``ident``, or a 400 naming the key at fault."""
    if not isinstance(kind, str) or kind not in WORK_DATA_TYPES:
        raise InvalidInputError(
            f"data.type must be one of {sorted(WORK_DATA_TYPES)}, got {kind!r}",
            key="data.type",
            expected=f"one of {sorted(WORK_DATA_TYPES)}",
            got=kind,
        )
    return WorkData(type=kind, id=check_id(ident, "data.id"))
