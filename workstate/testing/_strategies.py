"""Hypothesis strategies: work items, operations on them, timestamps, traces and bad wire input.

Theory of operation
-------------------
Items are never built by filling fields at random.  :func:`works` starts from
:meth:`Work.create <workstate.Work.create>` and applies operations drawn from the table of
moves, each with inputs the core accepts and a time no earlier than the item's latest, so
every timestamp, lease field and token is one the core itself produced.  To reach a requested
state it walks on, then steers along the shortest path of moves to that state.

An operation is described by a :class:`Call` (what to do, when, with which inputs), which can
be applied to any item.  :func:`calls` draws calls the core accepts on a given item, or calls
it must reject (each kind of rejection: an operation the table does not allow, a wrong
heartbeat token, a bad TTL, token or metadata patch, an expiry before the deadline, a time in
the past, the wrong worker), with the status it must answer.  :func:`runs` strings calls into
a sequence, :func:`traces` turns runs of several items into the JSON Lines records the trace
checker reads, and :func:`bad_work_json` spoils a sound work object in each way the parser
rejects, naming the key it must blame.

Every strategy takes the :class:`~workstate.Profile` to follow.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar, assert_never

import attrs
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy

from workstate._engine import allowed_operations, lookup
from workstate._errors import WorkstateError
from workstate._profile import ANTHROPIC, PROFILES, Precision, Profile
from workstate._records import WORK_DATA_TYPES, HeartbeatResult, WorkData
from workstate._table import Move, Operation, State
from workstate._time import UTC, format_time, parse_time, truncate
from workstate._trace import heartbeat_record
from workstate._wire import WORK_KEYS
from workstate._work import NO_HEARTBEAT, Work

__all__ = [
    "BAD_WIRE_KINDS",
    "BadInput",
    "Call",
    "Run",
    "Step",
    "bad_work_json",
    "calls",
    "metadata_patches",
    "profiles",
    "runs",
    "timestamps",
    "traces",
    "works",
]

_MIN_TIME = _dt.datetime(2020, 1, 1)
_MAX_TIME = _dt.datetime(2090, 1, 1)  # room to add years of steps without overflow
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_KEY_ALPHABET = _ALNUM + "-_."
_STAMP_KEYS = (
    "acknowledged_at",
    "started_at",
    "latest_heartbeat_at",
    "stop_requested_at",
    "stopped_at",
)
_TIME_KEYS = ("created_at", *_STAMP_KEYS)
_MAX_GAP_US = 90_000_000  # 90 s between steps: long enough to cross short leases
_T = TypeVar("_T")


def _micros(value: int) -> _dt.timedelta:
    return _dt.timedelta(microseconds=value)


# ------------------------------------------------------------------------------ basics
# Drawing goes through plain functions taking ``draw`` and through leaf strategies built once:
# a strategy object built per draw costs Hypothesis a validation each time, which made
# generating a trace ten times slower.


@functools.cache
def _ints(lo: int, hi: int) -> SearchStrategy[int]:
    return st.integers(lo, hi)


def _choose(draw: DrawFn, options: Sequence[_T]) -> _T:
    """One of ``options``; shrinks towards the first."""
    return options[draw(_ints(0, len(options) - 1))]


_BOOLS = st.booleans()
_UNIT = st.floats(0, 1)


def _naive(value: _dt.datetime | None, default: _dt.datetime) -> _dt.datetime:
    if value is None:
        return default
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


@functools.cache
def _timestamps(
    low: _dt.datetime, high: _dt.datetime, precision: Precision
) -> SearchStrategy[_dt.datetime]:
    strategy = st.datetimes(low, high, timezones=st.just(UTC))
    if precision is Precision.MICROSECONDS:
        return strategy
    return strategy.map(lambda t: truncate(t, precision))


def timestamps(
    *,
    min_value: _dt.datetime | None = None,
    max_value: _dt.datetime | None = None,
    precision: Precision = Precision.MICROSECONDS,
) -> SearchStrategy[_dt.datetime]:
    """Timezone-aware datetimes in UTC, by default between 2020 and 2090.

    ``min_value`` and ``max_value`` may be aware (any offset) or naive (read as UTC);
    ``precision=Precision.SECONDS`` draws whole seconds only.
    """
    return _timestamps(_naive(min_value, _MIN_TIME), _naive(max_value, _MAX_TIME), precision)


def profiles() -> SearchStrategy[Profile]:
    """One of the shipped profiles (``anthropic``, ``qoder``)."""
    return st.sampled_from(list(PROFILES.values()))


@functools.cache
def _ident(prefix: str) -> SearchStrategy[str]:
    return st.text(_ALNUM, min_size=1, max_size=12).map(lambda s: prefix + s)


@functools.cache
def _maybe_ident(prefix: str) -> SearchStrategy[str | None]:
    return st.none() | _ident(prefix)


@functools.cache
def _metadata_values(max_length: int) -> SearchStrategy[str]:
    return st.text(max_size=min(16, max_length))


@functools.cache
def _metadata_keys(max_length: int) -> SearchStrategy[str]:
    return st.text(_KEY_ALPHABET, min_size=1, max_size=min(8, max_length))


def _draw_patch(
    draw: DrawFn, current: Mapping[str, str], profile: Profile
) -> dict[str, str | None]:
    keys = _metadata_keys(profile.max_metadata_key_length)
    values = _metadata_values(profile.max_metadata_value_length)
    patch: dict[str, str | None] = {}
    for key in sorted(current):
        action = draw(_ints(0, 2))  # keep, delete, change
        if action == 1:
            patch[key] = None
        elif action == 2:
            patch[key] = draw(values)
    room = profile.max_metadata_pairs - len(current)
    for _ in range(draw(_ints(0, max(0, min(room, 3))))):
        key = draw(keys)
        if key not in current:  # a new key with None would merely be ignored
            patch[key] = draw(values)
    return patch


@st.composite
def _patches(draw: DrawFn, current: Mapping[str, str], profile: Profile) -> dict[str, str | None]:
    return _draw_patch(draw, current, profile)


def metadata_patches(
    current: Mapping[str, str] | None = None, *, profile: Profile = ANTHROPIC
) -> SearchStrategy[dict[str, str | None]]:
    """Merge patches the core accepts on an item holding ``current``: new or changed keys
    within the profile's limits, and ``None`` values that delete a key."""
    return _patches(dict(current or {}), profile)


