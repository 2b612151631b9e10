"""``Environment``: the server-side authority over every work item of one environment.

Theory of operation
-------------------
An :class:`Environment` holds one :class:`~workstate.Work` record per item and a few indexes
over them.  It never decides a state itself: every change goes through the item's own
operation (``deliver``, ``ack``, ``heartbeat``, ``stop``, ``expire``, ``update_metadata``),
which applies a row of the table of moves.  What the environment adds is *which* item a poll
hands out, *when* a lease lapses and *when* an unacknowledged delivery may be handed out again.

Time.  Every call takes ``now``; a ``now`` earlier than the latest one seen is rejected (400,
key ``now``).  Each accepted call first lets time pass up to ``now``: every lease whose
deadline has passed is expired (spec §5) and every redelivery window that has elapsed is
closed.  An expiry is stamped at the first instant after the deadline (``deadline + 1 µs``),
not at the time somebody happened to look, so the records never depend on how often, or by
which call, the environment was consulted: an ``expire_due`` sweep every second and a lone
``get`` an hour later produce the same history.

Redelivery.  A poll hands out the oldest ``queued`` item (by creation) among those it may
take: every item nobody was handed yet (or that came back from an expired lease), and every
item an earlier poll handed out and nobody acked, once that delivery is at least the
*reclaiming* poll's ``reclaim_older_than_ms`` old (boundary inclusive; spec §3).  So a
reclaimed item competes with the never-delivered ones by creation time alone: an old item
whose worker vanished goes out before younger fresh ones, and a young one waits behind an
older backlog.  The window is the reclaiming poll's, not the delivering poll's, so
``poll(); advance 2 s; poll(reclaim_older_than_ms=2000)`` takes the item over.

Each item is in exactly one of four classes, and two counters follow the first two:

* *ready* — ``queued`` and deliverable to a poll with the default window: never handed out,
  or handed out at least ``default_reclaim_older_than_ms`` ago (``depth``);
* *pending* — ``queued``, handed out by a poll less than the default window ago (``pending``;
  a poll with a shorter window may still take it over);
* *leased* — ``starting``, ``active`` or ``stopping``;
* *stopped*.

Indexes (all heaps use lazy deletion: an entry is checked against the item when it reaches the
top, and skipped when it no longer describes the item):

* ``_order``: the items by creation sequence number, append-only; a list cursor is a sequence
  number.  While no item was ever dropped (see *Retention*) the number is the index and a page
  is a slice; afterwards a page starts at a binary search.
* ``_by_seq``: the items by sequence number, which is how every heap and log below names an
  item (a sequence number missing from it is a dropped item: its entries are stale).
* ``_fresh``: a heap of sequence numbers of the ``queued`` items nobody holds a delivery of,
  so a poll hands out the oldest by creation even when an item comes back from an expired
  lease long after younger items were queued.  An item has at most one entry (a flag on its
  slot says so), and an entry whose item left and came back is valid again, at the same place,
  because the key never changes.
* ``_queued``: the same for every ``queued`` item (delivered or not): its top gives
  ``oldest_queued_at`` (sequence order is ``created_at`` order, since time never goes back).
* ``_log``: every delivery as (delivered at, default window end, sequence, delivery number),
  in delivery order, which is time order, since time never goes back.  Each delivery of an
  item gets a new number on its slot, so an entry is live while the item is still ``queued``
  with that number.  Three positions walk it forward: the first entry that may be live
  (stale entries before it are dropped), the first whose default window has not ended (the
  ``pending`` counter moves to ``depth`` as it passes), and the first not yet *migrated*.
* ``_due``: a heap by creation of the deliveries migrated out of ``_log``: every delivery made
  at or before the *mark*, the latest ``now - reclaim_older_than_ms`` any poll has asked
  about.  A poll whose own bound is at or past the mark first migrates up to it, and then
  the top of ``_due`` is the oldest-created delivery it may reclaim.  A poll with a longer
  window than the mark's (a bound before it) sets aside the top entries delivered after its
  bound and pushes them back afterwards.
* ``_leases``: a heap of (deadline, sequence); every ack and heartbeat pushes the new deadline
  and the old entry goes stale.
* ``_polls``/``_pollers``: the named workers' latest polls, trimmed to the last 30 s.
* ``_stopped``: under a retention bound, the stopped items in the order they stopped (which is
  ``stopped_at`` order).

Retention.  With ``retain_stopped`` (a count) or ``retain_stopped_seconds`` (an age), every call
first drops the oldest stopped items beyond the newest ``retain_stopped`` and those stopped more
than ``retain_stopped_seconds`` ago; a dropped item is gone (``get`` is a 404, as for an id that
never existed).  A call never sees more stopped items than the bound (the ones a call stops
itself count from the next call on).  Only stopped items go, so no live lease, delivery or
queue position is ever lost.  Dropping is O(1) per item: the item leaves ``_slots`` and
``_by_seq`` at once, stale heap entries that still name it are skipped when they surface, and
``_order`` marks it and is rebuilt when more than half of it is marks.  Without a bound (the
default) every item is kept.

Changes and restoring.  With ``track_changes=True`` the environment remembers which items a call
changed, which it dropped, and whether its own bookkeeping (id counter, sequence, pollers)
moved; :meth:`Environment.take_changes` hands that over and forgets it, so a store can write
only what changed.  :meth:`Environment.restore` rebuilds an environment from such records
(:meth:`Environment.state` and :meth:`Environment.item_states` give them all) and checks them
first: a store may hand back anything.  An item's record says whether a delivery of it awaits
its ack (``window_until``); a restore puts those deliveries back in ``_log`` by delivery time,
so a reclaiming poll decides by its own window after a restart as before.

Every call therefore costs O(log n) amortised (each heap entry is pushed by one earlier call
and popped at most once; the structures that collect stale entries are rebuilt when more than
half of them are stale, so memory follows the items held, not the items ever created), and
``expire_due`` O(k log n) for k expired items.  Nothing scans all items.  The one exception
is a mix of windows: a poll with a longer window than an earlier poll's also pays O(log n)
for each unacknowledged delivery made between the two bounds that is older by creation than
its answer (polls that agree on a window never pay it).  ``benchmarks/environment.py``
measures it.

Fresh ids.  Under a profile with ``fresh_id_on_redelivery``, a poll that hands an item out
again (after an unacknowledged delivery or an expired lease) gives it a new ``work_`` id from
the environment's own generator (not ``id_factory``, which could fail or repeat an id half way
through the poll): the slot keeps its place by creation, the old id leaves the id index and
answers 404, so a stale worker cannot touch the new attempt.  With ``track_changes`` the old
id counts as dropped, so a store keyed by id lets its record go.

Rejections.  Arguments that can be checked alone (``block_ms``, ``limit``, a cursor, ...) are
checked before anything happens.  A call refused later (404, 409, 412, a bad metadata patch)
changes nothing it asked for; the time it carried still counts as seen, since expiries due by
then have been applied (they depend only on time, so applying them early or late gives the
same records).

An item's own time may run a few microseconds ahead of the environment's: a heartbeat at the
time of the item's previous one happens one microsecond later, so that heartbeat tokens never
repeat (a stale token must meet 412 even on a clock standing still).  Operations on that item
then happen at its own time, so its timestamps stay in order.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import builtins
import contextlib
import datetime as _dt
import functools
import heapq
import itertools
import math
import operator
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from workstate._errors import IllegalMoveError, InvalidInputError, NotFoundError
from workstate._invariants import invariant_violations
from workstate._profile import ANTHROPIC, Precision, Profile
from workstate._records import HeartbeatResult, WorkData, check_id, check_text, is_int
from workstate._table import State
from workstate._text import excerpt
from workstate._time import UTC, ensure_utc, format_time, saturating_add
from workstate._work import Work

__all__ = [
    "Environment",
    "EnvironmentChanges",
    "EnvironmentState",
    "ItemState",
    "QueueStats",
    "WorkPage",
]

_QUEUED, _STOPPED = State.QUEUED, State.STOPPED
_ONE_MICROSECOND = _dt.timedelta(microseconds=1)
_POLL_WINDOW = _dt.timedelta(seconds=30)
_MAX_PAGE = 1000
_COMPACT_SLACK = 1024  # a stale-heavy heap is rebuilt only past this many spare entries
_B62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Each byte of a digest becomes one base-62 digit (byte % 62): a table lookup in C.  The slight
# bias towards the first eight digits does not matter for ids that need only look random.
_TO_B62 = bytes(_B62[b % 62] for b in range(256))
_ID_DIGITS = 24
_CURSOR = struct.Struct(">QI")  # creation sequence number, CRC-32 of the environment id
_SEQ = operator.attrgetter("seq")
_NO_LIMIT = 2**63


@attrs.frozen(kw_only=True)
class QueueStats:
    """The queue's statistics, as ``GET .../work/stats`` returns them (spec §1)."""

    depth: int
    """Queued items that a poll could hand out now."""
    pending: int
    """Items delivered by a poll, not acked, younger than the default redelivery window."""
    oldest_queued_at: _dt.datetime | None
    """The oldest ``created_at`` among queued and pending items; None when there are none."""
    workers_polling: int | None
    """Distinct worker ids that polled in the last 30 s; None when no poll ever named one."""
    precision: Precision = Precision.MICROSECONDS
    """How :meth:`to_json` writes ``oldest_queued_at`` (the profile's lifecycle precision, the
    same as the items' ``created_at``)."""

    def to_json(self) -> dict[str, Any]:
        """The API shape: ``{"type": "work_queue_stats", "depth", "pending", ...}``."""
        oldest = self.oldest_queued_at
        return {
            "type": "work_queue_stats",
            "depth": self.depth,
            "pending": self.pending,
            "oldest_queued_at": None if oldest is None else format_time(oldest, self.precision),
            "workers_polling": self.workers_polling,
        }


