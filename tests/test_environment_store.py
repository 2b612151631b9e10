"""Environment, the parts a store needs: the retention bound, change tracking, and restore.

A restored environment must behave exactly as the one it was taken from; a random workload
checks that by running both side by side after the restore.  Every rejected restore names the
record and the key at fault.
"""

from __future__ import annotations

import datetime as dt
import random
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
    State,
    WorkstateError,
    invariant_violations,
)
from workstate._environment import Environment, EnvironmentState, ItemState


def stopped_env(n: int, **options: Any) -> Environment:
    """``n`` items ``work_0``..., each force-stopped at ``n`` seconds + its index."""
    env = Environment("env_1", **options)
    for i in range(n):
        env.create(at(i), session_id=f"sesn_{i}", work_id=f"work_{i}")
        env.stop(f"work_{i}", at(i), force=True)
    return env


def ids(env: Environment, now: dt.datetime, limit: int = 1000) -> list[str]:
    out: list[str] = []
    page = None
    while True:
        got = env.list(now, limit=limit, page=page)
        out.extend(w.id for w in got.data)
        page = got.next_page
        if page is None:
            return out


# ------------------------------------------------------------------ retention
def test_without_a_bound_every_stopped_item_is_kept() -> None:
    env = stopped_env(50)
    assert len(env) == 50
    assert env.get("work_0", at(10**6)).state is State.STOPPED


def test_retain_stopped_keeps_the_newest_stopped_items() -> None:
    env = stopped_env(5, retain_stopped=2)
    # The fifth stop happened in the last call; the bound applies from the next call on.
    assert len(env) == 3
    with pytest.raises(NotFoundError) as info:
        env.get("work_2", at(5))
    assert (info.value.status, info.value.work_id) == (404, "work_2")
    assert len(env) == 2
    assert ids(env, at(5)) == ["work_3", "work_4"]
    assert "work_0" not in env


def test_retention_counts_by_stopping_order_not_creation() -> None:
    env = Environment("env_1", retain_stopped=1)
    env.create(T0, session_id="sesn_a", work_id="work_a")
    env.create(T0, session_id="sesn_b", work_id="work_b")
    env.stop("work_b", at(1), force=True)
    env.stop("work_a", at(2), force=True)
    assert ids(env, at(3)) == ["work_a"]  # b stopped first, so b went


def test_live_items_are_never_dropped() -> None:
    env = Environment("env_1", retain_stopped=0)
    for i in range(4):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}")
    env.ack("work_1", T0)
    env.poll(T0)
    env.stop("work_3", T0, force=True)
    assert ids(env, at(1)) == ["work_0", "work_1", "work_2"]
    assert env.stats(at(1)).depth == 1  # work_2 (work_0 is pending)


def test_retain_stopped_seconds_drops_by_age() -> None:
    env = stopped_env(5, retain_stopped_seconds=2)
    # Stopped at 0..4 s; at 5 s those stopped more than 2 s ago (before 3 s) go.
    assert ids(env, at(5)) == ["work_3", "work_4"]
    assert ids(env, at(6)) == ["work_4"]  # stopped exactly 2 s ago: kept
    assert ids(env, at(6) + dt.timedelta(microseconds=1)) == []


def test_an_expiry_that_stops_an_item_counts_for_retention() -> None:
    # (ACK_LEASE: the ack starts the lease whose expiry is the point; anthropic's starts none)
    env = Environment("env_1", profile=ACK_LEASE, retain_stopped_seconds=10)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.ack("work_1", T0)
    env.stop("work_1", T0)  # stopping: the lease runs out after 120 s
    assert env.get("work_1", at(121)).state is State.STOPPED
    assert "work_1" in env
    assert env.expire_due(at(131)) == []
    assert "work_1" not in env


def test_an_enormous_age_bound_drops_nothing() -> None:
    env = stopped_env(3, retain_stopped_seconds=1e300)
    assert len(env) == 3
    assert env.expire_due(at(10)) == []
    assert len(env) == 3


