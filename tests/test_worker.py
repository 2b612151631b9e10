"""workstate.worker: every rule of the lease keeper and the poll loop, with exact decisions and
times, and every rejection with its exact error (the machine unchanged)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from workstate import (
    NO_HEARTBEAT,
    HeartbeatResult,
    IllegalMoveError,
    InvalidInputError,
    LeaseState,
    State,
    WorkstateError,
)
from workstate.worker import (
    ASSUMED_TTL,
    BACKOFF_CAP,
    DEFAULT_HEARTBEAT_RULES,
    EMPTY_POLL_DELAY,
    HEARTBEAT_INTERVAL,
    MIN_HEARTBEAT_INTERVAL,
    POLL_BLOCK_MS,
    RETRYABLE_4XX,
    SDK_HEARTBEAT_RULES,
    EndReason,
    Feed,
    FinalAction,
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

TOKEN_1 = "2026-07-01T08:15:01.000000Z"
TOKEN_2 = "2026-07-01T08:15:31.250000Z"


def beat(
    token: str = TOKEN_1,
    *,
    ttl: int = 120,
    state: str = "active",
    extended: bool = True,
) -> dict[str, Any]:
    """A heartbeat answer's JSON."""
    return {
        "type": "work_heartbeat",
        "last_heartbeat": token,
        "lease_extended": extended,
        "state": state,
        "ttl_seconds": ttl,
    }


def lease_state(state: str = "queued", token: str | None = None) -> dict[str, Any]:
    return {"state": state, "last_heartbeat": token, "lease_extended": False, "ttl_seconds": 120}


def serving(
    ttl: int = 120, *, acked_at: float = 0.0, at: float = 0.0, rules: HeartbeatRules | None = None
) -> LeaseKeeper:
    """A keeper acked at ``acked_at`` whose first heartbeat answered at ``at`` with ``ttl``."""
    keeper = LeaseKeeper(work_id="work_1", rules=rules or DEFAULT_HEARTBEAT_RULES)
    return keeper.acked(now=acked_at).answered(beat(ttl=ttl), now=at)


Machine = LeaseKeeper | PollLoop


def rejects(
    machine: Machine, call: Callable[[Any], object], kind: type[WorkstateError], **fields: Any
) -> Any:
    """``call(machine)`` raises ``kind`` with ``fields`` and leaves ``machine`` as it was."""
    snapshot = attrs.asdict(machine, recurse=False)
    with pytest.raises(kind) as info:
        call(machine)
    err = info.value
    for name, value in fields.items():
        assert getattr(err, name) == value, (name, getattr(err, name), value)
    assert attrs.asdict(machine, recurse=False) == snapshot
    return err


# =================================================================== the lease keeper
def test_constants_are_the_sdks() -> None:
    assert (HEARTBEAT_INTERVAL, MIN_HEARTBEAT_INTERVAL, ASSUMED_TTL) == (30.0, 1.0, 90.0)
    assert {408, 409, 429} == RETRYABLE_4XX
    assert (POLL_BLOCK_MS, EMPTY_POLL_DELAY, BACKOFF_CAP) == (999, (1.0, 3.0), 60.0)


def test_a_new_keeper_holds_nothing() -> None:
    keeper = LeaseKeeper(work_id="work_1")
    assert keeper.state is KeeperState.CLAIMED
    assert keeper.next_token == NO_HEARTBEAT
    assert (keeper.next_heartbeat_at, keeper.request_timeout, keeper.lease_deadline) == (
        None,
        None,
        None,
    )
    assert not keeper.should_keep_serving
    assert not keeper.should_drain
    assert not keeper.is_ended
    assert (keeper.end_reason, keeper.final_action) == (None, None)
    assert keeper.allowed_feeds == {Feed.ACKED, Feed.TICK}
    assert keeper.seconds_until_heartbeat(0.0) is None


def test_ack_starts_the_lease_and_the_first_heartbeat_is_due_at_once() -> None:
    keeper = LeaseKeeper(work_id="work_1").acked(now=5.0)
    assert keeper.state is KeeperState.STARTING
    assert keeper.should_keep_serving
    assert keeper.next_token == NO_HEARTBEAT
    assert keeper.next_heartbeat_at == 5.0
    assert keeper.seconds_until_heartbeat(5.0) == 0.0
    assert keeper.seconds_until_heartbeat(4.0) == 1.0
    # Before any answer: a 30 s bound on the request and a 90 s TTL assumed.
    assert (keeper.request_timeout, keeper.interval, keeper.ttl) == (30.0, 30.0, 90.0)
    assert keeper.lease_deadline == 95.0
    assert (keeper.renewed_at, keeper.now) == (5.0, 5.0)


