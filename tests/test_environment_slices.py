"""Lapsed leases applied lazily and in slices give the answers of an eagerly expired environment.

Three environments run the same random sequence of calls: *eager* applies every due expiry
(``expire_due(now)``) before each call, *sliced* applies at most a few now and then
(``expire_due(now, limit=k)``), *lazy* never calls ``expire_due`` at all.  Every answer (a
record, a page, the stats, the next change, an error's status, type and key) must be the same
in all three; at the end, once all three have applied everything, so must every item's state.
Each call applying a few lapsed leases on its way is switched off in one run, so that the lazy
paths are what answers.  Leases are short (10 s TTLs, time moving up to 40 s a step) so that
many lapse unapplied, often several at once, and the retention bound and the three profiles'
knobs all take part.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from helpers import ACK_LEASE, T0, at

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    InvalidInputError,
    Profile,
    WorkstateError,
    _environment,
)
from workstate._environment import Environment
from workstate._indexes import SeqSet, SortedKeys

US = dt.timedelta(microseconds=1)
WORKERS = (None, "w1", "w2")


def _answer(call: Any) -> Any:
    try:
        return ("ok", call())
    except WorkstateError as err:
        return ("error", type(err).__name__, err.status, err.error_type, getattr(err, "key", None))


def _call(env: Environment, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    def call() -> Any:
        if op == "stats":  # every question that time alone can change the answer to
            return (
                env.stats(*args),
                env.next_change_at(),
                env.next_change_at(reclaim_older_than_ms=10),
            )
        name = {"beat": "heartbeat", "meta": "update_metadata"}.get(op, op)
        return getattr(env, name)(*args, **kwargs)

    return call


def _run(seed: int, profile: Profile, retain: int | None, steps: int) -> None:
    rng = random.Random(seed)
    envs = [Environment("env_1", profile=profile, retain_stopped=retain) for _ in range(3)]
    eager, sliced, _lazy = envs
    now = T0
    ids: list[str] = []
    tokens: dict[str, str] = {}
    cursors: list[str | None] = [None]
    for step in range(steps):
        jump = rng.choice((0, 0, 1e-6, 0.5, 3, 5, 9, 11, 40))
        now += dt.timedelta(seconds=jump)
        eager.expire_due(now)
        if rng.random() < 0.3:
            sliced.expire_due(now, limit=rng.choice((1, 2, 3)))
        op = rng.choice(
            (
                "create",
                "poll",
                "poll",
                "ack",
                "beat",
                "beat",
                "stop",
                "get",
                "list",
                "stats",
                "meta",
            )
        )
        some = rng.choice(ids) if ids else "work_none"
        args: tuple[Any, ...] = (now,)
        kwargs: dict[str, Any] = {}
        if op == "poll":
            kwargs = {
                "worker_id": rng.choice(WORKERS),
                "reclaim_older_than_ms": rng.choice((None, 10, 2000, 5000, 60_000)),
            }
        elif op in ("ack", "get"):
            args = (some, now)
        elif op == "beat":
            token = rng.choice(
                (NO_HEARTBEAT, tokens.get(some, NO_HEARTBEAT), "2026-01-01T00:00:00Z")
            )
            args = (some, now)
            kwargs = {
                "expected_last_heartbeat": token,
                "desired_ttl_seconds": rng.choice((None, 10, 30)),
            }
        elif op == "stop":
            args, kwargs = (some, now), {"force": rng.random() < 0.4}
        elif op == "list":
            kwargs = {"limit": rng.choice((1, 3, 20)), "page": rng.choice(cursors)}
        elif op == "meta":
            args = (some, now, {"k": rng.choice(("a", "b", None))})
        answers = [_answer(_call(e, op, args, kwargs)) for e in envs]
        assert answers[1] == answers[0], (seed, step, op, answers)
        assert answers[2] == answers[0], (seed, step, op, answers)
        assert [len(e) for e in envs] == [len(eager)] * 3
        assert [some in e for e in envs] == [some in eager] * 3
        kind, value = answers[0][0], answers[0][-1]
        if kind == "ok" and op == "create":
            ids.append(value.id)
        elif kind == "ok" and op == "poll" and value is not None:
            ids.append(value.id)  # (a fresh id on re-hand-out is a new one)
        elif kind == "ok" and op == "beat":
            tokens[some] = value.last_heartbeat
        elif kind == "ok" and op == "list" and value.next_page is not None:
            cursors.append(value.next_page)
    for env in envs:
        env.expire_due(now)
    assert [e.item_states() for e in envs[1:]] == [eager.item_states()] * 2
    assert sliced.expiries_due(now) == 0


@pytest.mark.parametrize("per_call", [0, 4])
@pytest.mark.parametrize(
    ("profile", "retain"), [(ANTHROPIC, None), (ACK_LEASE, 2), (QODER, None), (ACK_LEASE, None)]
)
def test_sliced_and_lazy_expiry_answer_as_eager_expiry(
    profile: Profile, retain: int | None, per_call: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no expiry applied on the way (per_call=0) every lapsed lease stays for the lazy
    # paths to find; with the default a few are applied by each call.
    monkeypatch.setattr(_environment, "_SLICE_PER_CALL", per_call)
    for seed in range(40):
        _run(seed, profile, retain, 120)


def test_a_mass_expiry_applied_in_slices_is_never_seen_live() -> None:
    env = Environment("env_1", profile=ACK_LEASE)
    for _ in range(300):
        env.ack(env.create(T0).id, T0)  # 300 leases of 120 s from T0
    late = at(121)
    assert env.expiries_due(late) == 300
    assert env.stats(late).depth == 300  # lapsed: counted back in the queue already
    assert env.expiries_due(late) == 300 - 4  # (that call applied its own small slice)
    first = env.expire_due(late, limit=10)
    assert len(first) == 10
    assert [w.state.value for w in first] == ["queued"] * 10
    assert env.expiries_due(late) == 300 - 14
    # The oldest-created item comes out first, whichever expiries were applied.
    polled = env.poll(late)
    assert polled is not None
    assert polled.id == env.list(late, limit=1).data[0].id
    assert env.stats(late).depth == 299
    rest = env.expire_due(late)
    assert 0 < len(rest) < 300 - 14  # the calls since applied a few more on their way
    assert env.expiries_due(late) == 0


@pytest.mark.parametrize("retain", [None, 10])
def test_expire_due_returns_the_expiries_it_applied_by_deadline(retain: int | None) -> None:
    env = Environment("env_1", profile=ACK_LEASE, retain_stopped=retain)
    a, b = env.create(T0), env.create(T0)
    env.ack(b.id, T0)
    env.ack(a.id, at(1))
    stopping = env.create(at(1))
    env.ack(stopping.id, at(2))
    env.stop(stopping.id, at(2))
    got = env.expire_due(at(200), limit=1)
    expected = [(b.id, "queued")]  # the earliest deadline
    if retain is not None:  # and under a retention bound every lapsed stopping lease too
        expected.append((stopping.id, "stopped"))
    assert [(w.id, w.state.value) for w in got] == expected
    rest = [(a.id, "queued")] if retain else [(a.id, "queued"), (stopping.id, "stopped")]
    assert [(w.id, w.state.value) for w in env.expire_due(at(200))] == rest


def test_a_lapsed_stopping_lease_is_seen_stopped_before_it_is_applied() -> None:
    env = Environment("env_1", profile=ACK_LEASE)
    items = [env.create(T0) for _ in range(30)]
    for item in items:
        env.ack(item.id, T0)
        env.stop(item.id, T0)  # stopping; the leases lapse together after 120 s
    late = at(121)
    assert env.get(items[-1].id, late).state.value == "stopped"
    assert env.expiries_due(late) == 30 - 4 - 1  # that call's slice, and its own item
    assert [w.state.value for w in env.list(late, limit=30).data] == ["stopped"] * 30


def test_a_zero_limit_is_named_in_the_message() -> None:
    env = Environment("env_1")
    with pytest.raises(InvalidInputError, match=r"^limit must be an integer >= 1 or None, got 0$"):
        env.expire_due(T0, limit=0)
    assert env.latest_now is None


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2", True, None.__class__])
def test_expire_due_rejects_a_bad_limit(limit: object) -> None:
    env = Environment("env_1", profile=ACK_LEASE)
    env.ack(env.create(T0).id, T0)
    before = env.item_states(), env.latest_now
    with pytest.raises(InvalidInputError) as info:
        env.expire_due(at(500), limit=limit)  # type: ignore[arg-type]
    err = info.value
    assert (err.status, err.error_type, err.key) == (400, "invalid_request_error", "limit")
    assert err.expected == "an integer >= 1 (how many lapsed leases to apply), or None for all"
    assert err.got == limit
    assert str(err).startswith("limit must be an integer >= 1 or None, got ")
    assert (env.item_states(), env.latest_now) == before  # not even the time moved
    assert env.expiries_due(at(500)) == 1


def test_expiries_due_rejects_a_time_gone_back() -> None:
    env = Environment("env_1")
    env.create(at(5))
    with pytest.raises(InvalidInputError) as info:
        env.expiries_due(at(4))
    assert info.value.key == "now"
    assert env.latest_now == at(5)


def test_a_lapsed_stopping_lease_counts_for_retention_before_the_call() -> None:
    env = Environment("env_1", profile=ACK_LEASE, retain_stopped=1)
    old = env.create(T0)
    env.ack(old.id, T0)
    env.stop(old.id, T0)  # stopping; its lease lapses after 120 s
    young = env.create(at(200))
    env.stop(young.id, at(200), force=True)  # stopped at 200 s, after old (at 120 s + 1 µs)
    assert env.get(young.id, at(200)).state.value == "stopped"  # (the bound applies from here)
    assert old.id not in env  # old stopped first and was dropped by the bound


# ------------------------------------------------------------------ the indexes themselves
def test_seqset_against_a_set() -> None:
    rng = random.Random(7)
    s, ref = SeqSet(), set()
    for _ in range(20_000):
        n = rng.randrange(300_000) if rng.random() < 0.5 else rng.randrange(200)
        if rng.random() < 0.6:
            s.add(n)
            ref.add(n)
        else:
            s.discard(n)
            ref.discard(n)
        if rng.random() < 0.05:
            start = rng.randrange(300_001)
            assert s.next_from(start) == min((m for m in ref if m >= start), default=None)
            assert s.min() == min(ref, default=None)
            assert (n in s) == (n in ref)
    assert len(s) == len(ref)
    assert list(s.iter_from(0)) == sorted(ref)
    assert list(s.iter_from(150_000)) == sorted(m for m in ref if m >= 150_000)
    for n in list(ref):
        s.discard(n)
    assert (len(s), s.min(), s.next_from(0), list(s.iter_from(0))) == (0, None, None, [])
    assert 5 not in s
    assert 10**9 not in s
    s.discard(10**9)  # (absent, beyond every word: no effect)


def test_sortedkeys_against_a_sorted_list() -> None:
    rng = random.Random(8)
    keys, ref = SortedKeys(), []
    assert (keys.first(), keys.count_below((5, 0)), keys.min_seq_below((5, 0))) == (None, 0, None)
    for _ in range(6000):
        if ref and rng.random() < 0.45:
            key = ref.pop(rng.randrange(len(ref)))
            keys.remove(key)
        else:
            key = (rng.randrange(2000), rng.randrange(10**6))
            if key not in ref:
                keys.add(key)
                ref.append(key)
        if rng.random() < 0.1:
            bound = (rng.randrange(2100), -1)
            below = [k for k in ref if k < bound]
            assert keys.count_below(bound) == len(below)
            assert keys.min_seq_below(bound) == min((k[1] for k in below), default=None)
            assert keys.first() == min(ref, default=None)
    assert len(keys) == len(ref)
    assert [k for block in keys._blocks for k in block] == sorted(ref)
    assert all(len(block) <= 2 * SortedKeys.LOAD for block in keys._blocks)
    with pytest.raises(AssertionError, match="not in the index"):
        keys.remove((-5, -5))


def test_sortedkeys_splits_a_merged_block_that_grew_too_big() -> None:
    keys, load = SortedKeys(), SortedKeys.LOAD
    for n in range(3 * load):  # blocks of load and 2 * load keys, after one split
        keys.add((n, n))
    assert [len(b) for b in keys._blocks] == [load, 2 * load]
    for n in range(load - load // 4 + 1):  # the first block shrinks below load / 4: merged
        keys.remove((n, n))
    assert all(len(block) <= 2 * load for block in keys._blocks)
    assert [k for block in keys._blocks for k in block] == [
        (n, n) for n in range(load - load // 4 + 1, 3 * load)
    ]
    assert keys.min_seq_below((10**9, 0)) == load - load // 4 + 1


def test_stats_and_polls_near_the_year_1() -> None:
    early = dt.datetime(1, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    env = Environment("env_1")
    env.create(early)
    assert env.poll(early) is not None
    stats = env.stats(early)  # the default window reaches before year 1: still pending
    assert (stats.depth, stats.pending) == (0, 1)
    assert env.poll(early) is None


def test_pollers_that_left_the_window_together_are_forgotten_a_few_per_call() -> None:
    env = Environment("env_1")
    for i in range(300):
        env.poll(T0, worker_id=f"w{i}")
    env.poll(at(20), worker_id="w0")  # w0 polls again: its earlier poll is replaced
    stats = env.stats(at(31))
    assert stats.workers_polling == 1  # exact, though most are not forgotten yet
    assert 1 < len(env._pollers) < 300
    restored = Environment.restore(
        "env_1", now=at(31), state=env.state(), items=env.item_states()
    )  # (a store may get pollers not forgotten yet: they count for nothing)
    assert restored.stats(at(31)).workers_polling == 1
    for _ in range(10):
        env.stats(at(31))
    assert env._pollers == {"w0": at(20)}
    assert env.stats(at(51)).workers_polling == 0