def test_an_age_bound_before_year_one_drops_nothing() -> None:
    early = dt.datetime(1, 1, 1, 0, 0, 5, tzinfo=dt.UTC)
    env = Environment("env_1", retain_stopped_seconds=3600)
    env.create(early, session_id="sesn_1", work_id="work_1")
    env.stop("work_1", early, force=True)
    assert ids(env, early) == ["work_1"]


def test_on_drop_hears_of_each_item_the_bound_drops_once_and_after_it_left() -> None:
    heard: list[tuple[str, str | None, bool]] = []
    env: Environment

    def on_drop(work: Any, renewed: Any) -> None:
        heard.append((work.id, renewed, work.id in env))  # (already out of the index?)

    env = Environment("env_1", retain_stopped=2, retain_stopped_seconds=10, on_drop=on_drop)
    for i in range(5):
        env.create(at(i), session_id=f"sesn_{i}", work_id=f"work_{i}")
        env.stop(f"work_{i}", at(i), force=True)
    # By count: the bound applies from the next call on, so work_0..work_1 went so far.
    assert heard == [("work_0", None, False), ("work_1", None, False)]
    env.get("work_4", at(5))
    assert [h[0] for h in heard] == ["work_0", "work_1", "work_2"]
    assert ids(env, at(13) + dt.timedelta(microseconds=1)) == ["work_4"]  # by age: work_3
    assert heard[-1] == ("work_3", None, False)
    assert env.expire_due(at(100)) == []
    assert [h[0] for h in heard] == [f"work_{i}" for i in range(5)]  # each once
    assert len(env) == 0


def test_on_drop_is_not_called_without_a_bound_or_for_live_items() -> None:
    heard: list[object] = []
    env = Environment("env_1", retain_stopped=0, on_drop=lambda w, r: heard.append(w))
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.ack("work_1", T0)
    env.stop("work_1", at(1))  # stopping, not stopped: nothing to drop
    env.stats(at(2))
    assert heard == []
    unbounded = Environment("env_2", on_drop=lambda w, r: heard.append(w))
    unbounded.create(T0, session_id="sesn_2", work_id="work_2")
    unbounded.stop("work_2", T0, force=True)
    unbounded.stats(at(1))
    assert heard == []


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"retain_stopped": -1}, "retain_stopped"),
        ({"retain_stopped": 1.5}, "retain_stopped"),
        ({"retain_stopped": True}, "retain_stopped"),
        ({"retain_stopped_seconds": -1}, "retain_stopped_seconds"),
        ({"retain_stopped_seconds": float("inf")}, "retain_stopped_seconds"),
        ({"retain_stopped_seconds": float("nan")}, "retain_stopped_seconds"),
        ({"retain_stopped_seconds": "60"}, "retain_stopped_seconds"),
        ({"retain_stopped_seconds": False}, "retain_stopped_seconds"),
    ],
)
def test_the_retention_bound_is_checked(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Environment("env_1", **kwargs)
    assert (info.value.status, info.value.key) == (400, key)
    assert key in info.value.message


def test_listing_skips_dropped_items_and_cursors_stay_valid() -> None:
    env = Environment("env_1", retain_stopped=0)
    for i in range(10):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}")
    page = env.list(T0, limit=3)
    assert [w.id for w in page.data] == ["work_0", "work_1", "work_2"]
    for i in (2, 3, 4, 7, 9):
        env.stop(f"work_{i}", T0, force=True)
    # The cursor names work_2, which is gone: the next page starts after it all the same.
    assert page.next_page is not None
    rest = env.list(at(1), limit=2, page=page.next_page)
    assert [w.id for w in rest.data] == ["work_5", "work_6"]
    assert rest.next_page is not None
    last = env.list(at(1), limit=2, page=rest.next_page)
    assert [w.id for w in last.data] == ["work_8"]
    assert last.next_page is None  # only dropped items follow
    assert ids(env, at(1), limit=1) == ["work_0", "work_1", "work_5", "work_6", "work_8"]
    # A cursor beyond every sequence number ever used is still refused.
    with pytest.raises(InvalidInputError) as info:
        env.list(at(1), page=env._encode_cursor(10))
    assert info.value.key == "page"


