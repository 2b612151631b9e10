"""workstate.worker: what mutation testing found unguarded (``scripts/mutation.py worker``).

Every rejection is pinned whole here: status, error type, key, what would have been accepted
(``expected``), what was received (``got``), the item it concerns and the message, with the
machine unchanged.  The numbers are the spec's (§6) and the worker guide's: the bounds of a
monotonic time, the lease-assumed-lost rule when the lease did not start at time 0, the
validation of :class:`HeartbeatRules`, and a 412's ``current_state`` read tolerantly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from workstate import InvalidInputError, LeaseState, State, WorkstateError
from workstate.worker import (
    EndReason,
    Feed,
    HeartbeatRules,
    IllegalFeedError,
    KeeperState,
    LeaseKeeper,
    PollAction,
    PollFeed,
    PollLoop,
    backoff,
    is_retryable_status,
    jitter,
)

TOKEN = "2026-07-01T08:15:01.000000Z"
ANSWER = {
    "type": "work_heartbeat",
    "last_heartbeat": TOKEN,
    "lease_extended": True,
    "state": "active",
    "ttl_seconds": 120,
}
QUEUED = {"state": "queued", "last_heartbeat": None, "lease_extended": False, "ttl_seconds": 120}


def rejects(
    machine: LeaseKeeper | PollLoop | None,
    call: Callable[[], object],
    kind: type[WorkstateError],
    **fields: Any,
) -> None:
    """``call()`` raises exactly ``kind`` with ``fields``; ``machine`` is left as it was."""
    snapshot = None if machine is None else attrs.asdict(machine, recurse=False)
    with pytest.raises(kind) as info:
        call()
    err = info.value
    assert type(err) is kind
    for name, value in fields.items():
        assert getattr(err, name) == value, (name, getattr(err, name), value)
    if machine is not None:
        assert attrs.asdict(machine, recurse=False) == snapshot


def bad_input(**fields: Any) -> dict[str, Any]:
    return {"status": 400, "error_type": "invalid_request_error", **fields}


# =================================================================== times
@pytest.mark.parametrize("now", [-1e15, 1e15])
def test_the_extreme_times_are_accepted(now: float) -> None:
    assert LeaseKeeper().acked(now=now).now == now


@pytest.mark.parametrize("now", [-1_000_000_000_000_001.0, 1_000_000_000_000_001.0, "soon"])
def test_a_time_beyond_the_bounds_names_the_item_and_the_accepted_range(now: Any) -> None:
    keeper = LeaseKeeper(work_id="work_7")
    rejects(
        keeper,
        lambda: keeper.acked(now=now),
        InvalidInputError,
        **bad_input(
            key="now",
            expected="a finite number of seconds",
            got=now,
            work_id="work_7",
            message=f"now must be a finite number of seconds from a monotonic clock, got {now!r}",
        ),
    )


def test_a_time_before_the_latest_names_the_item_and_the_latest_time() -> None:
    keeper = LeaseKeeper(work_id="work_7").acked(now=10.0)
    rejects(
        keeper,
        lambda: keeper.tick(now=9.5),
        InvalidInputError,
        **bad_input(
            key="now",
            expected="a time >= 10.0",
            got=9.5,
            work_id="work_7",
            message="now=9.5 is earlier than the latest time fed (10.0); feed the times of one "
            "monotonic clock, in order",
        ),
    )


# =================================================================== statuses
@pytest.mark.parametrize("status", [399, 600])
def test_a_status_that_is_no_error_names_the_accepted_range(status: int) -> None:
    fields = bad_input(
        key="status",
        expected="an integer from 400 to 599",
        got=status,
        message=f"status must be an HTTP error status (400-599), got {status}",
    )
    rejects(None, lambda: is_retryable_status(status), InvalidInputError, **fields)
    keeper = LeaseKeeper(work_id="work_7").acked(now=0.0)
    rejects(keeper, lambda: keeper.refused(status, now=1.0), InvalidInputError, **fields)


def test_failed_with_a_final_status_points_to_refused() -> None:
    keeper = LeaseKeeper(work_id="work_7").acked(now=0.0)
    rejects(
        keeper,
        lambda: keeper.failed(now=1.0, status=403),
        InvalidInputError,
        **bad_input(
            key="status",
            expected="None, 408, 409, 429 or 500-599",
            got=403,
            work_id="work_7",
            message="failed() takes only a retryable status (408, 409, 429, 5xx), got 403; "
            "feed a final status with refused()",
        ),
    )


def test_current_state_with_another_status_than_412_is_refused() -> None:
    keeper = LeaseKeeper(work_id="work_7").acked(now=0.0)
    rejects(
        keeper,
        lambda: keeper.refused(503, now=1.0, current_state=QUEUED),
        InvalidInputError,
        **bad_input(
            key="current_state",
            expected="None unless status is 412",
            got=QUEUED,
            work_id="work_7",
            message="current_state comes only with a 412, not with 503",
        ),
    )


@pytest.mark.parametrize(
    "current",
    [
        {**QUEUED, "added_by_a_newer_api": 1},
        '{"state": "queued", "last_heartbeat": null, "lease_extended": false, '
        '"ttl_seconds": 120, "added_by_a_newer_api": 1}',
    ],
)
def test_a_412s_current_state_with_an_unknown_key_is_still_read(current: Any) -> None:
    # A worker must keep working when the API adds a field (as for heartbeat answers).
    keeper = LeaseKeeper(work_id="work_7").acked(now=0.0)
    keeper = keeper.refused(412, now=1.0, current_state=current)
    assert keeper.end_reason is EndReason.LEASE_LOST_412
    assert keeper.lost_to == LeaseState(state=State.QUEUED, last_heartbeat=None, ttl_seconds=120)


# =================================================================== backoff and jitter
@pytest.mark.parametrize("attempt", [0, -1, 1.0])
def test_a_backoff_attempt_must_be_positive(attempt: Any) -> None:
    rejects(
        None,
        lambda: backoff(attempt),
        InvalidInputError,
        **bad_input(
            key="attempt",
            expected="a positive integer (1 for the first failure)",
            got=attempt,
            message=f"attempt must be a positive integer, got {attempt!r}",
        ),
    )


def test_a_random_source_outside_0_1_is_named() -> None:
    fields = bad_input(
        key="random",
        expected="a float in [0, 1)",
        got=1.0,
        message="the random source must return a float in [0, 1), it returned 1.0",
    )
    rejects(None, lambda: jitter(1.0, 3.0, random=lambda: 1.0), InvalidInputError, **fields)
    loop = PollLoop()
    rejects(loop, lambda: loop.empty(random=lambda: 1.0), InvalidInputError, **fields)


# =================================================================== illegal feeds
def test_an_illegal_feed_before_the_ack_names_what_is_allowed() -> None:
    keeper = LeaseKeeper()
    rejects(
        keeper,
        lambda: keeper.answered(ANSWER, now=0.0),
        IllegalFeedError,
        status=409,
        error_type="conflict_error",
        feed=Feed.ANSWERED,
        machine_state=KeeperState.CLAIMED,
        allowed_feeds=(Feed.ACKED, Feed.TICK),
        work_id=None,
        message="cannot feed answered to the lease keeper of this item before the item is "
        "acked (feed acked first); allowed here: acked, tick",
    )


def test_an_illegal_feed_while_the_lease_is_held_has_no_reason() -> None:
    keeper = LeaseKeeper(work_id="work_7").acked(now=0.0)
    rejects(
        keeper,
        lambda: keeper.acked(now=1.0),
        IllegalFeedError,
        machine_state=KeeperState.STARTING,
        allowed_feeds=(Feed.ANSWERED, Feed.FAILED, Feed.FINISHED, Feed.REFUSED, Feed.TICK),
        work_id="work_7",
        message="cannot feed acked to the lease keeper of work work_7 while the lease is "
        "held; allowed here: answered, failed, finished, refused, tick",
    )


def test_an_illegal_feed_after_the_end_gives_the_reason() -> None:
    keeper = LeaseKeeper(work_id="work_7").acked(now=0.0).refused(412, now=1.0)
    rejects(
        keeper,
        lambda: keeper.failed(now=2.0),
        IllegalFeedError,
        machine_state=KeeperState.ENDED,
        allowed_feeds=(Feed.FINISHED, Feed.TICK),
        work_id="work_7",
        message="cannot feed failed to the lease keeper of work work_7 after the lease ended: "
        "no heartbeat is due (lease_lost_412); allowed here: finished, tick",
    )


def test_a_loop_that_gave_up_accepts_nothing() -> None:
    loop = PollLoop().poll_failed(status=401, random=lambda: 0.5)
    assert loop.next_action is PollAction.GIVE_UP
    rejects(
        loop,
        lambda: loop.delivered(),
        IllegalFeedError,
        status=409,
        feed=PollFeed.DELIVERED,
        machine_state=PollAction.GIVE_UP,
        allowed_feeds=(),
        work_id=None,
        message="cannot feed delivered to a poll loop whose next action is give_up; "
        "allowed here: nothing",
    )


# =================================================================== rules
def test_rules_accept_any_positive_numbers_below_one() -> None:
    rules = HeartbeatRules(interval=0.8, min_interval=0.5, assumed_ttl=0.9)
    assert rules.interval_for(0.6) == 0.5  # clamp(0.3, 0.5, 0.8)
    assert rules.interval_for(10) == 0.8
    keeper = LeaseKeeper(rules=rules).acked(now=0.0).failed(now=0.5)
    # Lease 0.9 s from 0.0: 0.4 s left, so min(0.8, max(0.5, 0.2)) = 0.5 s.
    assert keeper.next_heartbeat_at == 1.0


def test_rules_with_min_interval_equal_to_interval_are_accepted() -> None:
    rules = HeartbeatRules(interval=5.0, min_interval=5.0)
    assert [rules.interval_for(t) for t in (1, 10, 600)] == [5.0, 5.0, 5.0]


def test_rules_with_min_interval_above_interval_are_refused_exactly() -> None:
    message = "HeartbeatRules.min_interval must not exceed interval, got 6.0 > 5.0"
    with pytest.raises(ValueError, match="min_interval") as info:
        HeartbeatRules(interval=5.0, min_interval=6.0)
    assert str(info.value) == message


# =================================================================== lease assumed lost
def test_the_lease_assumed_lost_rule_counts_from_the_ack_not_from_zero() -> None:
    # Acked at 1000 s with the assumed 90 s TTL: a failure one second later retries
    # (min(30, max(1, 89 / 2)) = 30 s later); one exactly at 1090 s still retries (strictly
    # greater); one at 1090.5 s assumes the lease lost.
    keeper = LeaseKeeper(work_id="work_7", rules=HeartbeatRules()).acked(now=1000.0)
    once = keeper.failed(now=1001.0)
    assert (once.state, once.failures, once.next_heartbeat_at) == (
        KeeperState.STARTING,
        1,
        1031.0,
    )
    edge = once.failed(now=1090.0)
    assert (edge.state, edge.failures, edge.next_heartbeat_at) == (KeeperState.STARTING, 2, 1091.0)
    lost = edge.failed(now=1090.5)
    assert (lost.state, lost.end_reason, lost.ended_at) == (
        KeeperState.ENDED,
        EndReason.LEASE_ASSUMED_LOST,
        1090.5,
    )
