"""Profiles: plain data answering every question where the documented providers disagree.

Theory of operation
-------------------
Spec §7 lists the behaviours on which the official SDKs' behaviour (``anthropic``) and Qoder's
reference (``qoder``) differ.  A :class:`Profile` answers each of them with a plain value; the
core reads these values and never branches on a provider's name.  Users may build their own
profile with :func:`attrs.evolve` or by calling :class:`Profile` directly, or write one as a TOML
table of these same field names (:func:`load_profile`, ``--profile-file``): the file names a
shipped ``base`` profile and overrides any of its fields, so a custom profile is built from the
knobs alone.  ``docs/divergences.md`` gives each knob's evidence.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from workstate._records import is_int

__all__ = [
    "ANTHROPIC",
    "PROFILES",
    "QODER",
    "AckLease",
    "Precision",
    "Profile",
    "StopResponse",
    "evolve_profile",
    "load_profile",
    "profile_from_mapping",
    "profile_to_mapping",
]


class Precision(enum.Enum):
    """How finely a timestamp is recorded and written."""

    MICROSECONDS = "microseconds"
    SECONDS = "seconds"


class AckLease(enum.Enum):
    """The lease an ack starts (until the first heartbeat sets the worker's own TTL)."""

    DEFAULT_TTL = "default_ttl"
    """A lease of the profile's default TTL: an acked item that never heartbeats expires."""
    STARTUP = "startup"
    """A lease of ``startup_lease_seconds``."""
    NONE = "none"
    """No lease: an acked item stays ``starting`` until a heartbeat or a stop."""


class StopResponse(enum.Enum):
    """What a successful stop answers over HTTP (the core always returns the record)."""

    ITEM = "item"
    """200 with the work item."""
    NO_CONTENT = "no_content"
    """204 with no body."""


def _optional_code(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and (type(value) is not str or not value):
        raise ValueError(
            f"Profile.{attribute.name} must be a non-empty string or None, got {value!r}"
        )


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
    ack_lease: AckLease = attrs.field(
        default=AckLease.DEFAULT_TTL, validator=attrs.validators.instance_of(AckLease)
    )
    """The lease an ack starts: the default TTL, a startup lease, or none."""
    startup_lease_seconds: int = attrs.field(default=0, validator=_non_negative)
    """The length of the lease an ack starts under ``AckLease.STARTUP`` (unused otherwise)."""
    stop_starting_is_immediate: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    """Graceful stop of a ``starting`` item: True goes to ``stopped`` at once (nobody holds it
    yet to confirm), False to ``stopping`` like an ``active`` item."""
    stop_response: StopResponse = attrs.field(
        default=StopResponse.ITEM, validator=attrs.validators.instance_of(StopResponse)
    )
    """What a successful stop answers over HTTP: 200 with the item, or 204 with no body."""
    fresh_id_on_redelivery: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    """True: an item handed out again (a lapsed delivery reclaimed by a poll, or an expired
    lease) gets a new ``work_`` id and the old id answers 404; False: it keeps its id."""
    metadata_error_code: str | None = attrs.field(default=None, validator=_optional_code)
    """The ``error_code`` a rejected metadata patch carries (None: no code)."""
    environment_not_found_error_code: str | None = attrs.field(
        default=None, validator=_optional_code
    )
    """The ``error_code`` of the 404 for an unknown environment (None: no code)."""

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
        self._check_startup_lease()

    def _check_startup_lease(self) -> None:
        if self.ack_lease is AckLease.STARTUP and not (
            self.min_ttl_seconds <= self.startup_lease_seconds <= self.max_ttl_seconds
        ):
            raise ValueError(
                "Profile.startup_lease_seconds must lie within min_ttl_seconds..max_ttl_seconds "
                f"({self.min_ttl_seconds}-{self.max_ttl_seconds}) when ack_lease is 'startup', "
                f"got {self.startup_lease_seconds}"
            )

    def ack_lease_seconds(self) -> int | None:
        """The length of the lease an ack starts, or None when an ack starts none."""
        lease = self.ack_lease
        if lease is AckLease.DEFAULT_TTL:
            return self.default_ttl_seconds
        return self.startup_lease_seconds if lease is AckLease.STARTUP else None

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
    ack_lease=AckLease.NONE,
    stop_starting_is_immediate=False,
    stop_response=StopResponse.NO_CONTENT,
    fresh_id_on_redelivery=False,
    metadata_error_code="invalid_metadata",
    environment_not_found_error_code="environment_not_found",
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
    ack_lease=AckLease.DEFAULT_TTL,
    stop_starting_is_immediate=False,
    stop_response=StopResponse.ITEM,
    fresh_id_on_redelivery=False,
    metadata_error_code=None,
    environment_not_found_error_code=None,
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


_ENUMS: dict[str, type[enum.Enum]] = {
    "Precision": Precision,
    "AckLease": AckLease,
    "StopResponse": StopResponse,
}


def _field_value(key: str, kind: str, value: object) -> object:
    """``value`` read from a TOML or JSON mapping as the field ``key`` of type ``kind``."""
    from workstate._errors import InvalidInputError  # (no import cycle at module load)

    def bad(expected: str) -> InvalidInputError:
        return InvalidInputError(
            f"profile key {key!r} must be {expected}, got {value!r}",
            key=key,
            expected=expected,
            got=value,
        )

    if kind == "bool":
        if type(value) is not bool:
            raise bad("true or false")
        return value
    if kind == "int":
        if not is_int(value) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if kind == "str":
        if type(value) is not str or not value:
            raise bad("a non-empty string")
        return value
    if kind == "str | None":
        if type(value) is not str:
            raise bad('a string ("" for none)')
        return value or None
    choices = _ENUMS[kind]
    names = [member.value for member in choices]
    if type(value) is not str or value not in names:
        raise bad("one of " + ", ".join(repr(n) for n in names))
    return choices(value)


def profile_from_mapping(data: Mapping[str, Any], *, base: Profile | None = None) -> Profile:
    """A profile built from ``base`` by overriding the fields that ``data`` names.

    ``data`` maps :class:`Profile` field names to plain values (strings for the enum fields,
    ``""`` for "no error code"); an optional ``base`` key names the shipped profile to start
    from (else ``base``, else ``anthropic``).  Every problem raises
    :class:`~workstate.InvalidInputError` naming the key.  Built with :func:`attrs.evolve`, so
    later overrides (``--default-ttl`` and friends) compose with it.

    >>> p = profile_from_mapping({"base": "qoder", "name": "mine", "stop_response": "no_content"})
    >>> p.name, p.stop_response.value, p.default_ttl_seconds
    ('mine', 'no_content', 60)
    """
    from workstate._errors import InvalidInputError

    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"a profile must be a table of field names to values, got {type(data).__name__}",
            key="profile",
            expected="a table (mapping) of Profile field names",
            got=data,
        )
    kinds = {a.name: str(a.type) for a in attrs.fields(Profile)}
    overrides: dict[str, Any] = {}
    start = base if base is not None else ANTHROPIC
    for key, value in data.items():
        if key == "base":
            if type(value) is not str or value not in PROFILES:
                raise InvalidInputError(
                    f"profile key 'base' must name a shipped profile, got {value!r}",
                    key="base",
                    expected="one of " + ", ".join(repr(n) for n in sorted(PROFILES)),
                    got=value,
                )
            start = PROFILES[value]
            continue
        kind = kinds.get(key)
        if kind is None:
            raise InvalidInputError(
                f"unknown profile key {key!r}",
                key=str(key),
                expected="one of base, " + ", ".join(sorted(kinds)),
                got=value,
            )
        overrides[key] = _field_value(key, kind, value)
    try:
        return attrs.evolve(start, **overrides)
    except ValueError as exc:  # a relation between fields (TTL order, startup lease)
        message = str(exc)
        named = [k for k in overrides if k in message] or sorted(overrides) or ["profile"]
        raise InvalidInputError(
            message, key=named[0], expected="values that satisfy the rule above", got=None
        ) from None


def profile_to_mapping(profile: Profile) -> dict[str, Any]:
    """Every field of ``profile`` as a plain value (the inverse of
    :func:`profile_from_mapping`, which rebuilds the same profile from it): enum fields as
    their strings, no error code as ``""``.  JSON- and TOML-ready; ``serve --journal`` heads
    its file with it, so ``check`` knows the profile the journal was served under.

    >>> served = evolve_profile(ANTHROPIC, {"default_ttl_seconds": 4})
    >>> fields = profile_to_mapping(served)
    >>> fields["name"], fields["default_ttl_seconds"], fields["min_ttl_seconds"]
    ('anthropic', 4, 4)
    >>> profile_from_mapping(fields) == served
    True
    """
    out: dict[str, Any] = {}
    for field in attrs.fields(Profile):
        value = getattr(profile, field.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif value is None:
            value = ""  # (only the optional error codes are None)
        out[field.name] = value
    return out


def load_profile(path: str | os.PathLike[str], *, base: Profile | None = None) -> Profile:
    """A profile read from the TOML file at ``path`` (see :func:`profile_from_mapping`).

    A file that cannot be read or is not TOML raises :class:`~workstate.InvalidInputError`
    with the key ``profile_file``.
    """
    import tomllib  # only profile files need a TOML parser (about 7 ms to import)

    from workstate._errors import InvalidInputError

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(
            f"cannot read profile file {os.fspath(path)!r}: {exc}",
            key="profile_file",
            expected="a readable TOML file of Profile field names",
            got=os.fspath(path),
        ) from None
    return profile_from_mapping(data, base=base)
