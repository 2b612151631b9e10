"""The invariants every work item keeps, and a checker that lists every one a record breaks.

Theory of operation
-------------------
Operations can only produce records that keep these invariants (the property tests prove it);
records that come from outside (the wire, a trace, another implementation) may not.  The
checker never stops at the first problem: it returns a :class:`Violation` for each broken rule,
naming the key involved, so a report can show all of them at once.

Timestamps are compared at the profile's lifecycle precision: under whole-second lifecycle
times a heartbeat at 10.5 s and a stop request recorded as 10 s are in order.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping

import attrs

from workstate._profile import Precision, Profile
from workstate._table import LEASE_STATES, State
from workstate._time import format_time, truncate

__all__ = ["Violation", "invariant_violations"]


# Which lifecycle timestamps must be set (True), must be null (False), or may be either (None).
_NULLNESS: dict[State, dict[str, bool | None]] = {
    State.QUEUED: dict.fromkeys(
        ("acknowledged_at", "started_at", "latest_heartbeat_at", "stop_requested_at", "stopped_at"),
        False,
    ),
    State.STARTING: {
        "acknowledged_at": True,
        "started_at": False,
        "latest_heartbeat_at": False,
        "stop_requested_at": False,
        "stopped_at": False,
    },
    State.ACTIVE: {
        "acknowledged_at": True,
        "started_at": True,
        "latest_heartbeat_at": True,
        "stop_requested_at": False,
        "stopped_at": False,
    },
    State.STOPPING: {
        "acknowledged_at": True,
        "started_at": None,
        "latest_heartbeat_at": None,
        "stop_requested_at": True,
        "stopped_at": False,
    },
    State.STOPPED: {
        "acknowledged_at": None,
        "started_at": None,
        "latest_heartbeat_at": None,
        "stop_requested_at": None,
        "stopped_at": True,
    },
}

# (earlier, later): the later one, where both are set, is never before the earlier one.
_ORDER = (
    ("created_at", "acknowledged_at"),
    ("acknowledged_at", "started_at"),
    ("started_at", "latest_heartbeat_at"),
    ("acknowledged_at", "stop_requested_at"),
    ("latest_heartbeat_at", "stop_requested_at"),
    ("created_at", "stopped_at"),
    ("acknowledged_at", "stopped_at"),
    ("latest_heartbeat_at", "stopped_at"),
    ("stop_requested_at", "stopped_at"),
)


@attrs.frozen(kw_only=True)
class Violation:
    """One broken invariant."""

    key: str
    """The field (wire key, or private field name) the problem is about."""
    rule: str
    """A short stable name for the rule, e.g. ``null-in-state`` or ``order``."""
    message: str
    """A plain explanation."""


def invariant_violations(work: object, *, private: bool = True) -> list[Violation]:
    """Every invariant ``work`` (a :class:`~workstate.Work`) breaks; empty when it is sound.

    With ``private=False`` only the API's fields are checked (what a wire record can show).
    """
    from workstate._work import Work

    assert isinstance(work, Work)
    out: list[Violation] = []
    profile = work.body.profile
    state = work.state
    stamps: dict[str, _dt.datetime | None] = {
        "created_at": work.body.created_at,
        "acknowledged_at": work.acknowledged_at,
        "started_at": work.started_at,
        "latest_heartbeat_at": work.latest_heartbeat_at,
        "stop_requested_at": work.stop_requested_at,
        "stopped_at": work.stopped_at,
    }
    for key, must in _NULLNESS[state].items():
        value = stamps[key]
        if must is True and value is None:
            out.append(
                Violation(
                    key=key,
                    rule="null-in-state",
                    message=f"{key} is null in state {state.value}, where it must be set",
                )
            )
        elif must is False and value is not None:
            out.append(
                Violation(
                    key=key,
                    rule="set-in-state",
                    message=f"{key} is set in state {state.value}, where it must be null",
                )
            )
    if (stamps["started_at"] is None) != (stamps["latest_heartbeat_at"] is None):
        out.append(
            Violation(
                key="started_at",
                rule="pair",
                message="started_at and "
                "latest_heartbeat_at are set together by the first heartbeat: one is "
                "null and the other is not",
            )
        )
    for key in ("started_at", "stop_requested_at"):
        if stamps[key] is not None and stamps["acknowledged_at"] is None:
            out.append(
                Violation(
                    key=key,
                    rule="needs-ack",
                    message=f"{key} is set but "
                    "acknowledged_at is null: only an acknowledged item can get there",
                )
            )
    out.extend(_order_violations(stamps, profile))
    out.extend(_metadata_violations(work.body.metadata, profile))
    if private:
        out.extend(_private_violations(work, stamps))
    return out


def _order_violations(stamps: dict[str, _dt.datetime | None], profile: Profile) -> list[Violation]:
    out = []
    precision = profile.lifecycle_precision
    for earlier, later in _ORDER:
        a, b = stamps[earlier], stamps[later]
        if a is None or b is None:
            continue
        if truncate(b, precision) < truncate(a, precision):
            out.append(
                Violation(
                    key=later,
                    rule="order",
                    message=f"{later} ({format_time(b)}) is "
                    f"earlier than {earlier} ({format_time(a)})",
                )
            )
    if precision is Precision.SECONDS:
        for key in (
            "created_at",
            "acknowledged_at",
            "started_at",
            "stop_requested_at",
            "stopped_at",
        ):
            value = stamps[key]
            if value is not None and value.microsecond:
                out.append(
                    Violation(
                        key=key,
                        rule="precision",
                        message=f"{key} has microseconds, "
                        f"but profile {profile.name} records whole seconds",
                    )
                )
    return out


def _metadata_violations(metadata: Mapping[str, str], profile: Profile) -> list[Violation]:
    out = []
    items: list[tuple[object, object]] = list(metadata.items())
    if len(items) > profile.max_metadata_pairs:
        out.append(
            Violation(
                key="metadata",
                rule="limit",
                message=f"metadata holds {len(items)} "
                f"pairs; at most {profile.max_metadata_pairs} are allowed",
            )
        )
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, str):
            out.append(
                Violation(
                    key=f"metadata.{key}",
                    rule="type",
                    message=f"metadata.{key} is not a string to string pair",
                )
            )
            continue
        if not key or len(key) > profile.max_metadata_key_length:
            out.append(
                Violation(
                    key=f"metadata.{key}",
                    rule="limit",
                    message=f"metadata key "
                    f"{key!r} is empty or longer than {profile.max_metadata_key_length}",
                )
            )
        if len(value) > profile.max_metadata_value_length:
            out.append(
                Violation(
                    key=f"metadata.{key}",
                    rule="limit",
                    message=f"metadata.{key} is "
                    f"longer than {profile.max_metadata_value_length} characters",
                )
            )
    return out


def _private_violations(work: object, stamps: dict[str, _dt.datetime | None]) -> list[Violation]:
    from workstate._work import Work

    assert isinstance(work, Work)
    out = []
    profile = work.body.profile
    # Under a profile whose ack starts no lease, an item holds one only from its first
    # heartbeat on (docs/divergences.md, "the lease an ack starts").
    holds_lease = work.state in LEASE_STATES and (
        work.latest_heartbeat_at is not None or profile.ack_lease_seconds() is not None
    )
    if holds_lease != (work.lease_expires_at is not None):
        out.append(
            Violation(
                key="lease_expires_at",
                rule="lease",
                message="lease_expires_at is "
                f"{'null' if holds_lease else 'set'} in state {work.state.value}",
            )
        )
    latest = work.latest_heartbeat_at
    expected_token = None if latest is None else format_time(latest)
    if work.last_heartbeat != expected_token:
        out.append(
            Violation(
                key="last_heartbeat",
                rule="token",
                message=f"last_heartbeat token "
                f"{work.last_heartbeat!r} does not match latest_heartbeat_at "
                f"({expected_token!r})",
            )
        )
    ttl = work.ttl_seconds
    if holds_lease and ttl is None:
        out.append(Violation(key="ttl_seconds", rule="lease", message="a lease without a TTL"))
    if ttl is not None and not profile.min_ttl_seconds <= ttl <= profile.max_ttl_seconds:
        out.append(
            Violation(
                key="ttl_seconds",
                rule="limit",
                message=f"ttl_seconds {ttl} is outside "
                f"{profile.min_ttl_seconds}-{profile.max_ttl_seconds}",
            )
        )
    if work.acknowledged_at is not None and work.attempt < 1:
        out.append(
            Violation(
                key="attempt", rule="attempt", message="acknowledged, yet no attempt was counted"
            )
        )
    if work.version < 1:
        out.append(Violation(key="version", rule="version", message="version is below 1"))
    for key, value in stamps.items():
        if value is not None and value > work.touched_at:
            out.append(
                Violation(
                    key=key,
                    rule="touched",
                    message=f"{key} is later than the latest recorded change (touched_at)",
                )
            )
    if work.state is not State.QUEUED and work.delivered_at is not None:
        out.append(
            Violation(
                key="delivered_at",
                rule="delivery",
                message="only a queued item can be awaiting its ack",
            )
        )
    return out
