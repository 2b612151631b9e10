"""The table is the truth: the engine, the compiled lookup and the operations all agree with it."""

from __future__ import annotations

import itertools
import pathlib

import attrs
import pytest
from helpers import at, in_state

from workstate import (
    ANTHROPIC,
    MOVES,
    NO_HEARTBEAT,
    QODER,
    IllegalMoveError,
    LeaseEffect,
    Operation,
    PreconditionFailedError,
    Profile,
    Stamp,
    State,
    Work,
    allowed_operations,
    mermaid,
)
from workstate._engine import fire, lookup, machine
from workstate._table import Rule

PROFILES = [ANTHROPIC, QODER]
PAIRS = [(s, o) for s in State for o in Operation]


def _expected(profile: Profile, state: State, op: Operation) -> State | None:
    """Read the table by hand: the target of the row that applies, or None."""
    for mv in MOVES:
        applies = mv.when is None or getattr(profile, mv.when.value)
        if mv.source is state and mv.operation is op and applies:
            return mv.target
    return None


def test_lease_states_are_those_expiry_leaves() -> None:
    from workstate._table import LEASE_STATES

    assert {State.STARTING, State.ACTIVE, State.STOPPING} == LEASE_STATES


def test_table_has_no_duplicate_rows() -> None:
    keys = [(mv.source, mv.operation, mv.when) for mv in MOVES]
    assert len(keys) == len(set(keys))


def test_spec_cells() -> None:
    """Spot checks of spec §3, cell by cell, written independently of the table."""
    lk = lookup(ANTHROPIC)
    assert lk[(State.QUEUED, Operation.ACK)].target is State.STARTING
    assert lk[(State.STARTING, Operation.HEARTBEAT)].target is State.ACTIVE
    assert lk[(State.ACTIVE, Operation.STOP)].target is State.STOPPING
    assert lk[(State.STOPPING, Operation.EXPIRE)].target is State.STOPPED
    assert lk[(State.ACTIVE, Operation.EXPIRE)].target is State.QUEUED
    assert (State.STOPPING, Operation.ACK) not in lk
    assert (State.STOPPED, Operation.ACK) not in lk
    assert (State.QUEUED, Operation.EXPIRE) not in lk
    assert (State.STOPPED, Operation.STOP) not in lk
    assert (State.STOPPED, Operation.STOP) in lookup(QODER)
    assert (State.STOPPED, Operation.HEARTBEAT) not in lookup(QODER)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@pytest.mark.parametrize(("state", "op"), PAIRS, ids=lambda x: x.value)
def test_machine_lookup_and_table_agree(profile: Profile, state: State, op: Operation) -> None:
    expected = _expected(profile, state, op)
    assert fire(profile, state, op) is expected
    move = lookup(profile).get((state, op))
    assert (move.target if move else None) is expected
    assert (op in allowed_operations(profile, state)) is (expected is not None)


# Every setting of the flags the conditional rows read, as a custom profile could set them.
FLAG_PROFILES = [
    attrs.evolve(ANTHROPIC, **dict(zip((r.value for r in Rule), flags, strict=True)))
    for flags in itertools.product((False, True), repeat=len(Rule))
]


@pytest.mark.parametrize(
    "profile",
    FLAG_PROFILES,
    ids=lambda p: "-".join(r.name.lower() for r in Rule if getattr(p, r.value)) or "none",
)
def test_the_lookup_read_from_the_table_is_the_machine(profile: Profile) -> None:
    """``lookup`` reads the table without the machine; ``fire`` drives the machine: they agree."""
    for state, op in PAIRS:
        move = lookup(profile).get((state, op))
        assert (move.target if move else None) is fire(profile, state, op), (state, op)
        applying = [
            mv
            for mv in MOVES
            if mv.source is state
            and mv.operation is op
            and (mv.when is None or getattr(profile, mv.when.value))
            and (mv.unless is None or not getattr(profile, mv.unless.value))
        ]
        assert len(applying) <= 1, (state, op)  # never a choice between rows
        assert (move is None) if not applying else (move is applying[0])


def test_machine_is_strict_and_built_once() -> None:
    m = machine()
    assert m is machine()
    assert not m.auto_transitions
    assert not m.ignore_invalid_triggers
    assert set(m.events) == {op.value for op in Operation}


def _perform(w: Work, op: Operation, now_s: float) -> Work:
    now = at(now_s)
    if op is Operation.DELIVER:
        return w.deliver(now, worker_id="wk")
    if op is Operation.ACK:
        return w.ack(now)
    if op is Operation.HEARTBEAT:
        return w.heartbeat(now, expected_last_heartbeat=w.last_heartbeat or NO_HEARTBEAT)[0]
    if op is Operation.STOP:
        return w.stop(now)
    if op is Operation.FORCE_STOP:
        return w.stop(now, force=True)
    if op is Operation.EXPIRE:
        return w.expire(now)
    return w.update_metadata(now, {"k": "v"})


_STAMP_ATTR = {s: s.value for s in Stamp}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@pytest.mark.parametrize(("state", "op"), PAIRS, ids=lambda x: x.value)
def test_operations_apply_exactly_the_row(profile: Profile, state: State, op: Operation) -> None:
    """Every (state, operation) pair through the public operations: the row's effects, or 409."""
    before = in_state(state, profile)
    when = 1000.0  # past every lease deadline, so expire is due
    move = lookup(profile).get((state, op))
    if op is Operation.EXPIRE and before.lease_expires_at is None:
        move = None  # no lease to expire (an ack that starts none): refused like a missing row
    if move is None:
        with pytest.raises((IllegalMoveError, PreconditionFailedError)) as info:
            _perform(before, op, when)
        assert info.value.status in (409, 412)
        assert info.value.state is state
        assert info.value.operation is op
        return
    after = _perform(before, op, when)
    assert after.state is move.target
    if not move.changes:
        assert after is before
        return
    assert after.version == before.version + 1
    assert after.touched_at == at(when)
    for stamp, attr in _STAMP_ATTR.items():
        old, new = getattr(before, attr), getattr(after, attr)
        if stamp in move.sets:
            assert new == at(when), attr
        elif stamp in move.clears:
            assert new is None, attr
        else:
            assert new == old, attr
    if move.lease is LeaseEffect.START:
        lease = profile.ack_lease_seconds()
        assert after.lease_expires_at == (None if lease is None else at(when + lease))
        assert after.attempt == before.attempt + 1
    elif move.lease is LeaseEffect.EXTEND:
        assert after.lease_expires_at == at(when + profile.default_ttl_seconds)
        assert after.last_heartbeat is not None
    elif move.lease in (LeaseEffect.END, LeaseEffect.RELEASE):
        assert after.lease_expires_at is None
    else:
        assert after.lease_expires_at == before.lease_expires_at


DOC = pathlib.Path(__file__).parent.parent / "docs" / "lifecycle.md"


def test_committed_diagram_matches_the_table() -> None:
    text = DOC.read_text()
    start = text.index("```mermaid\n") + len("```mermaid\n")
    end = text.index("```", start)
    assert text[start:end] == mermaid(), "run `python -m workstate diagram --write` to refresh"
