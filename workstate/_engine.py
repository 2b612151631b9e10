"""The engine: the only module that imports ``transitions``.

Theory of operation
-------------------
Everything here is derived from one table, :data:`~workstate._table.MOVES`.

:func:`machine` builds one ``transitions.Machine`` from the table, once per process and on first
use (``transitions`` decorates every model it serves, costing tens of kilobytes and
microseconds per object, so it never serves an item).  It is configured strictly: no automatic
``to_<state>`` moves, invalid triggers raise, and a conditional row carries its profile flag as
a ``transitions`` condition (``when``) or ``unless``.

The hot path does not call into ``transitions``: :func:`lookup` compiles, per profile, a plain
dict from (state, operation) to the table's :class:`~workstate._table.Move`, reading the rows
with the machine's own rule: a conditional row applies when its profile flag is true (``when``)
or false (``unless``), and under any setting of the flags at most one row applies to a pair
(a test tries them all).  It reads the table rather than the machine so that
``import workstate`` and the operations never import ``transitions`` (about 15 ms with the
``logging`` and ``inspect`` it pulls in).  :func:`fire` drives the
machine itself for one pair, and the exhaustive tests (``tests/test_table.py``) prove the
machine, the lookup and the table agree for every profile, state and operation, so they cannot
drift apart unnoticed.  :func:`mermaid` draws the diagram in ``docs/lifecycle.md`` from the
same table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from workstate._profile import Profile
from workstate._table import MOVES, Move, Operation, Rule, State

if TYPE_CHECKING:
    from transitions import Machine

__all__ = ["allowed_operations", "fire", "lookup", "machine", "mermaid"]


@functools.cache
def machine() -> Machine:
    """The process's single ``transitions`` machine, built from the table on first use."""
    from transitions import Machine  # on first use: see the theory of operation

    m = Machine(
        model=None,
        states=list(State),
        initial=None,
        auto_transitions=False,
        ignore_invalid_triggers=False,
        send_event=False,
    )
    for move in MOVES:
        m.add_transition(
            trigger=move.operation.value,
            source=move.source,
            dest=move.target,
            conditions=[move.when.value] if move.when is not None else None,
            unless=[move.unless.value] if move.unless is not None else None,
        )
    return m


@functools.cache
def lookup(profile: Profile) -> Mapping[tuple[State, Operation], Move]:
    """The legal moves under ``profile``, keyed by (state, operation), read from the table."""
    table: dict[tuple[State, Operation], Move] = {}
    for operation in Operation:  # the order the machine's events list them in
        for move in MOVES:
            if move.operation is not operation:
                continue
            if move.when is not None and getattr(profile, move.when.value) is not True:
                continue
            if move.unless is not None and getattr(profile, move.unless.value) is not False:
                continue
            table[(move.source, operation)] = move
    return MappingProxyType(table)


@functools.cache
def allowed_operations(profile: Profile, state: State) -> tuple[Operation, ...]:
    """The operations legal in ``state`` under ``profile``, in declaration order."""
    moves = lookup(profile)
    return tuple(op for op in Operation if (state, op) in moves)


class _Probe:
    """A throwaway model for :func:`fire`: the profile's flags as attributes."""

    state: State
    trigger: Callable[[str], bool]

    def __init__(self, profile: Profile) -> None:
        for rule in Rule:
            setattr(self, rule.value, getattr(profile, rule.value))


def fire(profile: Profile, state: State, operation: Operation) -> State | None:
    """Drive the ``transitions`` machine for one pair: the state it leads to, or None if illegal.

    For tests and tools, never the hot path: it attaches and detaches a model each call.
    """
    from transitions import MachineError

    probe = _Probe(profile)
    m = machine()
    m.add_model(probe, initial=state)
    try:
        moved = probe.trigger(operation.value)
    except MachineError:
        return None
    finally:
        m.remove_model(probe)
    return probe.state if moved else None


def mermaid() -> str:
    """The Mermaid state diagram of the table (one edge per row; conditional rows say so)."""
    lines = ["stateDiagram-v2", "    [*] --> queued: create"]
    for mv in MOVES:
        if mv.operation is Operation.UPDATE_METADATA:
            continue  # legal in every state and never moves: said once in prose, not drawn
        label = mv.operation.value
        if not mv.changes:
            label += " (no change)"
        if mv.when is not None:
            label += f" if {mv.when.value}"
        if mv.unless is not None:
            label += f" unless {mv.unless.value}"
        lines.append(f"    {mv.source.value} --> {mv.target.value}: {label}")
    lines.append("    stopped --> [*]")
    return "\n".join(lines) + "\n"
