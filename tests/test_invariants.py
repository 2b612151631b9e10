"""The invariant checker lists every broken rule of a record, naming the key."""

from __future__ import annotations

import attrs
import pytest
from helpers import at, in_state, new

from workstate import QODER, State, Work, invariant_violations


def rules(w: Work, **changes: object) -> set[tuple[str, str]]:
    return {(v.key, v.rule) for v in invariant_violations(attrs.evolve(w, **changes))}


@pytest.mark.parametrize("state", list(State))
def test_operations_produce_sound_records(state: State) -> None:
    assert invariant_violations(in_state(state)) == []
    assert invariant_violations(in_state(state, QODER)) == []


def test_each_rule_is_reported() -> None:
    active = in_state(State.ACTIVE)
    assert ("started_at", "null-in-state") in rules(active, started_at=None)
    assert ("started_at", "pair") in rules(active, started_at=None)
    assert ("stop_requested_at", "set-in-state") in rules(active, stop_requested_at=at(3))
    assert ("started_at", "order") in rules(active, started_at=at(0.5))
    assert ("lease_expires_at", "lease") in rules(active, lease_expires_at=None)
    assert ("last_heartbeat", "token") in rules(active, last_heartbeat="x")
    assert ("ttl_seconds", "lease") in rules(active, ttl_seconds=None)
    assert ("ttl_seconds", "limit") in rules(active, ttl_seconds=9999)
    assert ("attempt", "attempt") in rules(active, attempt=0)
    assert ("version", "version") in rules(active, version=0)
    assert ("latest_heartbeat_at", "touched") in rules(active, touched_at=at(1))
    assert ("delivered_at", "delivery") in rules(active, delivered_at=at(1))
    stopped = in_state(State.STOPPED)
    assert ("stop_requested_at", "needs-ack") in rules(
        stopped,
        acknowledged_at=None,
        started_at=None,
        latest_heartbeat_at=None,
        last_heartbeat=None,
    )
    q = in_state(State.ACTIVE, QODER)
    assert ("acknowledged_at", "precision") in rules(q, acknowledged_at=at(1.5))
    body = attrs.evolve(q.body, metadata={"": "v", "k": "v" * 600, "n": 3})
    found = rules(q, body=body)
    assert {("metadata.", "limit"), ("metadata.k", "limit"), ("metadata.n", "type")} <= found
    many = attrs.evolve(q.body, metadata={f"k{i}": "v" for i in range(20)})
    assert ("metadata", "limit") in rules(q, body=many)


def test_every_problem_is_listed_not_just_the_first() -> None:
    w = new()
    broken = attrs.evolve(w, acknowledged_at=at(1), stopped_at=at(2))
    assert len(invariant_violations(broken)) >= 2
    assert invariant_violations(broken, private=False)
    assert all(v.message for v in invariant_violations(broken))