def test_memory_follows_the_items_held_not_the_items_ever_created() -> None:
    env = Environment("env_1", retain_stopped=10)
    for i in range(3000):
        env.create(at(i), session_id=f"sesn_{i}", work_id=f"work_{i}")
        item = env.poll(at(i))
        assert item is not None
        env.ack(item.id, at(i))
        env.stop(item.id, at(i), force=True)
    env.stats(at(3000))
    assert len(env) == 10
    sizes = [len(env._by_seq), len(env._present), len(env._fresh), len(env._queued)]
    sizes += [len(env._deliveries), len(env._returning), len(env._ending), len(env._stopped)]
    assert max(sizes) <= 10  # the indexes hold the items held, nothing stale
    assert ids(env, at(3000)) == [f"work_{i}" for i in range(2990, 3000)]


def test_stopped_items_leave_the_fresh_and_queued_indexes() -> None:
    env = Environment("env_1", retain_stopped=0)
    for i in range(3000):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}")
        env.stop(f"work_{i}", T0, force=True)  # ready, then stopped: out of both
    assert len(env._fresh) == 0
    assert len(env._queued) == 0
    env.create(T0, session_id="sesn_x", work_id="work_x")
    assert env.stats(T0).oldest_queued_at == T0
    polled = env.poll(T0)
    assert polled is not None
    assert polled.id == "work_x"


def test_an_item_that_was_ready_comes_back_after_compaction() -> None:
    env = Environment("env_1", profile=ACK_LEASE)  # (the acks' leases expire: the point)
    env.create(T0, session_id="sesn_keep", work_id="work_keep")
    env.ack("work_keep", T0)  # not ready; its ready entry is stale now
    for i in range(1100):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}")
        env.ack(f"work_{i}", T0)
    assert env.get("work_keep", at(121)).state is State.QUEUED  # expired: ready again
    polled = env.poll(at(121))
    assert polled is not None
    assert polled.id == "work_keep"  # oldest by creation


# ------------------------------------------------------------------ change tracking
def test_take_changes_names_each_changed_item_once_in_its_latest_state() -> None:
    env = Environment("env_1", track_changes=True, retain_stopped=1)
    first = env.take_changes()
    assert first.state == EnvironmentState(id_counter=0, next_seq=0)
    assert (first.items, first.dropped) == ((), ())
    assert not env.take_changes()
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.create(T0, session_id="sesn_2", work_id="work_2")
    env.poll(T0, worker_id="w1")
    env.ack("work_1", at(1))
    changes = env.take_changes()
    assert changes.state == EnvironmentState(
        id_counter=0, next_seq=2, named_poll_seen=True, pollers={"w1": T0}
    )
    assert [(i.work.id, i.work.state, i.work.version, i.seq) for i in changes.items] == [
        ("work_1", State.STARTING, 3, 0),
        ("work_2", State.QUEUED, 1, 1),
    ]
    env.get("work_1", at(2))
    env.stats(at(2))
    assert not env.take_changes()  # reads change nothing
    env.update_metadata("work_2", at(3), {"k": "v"})
    env.update_metadata("work_2", at(3), {"k": "v"})  # the same patch again: no change
    assert [i.work.metadata for i in env.take_changes().items] == [{"k": "v"}]
    env.stop("work_1", at(4), force=True)
    env.stop("work_2", at(4), force=True)
    assert [i.work.id for i in env.take_changes().items] == ["work_1", "work_2"]
    env.get("work_2", at(5))
    assert env.take_changes().dropped == ("work_1",)


