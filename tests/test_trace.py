"""The trace checker: every core trace is explained; every mutated one is caught in place."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import os
from typing import Any

import attrs
import pytest
from helpers import ACK_LEASE
from hypothesis import given, settings
from hypothesis import strategies as st

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    Precision,
    Profile,
    Work,
    format_time,
    parse_time,
)
from workstate._trace import TraceChecker, TraceReport, TraceViolation, check_trace
from workstate.testing import heartbeat_record, traces

_THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
T0 = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)
STAMPS = ("acknowledged_at", "started_at", "latest_heartbeat_at", "stop_requested_at", "stopped_at")
PROFILES = pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=["anthropic", "qoder"])


def examples(n: int) -> settings:
    return settings(max_examples=n * 10 if _THOROUGH else n, deadline=None)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def new(profile: Profile = ANTHROPIC, work_id: str = "work_1") -> Work:
    return Work.create(
        id=work_id, environment_id="env_1", session_id="sesn_1", now=T0, profile=profile
    )


def active(profile: Profile = ANTHROPIC) -> tuple[Work, Work, Work]:
    """queued (t=0), starting (t=1), active (t=2)."""
    w0 = new(profile)
    w1 = w0.ack(at(1))
    w2, _ = w1.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT)
    return w0, w1, w2


def only(report: TraceReport) -> TraceViolation:
    assert len(report.violations) == 1, report.format()
    return report.violations[0]


# ------------------------------------------------------------------------------ properties
@PROFILES
@pytest.mark.parametrize("complete", [False, True], ids=["sampled", "complete"])
def test_every_core_trace_is_explained(profile: Profile, complete: bool) -> None:
    @examples(40)
    @given(traces(profile, complete=complete))
    def check(records: list[dict[str, Any]]) -> None:
        report = check_trace(records, profile=profile, complete=complete)
        assert report.ok, report.format()
        assert report.records == len(records)

    check()


def _item_positions(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        out.setdefault(record.get("id") or record["work_id"], []).append(i)
    return out


def _times(record: dict[str, Any]) -> list[dt.datetime]:
    keys = ("created_at", *STAMPS)
    return [parse_time(record[k]) for k in keys if record[k] is not None]


_MUTABLE = traces(max_items=2, max_steps=8, heartbeats=False, min_gap_seconds=1.0)


@PROFILES
def test_a_changed_set_once_field_is_caught_in_place(profile: Profile) -> None:
    @examples(40)
    @given(
        traces(profile, max_items=2, max_steps=8, min_gap_seconds=1.0),
        st.data(),
        st.sampled_from(["environment_id", "data", "created_at"]),
    )
    def check(records: list[dict[str, Any]], data: st.DataObject, key: str) -> None:
        snapshots = [
            i
            for positions in _item_positions(records).values()
            for i in positions[1:]
            if records[i]["type"] == "work"
        ]
        if not snapshots:
            return
        i = data.draw(st.sampled_from(snapshots))
        mutated = copy.deepcopy(records)
        record = mutated[i]
        if key == "environment_id":
            record[key] = "env_other"
        elif key == "data":
            record[key] = {"type": "session", "id": "sesn_other"}
        else:  # earlier, so that no invariant breaks
            earlier = parse_time(record[key]) - dt.timedelta(days=1)
            record[key] = format_time(earlier, profile.lifecycle_precision)
        report = check_trace(mutated, profile=profile)
        assert report.violations[0].index == i, report.format()
        assert ("set-once", key) in {(v.rule, v.key) for v in report.violations if v.index == i}

    check()


@PROFILES
def test_a_timestamp_moved_back_is_caught_in_place(profile: Profile) -> None:
    @examples(40)
    @given(traces(profile, max_items=2, max_steps=8, min_gap_seconds=1.0), st.data())
    def check(records: list[dict[str, Any]], data: st.DataObject) -> None:
        choices = []
        for positions in _item_positions(records).values():
            snaps = [i for i in positions if records[i]["type"] == "work"]
            for before, i in itertools.pairwise(snaps):
                for key in STAMPS:
                    if records[i][key] is not None:
                        choices.append((before, i, key))
        if not choices:
            return
        before, i, key = data.draw(st.sampled_from(choices))
        mutated = copy.deepcopy(records)
        precision = Precision.MICROSECONDS if key == "latest_heartbeat_at" else None
        second = dt.timedelta(seconds=1)
        # Before the latest time already reached, and neither value the timestamp had.
        back = min(parse_time(records[i][key]), max(_times(records[before]))) - second
        while format_time(back, precision or profile.lifecycle_precision) == records[before][key]:
            back -= second
        mutated[i][key] = format_time(back, precision or profile.lifecycle_precision)
        report = check_trace(mutated, profile=profile)
        assert not report.ok
        assert report.violations[0].index == i, report.format()

    check()


@PROFILES
def test_swapped_steps_are_caught_in_place(profile: Profile) -> None:
    @examples(60)
    @given(
        traces(profile, max_items=2, max_steps=8, heartbeats=False, min_gap_seconds=1.0), st.data()
    )
    def check(records: list[dict[str, Any]], data: st.DataObject) -> None:
        pairs = [
            (p, q)
            for positions in _item_positions(records).values()
            for p, q in itertools.pairwise(positions)
            if records[p] != records[q]
        ]
        if not pairs:
            return
        p, q = data.draw(st.sampled_from(pairs))
        mutated = list(records)
        mutated[p], mutated[q] = records[q], records[p]
        report = check_trace(mutated, profile=profile)
        # Going from the later record back to the earlier one needs a timestamp to be set
        # again in the past, when the earlier record holds one the later does not.
        earlier, later = records[p], records[q]
        guaranteed = any(
            earlier[key] is not None
            and earlier[key] != later[key]
            and parse_time(earlier[key]) + dt.timedelta(seconds=1) <= max(_times(later))
            for key in STAMPS
        )
        if guaranteed:
            assert not report.ok
        if not report.ok:
            assert report.violations[0].index >= q, report.format()
        if guaranteed:
            assert report.violations[0].index == q, report.format()

    check()


@PROFILES
def test_a_dropped_step_is_caught_in_a_complete_trace(profile: Profile) -> None:
    caught = []

    @examples(80)
    @given(
        traces(
            profile, max_items=2, max_steps=8, complete=True, heartbeats=False, min_gap_seconds=1.0
        ),
        st.data(),
    )
    def check(records: list[dict[str, Any]], data: st.DataObject) -> None:
        triples = [
            (a, b, c)
            for positions in _item_positions(records).values()
            for a, b, c in zip(positions, positions[1:], positions[2:], strict=False)
        ]
        if not triples:
            return
        a, b, c = data.draw(st.sampled_from(triples))
        mutated = records[:b] + records[b + 1 :]
        report = check_trace(mutated, profile=profile, complete=True)
        assert check_trace(mutated, profile=profile).ok  # several operations may explain a gap
        before, after = records[a], records[c]
        # Two new timestamps in different seconds (stopped_at aside: an expiry may set it)
        # need two client operations; so does a new timestamp plus a metadata change.
        fresh = {
            parse_time(after[key]).replace(microsecond=0)
            for key in STAMPS[:4]
            if after[key] is not None and after[key] != before[key]
        }
        guaranteed = len(fresh) >= 2 or (fresh and after["metadata"] != before["metadata"])
        if guaranteed:
            assert not report.ok
            assert report.violations[0].index == c - 1, report.format()
            caught.append(report.violations[0].rule)
        if not report.ok:
            assert report.violations[0].index >= c - 1, report.format()

    check()
    assert caught  # the property was not vacuous


# ------------------------------------------------------------------------------ diagnoses
def test_an_explained_trace_reports_ok() -> None:
    w0, _w1, w2 = active()
    w3, beat = w2.heartbeat(at(3), expected_last_heartbeat=w2.last_heartbeat)
    records = [w0.to_json(), w2.to_json(), heartbeat_record(w3.id, beat), w3.stop(at(4)).to_json()]
    report = check_trace(records)
    assert report.ok
    assert report.work_ids == ("work_1",)
    assert report.records == 4
    assert report.format(source="t.jsonl") == (
        "t.jsonl: 4 records, 1 work item (profile anthropic)\n"
        "t.jsonl: explained: some sequence of legal operations explains it"
    )


def test_time_moved_backwards_is_named() -> None:
    _, _, w2 = active()
    w3, _ = w2.heartbeat(at(5), expected_last_heartbeat=w2.last_heartbeat)
    v = only(check_trace([w3.to_json(), w2.to_json()]))
    assert (v.index, v.rule, v.key) == (1, "timestamp-backwards", "latest_heartbeat_at")
    assert v.message == (
        "latest_heartbeat_at moved backwards from 2026-07-01T08:00:05.000000Z to "
        "2026-07-01T08:00:02.000000Z"
    )


def test_a_new_timestamp_before_the_lease_could_expire_is_named() -> None:
    _, _, w2 = active()
    expired = w2.expire(at(200))
    again = expired.ack(at(201)).to_json()
    again["acknowledged_at"] = format_time(at(5))  # re-acked 3 s after the heartbeat
    v = only(check_trace([w2.to_json(), expired.to_json(), again]))
    assert (v.index, v.rule, v.key) == (2, "timestamp-backwards", "acknowledged_at")
    assert "earlier than 2026-07-01T08:00:12.000001Z" in v.message


def test_a_vanished_timestamp_is_named() -> None:
    _, _, w2 = active()
    stopping = w2.stop(at(3))
    stopped = stopping.stop(at(4)).to_json()
    stopped["stop_requested_at"] = None
    v = only(check_trace([stopping.to_json(), stopped]))
    assert (v.rule, v.key) == ("timestamp-vanished", "stop_requested_at")
    assert v.message.endswith("and is now null; nothing clears it")

    bad = stopping.to_json()
    bad["started_at"] = bad["latest_heartbeat_at"] = None  # sound alone: stopping may lack them
    report = check_trace([w2.to_json(), bad])
    assert {(v.rule, v.key) for v in report.violations} == {
        ("timestamp-vanished", "started_at"),
        ("timestamp-vanished", "latest_heartbeat_at"),
    }
    assert "that clears acknowledged_at too" in report.violations[0].message


def test_a_changed_timestamp_is_named() -> None:
    w0 = new()
    done = w0.stop(at(1)).to_json()
    later = dict(done, stopped_at=format_time(at(9)))
    v = only(check_trace([done, later]))
    assert (v.rule, v.key) == ("timestamp-changed", "stopped_at")
    assert v.message.endswith("it is set once and never changes")

    w1 = new(ACK_LEASE).ack(at(1)).to_json()
    # re-acked at 30 s: a heartbeat asking for 10 s, a lapse at 11 s and a new ack explain it
    assert check_trace([w1, dict(w1, acknowledged_at=format_time(at(30)))], profile=ACK_LEASE).ok
    v = only(check_trace([w1, dict(w1, acknowledged_at=format_time(at(5)))], profile=ACK_LEASE))
    assert (v.rule, v.key) == ("timestamp-changed", "acknowledged_at")
    assert v.message.endswith("the lease ran until 2026-07-01T08:00:11.000000Z at the earliest")


def test_an_unexplained_change_says_so() -> None:
    w0 = new(ACK_LEASE)
    w1 = w0.ack(at(1))
    expired = w1.expire(at(200)).to_json()
    report = check_trace([w1.to_json(), expired, dict(expired, metadata={})], profile=ACK_LEASE)
    assert report.ok  # expiry at 200 s is fine

    w2 = w1.stop(at(2), force=True).to_json()
    odd = dict(w2, acknowledged_at=None)  # a stopped item that lost its ack (legal alone)
    assert only(check_trace([w1.to_json(), odd], complete=True)).rule == "unexplained"
    v = only(check_trace([w1.to_json(), odd]))
    assert v.rule == "unexplained"
    assert v.message.startswith(
        "no sequence of legal operations leads from starting "
        "(acknowledged_at=2026-07-01T08:00:01.000000Z) to stopped"
    )


def test_set_once_fields_and_invariants_are_listed() -> None:
    w0, w1, _ = active()
    moved = dict(w1.to_json(), environment_id="env_2", data={"type": "session", "id": "sesn_9"})
    report = check_trace([w0.to_json(), moved])
    assert [(v.rule, v.key) for v in report.violations] == [
        ("set-once", "environment_id"),
        ("set-once", "data"),
    ]
    assert report.violations[1].message == (
        "data changed from {'type': 'session', 'id': 'sesn_1'} to "
        "{'type': 'session', 'id': 'sesn_9'}; it is set once, when the item is created"
    )
    broken = dict(w0.to_json(), acknowledged_at=format_time(at(-5)), stopped_at=format_time(at(1)))
    report = check_trace([w0.to_json(), broken])
    assert {v.rule for v in report.violations} == {"invariant"}
    assert {v.key for v in report.violations} >= {"acknowledged_at", "stopped_at"}
    assert all(v.index == 1 for v in report.violations)


def test_a_created_at_change_is_reported_readably() -> None:
    w0 = new()
    v = only(check_trace([w0.to_json(), dict(w0.to_json(), created_at=format_time(at(-60)))]))
    assert v.message == (
        "created_at changed from '2026-07-01T08:00:00.000000Z' to "
        "'2026-07-01T07:59:00.000000Z'; it is set once, when the item is created"
    )


def test_malformed_records_are_reported_and_skipped() -> None:
    w0, w1, _ = active()
    missing = w1.to_json()
    del missing["state"]
    report = check_trace(
        [
            w0.to_json(),
            missing,
            [1, 2],
            {"type": "other"},
            "{not json",
            json.dumps(w1.to_json()),
            {"type": "work_heartbeat", "last_heartbeat": ""},
            {"type": "work_heartbeat", "work_id": "work_1", "state": "active"},
            dict(missing, id=5),
            dict(w1.to_json(), metadata={"k": 1}, started_at=format_time(at(1))),
        ]
    )
    assert [(v.index, v.rule, v.key) for v in report.violations] == [
        (1, "malformed", "state"),
        (2, "malformed", None),
        (3, "malformed", "type"),
        (4, "malformed", None),
        (6, "malformed", "work_id"),
        (7, "malformed", "last_heartbeat"),
        (8, "malformed", "state"),
        (9, "malformed", "metadata.k"),
    ]
    assert report.violations[2].message.startswith("record type 'other' is neither 'work'")
    assert report.violations[3].message.startswith("not JSON: ")
    assert report.violations[6].work_id is None


def test_heartbeat_answers_are_checked_on_their_own() -> None:
    beat = {
        "type": "work_heartbeat",
        "work_id": "work_1",
        "last_heartbeat": format_time(at(2)),
        "lease_extended": True,
        "state": "stopping",
        "ttl_seconds": 5,
    }
    report = check_trace([beat, dict(beat, last_heartbeat="")])
    assert [(v.index, v.rule, v.key) for v in report.violations] == [
        (0, "heartbeat", "state"),
        (0, "heartbeat", "ttl_seconds"),
        (1, "heartbeat", "state"),
        (1, "heartbeat", "last_heartbeat"),
        (1, "heartbeat", "ttl_seconds"),
    ]
    quiet = dict(beat, lease_extended=False, state="active", ttl_seconds=60)
    v = only(check_trace([quiet]))
    assert v.message == (
        "a heartbeat answered without extending the lease happens only on a stopped, stopping "
        "item under profile anthropic, but the answer says active"
    )
    stopped = dict(quiet, state="stopped")
    assert check_trace([stopped]).ok
    assert only(check_trace([stopped], profile=QODER)).rule == "heartbeat"


def test_heartbeats_are_placed_between_snapshots() -> None:
    w0, w1, w2 = active()
    w3, b3 = w2.heartbeat(at(10), expected_last_heartbeat=w2.last_heartbeat, desired_ttl_seconds=30)
    w4 = w3.stop(at(11))
    _, quiet = w4.heartbeat(at(12))
    records = [
        w0.to_json(),
        heartbeat_record(w3.id, b3),
        heartbeat_record(w4.id, quiet),
        w4.to_json(),
    ]
    assert check_trace(records).ok
    assert check_trace(records[:3]).ok  # trailing answers are judged at the end
    # an extended heartbeat with a time before what the item already reached
    early = dict(heartbeat_record(w3.id, b3), last_heartbeat=format_time(at(0.5)))
    v = only(check_trace([w1.to_json(), early, w4.to_json()]))
    assert (v.index, v.rule) == (1, "timestamp-backwards")
    assert v.message.startswith("last_heartbeat 2026-07-01T08:00:00.500000Z is earlier than")
    # a quiet heartbeat whose token is not the item's
    wrong = dict(heartbeat_record(w4.id, quiet), last_heartbeat=format_time(at(9)))
    v = only(check_trace([w4.to_json(), wrong]))
    assert (v.index, v.rule, v.key) == (1, "heartbeat", "last_heartbeat")
    # a quiet heartbeat reporting another TTL than the one the item had: stopped while
    # starting, it had the TTL of its ack (an unseen heartbeat would have left a token)
    stopped_early = w1.stop(at(3))
    _, quiet_early = stopped_early.heartbeat(at(4))
    assert quiet_early.ttl_seconds == 120
    good = heartbeat_record("work_1", quiet_early)
    assert check_trace([w1.to_json(), good]).ok
    v = only(check_trace([w1.to_json(), dict(good, ttl_seconds=31)]))
    assert (v.index, v.rule) == (1, "heartbeat")
    assert v.message == (
        "a heartbeat answer in state stopping reports last_heartbeat '' and ttl_seconds 31, "
        "which are not the item's latest heartbeat and lease"
    )


def test_heartbeats_on_items_that_cannot_beat_are_illegal() -> None:
    w0 = new()
    stopped = w0.stop(at(1))
    beat = {
        "type": "work_heartbeat",
        "work_id": "work_1",
        "last_heartbeat": format_time(at(2)),
        "lease_extended": True,
        "state": "active",
        "ttl_seconds": 60,
    }
    v = only(check_trace([stopped.to_json(), beat]))
    assert (v.index, v.rule) == (1, "illegal-state-change")
    assert "a heartbeat extended the lease, but the item was stopped" in v.message
    quiet = dict(beat, lease_extended=False, state="stopping", last_heartbeat="")
    v = only(check_trace([stopped.to_json(), quiet]))
    assert (v.index, v.rule) == (1, "illegal-state-change")
    assert v.message == (
        "a heartbeat answer says the item is stopping, but it was stopped and no legal "
        "operations lead there"
    )


def test_a_heartbeat_is_judged_with_the_snapshot_after_it() -> None:
    w0, _, w2 = active()
    beat = {
        "type": "work_heartbeat",
        "work_id": "work_1",
        "last_heartbeat": format_time(at(3)),
        "lease_extended": True,
        "state": "active",
        "ttl_seconds": 60,
    }
    # the heartbeat at 3 s is possible, but then the item cannot show its latest one at 2 s
    report = check_trace([w0.to_json(), beat, w2.to_json()])
    assert [(v.index, v.rule, v.key) for v in report.violations] == [
        (2, "timestamp-backwards", "started_at"),
        (2, "timestamp-backwards", "latest_heartbeat_at"),
    ]


def test_complete_traces_notice_missing_steps() -> None:
    w0, w1, w2 = active()
    v = only(check_trace([w0.to_json(), w2.to_json()], complete=True))
    assert (v.index, v.rule) == (1, "missing-step")
    assert "needs more than one client operation" in v.message
    assert check_trace([w0.to_json(), w1.to_json(), w2.to_json()], complete=True).ok

    patched = w1.update_metadata(at(1.5), {"a": "b"})
    assert check_trace([w0.to_json(), w1.to_json(), patched.to_json()], complete=True).ok
    v = only(check_trace([w0.to_json(), patched.to_json()], complete=True))
    assert v.rule == "missing-step"

    _, beat = w1.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT)
    v = only(check_trace([w0.to_json(), heartbeat_record("work_1", beat)], complete=True))
    assert (v.index, v.rule) == (1, "missing-step")
    assert "a heartbeat extended the lease of an item that was queued" in v.message
    stopped = w0.stop(at(1))
    v = only(check_trace([w0.to_json(), stopped.to_json(), w1.to_json()], complete=True))
    assert v.rule == "illegal-state-change"


def test_expiries_need_no_record_in_a_complete_trace() -> None:
    _w0, _w1, w2 = active()
    again = w2.expire(at(500)).ack(at(501))
    assert check_trace([w2.to_json(), again.to_json()], complete=True).ok
    stopping = w2.stop(at(3))
    lapsed = stopping.expire(at(500))
    assert check_trace([stopping.to_json(), lapsed.to_json()], complete=True).ok
    too_soon = stopping.expire(at(500)).to_json()
    too_soon["stopped_at"] = format_time(at(20))  # the lease ran until 12 s at least... and more
    assert check_trace([stopping.to_json(), too_soon], complete=True).ok  # 10 s TTL possible


def test_heartbeats_before_the_first_snapshot() -> None:
    _, _, w2 = active()
    w3, b3 = w2.heartbeat(at(3), expected_last_heartbeat=w2.last_heartbeat)
    w4, b4 = w3.heartbeat(at(4), expected_last_heartbeat=w3.last_heartbeat)
    first, second = heartbeat_record("work_1", b3), heartbeat_record("work_1", b4)
    assert check_trace([first, second, w4.to_json()]).ok
    v = only(check_trace([second, first]))
    assert (v.index, v.rule, v.key) == (1, "timestamp-backwards", "last_heartbeat")
    v = only(check_trace([second, w3.to_json()]))
    assert (v.index, v.rule, v.key) == (1, "timestamp-backwards", "latest_heartbeat_at")
    assert check_trace([dict(second, lease_extended=False, state="stopping")]).ok


def test_items_are_followed_separately() -> None:
    a0, a1, a2 = active()
    b0 = new(work_id="work_2")
    b1 = b0.stop(at(1))
    records = [a0.to_json(), b0.to_json(), a1.to_json(), b1.to_json(), a2.to_json(), b0.to_json()]
    report = check_trace(records)
    assert report.work_ids == ("work_1", "work_2")
    v = only(report)
    assert (v.index, v.work_id, v.rule) == (5, "work_2", "illegal-state-change")
    assert str(v) == (
        "record 5 (work_2): illegal-state-change: illegal state change stopped → queued: no "
        "sequence of legal operations leads from stopped to queued"
    )


def test_qoder_precision_is_respected() -> None:
    w0, w1, w2 = active(QODER)
    assert w1.acknowledged_at == at(1)
    records = [w0.to_json(), w2.to_json()]
    assert check_trace(records, profile=QODER).ok
    micro = dict(w2.to_json(), started_at="2026-07-01T08:00:02.500000Z")
    assert only(check_trace([w0.to_json(), micro], profile=QODER)).rule == "invariant"


def test_the_checker_feeds_incrementally() -> None:
    w0, w1, w2 = active()
    checker = TraceChecker()
    assert checker.feed(w0.to_json()) == []
    assert checker.feed(w2.to_json()) == []
    found = checker.feed(w1.to_json())
    assert [v.rule for v in found] == ["timestamp-vanished", "timestamp-vanished"]
    report = checker.finish()
    assert checker.finish() == report
    with pytest.raises(ValueError, match="has finished"):
        checker.feed(w0.to_json())


def test_the_report_maps_records_to_lines() -> None:
    w0 = new()
    report = check_trace([w0.to_json(), w0.stop(at(1)).to_json(), w0.to_json()])
    assert report.format(source="f", lines=[3, 5, 9]) == (
        "f: 3 records, 1 work item (profile anthropic)\n"
        "  line 9 (work_1): illegal-state-change: illegal state change stopped → queued: no "
        "sequence of legal operations leads from stopped to queued\n"
        "f: not explained: 1 violation"
    )
    no_id = check_trace([[1]], complete=True)
    assert no_id.format().splitlines() == [
        "trace: 1 record, 0 work items (profile anthropic, complete)",
        "  record 0: malformed: a record must be a JSON object, got list",
        "trace: not explained: 1 violation",
    ]
    assert (
        str(no_id.violations[0]) == "record 0: malformed: a record must be a JSON object, got list"
    )


def test_heartbeat_record_accepts_objects_and_mappings() -> None:
    _, w1, _ = active()
    _, beat = w1.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT)
    record = heartbeat_record("work_1", beat)
    assert record == heartbeat_record("work_1", beat.to_json())
    assert list(record)[:2] == ["type", "work_id"]


def test_snapshots_after_a_bad_one_continue_from_the_last_good_one() -> None:
    w0, w1, w2 = active()
    broken = attrs.evolve(w1).to_json()
    broken["started_at"] = format_time(at(1))  # starting with a start: inconsistent
    report = check_trace([w0.to_json(), broken, w2.to_json()])
    assert {v.index for v in report.violations} == {1}