def _bad_patches(profile: Profile) -> list[tuple[dict[str, Any], str]]:
    """Patches the core rejects (400), with the key it blames."""
    long_key = "k" * (profile.max_metadata_key_length + 1)
    long_value = "v" * (profile.max_metadata_value_length + 1)
    too_many = {f"key{i}": "v" for i in range(profile.max_metadata_pairs + 1)}
    return [
        ({long_key: "v"}, f"metadata.{long_key}"),
        ({"k": long_value}, "metadata.k"),
        ({"k": 1}, "metadata.k"),
        ({"": "v"}, "metadata"),
        (too_many, "metadata"),
    ]


# ------------------------------------------------------------------------------ calls
@attrs.frozen(kw_only=True)
class Call:
    """One operation on a work item: what, when, and with which inputs."""

    operation: Operation
    """The operation."""
    at: _dt.datetime
    """The time it happens (the core's ``now``)."""
    worker_id: str | None = None
    """For ``deliver`` and ``ack``: the worker."""
    expected_last_heartbeat: str | None = None
    """For ``heartbeat``: the token sent (None: an unconditional heartbeat)."""
    desired_ttl_seconds: int | None = None
    """For ``heartbeat``: the TTL asked for."""
    patch: Mapping[str, Any] | None = None
    """For ``update_metadata``: the merge patch."""
    expect_status: int = 200
    """The status the core answers: 200, or the error's status for a call drawn as illegal."""
    reason: str = ""
    """Why a call drawn as illegal is rejected (empty for a legal call)."""

    def apply(self, work: Work) -> tuple[Work, HeartbeatResult | None]:
        """Apply the call to ``work`` through the core: the new record and, for a heartbeat,
        the answer.  Raises the core's :class:`~workstate.WorkstateError` on a rejection."""
        op = self.operation
        if op is Operation.DELIVER:
            return work.deliver(self.at, worker_id=self.worker_id), None
        if op is Operation.ACK:
            return work.ack(self.at, worker_id=self.worker_id), None
        if op is Operation.HEARTBEAT:
            return work.heartbeat(
                self.at,
                expected_last_heartbeat=self.expected_last_heartbeat,
                desired_ttl_seconds=self.desired_ttl_seconds,
            )
        if op is Operation.STOP:
            return work.stop(self.at), None
        if op is Operation.FORCE_STOP:
            return work.stop(self.at, force=True), None
        if op is Operation.EXPIRE:
            return work.expire(self.at), None
        if op is Operation.UPDATE_METADATA:
            return work.update_metadata(self.at, self.patch or {}), None
        assert_never(op)  # pragma: no cover

    def __str__(self) -> str:
        args = [format_time(self.at)]
        for name in ("worker_id", "expected_last_heartbeat", "desired_ttl_seconds", "patch"):
            value = getattr(self, name)
            if value is not None:
                args.append(f"{name}={value!r}")
        return f"{self.operation.value}({', '.join(args)})"