def test_a_pending_item_carries_its_window() -> None:
    env = Environment("env_1", track_changes=True)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.take_changes()
    env.poll(T0, reclaim_older_than_ms=7000)
    (item,) = env.take_changes().items
    # The profile's default window (5 s): the reclaiming poll's window decides, not this one's.
    assert (item.work.delivered_at, item.window_until) == (T0, at(5))
    env.ack("work_1", T0)
    (item,) = env.take_changes().items
    assert item.window_until is None  # the delivery ended


def test_an_item_created_and_dropped_between_takes_is_only_a_drop() -> None:
    env = Environment("env_1", track_changes=True, retain_stopped=0)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.stop("work_1", T0, force=True)
    env.stats(at(1))
    changes = env.take_changes()
    assert (changes.items, changes.dropped) == ((), ("work_1",))


def test_take_changes_needs_tracking() -> None:
    env = Environment("env_1")
    with pytest.raises(InvalidInputError) as info:
        env.take_changes()
    assert (info.value.status, info.value.key) == (400, "track_changes")


# ------------------------------------------------------------------ restore
FRESH_IDS = attrs.evolve(ANTHROPIC, name="fresh-ids", fresh_id_on_redelivery=True)


def full(env: Environment) -> tuple[object, ...]:
    """Everything the environment holds, private fields included."""
    return env.state(), env.item_states(), env.latest_now, len(env)


def restored(env: Environment, **options: Any) -> Environment:
    now = env.latest_now
    assert now is not None
    return Environment.restore(
        env.environment_id,
        now=now,
        state=env.state(),
        items=env.item_states(),
        profile=env.profile,
        **options,
    )


def step(env: Environment, rng: random.Random, now: dt.datetime) -> object:
    """One random call; its answer (or the error's type and key)."""
    held = [i.work.id for i in env.item_states()] or ["work_none"]
    target = rng.choice(held)
    op = rng.randrange(7)
    try:
        if op == 0:
            return env.create(now, metadata={"n": str(rng.randrange(9))})
        if op == 1:
            return env.poll(
                now,
                worker_id=rng.choice(["w1", "w2", None]),
                reclaim_older_than_ms=rng.choice([1000, 5000, 60_000]),  # the reclaiming window
            )
        if op == 2:
            return env.ack(target, now)
        if op == 3:
            token = rng.choice([NO_HEARTBEAT, env.get(target, now).last_heartbeat])
            return env.heartbeat(target, now, expected_last_heartbeat=token)
        if op == 4:
            return env.stop(target, now, force=rng.random() < 0.5)
        if op == 5:
            return env.stats(now)
        return env.list(now, limit=3)
    except WorkstateError as exc:
        return type(exc), exc.status


@pytest.mark.parametrize("seed", range(6))
def test_a_restored_environment_behaves_as_the_original(seed: int) -> None:
    rng = random.Random(seed)
    options: dict[str, Any] = {"retain_stopped": rng.choice([None, 0, 3]), "track_changes": True}
    profile = rng.choice([ANTHROPIC, QODER, ACK_LEASE, FRESH_IDS])
    env = Environment("env_1", profile=profile, **options)
    now = T0
    for _ in range(rng.randrange(40, 120)):
        now += dt.timedelta(seconds=rng.choice([0, 0.5, 2, 7, 130]))
        step(env, rng, now)
    copy = restored(env, **options)
    assert full(copy) == full(env)
    for item in copy.item_states():
        assert invariant_violations(item.work) == []
    for _ in range(60):
        now += dt.timedelta(seconds=rng.choice([0, 0.5, 2, 7, 130]))
        state = rng.getstate()
        a = step(env, rng, now)
        rng.setstate(state)
        assert step(copy, rng, now) == a
        assert copy.next_change_at() == env.next_change_at()
    assert full(copy) == full(env)


def test_restore_keeps_generated_ids_fresh_and_lease_deadlines() -> None:
    env = Environment("env_1", profile=ACK_LEASE)  # (an ack lease, to compare its deadline)
    first = env.create(T0)
    env.ack(first.id, T0)
    copy = restored(env)
    second = copy.create(at(1))
    assert second.id != first.id
    assert second.id == env.create(at(1)).id  # the same sequence of ids
    assert copy.expire_due(at(121))[0].id == first.id  # the lease runs out as before


