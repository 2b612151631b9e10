"""The cells mutation testing found unguarded: each pins one number or rule exactly."""

from __future__ import annotations

import datetime as dt

import pytest
from helpers import T0, at

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    IllegalMoveError,
    InvalidInputError,
    Profile,
    Work,
)
from workstate._environment import Environment
from workstate.worker import EndReason, LeaseKeeper, PollAction, PollLoop


def env_with(n: int) -> Environment:
    env = Environment("env_1")
    for i in range(n):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}")
    return env


def test_the_default_page_holds_twenty_items() -> None:
    env = env_with(25)
    page = env.list(T0)
    assert len(page.data) == 20
    assert page.next_page is not None
    assert len(env.list(T0, page=page.next_page).data) == 5


def test_a_cursor_at_the_last_item_is_an_empty_page_and_one_past_it_is_400() -> None:
    env = env_with(3)
    assert env.list(T0, page=env._encode_cursor(2)).data == ()
    with pytest.raises(InvalidInputError) as info:
        env.list(T0, page=env._encode_cursor(3))
    assert (info.value.status, info.value.key) == (400, "page")


@pytest.mark.parametrize(
    ("profile", "error_type"),
    [(ANTHROPIC, "conflict_error"), (QODER, "invalid_request_error")],
    ids=["anthropic", "qoder"],
)
def test_an_expire_before_the_deadline_has_the_profiles_409_type(
    profile: Profile, error_type: str
) -> None:
    w = Work.create(id="work_1", environment_id="env_1", session_id="s", now=T0, profile=profile)
    w, _ = w.ack(at(1)).heartbeat(at(1), expected_last_heartbeat=NO_HEARTBEAT)
    with pytest.raises(IllegalMoveError) as info:
        w.expire(w.lease_expires_at)  # type: ignore[arg-type]
    assert (info.value.status, info.value.error_type) == (409, error_type)


def test_a_desired_ttl_of_one_is_raised_to_the_minimum() -> None:
    w = Work.create(id="work_1", environment_id="env_1", session_id="s", now=T0).ack(at(1))
    w, beat = w.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=1)
    assert (beat.ttl_seconds, w.lease_expires_at) == (10, at(12))


def test_a_no_change_heartbeat_reports_the_items_own_ttl() -> None:
    w = Work.create(id="work_1", environment_id="env_1", session_id="s", now=T0).ack(at(1))
    w, _ = w.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=30)
    stopping = w.stop(at(3))
    _, quiet = stopping.heartbeat(at(4))
    assert (quiet.ttl_seconds, quiet.lease_extended) == (30, False)


def test_sixteen_pairs_and_one_new_key_is_400_but_a_changed_one_is_not() -> None:
    full = {f"k{i}": "v" for i in range(16)}
    w = Work.create(id="work_1", environment_id="env_1", session_id="s", now=T0, metadata=full)
    with pytest.raises(InvalidInputError) as info:
        w.update_metadata(at(1), {"new": "v"})
    assert (info.value.status, info.value.key) == (400, "metadata")
    assert w.update_metadata(at(1), {"k0": "changed"}).metadata["k0"] == "changed"
    assert len(w.update_metadata(at(1), {"k0": None, "new": "v"}).metadata) == 16


def test_the_lease_is_assumed_lost_one_ttl_after_an_ack_at_any_start_time() -> None:
    keeper = LeaseKeeper(work_id="work_1").acked(now=1000.0)
    assert keeper.tick(now=1090.0).end_reason is None  # the assumed 90 s, boundary included
    lost = keeper.tick(now=1090.001)
    assert lost.end_reason is EndReason.LEASE_ASSUMED_LOST


def test_an_ack_failure_keeps_its_last_status() -> None:
    loop = PollLoop().delivered().ack_failed(status=503, random=lambda: 0.5)
    assert (loop.next_action, loop.last_error_status, loop.ack_failures) == (
        PollAction.POLL,
        503,
        1,
    )
    stop = loop.delivered().ack_failed(status=404, random=lambda: 0.5)
    assert (stop.next_action, stop.last_error_status, stop.ack_failures) == (
        PollAction.FORCE_STOP,
        404,
        1,
    )
    assert stop.force_stopped().last_error_status == 404
    timeout = loop.delivered().ack_failed(random=lambda: 0.5)
    assert (timeout.last_error_status, timeout.ack_failures) == (None, 2)


def test_a_lease_past_the_year_9999_is_refused_in_full() -> None:
    late = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
    w = Work.create(id="work_1", environment_id="env_1", session_id="s", now=late).ack(late)
    with pytest.raises(InvalidInputError) as info:
        w.heartbeat(late, expected_last_heartbeat=NO_HEARTBEAT)
    error = info.value
    assert (error.key, error.got) == ("now", late)
    assert error.message == (
        "a lease of 120 s from 9999-12-31T23:59:00.000000Z would end after the year 9999"
    )
    assert error.expected == "a time more than 120 s before 9999-12-31T23:59:59.999999Z"
