"""``Environment``: the server-side authority over every work item of one environment.

Theory of operation
-------------------
An :class:`Environment` holds one :class:`~workstate.Work` record per item and a few indexes
over them.  It never decides a state itself: every change goes through the item's own
operation (``deliver``, ``ack``, ``heartbeat``, ``stop``, ``expire``, ``update_metadata``),
which applies a row of the table of moves.  What the environment adds is *which* item a poll
hands out, *when* a lease lapses and *when* an unacknowledged delivery may be handed out again.

Time.  Every call takes ``now``; a ``now`` earlier than the latest one seen is rejected (400,
key ``now``).  Every answer is the one an environment that expired every due lease (spec §5)
before the call would give: an expiry is stamped at the first instant after the deadline
(``deadline + 1 µs``), not at the time somebody happened to look, so the records never depend
on how often, or by which call, the environment was consulted: an ``expire_due`` sweep every
second and a lone ``get`` an hour later produce the same history.  That is what lets the
expiries be applied *lazily and in slices* without ever showing a lapsed lease as live:

* a call that names an item (``get``, ``ack``, ``heartbeat``, ``stop``, ``update_metadata``)
  and each item on a ``list`` page first applies that item's own expiry if it is due;
* ``stats`` counts the items whose lease lapsed as back in the queue (an index counts the
  deadlines before ``now`` and finds the oldest-created of them), and a ``poll`` first applies
  the expiry of the oldest-created lapsed item, the only one it could hand out;
* ``expire_due(now, limit=N)`` applies at most ``N`` of the rest, by deadline, so an adapter can
  spread a mass expiry over many short calls; every call also applies a few
  (``_SLICE_PER_CALL``), so the backlog drains on its own;
* a ``stopping`` item whose lease lapsed becomes ``stopped``.  Under a retention bound, which
  counts stopped items in stopping order, those expiries are applied by every call before
  anything else (the one expiry that is not sliced: there, a mass expiry of ``stopping``
  leases is applied in one call); without one they are sliced like the others.

Redelivery.  A poll hands out the oldest ``queued`` item (by creation) among those it may
take: every item nobody was handed yet (or that came back from an expired lease), and every
item an earlier poll handed out and nobody acked, once that delivery is at least the
*reclaiming* poll's ``reclaim_older_than_ms`` old (boundary inclusive; spec §3).  So a
reclaimed item competes with the never-delivered ones by creation time alone: an old item
whose worker vanished goes out before younger fresh ones, and a young one waits behind an
older backlog.  The window is the reclaiming poll's, not the delivering poll's, so
``poll(); advance 2 s; poll(reclaim_older_than_ms=2000)`` takes the item over.

Each item is in exactly one of four classes:

* *ready* — ``queued`` and deliverable to a poll with the default window: never handed out,
  or handed out at least ``default_reclaim_older_than_ms`` ago (``depth``);
* *pending* — ``queued``, handed out by a poll less than the default window ago (``pending``;
  a poll with a shorter window may still take it over);
* *leased* — ``starting``, ``active`` or ``stopping``;
* *stopped*.

Indexes (``workstate._indexes``: exact, so no entry is ever stale and nothing is ever rebuilt;
each call does a bounded amount of work on them):

* ``_slots`` and ``_by_seq``: the items by id and by creation sequence number (which is how
  every index below names an item), each split over 256 dicts so that no insertion rebuilds a
  million-entry table; ``_present``, the set of those numbers, walks a listing page from its
  cursor (a cursor is a sequence number), skipping dropped items a word of 64 at a time.
* ``_fresh``: the ``queued`` items nobody holds a delivery of (its smallest member is the
  oldest by creation, even when an item comes back from an expired lease long after younger
  items were queued), and ``_queued``: every ``queued`` item, for ``oldest_queued_at``
  (sequence order is ``created_at`` order, since time never goes back).
* ``_deliveries``: every delivery awaiting its ack as ``(delivered at, seq)``, sorted by time.
  A poll with bound ``now - reclaim_older_than_ms`` asks for the smallest sequence number among
  the keys at or before its bound; ``stats`` counts the keys at or before ``now`` minus the
  default window (those are *ready* again, the rest *pending*).
* ``_returning`` and ``_ending``: the leases of ``starting``/``active`` items (which go back to
  the queue when they lapse) and of ``stopping`` ones (which stop), as ``(deadline, seq)``;
  every ack and heartbeat replaces the item's key.
* ``_pollers``: each named worker's latest poll, and ``_polls`` the same as sorted
  ``(time, worker)`` keys, which count the workers that polled in the last 30 s at ``now``;
  the older ones are forgotten a few per call.
* ``_stopped``: under a retention bound, the stopped items in the order they stopped (which is
  ``stopped_at`` order).

Retention.  With ``retain_stopped`` (a count) or ``retain_stopped_seconds`` (an age), every call
first drops the oldest stopped items beyond the newest ``retain_stopped`` and those stopped more
than ``retain_stopped_seconds`` ago; a dropped item is gone (``get`` is a 404, as for an id that
never existed).  A call never sees more stopped items than the bound (the ones a call stops
itself count from the next call on).  Only stopped items go, so no live lease, delivery or
queue position is ever lost.  Dropping is O(1) per item.  Without a bound (the default) every
item is kept.  An ``on_drop`` callback hears of every item the environment lets go of, so an
adapter that keeps something per item (the mock server's sessions tokens, say) can let it go
too: ``on_drop(work, None)`` for an item the bound dropped, ``on_drop(work, renewed)`` for one
that took a fresh id (below; ``renewed`` is the same item under its new id).  It runs inside the
call, after the item left the indexes, and must not raise.

Changes and restoring.  With ``track_changes=True`` the environment remembers which items a call
changed, which it dropped, and whether its own bookkeeping (id counter, sequence, pollers)
moved; :meth:`Environment.take_changes` hands that over and forgets it, so a store can write
only what changed.  :meth:`Environment.restore` rebuilds an environment from such records
(:meth:`Environment.state` and :meth:`Environment.item_states` give them all) and checks them
first: a store may hand back anything.  An item's record says whether a delivery of it awaits
its ack (``window_until``); a restore puts those deliveries back by delivery time, so a
reclaiming poll decides by its own window after a restart as before.  A lease that lapsed but
was not applied yet is written as it was (lease and all); the restored environment applies it
with the same stamp, so the history is the same.

Cost.  Every call costs O(log n) plus, for the index queries, O(n / 128 + 128) steps of C
loops over short lists (see ``workstate._indexes``), and ``expire_due`` O(k log n) for the k
expiries it applies, at most its ``limit``.  Nothing scans all items, nothing is rebuilt, and no
call pays for the stale entries of earlier ones.  Two costs still grow with what a single call
finds due, both under a retention bound only: the ``stopping`` leases that lapsed together
(above) and the stopped items the bound drops together (a burst of pollers leaving the 30 s
window is forgotten a few per call).  ``benchmarks/environment.py`` measures the worst single
call of each operation.

Fresh ids.  Under a profile with ``fresh_id_on_redelivery``, a poll that hands an item out
again (after an unacknowledged delivery or an expired lease) gives it a new ``work_`` id from
the environment's own generator (not ``id_factory``, which could fail or repeat an id half way
through the poll): the slot keeps its place by creation, the old id leaves the id index and
answers 404, so a stale worker cannot touch the new attempt.  With ``track_changes`` the old
id counts as dropped, so a store keyed by id lets its record go.

Rejections.  Arguments that can be checked alone (``block_ms``, ``limit``, a cursor, ...) are
checked before anything happens.  A call refused later (404, 409, 412, a bad metadata patch)
changes nothing it asked for; the time it carried still counts as seen, since expiries due by
then count as applied, and some may have been (they depend only on time, so applying them
early or late gives the same records).

An item's own time may run a few microseconds ahead of the environment's: a heartbeat at the
time of the item's previous one happens one microsecond later, so that heartbeat tokens never
repeat (a stale token must meet 412 even on a clock standing still).  Operations on that item
then happen at its own time, so its timestamps stay in order.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import datetime as _dt
import functools
import itertools
import math
import operator
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from workstate._errors import IllegalMoveError, InvalidInputError, NotFoundError
from workstate._indexes import SeqSet, ShardedDict, SortedKeys
from workstate._profile import ANTHROPIC, Precision, Profile
from workstate._records import HeartbeatResult, WorkData, check_id, check_text, is_int
from workstate._table import State
from workstate._text import excerpt
from workstate._time import UTC, ensure_utc, format_time, saturating_add
from workstate._work import Work

if TYPE_CHECKING:
    from workstate._environment_state import EnvironmentChanges, EnvironmentState, ItemState

__all__ = [
    "Environment",
    "EnvironmentChanges",
    "EnvironmentState",
    "ItemState",
    "QueueStats",
    "WorkPage",
]

_STORE_RECORDS = frozenset(__all__[1:4])  # defined in _environment_state (see there)


def __getattr__(name: str) -> object:
    if name in _STORE_RECORDS:
        from workstate import _environment_state

        return getattr(_environment_state, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_QUEUED, _STOPPED = State.QUEUED, State.STOPPED
_ONE_MICROSECOND = _dt.timedelta(microseconds=1)
_POLL_WINDOW = _dt.timedelta(seconds=30)
_MAX_PAGE = 1000
# Lapsed leases every call applies besides its own work, so that a backlog drains by itself.
_SLICE_PER_CALL = 4
_B62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Each byte of a digest becomes one base-62 digit (byte % 62): a table lookup in C.  The slight
# bias towards the first eight digits does not matter for ids that need only look random.
_TO_B62 = bytes(_B62[b % 62] for b in range(256))
_ID_DIGITS = 24
_CURSOR = struct.Struct(">QI")  # creation sequence number, CRC-32 of the environment id
_SEQ = operator.attrgetter("seq")
_NO_LIMIT = 2**63
_DEADLINE_ORDER = operator.itemgetter(0, 1)


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


class _Tracker:
    """What changed since the last :meth:`Environment.take_changes`."""

    __slots__ = ("dropped", "items", "state")

    def __init__(self) -> None:
        self.items: dict[int, _Slot] = {}
        self.dropped: list[str] = []
        self.state = True  # a new environment is itself a change


class _Slot:
    """One item's place in the environment: its current record and its index bookkeeping."""

    __slots__ = ("delivery", "delivery_key", "seq", "work")

    def __init__(self, work: Work, seq: int) -> None:
        self.work = work
        self.seq = seq
        # How many times the item was handed out (a fresh id needs to know it was before).
        self.delivery = 0
        # While a delivery awaits its ack (the item is queued and handed out): its key in
        # ``_deliveries``, ``(delivered at, seq)``; None otherwise.
        self.delivery_key: tuple[_dt.datetime, int] | None = None


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
    :meth:`take_changes`, for a store that writes only that.  ``on_drop(work, renewed)`` is
    told of every item the environment lets go of: ``renewed`` is None for one the retention
    bound dropped, and the item under its new id for one that took a fresh id (see the
    module's theory of operation); it runs inside the call and must not raise.

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
        on_drop: Callable[[Work, Work | None], None] | None = None,
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
        if on_drop is not None and not callable(on_drop):
            raise InvalidInputError(
                f"on_drop must be a callable or None, got {type(on_drop).__name__}",
                key="on_drop",
                expected="a callable on_drop(work, renewed) or None",
                got=on_drop,
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
        # Sharded: a plain dict's growth rebuilds it in one insertion (40-100 ms at 1M items).
        self._slots: ShardedDict[str, _Slot] = ShardedDict()
        self._by_seq: ShardedDict[int, _Slot] = ShardedDict()
        self._present = SeqSet()
        self._next_seq = 0
        # Stopped items in stopping order, kept only under a bound (nothing to drop otherwise).
        bounded = retain_stopped is not None or self._retain_age is not None
        self._stopped: deque[_Slot] | None = deque() if bounded else None
        # What changed, for take_changes (None: not tracked).  Few attributes on purpose: past
        # 30, CPython stops sharing instance dict keys, and every attribute read gets slower.
        self._track = _Tracker() if track_changes else None
        self._on_drop = on_drop
        self._fresh = SeqSet()
        self._queued = SeqSet()
        self._deliveries = SortedKeys()
        self._default_window = _dt.timedelta(milliseconds=profile.default_reclaim_older_than_ms)
        self._returning = SortedKeys()
        self._ending = SortedKeys()
        self._polls = SortedKeys()
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
        now = self._now
        depth, pending = (0, 0) if now is None else self._counts(now)
        return (
            f"<Environment {self.environment_id} profile={self.profile.name} "
            f"items={len(self._slots)} depth={depth} pending={pending}>"
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
        self._present.add(seq)
        self._slots[work_id] = slot
        self._by_seq[seq] = slot
        track = self._track
        if track is not None:
            track.items[seq] = slot
            track.state = True
        self._enter(slot)
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
            previous = self._pollers.get(worker_id)
            if previous != now:
                if previous is not None:
                    self._polls.remove((previous, worker_id))
                self._pollers[worker_id] = now
                self._polls.add((now, worker_id))
                if self._track is not None:
                    self._track.state = True
        try:
            bound: _dt.datetime | None = now - _dt.timedelta(milliseconds=reclaim)
        except OverflowError:  # a window reaching before year 1: no delivery is that old
            bound = None
        returning = self._returning
        if returning and returning.first()[0] < now:
            # Leases lapsed and not applied yet: of those items, only the oldest by creation
            # could be the answer (they all rejoin the queue at their place by creation).
            oldest = returning.min_seq_below((now, -1))
            assert oldest is not None  # (the first key is below the bound)
            self._expire(self._by_seq[oldest])
        slot = self._take(bound)
        if slot is None:
            return None
        work = slot.work
        if self.profile.fresh_id_on_redelivery and (work.attempt or slot.delivery):
            work = self._rekey(slot)
        work = work.deliver(now, worker_id=worker_id)
        seq = slot.seq
        key = slot.delivery_key
        if key is not None:  # taken over: that delivery ends (the item stays queued)
            self._deliveries.remove(key)
        else:
            self._fresh.discard(seq)
        slot.work = work
        slot.delivery += 1
        slot.delivery_key = key = (now, seq)
        self._deliveries.add(key)
        track = self._track
        if track is not None:
            track.items[seq] = slot
        return work

    def ack(self, work_id: str, now: _dt.datetime, *, worker_id: str | None = None) -> Work:
        """The worker claims the item: ``queued → starting``, with a lease of the default TTL.

        On ``starting``/``active`` a safe retry that changes nothing.  Under a profile that
        binds acks to workers, an ack from another worker than the poll's is 409.
        """
        worker_id = _check_worker_id(worker_id)
        now = self._begin(now)
        slot = self._slot(work_id, now)
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
        slot = self._slot(work_id, now)
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
        slot = self._slot(work_id, now)
        self._replace(slot, slot.work.stop(_item_time(slot, now), force=force))
        return slot.work

    def update_metadata(
        self, work_id: str, now: _dt.datetime, patch: Mapping[str, str | None]
    ) -> Work:
        """Merge ``patch`` into the item's metadata (``None`` deletes a key); state unchanged."""
        now = self._begin(now)
        slot = self._slot(work_id, now)
        # The table's metadata rows keep the state and the lease: no index changes.
        work = slot.work.update_metadata(_item_time(slot, now), patch)
        if work is not slot.work:
            slot.work = work
            if self._track is not None:
                self._track.items[slot.seq] = slot
        return work

    def get(self, work_id: str, now: _dt.datetime) -> Work:
        """The item's current record (its lease expired first if it was due)."""
        now = self._begin(now)
        return self._slot(work_id, now).work

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
        now = self._begin(now)
        by_seq, settle = self._by_seq, self._settle
        found: builtins.list[Work] = []
        more = False
        last = -1
        # ``_present`` skips dropped items 64 at a time, so a page costs its own items, however
        # many items were dropped before or among them.
        for seq in self._present.iter_from(start):
            if len(found) == limit:
                more = True
                break
            slot = by_seq[seq]
            settle(slot, now)
            found.append(slot.work)
            last = seq
        next_page = self._encode_cursor(last) if more else None
        return WorkPage(data=tuple(found), next_page=next_page)

    def stats(self, now: _dt.datetime) -> QueueStats:
        """The queue's statistics at ``now`` (from the indexes' counts: no scan of the items).

        Items whose lease lapsed count as back in the queue, whether or not the expiry has been
        applied yet.
        """
        now = self._begin(now)
        depth, pending = self._counts(now)
        oldest = self._queued.min()
        lapsed = self._returning.min_seq_below((now, -1))
        if lapsed is not None and (oldest is None or lapsed < oldest):
            oldest = lapsed
        polling = self._trim_polls(now)
        return QueueStats(
            depth=depth,
            pending=pending,
            oldest_queued_at=None if oldest is None else self._by_seq[oldest].work.created_at,
            workers_polling=polling if self._named_poll_seen else None,
            precision=self.profile.lifecycle_precision,
        )

    def expire_due(self, now: _dt.datetime, *, limit: int | None = None) -> builtins.list[Work]:
        """Apply the expiries of leases whose deadline passed before ``now`` (spec §5).

        ``starting``/``active`` items go back to the queue, deliverable at once at their place
        by creation; ``stopping`` items become ``stopped``.  Each expiry is stamped at the
        first instant after its deadline.  Returns the new records, by deadline.

        ``limit`` (an integer >= 1; None: no bound) caps how many lapsed leases this call
        applies, the earliest deadlines first, so that an adapter can spread a mass expiry over
        many short calls (:meth:`expiries_due` says how many are left).  Under a retention
        bound, lapsed ``stopping`` leases are applied by every call, whatever the limit (the
        bound counts the items they stop).
        Applying expiries changes no answer: every call treats a lapsed lease as expired
        whether or not it was applied (see the module's theory of operation); the records
        returned are the ones no earlier call applied.
        """
        if limit is not None and (not is_int(limit) or limit < 1):
            raise InvalidInputError(
                f"limit must be an integer >= 1 or None, got {excerpt(limit)}",
                key="limit",
                expected="an integer >= 1 (how many lapsed leases to apply), or None for all",
                got=limit,
            )
        now = ensure_utc(now)
        self._check_time(now)
        self._now = now
        if self._lapsed(now):
            expired = self._expire_lapsed(now, _NO_LIMIT if limit is None else limit, collect=True)
        else:
            expired = []  # (the usual case: nothing fell due since the last call)
        if self._stopped:
            self._retain(now)
        return expired

    def expiries_due(self, now: _dt.datetime) -> int:
        """How many leases lapsed before ``now`` and are not applied yet (changes nothing).

        A server that applies expiries in slices (``expire_due(now, limit=N)``) calls it to
        know whether another slice is due.
        """
        now = ensure_utc(now)
        self._check_time(now)
        bound = (now, -1)
        return self._returning.count_below(bound) + self._ending.count_below(bound)

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
        times = []
        oldest = self._deliveries.first()
        if oldest is not None:
            with contextlib.suppress(OverflowError):  # past the year 9999: never by time
                times.append(oldest[0] + _dt.timedelta(milliseconds=window))
        # Leases that lapsed before the latest time seen count as expired already (applied or
        # not): the next change is the first deadline from then on.
        latest = self._now
        for leases in (self._returning, self._ending):
            key = leases.first() if latest is None else leases.first_from((latest, -1))
            if key is not None:
                # A lease expires at the first instant after its deadline.  The core refuses a
                # deadline with no such instant (see workstate._time); saturate all the same.
                times.append(saturating_add(key[0], _ONE_MICROSECOND))
        return min(times) if times else None

    # ------------------------------------------------------------------ stores
    def take_changes(self) -> EnvironmentChanges:
        """What changed since the last call (or since creation or restore), and forget it.

        Needs ``track_changes=True``.  Items appear once, in their latest state, however many
        calls changed them; an item created and dropped in between does not appear.
        """
        from workstate._environment_state import EnvironmentChanges, ItemState

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
        from workstate._environment_state import EnvironmentState

        return EnvironmentState(
            id_counter=self._id_counter,
            next_seq=self._next_seq,
            named_poll_seen=self._named_poll_seen,
            pollers=dict(self._pollers),
        )

    def item_states(self) -> tuple[ItemState, ...]:
        """Every item with its bookkeeping, by creation, as :meth:`restore` takes them."""
        from workstate._environment_state import ItemState

        return tuple(
            ItemState(work=slot.work, seq=slot.seq, window_until=self._window_until(slot))
            for slot in map(self._by_seq.__getitem__, self._present.iter_from(0))
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
        on_drop: Callable[[Work, Work | None], None] | None = None,
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
            on_drop=on_drop,
        )
        now = ensure_utc(now)
        env._check_state(state, now)
        records = sorted(env._checked_items(items, state.next_seq, now), key=_SEQ)
        env._now = now
        env._id_counter = state.id_counter
        env._next_seq = state.next_seq
        env._named_poll_seen = state.named_poll_seen
        env._pollers = dict(state.pollers)
        for worker, at in env._pollers.items():
            env._polls.add((at, worker))
        for record in records:
            seq = record.seq
            slot = _Slot(record.work, seq)
            env._present.add(seq)
            env._slots[record.work.id] = slot
            env._by_seq[seq] = slot
            env._enter(slot)
            if record.window_until is not None:
                # A delivery awaiting its ack goes back by its delivery time; a default window
                # that ended by ``now`` counts as ended at once, as it would have.
                delivered = record.work.delivered_at
                assert delivered is not None  # (checked: a window only on a delivered item)
                env._fresh.discard(seq)
                slot.delivery = 1
                slot.delivery_key = (delivered, seq)
                env._deliveries.add(slot.delivery_key)
        # Stopped items were entered by creation; retention drops them in stopping order.
        if env._stopped is not None:
            env._stopped = deque(sorted(env._stopped, key=lambda s: (s.work.stopped_at, s.seq)))
        if env._track is not None:
            env._track = _Tracker()
            env._track.state = False
        return env

    def _check_state(self, state: object, now: _dt.datetime) -> None:
        from workstate._environment_state import EnvironmentState

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
        # Imported here: only a restore checks invariants, and the checker's module (and its
        # attrs record) is start-up time that neither import workstate nor serve needs.
        from workstate._environment_state import ItemState
        from workstate._invariants import invariant_violations

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
        """Check ``now`` and let time pass up to it (a few lapsed leases, see *Time*)."""
        if type(now) is not _dt.datetime or now.tzinfo is not UTC:
            now = ensure_utc(now)
        self._check_time(now)
        self._now = now
        if self._lapsed(now):
            self._expire_lapsed(now, _SLICE_PER_CALL, collect=False)
        stopped = self._stopped
        if stopped and (len(stopped) > self._retain_count or self._retain_age is not None):
            self._retain(now)
        return now

    def _lapsed(self, now: _dt.datetime) -> bool:
        """Whether some lease lapsed before ``now`` and is not applied yet."""
        returning, ending = self._returning, self._ending
        return bool(
            (returning and returning.first()[0] < now) or (ending and ending.first()[0] < now)
        )

    def _expire_lapsed(
        self, now: _dt.datetime, limit: int, *, collect: bool
    ) -> builtins.list[Work]:
        """Apply up to ``limit`` lapsed leases, earliest deadline first, and under a retention
        bound every lapsed ``stopping`` lease besides (see *Time*)."""
        by_seq, returning, ending = self._by_seq, self._returning, self._ending
        found: builtins.list[tuple[_dt.datetime, int, Work]] = []
        bound = (now, -1)
        if self._stopped is not None:
            # The bound counts stopped items in stopping order: each call must see every
            # stopping lease that lapsed as stopped, in its place, before it drops any.
            while ending and ending.first() < bound:
                deadline, seq = ending.first()
                slot = by_seq[seq]
                self._replace(slot, slot.work.expire(deadline + _ONE_MICROSECOND))
                if collect:
                    found.append((deadline, seq, slot.work))
        while limit:
            first, other = returning.first(), ending.first()
            if other is not None and (first is None or other < first):
                first = other
            if first is None or first >= bound:
                break
            deadline, seq = first
            slot = by_seq[seq]
            self._replace(slot, slot.work.expire(deadline + _ONE_MICROSECOND))
            if collect:
                found.append((deadline, seq, slot.work))
            limit -= 1
        found.sort(key=_DEADLINE_ORDER)
        return [work for _, _, work in found]

    def _expire(self, slot: _Slot) -> None:
        """Apply the item's lapsed lease."""
        deadline = slot.work.lease_expires_at
        assert deadline is not None  # (called only for a lapsed lease)
        self._replace(slot, slot.work.expire(deadline + _ONE_MICROSECOND))

    def _settle(self, slot: _Slot, now: _dt.datetime) -> None:
        """Apply the item's own expiry if its lease lapsed before ``now`` (see *Time*)."""
        deadline = slot.work.lease_expires_at
        if deadline is not None and deadline < now and slot.work.state is not _STOPPED:
            self._expire(slot)

    def _counts(self, now: _dt.datetime) -> tuple[int, int]:
        """``depth`` and ``pending`` at ``now``: lapsed leases count as back in the queue."""
        deliveries = self._deliveries
        ready_again = 0
        if deliveries:
            try:
                aged = now - self._default_window
            except OverflowError:  # a window reaching before year 1: no delivery is that old
                pass
            else:
                ready_again = deliveries.count_below((aged, _NO_LIMIT))
        back = self._returning.count_below((now, -1)) if self._returning else 0
        return len(self._fresh) + ready_again + back, len(deliveries) - ready_again

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
        self._present.discard(slot.seq)
        track = self._track
        if track is not None:
            track.items.pop(slot.seq, None)
            track.dropped.append(work_id)
        if self._on_drop is not None:
            self._on_drop(slot.work, None)

    def _trim_polls(self, now: _dt.datetime) -> int:
        """Forget a few pollers older than 30 s; how many polled in the last 30 s at ``now``.

        Bounded: a burst of pollers that all left the window at once is forgotten over the
        calls that follow, and the count is exact all the same.
        """
        polls, pollers = self._polls, self._pollers
        horizon = saturating_add(now, -_POLL_WINDOW)  # near year 1 the window starts at year 1
        for _ in range(_SLICE_PER_CALL * 16):
            key = polls.first()
            if key is None or key[0] >= horizon:
                break
            polls.remove(key)
            del pollers[key[1]]
        return len(polls) - polls.count_below((horizon, ""))

    # ------------------------------------------------------------------ indexes
    def _peek(self, work_id: str, now: _dt.datetime) -> Work | None:
        """The item's record as a call at ``now`` would find it, or None if there is none.

        For an adapter that has just begun ``now`` (with :meth:`expire_due`) and wants the
        item as it stands before its next call: no second time check, no error for a missing
        item (the mock server's journal notes each call's item this way).
        """
        slot = self._slots.get(work_id)
        if slot is None:
            return None
        self._settle(slot, now)
        return slot.work

    def _slot(self, work_id: object, now: _dt.datetime) -> _Slot:
        """The item named ``work_id``, with its lapsed lease applied (400 or 404 if none)."""
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
        self._settle(slot, now)
        return slot

    def _replace(self, slot: _Slot, work: Work) -> None:
        """Store the item's next record and move it between the classes and indexes."""
        if work is slot.work:
            return  # a safe retry or a no-change answer
        self._leave(slot)
        slot.work = work
        track = self._track
        if track is not None:
            track.items[slot.seq] = slot
        self._enter(slot)

    def _leave(self, slot: _Slot) -> None:
        """Take the item out of the indexes of its current class."""
        work, seq = slot.work, slot.seq
        state = work.state
        if state is _QUEUED:
            self._queued.discard(seq)
            key = slot.delivery_key
            if key is None:
                self._fresh.discard(seq)
            else:  # the delivery ends (acked, stopped)
                slot.delivery_key = None
                self._deliveries.remove(key)
        else:
            # Leased.  (A stopped item never gets here: each of its moves answers with the
            # same record, which ``_replace`` skips, or only updates metadata, which does not
            # go through ``_replace``.)
            deadline = work.lease_expires_at
            if deadline is not None:
                leases = self._ending if state is State.STOPPING else self._returning
                leases.remove((deadline, seq))

    def _enter(self, slot: _Slot) -> None:
        """Put the item into the indexes of its (new) class; it holds no delivery."""
        work, seq = slot.work, slot.seq
        state = work.state
        if state is _QUEUED:
            self._queued.add(seq)
            self._fresh.add(seq)
        elif state is _STOPPED:
            stopped = self._stopped
            if stopped is not None:
                stopped.append(slot)
        else:
            deadline = work.lease_expires_at
            if deadline is not None:
                leases = self._ending if state is State.STOPPING else self._returning
                leases.add((deadline, seq))

    def _take(self, bound: _dt.datetime | None) -> _Slot | None:
        """The oldest-created item a poll may hand out, or None (it stays in its indexes).

        ``bound`` is ``now - reclaim_older_than_ms``: a delivery at or before it may be taken
        over (None: none may).
        """
        seq = self._fresh.min()
        deliveries = self._deliveries
        if bound is not None and deliveries and deliveries.first()[0] <= bound:
            due = deliveries.min_seq_below((bound, _NO_LIMIT))
            if due is not None and (seq is None or due < seq):
                seq = due
        return None if seq is None else self._by_seq[seq]

    def _window_until(self, slot: _Slot) -> _dt.datetime | None:
        """What :class:`ItemState` keeps of a delivery awaiting its ack (None: there is none)."""
        key = slot.delivery_key
        if key is None:
            return None
        return saturating_add(key[0], self._default_window)

    def _rekey(self, slot: _Slot) -> Work:
        """Give the item a fresh id (the old one leaves the index and answers 404)."""
        old = work = slot.work
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
        if self._on_drop is not None:
            self._on_drop(old, work)
        return work

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