def test_first_success_echoes_the_token_and_uses_the_reported_ttl() -> None:
    keeper = LeaseKeeper().acked(now=5.0).answered(beat(TOKEN_1, ttl=120), now=5.25)
    assert keeper.state is KeeperState.SERVING
    assert keeper.next_token == TOKEN_1
    assert (keeper.ttl_seconds, keeper.interval) == (120, 30.0)
    assert keeper.next_heartbeat_at == 35.25
    assert keeper.request_timeout == 30.0
    assert keeper.lease_deadline == 125.25
    keeper = keeper.answered(beat(TOKEN_2, ttl=20), now=35.5)
    assert keeper.next_token == TOKEN_2
    assert (keeper.interval, keeper.next_heartbeat_at, keeper.request_timeout) == (10.0, 45.5, 10.0)
    assert keeper.lease_deadline == 55.5


@pytest.mark.parametrize(
    ("ttl", "interval"),
    [(1, 1.0), (2, 1.0), (3, 1.5), (10, 5.0), (59, 29.5), (60, 30.0), (61, 30.0), (600, 30.0)],
)
def test_interval_is_half_the_ttl_between_1_and_30_seconds(ttl: int, interval: float) -> None:
    keeper = serving(ttl, at=100.0)
    assert keeper.interval == interval
    assert keeper.request_timeout == interval
    assert keeper.next_heartbeat_at == 100.0 + interval


def test_the_token_is_echoed_byte_for_byte() -> None:
    odd = "2026-07-01T10:15:01.5+02:00"  # valid RFC 3339, not how we would format it
    keeper = LeaseKeeper().acked(now=0.0).answered(beat(odd), now=1.0)
    assert keeper.next_token == odd
    # A failure keeps the token: the retry must send the same one.
    assert keeper.failed(now=31.0).next_token == odd


def test_answers_are_accepted_as_objects_mappings_text_and_bytes() -> None:
    start = LeaseKeeper().acked(now=0.0)
    obj = HeartbeatResult(
        last_heartbeat=TOKEN_1, lease_extended=True, state=State.ACTIVE, ttl_seconds=20
    )
    text = json.dumps(beat(ttl=20))
    results = [
        start.answered(answer, now=1.0) for answer in (obj, beat(ttl=20), text, text.encode())
    ]
    assert all(r == results[0] for r in results)
    # Unknown keys are tolerated (the API may add fields).
    assert start.answered({**beat(ttl=20), "new_field": 1}, now=1.0) == results[0]


def test_a_non_positive_ttl_in_an_answer_object_is_ignored_like_the_sdk() -> None:
    keeper = serving(20, at=1.0)
    odd = HeartbeatResult(
        last_heartbeat=TOKEN_2, lease_extended=True, state=State.ACTIVE, ttl_seconds=0
    )
    keeper = keeper.answered(odd, now=11.0)
    assert (keeper.ttl_seconds, keeper.interval, keeper.next_heartbeat_at) == (20, 10.0, 21.0)
    assert keeper.next_token == TOKEN_2
    # Before any TTL is known the defaults stay.
    first = LeaseKeeper().acked(now=0.0).answered(odd, now=1.0)
    assert (first.ttl_seconds, first.interval, first.ttl, first.next_heartbeat_at) == (
        None,
        30.0,
        90.0,
        31.0,
    )


def test_malformed_answers_are_rejected_and_change_nothing() -> None:
    keeper = LeaseKeeper(work_id="work_1").acked(now=0.0)
    rejects(keeper, lambda k: k.answered("{", now=1.0), InvalidInputError, key="heartbeat")
    rejects(
        keeper,
        lambda k: k.answered({**beat(), "ttl_seconds": 0}, now=1.0),
        InvalidInputError,
        key="ttl_seconds",
        status=400,
        error_type="invalid_request_error",
    )
    rejects(
        keeper,
        lambda k: k.answered({**beat(), "state": "paused"}, now=1.0),
        InvalidInputError,
        key="state",
    )
    rejects(
        keeper,
        lambda k: k.answered({k2: v for k2, v in beat().items() if k2 != "lease_extended"}, now=1),
        InvalidInputError,
        key="lease_extended",
    )


