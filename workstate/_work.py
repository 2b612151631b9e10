"""``Work``: one work item as an immutable record, and its operations.

Theory of operation
-------------------
A :class:`Work` holds every field of the API's work object plus the server's private lease
fields.  Every operation takes the time as an argument and returns a *new* record (or raises
and returns nothing), so a rejected operation cannot leave a half-changed item behind.

Each operation first checks its inputs (400), then asks the compiled table for the move from
the item's state (409 when there is none; 412 when a heartbeat's token does not match), and
only then builds the next record.  The target state, the timestamps set and cleared, and the
lease effect all come from the table's row: the code here applies a row, it never decides one.

The fields that rarely change (id, environment, data, creation time, metadata, secret,
profile) live in a :class:`WorkBody` that successive versions share, so an operation copies
15 fields rather than 21 (see ``docs/performance.md``).

The hot path avoids three costs measured in ``benchmarks/core.py``: hashing an enum member
(``Enum.__hash__`` is Python code) or a :class:`Profile` (every field) per operation, so each
profile's rows are compiled once into :class:`_Plan` values keyed by the states' and
operations' wire strings; reading ``State.X`` off the class, so members are module constants;
and attrs' frozen ``__init__`` (one ``object.__setattr__`` call per field), so new records are
built by :func:`_writer`'s plain slot stores, which give an identical object 3-7× faster.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

import attrs

from workstate._engine import allowed_operations, lookup
from workstate._errors import (
    IllegalMoveError,
    InvalidInputError,
    LeaseState,
    PreconditionFailedError,
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
from workstate._table import LeaseEffect, Move, Operation, Stamp, State
from workstate._text import excerpt
from workstate._time import LATEST, UTC, ensure_utc, format_time, parse_time

__all__ = ["NO_HEARTBEAT", "Work", "WorkBody", "validate_metadata_patch"]

NO_HEARTBEAT = "NO_HEARTBEAT"
"""The heartbeat token that claims a lease with no heartbeat yet."""

_EMPTY_METADATA: Mapping[str, str] = MappingProxyType({})
_TTL_CACHE: dict[int, _dt.timedelta] = {}
_ACK, _STARTED, _LATEST, _STOP_REQ, _STOPPED = (
    Stamp.ACKNOWLEDGED_AT,
    Stamp.STARTED_AT,
    Stamp.LATEST_HEARTBEAT_AT,
    Stamp.STOP_REQUESTED_AT,
    Stamp.STOPPED_AT,
)
# Members as module constants: reading ``State.QUEUED`` off the enum class costs a lookup
# through the enum's metaclass, several times a plain global read.
_QUEUED = State.QUEUED
_DELIVER, _ACK_OP, _HEARTBEAT, _STOP, _FORCE_STOP, _EXPIRE, _UPDATE_METADATA = (
    Operation.DELIVER,
    Operation.ACK,
    Operation.HEARTBEAT,
    Operation.STOP,
    Operation.FORCE_STOP,
    Operation.EXPIRE,
    Operation.UPDATE_METADATA,
)
_KEEP, _EXTEND, _START, _END = (
    LeaseEffect.KEEP,
    LeaseEffect.EXTEND,
    LeaseEffect.START,
    LeaseEffect.END,
)
_SECONDS = Precision.SECONDS
_datetime = _dt.datetime
_ONE_MICROSECOND = _dt.timedelta(microseconds=1)


def _deadline(now: _dt.datetime, ttl: int) -> _dt.datetime:
    """The lease deadline ``now + ttl``; a 400 on ``now`` when it would not leave room for the
    expiry instant one microsecond later before the year 9999 ends (see ``workstate._time``)."""
    try:
        deadline = now + _ttl_delta(ttl)
    except OverflowError:
        deadline = LATEST
    if deadline >= LATEST:
        raise InvalidInputError(
            f"a lease of {ttl} s from {format_time(now)} would end after the year 9999",
            key="now",
            expected=f"a time more than {ttl} s before 9999-12-31T23:59:59.999999Z",
            got=now,
        )
    return deadline


def _ttl_delta(seconds: int) -> _dt.timedelta:
    delta = _TTL_CACHE.get(seconds)
    if delta is None:
        delta = _TTL_CACHE[seconds] = _dt.timedelta(seconds=seconds)
    return delta


class _Plan:
    """One row of the table, compiled for :meth:`Work._apply`.

    Testing ``stamp in move.sets`` hashes an enum member in Python code; a plan answers the
    same questions with plain attributes.  Each stamp field is True (set it), False (clear it)
    or None (keep it), exactly as the row's ``sets`` and ``clears`` say.
    """

    __slots__ = (
        "ack",
        "changes",
        "latest",
        "lease",
        "stamps",
        "started",
        "stop_requested",
        "stopped",
        "target",
    )

    def __init__(self, move: Move) -> None:
        def effect(stamp: Stamp) -> bool | None:
            if stamp in move.sets:
                return True
            return False if stamp in move.clears else None

        self.target = move.target
        self.changes = move.changes
        self.lease = move.lease
        self.stamps = bool(move.sets or move.clears)
        self.ack = effect(_ACK)
        self.started = effect(_STARTED)
        self.latest = effect(_LATEST)
        # The table never clears these two; only a set matters (as before plans existed).
        self.stop_requested = _STOP_REQ in move.sets
        self.stopped = _STOPPED in move.sets


_PLANS: dict[int, tuple[Profile, dict[tuple[str, str], _Plan]]] = {}


def _plans(profile: Profile) -> dict[tuple[str, str], _Plan]:
    """``lookup(profile)`` as plans keyed by (state value, operation value).

    Cached by identity: ``lookup``'s cache hashes the whole profile on every call.  The entry
    keeps the profile alive, so its id cannot name another profile while the entry exists.
    """
    entry = _PLANS.get(id(profile))
    if entry is None:
        plans = {(s.value, o.value): _Plan(m) for (s, o), m in lookup(profile).items()}
        entry = _PLANS[id(profile)] = (profile, plans)
    return entry[1]


def _writer(cls: type[Any]) -> type[Any]:
    """A writable twin of the attrs frozen slots class ``cls``, for building instances fast.

    An object is made as the twin, filled with plain slot stores, and then given ``cls`` as its
    class (same layout, so Python allows it): the result is an ordinary, frozen ``cls``
    instance, built 3-7× faster than by attrs' ``__init__`` (an ``object.__setattr__`` call per
    field).  That is only equivalent while ``__init__`` does nothing but store every field, so
    this refuses a class with validators, converters, init hooks or other slots.
    """
    fields = attrs.fields(cls)
    hooks = ("__attrs_pre_init__", "__attrs_post_init__")
    extra = set(cls.__slots__) - {a.name for a in fields} - {"__weakref__"}
    if (
        any(a.validator is not None or a.converter is not None for a in fields)
        or any(hasattr(cls, hook) for hook in hooks)
        or extra
    ):
        # The module's own assumption broke (a field gained a validator, say): fail at import.
        raise AssertionError(f"{cls.__name__}.__init__ does more than store its fields")
    return type(
        f"_{cls.__name__}Writer",
        (cls,),
        {"__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__},
    )


_new_object = object.__new__
_DataWriter = _writer(WorkData)
_BeatWriter = _writer(HeartbeatResult)


def _new_data(type: str, id: str) -> WorkData:
    """``WorkData(type=type, id=id)``, built fast (see :func:`_writer`)."""
    new: Any = _new_object(_DataWriter)
    new.type = type
    new.id = id
    new.__class__ = WorkData
    return cast(WorkData, new)


def _new_beat(
    last_heartbeat: str, lease_extended: bool, state: State, ttl_seconds: int
) -> HeartbeatResult:
    """A :class:`HeartbeatResult` of these values, built fast (see :func:`_writer`)."""
    new: Any = _new_object(_BeatWriter)
    new.last_heartbeat = last_heartbeat
    new.lease_extended = lease_extended
    new.state = state
    new.ttl_seconds = ttl_seconds
    new.__class__ = HeartbeatResult
    return cast(HeartbeatResult, new)


@attrs.frozen(kw_only=True, eq=True)
class WorkBody:
    """The parts of a work item that operations other than a metadata update never change.

    Successive versions of a :class:`Work` share one body.
    """

    id: str
    """The work id, ``work_...``."""
    environment_id: str
    """The environment id, ``env_...``."""
    data: WorkData
    """What the work is about."""
    created_at: _dt.datetime
    """When the item was created (UTC, at the profile's lifecycle precision)."""
    metadata: Mapping[str, str] = attrs.field(default=_EMPTY_METADATA, hash=False)
    """User metadata, string to string (read-only; left out of the hash, which a read-only
    mapping cannot give, but compared for equality)."""
    secret: str | None = None
    """The opaque credential; the wire writes it only into a poll's answer."""
    profile: Profile = ANTHROPIC
    """The behaviour where providers differ (spec §7)."""


def validate_metadata_patch(
    current: Mapping[str, str],
    patch: object,
    profile: Profile,
    *,
    work_id: str | None = None,
    state: State | None = None,
) -> Mapping[str, str]:
    """Merge ``patch`` into ``current`` (``None`` deletes a key) and check the limits (spec §8).

    Returns the merged, read-only mapping; raises :class:`InvalidInputError` naming the key.
    """
    op = _UPDATE_METADATA

    def bad(message: str, key: str, expected: str, got: object) -> InvalidInputError:
        return InvalidInputError(
            message,
            key=key,
            expected=expected,
            got=got,
            work_id=work_id,
            state=state,
            operation=op,
            error_code=profile.metadata_error_code,
        )

    if not isinstance(patch, Mapping):
        raise bad(
            f"metadata must be an object of string keys to string or null values, "
            f"got {type(patch).__name__}",
            "metadata",
            "an object of string keys to string or null values",
            patch,
        )
    merged = dict(current)
    max_key, max_value = profile.max_metadata_key_length, profile.max_metadata_value_length
    for key, value in patch.items():
        try:
            check_metadata_key(key)
        except InvalidInputError as exc:
            raise bad(exc.message, "metadata", "non-empty string keys", key) from None
        if len(key) > max_key:
            raise bad(
                f"metadata key {excerpt(key, 20)} is {len(key)} characters long; "
                f"at most {max_key} are accepted",
                f"metadata.{key}",  # (the error cuts a long key to a bounded length)
                f"a key of at most {max_key} characters",
                key,
            )
        if value is None:
            merged.pop(key, None)
            continue
        if not isinstance(value, str):
            raise bad(
                f"metadata.{key} must be a string (or null to delete it), "
                f"got {type(value).__name__}",
                f"metadata.{key}",
                "a string, or null to delete the key",
                value,
            )
        if len(value) > max_value:
            raise bad(
                f"metadata.{key} is {len(value)} characters long; at most {max_value} are accepted",
                f"metadata.{key}",
                f"a value of at most {max_value} characters",
                value,
            )
        try:
            check_text(value, f"metadata.{key}")
        except InvalidInputError as exc:
            raise bad(exc.message, exc.key, exc.expected, value) from None
        merged[key] = value
    if len(merged) > profile.max_metadata_pairs:
        raise bad(
            f"metadata would hold {len(merged)} pairs; at most {profile.max_metadata_pairs} "
            "are accepted",
            "metadata",
            f"at most {profile.max_metadata_pairs} pairs",
            patch,
        )
    return MappingProxyType(merged) if merged else _EMPTY_METADATA


@attrs.frozen(kw_only=True, eq=True)
class Work:
    """One work item: the API's fields and the server's private lease fields.

    Build one with :meth:`create` (or :func:`~workstate.work_from_json`); every operation
    returns a new record and leaves this one as it is.

    >>> import datetime as dt
    >>> t0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.timezone.utc)
    >>> w = Work.create(id="work_1", environment_id="env_1", session_id="sesn_1", now=t0)
    >>> w = w.ack(t0 + dt.timedelta(seconds=1))
    >>> w, beat = w.heartbeat(t0 + dt.timedelta(seconds=2), expected_last_heartbeat=NO_HEARTBEAT)
    >>> w.state, beat.last_heartbeat, beat.ttl_seconds
    (<State.ACTIVE: 'active'>, '2026-07-01T08:15:02.000000Z', 120)
    """

    body: WorkBody
    """The parts shared between versions (id, environment, data, metadata, ...)."""
    state: State
    """The item's state."""
    acknowledged_at: _dt.datetime | None = None
    """Set by ack; cleared when the lease expires back to the queue."""
    started_at: _dt.datetime | None = None
    """Set by the first successful heartbeat."""
    latest_heartbeat_at: _dt.datetime | None = None
    """Set by every successful heartbeat (always microseconds)."""
    stop_requested_at: _dt.datetime | None = None
    """Set by a graceful stop request."""
    stopped_at: _dt.datetime | None = None
    """Set when the item reaches ``stopped``."""
    last_heartbeat: str | None = None
    """The ``last_heartbeat`` token handed out last (the formatted ``latest_heartbeat_at``)."""
    ttl_seconds: int | None = None
    """The lease's TTL; None when no lease was ever started in this attempt."""
    lease_expires_at: _dt.datetime | None = None
    """The lease deadline; None when the item holds no lease."""
    delivered_at: _dt.datetime | None = None
    """When a poll last handed the item out (None once acked, expired or never delivered)."""
    delivered_to: str | None = None
    """The worker id the last poll handed the item to, if the poll named one."""
    attempt: int = 0
    """How many times the item was acked (expiry starts a new attempt)."""
    version: int = 1
    """Grows by one with every change."""
    touched_at: _dt.datetime
    """The time of the latest change; an operation at an earlier time is rejected."""

    # ---------------------------------------------------------------- the body's fields
    @property
    def id(self) -> str:
        """The work id."""
        return self.body.id

    @property
    def environment_id(self) -> str:
        """The environment id."""
        return self.body.environment_id

    @property
    def data(self) -> WorkData:
        """What the work is about."""
        return self.body.data

    @property
    def created_at(self) -> _dt.datetime:
        """When the item was created."""
        return self.body.created_at

    @property
    def metadata(self) -> Mapping[str, str]:
        """User metadata (read-only)."""
        return self.body.metadata

    @property
    def secret(self) -> str | None:
        """The opaque credential."""
        return self.body.secret

    @property
    def profile(self) -> Profile:
        """The profile this item follows."""
        return self.body.profile

    # ---------------------------------------------------------------- questions
    @property
    def is_live(self) -> bool:
        """Whether the item is in any state but ``stopped``."""
        return self.state is not State.STOPPED

    def can(self, operation: Operation) -> bool:
        """Whether ``operation`` is legal in the item's state under its profile.

        A heartbeat may still meet 412 when its token does not match.
        """
        return (self.state, operation) in lookup(self.body.profile)

    def lease_state(self) -> LeaseState:
        """The lease as the server holds it (the ``current_state`` of a 412)."""
        return LeaseState(
            state=self.state,
            last_heartbeat=self.last_heartbeat,
            ttl_seconds=self.ttl_seconds or self.body.profile.default_ttl_seconds,
        )

    def is_lease_due(self, now: _dt.datetime) -> bool:
        """Whether the lease deadline has passed at ``now`` (strictly): :meth:`expire` applies."""
        deadline = self.lease_expires_at
        return deadline is not None and ensure_utc(now) > deadline

    # ---------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        *,
        id: str,
        environment_id: str,
        now: _dt.datetime,
        session_id: str | None = None,
        data: WorkData | None = None,
        metadata: Mapping[str, str] | None = None,
        secret: str | None = None,
        profile: Profile = ANTHROPIC,
    ) -> Work:
        """A new ``queued`` item created at ``now``.

        Give either ``session_id`` (for ``{"type": "session", "id": session_id}``) or ``data``.
        """
        now = ensure_utc(now)
        check_id(id, "id", "work_")
        check_id(environment_id, "environment_id", "env_")
        if data is None:
            if session_id is None:
                raise InvalidInputError(
                    "create needs data or session_id",
                    key="data",
                    expected="data={'type': 'session', 'id': ...} or session_id=...",
                )
            data = _new_data("session", check_id(session_id, "data.id"))
        elif session_id is not None:
            raise InvalidInputError(
                "give data or session_id, not both",
                key="data",
                expected="exactly one of data and session_id",
                got=session_id,
            )
        else:
            check_work_data(data.type, data.id)
        check_text(secret, "secret", nullable=True)  # opaque: any text, "" included
        # No metadata (None or an empty mapping) is the shared empty mapping, without a walk;
        # anything else, falsy or not ([], 0, "", false), is checked and refused.
        merged = (
            _EMPTY_METADATA
            if metadata is None or (isinstance(metadata, Mapping) and not metadata)
            else validate_metadata_patch(_EMPTY_METADATA, metadata, profile)
        )
        created_at = now
        if profile.lifecycle_precision is _SECONDS and now.microsecond:
            created_at = now.replace(microsecond=0)
        body = _new_body(id, environment_id, data, created_at, merged, secret, profile)
        if cls is not Work:  # a subclass gets its own __init__
            return cls(body=body, state=_QUEUED, touched_at=now)
        return _new_work(
            body, _QUEUED, None, None, None, None, None, None, None, None, None, None, 0, 1, now
        )

    # ---------------------------------------------------------------- operations
    def deliver(self, now: _dt.datetime, *, worker_id: str | None = None) -> Work:
        """A poll hands the item to ``worker_id``; it stays ``queued`` (spec §3)."""
        now = self._check_now(now, _DELIVER)
        plan = self._plan(_DELIVER)
        return self._apply(plan, now, delivered_at=now, delivered_to=worker_id)

    def ack(self, now: _dt.datetime, *, worker_id: str | None = None) -> Work:
        """The worker claims the item: ``queued → starting`` and the lease the profile's
        ``ack_lease`` says (the default TTL, a startup lease, or none).

        On ``starting`` and ``active`` an ack is a safe retry and returns this very record.
        """
        now = self._check_now(now, _ACK_OP)
        plan = self._plan(_ACK_OP)
        profile = self.body.profile
        # The binding is checked before a safe retry returns: under a binding profile another
        # worker's ack of an item someone holds is a conflict, not a retry.  An ack that names
        # no worker is not bound: the official SDK sends its worker id on polls only.
        if (
            profile.ack_binds_worker
            and worker_id is not None
            and self.delivered_to is not None
            and worker_id != self.delivered_to
        ):
            raise IllegalMoveError(
                f"cannot ack work {self.body.id}: it was delivered to worker "
                f"{excerpt(self.delivered_to)}, not {excerpt(worker_id)}; "
                "only that worker may ack it",
                error_type=profile.conflict_error_type,
                work_id=self.body.id,
                state=self.state,
                operation=_ACK_OP,
                allowed=allowed_operations(profile, self.state),
            )
        if not plan.changes:
            return self
        # The lease an ack starts is a profile knob (docs/divergences.md): the default TTL, a
        # startup lease, or none at all (the item then waits in ``starting`` for a heartbeat).
        return self._apply(plan, now, delivered_to=worker_id, ttl=profile.ack_lease_seconds())

    def heartbeat(
        self,
        now: _dt.datetime,
        *,
        expected_last_heartbeat: str | None = None,
        desired_ttl_seconds: int | None = None,
    ) -> tuple[Work, HeartbeatResult]:
        """Keep the lease (spec §4): the new record and the API's heartbeat answer.

        ``expected_last_heartbeat`` is ``NO_HEARTBEAT``, the exact token returned last time, or
        None for an unconditional heartbeat.  A mismatch raises
        :class:`~workstate.PreconditionFailedError` (412) carrying the server's lease.

        Tokens never repeat: a heartbeat at the time of the previous one (a clock that has not
        moved) happens one microsecond after it, so the new record's ``touched_at`` may lie
        just ahead of ``now``.
        """
        op = _HEARTBEAT
        now = self._check_now(now, op)
        profile = self.body.profile
        state = self.state
        if desired_ttl_seconds is not None and (
            not is_int(desired_ttl_seconds) or desired_ttl_seconds <= 0
        ):
            raise InvalidInputError(
                "desired_ttl_seconds must be a positive integer, "
                f"got {excerpt(desired_ttl_seconds)}",
                key="desired_ttl_seconds",
                expected="a positive integer (clamped to "
                f"{profile.min_ttl_seconds}-{profile.max_ttl_seconds})",
                got=desired_ttl_seconds,
                work_id=self.body.id,
                state=state,
                operation=op,
            )
        token = expected_last_heartbeat
        if token is not None and type(token) is str and not token.isascii():
            check_text(token, "expected_last_heartbeat")  # the 400 for a token no wire can carry
        matches = token is None or token == self.last_heartbeat
        if not matches:
            if token == NO_HEARTBEAT or token == "":
                # "" is the last_heartbeat a server answers while none is recorded; a worker
                # that echoes it back claims the same thing as NO_HEARTBEAT.
                matches = self.last_heartbeat is None
            else:
                self._check_token(token)
        plan = _plans(profile).get((state._value_, op._value_))
        if plan is None:
            if (
                state is _QUEUED
                and token  # a timestamp: neither None, nor "", nor NO_HEARTBEAT
                and token != NO_HEARTBEAT
                and profile.queued_heartbeat_token_is_precondition_failed
            ):
                raise self._precondition_failed(token)
            raise self._illegal(op)
        if not plan.changes:  # stopping, or stopped where the profile answers 200
            return self, _new_beat(
                self.last_heartbeat or "",
                False,
                state,
                self.ttl_seconds or profile.default_ttl_seconds,
            )
        if not matches:
            raise self._precondition_failed(token)
        ttl = profile.clamp_ttl(desired_ttl_seconds)
        latest = self.latest_heartbeat_at
        if latest is not None and now <= latest:
            # The token is the heartbeat's time, and it must never repeat for an item: a stale
            # token has to meet 412.  On a clock that has not moved since the last heartbeat
            # (a manual clock standing still, a coarse system clock), the heartbeat happens at
            # the next instant the wire can tell apart, one microsecond later.
            now = latest + _ONE_MICROSECOND
        new = self._apply(plan, now, ttl=ttl)
        return new, _new_beat(new.last_heartbeat or "", True, new.state, ttl)

    def stop(self, now: _dt.datetime, *, force: bool = False) -> Work:
        """Stop the item: graceful (``force=False``) asks the worker to drain; forced ends it."""
        if not isinstance(force, bool):
            raise InvalidInputError(
                f"force must be a boolean, got {type(force).__name__}",
                key="force",
                expected="true or false",
                got=force,
                work_id=self.body.id,
                state=self.state,
                operation=_STOP,
            )
        op = _FORCE_STOP if force else _STOP
        now = self._check_now(now, op)
        plan = self._plan(op)
        if not plan.changes:
            return self
        return self._apply(plan, now)

    def expire(self, now: _dt.datetime) -> Work:
        """The lease deadline passed with no successful heartbeat (spec §5).

        ``starting``/``active`` go back to ``queued`` and forget this attempt; ``stopping``
        goes to ``stopped``.  Raises 409 if the deadline has not passed at ``now``.
        """
        op = _EXPIRE
        now = self._check_now(now, op)
        plan = self._plan(op)
        deadline = self.lease_expires_at
        if deadline is None or now <= deadline:
            # An acked item may hold no lease at all (the profile's ack_lease): say so, rather
            # than quote a deadline that does not exist.
            lease = (
                "it holds no lease"
                if deadline is None
                else f"its lease runs until {format_time(deadline)}"
            )
            rule = "a lease's deadline" if deadline is None else "the deadline"
            raise IllegalMoveError(
                f"cannot expire work {self.body.id}: {lease}, and it is {format_time(now)}; "
                f"expire applies after {rule}",
                error_type=self.body.profile.conflict_error_type,
                work_id=self.body.id,
                state=self.state,
                operation=op,
                allowed=allowed_operations(self.body.profile, self.state),
            )
        return self._apply(plan, now)

    def update_metadata(self, now: _dt.datetime, patch: Mapping[str, str | None]) -> Work:
        """Merge ``patch`` into the metadata (``None`` deletes a key); never changes the state.

        Returns this very record when the patch changes nothing.
        """
        op = _UPDATE_METADATA
        now = self._check_now(now, op)
        plan = self._plan(op)
        body = self.body
        merged = validate_metadata_patch(
            body.metadata, patch, body.profile, work_id=body.id, state=self.state
        )
        if merged == body.metadata:
            return self
        return self._apply(plan, now, body=attrs.evolve(body, metadata=merged))

    # ---------------------------------------------------------------- internals
    def _check_now(self, now: _dt.datetime, op: Operation) -> _dt.datetime:
        if type(now) is not _datetime or now.tzinfo is not UTC:
            now = ensure_utc(now)
        if now < self.touched_at:
            raise InvalidInputError(
                f"cannot {op.value} work {self.body.id} at {format_time(now)}: that is earlier "
                f"than its latest recorded time {format_time(self.touched_at)}",
                key="now",
                expected=f"a time at or after {format_time(self.touched_at)}",
                got=now,
                work_id=self.body.id,
                state=self.state,
                operation=op,
            )
        return now

    def _plan(self, op: Operation) -> _Plan:
        plan = _plans(self.body.profile).get((self.state._value_, op._value_))
        if plan is None:
            raise self._illegal(op)
        return plan

    def _illegal(self, op: Operation) -> IllegalMoveError:
        profile = self.body.profile
        allowed = allowed_operations(profile, self.state)
        return IllegalMoveError(
            f"cannot {op.value} work {self.body.id}: it is {self.state.value}, where only "
            f"{', '.join(a.value for a in allowed) or 'nothing'} is allowed",
            error_type=profile.conflict_error_type,
            work_id=self.body.id,
            state=self.state,
            operation=op,
            allowed=allowed,
        )

    def _check_token(self, token: object) -> None:
        if not isinstance(token, str):
            raise InvalidInputError(
                f"expected_last_heartbeat must be a string, got {type(token).__name__}",
                key="expected_last_heartbeat",
                expected=f"{NO_HEARTBEAT!r} or the last_heartbeat returned last time",
                got=token,
                work_id=self.body.id,
                state=self.state,
                operation=_HEARTBEAT,
            )
        try:
            parse_time(token, key="expected_last_heartbeat")
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{exc.message}; or {NO_HEARTBEAT!r} for the first heartbeat",
                key="expected_last_heartbeat",
                expected=f"{NO_HEARTBEAT!r} or the last_heartbeat returned last time",
                got=token,
                work_id=self.body.id,
                state=self.state,
                operation=_HEARTBEAT,
            ) from None

    def _precondition_failed(self, token: str | None) -> PreconditionFailedError:
        current = self.lease_state()
        # An item never heartbeated holds no token to quote: say so instead of printing None.
        if current.last_heartbeat is None:
            held = f"the item has no heartbeat yet (state {self.state.value})"
        else:
            held = f"the server holds {current.last_heartbeat!r} in state {self.state.value}"
        return PreconditionFailedError(
            f"heartbeat on work {self.body.id} expected last_heartbeat {excerpt(token)}, but "
            f"{held}; the lease may belong to another worker",
            current_state=current,
            error_type=self.body.profile.precondition_error_type,
            work_id=self.body.id,
            operation=_HEARTBEAT,
            expected_last_heartbeat=token,
        )

    def _apply(
        self,
        plan: _Plan,
        now: _dt.datetime,
        *,
        body: WorkBody | None = None,
        ttl: int | None = None,
        delivered_at: _dt.datetime | None = None,
        delivered_to: str | None = None,
    ) -> Work:
        """Build the next record by applying ``plan``'s row of the table at ``now``."""
        ack, started, latest = self.acknowledged_at, self.started_at, self.latest_heartbeat_at
        stop_req, stopped = self.stop_requested_at, self.stopped_at
        if plan.stamps:
            lifecycle = now
            if self.body.profile.lifecycle_precision is _SECONDS and now.microsecond:
                lifecycle = now.replace(microsecond=0)
            effect = plan.ack
            if effect is not None:
                ack = lifecycle if effect else None
            effect = plan.started
            if effect is not None:
                started = lifecycle if effect else None
            effect = plan.latest
            if effect is not None:
                latest = now if effect else None  # heartbeat times always keep microseconds
            if plan.stop_requested:
                stop_req = lifecycle
            if plan.stopped:
                stopped = lifecycle
        token, ttl_seconds, deadline = self.last_heartbeat, self.ttl_seconds, self.lease_expires_at
        attempt = self.attempt
        d_at, d_to = self.delivered_at, self.delivered_to
        lease = plan.lease
        if lease is _KEEP:
            if delivered_at is not None:
                d_at, d_to = delivered_at, delivered_to
        elif lease is _EXTEND:
            assert ttl is not None
            token = format_time(now)
            ttl_seconds = ttl
            deadline = _deadline(now, ttl)
        elif lease is _START:
            token = None
            ttl_seconds = ttl
            deadline = None if ttl is None else _deadline(now, ttl)
            attempt += 1
            d_at, d_to = None, delivered_to if delivered_to is not None else d_to
        elif lease is _END:
            deadline = d_at = None  # a stopped item awaits no ack either
        else:  # LeaseEffect.RELEASE
            token = ttl_seconds = deadline = None
            d_at = d_to = None
        return _new_work(
            self.body if body is None else body,
            plan.target,
            ack,
            started,
            latest,
            stop_req,
            stopped,
            token,
            ttl_seconds,
            deadline,
            d_at,
            d_to,
            attempt,
            self.version + 1,
            now,
        )

    def __repr__(self) -> str:
        return f"<Work {self.body.id} {self.state.value} v{self.version}>"

    def to_json(self, *, include_secret: bool = False) -> dict[str, Any]:
        """The API's work object; ``secret`` is written only with ``include_secret=True``."""
        from workstate._wire import work_to_json

        return work_to_json(self, include_secret=include_secret)