def test_restore_applies_due_leases_and_windows_with_the_next_call() -> None:
    env = Environment("env_1", profile=ACK_LEASE)  # (the ack's lease running out is the point)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.create(T0, session_id="sesn_2", work_id="work_2")
    env.poll(T0)
    env.ack("work_2", T0)
    copy = restored(env)
    assert copy.stats(at(200)).depth == 2
    assert copy.get("work_2", at(200)).stopped_at is None
    assert copy.get("work_2", at(200)).touched_at == at(120) + dt.timedelta(microseconds=1)


def test_restore_orders_stopped_items_by_stopping_time_for_retention() -> None:
    env = Environment("env_1")
    for name in ("a", "b", "c"):
        env.create(T0, session_id=f"sesn_{name}", work_id=f"work_{name}")
    env.stop("work_c", at(1), force=True)
    env.stop("work_a", at(2), force=True)
    env.stop("work_b", at(3), force=True)
    copy = restored(env, retain_stopped=1)
    assert ids(copy, at(4)) == ["work_b"]


def test_restore_rebuilds_pollers_and_cursors() -> None:
    env = Environment("env_1", retain_stopped=0)
    for i in range(4):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}")
    env.poll(T0, worker_id="w1")
    env.poll(at(1), worker_id="w2")
    env.stop("work_1", at(1), force=True)
    page = env.list(at(2), limit=2)
    copy = restored(env, retain_stopped=0)
    assert copy.stats(at(2)).workers_polling == 2
    assert copy.stats(at(30.5)).workers_polling == 1
    assert page.next_page is not None
    assert [w.id for w in copy.list(at(31), page=page.next_page).data] == ["work_3"]


def good_items() -> tuple[EnvironmentState, tuple[ItemState, ...]]:
    env = Environment("env_1")
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.create(at(1), session_id="sesn_2", work_id="work_2")
    env.poll(at(1))
    return env.state(), env.item_states()


AT_2 = at(2)


def restore_error(
    state: object, items: object, now: dt.datetime = AT_2, **kwargs: Any
) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        Environment.restore("env_1", now=now, state=state, items=items, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == 400
    assert "cannot restore environment env_1" in info.value.message
    return info.value


def test_restore_rejects_a_bad_environment_state() -> None:
    state, items = good_items()
    assert restore_error(None, items).key == "state"
    for field, value, key in [
        ("id_counter", -1, "state.id_counter"),
        ("next_seq", "2", "state.next_seq"),
        ("named_poll_seen", 1, "state.named_poll_seen"),
        ("pollers", [], "state.pollers"),
        ("pollers", {"": T0}, "state.pollers"),
        ("pollers", {"w1": "now"}, "state.pollers.w1"),
        ("pollers", {"w1": at(3)}, "state.pollers.w1"),
        ("pollers", {"w1": T0}, "state.named_poll_seen"),
    ]:
        bad = attrs.evolve(state, **{field: value})
        assert restore_error(bad, items).key == key, field


def test_restore_rejects_bad_items() -> None:
    state, (one, two) = good_items()
    other_env = attrs.evolve(one.work, body=attrs.evolve(one.work.body, environment_id="env_2"))
    broken = attrs.evolve(one.work, state=State.ACTIVE)  # no heartbeat, no lease: invariants
    cases: list[tuple[object, str]] = [
        ((one, "x"), "items[1]"),
        ((one, attrs.evolve(two, work="w")), "items[1]"),
        ((attrs.evolve(one, work=other_env),), "items[0].environment_id"),
        ((one, attrs.evolve(one, seq=1)), "items[1].id"),
        ((one, attrs.evolve(two, seq=0)), "items[1].seq"),
        ((one, attrs.evolve(two, seq=2)), "items[1].seq"),
        ((one, attrs.evolve(two, seq=True)), "items[1].seq"),
        ((attrs.evolve(one, work=broken),), "items[0].acknowledged_at"),
        ((one, two), "items[0].touched_at"),  # now=T0, before the poll at 1 s
        ((attrs.evolve(one, window_until=T0), two), "items[0].window_until"),  # before delivery
        ((one, attrs.evolve(two, window_until="soon")), "items[1].window_until"),
        ((one, attrs.evolve(two, window_until=at(9))), "items[1].window_until"),  # not delivered
        ((attrs.evolve(one, seq=1), attrs.evolve(two, seq=0)), "items.seq"),
    ]
    for items, key in cases:
        now = T0 if key == "items[0].touched_at" else at(2)
        assert restore_error(state, items, now).key == key, key
    assert restore_error(state, (one, two), profile=QODER).key == "items[0].profile"


def test_a_restored_environment_answers_as_before_to_every_rejection() -> None:
    env = Environment("env_1", profile=QODER)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0, worker_id="w1")
    copy = restored(env)
    for e in (env, copy):
        with pytest.raises(IllegalMoveError):
            e.ack("work_1", at(1), worker_id="w2")
        e.ack("work_1", at(1), worker_id="w1")
        with pytest.raises(PreconditionFailedError):
            e.heartbeat("work_1", at(2), expected_last_heartbeat="2020-01-01T00:00:00Z")
    assert full(copy) == full(env)