def _later(draw: DrawFn, after: _dt.datetime, min_gap_us: int = 0) -> _dt.datetime:
    return after + _micros(draw(_ints(min_gap_us, max(min_gap_us, _MAX_GAP_US))))


# Well-formed heartbeat tokens that no item drawn here ever holds (items live after 2020).
_FOREIGN_TOKENS = timestamps(min_value=_dt.datetime(2001, 1, 1), max_value=_MIN_TIME).map(
    format_time
)
_BAD_TOKENS = ("yesterday", "2026-07-01T08:15:06", "no_heartbeat", "2026-07-01")


def _draw_legal_call(
    draw: DrawFn,
    work: Work,
    only: Operation | None = None,
    avoid: Collection[State] = (),
    min_gap_us: int = 0,
) -> Call:
    profile = work.profile
    table = lookup(profile)
    ops = [
        op
        for op in allowed_operations(profile, work.state)
        if (op is not Operation.EXPIRE or work.lease_expires_at is not None)
        and table[(work.state, op)].target not in avoid
        and (only is None or op is only)
    ]
    # Ending the item is drawn one time in four, so that walks go through the lifecycle.
    ending = [op for op in ops if table[(work.state, op)].target is State.STOPPED]
    going = [op for op in ops if op not in ending] if work.state.is_live else []
    if ending and going:
        ops = going if draw(_ints(0, 3)) else ending
    # The moves that carry an item forward (ack, a heartbeat that counts) are drawn most.
    forward = {(State.QUEUED, Operation.ACK), (State.STARTING, Operation.HEARTBEAT)}
    forward.add((State.ACTIVE, Operation.HEARTBEAT))
    op = _choose(draw, [op for op in ops for _ in range(3 if (work.state, op) in forward else 1)])
    at = _later(draw, work.touched_at, min_gap_us)
    if op is Operation.DELIVER:
        return Call(operation=op, at=at, worker_id=draw(_maybe_ident("worker-")))
    if op is Operation.ACK:
        worker = work.delivered_to
        if not (profile.ack_binds_worker and worker is not None):
            worker = draw(_maybe_ident("worker-"))
        return Call(operation=op, at=at, worker_id=worker)
    if op is Operation.HEARTBEAT:
        token: str | None
        if work.state in (State.STARTING, State.ACTIVE):
            token = _choose(draw, [work.last_heartbeat or NO_HEARTBEAT, None])
        elif draw(_BOOLS):  # stopping (or stopped): the token is not compared, only its form
            token = draw(_FOREIGN_TOKENS)
        else:
            token = _choose(draw, [None, NO_HEARTBEAT, work.last_heartbeat])
        ttl = None if draw(_BOOLS) else draw(_ints(1, 2 * profile.max_ttl_seconds))
        return Call(operation=op, at=at, expected_last_heartbeat=token, desired_ttl_seconds=ttl)
    if op is Operation.EXPIRE:
        assert work.lease_expires_at is not None
        at = max(at, work.lease_expires_at + _micros(draw(_ints(1, 120_000_000))))
        return Call(operation=op, at=at)
    if op is Operation.UPDATE_METADATA:
        patch = _draw_patch(draw, work.metadata, profile)
        return Call(operation=op, at=at, patch=patch)
    return Call(operation=op, at=at)  # stop, force_stop