def test_stopping_starts_a_drain_that_ends_with_a_force_stop() -> None:
    keeper = serving(60, at=10.0)  # renewed at 10, TTL 60
    keeper = keeper.answered(beat(TOKEN_1, ttl=60, state="stopping", extended=False), now=40.0)
    assert keeper.state is KeeperState.DRAINING
    assert not keeper.should_keep_serving
    assert keeper.should_drain
    assert (keeper.next_heartbeat_at, keeper.request_timeout) == (None, None)
    assert keeper.end_reason is EndReason.STOP_REQUESTED
    assert keeper.final_action is FinalAction.FORCE_STOP
    # The answer did not extend the lease: the drain must be done by the old deadline.
    assert (keeper.renewed_at, keeper.lease_deadline) == (10.0, 70.0)
    assert keeper.allowed_feeds == {Feed.FINISHED, Feed.TICK}
    done = keeper.finished(now=55.0)
    assert (done.state, done.end_reason, done.final_action) == (
        KeeperState.ENDED,
        EndReason.STOP_REQUESTED,
        FinalAction.FORCE_STOP,
    )
    assert (done.ended_at, done.lease_deadline, done.should_drain) == (55.0, None, False)


def test_a_drain_past_the_lease_deadline_is_over() -> None:
    keeper = serving(60, at=10.0).answered(beat(ttl=60, state="stopping", extended=False), now=40.0)
    assert keeper.tick(now=70.0).state is KeeperState.DRAINING  # not past yet: 70 - 10 = TTL
    over = keeper.tick(now=70.5)
    # The first reason wins; the server stops the item itself, our stop meets 409.
    assert (over.state, over.end_reason, over.final_action, over.ended_at) == (
        KeeperState.ENDED,
        EndReason.STOP_REQUESTED,
        FinalAction.FORCE_STOP,
        70.5,
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (beat(state="stopped", extended=False), EndReason.STOPPED),
        (beat(state="stopped", extended=True), EndReason.STOPPED),
        (beat(state="active", extended=False), EndReason.NOT_EXTENDED),
        (beat(state="starting", extended=False), EndReason.NOT_EXTENDED),
    ],
)
def test_stopped_or_not_extended_ends_the_lease_with_a_force_stop(
    answer: dict[str, Any], reason: EndReason
) -> None:
    keeper = serving(at=1.0).answered(answer, now=31.0)
    assert (keeper.state, keeper.end_reason, keeper.final_action) == (
        KeeperState.ENDED,
        reason,
        FinalAction.FORCE_STOP,
    )
    assert (keeper.ended_at, keeper.next_heartbeat_at, keeper.should_keep_serving) == (
        31.0,
        None,
        False,
    )
    assert reason.sdk_reason == "heartbeat_stop"


def test_stopping_answer_that_extends_renews_the_lease() -> None:
    keeper = serving(60, at=10.0).answered(beat(ttl=60, state="stopping", extended=True), now=40.0)
    assert (keeper.state, keeper.lease_deadline) == (KeeperState.DRAINING, 100.0)


@pytest.mark.parametrize(
    "current",
    [
        lease_state("queued"),
        json.dumps(lease_state("queued")),
        LeaseState(state=State.QUEUED, last_heartbeat=None, ttl_seconds=120),
    ],
)
def test_412_loses_the_lease_and_releases_the_item(current: Any) -> None:
    keeper = serving(at=1.0).refused(412, now=31.0, current_state=current)
    assert (keeper.state, keeper.end_reason, keeper.final_action) == (
        KeeperState.ENDED,
        EndReason.LEASE_LOST_412,
        FinalAction.RELEASE,
    )
    assert keeper.is_lease_lost
    assert not keeper.should_keep_serving
    assert keeper.lost_to == LeaseState(state=State.QUEUED, last_heartbeat=None, ttl_seconds=120)
    assert (keeper.last_error_status, keeper.ended_at) == (412, 31.0)


def test_412_without_details_and_another_workers_lease() -> None:
    keeper = LeaseKeeper().acked(now=0.0).refused(412, now=0.5)
    assert (keeper.end_reason, keeper.final_action, keeper.lost_to) == (
        EndReason.LEASE_LOST_412,
        FinalAction.RELEASE,
        None,
    )
    other = serving(at=1.0).refused(412, now=31.0, current_state=lease_state("active", TOKEN_2))
    assert other.lost_to is not None
    assert (other.lost_to.state, other.lost_to.last_heartbeat) == (State.ACTIVE, TOKEN_2)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 413, 422, 499])
