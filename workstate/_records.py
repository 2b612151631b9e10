"""Small value records shared by the core and the wire: the work's data and a heartbeat answer."""

from __future__ import annotations

import re
from typing import Any, TypeGuard

import attrs

from workstate._errors import InvalidInputError
from workstate._table import State
from workstate._text import excerpt, unrenderable_at

__all__ = [
    "ID_CHARACTERS",
    "MAX_ID_LENGTH",
    "WORK_DATA_TYPES",
    "HeartbeatResult",
    "WorkData",
    "check_id",
    "check_metadata_key",
    "check_text",
    "check_work_data",
    "is_int",
]

ID_CHARACTERS = "A-Z a-z 0-9 _ -"
"""The characters an id may hold after its prefix (those of the API's generated ids, plus
``_`` and ``-``): each is safe in a URL path segment without escaping."""
MAX_ID_LENGTH = 128
"""How many characters an id may hold after its prefix."""
_ID_BODY = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}", re.ASCII)

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
            "state": self.state._value_,  # (the value without the enum property's call)
            "ttl_seconds": self.ttl_seconds,
        }


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool`` (JSON's true is no number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(
    value: object,
    key: str,
    *,
    nullable: bool = False,
    empty: bool = True,
    max_length: int | None = None,
    label: str | None = None,
) -> Any:
    """``value`` if it is a string the wire can always render, else a 400 naming ``key``.

    The one check every string the core stores goes through (ids, ``data.id``, metadata keys
    and values, secrets, worker ids, heartbeat tokens): a ``str`` with no unpaired surrogate
    (see :mod:`workstate._text`).  ``nullable`` lets None through; ``empty=False`` refuses
    ``""``; ``max_length`` bounds the length in characters; ``label`` names the value in the
    message when ``key`` alone would not (default: ``key``).
    """
    what = key if label is None else label
    if value is None and nullable:
        return None
    if type(value) is not str or (not empty and not value):
        shape = "a string" if empty else "a non-empty string"
        if nullable:
            shape += " or null"
        raise InvalidInputError(
            f"{what} must be {shape}, got {excerpt(value)}", key=key, expected=shape, got=value
        )
    if max_length is not None and len(value) > max_length:
        raise InvalidInputError(
            f"{what} is {len(value)} characters long; at most {max_length} are accepted",
            key=key,
            expected=f"a string of at most {max_length} characters",
            got=value,
        )
    if not value.isascii():  # ASCII is always renderable: skip the encode on the hot path
        at = unrenderable_at(value)
        if at is not None:
            raise InvalidInputError(
                f"{what} holds an unpaired surrogate (U+{ord(value[at]):04X} at index {at}), "
                "which is not Unicode text and cannot be written as UTF-8",
                key=key,
                expected="valid Unicode text (no unpaired surrogates)",
                got=value,
            )
    return value


def check_metadata_key(key: object) -> str:
    """``key`` if it is a non-empty string the wire can render, else a 400 on ``metadata``."""
    return check_text(  # type: ignore[no-any-return]
        key, "metadata", empty=False, label="a metadata key"
    )


def check_id(value: object, key: str, prefix: str = "") -> str:
    """``value`` if it is ``prefix`` and 1-128 id characters (``A-Z a-z 0-9 _ -``), else a 400.

    The one rule for API ids (``work_...``, ``env_...``, ``data.id``): the characters of the
    API's own ids, each safe in a URL path without escaping, so an item can always be named
    in the paths that ack, heartbeat and stop it.
    """
    if (
        type(value) is str
        and value.startswith(prefix)
        and _ID_BODY.fullmatch(value, len(prefix)) is not None
    ):
        return value
    chars = f"1 to {MAX_ID_LENGTH} of the characters {ID_CHARACTERS}"
    shape = f"starting with {prefix!r}, then {chars}" if prefix else f"of {chars}"
    raise InvalidInputError(
        f"{key} must be a string {shape}, got {excerpt(value)}",
        key=key,
        expected=f"a string {shape}",
        got=value,
    )


def check_work_data(kind: object, ident: object) -> WorkData:
    """A :class:`WorkData` of ``kind`` and ``ident``, or a 400 naming the key at fault."""
    if not isinstance(kind, str) or kind not in WORK_DATA_TYPES:
        raise InvalidInputError(
            f"data.type must be one of {sorted(WORK_DATA_TYPES)}, got {excerpt(kind)}",
            key="data.type",
            expected=f"one of {sorted(WORK_DATA_TYPES)}",
            got=kind,
        )
    return WorkData(type=kind, id=check_id(ident, "data.id"))
