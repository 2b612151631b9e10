"""Profiles: plain data answering every question where the documented providers disagree.

Theory of operation
-------------------
Spec §7 lists the behaviours on which the official SDKs' behaviour (``anthropic``) and Qoder's
reference (``qoder``) differ.  A :class:`Profile` answers each of them with a plain value; the
core reads these values and never branches on a provider's name.  Users may build their own
profile with :func:`attrs.evolve` or by calling :class:`Profile` directly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from workstate._records import is_int

__all__ = ["ANTHROPIC", "PROFILES", "QODER", "Precision", "Profile", "evolve_profile"]


class Precision(enum.Enum):
    """How finely a timestamp is recorded and written."""

    MICROSECONDS = "microseconds"
    SECONDS = "seconds"


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not is_int(value) or value < 0:
        raise ValueError(f"Profile.{attribute.name} must be a non-negative int, got {value!r}")


@attrs.frozen(kw_only=True)
class Profile:
    """Answers to the questions of spec §7, and the limits of spec §4 and §8."""

    name: str
    """A label for messages and reports."""
    stop_stopped_is_noop: bool
    """Stop (graceful or forced) on a ``stopped`` item: True answers 200 with the item
    unchanged, False answers 409."""
    heartbeat_stopped_is_noop: bool
    """Heartbeat on a ``stopped`` item: True answers 200 with ``state: "stopped"`` and
    ``lease_extended: false``, False answers 409."""
    queued_heartbeat_token_is_precondition_failed: bool
    """Heartbeat on a ``queued`` item that carries a timestamp token: True answers 412 with the
    server's ``current_state`` (the lease was cleared), False answers 409 like any other
    heartbeat on a queued item."""
    precondition_error_type: str
    """The API error ``type`` of a 412."""
    conflict_error_type: str
    """The API error ``type`` of a lifecycle 409."""
    ack_binds_worker: bool
    """True: an ack whose worker id differs from the one the item was delivered to is 409."""
    default_ttl_seconds: int = attrs.field(validator=_non_negative)
    """The lease TTL when a heartbeat does not ask for one, and the TTL an ack starts with."""
    min_ttl_seconds: int = attrs.field(validator=_non_negative)
    """Lower bound of the effective TTL (a desired TTL below it is raised to it)."""
    max_ttl_seconds: int = attrs.field(validator=_non_negative)
    """Upper bound of the effective TTL (a desired TTL above it is lowered to it)."""
    lifecycle_precision: Precision
    """Precision of ``created_at``, ``acknowledged_at``, ``started_at``, ``stop_requested_at``
    and ``stopped_at``.  Heartbeat times always keep microseconds."""
    min_reclaim_older_than_ms: int = attrs.field(validator=_non_negative)
    """The smallest ``reclaim_older_than_ms`` a poll may ask for."""
    default_reclaim_older_than_ms: int = attrs.field(default=5000, validator=_non_negative)
    """The redelivery window when a poll does not name one."""
    max_metadata_pairs: int = attrs.field(default=16, validator=_non_negative)
    """How many metadata pairs an item may hold."""
    max_metadata_key_length: int = attrs.field(default=64, validator=_non_negative)
    """The longest metadata key, in characters."""
    max_metadata_value_length: int = attrs.field(default=512, validator=_non_negative)
    """The longest metadata value, in characters."""

    def __attrs_post_init__(self) -> None:
        if self.default_reclaim_older_than_ms < self.min_reclaim_older_than_ms:
            raise ValueError(
                "Profile.default_reclaim_older_than_ms must be at least "
                f"min_reclaim_older_than_ms ({self.min_reclaim_older_than_ms}), "
                f"got {self.default_reclaim_older_than_ms}"
            )
        if not 0 < self.min_ttl_seconds <= self.default_ttl_seconds <= self.max_ttl_seconds:
            raise ValueError(
                "Profile TTLs must satisfy 0 < min_ttl_seconds <= default_ttl_seconds <= "
                f"max_ttl_seconds, got {self.min_ttl_seconds}, {self.default_ttl_seconds}, "
                f"{self.max_ttl_seconds}"
            )

    def clamp_ttl(self, desired: int | None) -> int:
        """The effective TTL for a heartbeat that asked for ``desired`` seconds (or nothing)."""
        if desired is None:
            return self.default_ttl_seconds
        return min(max(desired, self.min_ttl_seconds), self.max_ttl_seconds)


ANTHROPIC = Profile(
    name="anthropic",
    stop_stopped_is_noop=False,
    heartbeat_stopped_is_noop=True,
    queued_heartbeat_token_is_precondition_failed=True,
    precondition_error_type="invalid_request_error",
    conflict_error_type="conflict_error",
    ack_binds_worker=False,
    default_ttl_seconds=120,
    min_ttl_seconds=10,
    max_ttl_seconds=600,
    lifecycle_precision=Precision.MICROSECONDS,
    min_reclaim_older_than_ms=1,
)
"""The default: the behaviour of the official SDKs and the Claude Platform API."""

QODER = Profile(
    name="qoder",
    stop_stopped_is_noop=True,
    heartbeat_stopped_is_noop=False,
    queued_heartbeat_token_is_precondition_failed=False,
    precondition_error_type="precondition_failed_error",
    conflict_error_type="invalid_request_error",
    ack_binds_worker=True,
    default_ttl_seconds=60,
    min_ttl_seconds=10,
    max_ttl_seconds=600,
    lifecycle_precision=Precision.SECONDS,
    min_reclaim_older_than_ms=0,
)
"""Qoder Cloud Agents' reference behaviour."""

PROFILES: Mapping[str, Profile] = MappingProxyType({p.name: p for p in (ANTHROPIC, QODER)})
"""The shipped profiles by name."""


def evolve_profile(profile: Profile, overrides: Mapping[str, Any]) -> Profile:
    """``profile`` with the fields in ``overrides`` changed, validated like any profile.

    A ``default_ttl_seconds`` outside the profile's TTL range widens the range to include it,
    unless the overrides set that bound too: ``{"default_ttl_seconds": 2}`` on
    :data:`ANTHROPIC` (range 10-600) gives a default of 2 and a range of 2-600.  An unknown
    field or a value the profile rejects raises :class:`ValueError` naming it.

    >>> evolve_profile(ANTHROPIC, {"default_ttl_seconds": 2}).min_ttl_seconds
    2
    """
    names = [f.name for f in attrs.fields(Profile)]
    for name in overrides:
        if name not in names:
            raise ValueError(f"Profile has no field {name!r}; the fields are {names}")
    changes = dict(overrides)
    default = changes.get("default_ttl_seconds")
    if is_int(default):
        if "min_ttl_seconds" not in changes and default < profile.min_ttl_seconds:
            changes["min_ttl_seconds"] = default
        if "max_ttl_seconds" not in changes and default > profile.max_ttl_seconds:
            changes["max_ttl_seconds"] = default
    return attrs.evolve(profile, **changes) if changes else profile
