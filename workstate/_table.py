"""The table of moves: the one place where the legality of every operation lives.

Theory of operation
-------------------
A work item is in one of five :class:`State` values.  Every operation a server (or a test)
can apply to an item is an :class:`Operation`.  :data:`MOVES` declares, row by row, every
legal (state, operation) pair: where it leads, which lifecycle timestamps it sets or clears,
what it does to the lease, and whether it changes the item at all.  A pair with no row is
illegal (409).  A few rows apply only when a :class:`~workstate.Profile` says so (spec §7):
they name the profile flag in ``when`` (the row applies when the flag is true) or ``unless``
(the row applies when it is false), so a pair has at most one row under any profile.

Everything else is derived from this table: the ``transitions`` engine (``_engine``), the
compiled lookup that operations consult, the Mermaid diagram in ``docs/lifecycle.md`` and the
exhaustive tests.  Nothing else may decide a state.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["LEASE_STATES", "MOVES", "LeaseEffect", "Move", "Operation", "Rule", "Stamp", "State"]


class State(enum.Enum):
    """The state of a work item; values are the API's wire strings."""

    QUEUED = "queued"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def is_live(self) -> bool:
        """Whether the item can still move (every state but ``stopped``)."""
        return self is not State.STOPPED


class Operation(enum.Enum):
    """An operation on an existing work item; values are the names used in errors and traces."""

    DELIVER = "deliver"
    ACK = "ack"
    HEARTBEAT = "heartbeat"
    STOP = "stop"
    FORCE_STOP = "force_stop"
    EXPIRE = "expire"
    UPDATE_METADATA = "update_metadata"


class Stamp(enum.Enum):
    """A lifecycle timestamp of a work item; values are the wire keys."""

    ACKNOWLEDGED_AT = "acknowledged_at"
    STARTED_AT = "started_at"
    LATEST_HEARTBEAT_AT = "latest_heartbeat_at"
    STOP_REQUESTED_AT = "stop_requested_at"
    STOPPED_AT = "stopped_at"


class LeaseEffect(enum.Enum):
    """What a move does to the server's lease on the item."""

    KEEP = "keep"
    """Nothing changes."""
    START = "start"
    """A new lease with the profile's default TTL, no heartbeat token yet (ack)."""
    EXTEND = "extend"
    """A new deadline at ``now + ttl`` and a new ``last_heartbeat`` token (heartbeat)."""
    END = "end"
    """No deadline and no pending delivery any more; the token and TTL stay for later reads."""
    RELEASE = "release"
    """Everything of this attempt is forgotten: deadline, token, TTL, delivery (expiry)."""


class Rule(enum.Enum):
    """A profile flag that a conditional row of the table depends on (spec §7).

    The value is the name of the boolean :class:`~workstate.Profile` attribute.
    """

    STOP_STOPPED_IS_NOOP = "stop_stopped_is_noop"
    HEARTBEAT_STOPPED_IS_NOOP = "heartbeat_stopped_is_noop"
    STOP_STARTING_IS_IMMEDIATE = "stop_starting_is_immediate"


@attrs.frozen(kw_only=True)
class Move:
    """One legal (state, operation) pair and its effects."""

    source: State
    """The state the item is in."""
    operation: Operation
    """The operation applied."""
    target: State
    """The state the item is in afterwards."""
    sets: frozenset[Stamp] = frozenset()
    """Timestamps set to the operation's time."""
    clears: frozenset[Stamp] = frozenset()
    """Timestamps set back to null."""
    lease: LeaseEffect = LeaseEffect.KEEP
    """What happens to the lease."""
    changes: bool = True
    """False for the answers that leave the item exactly as it was (a safe retry)."""
    when: Rule | None = None
    """The profile flag this row needs true; None when the row does not need one."""
    unless: Rule | None = None
    """The profile flag this row needs false; None when the row does not need one."""
    note: str = ""
    """One line of prose for the docs."""


def _m(
    source: State,
    operation: Operation,
    target: State,
    *,
    sets: tuple[Stamp, ...] = (),
    clears: tuple[Stamp, ...] = (),
    lease: LeaseEffect = LeaseEffect.KEEP,
    changes: bool = True,
    when: Rule | None = None,
    unless: Rule | None = None,
    note: str = "",
) -> Move:
    return Move(
        source=source,
        operation=operation,
        target=target,
        sets=frozenset(sets),
        clears=frozenset(clears),
        lease=lease,
        changes=changes,
        when=when,
        unless=unless,
        note=note,
    )


_Q, _S, _A, _SG, _SD = State.QUEUED, State.STARTING, State.ACTIVE, State.STOPPING, State.STOPPED
_ATTEMPT = (Stamp.ACKNOWLEDGED_AT, Stamp.STARTED_AT, Stamp.LATEST_HEARTBEAT_AT)

