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
14 fields rather than 21 (see ``docs/performance.md``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from workstate._engine import allowed_operations, lookup
from workstate._errors import (
    IllegalMoveError,
    InvalidInputError,
    LeaseState,
    PreconditionFailedError,
)
from workstate._profile import ANTHROPIC, Precision, Profile
from workstate._records import WORK_DATA_TYPES, HeartbeatResult, WorkData
from workstate._table import LeaseEffect, Move, Operation, Stamp, State
from workstate._time import UTC, ensure_utc, format_time, parse_time, truncate

__all__ = ["NO_HEARTBEAT", "Work", "WorkBody", "validate_metadata_patch"]

NO_HEARTBEAT = "NO_HEARTBEAT"
"""The heartbeat token that claims a lease with no heartbeat yet."""

_EMPTY_METADATA: Mapping[str, str] = MappingProxyType({})
_LEASE_STATES = frozenset({State.STARTING, State.ACTIVE, State.STOPPING})
_TTL_CACHE: dict[int, _dt.timedelta] = {}
_ACK, _STARTED, _LATEST, _STOP_REQ, _STOPPED = (
    Stamp.ACKNOWLEDGED_AT,
    Stamp.STARTED_AT,
    Stamp.LATEST_HEARTBEAT_AT,
    Stamp.STOP_REQUESTED_AT,
    Stamp.STOPPED_AT,
)


def _ttl_delta(seconds: int) -> _dt.timedelta:
    delta = _TTL_CACHE.get(seconds)
    if delta is None:
        delta = _TTL_CACHE[seconds] = _dt.timedelta(seconds=seconds)
    return delta


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
    metadata: Mapping[str, str] = _EMPTY_METADATA
    """User metadata, string to string (read-only)."""
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
    op = Operation.UPDATE_METADATA

    def bad(message: str, key: str, expected: str, got: object) -> InvalidInputError:
        return InvalidInputError(
            message, key=key, expected=expected, got=got, work_id=work_id, state=state, operation=op
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
        if not isinstance(key, str) or not key:
            raise bad(
                f"metadata keys must be non-empty strings, got {key!r}",
                "metadata",
                "non-empty string keys",
                key,
            )
        if len(key) > max_key:
            raise bad(
                f"metadata key {key[:20]!r}... is {len(key)} characters long; "
                f"at most {max_key} are accepted",
                f"metadata.{key}",
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
        _check_id(id, "id", "work_")
        _check_id(environment_id, "environment_id", "env_")
        if data is None:
            if session_id is None:
                raise InvalidInputError(
                    "create needs data or session_id",
                    key="data",
                    expected="data={'type': 'session', 'id': ...} or session_id=...",
                )
            _check_id(session_id, "data.id", "")
            data = WorkData(type="session", id=session_id)
        elif session_id is not None:
            raise InvalidInputError(
                "give data or session_id, not both",
                key="data",
                expected="exactly one of data and session_id",
                got=session_id,
            )
        else:
            if data.type not in WORK_DATA_TYPES:
                raise InvalidInputError(
                    f"data.type must be one of {sorted(WORK_DATA_TYPES)}, got {data.type!r}",
                    key="data.type",
                    expected=f"one of {sorted(WORK_DATA_TYPES)}",
                    got=data.type,
                )
            _check_id(data.id, "data.id", "")
        if secret is not None and not isinstance(secret, str):
            raise InvalidInputError(
                f"secret must be a string or None, got {type(secret).__name__}",
                key="secret",
                expected="a string or None",
                got=secret,
            )
        merged = validate_metadata_patch(_EMPTY_METADATA, metadata or {}, profile)
        body = WorkBody(
            id=id,
            environment_id=environment_id,
            data=data,
            created_at=truncate(now, profile.lifecycle_precision),
            metadata=merged,
            secret=secret,
            profile=profile,
        )
        return cls(body=body, state=State.QUEUED, touched_at=now)

    # ---------------------------------------------------------------- operations
    def deliver(self, now: _dt.datetime, *, worker_id: str | None = None) -> Work:
        """A poll hands the item to ``worker_id``; it stays ``queued`` (spec §3)."""
        now = self._check_now(now, Operation.DELIVER)
        move = self._move(Operation.DELIVER)
        return self._apply(move, now, delivered_at=now, delivered_to=worker_id)

    def ack(self, now: _dt.datetime, *, worker_id: str | None = None) -> Work:
        """The worker claims the item: ``queued → starting`` and a lease with the default TTL.

        On ``starting`` and ``active`` an ack is a safe retry and returns this very record.
        """
        now = self._check_now(now, Operation.ACK)
        move = self._move(Operation.ACK)
        if not move.changes:
            return self
        profile = self.body.profile
        if (
            profile.ack_binds_worker
            and self.delivered_to is not None
            and worker_id != self.delivered_to
        ):
            raise IllegalMoveError(
                f"cannot ack work {self.body.id}: it was delivered to worker "
                f"{self.delivered_to!r}, not {worker_id!r}; only that worker may ack it",
                error_type=profile.conflict_error_type,
                work_id=self.body.id,
                state=self.state,
                operation=Operation.ACK,
                allowed=allowed_operations(profile, self.state),
            )
        return self._apply(move, now, delivered_to=worker_id, ttl=profile.default_ttl_seconds)

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
        """
        op = Operation.HEARTBEAT
        now = self._check_now(now, op)
        profile = self.body.profile
        state = self.state
        if desired_ttl_seconds is not None and (
            isinstance(desired_ttl_seconds, bool)
            or not isinstance(desired_ttl_seconds, int)
            or desired_ttl_seconds <= 0
        ):
            raise InvalidInputError(
                f"desired_ttl_seconds must be a positive integer, got {desired_ttl_seconds!r}",
                key="desired_ttl_seconds",
                expected="a positive integer (clamped to "
                f"{profile.min_ttl_seconds}-{profile.max_ttl_seconds})",
                got=desired_ttl_seconds,
                work_id=self.body.id,
                state=state,
                operation=op,
            )
        token = expected_last_heartbeat
        matches = token is None or token == self.last_heartbeat
        if not matches:
            if token == NO_HEARTBEAT:
                matches = self.last_heartbeat is None
            else:
                self._check_token(token)
        move = lookup(profile).get((state, op))
        if move is None:
            if (
                state is State.QUEUED
                and token is not None
                and token != NO_HEARTBEAT
                and profile.queued_heartbeat_token_is_precondition_failed
            ):
                raise self._precondition_failed(token)
            raise self._illegal(op)
        if not move.changes:  # stopping, or stopped where the profile answers 200
            return self, HeartbeatResult(
                last_heartbeat=self.last_heartbeat or "",
                lease_extended=False,
                state=state,
                ttl_seconds=self.ttl_seconds or profile.default_ttl_seconds,
            )
        if not matches:
            raise self._precondition_failed(token)
        ttl = profile.clamp_ttl(desired_ttl_seconds)
        new = self._apply(move, now, ttl=ttl)
        return new, HeartbeatResult(
            last_heartbeat=new.last_heartbeat or "",
            lease_extended=True,
            state=new.state,
            ttl_seconds=ttl,
        )

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
                operation=Operation.STOP,
            )
        op = Operation.FORCE_STOP if force else Operation.STOP
        now = self._check_now(now, op)
        move = self._move(op)
        if not move.changes:
            return self
        return self._apply(move, now)

    def expire(self, now: _dt.datetime) -> Work:
        """The lease deadline passed with no successful heartbeat (spec §5).

        ``starting``/``active`` go back to ``queued`` and forget this attempt; ``stopping``
        goes to ``stopped``.  Raises 409 if the deadline has not passed at ``now``.
        """
        op = Operation.EXPIRE
        now = self._check_now(now, op)
        move = self._move(op)
        deadline = self.lease_expires_at
        if deadline is None or now <= deadline:
            raise IllegalMoveError(
                f"cannot expire work {self.body.id}: its lease runs until "
                f"{format_time(deadline) if deadline else 'no deadline'}, "
                f"and it is {format_time(now)}; expire applies after the deadline",
                error_type=self.body.profile.conflict_error_type,
                work_id=self.body.id,
                state=self.state,
                operation=op,
                allowed=allowed_operations(self.body.profile, self.state),
            )
        return self._apply(move, now)

    def update_metadata(self, now: _dt.datetime, patch: Mapping[str, str | None]) -> Work:
        """Merge ``patch`` into the metadata (``None`` deletes a key); never changes the state.

        Returns this very record when the patch changes nothing.
        """
        op = Operation.UPDATE_METADATA
        now = self._check_now(now, op)
        move = self._move(op)
        body = self.body
        merged = validate_metadata_patch(
            body.metadata, patch, body.profile, work_id=body.id, state=self.state
        )
        if merged == body.metadata:
            return self
        return self._apply(move, now, body=attrs.evolve(body, metadata=merged))

    # ---------------------------------------------------------------- internals
    def _check_now(self, now: _dt.datetime, op: Operation) -> _dt.datetime:
        if type(now) is not _dt.datetime or now.tzinfo is not UTC:
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

    def _move(self, op: Operation) -> Move:
        move = lookup(self.body.profile).get((self.state, op))
        if move is None:
            raise self._illegal(op)
        return move

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
                operation=Operation.HEARTBEAT,
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
                operation=Operation.HEARTBEAT,
            ) from None

    def _precondition_failed(self, token: str | None) -> PreconditionFailedError:
        current = self.lease_state()
        return PreconditionFailedError(
            f"heartbeat on work {self.body.id} expected last_heartbeat {token!r}, but the "
            f"server holds {current.last_heartbeat!r} in state {self.state.value}; the lease "
            "may belong to another worker",
            current_state=current,
            error_type=self.body.profile.precondition_error_type,
            work_id=self.body.id,
            operation=Operation.HEARTBEAT,
            expected_last_heartbeat=token,
        )

    def _apply(
        self,
        move: Move,
        now: _dt.datetime,
        *,
        body: WorkBody | None = None,
        ttl: int | None = None,
        delivered_at: _dt.datetime | None = None,
        delivered_to: str | None = None,
    ) -> Work:
        """Build the next record by applying ``move``'s row of the table at ``now``."""
        sets, clears = move.sets, move.clears
        if sets or clears:
            lifecycle = now
            if self.body.profile.lifecycle_precision is Precision.SECONDS and now.microsecond:
                lifecycle = now.replace(microsecond=0)
            ack = self.acknowledged_at
            if _ACK in sets:
                ack = lifecycle
            elif _ACK in clears:
                ack = None
            started = self.started_at
            if _STARTED in sets:
                started = lifecycle
            elif _STARTED in clears:
                started = None
            latest = self.latest_heartbeat_at
            if _LATEST in sets:
                latest = now  # heartbeat times always keep microseconds
            elif _LATEST in clears:
                latest = None
            stop_req = lifecycle if _STOP_REQ in sets else self.stop_requested_at
            stopped = lifecycle if _STOPPED in sets else self.stopped_at
        else:
            ack, started, latest = self.acknowledged_at, self.started_at, self.latest_heartbeat_at
            stop_req, stopped = self.stop_requested_at, self.stopped_at
        token, ttl_seconds, deadline = self.last_heartbeat, self.ttl_seconds, self.lease_expires_at
        attempt = self.attempt
        d_at, d_to = self.delivered_at, self.delivered_to
        lease = move.lease
        if lease is LeaseEffect.KEEP:
            if delivered_at is not None:
                d_at, d_to = delivered_at, delivered_to
        elif lease is LeaseEffect.EXTEND:
            assert ttl is not None
            token = format_time(now)
            ttl_seconds = ttl
            deadline = now + _ttl_delta(ttl)
        elif lease is LeaseEffect.START:
            assert ttl is not None
            token = None
            ttl_seconds = ttl
            deadline = now + _ttl_delta(ttl)
            attempt += 1
            d_at, d_to = None, delivered_to if delivered_to is not None else d_to
        elif lease is LeaseEffect.END:
            deadline = d_at = None  # a stopped item awaits no ack either
        else:  # LeaseEffect.RELEASE
            token = ttl_seconds = deadline = None
            d_at = d_to = None
        return Work(
            body=self.body if body is None else body,
            state=move.target,
            acknowledged_at=ack,
            started_at=started,
            latest_heartbeat_at=latest,
            stop_requested_at=stop_req,
            stopped_at=stopped,
            last_heartbeat=token,
            ttl_seconds=ttl_seconds,
            lease_expires_at=deadline,
            delivered_at=d_at,
            delivered_to=d_to,
            attempt=attempt,
            version=self.version + 1,
            touched_at=now,
        )

    def __repr__(self) -> str:
        return f"<Work {self.body.id} {self.state.value} v{self.version}>"

    def to_json(self, *, include_secret: bool = False) -> dict[str, Any]:
        """The API's work object; ``secret`` is written only with ``include_secret=True``."""
        from workstate._wire import work_to_json

        return work_to_json(self, include_secret=include_secret)


def _check_id(value: object, key: str, prefix: str) -> None:
    if not isinstance(value, str) or not value.startswith(prefix) or len(value) <= len(prefix):
        shape = f"a string starting with {prefix!r}" if prefix else "a non-empty string"
        raise InvalidInputError(
            f"{key} must be {shape}, got {value!r}", key=key, expected=shape, got=value
        )