@attrs.frozen(kw_only=True)
class WorkPage:
    """One page of a listing: items oldest first and the cursor of the next page."""

    data: tuple[Work, ...]
    """The items on this page, oldest (by creation) first."""
    next_page: str | None
    """The opaque cursor to pass as ``page`` for the next page; None on the last page."""

    def to_json(self) -> dict[str, Any]:
        """The API shape: ``{"data": [work...], "next_page": ...}`` (secrets are never written)."""
        return {"data": [w.to_json() for w in self.data], "next_page": self.next_page}


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


class _Tracker:
    """What changed since the last :meth:`Environment.take_changes`."""

    __slots__ = ("dropped", "items", "state")

    def __init__(self) -> None:
        self.items: dict[int, _Slot] = {}
        self.dropped: list[str] = []
        self.state = True  # a new environment is itself a change


class _Slot:
    """One item's place in the environment: its current record and its index bookkeeping."""

    __slots__ = ("aged", "delivery", "dropped", "in_fresh", "in_queued", "live", "seq", "work")

    def __init__(self, work: Work, seq: int) -> None:
        self.work = work
        self.seq = seq
        # The number of the item's latest delivery; ``live`` while that delivery awaits its ack
        # (the item is queued and handed out), and then ``aged`` once the default window passed.
        self.delivery = 0
        self.live = False
        self.aged = False
        # Whether ``_fresh`` / ``_queued`` hold an entry for this item (valid or stale).
        self.in_fresh = False
        self.in_queued = False
        # Dropped by the retention bound: ``_order`` still holds the slot until it is rebuilt.
        self.dropped = False


def check_retention(count: object, seconds: object) -> tuple[int, _dt.timedelta | None]:
    """The retention bound as (count limit, age limit); a 400 naming the bad argument."""
    if count is not None and (not is_int(count) or count < 0):
        raise InvalidInputError(
            f"retain_stopped must be an integer >= 0 or None, got {count!r}",
            key="retain_stopped",
            expected="an integer >= 0 (how many stopped items to keep), or None to keep all",
            got=count,
        )
    age = None
    if seconds is not None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not (0 <= seconds < math.inf)
        ):
            raise InvalidInputError(
                f"retain_stopped_seconds must be a finite number >= 0 or None, got {seconds!r}",
                key="retain_stopped_seconds",
                expected="a finite number of seconds >= 0, or None to keep stopped items "
                "whatever their age",
                got=seconds,
            )
        try:
            age = _dt.timedelta(seconds=seconds)
        except OverflowError:  # more than a timedelta holds: older than any possible item
            age = None
    return (_NO_LIMIT if count is None else count), age


def _item_time(slot: _Slot, now: _dt.datetime) -> _dt.datetime:
    """The time of an operation on the slot's item: ``now``, or the item's own latest time
    when a heartbeat on a clock standing still put it a few microseconds ahead (see
    :meth:`Work.heartbeat <workstate.Work.heartbeat>`)."""
    touched = slot.work.touched_at
    return touched if touched > now else now


MAX_WORKER_ID_LENGTH = 256
"""How many characters a worker id may hold (it is stored with every poll that names it)."""


def _check_worker_id(worker_id: object) -> str | None:
    return check_text(  # type: ignore[no-any-return]
        worker_id, "worker_id", nullable=True, empty=False, max_length=MAX_WORKER_ID_LENGTH
    )


