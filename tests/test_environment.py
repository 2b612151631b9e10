"""Environment: delivery, redelivery, leases and expiry, stats, listing, and every rejection.

Each scenario of spec §1-§5, §7 and §8 that involves more than one item (or a poll) has an
example here; ``test_environment_stateful.py`` checks random interleavings against a simple
reference.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from helpers import ACK_LEASE, T0, at

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    IllegalMoveError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    Profile,
    State,
    Work,
    WorkData,
    WorkstateError,
    invariant_violations,
)
from workstate._environment import Environment, QueueStats, WorkPage

US = dt.timedelta(microseconds=1)
ID = re.compile(r"(work|sesn)_[0-9A-Za-z]{24}")


def env_with(n: int = 0, profile: Profile = ANTHROPIC, *, now: dt.datetime = T0) -> Environment:
    """An environment holding ``n`` queued items ``work_0``... created at ``now``."""
    env = Environment("env_1", profile=profile)
    for i in range(n):
        env.create(now, session_id=f"sesn_{i}", work_id=f"work_{i}", secret=f"s{i}")
    return env


def snapshot(env: Environment, now: dt.datetime) -> tuple[object, ...]:
    """Everything a caller can observe at ``now``: every record, the stats, the size, the time."""
    records: list[Work] = []
    page = None
    while True:
        got = env.list(now, limit=1000, page=page)
        records.extend(got.data)
        page = got.next_page
        if page is None:
            break
    return tuple(records), env.stats(now), len(env), env.latest_now


def rejects(
    env: Environment,
    now: dt.datetime,
    call: Callable[[Environment], object],
    kind: type[WorkstateError],
    **fields: Any,
) -> WorkstateError:
    """``call(env)`` raises ``kind`` with ``fields``, and nothing observable changes."""
    before = snapshot(env, now)
    with pytest.raises(kind) as info:
        call(env)
    err = info.value
    for name, value in fields.items():
        assert getattr(err, name) == value, (name, getattr(err, name), value)
    assert snapshot(env, now) == before
    return err


def stats(env: Environment, now: dt.datetime) -> tuple[int, int, dt.datetime | None, int | None]:
    s = env.stats(now)
    return s.depth, s.pending, s.oldest_queued_at, s.workers_polling


# ------------------------------------------------------------------ construction and ids
def test_generated_ids_look_like_the_apis_and_are_deterministic() -> None:
    a, b = Environment("env_1"), Environment("env_1")
    ids_a = [a.create(T0) for _ in range(3)]
    ids_b = [b.create(T0) for _ in range(3)]
    assert [(w.id, w.data.id) for w in ids_a] == [(w.id, w.data.id) for w in ids_b]
    for w in ids_a:
        assert ID.fullmatch(w.id)
        assert w.id.startswith("work_")
        assert ID.fullmatch(w.data.id)
        assert w.data.id.startswith("sesn_")
        assert w.data.type == "session"
    assert len({w.id for w in ids_a}) == 3
    other = Environment("env_1", seed=7).create(T0)
    assert other.id != ids_a[0].id
    assert Environment("env_2").create(T0).id != ids_a[0].id


def test_given_ids_and_data_are_used() -> None:
    env = Environment("env_1")
    w = env.create(T0, work_id="work_given", session_id="sesn_given", metadata={"k": "v"})
    assert (w.id, w.data.id, dict(w.metadata), w.environment_id) == (
        "work_given",
        "sesn_given",
        {"k": "v"},
        "env_1",
    )
    h = env.create(T0, data=WorkData(type="healthcheck", id="hc_1"))
    assert h.data == WorkData(type="healthcheck", id="hc_1")
    assert ID.fullmatch(h.id)
    assert (h.state, h.created_at, h.version) == (State.QUEUED, T0, 1)


def test_a_generated_id_never_collides_with_a_given_one() -> None:
    upcoming = Environment("env_1").create(T0).id
    env = Environment("env_1")
    env.create(T0, work_id=upcoming, session_id="sesn_1")
    fresh = env.create(T0)
    assert fresh.id != upcoming
    assert len(env) == 2


def test_id_factory() -> None:
    counter = iter(range(100))
    env = Environment("env_1", id_factory=lambda prefix: f"{prefix}{next(counter)}")
    w = env.create(T0)
    assert (w.id, w.data.id) == ("work_0", "sesn_1")
    env2 = Environment("env_1", id_factory=lambda prefix: f"{prefix}same")
    env2.create(T0, session_id="sesn_1")
    rejects(
        env2,
        T0,
        lambda e: e.create(T0, session_id="sesn_1"),
        IllegalMoveError,
        status=409,
        error_type="conflict_error",
    )
    bad = Environment("env_1", id_factory=lambda prefix: "nope")
    with pytest.raises(ValueError, match="id_factory"):
        bad.create(T0)
    assert len(bad) == 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"environment_id": "environment_1"}, "environment_id"),
        ({"environment_id": "env_"}, "environment_id"),
        ({"environment_id": 5}, "environment_id"),
        ({"environment_id": "env_1", "profile": "anthropic"}, "profile"),
        ({"environment_id": "env_1", "seed": 1.5}, "seed"),
    ],
)
def test_construction_rejects_bad_arguments(kwargs: dict[str, Any], key: str) -> None:
    # A copy: the parameter's dict is shared between runs (pytest --count, a re-run), and
    # popping from it would leave the second run without its environment id.
    rest = dict(kwargs)
    env_id = rest.pop("environment_id")
    with pytest.raises(InvalidInputError) as info:
        Environment(env_id, **rest)
    assert "environment_id" in kwargs
    assert (info.value.status, info.value.error_type, info.value.key) == (
        400,
        "invalid_request_error",
        key,
    )


def test_container_protocol_and_repr() -> None:
    env = env_with(2)
    assert len(env) == 2
    assert "work_0" in env
    assert "work_9" not in env
    assert 5 not in env
    assert ["x"] not in env
    assert repr(env) == "<Environment env_1 profile=anthropic items=2 depth=2 pending=0>"
    assert env.latest_now == T0
    assert Environment("env_1").latest_now is None


# ------------------------------------------------------------------ create: rejections
@pytest.mark.parametrize(
    ("call", "key"),
    [
        (lambda e: e.create(at(1), work_id="job_1", session_id="sesn_1"), "work_id"),
        (lambda e: e.create(at(1), work_id="work_", session_id="sesn_1"), "work_id"),
        (lambda e: e.create(at(1), work_id=7, session_id="sesn_1"), "work_id"),
        (lambda e: e.create(at(1), session_id="sesn_1", data=WorkData(id="x")), "data"),
        (lambda e: e.create(at(1), data=WorkData(type="bogus", id="x")), "data.type"),
        (lambda e: e.create(at(1), session_id=""), "data.id"),
        (lambda e: e.create(at(1), metadata={"k": 5}), "metadata.k"),
        (lambda e: e.create(at(1), metadata={f"k{i}": "v" for i in range(17)}), "metadata"),
        (lambda e: e.create(at(1), secret=5), "secret"),
        (lambda e: e.create(T0 - US), "now"),
        (lambda e: e.create(dt.datetime(2026, 7, 1, 9)), "now"),
        (lambda e: e.create("2026-07-01T09:00:00Z"), "now"),
    ],
)
def test_create_rejects_bad_input_and_changes_nothing(
    call: Callable[[Environment], object], key: str
) -> None:
    env = env_with(1)
    rejects(
        env,
        at(1),
        call,
        InvalidInputError,
        status=400,
        error_type="invalid_request_error",
        key=key,
    )
    # A rejected create consumes no generated id.
    assert env.create(at(1)).id == Environment("env_1").create(T0).id


@pytest.mark.parametrize(
    ("profile", "error_type"), [(ANTHROPIC, "conflict_error"), (QODER, "invalid_request_error")]
)
def test_duplicate_work_id_is_409(profile: Profile, error_type: str) -> None:
    env = env_with(1, profile)
    err = rejects(
        env,
        T0,
        lambda e: e.create(at(1), work_id="work_0", session_id="sesn_x"),
        IllegalMoveError,
        status=409,
        error_type=error_type,
        work_id="work_0",
    )
    assert "already exists" in err.message
    assert env.latest_now == T0  # refused before time was applied


# ------------------------------------------------------------------ poll
def test_empty_poll_answers_none_and_counts_the_worker() -> None:
    env = Environment("env_1")
    assert stats(env, T0) == (0, 0, None, None)
    assert env.poll(T0) is None
    assert stats(env, T0) == (0, 0, None, None)  # an anonymous poll names nobody
    assert env.poll(T0, worker_id="w1", block_ms=999) is None
    assert stats(env, T0) == (0, 0, None, 1)


def test_poll_hands_out_the_oldest_item_and_marks_the_delivery() -> None:
    env = env_with(3)
    w = env.poll(at(1), worker_id="w1")
    assert w is not None
    assert (w.id, w.state, w.delivered_at, w.delivered_to, w.version) == (
        "work_0",
        State.QUEUED,
        at(1),
        "w1",
        2,
    )
    assert w.to_json(include_secret=True)["secret"] == "s0"
    assert env.get("work_0", at(1)) is w
    assert env.get("work_0", at(1)).to_json()["secret"] is None
    assert stats(env, at(1)) == (2, 1, T0, 1)


def test_a_second_workers_poll_inside_the_window_gets_the_next_item_then_nothing() -> None:
    env = env_with(2)
    first = env.poll(at(1), worker_id="w1")
    second = env.poll(at(2), worker_id="w2")
    assert first is not None
    assert second is not None
    assert (first.id, second.id) == ("work_0", "work_1")
    assert env.poll(at(3), worker_id="w2") is None
    assert env.poll(at(5.999999), worker_id="w3") is None
    assert stats(env, at(5.999999)) == (0, 2, T0, 3)


def test_redelivery_at_exactly_the_window() -> None:
    env = env_with(1)
    env.poll(at(1), worker_id="w1")
    assert env.poll(at(6) - US, worker_id="w2") is None
    assert stats(env, at(6) - US)[:2] == (0, 1)
    assert stats(env, at(6))[:2] == (1, 0)  # inclusive: deliverable again at t + window
    again = env.poll(at(6), worker_id="w2")
    assert again is not None
    assert (again.id, again.delivered_at, again.delivered_to) == ("work_0", at(6), "w2")
    assert stats(env, at(6))[:2] == (0, 1)


def test_the_window_is_the_reclaiming_polls_not_the_delivering_polls() -> None:
    env = env_with(1)
    env.poll(T0, reclaim_older_than_ms=60_000)  # the delivering poll's window does not matter
    assert env.poll(at(2) - US, reclaim_older_than_ms=2000) is None
    again = env.poll(at(2), reclaim_older_than_ms=2000)  # 2 s old: due for a 2 s window
    assert again is not None
    assert (again.id, again.delivered_at) == ("work_0", at(2))


def test_a_reclaiming_poll_with_a_longer_window_leaves_younger_deliveries_alone() -> None:
    env = env_with(3)
    for t in (0, 1, 2):
        env.poll(at(t), reclaim_older_than_ms=60_000)  # work_0, work_1, work_2 at 0, 1, 2 s
    # A short window first (it moves every delivery at or before 2.5 s into the due heap)...
    got = env.poll(at(2.5), reclaim_older_than_ms=1)
    assert got is not None
    assert got.id == "work_0"  # the oldest by creation among the due ones
    # ...then a long one: only work_1 (delivered at 1 s) is 1.5 s old; work_2 is too young.
    got = env.poll(at(2.5), reclaim_older_than_ms=1500)
    assert got is not None
    assert got.id == "work_1"
    assert env.poll(at(2.5), reclaim_older_than_ms=1500) is None
    # work_2, set aside by the long poll, is still due for a short one.
    got = env.poll(at(2.5), reclaim_older_than_ms=500)
    assert got is not None
    assert got.id == "work_2"


def test_a_reclaimed_item_competes_with_fresh_ones_by_creation() -> None:
    env = env_with(1)
    env.poll(T0)  # work_0 is handed out and never acked
    env.create(at(1), session_id="sesn_9", work_id="work_9")
    first = env.poll(at(5))  # work_0 is 5 s old and older by creation than work_9
    second = env.poll(at(5))
    assert first is not None
    assert second is not None
    assert (first.id, second.id) == ("work_0", "work_9")


def test_a_fresh_item_created_earlier_goes_before_a_reclaimable_younger_one() -> None:
    env = env_with(2)
    env.ack("work_0", T0)
    env.poll(T0)  # work_1 handed out, never acked
    env.create(at(1), session_id="sesn_9", work_id="work_9")
    env.heartbeat("work_0", at(1), expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=10)
    # work_0's lease lapses at 11 s: it is fresh again and older by creation than work_1.
    got = [env.poll(at(20)), env.poll(at(20)), env.poll(at(20))]
    assert [w.id if w else None for w in got] == ["work_0", "work_1", "work_9"]


def test_pending_counts_deliveries_younger_than_the_default_window() -> None:
    env = env_with(2)
    env.poll(T0, reclaim_older_than_ms=60_000)
    env.poll(at(3), reclaim_older_than_ms=60_000)
    assert stats(env, at(3))[:2] == (0, 2)
    assert stats(env, at(5) - US)[:2] == (0, 2)
    assert stats(env, at(5))[:2] == (1, 1)  # work_0's delivery is 5 s old: boundary inclusive
    assert stats(env, at(8))[:2] == (2, 0)


def test_a_window_of_zero_hands_the_item_out_again_at_once() -> None:
    env = env_with(2, QODER)
    a = env.poll(T0, worker_id="w1", reclaim_older_than_ms=0)
    b = env.poll(T0, worker_id="w2", reclaim_older_than_ms=0)
    assert a is not None
    assert b is not None
    assert (a.id, b.id, b.delivered_to) == ("work_0", "work_0", "w2")
    assert stats(env, T0)[:2] == (1, 1)  # work_1 never handed out; work_0 just now


def test_an_enormous_window_takes_over_nothing() -> None:
    env = env_with(1)
    env.poll(T0)
    late = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
    assert env.poll(late, reclaim_older_than_ms=10**30) is None  # reaches before year 1
    assert stats(env, late)[:2] == (1, 0)
    again = env.poll(late)
    assert again is not None
    assert again.id == "work_0"


def test_next_change_at_follows_the_asking_polls_window() -> None:
    env = env_with(1)
    env.poll(at(1))
    assert env.next_change_at() == at(6)
    assert env.next_change_at(reclaim_older_than_ms=2000) == at(3)
    assert env.next_change_at(reclaim_older_than_ms=10**30) is None
    env.ack("work_0", at(2))
    assert env.next_change_at() is None  # anthropic: an ack starts no lease


def test_poll_skips_items_that_were_acked_or_stopped() -> None:
    env = env_with(4)
    env.ack("work_0", at(1))
    env.stop("work_1", at(1))
    first = env.poll(at(1))
    assert first is not None
    assert first.id == "work_2"
    env.stop("work_2", at(1))  # a pending item stopped: pending goes down
    assert stats(env, at(1))[:2] == (1, 0)
    last = env.poll(at(2))
    assert last is not None
    assert last.id == "work_3"
    assert env.poll(at(6.9)) is None
    again = env.poll(at(7))  # work_3's window ended; nothing else is deliverable
    assert again is not None
    assert again.id == "work_3"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"block_ms": 0}, "block_ms"),
        ({"block_ms": 1000}, "block_ms"),
        ({"block_ms": True}, "block_ms"),
        ({"block_ms": 1.5}, "block_ms"),
        ({"block_ms": "5"}, "block_ms"),
        ({"reclaim_older_than_ms": 0}, "reclaim_older_than_ms"),
        ({"reclaim_older_than_ms": -5}, "reclaim_older_than_ms"),
        ({"reclaim_older_than_ms": False}, "reclaim_older_than_ms"),
        ({"reclaim_older_than_ms": "5000"}, "reclaim_older_than_ms"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": 5}, "worker_id"),
    ],
)
def test_poll_rejects_bad_parameters(kwargs: dict[str, Any], key: str) -> None:
    env = env_with(1)
    err = rejects(
        env,
        T0,
        lambda e: e.poll(at(1), **kwargs),
        InvalidInputError,
        status=400,
        error_type="invalid_request_error",
        key=key,
    )
    assert err.got == next(iter(kwargs.values()))
    assert env.latest_now == T0  # refused before time was applied


def test_poll_accepts_the_edges_of_block_ms_and_the_qoder_reclaim_floor() -> None:
    env = env_with(3)
    assert env.poll(T0, block_ms=1) is not None
    assert env.poll(T0, block_ms=999, reclaim_older_than_ms=1) is not None
    qoder = env_with(1, QODER)
    rejects(
        qoder,
        T0,
        lambda e: e.poll(T0, reclaim_older_than_ms=-1),
        InvalidInputError,
        status=400,
        key="reclaim_older_than_ms",
    )


def test_an_expired_item_goes_back_to_its_place_by_creation() -> None:
    env = env_with(3, ACK_LEASE)
    env.ack("work_0", at(1))  # lease until 121 s
    first = env.poll(at(2))
    assert first is not None
    assert first.id == "work_1"
    env.ack("work_1", at(2))
    assert env.poll(at(121) + US) is not None  # work_0 expired at 121 s + 1 µs
    assert env.get("work_0", at(121) + US).delivered_at == at(121) + US
    nxt = env.poll(at(122) + US)  # work_1 lapsed too, and it is older than work_2
    assert nxt is not None
    assert nxt.id == "work_1"
    last = env.poll(at(122) + US)
    assert last is not None
    assert last.id == "work_2"


# ------------------------------------------------------------------ ack
def test_ack_starts_the_lease_and_a_retry_changes_nothing() -> None:
    env = env_with(2, ACK_LEASE)
    env.poll(at(1), worker_id="w1")
    w = env.ack("work_0", at(2), worker_id="w1")
    assert (w.state, w.acknowledged_at, w.lease_expires_at, w.attempt) == (
        State.STARTING,
        at(2),
        at(122),
        1,
    )
    assert stats(env, at(2))[:2] == (1, 0)
    assert env.ack("work_0", at(3), worker_id="w2") is w
    env.ack("work_1", at(3))  # never delivered: still a legal ack
    assert stats(env, at(3)) == (0, 0, None, 1)


def test_qoder_binds_the_ack_to_the_polling_worker() -> None:
    env = env_with(1, QODER)
    env.poll(at(1), worker_id="w1")
    rejects(
        env,
        at(2),
        lambda e: e.ack("work_0", at(2), worker_id="w2"),
        IllegalMoveError,
        status=409,
        error_type="invalid_request_error",
        work_id="work_0",
    )
    assert env.ack("work_0", at(2), worker_id="w1").state is State.STARTING


def test_anthropic_lets_any_worker_ack() -> None:
    env = env_with(1)
    env.poll(at(1), worker_id="w1")
    w = env.ack("work_0", at(2), worker_id="w2")
    assert (w.state, w.delivered_to) == (State.STARTING, "w2")


def test_ack_rejections() -> None:
    env = env_with(1)
    env.stop("work_0", T0)
    rejects(
        env,
        at(1),
        lambda e: e.ack("work_0", at(1)),
        IllegalMoveError,
        status=409,
        error_type="conflict_error",
        state=State.STOPPED,
    )
    rejects(
        env,
        at(1),
        lambda e: e.ack("work_nope", at(1)),
        NotFoundError,
        status=404,
        error_type="not_found_error",
        work_id="work_nope",
    )
    rejects(
        env,
        at(1),
        lambda e: e.ack(42, at(1)),
        InvalidInputError,
        status=400,
        key="work_id",
    )
    rejects(
        env,
        at(1),
        lambda e: e.ack("work_0", at(1), worker_id=""),
        InvalidInputError,
        status=400,
        key="worker_id",
    )


# ------------------------------------------------------------------ heartbeat and expiry
def _active(env: Environment, work_id: str = "work_0", *, at_s: float = 1) -> str:
    env.ack(work_id, at(at_s))
    return env.heartbeat(work_id, at(at_s + 1), expected_last_heartbeat=NO_HEARTBEAT).last_heartbeat


def test_heartbeats_move_the_deadline() -> None:
    env = env_with(1)
    token = _active(env)
    assert env.get("work_0", at(2)).lease_expires_at == at(122)
    beat = env.heartbeat("work_0", at(100), expected_last_heartbeat=token, desired_ttl_seconds=30)
    assert (beat.lease_extended, beat.ttl_seconds, beat.state) == (True, 30, State.ACTIVE)
    assert env.get("work_0", at(100)).lease_expires_at == at(130)
    assert env.get("work_0", at(125)).state is State.ACTIVE  # the old deadline (122 s) is gone
    assert env.next_change_at() == at(130) + US
    assert [w.id for w in env.expire_due(at(130) + US)] == ["work_0"]


def test_expiry_from_starting() -> None:
    env = env_with(1, ACK_LEASE)
    env.poll(at(0), worker_id="w1")
    env.ack("work_0", at(1), worker_id="w1")  # deadline 121 s
    assert env.expire_due(at(121)) == []  # not yet: the deadline itself still holds
    assert env.get("work_0", at(121)).state is State.STARTING
    (w,) = env.expire_due(at(121) + US)
    assert (w.state, w.acknowledged_at, w.lease_expires_at, w.delivered_to) == (
        State.QUEUED,
        None,
        None,
        None,
    )
    assert (w.touched_at, w.attempt) == (at(121) + US, 1)
    assert invariant_violations(w) == []
    assert stats(env, at(121) + US)[:3] == (1, 0, T0)


def test_expiry_from_active_forgets_the_attempt() -> None:
    env = env_with(1)
    _active(env)  # last heartbeat at 2 s: deadline 122 s
    (w,) = env.expire_due(at(200))
    assert (w.state, w.started_at, w.latest_heartbeat_at, w.last_heartbeat) == (
        State.QUEUED,
        None,
        None,
        None,
    )
    assert w.touched_at == at(122) + US  # stamped when it lapsed, not when somebody looked


def test_expiry_from_stopping_stops_the_item() -> None:
    env = env_with(1)
    _active(env)
    env.stop("work_0", at(10))
    (w,) = env.expire_due(at(500))
    assert (w.state, w.stopped_at, w.stop_requested_at) == (State.STOPPED, at(122) + US, at(10))
    assert env.poll(at(500)) is None
    assert stats(env, at(500))[:3] == (0, 0, None)


def test_lazy_expiry_gives_the_same_records_as_a_sweep() -> None:
    swept, lazy = env_with(2), env_with(2)
    for env in (swept, lazy):
        _active(env, "work_0")
        env.ack("work_1", at(5))
        env.stop("work_1", at(6))
    for s in range(7, 400, 7):
        swept.expire_due(at(s))
    assert lazy.get("work_1", at(400)) == swept.get("work_1", at(400))
    assert lazy.get("work_0", at(400)) == swept.get("work_0", at(400))
    assert lazy.expire_due(at(400)) == []  # the get above already applied them


def test_expire_due_returns_records_by_deadline() -> None:
    env = env_with(3, ACK_LEASE)
    env.ack("work_2", at(1))
    env.ack("work_0", at(2))
    env.ack("work_1", at(3))
    env.heartbeat("work_2", at(4), expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=600)
    got = env.expire_due(at(1000))
    assert [(w.id, w.touched_at) for w in got] == [
        ("work_0", at(122) + US),
        ("work_1", at(123) + US),
        ("work_2", at(604) + US),
    ]
    assert env.expire_due(at(1000)) == []


@pytest.mark.parametrize(
    ("profile", "status", "error_type"),
    [(ANTHROPIC, 412, "invalid_request_error"), (QODER, 409, "invalid_request_error")],
)
def test_the_old_workers_heartbeat_after_expiry(
    profile: Profile, status: int, error_type: str
) -> None:
    env = env_with(1, profile)
    env.poll(at(0), worker_id="w1")
    token = _active_bound(env, "w1")
    err = rejects(
        env,
        at(300),
        lambda e: e.heartbeat("work_0", at(300), expected_last_heartbeat=token),
        WorkstateError,
        status=status,
        error_type=error_type,
    )
    if profile is ANTHROPIC:
        assert isinstance(err, PreconditionFailedError)
        assert err.current_state.state is State.QUEUED
        assert err.current_state.last_heartbeat is None
        details = err.to_json()["error"]["details"]
        assert details["current_state"]["state"] == "queued"
        assert details["current_state"]["last_heartbeat"] is None
    else:
        assert isinstance(err, IllegalMoveError)
        assert err.state is State.QUEUED
    # The item is back in the queue for the next worker, who starts clean.
    nxt = env.poll(at(300), worker_id="w2")
    assert nxt is not None
    assert nxt.id == "work_0"
    env.ack("work_0", at(301), worker_id="w2")
    beat = env.heartbeat("work_0", at(302), expected_last_heartbeat=NO_HEARTBEAT)
    assert beat.lease_extended
    # The old worker's token does not match the new lease either.
    rejects(
        env,
        at(303),
        lambda e: e.heartbeat("work_0", at(303), expected_last_heartbeat=token),
        PreconditionFailedError,
        status=412,
    )


def _active_bound(env: Environment, worker: str) -> str:
    env.ack("work_0", at(1), worker_id=worker)
    return env.heartbeat("work_0", at(2), expected_last_heartbeat=NO_HEARTBEAT).last_heartbeat


def test_heartbeat_rejections() -> None:
    env = env_with(2)
    token = _active(env)
    rejects(
        env,
        at(3),
        lambda e: e.heartbeat("work_0", at(3), expected_last_heartbeat=NO_HEARTBEAT),
        PreconditionFailedError,
        status=412,
        error_type="invalid_request_error",
    )
    rejects(
        env,
        at(3),
        lambda e: e.heartbeat("work_0", at(3), expected_last_heartbeat="yesterday"),
        InvalidInputError,
        status=400,
        key="expected_last_heartbeat",
    )
    rejects(
        env,
        at(3),
        lambda e: e.heartbeat(
            "work_0", at(3), expected_last_heartbeat=token, desired_ttl_seconds=0
        ),
        InvalidInputError,
        status=400,
        key="desired_ttl_seconds",
    )
    rejects(
        env,
        at(3),
        lambda e: e.heartbeat("work_1", at(3)),
        IllegalMoveError,
        status=409,
        error_type="conflict_error",
        state=State.QUEUED,
    )
    rejects(
        env,
        at(3),
        lambda e: e.heartbeat("work_9", at(3)),
        NotFoundError,
        status=404,
        error_type="not_found_error",
    )


def test_heartbeat_on_a_stopping_item_is_answered_without_extending() -> None:
    env = env_with(1)
    token = _active(env)
    env.stop("work_0", at(5))
    beat = env.heartbeat("work_0", at(6), expected_last_heartbeat=token)
    assert (beat.state, beat.lease_extended) == (State.STOPPING, False)
    assert env.get("work_0", at(6)).lease_expires_at == at(122)


# ------------------------------------------------------------------ stop
def test_stop_in_every_state() -> None:
    env = env_with(4)
    env.poll(T0)  # work_0 pending
    assert env.stop("work_0", at(1)).state is State.STOPPED
    assert env.stop("work_1", at(1), force=True).state is State.STOPPED
    _active(env, "work_2")
    w = env.stop("work_2", at(3))
    assert (w.state, w.stop_requested_at, w.lease_expires_at) == (State.STOPPING, at(3), at(122))
    assert env.stop("work_2", at(4)).state is State.STOPPED
    env.ack("work_3", at(4))
    assert env.stop("work_3", at(5), force=True).stop_requested_at is None
    assert stats(env, at(5))[:3] == (0, 0, None)
    assert env.next_change_at() is None
    assert env.expire_due(at(1000)) == []


@pytest.mark.parametrize(
    ("profile", "noop"), [(ANTHROPIC, False), (QODER, True)], ids=["anthropic", "qoder"]
)
def test_stop_on_a_stopped_item(profile: Profile, noop: bool) -> None:
    env = env_with(1, profile)
    stopped = env.stop("work_0", T0)
    if noop:
        assert env.stop("work_0", at(1)) is stopped
        assert env.stop("work_0", at(1), force=True) is stopped
    else:
        rejects(
            env,
            at(1),
            lambda e: e.stop("work_0", at(1)),
            IllegalMoveError,
            status=409,
            error_type="conflict_error",
        )
    rejects(
        env, at(1), lambda e: e.stop("work_0", at(1), force="yes"), InvalidInputError, key="force"
    )
    rejects(env, at(1), lambda e: e.stop("work_x", at(1)), NotFoundError, status=404)


# ------------------------------------------------------------------ metadata and get
def test_update_metadata_keeps_the_item_where_it_is() -> None:
    env = env_with(2)
    env.poll(T0)  # work_0 pending until 5 s
    w = env.update_metadata("work_0", at(1), {"a": "1", "b": "2"})
    assert dict(w.metadata) == {"a": "1", "b": "2"}
    assert dict(env.update_metadata("work_0", at(2), {"a": None}).metadata) == {"b": "2"}
    assert stats(env, at(2))[:2] == (1, 1)
    assert env.poll(at(2)) is not None  # work_1
    assert env.poll(at(2)) is None  # work_0 is still inside its window
    assert env.update_metadata("work_0", at(2), {}) is env.get("work_0", at(2))
    rejects(
        env,
        at(3),
        lambda e: e.update_metadata("work_0", at(3), {"k": "x" * 513}),
        InvalidInputError,
        status=400,
        key="metadata.k",
    )
    rejects(
        env,
        at(3),
        lambda e: e.update_metadata("work_0", at(3), ["not", "a", "mapping"]),
        InvalidInputError,
        status=400,
        key="metadata",
    )
    rejects(env, at(3), lambda e: e.update_metadata("work_x", at(3), {}), NotFoundError, status=404)


def test_get() -> None:
    env = env_with(1)
    assert env.get("work_0", at(1)).id == "work_0"
    err = rejects(
        env,
        at(1),
        lambda e: e.get("work_missing", at(1)),
        NotFoundError,
        status=404,
        error_type="not_found_error",
        work_id="work_missing",
    )
    assert err.to_json(request_id="req_1") == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "no work item 'work_missing' in environment env_1",
        },
        "request_id": "req_1",
    }


# ------------------------------------------------------------------ time
@pytest.mark.parametrize(
    "call",
    [
        lambda e, t: e.create(t),
        lambda e, t: e.poll(t),
        lambda e, t: e.ack("work_0", t),
        lambda e, t: e.heartbeat("work_0", t),
        lambda e, t: e.stop("work_0", t),
        lambda e, t: e.update_metadata("work_0", t, {"a": "b"}),
        lambda e, t: e.get("work_0", t),
        lambda e, t: e.list(t),
        lambda e, t: e.stats(t),
        lambda e, t: e.expire_due(t),
    ],
)
def test_every_call_refuses_to_go_back_in_time(
    call: Callable[[Environment, dt.datetime], object],
) -> None:
    env = env_with(1)
    env.get("work_0", at(10))
    err = rejects(
        env,
        at(10),
        lambda e: call(e, at(10) - US),
        InvalidInputError,
        status=400,
        error_type="invalid_request_error",
        key="now",
    )
    assert err.got == at(10) - US
    assert env.latest_now == at(10)
    rejects(env, at(10), lambda e: call(e, dt.datetime(2030, 1, 1)), InvalidInputError, key="now")


def test_offsets_are_normalised_to_utc() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    env = Environment("env_1")
    w = env.create(dt.datetime(2026, 7, 1, 10, 15, tzinfo=plus2), session_id="sesn_1")
    assert w.created_at == T0
    assert w.created_at.tzinfo is dt.UTC
    assert env.latest_now == T0


# ------------------------------------------------------------------ stats
def test_stats_while_items_move() -> None:
    env = env_with(4, ACK_LEASE)
    assert env.stats(T0).to_json() == {
        "type": "work_queue_stats",
        "depth": 4,
        "pending": 0,
        "oldest_queued_at": "2026-07-01T08:15:00.000000Z",
        "workers_polling": None,
    }
    env.poll(at(1), worker_id="w1")  # work_0 pending
    env.poll(at(1), worker_id="w2")  # work_1 pending
    assert stats(env, at(1)) == (2, 2, T0, 2)
    env.ack("work_0", at(2), worker_id="w1")
    assert stats(env, at(2)) == (2, 1, T0, 2)
    env.stop("work_2", at(3))
    assert stats(env, at(3)) == (1, 1, T0, 2)
    assert stats(env, at(6)) == (2, 0, T0, 2)  # work_1's window ended
    env.ack("work_1", at(6))
    env.ack("work_3", at(6))
    assert stats(env, at(6)) == (0, 0, None, 2)
    assert stats(env, at(31)) == (0, 0, None, 2)  # polled at 1 s: 30 s ago, still counted
    assert stats(env, at(31) + US) == (0, 0, None, 0)
    assert stats(env, at(123)) == (1, 0, T0, 0)  # work_0's lease lapsed after 122 s
    assert stats(env, at(127)) == (3, 0, T0, 0)  # work_1's and work_3's after 126 s


def test_oldest_queued_at_counts_pending_items_and_follows_the_profile() -> None:
    env = Environment("env_1", profile=QODER)
    env.create(dt.datetime(2026, 7, 1, 8, 15, 0, 700000, tzinfo=dt.UTC), session_id="sesn_1")
    env.create(at(2), session_id="sesn_2")
    env.poll(at(2))
    got = env.stats(at(2))
    assert (got.depth, got.pending, got.oldest_queued_at) == (1, 1, T0)
    assert got.to_json()["oldest_queued_at"] == "2026-07-01T08:15:00Z"


def test_workers_polling_counts_distinct_workers() -> None:
    env = Environment("env_1")
    for s, worker in [(0, "a"), (1, "b"), (1, "a"), (1, "a"), (20, "c"), (29, "a")]:
        env.poll(at(s), worker_id=worker)
    assert env.stats(at(30)).workers_polling == 3
    assert env.stats(at(31) + US).workers_polling == 2  # b last polled at 1 s
    assert env.stats(at(50)).workers_polling == 2
    assert env.stats(at(59) + US).workers_polling == 0
    env.poll(at(60))  # anonymous
    assert env.stats(at(60)).workers_polling == 0


def test_queue_stats_and_work_page_are_plain_records() -> None:
    s = QueueStats(depth=1, pending=2, oldest_queued_at=None, workers_polling=None)
    assert s.to_json()["oldest_queued_at"] is None
    assert WorkPage(data=(), next_page=None).to_json() == {"data": [], "next_page": None}


# ------------------------------------------------------------------ listing
def test_listing_pages_oldest_first() -> None:
    env = env_with(5)
    first = env.list(at(1), limit=2)
    assert [w.id for w in first.data] == ["work_0", "work_1"]
    assert first.next_page is not None
    second = env.list(at(1), limit=2, page=first.next_page)
    assert [w.id for w in second.data] == ["work_2", "work_3"]
    third = env.list(at(1), limit=2, page=second.next_page)
    assert [w.id for w in third.data] == ["work_4"]
    assert third.next_page is None
    assert [w.id for w in env.list(at(1)).data] == [f"work_{i}" for i in range(5)]
    exact = env.list(at(1), limit=5)
    assert exact.next_page is None
    assert env.list(at(1), limit=1000).next_page is None
    assert Environment("env_1").list(T0).to_json() == {"data": [], "next_page": None}


def test_listing_json_never_writes_secrets() -> None:
    env = env_with(2)
    env.poll(T0)
    body = env.list(T0).to_json()
    assert [w["secret"] for w in body["data"]] == [None, None]
    assert body["data"][0]["id"] == "work_0"
    assert body["next_page"] is None


def test_the_cursor_is_stable_while_items_change() -> None:
    env = env_with(4)
    first = env.list(at(1), limit=2)
    env.ack("work_0", at(2))
    env.stop("work_1", at(2))
    env.stop("work_2", at(2))
    env.create(at(3), work_id="work_new", session_id="sesn_new")
    rest = env.list(at(4), limit=10, page=first.next_page)
    assert [(w.id, w.state) for w in rest.data] == [
        ("work_2", State.STOPPED),
        ("work_3", State.QUEUED),
        ("work_new", State.QUEUED),
    ]
    last = env.list(at(4), limit=3, page=first.next_page)
    assert last.next_page is None
    # A cursor taken at the end sees items created later.
    end = env.list(at(4), limit=4)
    assert end.next_page is not None
    env.create(at(5), session_id="sesn_later")
    assert len(env.list(at(5), page=end.next_page).data) == 2


@pytest.mark.parametrize("limit", [0, 1001, -1, True, 2.0, "20", None])
def test_listing_rejects_a_bad_limit(limit: object) -> None:
    env = env_with(1)
    rejects(
        env,
        T0,
        lambda e: e.list(at(1), limit=limit),
        InvalidInputError,
        status=400,
        error_type="invalid_request_error",
        key="limit",
        got=limit,
    )
    assert env.latest_now == T0


def test_listing_rejects_a_bad_cursor() -> None:
    env = env_with(5)
    good = env.list(T0, limit=1).next_page
    far = env.list(T0, limit=3).next_page
    assert far is not None
    assert good is not None
    other = env_with(3)
    other_env = Environment("env_2")
    for i in range(3):
        other_env.create(T0, session_id=f"sesn_{i}")
    foreign = other_env.list(T0, limit=1).next_page
    assert foreign is not None
    assert other.list(T0, limit=1, page=good).data[0].id == "work_1"  # same environment id
    small = env_with(1)
    for page in [
        "",
        "garbage",
        good + "x",
        good[:-1],
        "é" * 16,
        "!!!!!!!!!!!!!!!!",
        foreign,
        5,
    ]:
        rejects(
            env,
            T0,
            lambda e, p=page: e.list(T0, page=p),
            InvalidInputError,
            status=400,
            error_type="invalid_request_error",
            key="page",
        )
    # A cursor past the items this environment holds is not one it handed out.
    assert small.list(T0, page=good).data == ()
    rejects(small, T0, lambda e: e.list(T0, page=far), InvalidInputError, key="page")


# ------------------------------------------------------------------ indexes stay exact
def test_a_heartbeat_replaces_the_lease_key() -> None:
    env = env_with(1)
    token = _active(env)
    for i in range(1100):
        token = env.heartbeat(
            "work_0", at(3 + i / 1000), expected_last_heartbeat=token
        ).last_heartbeat
    assert len(env._returning) == 1
    assert env.get("work_0", at(5)).state is State.ACTIVE
    assert [w.id for w in env.expire_due(at(200))] == ["work_0"]


def test_an_ack_ends_the_delivery_in_the_index() -> None:
    env = env_with(1100)
    for i in range(1100):
        w = env.poll(T0)
        assert w is not None
        assert w.id == f"work_{i}"
        env.ack(w.id, T0)
    env.create(T0, session_id="sesn_x", work_id="work_x")
    assert env.poll(T0) is not None
    assert len(env._deliveries) == 1  # only work_x awaits its ack
    assert env.next_change_at() == at(5)  # work_x's delivery is the oldest live one
    assert stats(env, T0)[:2] == (0, 1)
    assert stats(env, at(5))[:2] == (1, 0)


def test_a_long_stuck_delivery_keeps_its_place() -> None:
    env = env_with(1)
    env.poll(T0)  # work_0 stuck: handed out, never acked
    for i in range(1100):
        env.create(at(10), session_id=f"sesn_x{i}", work_id=f"work_x{i}")
        got = env.poll(at(10), reclaim_older_than_ms=60_000)
        assert got is not None
        env.ack(got.id, at(10))
    assert len(env._deliveries) == 1
    assert env.next_change_at() == at(5)
    got = env.poll(at(10))
    assert got is not None
    assert got.id == "work_0"


def test_next_change_at() -> None:
    env = env_with(2, ACK_LEASE)
    assert env.next_change_at() is None
    env.poll(T0)  # window ends at 5 s
    env.ack("work_1", at(1))  # lease lapses after 121 s
    assert env.next_change_at() == at(5)
    env.ack("work_0", at(2))  # the window is gone; the lease lapses after 122 s
    assert env.next_change_at() == at(121) + US
    env.stop("work_1", at(3), force=True)
    assert env.next_change_at() == at(122) + US


def test_every_record_keeps_the_invariants() -> None:
    env = env_with(3)
    env.poll(at(1), worker_id="w")
    _active(env, "work_1", at_s=2)
    env.stop("work_1", at(4))
    env.expire_due(at(500))
    for w in env.list(at(500)).data:
        assert invariant_violations(w) == [], w


def test_a_delivery_near_the_year_9999_never_ages_by_the_default_window() -> None:
    late = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    env = Environment("env_1")
    env.create(late, session_id="sesn_1", work_id="work_1")
    env.poll(late)
    half = late + dt.timedelta(microseconds=500_000)
    assert stats(env, half)[:2] == (0, 1)
    assert env.poll(half, reclaim_older_than_ms=1) is not None


def test_a_default_window_of_zero_makes_a_delivery_ready_at_once() -> None:
    profile = attrs.evolve(QODER, default_reclaim_older_than_ms=0)
    env = env_with(1, profile)
    env.poll(T0)
    assert stats(env, T0)[:2] == (1, 0)
    again = env.poll(T0)
    assert again is not None
    assert again.id == "work_0"


def test_an_acked_delivery_is_not_reclaimed() -> None:
    env = env_with(2)
    env.poll(T0)
    env.poll(T0)
    got = env.poll(at(5))  # both deliveries are due now; the oldest by creation goes
    assert got is not None
    assert got.id == "work_0"
    env.ack("work_1", at(5))  # its delivery ended
    assert env.poll(at(5)) is None


def test_a_short_window_reclaims_the_oldest_of_many_deliveries() -> None:
    env = env_with(1100)
    for _ in range(1100):
        env.poll(T0, reclaim_older_than_ms=60_000)
    got = env.poll(at(1), reclaim_older_than_ms=1)  # all 1100 deliveries are due for it
    assert got is not None
    assert got.id == "work_0"
    for i in range(1, 1100):
        env.ack(f"work_{i}", at(1))
    assert env.poll(at(2), reclaim_older_than_ms=1) is not None  # work_0 again
    assert len(env._deliveries) == 1
    assert env.next_change_at() == at(7)  # work_0's delivery at 2 s (acks start no lease)
    assert stats(env, at(7))[:2] == (1, 0)


def test_no_delivery_is_left_when_every_delivery_ended() -> None:
    env = env_with(1100)
    for _ in range(1100):
        env.poll(T0, reclaim_older_than_ms=60_000)
    for i in range(1100):
        env.ack(f"work_{i}", T0)
    assert env.next_change_at() is None
    assert len(env._deliveries) == 0


def test_a_fresh_id_skips_an_id_already_in_use() -> None:
    profile = attrs.evolve(ANTHROPIC, fresh_id_on_redelivery=True)
    env = Environment("env_1", profile=profile, id_factory=lambda prefix: f"{prefix}fixed")
    env.create(T0, session_id="sesn_1")
    taken, _ = env._hashed_id("work_", env._id_counter)
    env.create(T0, session_id="sesn_2", work_id=taken)
    env.poll(T0)
    env.poll(T0)
    again = env.poll(at(5))
    assert again is not None
    assert again.id not in ("work_fixed", taken)
    assert len({w.id for w in env.list(at(5)).data}) == 2


def test_a_clock_standing_still_still_refuses_a_stale_token() -> None:
    # The bug a manual clock exposed: every heartbeat answered the same last_heartbeat, so a
    # worker re-sending a replaced token got 200 where the API answers 412.
    env = env_with(1)
    env.poll(T0)
    env.ack("work_0", T0)
    first = env.heartbeat("work_0", T0, expected_last_heartbeat=NO_HEARTBEAT)
    second = env.heartbeat("work_0", T0, expected_last_heartbeat=first.last_heartbeat)
    third = env.heartbeat("work_0", T0, expected_last_heartbeat=second.last_heartbeat)
    tokens = [first.last_heartbeat, second.last_heartbeat, third.last_heartbeat]
    assert tokens == [
        "2026-07-01T08:15:00.000000Z",
        "2026-07-01T08:15:00.000001Z",
        "2026-07-01T08:15:00.000002Z",
    ]
    before = env.get("work_0", T0)
    with pytest.raises(PreconditionFailedError) as info:
        env.heartbeat("work_0", T0, expected_last_heartbeat=second.last_heartbeat)
    assert info.value.current_state.last_heartbeat == third.last_heartbeat
    assert env.get("work_0", T0) is before
    # Later operations on the item happen at its own time, so its timestamps stay in order.
    stopping = env.stop("work_0", T0)
    assert stopping.stop_requested_at == T0 + 2 * US
    assert invariant_violations(stopping) == []
    assert env.latest_now == T0


def test_the_records_of_a_clock_standing_still_check_clean() -> None:
    from workstate import check_trace, heartbeat_record

    env = env_with(1)
    records: list[object] = [env.get("work_0", T0).to_json()]
    env.poll(T0)
    records.append(env.ack("work_0", T0).to_json())
    token = NO_HEARTBEAT
    for _ in range(3):
        beat = env.heartbeat("work_0", T0, expected_last_heartbeat=token)
        records.append(heartbeat_record("work_0", beat))
        token = beat.last_heartbeat
    records.append(env.stop("work_0", T0).to_json())
    records.append(env.stop("work_0", T0).to_json())
    assert check_trace(records, complete=True).ok