def _illegal_kinds(work: Work) -> list[str]:
    profile = work.profile
    kinds = ["illegal-operation", "bad-ttl", "bad-token", "bad-metadata", "in-the-past"]
    if work.state in (State.STARTING, State.ACTIVE) or (
        work.state is State.QUEUED and profile.queued_heartbeat_token_is_precondition_failed
    ):
        kinds.append("wrong-token")
    if work.lease_expires_at is not None and work.touched_at <= work.lease_expires_at:
        # (A call after the deadline, a stop of a lapsed lease say, leaves no time at which
        # an expiry would be early.)
        kinds.append("early-expire")
    if (
        profile.ack_binds_worker
        and work.delivered_to is not None
        and work.state in (State.QUEUED, State.STARTING, State.ACTIVE)
    ):
        kinds.append("wrong-worker")  # a bound ack, and its retries, belong to one worker
    return kinds


def _draw_illegal_call(draw: DrawFn, work: Work) -> Call:
    profile = work.profile
    kind = _choose(draw, _illegal_kinds(work))
    at = _later(draw, work.touched_at)
    conflict = 409
    if kind == "illegal-operation":
        allowed = allowed_operations(profile, work.state)
        op = _choose(draw, [op for op in Operation if op not in allowed])
        token = NO_HEARTBEAT if op is Operation.HEARTBEAT else None
        return Call(
            operation=op,
            at=at,
            expected_last_heartbeat=token,
            expect_status=conflict,
            reason=f"{op.value} is not allowed on a {work.state.value} item",
        )
    if kind == "wrong-token":
        if work.last_heartbeat is not None and draw(_BOOLS):
            token = NO_HEARTBEAT
        else:
            token = draw(_FOREIGN_TOKENS)
        return Call(
            operation=Operation.HEARTBEAT,
            at=at,
            expected_last_heartbeat=token,
            expect_status=412,
            reason=f"the token {token!r} is not the item's last_heartbeat",
        )
    if kind == "bad-ttl":
        return Call(
            operation=Operation.HEARTBEAT,
            at=at,
            desired_ttl_seconds=-draw(_ints(0, 1000)),
            expect_status=400,
            reason="desired_ttl_seconds must be positive",
        )
    if kind == "bad-token":
        token = _choose(draw, _BAD_TOKENS)
        return Call(
            operation=Operation.HEARTBEAT,
            at=at,
            expected_last_heartbeat=token,
            expect_status=400,
            reason=f"the token {token!r} is neither NO_HEARTBEAT nor an RFC 3339 time",
        )
    if kind == "bad-metadata":
        patch, key = _choose(draw, _bad_patches(profile))
        return Call(
            operation=Operation.UPDATE_METADATA,
            at=at,
            patch=patch,
            expect_status=400,
            reason=f"the patch breaks the metadata rules at {key}",
        )
    if kind == "early-expire":
        deadline = work.lease_expires_at
        assert deadline is not None
        at = work.touched_at + (deadline - work.touched_at) * draw(_UNIT)
        at = min(max(at, work.touched_at), deadline)
        return Call(
            operation=Operation.EXPIRE,
            at=at,
            expect_status=conflict,
            reason="the lease has not run out yet",
        )
    if kind == "in-the-past":
        call = _draw_legal_call(draw, work)
        return attrs.evolve(
            call,
            at=work.touched_at - _micros(draw(_ints(1, 10_000_000))),
            expect_status=400,
            reason="the time is earlier than the item's latest recorded time",
        )
    assert kind == "wrong-worker"
    return Call(
        operation=Operation.ACK,
        at=at,
        worker_id=f"{work.delivered_to}-other",
        expect_status=conflict,
        reason="only the worker the item was delivered to may ack it",
    )