_BodyWriter = _writer(WorkBody)
_WorkWriter = _writer(Work)


def _new_body(
    id: str,
    environment_id: str,
    data: WorkData,
    created_at: _dt.datetime,
    metadata: Mapping[str, str],
    secret: str | None,
    profile: Profile,
) -> WorkBody:
    """A :class:`WorkBody` of these values, built fast (see :func:`_writer`)."""
    new: Any = _new_object(_BodyWriter)
    new.id = id
    new.environment_id = environment_id
    new.data = data
    new.created_at = created_at
    new.metadata = metadata
    new.secret = secret
    new.profile = profile
    new.__class__ = WorkBody
    return cast(WorkBody, new)


def _new_work(
    body: WorkBody,
    state: State,
    acknowledged_at: _dt.datetime | None,
    started_at: _dt.datetime | None,
    latest_heartbeat_at: _dt.datetime | None,
    stop_requested_at: _dt.datetime | None,
    stopped_at: _dt.datetime | None,
    last_heartbeat: str | None,
    ttl_seconds: int | None,
    lease_expires_at: _dt.datetime | None,
    delivered_at: _dt.datetime | None,
    delivered_to: str | None,
    attempt: int,
    version: int,
    touched_at: _dt.datetime,
) -> Work:
    """A :class:`Work` of these values, built fast (see :func:`_writer`)."""
    new: Any = _new_object(_WorkWriter)
    new.body = body
    new.state = state
    new.acknowledged_at = acknowledged_at
    new.started_at = started_at
    new.latest_heartbeat_at = latest_heartbeat_at
    new.stop_requested_at = stop_requested_at
    new.stopped_at = stopped_at
    new.last_heartbeat = last_heartbeat
    new.ttl_seconds = ttl_seconds
    new.lease_expires_at = lease_expires_at
    new.delivered_at = delivered_at
    new.delivered_to = delivered_to
    new.attempt = attempt
    new.version = version
    new.touched_at = touched_at
    new.__class__ = Work
    return cast(Work, new)
