"""Hypothesis properties of the core: any sequence of operations keeps every invariant."""

from __future__ import annotations

import datetime as dt
from typing import Any

from helpers import T0
from hypothesis import given
from hypothesis import strategies as st

from workstate import (
    NO_HEARTBEAT,
    PROFILES,
    Operation,
    Stamp,
    Work,
    WorkstateError,
    invariant_violations,
    work_from_json,
    work_to_json,
)

OPS = st.sampled_from(list(Operation))
STEP = st.tuples(
    OPS,
    st.integers(min_value=0, max_value=200_000_000),  # microseconds since the previous step
    st.sampled_from(["right", "none", NO_HEARTBEAT, "stale"]),  # heartbeat token choice
    st.one_of(st.none(), st.integers(min_value=1, max_value=1000)),  # desired TTL
    st.sampled_from(["w1", "w2"]),
)


def apply(
    w: Work, op: Operation, now: dt.datetime, token: str, ttl: int | None, worker: str
) -> Work:
    if op is Operation.DELIVER:
        return w.deliver(now, worker_id=worker)
    if op is Operation.ACK:
        return w.ack(now, worker_id=worker)
    if op is Operation.HEARTBEAT:
        expected = {
            "right": w.last_heartbeat or NO_HEARTBEAT,
            "none": None,
            NO_HEARTBEAT: NO_HEARTBEAT,
            "stale": "2000-01-01T00:00:00.000000Z",
        }[token]
        return w.heartbeat(now, expected_last_heartbeat=expected, desired_ttl_seconds=ttl)[0]
    if op is Operation.STOP:
        return w.stop(now)
    if op is Operation.FORCE_STOP:
        return w.stop(now, force=True)
    if op is Operation.EXPIRE:
        return w.expire(now)
    return w.update_metadata(now, {worker: token})


def stamps(w: Work) -> dict[str, Any]:
    return {s.value: getattr(w, s.value) for s in Stamp}


@given(st.sampled_from(sorted(PROFILES)), st.lists(STEP, max_size=40))
def test_any_sequence_keeps_every_invariant(profile_name: str, steps: list[Any]) -> None:
    profile = PROFILES[profile_name]
    w = Work.create(id="work_p", environment_id="env_p", session_id="s", now=T0, profile=profile)
    now = T0
    for op, delta, token, ttl, worker in steps:
        now = now + dt.timedelta(microseconds=delta)
        before = w
        wire_before = work_to_json(before, include_secret=True)
        refused: WorkstateError | None = None
        try:
            w = apply(w, op, now, token, ttl, worker)
        except WorkstateError as err:
            refused = err
        if refused is not None:  # a rejection is one of ours and leaves the item as it was
            assert refused.status in (400, 409, 412)
            assert work_to_json(before, include_secret=True) == wire_before
            continue
        assert invariant_violations(w) == [], invariant_violations(w)
        if w is before:
            continue
        # version grows by exactly one per change; the change happened now
        assert w.version == before.version + 1
        assert w.touched_at == now >= before.touched_at
        # timestamps never move backwards: each is unchanged, newly set, or cleared by expiry
        for key, old in stamps(before).items():
            new = stamps(w)[key]
            if old is not None and new is not None:
                assert new >= old, key
            if old is not None and new is None:
                assert op is Operation.EXPIRE, key
        # the wire round-trips
        wire = work_to_json(w)
        assert work_to_json(work_from_json(wire, profile=profile)) == wire