@st.composite
def _calls(draw: DrawFn, work: Work, legal: bool | None) -> Call:
    if legal is None:
        legal = draw(_BOOLS)
    return _draw_legal_call(draw, work) if legal else _draw_illegal_call(draw, work)


def calls(work: Work, *, legal: bool | None = None) -> SearchStrategy[Call]:
    """Calls on ``work``: ones the core accepts (``legal=True``), ones it rejects
    (``legal=False``, with :attr:`Call.expect_status` and :attr:`Call.reason`), or both.

    Legal calls never go back in time and carry the matching heartbeat token; an expiry is
    drawn after the lease's deadline.
    """
    return _calls(work, legal)


# ------------------------------------------------------------------------------ items
def _walkable(profile: Profile) -> list[tuple[tuple[State, Operation], Move]]:
    """The table's rows a walk can take: all of them, except an expiry from ``starting``
    under a profile whose ack starts no lease (nothing there can lapse)."""
    no_ack_lease = profile.ack_lease_seconds() is None
    return [
        (pair, move)
        for pair, move in lookup(profile).items()
        if not (no_ack_lease and pair == (State.STARTING, Operation.EXPIRE))
    ]


@functools.cache
def _reachable(profile: Profile, start: State) -> frozenset[State]:
    seen, todo = {start}, [start]
    table = _walkable(profile)
    while todo:
        state = todo.pop()
        for (source, _op), move in table:
            if source is state and move.target not in seen:
                seen.add(move.target)
                todo.append(move.target)
    return frozenset(seen)


@functools.cache
def _dead_ends(profile: Profile, goals: frozenset[State]) -> frozenset[State]:
    """The states from which none of ``goals`` can be reached."""
    return frozenset(s for s in State if not _reachable(profile, s) & goals)


@functools.cache
def _path(profile: Profile, start: State, goals: frozenset[State]) -> tuple[Operation, ...]:
    """The shortest sequence of operations leading from ``start`` into ``goals``."""
    table = _walkable(profile)
    parents: dict[State, tuple[State, Operation] | None] = {start: None}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        if state in goals:
            ops: list[Operation] = []
            while (parent := parents[state]) is not None:
                state, op = parent
                ops.append(op)
            return tuple(ops[::-1])
        for (source, op), move in table:
            if source is state and move.target not in parents:
                parents[move.target] = (state, op)
                todo.append(move.target)
    # Unreachable: walks never enter a state from which the goals cannot be reached.
    raise ValueError(  # pragma: no cover
        f"no path from {start.value} to {sorted(s.value for s in goals)}"
    )


_SECRETS = st.none() | st.text(_ALNUM, min_size=1, max_size=16)
_DATA_TYPES = tuple(sorted(WORK_DATA_TYPES))


def _draw_fresh(draw: DrawFn, profile: Profile) -> Work:
    keys = _metadata_keys(profile.max_metadata_key_length)
    values = _metadata_values(profile.max_metadata_value_length)
    metadata = {
        draw(keys): draw(values) for _ in range(draw(_ints(0, min(3, profile.max_metadata_pairs))))
    }
    return Work.create(
        id=draw(_ident("work_")),
        environment_id=draw(_ident("env_")),
        data=WorkData(type=_choose(draw, _DATA_TYPES), id=draw(_ident("sesn_"))),
        now=draw(timestamps()),
        metadata=metadata,
        secret=draw(_SECRETS),
        profile=profile,
    )