def test_a_final_4xx_rejects_the_lease_and_force_stops(status: int) -> None:
    keeper = serving(at=1.0).refused(status, now=31.0)
    assert (keeper.state, keeper.end_reason, keeper.final_action) == (
        KeeperState.ENDED,
        EndReason.REJECTED,
        FinalAction.FORCE_STOP,
    )
    assert keeper.last_error_status == status
    assert not keeper.is_lease_lost


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529, 599])
def test_retryable_statuses_are_transient_failures(status: int) -> None:
    keeper = serving(120, at=1.0, rules=SDK_HEARTBEAT_RULES)
    refused = keeper.refused(status, now=31.0)
    assert refused == keeper.failed(now=31.0, status=status)
    assert (refused.state, refused.failures, refused.last_error_status) == (
        KeeperState.SERVING,
        1,
        status,
    )
    assert refused.next_token == TOKEN_1
    assert (refused.next_heartbeat_at, refused.request_timeout) == (61.0, 30.0)
    assert refused.end_reason is None


def test_sdk_rules_retry_after_the_full_interval_until_the_ttl_has_passed() -> None:
    # SDK: success at 0 (TTL 90, interval 30); fast failures at 30, 60, 90, 120.
    keeper = serving(90, at=0.0, rules=SDK_HEARTBEAT_RULES)
    due = []
    for t in (30.0, 60.0, 90.0):
        keeper = keeper.failed(now=t)
        due.append(keeper.next_heartbeat_at)
    # 90 - 0 > 90 is false: the SDK still retries at exactly one TTL.
    assert due == [60.0, 90.0, 120.0]
    assert keeper.failures == 3
    lost = keeper.failed(now=120.0)
    assert (lost.state, lost.end_reason, lost.final_action, lost.failures) == (
        KeeperState.ENDED,
        EndReason.LEASE_ASSUMED_LOST,
        FinalAction.RELEASE,
        4,
    )


def test_default_rules_fit_more_retries_inside_the_lease() -> None:
    keeper = serving(90, at=0.0)  # deadline 90, interval 30
    due = []
    t = 30.0
    while keeper.should_keep_serving:
        keeper = keeper.failed(now=t)
        if keeper.next_heartbeat_at is not None:
            due.append(keeper.next_heartbeat_at)
            t = keeper.next_heartbeat_at
    # Half the time left each time, never more than the interval, never under the 1 s floor.
    assert due == [60.0, 75.0, 82.5, 86.25, 88.125, 89.125, 90.125]
    assert (keeper.end_reason, keeper.ended_at, keeper.failures) == (
        EndReason.LEASE_ASSUMED_LOST,
        90.125,
        8,
    )


def test_a_timeout_before_the_first_answer_uses_the_assumed_ttl() -> None:
    keeper = LeaseKeeper(rules=SDK_HEARTBEAT_RULES).acked(now=0.0)
    keeper = keeper.failed(now=30.0)  # the first heartbeat timed out after its 30 s bound
    assert (keeper.next_heartbeat_at, keeper.next_token, keeper.failures) == (60.0, NO_HEARTBEAT, 1)
    keeper = keeper.failed(now=90.0)  # exactly the assumed TTL: not yet
    assert keeper.next_heartbeat_at == 120.0
    assert keeper.failed(now=150.0).end_reason is EndReason.LEASE_ASSUMED_LOST


def test_a_success_resets_the_failures() -> None:
    keeper = serving(at=0.0).failed(now=30.0).refused(503, now=45.0)
    assert (keeper.failures, keeper.last_error_status) == (2, 503)
    keeper = keeper.answered(beat(TOKEN_2), now=50.0)
    assert (keeper.failures, keeper.last_error_status, keeper.renewed_at) == (0, None, 50.0)
    assert keeper.next_heartbeat_at == 80.0


def test_an_answer_after_the_ttl_is_still_a_success() -> None:
    # The server is the authority: if it extended the lease, the lease is ours.
    keeper = serving(20, at=0.0, rules=SDK_HEARTBEAT_RULES).answered(
        beat(TOKEN_2, ttl=20), now=25.0
    )
    assert (keeper.state, keeper.next_heartbeat_at) == (KeeperState.SERVING, 35.0)