def test_a_fresh_id_lets_the_store_drop_the_old_ids_record() -> None:
    env = Environment("env_1", profile=FRESH_IDS, track_changes=True)
    first = env.create(T0, session_id="sesn_1")
    env.poll(T0)
    env.take_changes()
    again = env.poll(at(5))  # unacknowledged for the default window: handed out anew
    assert again is not None
    assert again.id != first.id
    changes = env.take_changes()
    assert changes.dropped == (first.id,)
    assert [(i.work.id, i.seq, i.window_until) for i in changes.items] == [(again.id, 0, at(10))]
    assert changes.state == env.state()  # the id counter moved
    copy = restored(env)
    assert full(copy) == full(env)
    assert copy.poll(at(7), reclaim_older_than_ms=2000) is not None  # the window still counts


def test_on_drop_hears_of_an_old_id_with_the_item_under_its_new_one() -> None:
    heard: list[tuple[str, str | None]] = []
    env = Environment(
        "env_1", profile=FRESH_IDS, on_drop=lambda w, r: heard.append((w.id, r and r.id))
    )
    first = env.create(T0, session_id="sesn_1")
    env.poll(T0)
    again = env.poll(at(5))
    assert again is not None
    assert heard == [(first.id, again.id)]
    # Restored, it keeps telling (an old record's hook is the caller's to give again).
    copy = Environment.restore(
        "env_1",
        now=at(5),
        state=env.state(),
        items=env.item_states(),
        profile=FRESH_IDS,
        on_drop=lambda w, r: heard.append((w.id, r and r.id)),
    )
    third = copy.poll(at(10))
    assert third is not None
    assert heard[1:] == [(again.id, third.id)]


def test_a_restored_delivery_is_reclaimed_by_the_polls_own_window() -> None:
    env = Environment("env_1")
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0)
    env.create(at(1), session_id="sesn_2", work_id="work_2")
    env.poll(at(1))
    copy = restored(env)
    assert copy.stats(at(2)) == env.stats(at(2))
    assert (copy.stats(at(2)).depth, copy.stats(at(2)).pending) == (0, 2)
    assert copy.next_change_at() == env.next_change_at() == at(5)
    assert copy.poll(at(2), reclaim_older_than_ms=3000) is None
    got = copy.poll(at(3), reclaim_older_than_ms=2000)  # the oldest delivery, by this window
    assert got is not None
    assert got.id == "work_1"
    late = copy.stats(at(6))
    assert (late.depth, late.pending) == (1, 1)  # work_2's default window ended at 6 s
