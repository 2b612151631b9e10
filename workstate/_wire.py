"""The wire: the API's exact JSON shapes, out and in.

Theory of operation
-------------------
The model holds typed values; this module turns records into the JSON the API returns (keys in
the API's order, timestamps as RFC 3339 with ``Z``) and parses such JSON back with strict
validation.  Every problem with an input gets its own :class:`~workstate.InvalidInputError`
naming the key: a missing key, an unknown key, a wrong type, an unknown state, a naive or
malformed timestamp, or a record whose fields contradict each other.

A work object from the wire carries none of the server's private lease fields; the parser
fills them in the one way the public fields allow (see :func:`work_from_json`).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from workstate._errors import (
    HEARTBEAT_PRECONDITION_FAILED,
    IllegalMoveError,
    InvalidInputError,
    LeaseState,
    NotFoundError,
    PreconditionFailedError,
    WorkstateError,
)
from workstate._profile import ANTHROPIC, Precision, Profile
from workstate._records import (
    HeartbeatResult,
    WorkData,
    check_id,
    check_metadata_key,
    check_text,
    check_work_data,
    is_int,
)
from workstate._table import LEASE_STATES, State
from workstate._text import excerpt
from workstate._time import format_time, parse_time, saturating_add

__all__ = [
    "WORK_KEYS",
    "error_from_json",
    "heartbeat_from_json",
    "heartbeat_to_json",
    "lease_state_from_json",
    "work_data_from_json",
    "work_from_json",
    "work_to_json",
]

WORK_KEYS = (
    "id",
    "type",
    "environment_id",
    "data",
    "state",
    "created_at",
    "acknowledged_at",
    "started_at",
    "latest_heartbeat_at",
    "stop_requested_at",
    "stopped_at",
    "metadata",
    "secret",
)
"""The keys of the API's work object, in the API's order."""

_HEARTBEAT_KEYS = ("type", "last_heartbeat", "lease_extended", "state", "ttl_seconds")
_LEASE_KEYS = ("state", "last_heartbeat", "lease_extended", "ttl_seconds")
_STATE_NAMES = ", ".join(s.value for s in State)
_MICRO = Precision.MICROSECONDS


def _fmt(value: _dt.datetime | None, precision: Precision) -> str | None:
    return None if value is None else format_time(value, precision)


def work_to_json(work: Any, *, include_secret: bool = False) -> dict[str, Any]:
    """The API's work object for ``work`` (a :class:`~workstate.Work`).

    ``secret`` is null unless ``include_secret`` is true: only a poll's answer carries it.
    """
    body = work.body
    lc = body.profile.lifecycle_precision
    return {
        "id": body.id,
        "type": "work",
        "environment_id": body.environment_id,
        "data": {"type": body.data.type, "id": body.data.id},
        "state": work.state._value_,  # (the value without the enum property's call)
        "created_at": format_time(body.created_at, lc),
        "acknowledged_at": _fmt(work.acknowledged_at, lc),
        "started_at": _fmt(work.started_at, lc),
        "latest_heartbeat_at": _fmt(work.latest_heartbeat_at, _MICRO),
        "stop_requested_at": _fmt(work.stop_requested_at, lc),
        "stopped_at": _fmt(work.stopped_at, lc),
        "metadata": dict(body.metadata),
        "secret": body.secret if include_secret else None,
    }


def heartbeat_to_json(result: HeartbeatResult) -> dict[str, Any]:
    """The API's heartbeat answer."""
    return result.to_json()


# ------------------------------------------------------------------------------ parsing
def _load(value: object, what: str) -> Mapping[str, Any]:
    if isinstance(value, (str, bytes, bytearray)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInputError(
                f"{what} is not valid JSON: {exc}", key=what, expected="a JSON object", got=value
            ) from None
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{what} must be a JSON object, got {type(value).__name__}",
            key=what,
            expected="a JSON object",
            got=value,
        )
    return value


def _keys(obj: Mapping[str, Any], keys: tuple[str, ...], what: str, strict: bool) -> None:
    for key in keys:
        if key not in obj:
            raise InvalidInputError(
                f"{what} is missing the key {key!r}; every key of {list(keys)} must be present",
                key=key,
                expected=f"the key {key!r}",
            )
    if strict:
        for key in obj:
            if key not in keys:
                raise InvalidInputError(
                    f"{what} has the unknown key {excerpt(key)}; the known keys are {list(keys)}",
                    key=str(key),
                    expected=f"only the keys {list(keys)}",
                    got=key,
                )


def _str(obj: Mapping[str, Any], key: str, *, nullable: bool = False, prefix: str = "") -> Any:
    value = obj[key]
    if prefix:
        return check_id(value, key, prefix)
    return check_text(value, key, nullable=nullable, empty=False)