class Environment:
    """The server-side authority over the work items of one environment (spec §1-§5, §7, §8).

    Pure: every call takes ``now`` (a timezone-aware datetime, never earlier than the latest
    one seen); nothing reads a clock, sleeps or starts a thread.  **Not thread-safe**: an
    adapter that serves concurrent requests (such as the mock server) must serialise the calls,
    e.g. with one lock per environment.

    ``retain_stopped`` and ``retain_stopped_seconds`` bound how many stopped items are kept and
    for how long (default: all, for ever); see the module's theory of operation.  With
    ``track_changes`` the environment records what each call changed for
    :meth:`take_changes`, for a store that writes only that.

    Ids are generated in the API's style (``work_``/``sesn_`` and 24 base-62 characters) by a
    deterministic generator keyed by ``seed`` (default: the environment id), so two runs with
    the same inputs hand out the same ids, and a rejected ``create`` uses none up.  Pass
    ``id_factory(prefix) -> id`` to choose them yourself (it is called before the new item's
    inputs are checked, so a rejected ``create`` may have taken ids from it).

    A rejected call raises a :class:`~workstate.WorkstateError` and changes nothing it asked
    for; the time it carried still counts as seen (see the module's theory of operation).

    >>> import datetime as dt
    >>> t0 = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.timezone.utc)
    >>> env = Environment("env_demo")
    >>> item = env.create(t0, session_id="sesn_1", work_id="work_1")
    >>> env.poll(t0, worker_id="w1").id
    'work_1'
    >>> env.poll(t0, worker_id="w2") is None  # handed out, not acked: hidden for 5 s
    True
    >>> env.ack("work_1", t0, worker_id="w1").state.value
    'starting'
    >>> stats = env.stats(t0)
    >>> stats.depth, stats.pending, stats.workers_polling
    (0, 0, 2)
    """

    def __init__(
        self,
        environment_id: str,
        *,
        profile: Profile = ANTHROPIC,
        id_factory: Callable[[str], str] | None = None,
        seed: int | str | bytes | None = None,
        retain_stopped: int | None = None,
        retain_stopped_seconds: float | None = None,
        track_changes: bool = False,
    ) -> None:
        check_id(environment_id, "environment_id", "env_")
        self._retain_count, self._retain_age = check_retention(
            retain_stopped, retain_stopped_seconds
        )
        if not isinstance(profile, Profile):
            raise InvalidInputError(
                f"profile must be a Profile, got {type(profile).__name__}",
                key="profile",
                expected="a workstate.Profile, e.g. workstate.ANTHROPIC",
                got=profile,
            )
        if seed is not None and not isinstance(seed, (int, str, bytes)):
            raise InvalidInputError(
                f"seed must be an int, str or bytes, got {type(seed).__name__}",
                key="seed",
                expected="an int, str or bytes",
                got=seed,
            )
        self.environment_id: str = environment_id
        """The environment's id, ``env_...``."""
        self.profile: Profile = profile
        """The behaviour where providers differ; every item follows it."""
        self._id_factory = id_factory
        import hashlib  # here, not at import: it loads OpenSSL, and only ids need it

        material = repr(environment_id if seed is None else seed).encode()
        key = hashlib.blake2b(material, digest_size=32).digest()
        self._id_hash = hashlib.blake2b(key=key, digest_size=_ID_DIGITS)
        self._id_counter = 0
        self._cursor_check = zlib.crc32(environment_id.encode())
        self._now: _dt.datetime | None = None
        self._slots: dict[str, _Slot] = {}
        self._order: list[_Slot] = []
        self._by_seq: dict[int, _Slot] = {}
        self._next_seq = 0
        self._holes = 0  # dropped slots still in ``_order``
        # Stopped items in stopping order, kept only under a bound (nothing to drop otherwise).
        bounded = retain_stopped is not None or self._retain_age is not None
        self._stopped: deque[_Slot] | None = deque() if bounded else None
        # What changed, for take_changes (None: not tracked).  Few attributes on purpose: past
        # 30, CPython stops sharing instance dict keys, and every attribute read gets slower.
        self._track = _Tracker() if track_changes else None
        self._fresh: list[int] = []
        self._queued: list[int] = []
        self._log: list[tuple[_dt.datetime, _dt.datetime, int, int]] = []
        self._log_head = 0  # entries before it are stale and dropped
        self._log_aged = 0  # entries before it are past the default window
        self._log_migrated = 0  # entries before it are in ``_due`` (or were stale)
        self._mark: _dt.datetime | None = None  # every delivery at or before it is migrated
        self._due: list[tuple[int, int, _dt.datetime]] = []
        self._default_window = _dt.timedelta(milliseconds=profile.default_reclaim_older_than_ms)
        self._leases: list[tuple[_dt.datetime, int]] = []
        self._depth = 0
        self._pending = 0
        self._delivered = 0
        self._leased = 0
        self._polls: deque[tuple[_dt.datetime, str]] = deque()
        self._pollers: dict[str, _dt.datetime] = {}
        self._named_poll_seen = False

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        """How many items the environment holds (every state, ``stopped`` included)."""
        return len(self._slots)

    def __contains__(self, work_id: object) -> bool:
        """Whether an item with this id exists."""
        return type(work_id) is str and work_id in self._slots

    def __repr__(self) -> str:
        return (
            f"<Environment {self.environment_id} profile={self.profile.name} "
            f"items={len(self._slots)} depth={self._depth} pending={self._pending}>"
        )

    @property
    def latest_now(self) -> _dt.datetime | None:
        """The latest ``now`` a call has passed (None before the first call).

        A call with an earlier ``now`` is rejected.
        """
        return self._now

    # ------------------------------------------------------------------ operations
    def create(
        self,
        now: _dt.datetime,
        *,
        session_id: str | None = None,
        data: WorkData | None = None,
        metadata: Mapping[str, str] | None = None,
        secret: str | None = None,
        work_id: str | None = None,
    ) -> Work:
        """A new ``queued`` item created at ``now``, deliverable at once.

        Ids are generated unless given (``session_id`` only when ``data`` is not given either).
        A ``work_id`` that already exists is 409.
        """
        if work_id is not None:
            check_id(work_id, "work_id", "work_")
            if work_id in self._slots:
                raise self._duplicate(work_id)
        now = self._begin(now)
        counter = self._id_counter
        if work_id is None:
            work_id, counter = self._new_id("work_", counter)
            while work_id in self._slots:
                if self._id_factory is not None:
                    raise self._duplicate(work_id)
                work_id, counter = self._new_id("work_", counter)
        if session_id is None and data is None:
            session_id, counter = self._new_id("sesn_", counter)
        work = Work.create(
            id=work_id,
            environment_id=self.environment_id,
            now=now,
            session_id=session_id,
            data=data,
            metadata=metadata,
            secret=secret,
            profile=self.profile,
        )
        # Only a successful create consumes ids: a rejected one leaves the sequence as it was.
        self._id_counter = counter
        seq = self._next_seq
        self._next_seq = seq + 1
        slot = _Slot(work, seq)
        self._order.append(slot)
        self._slots[work_id] = slot
        self._by_seq[seq] = slot
        track = self._track
        if track is not None:
            track.items[seq] = slot
            track.state = True
        self._enter(slot, None)
        return work

    def poll(
        self,
        now: _dt.datetime,
        *,
        worker_id: str | None = None,
        reclaim_older_than_ms: int | None = None,
        block_ms: int | None = None,
    ) -> Work | None:
        """Hand out the oldest deliverable ``queued`` item (by creation), or None.

        Deliverable: never handed out (or back from an expired lease), or handed out by an
        earlier poll, not acked, and at least ``reclaim_older_than_ms`` (this poll's; default
        the profile's, 5000) ago, boundary inclusive.  The item stays ``queued``.
        ``block_ms`` (1-999) is only validated: the pure core never waits, an adapter may.
        A named ``worker_id`` counts as polling at ``now`` for :meth:`stats`, whether or not
        anything was handed out.

        The record carries ``secret``: render the answer with ``to_json(include_secret=True)``.
        """
        if block_ms is not None and (not is_int(block_ms) or not 1 <= block_ms <= 999):
            raise InvalidInputError(
                f"block_ms must be an integer from 1 to 999, got {excerpt(block_ms)}",
                key="block_ms",
                expected="an integer from 1 to 999 (milliseconds), or omitted",
                got=block_ms,
            )
        floor = self.profile.min_reclaim_older_than_ms
        if reclaim_older_than_ms is None:
            reclaim = self.profile.default_reclaim_older_than_ms
        elif is_int(reclaim_older_than_ms) and reclaim_older_than_ms >= floor:
            reclaim = reclaim_older_than_ms
        else:
            raise InvalidInputError(
                f"reclaim_older_than_ms must be an integer >= {floor}, "
                f"got {excerpt(reclaim_older_than_ms)}",
                key="reclaim_older_than_ms",
                expected=f"an integer >= {floor} (milliseconds), or omitted",
                got=reclaim_older_than_ms,
            )
        worker_id = _check_worker_id(worker_id)
        now = self._begin(now)
        self._trim_polls(now)
        if worker_id is not None:
            self._named_poll_seen = True
            if self._pollers.get(worker_id) != now:
                self._pollers[worker_id] = now
                self._polls.append((now, worker_id))
                if self._track is not None:
                    self._track.state = True
        try:
            bound: _dt.datetime | None = now - _dt.timedelta(milliseconds=reclaim)
        except OverflowError:  # a window reaching before year 1: no delivery is that old
            bound = None
        slot = self._take(bound)
        if slot is None:
            return None
        work = slot.work
        if self.profile.fresh_id_on_redelivery and (work.attempt or slot.delivery):
            work = self._rekey(slot)
        work = work.deliver(now, worker_id=worker_id)
        self._leave(slot)
        slot.work = work
        track = self._track
        if track is not None:
            track.items[slot.seq] = slot
        self._deliver(slot, now)
        return work

    def ack(self, work_id: str, now: _dt.datetime, *, worker_id: str | None = None) -> Work:
        """The worker claims the item: ``queued → starting``, with a lease of the default TTL.

        On ``starting``/``active`` a safe retry that changes nothing.  Under a profile that
        binds acks to workers, an ack from another worker than the poll's is 409.
        """
        worker_id = _check_worker_id(worker_id)
        now = self._begin(now)
        slot = self._slot(work_id)
        self._replace(slot, slot.work.ack(_item_time(slot, now), worker_id=worker_id))
        return slot.work

    def heartbeat(
        self,
        work_id: str,
        now: _dt.datetime,
        *,
        expected_last_heartbeat: str | None = None,
        desired_ttl_seconds: int | None = None,
    ) -> HeartbeatResult:
        """Keep the item's lease (spec §4); see :meth:`Work.heartbeat <workstate.Work.heartbeat>`.

        A heartbeat that arrives after the lease expired finds the item ``queued`` (412 with
        ``current_state`` in the ``anthropic`` profile when it carries a timestamp token).
        """
        now = self._begin(now)
        slot = self._slot(work_id)
        work, result = slot.work.heartbeat(
            _item_time(slot, now),
            expected_last_heartbeat=expected_last_heartbeat,
            desired_ttl_seconds=desired_ttl_seconds,
        )
        self._replace(slot, work)
        return result

    def stop(self, work_id: str, now: _dt.datetime, *, force: bool = False) -> Work:
        """Stop the item, gracefully (``force=False``: the worker drains) or at once."""
        now = self._begin(now)
        slot = self._slot(work_id)
        self._replace(slot, slot.work.stop(_item_time(slot, now), force=force))
        return slot.work

    def update_metadata(
        self, work_id: str, now: _dt.datetime, patch: Mapping[str, str | None]
    ) -> Work:
        """Merge ``patch`` into the item's metadata (``None`` deletes a key); state unchanged."""
        now = self._begin(now)
        slot = self._slot(work_id)
        # The table's metadata rows keep the state and the lease: no index changes.
        work = slot.work.update_metadata(_item_time(slot, now), patch)
        if work is not slot.work:
            slot.work = work
            if self._track is not None:
                self._track.items[slot.seq] = slot
        return work

    def get(self, work_id: str, now: _dt.datetime) -> Work:
        """The item's current record (its lease expired first if it was due)."""
        self._begin(now)
        return self._slot(work_id).work

    def list(self, now: _dt.datetime, *, limit: int = 20, page: str | None = None) -> WorkPage:
        """One page of items, oldest (by creation) first.

        ``limit`` is 1-1000.  ``page`` is a ``next_page`` from an earlier page: it points just
        after the last item of that page, so pages stay stable while items change state and
        new items are created.
        """
        if not is_int(limit) or not 1 <= limit <= _MAX_PAGE:
            raise InvalidInputError(
                f"limit must be an integer from 1 to {_MAX_PAGE}, got {excerpt(limit)}",
                key="limit",
                expected=f"an integer from 1 to {_MAX_PAGE}",
                got=limit,
            )
        start = 0 if page is None else self._decode_cursor(page) + 1
        self._begin(now)
        order = self._order
        if not self._holes and len(order) == self._next_seq:  # nothing dropped: index is seq
            end = start + limit
            data = tuple(slot.work for slot in order[start:end])
            next_page = self._encode_cursor(end - 1) if end < len(order) else None
            return WorkPage(data=data, next_page=next_page)
        # Items were dropped: find the page's start by sequence number and skip the marks
        # (fewer than half of ``_order``, which is rebuilt beyond that).
        i, n = bisect.bisect_left(order, start, key=_SEQ), len(order)
        found: builtins.list[Work] = []
        last = -1
        while i < n and len(found) < limit:
            slot = order[i]
            i += 1
            if not slot.dropped:
                found.append(slot.work)
                last = slot.seq
        while i < n and order[i].dropped:
            i += 1
        return WorkPage(data=tuple(found), next_page=self._encode_cursor(last) if i < n else None)

    def stats(self, now: _dt.datetime) -> QueueStats:
        """The queue's statistics at ``now`` (kept as counters: no scan of the items)."""
        now = self._begin(now)
        queued, by_seq = self._queued, self._by_seq
        oldest = None
        while queued:
            slot = by_seq.get(queued[0])
            if slot is not None and slot.work.state is _QUEUED:
                oldest = slot.work.created_at
                break
            heapq.heappop(queued)
            if slot is not None:
                slot.in_queued = False
        self._trim_polls(now)
        return QueueStats(
            depth=self._depth,
            pending=self._pending,
            oldest_queued_at=oldest,
            workers_polling=len(self._pollers) if self._named_poll_seen else None,
            precision=self.profile.lifecycle_precision,
        )

    def expire_due(self, now: _dt.datetime) -> builtins.list[Work]:
        """Expire every lease whose deadline passed before ``now`` (spec §5).

        ``starting``/``active`` items go back to the queue, deliverable at once at their place
        by creation; ``stopping`` items become ``stopped``.  Each expiry is stamped at the
        first instant after its deadline.  Returns the new records, by deadline.  Every other
        call applies due expiries first too, so items expired by an earlier call are not
        returned again.
        """
        now = ensure_utc(now)
        self._check_time(now)
        self._now = now
        expired = self._advance(now, collect=True)
        if self._stopped:
            self._retain(now)
        return expired

    def next_change_at(self, *, reclaim_older_than_ms: int | None = None) -> _dt.datetime | None:
        """The earliest time at which time alone changes something, or None.

        That is when the oldest unacknowledged delivery becomes ``reclaim_older_than_ms``
        old (default: the profile's window), so a poll with that window may take it over, or
        the first instant after a lease deadline (the lease expires).  An adapter that holds a
        poll open (``block_ms``) can sleep until then.  Reads no clock and changes nothing
        observable.
        """
        window = self.profile.default_reclaim_older_than_ms
        if is_int(reclaim_older_than_ms) and reclaim_older_than_ms >= 0:
            window = reclaim_older_than_ms
        by_seq, leases = self._by_seq, self._leases
        while leases:
            slot = by_seq.get(leases[0][1])
            if slot is not None and slot.work.lease_expires_at == leases[0][0]:
                break
            heapq.heappop(leases)
        times = []
        oldest = self._oldest_delivery()
        if oldest is not None:
            with contextlib.suppress(OverflowError):  # past the year 9999: never by time
                times.append(oldest + _dt.timedelta(milliseconds=window))
        if leases:
            # A lease expires at the first instant after its deadline.  The core refuses a
            # deadline with no such instant (see workstate._time); saturate all the same.
            times.append(saturating_add(leases[0][0], _ONE_MICROSECOND))
        return min(times) if times else None

    # ------------------------------------------------------------------ stores
    def take_changes(self) -> EnvironmentChanges:
        """What changed since the last call (or since creation or restore), and forget it.

        Needs ``track_changes=True``.  Items appear once, in their latest state, however many
        calls changed them; an item created and dropped in between does not appear.
        """
        track = self._track
        if track is None:
            raise InvalidInputError(
                "take_changes needs an environment built with track_changes=True",
                key="track_changes",
                expected="Environment(..., track_changes=True)",
                got=False,
            )
        items = tuple(
            ItemState(work=slot.work, seq=slot.seq, window_until=self._window_until(slot))
            for slot in track.items.values()
        )
        state = self.state() if track.state else None
        dropped = tuple(track.dropped)
        track.items.clear()
        track.dropped.clear()
        track.state = False
        return EnvironmentChanges(state=state, items=items, dropped=dropped)

    def state(self) -> EnvironmentState:
        """The environment's own bookkeeping, as :meth:`restore` takes it."""
        return EnvironmentState(
            id_counter=self._id_counter,
            next_seq=self._next_seq,
            named_poll_seen=self._named_poll_seen,
            pollers=dict(self._pollers),
        )

    def item_states(self) -> tuple[ItemState, ...]:
        """Every item with its bookkeeping, by creation, as :meth:`restore` takes them."""
        return tuple(
            ItemState(work=slot.work, seq=slot.seq, window_until=self._window_until(slot))
            for slot in self._order
            if not slot.dropped
        )

    @classmethod
    def restore(
        cls,
        environment_id: str,
        *,
        now: _dt.datetime,
        state: EnvironmentState,
        items: Iterable[ItemState],
        profile: Profile = ANTHROPIC,
        id_factory: Callable[[str], str] | None = None,
        seed: int | str | bytes | None = None,
        retain_stopped: int | None = None,
        retain_stopped_seconds: float | None = None,
        track_changes: bool = False,
    ) -> Environment:
        """An environment rebuilt from :meth:`state` and :meth:`item_states` records.

        ``now`` is the latest time the environment has seen (no earlier than any item's
        latest change).  The records are checked before anything is built: an item of another
        environment or profile, a duplicate id or sequence number, a record that breaks an
        invariant (:func:`~workstate.invariant_violations`, private fields included) or a
        redelivery window on an item that awaits no ack is a 400 naming the item and the key.
        Leases and windows that fell due by ``now`` are applied by the next call, as they
        would have been.  The other arguments are :class:`Environment`'s.
        """
        env = cls(
            environment_id,
            profile=profile,
            id_factory=id_factory,
            seed=seed,
            retain_stopped=retain_stopped,
            retain_stopped_seconds=retain_stopped_seconds,
            track_changes=track_changes,
        )
        now = ensure_utc(now)
        env._check_state(state, now)
        records = sorted(env._checked_items(items, state.next_seq, now), key=_SEQ)
        env._now = now
        env._id_counter = state.id_counter
        env._next_seq = state.next_seq
        env._named_poll_seen = state.named_poll_seen
        env._pollers = dict(sorted(state.pollers.items(), key=lambda pair: pair[1]))
        env._polls = deque((at, worker) for worker, at in env._pollers.items())
        delivered = []
        for record in records:
            slot = _Slot(record.work, record.seq)
            env._order.append(slot)
            env._slots[record.work.id] = slot
            env._by_seq[record.seq] = slot
            env._enter(slot, None)
            if record.window_until is not None:
                delivered.append(slot)
        # Deliveries awaiting their ack go back in the log in delivery order (time order); a
        # default window that ended by ``now`` is applied by the next call, as it would have been.
        delivered.sort(key=lambda s: (s.work.delivered_at, s.seq))
        for slot in delivered:
            at = slot.work.delivered_at
            assert at is not None  # (checked: a window only on a delivered queued item)
            env._leave(slot)  # (not yet a delivery: out of ``depth``)
            slot.delivery += 1
            slot.live = True
            env._delivered += 1
            env._pending += 1
            env._log.append((at, saturating_add(at, env._default_window), slot.seq, slot.delivery))
        # Stopped items were entered by creation; retention drops them in stopping order.
        if env._stopped is not None:
            env._stopped = deque(sorted(env._stopped, key=lambda s: (s.work.stopped_at, s.seq)))
        if env._track is not None:
            env._track = _Tracker()
            env._track.state = False
        return env

    def _check_state(self, state: object, now: _dt.datetime) -> None:
        def bad(key: str, expected: str, got: object) -> InvalidInputError:
            return InvalidInputError(
                f"cannot restore environment {self.environment_id}: state.{key} must be "
                f"{expected}, got {got!r}",
                key=f"state.{key}",
                expected=expected,
                got=got,
            )

        if not isinstance(state, EnvironmentState):
            raise InvalidInputError(
                f"cannot restore environment {self.environment_id}: state must be an "
                f"EnvironmentState, got {type(state).__name__}",
                key="state",
                expected="an EnvironmentState",
                got=state,
            )
        for key in ("id_counter", "next_seq"):
            value = getattr(state, key)
            if not is_int(value) or value < 0:
                raise bad(key, "an integer >= 0", value)
        if not isinstance(state.named_poll_seen, bool):
            raise bad("named_poll_seen", "true or false", state.named_poll_seen)
        pollers = state.pollers
        if not isinstance(pollers, Mapping):
            raise bad("pollers", "a mapping of worker ids to times", pollers)
        for worker, at in pollers.items():
            if type(worker) is not str or not worker:
                raise bad("pollers", "keyed by non-empty worker ids", worker)
            if not isinstance(at, _dt.datetime) or at.utcoffset() is None or at > now:
                raise bad(f"pollers.{worker}", f"an aware time at or before {format_time(now)}", at)
        if pollers and not state.named_poll_seen:
            raise bad("named_poll_seen", "true when pollers are recorded", False)

    def _checked_items(
        self, items: Iterable[ItemState], next_seq: int, now: _dt.datetime
    ) -> builtins.list[ItemState]:
        records: builtins.list[ItemState] = []
        ids: set[str] = set()
        seqs: set[int] = set()
        for n, record in enumerate(items):
            if not isinstance(record, ItemState) or not isinstance(record.work, Work):
                raise InvalidInputError(
                    f"cannot restore environment {self.environment_id}: items[{n}] must be an "
                    f"ItemState holding a Work, got {record!r}",
                    key=f"items[{n}]",
                    expected="an ItemState(work=Work(...), seq=..., window_until=...)",
                    got=record,
                )
            work = record.work
            bad = functools.partial(self._bad_item, n, work)

            if work.environment_id != self.environment_id:
                raise bad(
                    "environment_id",
                    f"belongs to environment {work.environment_id!r}",
                    self.environment_id,
                    work.environment_id,
                )
            if work.profile != self.profile:
                raise bad(
                    "profile",
                    f"follows profile {work.profile.name!r}, not {self.profile.name!r}",
                    self.profile.name,
                    work.profile.name,
                )
            if work.id in ids:
                raise bad("id", "appears twice", "each work id once", work.id)
            seq = record.seq
            if not is_int(seq) or not 0 <= seq < next_seq or seq in seqs:
                raise bad(
                    "seq",
                    f"has the sequence number {seq!r}",
                    f"a sequence number from 0 to {next_seq - 1} (state.next_seq - 1), each once",
                    seq,
                )
            problems = invariant_violations(work)
            if problems:
                first = problems[0]
                raise bad(first.key, f"breaks an invariant: {first.message}", "valid records", work)
            if work.touched_at > now:
                raise bad(
                    "touched_at",
                    f"changed at {format_time(work.touched_at)}, after now ({format_time(now)})",
                    f"a time at or before {format_time(now)}",
                    work.touched_at,
                )
            until = record.window_until
            if until is not None and (
                not isinstance(until, _dt.datetime)
                or until.utcoffset() is None
                or work.state is not _QUEUED
                or work.delivered_at is None
                or until < work.delivered_at
            ):
                raise bad(
                    "window_until",
                    f"has a redelivery window ({until!r}) but is {work.state.value} and "
                    f"delivered at {work.delivered_at!r}",
                    "a time at or after delivered_at on a delivered queued item, or None",
                    until,
                )
            ids.add(work.id)
            seqs.add(seq)
            records.append(record)
        # The queue's oldest item is the one of lowest sequence number: creation order.
        ordered = sorted(records, key=_SEQ)
        for before, after in itertools.pairwise(ordered):
            if after.work.created_at < before.work.created_at:
                raise InvalidInputError(
                    f"cannot restore environment {self.environment_id}: item "
                    f"{after.work.id!r} (seq {after.seq}) was created before item "
                    f"{before.work.id!r} (seq {before.seq}); sequence is creation order",
                    key="items.seq",
                    expected="sequence numbers in created_at order",
                    got=after.seq,
                    work_id=after.work.id,
                )
        return ordered

    def _bad_item(
        self, n: int, work: Work, key: str, problem: str, expected: str, got: object
    ) -> InvalidInputError:
        return InvalidInputError(
            f"cannot restore environment {self.environment_id}: item {work.id!r} {problem}",
            key=f"items[{n}].{key}",
            expected=expected,
            got=got,
            work_id=work.id,
        )

    # ------------------------------------------------------------------ time
    def _check_time(self, now: _dt.datetime) -> None:
        latest = self._now
        if latest is not None and now < latest:
            raise InvalidInputError(
                f"now ({format_time(now)}) is earlier than the latest time this environment "
                f"has seen ({format_time(latest)}); time never goes back",
                key="now",
                expected=f"a time at or after {format_time(latest)}",
                got=now,
            )

    def _begin(self, now: _dt.datetime) -> _dt.datetime:
        """Check ``now`` and let time pass up to it."""
        if type(now) is not _dt.datetime or now.tzinfo is not UTC:
            now = ensure_utc(now)
        self._check_time(now)
        self._now = now
        leases, log, aged = self._leases, self._log, self._log_aged
        if (leases and leases[0][0] < now) or (aged < len(log) and log[aged][1] <= now):
            self._advance(now, collect=False)
        stopped = self._stopped
        if stopped and (len(stopped) > self._retain_count or self._retain_age is not None):
            self._retain(now)
        return now

    def _advance(self, now: _dt.datetime, *, collect: bool) -> builtins.list[Work]:
        by_seq, log = self._by_seq, self._log
        aged, end = max(self._log_aged, self._log_head), len(log)
        while aged < end and log[aged][1] <= now:
            slot = by_seq.get(log[aged][2])
            if slot is not None and slot.live and slot.delivery == log[aged][3] and not slot.aged:
                # The default window ended: pending → ready (for a poll with that window).
                slot.aged = True
                self._pending -= 1
                self._depth += 1
            aged += 1
        self._log_aged = aged
        expired: builtins.list[Work] = []
        leases = self._leases
        while leases and leases[0][0] < now:
            deadline, seq = heapq.heappop(leases)
            slot = by_seq.get(seq)
            if slot is not None and slot.work.lease_expires_at == deadline:
                self._replace(slot, slot.work.expire(deadline + _ONE_MICROSECOND))
                if collect:
                    expired.append(slot.work)
        return expired

    def _retain(self, now: _dt.datetime) -> None:
        """Drop the stopped items beyond the retention bound (oldest stopped first)."""
        stopped = self._stopped
        assert stopped is not None  # (called only when it holds items)
        while len(stopped) > self._retain_count:
            self._drop(stopped.popleft())
        age = self._retain_age
        if age is not None and stopped:
            try:
                horizon = now - age
            except OverflowError:  # before year 1: nothing is that old
                return
            while stopped:
                at = stopped[0].work.stopped_at
                if at is None or at >= horizon:  # (a stopped item always has stopped_at)
                    break
                self._drop(stopped.popleft())

    def _drop(self, slot: _Slot) -> None:
        work_id = slot.work.id
        del self._slots[work_id]
        del self._by_seq[slot.seq]
        slot.dropped = True
        self._holes += 1
        if self._holes > len(self._order) // 2 + _COMPACT_SLACK:
            self._order = [s for s in self._order if not s.dropped]
            self._holes = 0
        track = self._track
        if track is not None:
            track.items.pop(slot.seq, None)
            track.dropped.append(work_id)

    def _trim_polls(self, now: _dt.datetime) -> None:
        polls, pollers = self._polls, self._pollers
        horizon = saturating_add(now, -_POLL_WINDOW)  # near year 1 the window starts at year 1
        while polls and polls[0][0] < horizon:
            at, worker = polls.popleft()
            if pollers.get(worker) == at:
                del pollers[worker]

    # ------------------------------------------------------------------ indexes
    def _slot(self, work_id: object) -> _Slot:
        if type(work_id) is not str:
            raise InvalidInputError(
                f"work_id must be a string, got {type(work_id).__name__}",
                key="work_id",
                expected="a work id, 'work_...'",
                got=work_id,
            )
        slot = self._slots.get(work_id)
        if slot is None:
            raise NotFoundError(
                f"no work item {excerpt(work_id)} in environment {self.environment_id}",
                work_id=work_id,
            )
        return slot

    def _replace(self, slot: _Slot, work: Work) -> None:
        """Store the item's next record and move it between the classes and indexes."""
        old = slot.work
        if work is old:
            return  # a safe retry or a no-change answer
        self._leave(slot)
        slot.work = work
        track = self._track
        if track is not None:
            track.items[slot.seq] = slot
        self._enter(slot, old.lease_expires_at)

    def _leave(self, slot: _Slot) -> None:
        state = slot.work.state
        if state is _QUEUED:
            if not slot.live:
                self._depth -= 1
            else:
                # The delivery ends (acked, stopped, or handed out again): its entries in
                # ``_log`` and ``_due`` go stale, since the slot's delivery number moves on.
                slot.live = False
                slot.delivery += 1
                self._delivered -= 1
                if slot.aged:
                    self._depth -= 1
                else:
                    self._pending -= 1
        else:
            # Leased: a stopped item never gets here, since each of its moves answers with the
            # same record (which ``_replace`` skips) or only updates metadata (which does not
            # go through ``_replace``).
            self._leased -= 1

    def _enter(self, slot: _Slot, old_deadline: _dt.datetime | None) -> None:
        work = slot.work
        state = work.state
        if state is _QUEUED:
            if not slot.in_queued:
                slot.in_queued = True
                heapq.heappush(self._queued, slot.seq)
                if len(self._queued) > 2 * (self._depth + self._pending) + _COMPACT_SLACK:
                    self._compact_queued()
            self._depth += 1
            if not slot.in_fresh:
                slot.in_fresh = True
                heapq.heappush(self._fresh, slot.seq)
                if len(self._fresh) > 2 * self._depth + _COMPACT_SLACK:
                    self._compact_fresh()
        elif state is _STOPPED:
            stopped = self._stopped
            if stopped is not None:
                stopped.append(slot)
        else:
            self._leased += 1
            deadline = work.lease_expires_at
            if deadline is not None and deadline != old_deadline:
                heapq.heappush(self._leases, (deadline, slot.seq))
                if len(self._leases) > 2 * self._leased + _COMPACT_SLACK:
                    self._compact_leases()

    def _deliver(self, slot: _Slot, now: _dt.datetime) -> None:
        """Record the delivery the item's record now carries (it is queued and handed out)."""
        slot.delivery += 1
        slot.live = True
        slot.aged = False
        self._delivered += 1
        self._pending += 1
        # Past the year 9999 the default window never ends by time.
        aged_at = saturating_add(now, self._default_window)
        self._log.append((now, aged_at, slot.seq, slot.delivery))
        if aged_at <= now:  # a default window of 0: ready again at once
            self._advance(now, collect=False)
        if len(self._log) - self._log_head > 2 * self._delivered + _COMPACT_SLACK:
            self._compact_log()

    def _live_delivery(self, seq: int, delivery: int) -> _Slot | None:
        """The item whose delivery number ``delivery`` still awaits its ack, or None (the
        delivery ended, or the item was dropped: a stale entry)."""
        slot = self._by_seq.get(seq)
        if slot is not None and slot.live and slot.delivery == delivery:
            return slot
        return None

    def _take(self, bound: _dt.datetime | None) -> _Slot | None:
        """The oldest-created item a poll may hand out, removed from its index, or None.

        ``bound`` is ``now - reclaim_older_than_ms``: a delivery at or before it may be taken
        over (None: none may).
        """
        by_seq = self._by_seq
        fresh = self._fresh
        while fresh:
            slot = by_seq.get(fresh[0])
            if slot is not None and slot.work.state is _QUEUED and not slot.live:
                break
            heapq.heappop(fresh)
            if slot is not None:  # (a dropped slot is gone, flag and all)
                slot.in_fresh = False
        due = self._due
        if bound is not None:
            mark = self._mark
            if mark is None or bound >= mark:  # (equal: deliveries made since at that instant)
                self._migrate(bound)
            held: builtins.list[tuple[int, int, _dt.datetime]] = []
            while due:
                seq, delivery, at = due[0]
                if self._live_delivery(seq, delivery) is None:
                    heapq.heappop(due)  # stale: that delivery ended
                elif at > bound:
                    held.append(heapq.heappop(due))  # too young for this poll's window
                else:
                    break
            taken = None
            if due and (not fresh or due[0][0] < fresh[0]):
                taken = by_seq[heapq.heappop(due)[0]]  # (checked live just above)
            for entry in held:
                heapq.heappush(due, entry)
            if taken is not None:
                return taken
        if fresh:
            slot = by_seq[heapq.heappop(fresh)]  # (checked at the top)
            slot.in_fresh = False
            return slot
        return None

    def _migrate(self, bound: _dt.datetime) -> None:
        """Move every live delivery made at or before ``bound`` from ``_log`` into ``_due``."""
        log, due = self._log, self._due
        i, end = max(self._log_migrated, self._log_head), len(log)
        while i < end and log[i][0] <= bound:
            at, _, seq, delivery = log[i]
            if self._live_delivery(seq, delivery) is not None:
                heapq.heappush(due, (seq, delivery, at))
            i += 1
        self._log_migrated = i
        self._mark = bound
        if len(due) > 2 * self._delivered + _COMPACT_SLACK:
            self._due = [e for e in due if self._live_delivery(e[0], e[1]) is not None]
            heapq.heapify(self._due)

    def _oldest_delivery(self) -> _dt.datetime | None:
        """When the oldest delivery still awaiting its ack was made, or None."""
        log = self._log
        head, end = self._log_head, len(log)
        while head < end and self._live_delivery(log[head][2], log[head][3]) is None:
            head += 1
        self._log_head = head
        if head > _COMPACT_SLACK and head * 2 > end:
            self._compact_log()
            log, head = self._log, 0
        return log[head][0] if head < len(log) else None

    def _compact_log(self) -> None:
        """Drop the stale entries of ``_log``, keeping the three positions on the same entries."""
        kept: builtins.list[tuple[_dt.datetime, _dt.datetime, int, int]] = []
        aged = migrated = 0
        for i, entry in enumerate(self._log):
            if self._live_delivery(entry[2], entry[3]) is not None:
                kept.append(entry)
            if i + 1 == self._log_aged:
                aged = len(kept)
            if i + 1 == self._log_migrated:
                migrated = len(kept)
        self._log = kept
        self._log_head = 0
        self._log_aged = aged
        self._log_migrated = migrated

    def _compact_fresh(self) -> None:
        # Entries of items that are no longer fresh go; their flags say so, so that the items
        # get a new entry if they become fresh again.
        by_seq, live = self._by_seq, []
        for seq in self._fresh:
            slot = by_seq.get(seq)
            if slot is None:
                continue
            if slot.work.state is _QUEUED and not slot.live:
                live.append(seq)
            else:
                slot.in_fresh = False
        heapq.heapify(live)
        self._fresh = live

    def _compact_queued(self) -> None:
        by_seq, live = self._by_seq, []
        for seq in self._queued:
            slot = by_seq.get(seq)
            if slot is None:
                continue
            if slot.work.state is _QUEUED:
                live.append(seq)
            else:
                slot.in_queued = False
        heapq.heapify(live)
        self._queued = live

    def _window_until(self, slot: _Slot) -> _dt.datetime | None:
        """What :class:`ItemState` keeps of a delivery awaiting its ack (None: there is none)."""
        if not slot.live:
            return None
        at = slot.work.delivered_at
        assert at is not None  # (a live delivery is a delivered queued item)
        return saturating_add(at, self._default_window)

    def _rekey(self, slot: _Slot) -> Work:
        """Give the item a fresh id (the old one leaves the index and answers 404)."""
        work = slot.work
        old_id = work.body.id
        # The environment's own generator, even with an ``id_factory``: the item has already
        # been taken from its index, so nothing here may fail or repeat an id in use.
        counter = self._id_counter
        new_id, counter = self._hashed_id("work_", counter)
        while new_id in self._slots:
            new_id, counter = self._hashed_id("work_", counter)
        self._id_counter = counter
        del self._slots[old_id]
        self._slots[new_id] = slot
        work = attrs.evolve(work, body=attrs.evolve(work.body, id=new_id))
        slot.work = work
        track = self._track
        if track is not None:
            track.state = True  # the id counter moved
            track.dropped.append(old_id)  # a store keyed by id lets the old one go
        return work

    def _compact_leases(self) -> None:
        by_seq = self._by_seq
        live = set()
        for deadline, seq in self._leases:
            slot = by_seq.get(seq)
            if slot is not None and slot.work.lease_expires_at == deadline:
                live.add((deadline, seq))
        self._leases = list(live)
        heapq.heapify(self._leases)

    # ------------------------------------------------------------------ ids and cursors
    def _new_id(self, prefix: str, counter: int) -> tuple[str, int]:
        """The id for ``prefix`` at ``counter``, and the next counter."""
        factory = self._id_factory
        if factory is not None:
            value = factory(prefix)
            if type(value) is not str or not value.startswith(prefix) or value == prefix:
                raise ValueError(
                    f"id_factory({prefix!r}) must return a string starting with {prefix!r}, "
                    f"got {value!r}"
                )
            return value, counter
        return self._hashed_id(prefix, counter)

    def _hashed_id(self, prefix: str, counter: int) -> tuple[str, int]:
        """A keyed hash of (prefix, counter): deterministic; only a successful create (or a
        fresh id on re-hand-out) moves the counter on."""
        hasher = self._id_hash.copy()
        hasher.update(prefix.encode() + counter.to_bytes(8, "big"))
        return prefix + hasher.digest().translate(_TO_B62).decode("ascii"), counter + 1

    def _duplicate(self, work_id: str) -> IllegalMoveError:
        return IllegalMoveError(
            f"work item {work_id!r} already exists in environment {self.environment_id}",
            error_type=self.profile.conflict_error_type,
            work_id=work_id,
        )

    def _encode_cursor(self, seq: int) -> str:
        raw = _CURSOR.pack(seq, self._cursor_check)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def _decode_cursor(self, page: object) -> int:
        problem = None
        if type(page) is not str:
            problem = f"page must be a string, got {type(page).__name__}"
        else:
            try:
                raw = base64.b64decode(page.encode("ascii"), altchars=b"-_", validate=True)
            except (binascii.Error, UnicodeEncodeError):
                raw = b""
            if len(raw) != _CURSOR.size:
                problem = f"page {excerpt(page)} is not a cursor this API returned"
            else:
                seq, check = _CURSOR.unpack(raw)
                if check != self._cursor_check or seq >= self._next_seq:
                    problem = f"page {excerpt(page)} is not a cursor of this environment's listing"
                else:
                    return int(seq)
        raise InvalidInputError(
            f"{problem}; pass the next_page of an earlier answer, or omit it",
            key="page",
            expected="the next_page of an earlier listing, or omitted",
            got=page,
        )
