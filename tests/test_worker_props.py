"""Properties of the lease keeper and the poll loop over any sequence of feeds.

For any sequence of feeds with non-decreasing times (and some with a time going backwards):

* the keeper never schedules a heartbeat later than one interval — half the known TTL, at
  least 1 s, at most 30 s — after the last success; after a failure, never later than one
  interval after that failure, and (default rules) never past the lease's deadline unless
  at the 1 s floor;
* it never keeps serving (nor drains, nor heartbeats) after a 412;
* it never asks to stop an item whose lease was lost, and the first end reason wins;
* it sends ``NO_HEARTBEAT`` until the first success, then exactly the last ``last_heartbeat``;
* an illegal feed or a bad time raises and leaves the keeper unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workstate import NO_HEARTBEAT, HeartbeatResult, InvalidInputError, State
from workstate.worker import (
    BACKOFF_JITTER,
    DEFAULT_HEARTBEAT_RULES,
    EMPTY_POLL_DELAY,
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
)


def examples(n: int) -> int:
    """``n`` examples in CI; more when a profile (``HYPOTHESIS_PROFILE=thorough``) asks for more."""
    default = settings.default
    return n if default is None else max(n, default.max_examples)


TOKENS = [f"2026-07-01T08:{m:02d}:00.{m:06d}Z" for m in range(60)]

rules_strategy = st.sampled_from(
    [
        DEFAULT_HEARTBEAT_RULES,
        SDK_HEARTBEAT_RULES,
        HeartbeatRules(interval=10.0, min_interval=2.0, assumed_ttl=30.0),
    ]
)

answers = st.builds(
    HeartbeatResult,
    last_heartbeat=st.sampled_from(TOKENS),
    lease_extended=st.sampled_from([True, True, True, True, False]),
    state=st.sampled_from([State.ACTIVE] * 6 + [State.STARTING, State.STOPPING, State.STOPPED]),
    ttl_seconds=st.sampled_from([-5, 0, 1, 2, 3, 10, 20, 59, 60, 61, 90, 120, 600]),
)
steps = st.sampled_from([0.0, 0.0, 0.001, 0.5, 1.0, 2.5, 5.0, 10.0, 29.9, 30.0, 45.0, 100.0])

feeds = st.one_of(
    st.tuples(st.just(Feed.ANSWERED), steps, answers),
    st.tuples(st.just(Feed.ANSWERED), steps, answers),
    st.tuples(st.just(Feed.ANSWERED), steps, answers),
    st.tuples(st.just(Feed.REFUSED), steps, st.sampled_from([400, 403, 408, 409, 412, 429, 503])),
    st.tuples(st.just(Feed.FAILED), steps, st.sampled_from([None, None, 408, 429, 500, 503])),
    st.tuples(st.just(Feed.FAILED), steps, st.none()),
    st.tuples(st.just(Feed.TICK), steps, st.none()),
    st.tuples(st.just(Feed.FINISHED), steps, st.none()),
    st.tuples(st.just(Feed.ACKED), steps, st.none()),
    st.tuples(st.just("backwards"), st.sampled_from([0.001, 1.0, 50.0]), st.none()),
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[HeartbeatRules, float, list[tuple[Any, float, Any]]]:
    rules = draw(rules_strategy)
    start = draw(st.sampled_from([0.0, 12.5, 1e6]))
    script = draw(st.lists(feeds, max_size=40))
    if draw(st.integers(0, 9)):  # mostly start with the ack, so the lease gets exercised
        script.insert(0, (Feed.ACKED, 0.0, None))
    return rules, start, script


def apply(keeper: LeaseKeeper, feed: Feed, now: float, payload: Any) -> LeaseKeeper:
    if feed is Feed.ACKED:
        return keeper.acked(now=now)
    if feed is Feed.ANSWERED:
        return keeper.answered(payload, now=now)
    if feed is Feed.REFUSED:
        return keeper.refused(payload, now=now)
    if feed is Feed.FAILED:
        return keeper.failed(now=now, status=payload)
    if feed is Feed.FINISHED:
        return keeper.finished(now=now)
    return keeper.tick(now=now)


def clamp(rules: HeartbeatRules, ttl: float) -> float:
    return max(rules.min_interval, min(ttl / 2, rules.interval))


@settings(max_examples=examples(300))
@given(runs())
def test_keeper_properties(run: tuple[HeartbeatRules, float, list[tuple[Any, float, Any]]]) -> None:
    rules, t, script = run
    keeper = LeaseKeeper(work_id="work_1", rules=rules)
    token: str | None = None  # the last_heartbeat of the last success
    saw_412 = False
    first_reason: EndReason | None = None
    for feed, step, payload in script:
        before = keeper
        snapshot = attrs.asdict(keeper, recurse=False)
        if feed == "backwards":
            if keeper.now is None:
                continue
            with pytest.raises(InvalidInputError) as info:
                keeper.tick(now=keeper.now - step)
            assert info.value.key == "now"
            assert attrs.asdict(keeper, recurse=False) == snapshot
            continue
        t += step
        if not keeper.can(feed):
            with pytest.raises(IllegalFeedError) as illegal:
                apply(keeper, feed, t, payload)
            assert (illegal.value.feed, illegal.value.machine_state) == (feed, keeper.state)
            assert attrs.asdict(keeper, recurse=False) == snapshot
            continue
        keeper = apply(keeper, feed, t, payload)
        assert keeper.now == t

        # ---- what was learned
        success = feed is Feed.ANSWERED
        if success:
            token = payload.last_heartbeat
        if feed is Feed.REFUSED and payload == 412:
            saw_412 = True
        assert keeper.next_token == (NO_HEARTBEAT if token is None else token)

        # ---- the schedule
        if keeper.next_heartbeat_at is not None:
            assert keeper.should_keep_serving
            renewed = keeper.renewed_at
            assert renewed is not None
            interval = keeper.interval
            expected = rules.interval if keeper.ttl_seconds is None else clamp(rules, keeper.ttl)
            assert interval == expected
            assert keeper.request_timeout == interval
            assert rules.min_interval <= interval <= rules.interval
            assert keeper.ttl_seconds is None or interval <= max(rules.min_interval, keeper.ttl / 2)
            if keeper.failures == 0:
                # Nothing failed since the last success (or the ack): one interval after it at
                # the latest — and at once after the ack.
                assert keeper.next_heartbeat_at <= renewed + interval
                if keeper.state is KeeperState.STARTING:
                    assert keeper.next_heartbeat_at == renewed
                elif success:
                    assert keeper.next_heartbeat_at == pytest.approx(t + interval)
            if feed is Feed.FAILED or (feed is Feed.REFUSED and keeper.failures > before.failures):
                # A retry: after the failure, at most one interval later, and only while the
                # TTL has not run out since the last renewal.
                assert t - renewed <= keeper.ttl
                assert t < keeper.next_heartbeat_at <= t + interval
                if rules.retry_within_lease:
                    assert keeper.next_heartbeat_at <= max(
                        renewed + keeper.ttl, t + rules.min_interval
                    )
                else:
                    assert keeper.next_heartbeat_at == t + interval
        else:
            assert keeper.request_timeout is None
            assert not keeper.should_keep_serving

        # ---- the end
        if saw_412:
            assert not keeper.should_keep_serving
            assert not keeper.should_drain
            assert keeper.next_heartbeat_at is None
            assert keeper.end_reason is EndReason.LEASE_LOST_412
        if keeper.is_lease_lost:
            assert keeper.final_action is FinalAction.RELEASE
        if keeper.final_action is FinalAction.FORCE_STOP:
            assert keeper.end_reason is not None
            assert not keeper.end_reason.is_lease_lost
        if first_reason is not None:
            assert keeper.end_reason is first_reason
        first_reason = keeper.end_reason
        if keeper.is_ended:
            assert keeper.ended_at is not None
            assert keeper.ended_at <= keeper.now
            assert keeper.lease_deadline is None
        if keeper.should_keep_serving:
            assert keeper.end_reason is None
            assert keeper.final_action is None


@settings(max_examples=examples(150))
@given(runs())
def test_sdk_rules_never_retry_sooner_than_the_interval(
    run: tuple[HeartbeatRules, float, list[tuple[Any, float, Any]]],
) -> None:
    """With the SDK's rules the schedule is always 'one interval after the latest answer'."""
    _, t, script = run
    keeper = LeaseKeeper(rules=SDK_HEARTBEAT_RULES)
    for feed, step, payload in script:
        if feed == "backwards" or not keeper.can(feed):
            continue
        t += step
        keeper = apply(keeper, feed, t, payload)
        if keeper.next_heartbeat_at is not None and feed is not Feed.TICK:
            expected = t if feed is Feed.ACKED else t + keeper.interval
            assert keeper.next_heartbeat_at == expected


