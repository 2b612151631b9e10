"""Work operations: every rule of spec §3-§5 and §8, and every rejection with its exact error."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from helpers import ACK_LEASE, T0, at, in_state, new

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    IllegalMoveError,
    InvalidInputError,
    Operation,
    PreconditionFailedError,
    State,
    Work,
    WorkData,
    WorkstateError,
    format_time,
    invariant_violations,
)


def rejects(
    work: Work, call: Callable[[Work], object], kind: type[WorkstateError], **fields: Any
) -> WorkstateError:
    """``call(work)`` raises ``kind`` with ``fields``, and ``work`` is exactly as it was."""
    snapshot = attrs.asdict(work, recurse=False)
    wire = work.to_json(include_secret=True)
    with pytest.raises(kind) as info:
        call(work)
    err = info.value
    for name, value in fields.items():
        assert getattr(err, name) == value, (name, getattr(err, name), value)
    assert attrs.asdict(work, recurse=False) == snapshot
    assert work.to_json(include_secret=True) == wire
    return err


# ------------------------------------------------------------------ the happy path
def test_full_life_sets_every_timestamp_once() -> None:
    w = new()
    assert (w.state, w.version, w.attempt) == (State.QUEUED, 1, 0)
    w = w.ack(at(1))
    # anthropic: an ack starts no lease (docs/divergences.md); the first heartbeat does.
    assert (w.state, w.acknowledged_at, w.ttl_seconds) == (State.STARTING, at(1), None)
    assert w.lease_expires_at is None
    w, beat = w.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT)
    assert (w.state, w.started_at, w.latest_heartbeat_at) == (State.ACTIVE, at(2), at(2))
    assert beat.to_json() == {
        "type": "work_heartbeat",
        "last_heartbeat": "2026-07-01T08:15:02.000000Z",
        "lease_extended": True,
        "state": "active",
        "ttl_seconds": 120,
    }
    w, beat2 = w.heartbeat(at(3.5), expected_last_heartbeat=beat.last_heartbeat)
    assert (w.started_at, w.latest_heartbeat_at) == (at(2), at(3.5))
    assert beat2.last_heartbeat == "2026-07-01T08:15:03.500000Z"
    w = w.stop(at(4))
    assert (w.state, w.stop_requested_at, w.stopped_at) == (State.STOPPING, at(4), None)
    w = w.stop(at(5))
    assert (w.state, w.stopped_at, w.lease_expires_at) == (State.STOPPED, at(5), None)
    assert w.version == 6
    assert invariant_violations(w) == []


def test_repeated_ack_is_a_safe_retry() -> None:
    w = new().ack(at(1))
    assert w.ack(at(2)) is w
    active = in_state(State.ACTIVE)
    assert active.ack(at(5)) is active


def test_heartbeat_on_stopping_changes_nothing() -> None:
    w = in_state(State.STOPPING)
    same, beat = w.heartbeat(at(5), expected_last_heartbeat="2000-01-01T00:00:00Z")
    assert same is w
    assert (beat.state, beat.lease_extended, beat.ttl_seconds) == (State.STOPPING, False, 120)
    assert beat.last_heartbeat == w.last_heartbeat


def test_heartbeat_on_stopping_without_any_heartbeat_answers_an_empty_token() -> None:
    w = new().ack(at(1)).stop(at(2))
    _, beat = w.heartbeat(at(3), expected_last_heartbeat=NO_HEARTBEAT)
    assert beat.last_heartbeat == ""


def test_unconditional_heartbeat() -> None:
    w, beat = in_state(State.ACTIVE).heartbeat(at(5))
    assert beat.lease_extended
    assert w.latest_heartbeat_at == at(5)


@pytest.mark.parametrize(("desired", "effective"), [(None, 120), (5, 10), (30, 30), (601, 600)])
def test_ttl_is_clamped_and_moves_the_deadline(desired: int | None, effective: int) -> None:
    w, beat = new().ack(at(1)).heartbeat(at(2), desired_ttl_seconds=desired)
    assert beat.ttl_seconds == effective == w.ttl_seconds
    assert w.lease_expires_at == at(2 + effective)


@pytest.mark.parametrize("force", [False, True])
def test_stop_on_queued_goes_straight_to_stopped(force: bool) -> None:
    w = new().stop(at(1), force=force)
    assert (w.state, w.stopped_at, w.stop_requested_at) == (State.STOPPED, at(1), None)


@pytest.mark.parametrize("state", [State.STARTING, State.ACTIVE, State.STOPPING])
def test_forced_stop_sets_only_stopped_at(state: State) -> None:
    before = in_state(state)
    w = before.stop(at(9), force=True)
    assert w.stopped_at == at(9)
    assert w.stop_requested_at == before.stop_requested_at


# ------------------------------------------------------------------ expiry (spec §5)
@pytest.mark.parametrize("state", [State.STARTING, State.ACTIVE])
def test_expiry_returns_to_the_queue_and_forgets_the_attempt(state: State) -> None:
    w = in_state(state, ACK_LEASE)
    assert not w.is_lease_due(w.lease_expires_at)  # type: ignore[arg-type]
    due = w.lease_expires_at + dt.timedelta(microseconds=1)  # type: ignore[operator]
    assert w.is_lease_due(due)
    q = w.expire(due)
    assert q.state is State.QUEUED
    assert (q.acknowledged_at, q.started_at, q.latest_heartbeat_at) == (None, None, None)
    assert (q.last_heartbeat, q.lease_expires_at, q.ttl_seconds) == (None, None, None)
    assert q.attempt == 1
    assert invariant_violations(q) == []
    # the next worker starts clean: a second attempt
    again = q.ack(due)
    assert (again.acknowledged_at, again.attempt) == (due, 2)


def test_old_workers_heartbeat_after_expiry_meets_412_queued() -> None:
    w = in_state(State.ACTIVE)
    token = w.last_heartbeat
    q = w.expire(at(500))
    err = rejects(
        q,
        lambda x: x.heartbeat(at(501), expected_last_heartbeat=token),
        PreconditionFailedError,
        status=412,
        error_type="invalid_request_error",
        state=State.QUEUED,
    )
    assert err.to_json()["error"]["details"] == {
        "error_code": "heartbeat_precondition_failed",
        "current_state": {
            "state": "queued",
            "last_heartbeat": None,
            "lease_extended": False,
            "ttl_seconds": 120,
        },
    }


def test_expiry_from_stopping_stops() -> None:
    w = in_state(State.STOPPING).expire(at(500))
    assert (w.state, w.stopped_at) == (State.STOPPED, at(500))


@pytest.mark.parametrize("offset", [-1.0, 0.0])
def test_expire_before_or_at_the_deadline_is_409(offset: float) -> None:
    w = in_state(State.ACTIVE)
    deadline = w.lease_expires_at
    assert deadline is not None
    rejects(
        w,
        lambda x: x.expire(deadline + dt.timedelta(seconds=offset)),
        IllegalMoveError,
        status=409,
        operation=Operation.EXPIRE,
    )


def test_expire_on_queued_is_409() -> None:
    rejects(new(), lambda x: x.expire(at(1000)), IllegalMoveError, status=409)


# ------------------------------------------------------------------ 412 (spec §4)
@pytest.mark.parametrize(
    ("state", "token"),
    [
        (State.ACTIVE, NO_HEARTBEAT),  # a heartbeat exists
        (State.STARTING, "2026-07-01T08:15:02.000000Z"),  # none exists
        (State.ACTIVE, "2026-07-01T08:15:01.000000Z"),  # stale
        (State.ACTIVE, "2026-07-01T08:15:02Z"),  # the same instant, other bytes
        (State.ACTIVE, "2026-07-01T10:15:02.000000+02:00"),
    ],
)
@pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=lambda p: p.name)
def test_token_mismatch_is_412_with_current_state(state: State, token: str, profile: Any) -> None:
    w = in_state(state, profile)
    err = rejects(
        w,
        lambda x: x.heartbeat(at(5), expected_last_heartbeat=token),
        PreconditionFailedError,
        status=412,
        error_type=profile.precondition_error_type,
        error_code="heartbeat_precondition_failed",
        operation=Operation.HEARTBEAT,
    )
    assert isinstance(err, PreconditionFailedError)
    assert err.current_state == w.lease_state()
    assert err.current_state.last_heartbeat == w.last_heartbeat
    envelope = err.to_json(request_id="req_1")
    assert envelope["request_id"] == "req_1"
    assert envelope["error"]["error_code"] == "heartbeat_precondition_failed"


@pytest.mark.parametrize("token", [None, NO_HEARTBEAT])
def test_heartbeat_on_queued_without_timestamp_token_is_409(token: str | None) -> None:
    rejects(
        new(),
        lambda x: x.heartbeat(at(1), expected_last_heartbeat=token),
        IllegalMoveError,
        status=409,
        error_type="conflict_error",
    )


def test_heartbeat_on_queued_with_token_is_409_in_qoder() -> None:
    rejects(
        new(QODER),
        lambda x: x.heartbeat(at(1), expected_last_heartbeat="2026-07-01T08:15:02.000000Z"),
        IllegalMoveError,
        status=409,
        error_type="invalid_request_error",
    )


# ------------------------------------------------------------------ profiles (spec §7)
def test_heartbeat_on_stopped_by_profile() -> None:
    w = in_state(State.STOPPED)
    same, beat = w.heartbeat(at(9), expected_last_heartbeat="2000-01-01T00:00:00Z")
    assert same is w
    assert (beat.state, beat.lease_extended) == (State.STOPPED, False)
    rejects(
        in_state(State.STOPPED, QODER),
        lambda x: x.heartbeat(at(9)),
        IllegalMoveError,
        status=409,
        error_type="invalid_request_error",
    )


@pytest.mark.parametrize("force", [False, True])
def test_stop_on_stopped_by_profile(force: bool) -> None:
    rejects(
        in_state(State.STOPPED),
        lambda x: x.stop(at(9), force=force),
        IllegalMoveError,
        status=409,
        error_type="conflict_error",
        state=State.STOPPED,
    )
    w = in_state(State.STOPPED, QODER)
    assert w.stop(at(9), force=force) is w


def test_qoder_binds_the_ack_to_the_delivered_worker() -> None:
    w = new(QODER).deliver(at(1), worker_id="w1")
    err = rejects(
        w,
        lambda x: x.ack(at(2), worker_id="w2"),
        IllegalMoveError,
        status=409,
        error_type="invalid_request_error",
        operation=Operation.ACK,
    )
    assert "w1" in err.message
    acked = w.ack(at(2), worker_id="w1")
    assert acked.state is State.STARTING
    assert acked.ack(at(3), worker_id="w1") is acked  # the holder's retry is safe
    rejects(acked, lambda x: x.ack(at(3), worker_id="w2"), IllegalMoveError, status=409)
    assert new().deliver(at(1), worker_id="w1").ack(at(2), worker_id="w2").state is State.STARTING
    # an ack that names no worker is not bound (the SDK sends its worker id on polls only)
    assert w.ack(at(2)).state is State.STARTING


def test_an_echoed_empty_token_claims_no_heartbeat() -> None:
    w = new().ack(at(1))
    stopping = w.stop(at(2))
    same, beat = stopping.heartbeat(at(3), expected_last_heartbeat="")
    assert same is stopping
    assert beat.last_heartbeat == ""
    active, _ = w.heartbeat(at(2), expected_last_heartbeat="")
    assert active.state is State.ACTIVE
    rejects(
        active,
        lambda x: x.heartbeat(at(3), expected_last_heartbeat=""),
        PreconditionFailedError,
        status=412,
    )


def test_qoder_records_lifecycle_in_whole_seconds_and_heartbeats_in_microseconds() -> None:
    t = at(1.75)
    w = Work.create(id="work_q", environment_id="env_q", session_id="s", now=t, profile=QODER)
    w = w.ack(at(2.5))
    w, beat = w.heartbeat(at(3.25), expected_last_heartbeat=NO_HEARTBEAT)
    wire = w.to_json()
    assert wire["created_at"] == "2026-07-01T08:15:01Z"
    assert wire["acknowledged_at"] == "2026-07-01T08:15:02Z"
    assert wire["started_at"] == "2026-07-01T08:15:03Z"
    assert wire["latest_heartbeat_at"] == beat.last_heartbeat == "2026-07-01T08:15:03.250000Z"
    assert invariant_violations(w.stop(at(3.5))) == []


# ------------------------------------------------------------------ 400s (spec §8)
ALL_CALLS: dict[str, Callable[[Work, Any], object]] = {
    "deliver": lambda w, t: w.deliver(t),
    "ack": lambda w, t: w.ack(t),
    "heartbeat": lambda w, t: w.heartbeat(t),
    "stop": lambda w, t: w.stop(t),
    "expire": lambda w, t: w.expire(t),
    "update_metadata": lambda w, t: w.update_metadata(t, {"a": "b"}),
}


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_naive_time_is_400(name: str) -> None:
    rejects(
        in_state(State.ACTIVE),
        lambda w: ALL_CALLS[name](w, dt.datetime(2026, 7, 2)),
        InvalidInputError,
        status=400,
        key="now",
        error_type="invalid_request_error",
    )


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_time_that_is_not_a_datetime_is_400(name: str) -> None:
    rejects(
        in_state(State.ACTIVE),
        lambda w: ALL_CALLS[name](w, "2026-07-02T00:00:00Z"),
        InvalidInputError,
        status=400,
        key="now",
    )


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_time_before_the_latest_recorded_time_is_400(name: str) -> None:
    err = rejects(
        in_state(State.ACTIVE),
        lambda w: ALL_CALLS[name](w, at(1)),
        InvalidInputError,
        status=400,
        key="now",
        work_id="work_1",
    )
    assert "earlier than its latest recorded time" in err.message


def test_other_timezones_are_normalised_to_utc() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    w = new().ack(dt.datetime(2026, 7, 1, 10, 15, 1, tzinfo=plus2))
    assert w.acknowledged_at == at(1)
    assert w.acknowledged_at.tzinfo is dt.UTC


@pytest.mark.parametrize("ttl", [0, -5, True, "30", 1.5])
def test_bad_desired_ttl_is_400(ttl: object) -> None:
    rejects(
        in_state(State.ACTIVE),
        lambda w: w.heartbeat(at(5), desired_ttl_seconds=ttl),  # type: ignore[arg-type]
        InvalidInputError,
        status=400,
        key="desired_ttl_seconds",
        got=ttl,
    )


@pytest.mark.parametrize("token", ["junk", "2026-07-01T08:15:06", "2026-13-01T08:15:06Z", 5])
def test_bad_token_is_400(token: object) -> None:
    err = rejects(
        in_state(State.ACTIVE),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=token),  # type: ignore[arg-type]
        InvalidInputError,
        status=400,
        key="expected_last_heartbeat",
    )
    assert NO_HEARTBEAT in err.expected


def test_force_must_be_a_bool() -> None:
    rejects(
        in_state(State.ACTIVE),
        lambda w: w.stop(at(5), force="yes"),  # type: ignore[arg-type]
        InvalidInputError,
        status=400,
        key="force",
    )


# ------------------------------------------------------------------ metadata
def test_metadata_merge_patch() -> None:
    w = new(metadata={"a": "1", "b": "2"})
    w2 = w.update_metadata(at(1), {"a": None, "c": "3", "zz": None})
    assert dict(w2.metadata) == {"b": "2", "c": "3"}
    assert w2.version == w.version + 1
    assert w2.state is w.state
    assert w2.update_metadata(at(2), {"b": "2"}) is w2
    with pytest.raises(TypeError):
        w2.metadata["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        (["a"], "metadata"),
        ({1: "a"}, "metadata"),
        ({"": "a"}, "metadata"),
        ({"k" * 65: "a"}, "metadata." + "k" * 65),
        ({"a": 1}, "metadata.a"),
        ({"a": "v" * 513}, "metadata.a"),
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
    ],
)
def test_bad_metadata_patch_is_400(patch: Any, key: str) -> None:
    rejects(
        new(),
        lambda w: w.update_metadata(at(1), patch),
        InvalidInputError,
        status=400,
        key=key,
        operation=Operation.UPDATE_METADATA,
    )


def test_metadata_limits_are_inclusive() -> None:
    w = new().update_metadata(at(1), {f"{i:064d}": "v" * 512 for i in range(16)})
    assert len(w.metadata) == 16


# ------------------------------------------------------------------ create
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"id": "job_1"}, "id"),
        ({"id": "work_"}, "id"),
        ({"environment_id": "environment"}, "environment_id"),
        ({"session_id": None}, "data"),
        ({"data": WorkData(id="sesn_2")}, "data"),
        ({"session_id": None, "data": WorkData(type="batch", id="x")}, "data.type"),
        ({"session_id": None, "data": WorkData(id="")}, "data.id"),
        ({"session_id": ""}, "data.id"),
        ({"secret": 42}, "secret"),
        ({"metadata": {"a": 1}}, "metadata.a"),
        ({"now": dt.datetime(2026, 7, 1)}, "now"),
    ],
)
def test_bad_create_is_400(kwargs: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {
        "id": "work_1",
        "environment_id": "env_1",
        "session_id": "sesn_1",
        "now": T0,
    }
    args.update(kwargs)
    with pytest.raises(InvalidInputError) as info:
        Work.create(**args)
    assert (info.value.status, info.value.key) == (400, key)


def test_create_with_data() -> None:
    w = Work.create(
        id="work_h",
        environment_id="env_1",
        data=WorkData(type="healthcheck", id="h1"),
        now=T0,
        secret="s3cr3t",
    )
    assert w.to_json()["data"] == {"type": "healthcheck", "id": "h1"}
    assert w.to_json()["secret"] is None
    assert w.to_json(include_secret=True)["secret"] == "s3cr3t"


def test_questions() -> None:
    w = in_state(State.ACTIVE)
    assert w.is_live
    assert w.can(Operation.STOP)
    assert not w.can(Operation.DELIVER)
    assert not in_state(State.STOPPED).is_live
    assert repr(w) == "<Work work_1 active v3>"
    assert (w.id, w.environment_id, w.data.id, w.created_at) == ("work_1", "env_1", "sesn_1", T0)
    assert w.profile is ANTHROPIC
    assert w.secret is None
    assert format_time(w.touched_at) == "2026-07-01T08:15:02.000000Z"


def test_records_are_hashable_and_compare_by_value() -> None:
    a, b = in_state(State.ACTIVE), in_state(State.ACTIVE)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != a.update_metadata(at(5), {"k": "v"})


def test_create_on_a_subclass_builds_the_subclass() -> None:
    class MyWork(Work):
        pass

    w = MyWork.create(id="work_s", environment_id="env_s", session_id="s", now=T0)
    assert type(w) is MyWork
    assert w.state is State.QUEUED


def test_a_lease_that_would_end_after_year_9999_is_400() -> None:
    late = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
    w = Work.create(
        id="work_l", environment_id="env_l", session_id="s", now=late, profile=ACK_LEASE
    )
    rejects(w, lambda x: x.ack(late), InvalidInputError, status=400, key="now")
    acked = Work.create(id="work_l", environment_id="env_l", session_id="s", now=late).ack(late)
    rejects(
        acked,
        lambda x: x.heartbeat(late, expected_last_heartbeat=NO_HEARTBEAT),
        InvalidInputError,
        status=400,
        key="now",
    )


def test_an_empty_token_on_a_queued_item_is_409_like_no_heartbeat() -> None:
    rejects(
        new(),
        lambda x: x.heartbeat(at(1), expected_last_heartbeat=""),
        IllegalMoveError,
        status=409,
    )


def test_an_unhashable_data_type_is_400() -> None:
    with pytest.raises(InvalidInputError) as info:
        Work.create(id="work_u", environment_id="env_u", data=WorkData(type=[], id="x"), now=T0)  # type: ignore[arg-type]
    assert info.value.key == "data.type"


def test_heartbeats_at_one_instant_get_distinct_tokens_and_a_stale_one_is_refused() -> None:
    # A clock standing still: every heartbeat at the same time.
    w = in_state(State.ACTIVE)  # its heartbeat was at 2 s
    now = w.latest_heartbeat_at
    assert now is not None
    w1, beat1 = w.heartbeat(now, expected_last_heartbeat=w.last_heartbeat)
    # The item's time ran a microsecond ahead; a clock still standing there beats again.
    w2, beat2 = w1.heartbeat(w1.touched_at, expected_last_heartbeat=beat1.last_heartbeat)
    us = dt.timedelta(microseconds=1)
    assert [beat1.last_heartbeat, beat2.last_heartbeat] == [
        "2026-07-01T08:15:02.000001Z",
        "2026-07-01T08:15:02.000002Z",
    ]
    assert w2.latest_heartbeat_at == w2.touched_at == now + 2 * us
    assert w2.lease_expires_at == now + 2 * us + dt.timedelta(seconds=120)
    assert invariant_violations(w2) == []
    with pytest.raises(PreconditionFailedError) as info:
        w2.heartbeat(now + 2 * us, expected_last_heartbeat=beat1.last_heartbeat)
    assert info.value.status == 412
    assert info.value.current_state.last_heartbeat == beat2.last_heartbeat


def test_a_heartbeat_after_the_clock_moved_takes_the_clocks_time() -> None:
    w = in_state(State.ACTIVE)
    w1, beat = w.heartbeat(at(5), expected_last_heartbeat=w.last_heartbeat)
    assert beat.last_heartbeat == "2026-07-01T08:15:05.000000Z"
    assert w1.touched_at == at(5)