def _draw_work(
    draw: DrawFn, profile: Profile, states: frozenset[State] | None, max_steps: int
) -> Work:
    work = _draw_fresh(draw, profile)
    # Never walk into a state from which none of the wanted states can be reached.
    avoid = () if states is None else _dead_ends(profile, states)
    for _ in range(draw(_ints(0, max_steps))):
        work, _beat = _draw_legal_call(draw, work, avoid=avoid).apply(work)
    if states is not None and work.state not in states:
        for op in _path(profile, work.state, states):
            work, _beat = _draw_legal_call(draw, work, only=op).apply(work)
    return work


@st.composite
def _works(draw: DrawFn, profile: Profile, states: frozenset[State] | None, max_steps: int) -> Work:
    return _draw_work(draw, profile, states, max_steps)


def works(
    profile: Profile = ANTHROPIC,
    *,
    states: Collection[State] | None = None,
    max_steps: int = 8,
) -> SearchStrategy[Work]:
    """Work items produced by the core: created, then moved by up to ``max_steps`` legal
    operations (and steered into one of ``states`` when given).

    ``st.from_type(Work)`` draws from ``works()`` once :mod:`workstate.testing` is imported.
    """
    wanted = None if states is None else frozenset(states)
    if wanted is not None and not wanted:
        raise ValueError("states must name at least one state")
    return _works(profile, wanted, max_steps)


# ------------------------------------------------------------------------------ runs
@attrs.frozen(kw_only=True)
class Step:
    """One call of a :class:`Run` and what the core answered."""

    call: Call
    """The call."""
    work: Work
    """The item afterwards (the same record as before when the call was rejected)."""
    heartbeat: HeartbeatResult | None = None
    """A heartbeat's answer."""
    error: WorkstateError | None = None
    """The rejection, if the core rejected the call."""


@attrs.frozen(kw_only=True)
class Run:
    """A starting item and a sequence of calls to apply to it in order."""

    start: Work
    """The item before the first call."""
    calls: tuple[Call, ...]
    """The calls."""

    def replay(self) -> list[Step]:
        """Apply the calls through the core, one :class:`Step` each."""
        work, out = self.start, []
        for call in self.calls:
            try:
                work, beat = call.apply(work)
            except WorkstateError as exc:
                out.append(Step(call=call, work=work, error=exc))
            else:
                out.append(Step(call=call, work=work, heartbeat=beat))
        return out


def _draw_run(
    draw: DrawFn,
    profile: Profile,
    start: Work | None,
    min_size: int,
    max_size: int,
    illegal: bool,
    min_gap_us: int,
) -> Run:
    first = start if start is not None else _draw_fresh(draw, profile)
    work, out = first, []
    for i in range(draw(_ints(min_size, max_size))):
        if work.state is State.STOPPED and i >= min_size and draw(_BOOLS):
            break  # little happens to a stopped item
        if illegal and draw(_BOOLS):
            call = _draw_illegal_call(draw, work)
        else:
            call = _draw_legal_call(draw, work, min_gap_us=min_gap_us)
        out.append(call)
        with contextlib.suppress(WorkstateError):  # a rejected call leaves the item as it was
            work, _beat = call.apply(work)
    return Run(start=first, calls=tuple(out))


@st.composite
def _runs(
    draw: DrawFn,
    profile: Profile,
    start: Work | None,
    min_size: int,
    max_size: int,
    illegal: bool,
    min_gap_us: int,
) -> Run:
    return _draw_run(draw, profile, start, min_size, max_size, illegal, min_gap_us)


def runs(
    profile: Profile = ANTHROPIC,
    *,
    start: Work | None = None,
    min_size: int = 0,
    max_size: int = 12,
    illegal: bool = False,
    min_gap_seconds: float = 0.0,
) -> SearchStrategy[Run]:
    """Sequences of calls, each legal at its point (mixed with rejected ones when
    ``illegal=True``), from ``start`` or from a freshly created item.

    ``min_gap_seconds`` keeps consecutive calls at least that far apart in time.
    """
    if start is not None:
        profile = start.profile
    gap = int(min_gap_seconds * 1_000_000)
    return _runs(profile, start, min_size, max_size, illegal, gap)