def test_tick_assumes_the_lease_lost_as_soon_as_the_ttl_has_passed() -> None:
    keeper = serving(20, at=0.0)
    assert keeper.tick(now=20.0).should_keep_serving
    assert keeper.tick(now=20.0).now == 20.0
    lost = keeper.tick(now=20.001)
    assert (lost.end_reason, lost.final_action, lost.ended_at) == (
        EndReason.LEASE_ASSUMED_LOST,
        FinalAction.RELEASE,
        20.001,
    )
    # Before the first answer the assumed 90 s count from the ack.
    starting = LeaseKeeper().acked(now=10.0)
    assert starting.tick(now=100.0).should_keep_serving
    assert starting.tick(now=100.5).end_reason is EndReason.LEASE_ASSUMED_LOST


def test_tick_only_records_the_time_before_the_ack_and_after_the_end() -> None:
    claimed = LeaseKeeper().tick(now=1000.0)
    assert (claimed.state, claimed.now) == (KeeperState.CLAIMED, 1000.0)
    ended = serving(at=0.0).refused(412, now=1.0).tick(now=1000.0)
    assert (ended.end_reason, ended.ended_at, ended.now) == (EndReason.LEASE_LOST_412, 1.0, 1000.0)


@pytest.mark.parametrize("stage", ["starting", "serving"])
def test_finishing_ends_the_lease_with_a_force_stop(stage: str) -> None:
    keeper = LeaseKeeper().acked(now=0.0)
    if stage == "serving":
        keeper = keeper.answered(beat(), now=0.5)
    done = keeper.finished(now=7.0)
    assert (done.state, done.end_reason, done.final_action, done.ended_at) == (
        KeeperState.ENDED,
        EndReason.FINISHED,
        FinalAction.FORCE_STOP,
        7.0,
    )
    assert done.next_heartbeat_at is None
    assert EndReason.FINISHED.sdk_reason == "runner_done"


def test_the_first_reason_wins() -> None:
    lost = serving(at=0.0).refused(412, now=1.0)
    after = lost.finished(now=2.0)
    assert (after.end_reason, after.final_action, after.ended_at, after.now) == (
        EndReason.LEASE_LOST_412,
        FinalAction.RELEASE,
        1.0,
        2.0,
    )
    assert after.finished(now=3.0).end_reason is EndReason.LEASE_LOST_412
    assumed = serving(20, at=0.0).tick(now=30.0).finished(now=31.0)
    assert (assumed.end_reason, assumed.final_action) == (
        EndReason.LEASE_ASSUMED_LOST,
        FinalAction.RELEASE,
    )


def test_every_reason_has_its_final_action_and_sdk_name() -> None:
    table = {
        EndReason.FINISHED: (FinalAction.FORCE_STOP, "runner_done"),
        EndReason.STOP_REQUESTED: (FinalAction.FORCE_STOP, "heartbeat_stop"),
        EndReason.STOPPED: (FinalAction.FORCE_STOP, "heartbeat_stop"),
        EndReason.NOT_EXTENDED: (FinalAction.FORCE_STOP, "heartbeat_stop"),
        EndReason.LEASE_LOST_412: (FinalAction.RELEASE, "lease_lost"),
        EndReason.REJECTED: (FinalAction.FORCE_STOP, "heartbeat_rejected"),
        EndReason.LEASE_ASSUMED_LOST: (FinalAction.RELEASE, "assumed_lost"),
    }
    assert set(table) == set(EndReason)
    for reason, (action, sdk) in table.items():
        keeper = attrs.evolve(LeaseKeeper(), state=KeeperState.ENDED, end_reason=reason)
        assert keeper.final_action is action
        assert reason.is_lease_lost is (action is FinalAction.RELEASE)
        assert reason.sdk_reason == sdk


def test_custom_rules() -> None:
    rules = HeartbeatRules(interval=10.0, min_interval=2.0, assumed_ttl=30.0)
    keeper = LeaseKeeper(rules=rules).acked(now=0.0)
    assert (keeper.request_timeout, keeper.lease_deadline) == (10.0, 30.0)
    assert keeper.answered(beat(ttl=3), now=1.0).interval == 2.0
    assert keeper.answered(beat(ttl=600), now=1.0).interval == 10.0
    assert rules.interval_for(12) == 6.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0},
        {"interval": -1.0},
        {"interval": math.inf},
        {"min_interval": math.nan},
        {"assumed_ttl": 0},
        {"assumed_ttl": True},
        {"interval": "30"},
        {"interval": 5.0, "min_interval": 6.0},
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="HeartbeatRules"):
        HeartbeatRules(**kwargs)