def _const(obj: Mapping[str, Any], key: str, expected: str) -> None:
    if obj[key] != expected:
        raise InvalidInputError(
            f"{key} must be {expected!r}, got {excerpt(obj[key])}",
            key=key,
            expected=repr(expected),
            got=obj[key],
        )


def _state(obj: Mapping[str, Any], key: str = "state") -> State:
    value = obj[key]
    try:
        return State(value)
    except ValueError:
        raise InvalidInputError(
            f"{key} must be one of {_STATE_NAMES}, got {excerpt(value)}",
            key=key,
            expected=f"one of {_STATE_NAMES}",
            got=value,
        ) from None


def _time(obj: Mapping[str, Any], key: str, *, nullable: bool = True) -> _dt.datetime | None:
    value = obj[key]
    if value is None:
        if nullable:
            return None
        raise InvalidInputError(
            f"{key} must be an RFC 3339 timestamp, got null",
            key=key,
            expected="an RFC 3339 timestamp",
            got=None,
        )
    return parse_time(value, key=key)


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj[key]
    if not is_int(value):
        raise InvalidInputError(
            f"{key} must be an integer, got {excerpt(value)}",
            key=key,
            expected="an integer",
            got=value,
        )
    return value


def _bool(obj: Mapping[str, Any], key: str) -> bool:
    value = obj[key]
    if not isinstance(value, bool):
        raise InvalidInputError(
            f"{key} must be true or false, got {excerpt(value)}",
            key=key,
            expected="true or false",
            got=value,
        )
    return value


def work_data_from_json(value: object) -> WorkData:
    """Parse the API's ``data`` object (``{"type": "session", "id": ...}``) strictly."""
    return _data(value)


def _data(value: object) -> WorkData:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"data must be an object, got {type(value).__name__}",
            key="data",
            expected='an object {"type": "session", "id": ...}',
            got=value,
        )
    for key in ("type", "id"):
        if key not in value:
            raise InvalidInputError(
                f"data is missing the key {key!r}", key=f"data.{key}", expected=f"the key {key!r}"
            )
    return check_work_data(value["type"], value["id"])


def _metadata(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"metadata must be an object of strings, got {type(value).__name__}",
            key="metadata",
            expected="an object of string keys to string values",
            got=value,
        )
    for key, item in value.items():
        check_text(item, f"metadata.{check_metadata_key(key)}")
    return MappingProxyType(dict(value))


def work_from_json(value: object, *, profile: Profile = ANTHROPIC, strict: bool = True) -> Any:
    """Parse the API's work object (a mapping, or JSON text) into a :class:`~workstate.Work`.

    Raises :class:`~workstate.InvalidInputError` naming the first key at fault.  With
    ``strict=True`` (the default) an unknown key is an error too.  The private lease fields
    are derived from the public ones: the token is the formatted ``latest_heartbeat_at``; an
    item in a lease-holding state gets the profile's default TTL from its latest heartbeat, or,
    acked and never heartbeated, the lease the profile's ``ack_lease`` starts at the ack (none
    under ``anthropic``); ``attempt`` is 1 once acknowledged; ``version`` is 1; ``touched_at``
    is the latest timestamp.

    >>> from workstate import Work
    >>> import datetime as dt
    >>> t = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.timezone.utc)
    >>> w = Work.create(id="work_1", environment_id="env_1", session_id="sesn_1", now=t)
    >>> work_from_json(work_to_json(w)) == w
    True
    """
    from workstate._work import Work, WorkBody

    obj = _load(value, "work")
    _keys(obj, WORK_KEYS, "work", strict)
    _const(obj, "type", "work")
    ident = _str(obj, "id", prefix="work_")
    env = _str(obj, "environment_id", prefix="env_")
    data = _data(obj["data"])
    state = _state(obj)
    created = _time(obj, "created_at", nullable=False)
    assert created is not None
    stamps = {
        key: _time(obj, key)
        for key in (
            "acknowledged_at",
            "started_at",
            "latest_heartbeat_at",
            "stop_requested_at",
            "stopped_at",
        )
    }
    metadata = _metadata(obj["metadata"])
    secret = check_text(obj["secret"], "secret", nullable=True)  # opaque: any text, "" too
    latest = stamps["latest_heartbeat_at"]
    ack = stamps["acknowledged_at"]
    ttl = deadline = None
    if state in LEASE_STATES and latest is None and ack is not None:
        # No heartbeat yet: the lease is the one the ack started, which the profile's
        # ack_lease decides (none at all under anthropic), as Work.ack does.
        ttl = profile.ack_lease_seconds()
        if ttl is not None:
            deadline = saturating_add(ack, _dt.timedelta(seconds=ttl))  # private: never shown
    elif state in LEASE_STATES:
        ttl = profile.default_ttl_seconds
        anchor = latest or ack or created
        deadline = saturating_add(anchor, _dt.timedelta(seconds=ttl))  # private: never shown
    touched = max(t for t in (created, *stamps.values()) if t is not None)
    work = Work(
        body=WorkBody(
            id=ident,
            environment_id=env,
            data=data,
            created_at=created,
            metadata=metadata,
            secret=secret,
            profile=profile,
        ),
        state=state,
        acknowledged_at=ack,
        started_at=stamps["started_at"],
        latest_heartbeat_at=latest,
        stop_requested_at=stamps["stop_requested_at"],
        stopped_at=stamps["stopped_at"],
        last_heartbeat=None if latest is None else format_time(latest),
        ttl_seconds=ttl,
        lease_expires_at=deadline,
        attempt=0 if ack is None else 1,
        version=1,
        touched_at=touched,
    )
    # Imported here: only reading a record checks invariants (kept off import's start-up).
    from workstate._invariants import invariant_violations

    problems = invariant_violations(work, private=False)
    if problems:
        first = problems[0]
        raise InvalidInputError(
            f"the work object is inconsistent: {'; '.join(p.message for p in problems)}",
            key=first.key,
            expected="a record that some sequence of legal operations could produce",
            got=obj.get(first.key.split(".")[0]),
        )
    return work