def _records(steps: Sequence[Step], keep: Sequence[bool], heartbeats: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for step, kept in zip(steps, keep, strict=True):  # every call of these runs is legal
        if step.heartbeat is not None and heartbeats:
            out.append(heartbeat_record(step.work.id, step.heartbeat))
        if kept:
            out.append(step.work.to_json())
    return out


@st.composite
def _traces(
    draw: DrawFn,
    profile: Profile,
    max_items: int,
    max_steps: int,
    complete: bool,
    heartbeats: bool,
    min_gap_us: int,
) -> list[dict[str, Any]]:
    lanes: list[list[dict[str, Any]]] = []
    used: set[str] = set()
    for _ in range(draw(_ints(1, max_items))):
        run = _draw_run(draw, profile, None, 0, max_steps, False, min_gap_us)
        if run.start.id in used:
            continue
        used.add(run.start.id)
        steps = run.replay()
        keep = [complete or draw(_BOOLS) for _ in steps]
        lanes.append([run.start.to_json(), *_records(steps, keep, heartbeats)])
    # Interleave the items' records, keeping each item's own order.
    out: list[dict[str, Any]] = []
    while any(lanes):
        lane = _choose(draw, [lane for lane in lanes if lane])
        out.append(lane.pop(0))
    return out


def traces(
    profile: Profile = ANTHROPIC,
    *,
    max_items: int = 3,
    max_steps: int = 10,
    complete: bool = False,
    heartbeats: bool = True,
    min_gap_seconds: float = 0.0,
) -> SearchStrategy[list[dict[str, Any]]]:
    """Traces the core produces: the JSON records (work snapshots, and heartbeat answers
    with their ``work_id``) of up to ``max_items`` items, interleaved.

    Each item starts with its snapshot at creation.  ``complete=False`` keeps a random
    subset of the later snapshots (several operations may separate two records);
    ``complete=True`` keeps a record for every operation.  Heartbeat answers are always kept
    when ``heartbeats`` is true.
    """
    gap = int(min_gap_seconds * 1_000_000)
    return _traces(profile, max_items, max_steps, complete, heartbeats, gap)


# ------------------------------------------------------------------------------ bad input
BAD_WIRE_KINDS = (
    "not-json",
    "not-object",
    "missing-key",
    "unknown-key",
    "wrong-type",
    "unknown-state",
    "naive-timestamp",
    "malformed-timestamp",
    "inconsistent",
)
"""The kinds of malformed work object :func:`bad_work_json` draws."""


@attrs.frozen(kw_only=True)
class BadInput:
    """A malformed work object and the key the parser must blame."""

    value: Any
    """The JSON value: usually an object (a dict); text for ``not-json``."""
    key: str
    """The key :class:`~workstate.InvalidInputError` must name (``work`` when the whole value
    is wrong)."""
    kind: str
    """Which mistake it is, one of :data:`BAD_WIRE_KINDS`."""


_WRONG_TYPES: dict[str, tuple[Any, str]] = {
    "id": (42, "id"),
    "type": (1, "type"),
    "environment_id": (["env_1"], "environment_id"),
    "data": ("sesn_1", "data"),
    "data.id": ({"type": "session", "id": 7}, "data.id"),
    "state": (3, "state"),
    "created_at": (1751357700, "created_at"),
    "acknowledged_at": (1.5, "acknowledged_at"),
    "started_at": (True, "started_at"),
    "latest_heartbeat_at": ({}, "latest_heartbeat_at"),
    "stop_requested_at": ([], "stop_requested_at"),
    "stopped_at": (0, "stopped_at"),
    "metadata": ([], "metadata"),
    "metadata.k": ({"k": 1}, "metadata.k"),
    "secret": (5, "secret"),
}

_BAD_STATES = ("running", "QUEUED", "done", "paused", " active", "stoped")
_OTHER_STATES = st.text(_ALNUM, min_size=1, max_size=10).filter(
    lambda s: s not in {state.value for state in State}
)
_EXTRA_VALUES = st.none() | st.integers() | st.text(max_size=5)
_BAD_TIMES = ("yesterday", "2026-13-01T00:00:00Z", "2026-07-01", "2026-07-01T25:00:00Z", "")


def _inconsistent(draw: DrawFn, profile: Profile) -> BadInput:
    """Spoil one rule per state, choosing the spoiled key so it is the first one blamed."""
    state = _choose(draw, list(State))
    obj = _draw_work(draw, profile, frozenset({state}), 4).to_json()
    if state is State.QUEUED:
        obj["acknowledged_at"], key = obj["created_at"], "acknowledged_at"
    elif state is State.STARTING:
        obj["latest_heartbeat_at"], key = obj["acknowledged_at"], "latest_heartbeat_at"
    elif state is State.ACTIVE:
        if draw(_BOOLS):
            obj["started_at"], key = None, "started_at"
        else:  # started before it was acknowledged
            ack = parse_time(obj["acknowledged_at"])
            step = _dt.timedelta(seconds=1)
            obj["started_at"] = format_time(ack - step, profile.lifecycle_precision)
            key = "started_at"
    elif state is State.STOPPING:
        obj["stop_requested_at"], key = None, "stop_requested_at"
    elif state is State.STOPPED:
        obj["stopped_at"], key = None, "stopped_at"
    else:  # pragma: no cover
        assert_never(state)
    return BadInput(value=obj, key=key, kind="inconsistent")


@st.composite
def _bad_work_json(draw: DrawFn, profile: Profile, kinds: tuple[str, ...]) -> BadInput:
    kind = _choose(draw, kinds)
    if kind == "inconsistent":
        return _inconsistent(draw, profile)
    obj = _draw_work(draw, profile, None, 6).to_json()
    if kind == "not-json":
        text = json.dumps(obj)
        return BadInput(value=text[: draw(st.integers(0, len(text) - 1))], key="work", kind=kind)
    if kind == "not-object":
        value = _choose(draw, [[obj], 42, None, 1.5, True])
        return BadInput(value=value, key="work", kind=kind)
    if kind == "missing-key":
        key = _choose(draw, WORK_KEYS)
        del obj[key]
        return BadInput(value=obj, key=key, kind=kind)
    if kind == "unknown-key":
        key = "x_" + draw(_ident(""))  # no API key starts with x_
        obj[key] = draw(_EXTRA_VALUES)
        return BadInput(value=obj, key=key, kind=kind)
    if kind == "wrong-type":
        where = _choose(draw, sorted(_WRONG_TYPES))
        value, key = _WRONG_TYPES[where]
        obj[where.split(".")[0]] = value
        return BadInput(value=obj, key=key, kind=kind)
    if kind == "unknown-state":
        obj["state"] = _choose(draw, _BAD_STATES) if draw(_BOOLS) else draw(_OTHER_STATES)
        return BadInput(value=obj, key="state", kind=kind)
    if kind == "naive-timestamp":
        key = _choose(draw, [k for k in _TIME_KEYS if obj[k] is not None])
        obj[key] = obj[key].removesuffix("Z")
        return BadInput(value=obj, key=key, kind=kind)
    assert kind == "malformed-timestamp", kind
    key = _choose(draw, _TIME_KEYS)
    obj[key] = _choose(draw, _BAD_TIMES)
    return BadInput(value=obj, key=key, kind=kind)


def bad_work_json(
    profile: Profile = ANTHROPIC, *, kinds: Collection[str] | None = None
) -> SearchStrategy[BadInput]:
    """Work objects spoiled in one way each (see :data:`BAD_WIRE_KINDS`), with the key that
    :func:`~workstate.work_from_json` must blame in its
    :class:`~workstate.InvalidInputError`."""
    chosen = tuple(BAD_WIRE_KINDS if kinds is None else kinds)
    unknown = sorted(set(chosen) - set(BAD_WIRE_KINDS))
    if unknown or not chosen:
        raise ValueError(f"kinds must be among {BAD_WIRE_KINDS}, got {sorted(chosen)}")
    return _bad_work_json(profile, chosen)