# ------------------------------------------------------------------ keeper rejections
def test_heartbeat_feeds_after_the_end_are_illegal() -> None:
    ended = serving(at=0.0).refused(412, now=1.0)
    for call, feed in [
        (lambda k: k.answered(beat(), now=2.0), Feed.ANSWERED),
        (lambda k: k.refused(500, now=2.0), Feed.REFUSED),
        (lambda k: k.failed(now=2.0), Feed.FAILED),
        (lambda k: k.acked(now=2.0), Feed.ACKED),
    ]:
        err = rejects(
            ended,
            call,
            IllegalFeedError,
            status=409,
            error_type="conflict_error",
            feed=feed,
            machine_state=KeeperState.ENDED,
            allowed_feeds=(Feed.FINISHED, Feed.TICK),
            work_id="work_1",
        )
        assert isinstance(err, IllegalMoveError)
        assert "after the lease ended" in err.message
        assert "lease_lost_412" in err.message
    body = err.to_json(request_id="req_1")
    assert body["type"] == "error"
    assert body["error"]["type"] == "conflict_error"
    assert body["request_id"] == "req_1"


def test_heartbeat_feeds_while_draining_are_illegal() -> None:
    draining = serving(at=0.0).answered(beat(state="stopping", extended=False), now=30.0)
    rejects(
        draining,
        lambda k: k.answered(beat(state="stopping", extended=False), now=31.0),
        IllegalFeedError,
        feed=Feed.ANSWERED,
        machine_state=KeeperState.DRAINING,
    )
    rejects(draining, lambda k: k.failed(now=31.0), IllegalFeedError, feed=Feed.FAILED)


def test_nothing_but_ack_and_tick_before_the_ack() -> None:
    claimed = LeaseKeeper(work_id="work_1")
    for call, feed in [
        (lambda k: k.answered(beat(), now=1.0), Feed.ANSWERED),
        (lambda k: k.refused(412, now=1.0), Feed.REFUSED),
        (lambda k: k.failed(now=1.0), Feed.FAILED),
        (lambda k: k.finished(now=1.0), Feed.FINISHED),
    ]:
        err = rejects(
            claimed,
            call,
            IllegalFeedError,
            feed=feed,
            machine_state=KeeperState.CLAIMED,
            allowed_feeds=(Feed.ACKED, Feed.TICK),
        )
        assert "before the item is acked" in err.message
    assert claimed.can(Feed.ACKED)
    assert not claimed.can(Feed.ANSWERED)


def test_a_second_ack_is_illegal() -> None:
    keeper = LeaseKeeper().acked(now=0.0)
    err = rejects(
        keeper, lambda k: k.acked(now=1.0), IllegalFeedError, machine_state=KeeperState.STARTING
    )
    assert "this item" in err.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1.0", None])
def test_a_time_must_be_a_finite_number(bad: Any) -> None:
    keeper = LeaseKeeper(work_id="work_1").acked(now=5.0)
    rejects(keeper, lambda k: k.tick(now=bad), InvalidInputError, key="now", status=400)


def test_time_never_goes_backwards() -> None:
    keeper = serving(at=5.0)
    for call in (
        lambda k: k.answered(beat(), now=4.999),
        lambda k: k.failed(now=0.0),
        lambda k: k.refused(412, now=1.0),
        lambda k: k.finished(now=4.0),
        lambda k: k.tick(now=4.0),
    ):
        err = rejects(keeper, call, InvalidInputError, key="now")
        assert err.expected == "a time >= 5.0"
    # Equal times are fine, and integers are accepted.
    assert keeper.tick(now=5).now == 5.0


@pytest.mark.parametrize("bad", [200, 302, 399, 600, True, "412", 412.0])
def test_refused_needs_an_http_error_status(bad: Any) -> None:
    keeper = serving(at=0.0)
    rejects(keeper, lambda k: k.refused(bad, now=1.0), InvalidInputError, key="status", got=bad)
    rejects(keeper, lambda k: k.failed(now=1.0, status=bad), InvalidInputError, key="status")


@pytest.mark.parametrize("status", [400, 403, 412])
def test_failed_takes_only_retryable_statuses(status: int) -> None:
    keeper = serving(at=0.0)
    err = rejects(
        keeper, lambda k: k.failed(now=1.0, status=status), InvalidInputError, key="status"
    )
    assert "refused()" in err.message


def test_current_state_only_with_a_412() -> None:
    keeper = serving(at=0.0)
    rejects(
        keeper,
        lambda k: k.refused(409, now=1.0, current_state=lease_state()),
        InvalidInputError,
        key="current_state",
    )
    rejects(
        keeper,
        lambda k: k.refused(412, now=1.0, current_state={"state": "queued"}),
        InvalidInputError,
        key="last_heartbeat",
    )