MOVES: tuple[Move, ...] = (
    # deliver: a poll hands a queued item to a worker; the state does not change.
    _m(_Q, Operation.DELIVER, _Q, note="a poll hands the item out; it stays queued"),
    # ack
    _m(
        _Q,
        Operation.ACK,
        _S,
        sets=(Stamp.ACKNOWLEDGED_AT,),
        lease=LeaseEffect.START,
        note="the worker claims the item; the lease starts",
    ),
    _m(_S, Operation.ACK, _S, changes=False, note="a safe retry"),
    _m(_A, Operation.ACK, _A, changes=False, note="a safe retry"),
    # heartbeat (the token precondition is checked before the table is consulted)
    _m(
        _S,
        Operation.HEARTBEAT,
        _A,
        sets=(Stamp.STARTED_AT, Stamp.LATEST_HEARTBEAT_AT),
        lease=LeaseEffect.EXTEND,
        note="the first heartbeat starts the work",
    ),
    _m(
        _A,
        Operation.HEARTBEAT,
        _A,
        sets=(Stamp.LATEST_HEARTBEAT_AT,),
        lease=LeaseEffect.EXTEND,
        note="the lease is extended",
    ),
    _m(
        _SG,
        Operation.HEARTBEAT,
        _SG,
        changes=False,
        note="answered with state stopping, lease not extended",
    ),
    _m(
        _SD,
        Operation.HEARTBEAT,
        _SD,
        changes=False,
        when=Rule.HEARTBEAT_STOPPED_IS_NOOP,
        note="answered with state stopped, lease not extended",
    ),
    # graceful stop
    _m(
        _Q,
        Operation.STOP,
        _SD,
        sets=(Stamp.STOPPED_AT,),
        lease=LeaseEffect.END,
        note="nobody runs it: stopped at once",
    ),
    _m(
        _S,
        Operation.STOP,
        _SG,
        sets=(Stamp.STOP_REQUESTED_AT,),
        unless=Rule.STOP_STARTING_IS_IMMEDIATE,
        note="the worker should drain",
    ),
    _m(
        _S,
        Operation.STOP,
        _SD,
        sets=(Stamp.STOPPED_AT,),
        lease=LeaseEffect.END,
        when=Rule.STOP_STARTING_IS_IMMEDIATE,
        note="nobody holds it yet to confirm: stopped at once",
    ),
    _m(_A, Operation.STOP, _SG, sets=(Stamp.STOP_REQUESTED_AT,), note="the worker should drain"),
    _m(
        _SG,
        Operation.STOP,
        _SD,
        sets=(Stamp.STOPPED_AT,),
        lease=LeaseEffect.END,
        note="the worker confirms",
    ),
    _m(
        _SD,
        Operation.STOP,
        _SD,
        changes=False,
        when=Rule.STOP_STOPPED_IS_NOOP,
        note="already stopped",
    ),
    # forced stop
    _m(_Q, Operation.FORCE_STOP, _SD, sets=(Stamp.STOPPED_AT,), lease=LeaseEffect.END),
    _m(_S, Operation.FORCE_STOP, _SD, sets=(Stamp.STOPPED_AT,), lease=LeaseEffect.END),
    _m(_A, Operation.FORCE_STOP, _SD, sets=(Stamp.STOPPED_AT,), lease=LeaseEffect.END),
    _m(_SG, Operation.FORCE_STOP, _SD, sets=(Stamp.STOPPED_AT,), lease=LeaseEffect.END),
    _m(
        _SD,
        Operation.FORCE_STOP,
        _SD,
        changes=False,
        when=Rule.STOP_STOPPED_IS_NOOP,
        note="already stopped",
    ),
    # lease expiry
    _m(
        _S,
        Operation.EXPIRE,
        _Q,
        clears=_ATTEMPT,
        lease=LeaseEffect.RELEASE,
        note="back to the queue; this attempt is forgotten",
    ),
    _m(
        _A,
        Operation.EXPIRE,
        _Q,
        clears=_ATTEMPT,
        lease=LeaseEffect.RELEASE,
        note="back to the queue; this attempt is forgotten",
    ),
    _m(
        _SG,
        Operation.EXPIRE,
        _SD,
        sets=(Stamp.STOPPED_AT,),
        lease=LeaseEffect.END,
        note="a stop was asked for: never restart it",
    ),
    # metadata: a merge patch in every state, never a change of state
    *(_m(s, Operation.UPDATE_METADATA, s, note="merge patch") for s in State),
)

LEASE_STATES: frozenset[State] = frozenset(
    mv.source for mv in MOVES if mv.operation is Operation.EXPIRE
)
"""The states in which an item holds a lease: those a lease expiry can move out of."""
