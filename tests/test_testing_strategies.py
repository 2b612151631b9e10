"""workstate.testing strategies: items built by legal operations, calls, runs, bad wire input."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import sys

import pytest
from helpers import ACK_LEASE
from hypothesis import given, settings
from hypothesis import strategies as st

import workstate.testing as wt
from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    PROFILES,
    QODER,
    InvalidInputError,
    Operation,
    Precision,
    State,
    Work,
    WorkstateError,
    invariant_violations,
    work_from_json,
)
from workstate.testing import (
    BAD_WIRE_KINDS,
    BadInput,
    Call,
    Run,
    bad_work_json,
    calls,
    metadata_patches,
    profiles,
    runs,
    timestamps,
    traces,
    works,
)

_THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def examples(n: int) -> settings:
    """``n`` examples in CI, ten times more under the thorough profile."""
    return settings(max_examples=n * 10 if _THOROUGH else n, deadline=None)


ALL_PROFILES = pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))


# ------------------------------------------------------------------------------ the package
def test_importing_without_hypothesis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        m for m in sys.modules if m == "workstate.testing" or m.startswith("workstate.testing.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    with pytest.raises(ImportError) as info:
        importlib.import_module("workstate.testing")
    assert "pip install 'sandbox-workstate[testing]'" in str(info.value)
    assert info.value.name == "workstate.testing"


def test_public_names_have_docstrings() -> None:
    for name in wt.__all__:
        obj = getattr(wt, name)
        if name != "BAD_WIRE_KINDS":
            assert obj.__doc__, name


def test_from_type_work_is_registered() -> None:
    @examples(40)
    @given(st.from_type(Work))
    def check(work: Work) -> None:
        assert isinstance(work, Work)
        assert invariant_violations(work) == []

    check()


# ------------------------------------------------------------------------------ basics
@examples(40)
@given(timestamps(), timestamps(precision=Precision.SECONDS))
def test_timestamps_are_aware_utc(t: dt.datetime, whole: dt.datetime) -> None:
    assert t.tzinfo is dt.UTC
    assert whole.tzinfo is dt.UTC
    assert whole.microsecond == 0
    assert dt.datetime(2020, 1, 1, tzinfo=dt.UTC) <= t <= dt.datetime(2090, 1, 1, tzinfo=dt.UTC)


@examples(20)
@given(
    timestamps(
        min_value=dt.datetime(2026, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        max_value=dt.datetime(2026, 1, 2),
    )
)
def test_timestamps_bounds_accept_aware_and_naive(t: dt.datetime) -> None:
    assert dt.datetime(2026, 1, 1, tzinfo=dt.UTC) <= t <= dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


@examples(10)
@given(profiles())
def test_profiles_are_the_shipped_ones(profile: object) -> None:
    assert profile in PROFILES.values()


# ------------------------------------------------------------------------------ items
@ALL_PROFILES
@pytest.mark.parametrize("state", list(State), ids=[s.value for s in State])
def test_works_reach_every_state(profile: object, state: State) -> None:
    @examples(15)
    @given(works(profile, states={state}))  # type: ignore[arg-type]
    def check(work: Work) -> None:
        assert work.state is state
        assert work.profile is profile
        assert invariant_violations(work) == []
        # the wire sees exactly what the record holds
        again = work_from_json(work.to_json(), profile=work.profile)
        assert again.to_json() == work.to_json()

    check()


@examples(40)
@given(works(QODER))
def test_works_follow_the_profile_precision(work: Work) -> None:
    for key in ("acknowledged_at", "started_at", "stop_requested_at", "stopped_at"):
        value = getattr(work, key)
        assert value is None or value.microsecond == 0
    assert work.created_at.microsecond == 0


def test_works_rejects_no_states() -> None:
    with pytest.raises(ValueError, match="at least one state"):
        works(states=[])


# ------------------------------------------------------------------------------ calls
@ALL_PROFILES
def test_legal_calls_are_accepted(profile: object) -> None:
    @examples(60)
    @given(works(profile).flatmap(lambda w: st.tuples(st.just(w), calls(w, legal=True))))  # type: ignore[arg-type]
    def check(pair: tuple[Work, Call]) -> None:
        work, call = pair
        assert call.expect_status == 200
        assert call.reason == ""
        new, beat = call.apply(work)
        assert invariant_violations(new) == []
        assert new.touched_at >= work.touched_at
        assert (beat is not None) == (call.operation is Operation.HEARTBEAT)

    check()


@ALL_PROFILES
def test_illegal_calls_are_rejected_with_their_status(profile: object) -> None:
    seen: set[int] = set()

    @examples(80)
    @given(works(profile).flatmap(lambda w: st.tuples(st.just(w), calls(w, legal=False))))  # type: ignore[arg-type]
    def check(pair: tuple[Work, Call]) -> None:
        work, call = pair
        before = work.to_json()
        with pytest.raises(WorkstateError) as info:
            call.apply(work)
        assert info.value.status == call.expect_status, (call, info.value)
        assert call.reason
        assert work.to_json() == before  # a rejection changes nothing
        seen.add(call.expect_status)

    check()
    assert seen >= {400, 409}


def test_every_kind_of_rejection_is_drawn() -> None:
    t = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    queued = Work.create(
        id="work_1", environment_id="env_1", session_id="s", now=t, profile=QODER
    ).deliver(t, worker_id="w1")
    active, _ = queued.ack(t, worker_id="w1").heartbeat(t, expected_last_heartbeat=NO_HEARTBEAT)
    reasons: set[str] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(
        st.sampled_from([queued, active]).flatmap(
            lambda w: st.tuples(st.just(w), calls(w, legal=False))
        )
    )
    def check(pair: tuple[Work, Call]) -> None:
        work, call = pair
        with pytest.raises(WorkstateError) as info:
            call.apply(work)
        assert info.value.status == call.expect_status
        reasons.add(call.reason)

    check()
    for kind in (
        "is not allowed on a",
        "'NO_HEARTBEAT' is not the item's last_heartbeat",
        "Z' is not the item's last_heartbeat",
        "desired_ttl_seconds must be positive",
        "is neither NO_HEARTBEAT nor an RFC 3339 time",
        "breaks the metadata rules",
        "the lease has not run out yet",
        "earlier than the item's latest recorded time",
        "only the worker the item was delivered to may ack it",
    ):
        assert any(kind in reason for reason in reasons), kind


def test_no_early_expiry_is_drawn_for_a_lease_that_already_ran_out() -> None:
    """An item stopped after its lease's deadline (the lease lapsed, not yet expired) has no
    time at which an expiry is early: the strategy must not offer one (it drew one at the
    deadline, which is before the item's latest time, and expected 409 for a 400)."""
    t = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    active, _ = (
        Work.create(id="work_0", environment_id="env_0", session_id="s", now=t, profile=QODER)
        .deliver(t)
        .ack(t)
        .heartbeat(t, expected_last_heartbeat=NO_HEARTBEAT)
    )
    assert active.lease_expires_at is not None
    stopping = active.stop(active.lease_expires_at + dt.timedelta(microseconds=1))
    assert stopping.lease_expires_at is not None
    assert stopping.touched_at > stopping.lease_expires_at

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(calls(stopping, legal=False))
    def check(call: Call) -> None:
        assert call.reason != "the lease has not run out yet"
        with pytest.raises(WorkstateError) as info:
            call.apply(stopping)
        assert info.value.status == call.expect_status

    check()


@examples(40)
@given(works().flatmap(lambda w: st.tuples(st.just(w), calls(w))))
def test_calls_mix_legal_and_illegal(pair: tuple[Work, Call]) -> None:
    work, call = pair
    if call.expect_status == 200:
        call.apply(work)
    else:
        with pytest.raises(WorkstateError) as info:
            call.apply(work)
        assert info.value.status == call.expect_status


def test_call_renders_readably() -> None:
    t = dt.datetime(2026, 7, 1, 8, tzinfo=dt.UTC)
    call = Call(operation=Operation.HEARTBEAT, at=t, expected_last_heartbeat="NO_HEARTBEAT")
    assert (
        str(call)
        == "heartbeat(2026-07-01T08:00:00.000000Z, expected_last_heartbeat='NO_HEARTBEAT')"
    )


def test_every_call_operation_applies() -> None:
    t = dt.datetime(2026, 7, 1, 8, tzinfo=dt.UTC)
    w = Work.create(
        id="work_1", environment_id="env_1", session_id="sesn_1", now=t, profile=ACK_LEASE
    )
    sec = dt.timedelta(seconds=1)
    w, _ = Call(operation=Operation.DELIVER, at=t, worker_id="w").apply(w)
    w, _ = Call(operation=Operation.UPDATE_METADATA, at=t, patch={"a": "b"}).apply(w)
    w, _ = Call(operation=Operation.ACK, at=t + sec).apply(w)
    w, _ = Call(operation=Operation.EXPIRE, at=t + 1000 * sec).apply(w)
    assert w.state is State.QUEUED
    w, _ = Call(operation=Operation.ACK, at=t + 1001 * sec).apply(w)
    w, _ = Call(operation=Operation.STOP, at=t + 1002 * sec).apply(w)
    w, _ = Call(operation=Operation.FORCE_STOP, at=t + 1003 * sec).apply(w)
    assert w.state is State.STOPPED
    assert w.metadata == {"a": "b"}


@ALL_PROFILES
def test_metadata_patches_are_accepted(profile: object) -> None:
    @examples(40)
    @given(
        works(profile).flatmap(  # type: ignore[arg-type]
            lambda w: st.tuples(st.just(w), metadata_patches(w.metadata, profile=w.profile))
        )
    )
    def check(pair: tuple[Work, dict[str, str | None]]) -> None:
        work, patch = pair
        new = work.update_metadata(work.touched_at, patch)
        for key, value in patch.items():
            assert new.metadata.get(key) == value

    check()


@examples(20)
@given(metadata_patches())
def test_metadata_patches_on_empty_metadata_only_add(patch: dict[str, str | None]) -> None:
    assert None not in patch.values()


# ------------------------------------------------------------------------------ runs
@examples(30)
@given(runs(QODER, max_size=8))
def test_runs_replay_legal_calls(run: Run) -> None:
    steps = run.replay()
    assert len(steps) == len(run.calls)
    for step in steps:
        assert step.error is None
        assert invariant_violations(step.work) == []


@examples(30)
@given(runs(illegal=True, min_size=4, max_size=8, min_gap_seconds=1.0))
def test_runs_with_illegal_calls_leave_the_item_unchanged(run: Run) -> None:
    work = run.start
    for step in run.replay():
        if step.error is not None:
            assert step.error.status == step.call.expect_status
            assert step.work is work
        else:
            assert step.call.at - work.touched_at >= dt.timedelta(seconds=1)
        work = step.work


def test_runs_from_a_given_start_follow_its_profile() -> None:
    start = Work.create(
        id="work_1",
        environment_id="env_1",
        session_id="sesn_1",
        now=dt.datetime(2026, 7, 1, tzinfo=dt.UTC),
        profile=QODER,
    )

    @examples(10)
    @given(runs(start=start, max_size=3))
    def check(run: Run) -> None:
        assert run.start is start
        for step in run.replay():
            assert step.work.profile is QODER

    check()


@examples(20)
@given(traces(max_items=2, max_steps=5))
def test_traces_hold_snapshots_and_heartbeats(records: list[dict[str, object]]) -> None:
    ids = set()
    for record in records:
        if record["type"] == "work":
            ids.add(record["id"])
        else:
            assert record["type"] == "work_heartbeat"
            assert record["work_id"] in ids  # an item's creation comes first
    json.dumps(records)  # plain JSON


# ------------------------------------------------------------------------------ bad input
@ALL_PROFILES
@pytest.mark.parametrize("kind", BAD_WIRE_KINDS)
def test_bad_work_json_blames_the_right_key(profile: object, kind: str) -> None:
    @examples(15)
    @given(bad_work_json(profile, kinds=[kind]))  # type: ignore[arg-type]
    def check(bad: BadInput) -> None:
        assert bad.kind == kind
        with pytest.raises(InvalidInputError) as info:
            work_from_json(bad.value, profile=profile)  # type: ignore[arg-type]
        assert info.value.key == bad.key, (bad, info.value.message)
        assert info.value.status == 400

    check()


@examples(30)
@given(bad_work_json())
def test_bad_work_json_draws_every_kind_by_default(bad: BadInput) -> None:
    assert bad.kind in BAD_WIRE_KINDS
    with pytest.raises(InvalidInputError):
        work_from_json(bad.value)


def test_bad_work_json_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kinds must be among"):
        bad_work_json(kinds=["typo"])
    with pytest.raises(ValueError, match="kinds must be among"):
        bad_work_json(kinds=[])


def test_anthropic_is_the_default_profile() -> None:
    @examples(5)
    @given(works())
    def check(work: Work) -> None:
        assert work.profile is ANTHROPIC

    check()
