"""Environment: what mutation testing found unguarded (``scripts/mutation.py _environment``).

Only the public API is used (``Environment`` methods, ``QueueStats``, ``WorkPage``, the
errors), so these tests hold for any implementation of the indexes behind it.  The expected
values are written from the spec (§1, §3, §5, §7, §8) and ``docs/server-guide.md``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import attrs
import pytest

from workstate import ANTHROPIC, QODER, IllegalMoveError, InvalidInputError, State
from workstate._environment import Environment, EnvironmentChanges, EnvironmentState, ItemState

T0 = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_a_new_environment_is_empty() -> None:
    env = Environment("env_1")
    assert (len(env), env.latest_now, "work_1" in env) == (0, None, False)


# =================================================================== restore: every rejection whole
def good_records() -> tuple[EnvironmentState, ItemState, ItemState]:
    """work_1 created at T0 and delivered at 1 s (its window ends at 6 s), work_2 created at 1 s."""
    env = Environment("env_1")
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.create(at(1), session_id="sesn_2", work_id="work_2")
    env.poll(at(1))
    one, two = env.item_states()
    return env.state(), one, two


STATE, ONE, TWO = good_records()
AT_2 = at(2)
PREFIX = "cannot restore environment env_1: "
LATE = dt.datetime(2026, 7, 1, 8, 0, 3, tzinfo=dt.UTC)


def restore_rejects(
    state: object, items: object, *, now: dt.datetime = AT_2, **fields: Any
) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        Environment.restore("env_1", now=now, state=state, items=items)  # type: ignore[arg-type]
    err = info.value
    assert (err.status, err.error_type) == (400, "invalid_request_error")
    for name, value in fields.items():
        assert getattr(err, name) == value, (name, getattr(err, name), value)
    return err


@pytest.mark.parametrize(
    ("change", "key", "expected", "got", "message"),
    [
        ({"id_counter": -1}, "state.id_counter", "an integer >= 0", -1, "got -1"),
        ({"next_seq": "2"}, "state.next_seq", "an integer >= 0", "2", "got '2'"),
        ({"named_poll_seen": 1}, "state.named_poll_seen", "true or false", 1, "got 1"),
        ({"pollers": []}, "state.pollers", "a mapping of worker ids to times", [], "got []"),
        ({"pollers": {"": T0}}, "state.pollers", "keyed by non-empty worker ids", "", "got ''"),
        (
            {"pollers": {"w1": "now"}},
            "state.pollers.w1",
            "an aware time at or before 2026-07-01T08:00:02.000000Z",
            "now",
            "got 'now'",
        ),
        (
            {"pollers": {"w1": T0}},
            "state.named_poll_seen",
            "true when pollers are recorded",
            False,
            "got False",
        ),
    ],
)
def test_restore_names_the_bad_state_field_and_what_it_must_be(
    change: dict[str, Any], key: str, expected: str, got: object, message: str
) -> None:
    restore_rejects(
        attrs.evolve(STATE, **change),
        (ONE, TWO),
        key=key,
        expected=expected,
        got=got,
        work_id=None,
        message=f"{PREFIX}{key} must be {expected}, {message}",
    )


def test_restore_names_a_state_that_is_no_environment_state() -> None:
    restore_rejects(
        {"id_counter": 0},
        (),
        key="state",
        expected="an EnvironmentState",
        got={"id_counter": 0},
        message=f"{PREFIX}state must be an EnvironmentState, got dict",
    )


def test_restore_names_a_poller_time_after_now() -> None:
    restore_rejects(
        attrs.evolve(STATE, pollers={"w1": LATE}, named_poll_seen=True),
        (ONE, TWO),
        key="state.pollers.w1",
        got=LATE,
        expected="an aware time at or before 2026-07-01T08:00:02.000000Z",
    )


def test_restore_names_an_item_that_is_no_item_state() -> None:
    restore_rejects(
        STATE,
        (ONE, "x"),
        key="items[1]",
        expected="an ItemState(work=Work(...), seq=..., window_until=...)",
        got="x",
        work_id=None,
        message=f"{PREFIX}items[1] must be an ItemState holding a Work, got 'x'",
    )


def test_restore_names_an_item_of_another_environment() -> None:
    work = attrs.evolve(ONE.work, body=attrs.evolve(ONE.work.body, environment_id="env_2"))
    restore_rejects(
        STATE,
        (attrs.evolve(ONE, work=work),),
        key="items[0].environment_id",
        expected="env_1",
        got="env_2",
        work_id="work_1",
        message=f"{PREFIX}item 'work_1' belongs to environment 'env_2'",
    )


def test_restore_names_an_item_of_another_profile() -> None:
    with pytest.raises(InvalidInputError) as info:
        Environment.restore("env_1", now=at(2), state=STATE, items=(ONE, TWO), profile=QODER)
    err = info.value
    assert (err.key, err.expected, err.got, err.work_id, err.message) == (
        "items[0].profile",
        "qoder",
        "anthropic",
        "work_1",
        f"{PREFIX}item 'work_1' follows profile 'anthropic', not 'qoder'",
    )


def test_restore_names_a_duplicate_id() -> None:
    restore_rejects(
        STATE,
        (ONE, attrs.evolve(ONE, seq=1)),
        key="items[1].id",
        expected="each work id once",
        got="work_1",
        work_id="work_1",
        message=f"{PREFIX}item 'work_1' appears twice",
    )


def test_restore_names_a_sequence_number_past_next_seq() -> None:
    restore_rejects(
        STATE,
        (ONE, attrs.evolve(TWO, seq=2)),
        key="items[1].seq",
        expected="a sequence number from 0 to 1 (state.next_seq - 1), each once",
        got=2,
        work_id="work_2",
        message=f"{PREFIX}item 'work_2' has the sequence number 2",
    )


def test_restore_names_a_broken_invariant() -> None:
    broken = attrs.evolve(ONE.work, state=State.ACTIVE)  # no ack time, no lease
    restore_rejects(
        STATE,
        (attrs.evolve(ONE, work=broken),),
        key="items[0].acknowledged_at",
        expected="valid records",
        got=broken,
        work_id="work_1",
        message=f"{PREFIX}item 'work_1' breaks an invariant: acknowledged_at is null in state "
        "active, where it must be set",
    )


def test_restore_names_an_item_changed_after_now() -> None:
    restore_rejects(
        STATE,
        (ONE, TWO),
        now=T0,
        key="items[0].touched_at",
        expected="a time at or before 2026-07-01T08:00:00.000000Z",
        got=at(1),
        work_id="work_1",
        message=f"{PREFIX}item 'work_1' changed at 2026-07-01T08:00:01.000000Z, after now "
        "(2026-07-01T08:00:00.000000Z)",
    )


WINDOW = "a time at or after delivered_at on a delivered queued item, or None"


def test_restore_names_a_window_on_an_undelivered_item() -> None:
    restore_rejects(
        STATE,
        (ONE, attrs.evolve(TWO, window_until=at(9))),
        key="items[1].window_until",
        expected=WINDOW,
        got=at(9),
        work_id="work_2",
        message=f"{PREFIX}item 'work_2' has a redelivery window ({at(9)!r}) but is queued and "
        "delivered at None",
    )


def test_restore_names_a_naive_window_or_one_on_an_acked_item() -> None:
    naive = at(6).replace(tzinfo=None)
    restore_rejects(
        STATE, (attrs.evolve(ONE, window_until=naive), TWO), key="items[0].window_until"
    )
    env = Environment("env_1")
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0)
    env.ack("work_1", at(1))
    (acked,) = env.item_states()
    restore_rejects(
        env.state(),
        (attrs.evolve(acked, window_until=at(5)),),
        key="items[0].window_until",
        got=at(5),
        message=f"{PREFIX}item 'work_1' has a redelivery window ({at(5)!r}) but is starting and "
        "delivered at None",
    )


def test_restore_accepts_a_window_that_ends_at_the_delivery() -> None:
    # "at or after delivered_at": a window of zero length is a window that already ended.
    copy = Environment.restore(
        "env_1", now=at(2), state=STATE, items=(attrs.evolve(ONE, window_until=at(1)), TWO)
    )
    assert copy.poll(at(2), reclaim_older_than_ms=1000).id == "work_1"  # type: ignore[union-attr]


def test_restore_names_sequence_numbers_out_of_creation_order() -> None:
    restore_rejects(
        STATE,
        (attrs.evolve(ONE, seq=1), attrs.evolve(TWO, seq=0)),
        key="items.seq",
        expected="sequence numbers in created_at order",
        got=1,
        work_id="work_1",
        message=f"{PREFIX}item 'work_1' (seq 1) was created before item 'work_2' (seq 0); "
        "sequence is creation order",
    )


# =================================================================== restore: the options count
def test_restore_passes_every_option_on() -> None:
    source = Environment("env_1", seed=7, retain_stopped_seconds=10)
    source.create(T0, session_id="sesn_a")
    copy = Environment.restore(
        "env_1",
        now=T0,
        state=source.state(),
        items=source.item_states(),
        seed=7,
        retain_stopped_seconds=10,
    )
    # The same seed: the same next ids.
    assert copy.create(T0, session_id="sesn_b").id == source.create(T0, session_id="sesn_b").id
    # The same age bound: stopped 10 s ago is kept, 10.5 s ago is dropped.
    for env in (source, copy):
        stopped = env.stop(env.list(T0).data[0].id, T0, force=True)
        assert stopped.id in env
        env.stats(at(10))
        assert stopped.id in env
        env.stats(at(10.5))
        assert stopped.id not in env
    with pytest.raises(InvalidInputError):
        copy.take_changes()  # track_changes defaults to False, as for a new environment


def test_restore_uses_the_id_factory_it_is_given() -> None:
    copy = Environment.restore(
        "env_1", now=at(2), state=STATE, items=(ONE, TWO), id_factory=lambda prefix: prefix + "x"
    )
    assert copy.create(at(2), session_id="sesn_3").id == "work_x"


def test_a_restored_tracking_environment_starts_with_no_changes() -> None:
    copy = Environment.restore(
        "env_1", now=at(2), state=STATE, items=(ONE, TWO), track_changes=True
    )
    changes = copy.take_changes()
    assert changes == EnvironmentChanges(state=None, items=(), dropped=())
    assert not changes


def test_restored_pollers_age_out_by_their_own_times() -> None:
    # "a" polled at 20 s, "b" at 0 s: at 31 s only "a" polled in the last 30 s (spec §1),
    # whatever order the store handed them back in.
    state = attrs.evolve(STATE, named_poll_seen=True, pollers={"a": at(20), "b": at(0)})
    copy = Environment.restore("env_1", now=at(20), state=state, items=(ONE, TWO))
    assert copy.stats(at(20)).workers_polling == 2
    assert copy.stats(at(31)).workers_polling == 1


# =================================================================== changes
@pytest.mark.parametrize(
    ("state", "items", "dropped", "truth"),
    [
        (None, (), (), False),
        (STATE, (), (), True),
        (None, (ONE,), (), True),
        (None, (), ("work_9",), True),
    ],
)
def test_changes_are_true_when_anything_changed(
    state: EnvironmentState | None,
    items: tuple[ItemState, ...],
    dropped: tuple[str, ...],
    truth: bool,
) -> None:
    assert bool(EnvironmentChanges(state=state, items=items, dropped=dropped)) is truth


def test_take_changes_without_tracking_says_how_to_build_the_environment() -> None:
    env = Environment("env_1")
    with pytest.raises(InvalidInputError) as info:
        env.take_changes()
    err = info.value
    assert (err.status, err.error_type, err.key, err.expected, err.got, err.message) == (
        400,
        "invalid_request_error",
        "track_changes",
        "Environment(..., track_changes=True)",
        False,
        "take_changes needs an environment built with track_changes=True",
    )


# =================================================================== time, listing, next change
def test_expire_due_counts_as_seen() -> None:
    env = Environment("env_1")
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.expire_due(at(10))
    assert env.latest_now == at(10)
    with pytest.raises(InvalidInputError) as info:
        env.get("work_1", at(5))
    assert info.value.key == "now"


def test_a_bad_limit_names_the_range_and_what_was_sent() -> None:
    env = Environment("env_1")
    with pytest.raises(InvalidInputError) as info:
        env.list(T0, limit=1001)
    err = info.value
    assert (err.key, err.expected, err.got, err.message) == (
        "limit",
        "an integer from 1 to 1000",
        1001,
        "limit must be an integer from 1 to 1000, got 1001",
    )


def test_a_page_followed_only_by_dropped_items_is_the_last() -> None:
    env = Environment("env_1", retain_stopped=0)
    for n in (1, 2, 3):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
    env.stop("work_3", T0, force=True)  # dropped by the next call
    page = env.list(T0, limit=2)
    assert ([w.id for w in page.data], page.next_page) == (["work_1", "work_2"], None)
    assert "work_3" not in env


def test_next_change_at_with_a_window_of_zero_is_the_delivery_itself() -> None:
    env = Environment("env_1", profile=QODER)  # qoder accepts reclaim_older_than_ms=0
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(at(1))
    assert env.next_change_at(reclaim_older_than_ms=0) == at(1)
    assert env.next_change_at() == at(6)  # the profile's default window, 5 s


# =================================================================== many stale entries
# Past about a thousand stale index entries the environment rebuilds its indexes; these runs go
# past that point and check, through the public API only, that nothing live was lost.
MANY = 1100


def test_the_oldest_queued_item_survives_many_acks() -> None:
    env = Environment("env_1", profile=QODER)  # qoder: an ack starts a lease of 60 s
    for n in range(MANY):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
    for _ in range(MANY):
        work = env.poll(T0)
        assert work is not None
        env.ack(work.id, T0)
    env.create(at(1), session_id="sesn_x", work_id="work_x")
    assert env.stats(at(1)).oldest_queued_at == at(1)
    # Every lease lapses at 60 s: the acked items are queued again, oldest first.
    assert env.stats(at(61)).oldest_queued_at == T0
    assert env.stats(at(61)).depth == MANY + 1
    assert env.poll(at(61)).id == "work_0"  # type: ignore[union-attr]


def test_the_first_item_is_handed_out_after_many_queued_items_stopped() -> None:
    env = Environment("env_1")
    env.create(T0, session_id="sesn_first", work_id="work_first")
    for n in range(MANY):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
        env.stop(f"work_{n}", T0, force=True)
    assert env.poll(at(1)).id == "work_first"  # type: ignore[union-attr]
    assert env.poll(at(1)) is None


def test_every_live_item_is_handed_out_after_many_were_stopped_and_dropped() -> None:
    env = Environment("env_1", retain_stopped=0)
    live = []
    for n in range(MANY):
        env.create(at(n / 1000), session_id=f"sesn_{n}", work_id=f"work_{n}")
        if n % 10:
            env.stop(f"work_{n}", at(n / 1000), force=True)
        else:
            live.append(n)
    handed = []
    while (work := env.poll(at(2))) is not None:
        handed.append(work.id)
    assert handed == [f"work_{n}" for n in live]
    assert env.stats(at(2)).depth == 0
    # Acked oldest first, the oldest queued item is each time the next live one.
    for k, n in enumerate(live):
        assert env.stats(at(2)).oldest_queued_at == at(n / 1000)
        env.ack(f"work_{n}", at(2))
        assert k + 1 < len(live) or env.stats(at(2)).oldest_queued_at is None


def test_a_new_item_is_handed_out_after_many_queued_items_stopped() -> None:
    env = Environment("env_1")
    for n in range(MANY):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
        env.stop(f"work_{n}", T0, force=True)
    env.create(at(1), session_id="sesn_x", work_id="work_x")
    assert env.poll(at(1)).id == "work_x"  # type: ignore[union-attr]


def test_a_lease_renewed_many_times_still_lapses() -> None:
    env = Environment("env_1", profile=QODER)
    for n in (1, 2):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
        env.poll(T0)
        env.ack(f"work_{n}", T0)  # qoder: a lease of 60 s from the ack
    last = T0
    for n in range(1, MANY + 1):
        last = at(n / 100)
        env.heartbeat("work_1", last)
    # work_2's one lease lapses at 60 s, work_1's last renewal at 71 s, whenever the
    # environment tidied its deadlines in between.
    assert env.get("work_2", at(60)).state is State.STARTING
    assert env.get("work_2", at(61)).state is State.QUEUED
    assert env.get("work_1", last + dt.timedelta(seconds=60)).state is State.ACTIVE
    assert env.get("work_1", last + dt.timedelta(seconds=61)).state is State.QUEUED


def test_the_next_change_after_many_acked_deliveries_is_the_live_ones() -> None:
    env = Environment("env_1")  # anthropic: an ack starts no lease, so only windows count
    for n in range(MANY):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
        env.poll(T0)
        env.ack(f"work_{n}", T0)
    env.create(at(1), session_id="sesn_x", work_id="work_x")
    env.poll(at(1))
    assert env.next_change_at() == at(6)
    assert env.stats(at(2)).pending == 1


def test_a_fresh_id_on_redelivery_is_an_api_work_id() -> None:
    fresh = attrs.evolve(ANTHROPIC, name="fresh-ids", fresh_id_on_redelivery=True)
    env = Environment("env_1", profile=fresh)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0)
    again = env.poll(at(5))
    assert again is not None
    assert re.fullmatch(r"work_[0-9A-Za-z]{24}", again.id)
    assert "work_1" not in env
    assert again.id in env


# =================================================================== ids and cursors
def test_the_id_counter_counts_the_generated_ids() -> None:
    env = Environment("env_1")
    env.create(T0, session_id="sesn_1")  # one generated id: the work id
    assert env.state().id_counter == 1
    env.create(T0)  # two: the work id and the session id
    assert env.state().id_counter == 3
    env.create(T0, session_id="sesn_2", work_id="work_given")  # none
    assert env.state().id_counter == 3


def test_a_cursor_with_url_safe_characters_is_accepted() -> None:
    # This environment's cursors carry a "-" (the URL-safe alphabet of base 64).
    env = Environment("env_cursor")
    for n in range(3):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
    first = env.list(T0, limit=1)
    assert first.next_page is not None
    assert "-" in first.next_page
    assert [w.id for w in env.list(T0, limit=1, page=first.next_page).data] == ["work_1"]


def test_a_cursor_with_a_character_outside_base64_is_refused() -> None:
    env = Environment("env_1")
    for n in range(3):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
    cursor = env.list(T0, limit=1).next_page
    assert cursor is not None
    bad = cursor[:4] + "!" + cursor[4:]
    with pytest.raises(InvalidInputError) as info:
        env.list(T0, limit=1, page=bad)
    err = info.value
    assert (err.key, err.got, err.message) == (
        "page",
        bad,
        f"page '{bad}' is not a cursor this API returned; pass the next_page of an earlier "
        "answer, or omit it",
    )


def test_a_page_that_is_no_string_names_its_type() -> None:
    env = Environment("env_1")
    with pytest.raises(InvalidInputError) as info:
        env.list(T0, page=5)  # type: ignore[arg-type]
    err = info.value
    assert (err.key, err.expected, err.got, err.message) == (
        "page",
        "the next_page of an earlier listing, or omitted",
        5,
        "page must be a string, got int; pass the next_page of an earlier answer, or omit it",
    )


def test_a_cursor_of_another_environment_is_refused() -> None:
    other, env = Environment("env_2"), Environment("env_1")
    for e in (other, env):
        for n in range(3):
            e.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
    cursor = other.list(T0, limit=1).next_page
    assert cursor is not None
    with pytest.raises(InvalidInputError) as info:
        env.list(T0, limit=1, page=cursor)
    err = info.value
    assert (err.key, err.expected, err.got, err.message) == (
        "page",
        "the next_page of an earlier listing, or omitted",
        cursor,
        f"page '{cursor}' is not a cursor of this environment's listing; pass the next_page of "
        "an earlier answer, or omit it",
    )


def test_many_acked_reclaims_keep_the_live_delivery() -> None:
    env = Environment("env_1")
    for n in range(MANY + 1):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
        env.poll(T0)
    assert env.poll(at(5)).id == "work_0"  # type: ignore[union-attr]  # reclaimed: 5 s old
    for n in range(1, MANY):
        env.ack(f"work_{n}", at(5))
    # work_<MANY> is the one delivery of T0 nobody acked: the next poll reclaims it.
    assert env.poll(at(6)).id == f"work_{MANY}"  # type: ignore[union-attr]


def test_a_new_item_counts_after_many_stopped_items_were_dropped() -> None:
    env = Environment("env_1", retain_stopped=0)
    for n in range(MANY):
        env.create(T0, session_id=f"sesn_{n}", work_id=f"work_{n}")
        env.stop(f"work_{n}", T0, force=True)
    env.create(at(1), session_id="sesn_x", work_id="work_x")  # the stopped ones go first
    assert len(env) == 1
    assert env.stats(at(1)).oldest_queued_at == at(1)
    assert env.poll(at(1)).id == "work_x"  # type: ignore[union-attr]


# =================================================================== the rejections of a call
def test_a_worker_id_is_up_to_256_characters() -> None:
    env = Environment("env_1")
    env.poll(T0, worker_id="w" * 256)
    with pytest.raises(InvalidInputError) as info:
        env.poll(T0, worker_id="w" * 257)
    assert info.value.key == "worker_id"
    with pytest.raises(InvalidInputError) as info:
        env.poll(T0, worker_id="")
    assert info.value.key == "worker_id"
    assert env.stats(T0).workers_polling == 1


def test_a_work_id_that_is_no_string_names_its_type() -> None:
    env = Environment("env_1")
    with pytest.raises(InvalidInputError) as info:
        env.get(5, T0)  # type: ignore[arg-type]
    err = info.value
    assert (err.status, err.key, err.expected, err.got, err.message) == (
        400,
        "work_id",
        "a work id, 'work_...'",
        5,
        "work_id must be a string, got int",
    )


@pytest.mark.parametrize(
    ("kwargs", "key", "expected", "message"),
    [
        (
            {"block_ms": 0},
            "block_ms",
            "an integer from 1 to 999 (milliseconds), or omitted",
            "block_ms must be an integer from 1 to 999, got 0",
        ),
        (
            {"block_ms": 1000},
            "block_ms",
            "an integer from 1 to 999 (milliseconds), or omitted",
            "block_ms must be an integer from 1 to 999, got 1000",
        ),
        (
            {"reclaim_older_than_ms": 0},
            "reclaim_older_than_ms",
            "an integer >= 1 (milliseconds), or omitted",
            "reclaim_older_than_ms must be an integer >= 1, got 0",
        ),
    ],
)
def test_a_bad_poll_argument_names_what_was_sent_and_the_range(
    kwargs: dict[str, int], key: str, expected: str, message: str
) -> None:
    env = Environment("env_1")
    env.create(T0, session_id="sesn_1", work_id="work_1")
    with pytest.raises(InvalidInputError) as info:
        env.poll(T0, **kwargs)  # type: ignore[arg-type]
    err = info.value
    assert (err.key, err.expected, err.got, err.message) == (
        key,
        expected,
        next(iter(kwargs.values())),
        message,
    )
    assert env.stats(T0).depth == 1  # nothing was handed out
    assert env.poll(T0, block_ms=1) is not None  # the range's ends are accepted
    assert env.poll(T0, block_ms=999, reclaim_older_than_ms=1) is None


def test_a_repeated_poll_at_the_same_time_changes_nothing_a_store_keeps() -> None:
    env = Environment("env_1", track_changes=True)
    env.poll(T0, worker_id="w1")
    assert env.take_changes().state == env.state()
    env.poll(T0, worker_id="w1")  # the same worker at the same instant, nothing to hand out
    assert not env.take_changes()


# ------------------------------------------------------------------------------ retention bounds
RETAIN_COUNT = "an integer >= 0 (how many stopped items to keep), or None to keep all"
RETAIN_AGE = "a finite number of seconds >= 0, or None to keep stopped items whatever their age"


@pytest.mark.parametrize(
    ("options", "key", "expected", "got", "message"),
    [
        ({"retain_stopped": -1}, "retain_stopped", RETAIN_COUNT, -1,
         "retain_stopped must be an integer >= 0 or None, got -1"),
        ({"retain_stopped": 2.0}, "retain_stopped", RETAIN_COUNT, 2.0,
         "retain_stopped must be an integer >= 0 or None, got 2.0"),
        ({"retain_stopped": True}, "retain_stopped", RETAIN_COUNT, True,
         "retain_stopped must be an integer >= 0 or None, got True"),
        ({"retain_stopped_seconds": -0.5}, "retain_stopped_seconds", RETAIN_AGE, -0.5,
         "retain_stopped_seconds must be a finite number >= 0 or None, got -0.5"),
        ({"retain_stopped_seconds": float("inf")}, "retain_stopped_seconds", RETAIN_AGE,
         float("inf"), "retain_stopped_seconds must be a finite number >= 0 or None, got inf"),
        ({"retain_stopped_seconds": False}, "retain_stopped_seconds", RETAIN_AGE, False,
         "retain_stopped_seconds must be a finite number >= 0 or None, got False"),
        ({"retain_stopped_seconds": "60"}, "retain_stopped_seconds", RETAIN_AGE, "60",
         "retain_stopped_seconds must be a finite number >= 0 or None, got '60'"),
    ],
)  # fmt: skip
def test_a_bad_retention_bound_is_named_whole(
    options: dict[str, Any], key: str, expected: str, got: object, message: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        Environment("env_1", **options)
    err = info.value
    assert (err.status, err.error_type, err.key, err.expected, err.message) == (
        400,
        "invalid_request_error",
        key,
        expected,
        message,
    )
    assert err.got == got


@pytest.mark.parametrize("seconds", [0, 0.5, 10**30])
def test_any_finite_age_of_zero_or_more_is_a_retention_bound(seconds: float) -> None:
    # 0 drops every stopped item at once; a fraction of a second is kept as given; an age past
    # what a timedelta holds keeps every item (older than any item could be).
    env = Environment("env_1", retain_stopped_seconds=seconds)
    work = env.create(now=T0)
    env.stop(work.id, now=T0, force=True)
    env.create(now=at(0.25))  # any later call applies the bound
    kept = work.id in env
    assert kept is (seconds > 0.25)


@pytest.mark.parametrize(
    ("options", "key", "expected", "got", "message"),
    [
        ({"profile": "anthropic"}, "profile", "a workstate.Profile, e.g. workstate.ANTHROPIC",
         "anthropic", "profile must be a Profile, got str"),
        ({"seed": 1.5}, "seed", "an int, str or bytes", 1.5,
         "seed must be an int, str or bytes, got float"),
        ({"on_drop": "log"}, "on_drop", "a callable on_drop(work, renewed) or None", "log",
         "on_drop must be a callable or None, got str"),
    ],
)  # fmt: skip
def test_a_bad_profile_or_seed_is_named_whole(
    options: dict[str, Any], key: str, expected: str, got: object, message: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        Environment("env_1", **options)
    err = info.value
    assert (err.status, err.error_type, err.key, err.expected, err.got, err.message) == (
        400,
        "invalid_request_error",
        key,
        expected,
        got,
        message,
    )


# =================================================================== survivors of the current code
def test_the_store_records_are_still_exported_by_the_environment_module() -> None:
    import workstate._environment as module
    import workstate._environment_state as records

    # Asked at run time: the module hands them out on demand (see workstate._environment_state).
    from workstate._environment import EnvironmentChanges as changes
    from workstate._environment import EnvironmentState as state
    from workstate._environment import ItemState as item

    assert (changes, state, item) == (
        records.EnvironmentChanges,
        records.EnvironmentState,
        records.ItemState,
    )
    with pytest.raises(AttributeError) as info:
        module.Nope  # noqa: B018
    assert str(info.value) == "module 'workstate._environment' has no attribute 'Nope'"
    assert not hasattr(module, "QueueStat")


def test_repr_counts_before_any_call_and_with_a_delivery_pending() -> None:
    env = Environment("env_1")
    assert repr(env) == "<Environment env_1 profile=anthropic items=0 depth=0 pending=0>"
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0)
    assert repr(env) == "<Environment env_1 profile=anthropic items=1 depth=0 pending=1>"


def test_a_lease_at_its_exact_deadline_is_not_due_yet() -> None:
    env = Environment("env_1", profile=QODER)  # qoder: an ack starts a lease of 60 s
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0)
    deadline = env.ack("work_1", T0).lease_expires_at
    assert deadline == at(60)
    assert env.expiries_due(deadline) == 0
    assert env.expiries_due(deadline + dt.timedelta(microseconds=1)) == 1
    assert env.get("work_1", deadline).state is State.STARTING  # the latest time seen: the deadline
    assert env.next_change_at() == deadline + dt.timedelta(microseconds=1)
    stats = env.stats(deadline)  # the lease still holds: nothing is back in the queue
    assert (stats.depth, stats.pending, stats.oldest_queued_at) == (0, 0, None)
    stats = env.stats(deadline + dt.timedelta(microseconds=1))
    assert (stats.depth, stats.pending, stats.oldest_queued_at) == (1, 0, T0)


def test_a_poll_takes_the_lapsed_lease_not_one_at_its_exact_deadline() -> None:
    env = Environment("env_1", profile=QODER)  # qoder: an ack starts a lease of 60 s
    for i in range(6):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}")
    assert [env.poll(T0).id for _ in range(6)] == [f"work_{i}" for i in range(6)]  # type: ignore[union-attr]
    for i in range(1, 6):
        assert env.ack(f"work_{i}", T0).lease_expires_at == at(60)
    assert env.ack("work_0", at(10)).lease_expires_at == at(70)
    assert env.poll(at(60)) is None  # the leases hold at their deadline
    # At 70 s five leases have lapsed, more than one call's slice applies before the poll looks;
    # work_0's, older by creation, holds until its deadline has passed.
    got = env.poll(at(70))
    assert got is not None
    assert (got.id, got.state) == ("work_1", State.QUEUED)
    assert env.get("work_0", at(70)).state is State.STARTING


def test_an_id_factory_repeating_an_id_is_a_409_naming_it() -> None:
    env = Environment("env_1", id_factory=lambda prefix: prefix + "same")
    env.create(T0, session_id="sesn_1")
    with pytest.raises(IllegalMoveError) as info:
        env.create(at(1), session_id="sesn_2")
    err = info.value
    assert (err.status, err.error_type, err.work_id) == (409, "conflict_error", "work_same")
    assert str(err) == "work item 'work_same' already exists in environment env_1"
    assert [work.id for work in env.list(at(1)).data] == ["work_same"]


def test_a_worker_that_polled_exactly_30_s_ago_still_counts_as_polling() -> None:
    env = Environment("env_1")
    env.poll(T0, worker_id="A")  # a name that sorts before most strings
    assert env.stats(at(30)).workers_polling == 1
    assert env.stats(at(30) + dt.timedelta(microseconds=1)).workers_polling == 0


def test_a_create_after_take_changes_is_a_change_of_the_environment_state() -> None:
    env = Environment("env_1", track_changes=True)
    env.take_changes()  # the new environment itself
    env.create(T0, session_id="sesn_1", work_id="work_1")
    changes = env.take_changes()
    assert changes.state == EnvironmentState(id_counter=0, next_seq=1)
    assert [item.work.id for item in changes.items] == ["work_1"]
    env.create(at(1), session_id="sesn_2")  # a generated id moves the counter
    assert env.take_changes().state == EnvironmentState(id_counter=1, next_seq=2)


def test_a_time_gone_back_is_rejected_whole() -> None:
    env = Environment("env_1")
    env.stats(at(10))
    with pytest.raises(InvalidInputError) as info:
        env.stats(T0)
    err = info.value
    assert (err.status, err.error_type, err.key, err.got) == (
        400,
        "invalid_request_error",
        "now",
        T0,
    )
    assert err.expected == "a time at or after 2026-07-01T08:00:10.000000Z"
    assert str(err) == (
        "now (2026-07-01T08:00:00.000000Z) is earlier than the latest time this environment "
        "has seen (2026-07-01T08:00:10.000000Z); time never goes back"
    )
    assert env.latest_now == at(10)