# =================================================================== the poll loop
poll_feeds = st.one_of(
    st.tuples(st.just(PollFeed.EMPTY), st.none()),
    st.tuples(st.just(PollFeed.DELIVERED), st.none()),
    st.tuples(st.just(PollFeed.POLL_FAILED), st.sampled_from([None, 401, 404, 408, 429, 500, 503])),
    st.tuples(st.just(PollFeed.ACKED), st.none()),
    st.tuples(st.just(PollFeed.ACK_FAILED), st.sampled_from([None, 400, 404, 409, 429, 500])),
    st.tuples(st.just(PollFeed.SERVED), st.none()),
    st.tuples(st.just(PollFeed.FORCE_STOPPED), st.none()),
)


def poll_apply(
    loop: PollLoop, feed: PollFeed, status: int | None, source: Callable[[], float]
) -> PollLoop:
    if feed is PollFeed.EMPTY:
        return loop.empty(random=source)
    if feed is PollFeed.POLL_FAILED:
        return loop.poll_failed(status=status, random=source)
    if feed is PollFeed.ACK_FAILED:
        return loop.ack_failed(status=status, random=source)
    result: PollLoop = getattr(loop, feed.value)()
    return result


@settings(max_examples=examples(200))
@given(
    st.booleans(),
    st.lists(poll_feeds, max_size=60),
    st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1),
)
def test_poll_loop_properties(
    drain: bool, script: list[tuple[PollFeed, int | None]], draws: list[float]
) -> None:
    loop = PollLoop(drain=drain)
    index = [0]

    def source() -> float:
        index[0] += 1
        return draws[index[0] % len(draws)]

    for feed, status in script:
        if feed not in loop.allowed_feeds:
            snapshot = attrs.asdict(loop, recurse=False)
            with pytest.raises(IllegalFeedError):
                poll_apply(loop, feed, status, source)
            assert attrs.asdict(loop, recurse=False) == snapshot
            continue
        before = loop
        loop = poll_apply(loop, feed, status, source)
        # Every delay is bounded: 1-3 s after an empty poll, at most 61 s after a failure (the
        # upper ends only through float rounding, as with random.uniform).
        assert 0.0 <= loop.delay <= 61.0
        if loop.next_action is PollAction.POLL and feed is PollFeed.EMPTY:
            assert EMPTY_POLL_DELAY[0] <= loop.delay <= EMPTY_POLL_DELAY[1]
        if feed is PollFeed.POLL_FAILED and loop.next_action is PollAction.POLL:
            assert loop.poll_failures == before.poll_failures + 1
            assert loop.ack_failures == before.ack_failures
            low = backoff(loop.poll_failures)
            assert low + BACKOFF_JITTER[0] <= loop.delay <= low + BACKOFF_JITTER[1]
        if feed is PollFeed.ACK_FAILED and loop.next_action is PollAction.POLL:
            assert loop.ack_failures == before.ack_failures + 1
            assert loop.poll_failures == before.poll_failures
            low = backoff(loop.ack_failures)
            assert low + BACKOFF_JITTER[0] <= loop.delay <= low + BACKOFF_JITTER[1]
        if feed in (PollFeed.EMPTY, PollFeed.DELIVERED):
            assert loop.poll_failures == 0
            assert loop.ack_failures == before.ack_failures
        if feed is PollFeed.ACKED:
            assert (loop.ack_failures, loop.next_action) == (0, PollAction.SERVE)
            assert loop.poll_failures == before.poll_failures
        if loop.next_action in (PollAction.ACK, PollAction.SERVE, PollAction.FORCE_STOP):
            assert loop.delay == 0.0
        if loop.next_action is PollAction.DONE:
            assert drain