def test_keeper_is_immutable() -> None:
    keeper = LeaseKeeper()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        keeper.state = KeeperState.ENDED  # type: ignore[misc]
    acked = keeper.acked(now=0.0)
    assert keeper.state is KeeperState.CLAIMED
    assert acked is not keeper


# =================================================================== the poll loop
class Draws:
    """A random source replaying fixed draws, and counting them."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.values.pop(0)


def test_a_new_loop_polls_at_once() -> None:
    loop = PollLoop()
    assert (loop.next_action, loop.delay, loop.block_ms) == (PollAction.POLL, 0.0, 999)
    assert (loop.poll_failures, loop.ack_failures, loop.is_over) == (0, 0, False)
    assert loop.allowed_feeds == {PollFeed.EMPTY, PollFeed.DELIVERED, PollFeed.POLL_FAILED}


@pytest.mark.parametrize(("u", "delay"), [(0.0, 1.0), (0.25, 1.5), (0.5, 2.0), (0.75, 2.5)])
def test_an_empty_poll_pauses_one_to_three_seconds(u: float, delay: float) -> None:
    loop = PollLoop().empty(random=lambda: u)
    assert (loop.next_action, loop.delay) == (PollAction.POLL, delay)


def test_an_empty_poll_in_drain_mode_is_done() -> None:
    draws = Draws()
    loop = PollLoop(drain=True).empty(random=draws)
    assert (loop.next_action, loop.delay, loop.is_over, draws.calls) == (
        PollAction.DONE,
        0.0,
        True,
        0,
    )
    rejects(
        loop,
        lambda lp: lp.delivered(),
        IllegalFeedError,
        feed=PollFeed.DELIVERED,
        machine_state=PollAction.DONE,
        allowed_feeds=(),
    )


@pytest.mark.parametrize("status", [None, 408, 409, 429, 500, 503, 529])
def test_poll_failures_back_off_exponentially_up_to_60_seconds(status: int | None) -> None:
    loop = PollLoop()
    delays = []
    for _ in range(8):
        loop = loop.poll_failed(status=status, random=lambda: 0.5)
        assert loop.next_action is PollAction.POLL
        delays.append(loop.delay)
    assert delays == [2.5, 4.5, 8.5, 16.5, 32.5, 60.5, 60.5, 60.5]
    assert (loop.poll_failures, loop.last_error_status) == (8, status)
    # Any successful poll resets the poll counter.
    assert loop.empty(random=lambda: 0.0).poll_failures == 0
    assert loop.delivered().poll_failures == 0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 412, 422])
def test_a_final_poll_failure_gives_up(status: int) -> None:
    draws = Draws()
    loop = PollLoop().poll_failed(status=status, random=draws)
    assert (loop.next_action, loop.delay, loop.is_over, loop.last_error_status) == (
        PollAction.GIVE_UP,
        0.0,
        True,
        status,
    )
    assert draws.calls == 0  # like the SDK: no jitter is drawn on the way out
    rejects(loop, lambda lp: lp.empty(random=draws), IllegalFeedError, allowed_feeds=())


def test_a_delivered_item_is_acked_then_served() -> None:
    loop = PollLoop().delivered()
    assert (loop.next_action, loop.delay) == (PollAction.ACK, 0.0)
    loop = loop.acked()
    assert (loop.next_action, loop.delay) == (PollAction.SERVE, 0.0)
    loop = loop.served()
    assert (loop.next_action, loop.delay) == (PollAction.POLL, 0.0)


@pytest.mark.parametrize("status", [400, 403, 404, 410, 422])
def test_an_ack_that_fails_for_good_force_stops_the_item(status: int) -> None:
    loop = PollLoop().delivered().ack_failed(status=status, random=Draws())
    assert (loop.next_action, loop.delay, loop.ack_failures, loop.last_error_status) == (
        PollAction.FORCE_STOP,
        0.0,
        0,
        status,
    )
    loop = loop.force_stopped()
    assert (loop.next_action, loop.delay) == (PollAction.POLL, 0.0)


@pytest.mark.parametrize("status", [None, 408, 409, 429, 500])
def test_a_transient_ack_failure_backs_off_and_polls_again(status: int | None) -> None:
    loop = PollLoop().delivered().ack_failed(status=status, random=lambda: 0.0)
    assert (loop.next_action, loop.delay, loop.ack_failures) == (PollAction.POLL, 2.0, 1)


def test_poll_and_ack_counters_are_separate_and_reset_on_their_own_success() -> None:
    u = lambda: 0.0  # noqa: E731
    loop = PollLoop().poll_failed(random=u).poll_failed(random=u)
    assert (loop.poll_failures, loop.ack_failures, loop.delay) == (2, 0, 4.0)
    loop = loop.delivered().ack_failed(status=503, random=u)
    assert (loop.poll_failures, loop.ack_failures, loop.delay) == (0, 1, 2.0)
    loop = loop.poll_failed(random=u)  # the poll counter starts over: 2 s, not 8 s
    assert (loop.poll_failures, loop.ack_failures, loop.delay) == (1, 1, 2.0)
    loop = loop.delivered().ack_failed(random=u)  # the ack counter goes on: 4 s
    assert (loop.poll_failures, loop.ack_failures, loop.delay) == (0, 2, 4.0)
    loop = loop.delivered().ack_failed(status=404, random=u)  # final: counter untouched
    assert (loop.next_action, loop.ack_failures) == (PollAction.FORCE_STOP, 2)
    loop = loop.force_stopped().delivered().acked()
    assert (loop.next_action, loop.ack_failures) == (PollAction.SERVE, 0)


def test_poll_loop_rejects_feeds_out_of_turn() -> None:
    loop = PollLoop()
    err = rejects(
        loop,
        lambda lp: lp.acked(),
        IllegalFeedError,
        status=409,
        feed=PollFeed.ACKED,
        machine_state=PollAction.POLL,
        allowed_feeds=(PollFeed.DELIVERED, PollFeed.EMPTY, PollFeed.POLL_FAILED),
    )
    assert "next action is poll" in err.message
    acking = loop.delivered()
    rejects(acking, lambda lp: lp.empty(random=lambda: 0.0), IllegalFeedError)
    rejects(acking, lambda lp: lp.served(), IllegalFeedError)
    rejects(acking.acked(), lambda lp: lp.force_stopped(), IllegalFeedError)
    rejects(acking.acked(), lambda lp: lp.delivered(), IllegalFeedError)


@pytest.mark.parametrize("bad", [1.0, -0.1, math.nan, 2, True, "0.5", None])
def test_the_random_source_must_return_a_float_in_0_1(bad: Any) -> None:
    loop = PollLoop()
    rejects(loop, lambda lp: lp.empty(random=lambda: bad), InvalidInputError, key="random")
    rejects(loop, lambda lp: lp.poll_failed(random=lambda: bad), InvalidInputError, key="random")


def test_a_seeded_random_gives_the_same_delays_as_random_uniform() -> None:
    ours, theirs = random.Random(42), random.Random(42)
    loop = PollLoop()
    for _ in range(5):
        loop = loop.empty(random=ours)  # a Random instance is accepted as such
        assert loop.delay == theirs.uniform(1.0, 3.0)
    for n in range(1, 9):
        loop = loop.poll_failed(random=ours.random)  # and so is a bare callable
        assert loop.delay == min(60.0, 2.0**n) + theirs.uniform(0.0, 1.0)


# =================================================================== helpers
def test_is_retryable_status_matches_the_sdk_classification() -> None:
    for status in range(400, 600):
        fatal = 400 <= status < 500 and status not in {408, 409, 429}
        assert is_retryable_status(status) is not fatal, status


@pytest.mark.parametrize("bad", [399, 600, 200, True, None, "500"])
def test_is_retryable_status_rejects_non_errors(bad: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        is_retryable_status(bad)
    assert (info.value.key, info.value.got) == ("status", bad)


def test_backoff() -> None:
    assert [backoff(n) for n in range(1, 8)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    # The SDK's formula overflows a float from attempt 1024 on; ours stays at the cap.
    assert backoff(10**6) == 60.0
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidInputError) as info:
            backoff(bad)  # type: ignore[arg-type]
        assert info.value.key == "attempt"


def test_jitter() -> None:
    assert jitter(1.0, 3.0, random=lambda: 0.0) == 1.0
    assert jitter(0.0, 1.0, random=lambda: 0.5) == 0.5
    assert jitter(1.0, 3.0, random=random.Random(3)) == random.Random(3).uniform(1.0, 3.0)


@pytest.mark.parametrize("now", [10**400, float("nan"), float("inf"), -1e16])
def test_times_that_no_monotonic_clock_gives_are_400(now: float) -> None:
    keeper = LeaseKeeper(work_id="work_1")
    rejects(keeper, lambda k: k.acked(now=now), InvalidInputError, key="now")