def heartbeat_from_json(value: object, *, strict: bool = True) -> HeartbeatResult:
    """Parse the API's heartbeat answer."""
    obj = _load(value, "heartbeat")
    _keys(obj, _HEARTBEAT_KEYS, "heartbeat", strict)
    _const(obj, "type", "work_heartbeat")
    token = obj["last_heartbeat"]
    if not isinstance(token, str):
        raise InvalidInputError(
            f"last_heartbeat must be a string, got {excerpt(token)}",
            key="last_heartbeat",
            expected="an RFC 3339 timestamp, or an empty string",
            got=token,
        )
    if token:
        parse_time(token, key="last_heartbeat")
    ttl = _int(obj, "ttl_seconds")
    if ttl <= 0:
        raise InvalidInputError(
            f"ttl_seconds must be positive, got {ttl}",
            key="ttl_seconds",
            expected="a positive integer",
            got=ttl,
        )
    return HeartbeatResult(
        last_heartbeat=token,
        lease_extended=_bool(obj, "lease_extended"),
        state=_state(obj),
        ttl_seconds=ttl,
    )


def lease_state_from_json(value: object, *, strict: bool = True) -> LeaseState:
    """Parse a 412's ``current_state``."""
    obj = _load(value, "current_state")
    _keys(obj, _LEASE_KEYS, "current_state", strict)
    token = _str(obj, "last_heartbeat", nullable=True)
    if token is not None:
        parse_time(token, key="last_heartbeat")
    return LeaseState(
        state=_state(obj),
        last_heartbeat=token,
        lease_extended=_bool(obj, "lease_extended"),
        ttl_seconds=_int(obj, "ttl_seconds"),
    )


def error_from_json(value: object, *, status: int) -> WorkstateError:
    """Parse the API's error envelope, answered with HTTP ``status``, into an error object.

    A 412 with ``heartbeat_precondition_failed`` details becomes a
    :class:`~workstate.PreconditionFailedError` with its ``current_state``.
    """
    obj = _load(value, "error envelope")
    _keys(obj, ("type", "error", "request_id"), "error envelope", False)
    _const(obj, "type", "error")
    error = _load(obj["error"], "error")
    _keys(error, ("type", "message"), "error", False)
    kind = _str(error, "type")
    message = error["message"]
    if not isinstance(message, str):
        raise InvalidInputError(
            f"error.message must be a string, got {excerpt(message)}",
            key="error.message",
            expected="a string",
            got=message,
        )
    details = error.get("details")
    if (
        status == 412
        and isinstance(details, Mapping)
        and details.get("error_code") == HEARTBEAT_PRECONDITION_FAILED
    ):
        current = lease_state_from_json(details.get("current_state"))
        return PreconditionFailedError(message, current_state=current, error_type=kind)
    classes: dict[int, type[WorkstateError]] = {
        409: IllegalMoveError,
        404: NotFoundError,
    }
    if status == 400:
        return InvalidInputError(message, key="", expected="", error_type=kind)
    return classes.get(status, WorkstateError)(message, status=status, error_type=kind)
