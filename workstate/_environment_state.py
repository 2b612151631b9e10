"""The records an environment is stored and restored as (see :mod:`workstate._environment`).

Theory of operation
-------------------
:meth:`Environment.state <workstate._environment.Environment.state>`,
:meth:`~workstate._environment.Environment.item_states` and
:meth:`~workstate._environment.Environment.take_changes` hand these out, and
:meth:`~workstate._environment.Environment.restore` takes them back; only a durable store
(``serve --state``) does either.  They live apart from the environment so that a program that
never stores one (``import workstate``, a server in memory) does not build their attrs classes
at start-up (~1 ms of ``serve``'s cold start); the environment imports this module where it
makes or checks one, and ``workstate._environment`` still exports the three names.  Plain
data, no I/O.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from workstate._work import Work

__all__ = ["EnvironmentChanges", "EnvironmentState", "ItemState"]


@attrs.frozen(kw_only=True)
class ItemState:
    """One item as a store keeps it: its record and the environment's bookkeeping for it."""

    work: Work
    """The item's record, private lease fields included."""
    seq: int
    """The creation sequence number: the item's place in listings and in the queue."""
    window_until: _dt.datetime | None = None
    """While a delivery of the item awaits its ack (delivered, not acked): when the profile's
    default redelivery window ends for it; None otherwise.  A poll with another window still
    decides by the delivery time (see *Redelivery*)."""


@attrs.frozen(kw_only=True)
class EnvironmentState:
    """The environment's own bookkeeping, apart from its items."""

    id_counter: int
    """How many generated ids were used: the next generated id is the one at this count."""
    next_seq: int
    """The sequence number of the next item created (items may have been dropped since)."""
    named_poll_seen: bool = False
    """Whether a poll ever named a worker (``workers_polling`` is null until one does)."""
    pollers: Mapping[str, _dt.datetime] = attrs.field(factory=dict)
    """Each worker that polled recently, and the time of its latest poll."""


@attrs.frozen(kw_only=True)
class EnvironmentChanges:
    """What calls changed since the last :meth:`Environment.take_changes`."""

    state: EnvironmentState | None
    """The environment's bookkeeping, if it changed; None if it did not."""
    items: tuple[ItemState, ...]
    """The items created or changed (their latest state only)."""
    dropped: tuple[str, ...]
    """The ids of the stopped items dropped by the retention bound, and the ids an item gave
    up for a fresh one (``fresh_id_on_redelivery``)."""

    def __bool__(self) -> bool:
        """Whether anything changed."""
        return self.state is not None or bool(self.items) or bool(self.dropped)
