"""The trace checker: can some sequence of legal operations explain what was observed?

Theory of operation
-------------------
A *trace* is a sequence of records observed from a server or a worker's log: work snapshots
(the API's work object, as is) and heartbeat answers (the API's ``work_heartbeat`` object with
a ``work_id`` key added, so that the answer can be tied to its item).  Records of several items
may be interleaved; the checker follows each item on its own.

Between two observations of an item, *several* operations may have happened (an ack and a
heartbeat; an expiry and a new ack).  So the checker searches: from what it knows after one
snapshot (the state and every lifecycle timestamp), it explores the table of moves
(:func:`workstate._engine.lookup`) for a path that ends in exactly the next snapshot, passing
through each heartbeat answer seen on the way.  A search node holds the state, what is known
about each timestamp (the value seen last, null, or set on this path), and two lower bounds:
the earliest time the latest operation on the path could have happened (every later
operation happens at or after it) and the earliest time the lease could expire.  An
operation that sets a timestamp either sets its *final* value, which must then be the one the
next snapshot shows (this pins the operation's time), or a value that a later operation on
the path overwrites or clears.  Giving every operation the earliest time its constraints
allow is optimal, because every constraint is a lower bound on a later time or an upper bound
from the snapshot.  What a trace cannot show (the TTL an unseen heartbeat asked for, a
truncated time's fraction) is given its most permissive value, so the checker never rejects
a trace the core could produce.  Paths that are dominated (same node, later times) are
pruned, which makes the search finish.  It is also pruned towards the
next snapshot (a node from which that snapshot's state, or a timestamp it must still change,
is out of reach is dropped) and, before an extended heartbeat, towards that heartbeat's time;
when the pruned search fails, an unpruned one finds the first record at fault and says why.

An observation that no path explains is reported with its position, diagnosed in plain words
(an illegal state change, a timestamp that moved back, vanished or changed, a set-once field
that changed, a broken invariant), and the checker then resynchronises on it, so one bad
record yields its own violations and not a cascade.  With ``complete=True`` the trace claims
to record every client operation (ack, heartbeat, stop, metadata update): consecutive records
of an item are then at most one such operation apart (server-side lease expiries may still
happen unrecorded), which lets the checker notice a missing step.

The first snapshot of an item is taken as given (after its own invariants); heartbeat
answers before it are only checked against each other.  Under a profile with
``fresh_id_on_redelivery`` an item handed out again has a new id: a first snapshot with the
environment, data and ``created_at`` of an item seen before continues it, and every later
record of the old id is a violation (the server answers 404 for it).

This module imports no Hypothesis, so ``python -m workstate check`` works without the
``testing`` extra; :func:`main` is that command (the only part here that does I/O).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import attrs

from workstate._engine import lookup
from workstate._errors import InvalidInputError
from workstate._invariants import invariant_violations
from workstate._profile import ANTHROPIC, Precision, Profile
from workstate._profile_cli import (
    ProfileOptionError,
    add_profile_options,
    is_journal_header,
    journal_profile,
    profile_from_options,
)
from workstate._records import HeartbeatResult
from workstate._table import LEASE_STATES, LeaseEffect, Move, Operation, Stamp, State
from workstate._text import counted
from workstate._time import format_time, parse_time, truncate
from workstate._wire import heartbeat_from_json, work_from_json
from workstate._work import Work

__all__ = [
    "TraceChecker",
    "TraceReport",
    "TraceViolation",
    "check_trace",
    "heartbeat_record",
    "journal_trace_records",
    "main",
]

_STAMPS: tuple[Stamp, ...] = tuple(Stamp)
_KEYS: tuple[str, ...] = tuple(s.value for s in _STAMPS)
_INDEX = {s: i for i, s in enumerate(_STAMPS)}
_LATEST = _INDEX[Stamp.LATEST_HEARTBEAT_AT]
_MICRO = _dt.timedelta(microseconds=1)
_SECOND = _dt.timedelta(seconds=1)
_CLIENT_OPS = frozenset({Operation.ACK, Operation.HEARTBEAT, Operation.STOP, Operation.FORCE_STOP})
_SET_ONCE = ("environment_id", "data", "created_at")
_NO_LIMIT = 1 << 30
_MAX_NODES = 50_000  # a safety net; real searches visit a few dozen nodes

# What the search knows about one timestamp: the value (a datetime or None) when known, or one
# of these markers for a value set on the current path.
_FINAL = "final"  # set, and this is the value the next snapshot must show
_TEMP = "temp"  # set, but a later operation on the path overwrites or clears it
_Status = _dt.datetime | None | str


@attrs.frozen(kw_only=True)
class TraceViolation:
    """One observation that no sequence of legal operations explains."""

    index: int
    """The record's position in the trace (0-based, counting every record fed)."""
    work_id: str | None
    """The item the record belongs to (None when the record names none)."""
    rule: str
    """A stable name for the kind of problem: ``malformed``, ``invariant``, ``set-once``,
    ``illegal-state-change``, ``timestamp-backwards``, ``timestamp-vanished``,
    ``timestamp-changed``, ``heartbeat``, ``missing-step``, ``retired-id`` (a record of an id
    that a fresh-id profile retired when the item was handed out again) or ``unexplained``."""
    message: str
    """A plain explanation."""
    key: str | None = None
    """The field at fault, where there is one."""

    def __str__(self) -> str:
        where = f"record {self.index}" + (f" ({self.work_id})" if self.work_id else "")
        return f"{where}: {self.rule}: {self.message}"


@attrs.frozen(kw_only=True)
class TraceReport:
    """The verdict on a whole trace."""

    records: int
    """How many records were checked."""
    work_ids: tuple[str, ...]
    """The items seen, in order of first appearance."""
    violations: tuple[TraceViolation, ...]
    """Every violation found, by position."""
    profile: str
    """The name of the profile the trace was checked under."""
    complete: bool
    """Whether the trace was checked as recording every client operation."""

    @property
    def ok(self) -> bool:
        """True when some sequence of legal operations explains every record."""
        return not self.violations

    def format(self, *, source: str = "trace", lines: Sequence[int] | None = None) -> str:
        """A readable report; ``lines`` maps record positions to line numbers of a file."""
        mode = ", complete" if self.complete else ""
        out = [
            f"{source}: {counted(self.records, 'record')}, "
            f"{counted(len(self.work_ids), 'work item')} (profile {self.profile}{mode})"
        ]
        if self.ok:
            out.append(f"{source}: explained: some sequence of legal operations explains it")
            return "\n".join(out)
        for v in self.violations:
            where = f"line {lines[v.index]}" if lines is not None else f"record {v.index}"
            item = f" ({v.work_id})" if v.work_id else ""
            out.append(f"  {where}{item}: {v.rule}: {v.message}")
        n = len(self.violations)
        out.append(f"{source}: not explained: {n} violation{'s' if n != 1 else ''}")
        return "\n".join(out)


def heartbeat_record(work_id: str, response: HeartbeatResult | Mapping[str, Any]) -> dict[str, Any]:
    """The trace record of a heartbeat answer: the API's object plus the item's ``work_id``."""
    body = response.to_json() if isinstance(response, HeartbeatResult) else dict(response)
    return {"type": "work_heartbeat", "work_id": work_id, **body}


def check_trace(
    records: Iterable[object], *, profile: Profile = ANTHROPIC, complete: bool = False
) -> TraceReport:
    """Check a whole trace (mappings or JSON text, one record each); see :class:`TraceChecker`.

    >>> import datetime as dt
    >>> from workstate import Work
    >>> t = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.timezone.utc)
    >>> w0 = Work.create(id="work_1", environment_id="env_1", session_id="sesn_1", now=t)
    >>> w1 = w0.ack(t + dt.timedelta(seconds=1))
    >>> w2 = w1.stop(t + dt.timedelta(seconds=2), force=True)
    >>> check_trace([w0.to_json(), w2.to_json()]).ok
    True
    >>> print(check_trace([w0.to_json(), w2.to_json(), w1.to_json()]).format())
    ... # doctest: +NORMALIZE_WHITESPACE
    trace: 3 records, 1 work item (profile anthropic)
      record 2 (work_1): illegal-state-change: illegal state change stopped → starting:
      no sequence of legal operations leads from stopped to starting
    trace: not explained: 1 violation
    """
    checker = TraceChecker(profile=profile, complete=complete)
    for record in records:
        checker.feed(record)
    return checker.finish()


def journal_trace_records(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The trace records in a request journal of the mock server (``GET /mock/journal``'s
    entries, or the lines of ``serve --journal FILE``), in the order the server applied them.

    Every successful answer that shows an item becomes a record: the work object of a
    creation, poll, ack, stop (for a stop answered 204, the item its entry keeps), read or
    metadata update, each item of a listing, and a
    heartbeat answer (tied to the entry's ``work_id``).  An answer the server computed but
    withheld (a ``drop: after`` fault) counts too: it is what the server did.  The journal
    records every client call, so the records may be checked with ``complete=True``.
    """
    ordered = sorted(entries, key=_applied_order)
    out: list[dict[str, Any]] = []
    for entry in ordered:
        status, answer = entry.get("status"), entry.get("response")
        withheld = entry.get("withheld")
        if isinstance(withheld, Mapping):
            status, answer = withheld.get("status"), withheld.get("response")
        item = entry.get("item")
        if status == 204 and isinstance(item, Mapping):
            status, answer = 200, item  # a stop answered 204: the item it left
        if status != 200 or not isinstance(answer, Mapping):
            continue
        kind = answer.get("type")
        if kind == "work":
            out.append(dict(answer))
        elif kind == "work_heartbeat" and isinstance(entry.get("work_id"), str):
            out.append(heartbeat_record(entry["work_id"], answer))
        elif entry.get("operation") == "list" and isinstance(answer.get("data"), list):
            # Only the work listing: a session's events page has a ``data`` list too.
            out.extend(dict(w) for w in answer["data"] if isinstance(w, Mapping))
    return out


def _is_journal_entry(record: object) -> bool:
    return isinstance(record, Mapping) and "seq" in record and "operation" in record


# ------------------------------------------------------------------------------ the rules
class _Step(NamedTuple):
    """A move of the table as the search applies it."""

    move: Move
    client: bool  # a client's operation (counted in a complete trace), not a server's expiry
    expire: bool
    sets: tuple[int, ...]  # indexes of the timestamps it sets
    clears: tuple[int, ...]  # ... and of those it clears


class _Rules:
    """What the search needs from the table under one profile, computed once."""

    def __init__(self, profile: Profile) -> None:
        table = lookup(profile)
        self.profile = profile
        self.moves: dict[State, list[Move]] = {s: [] for s in State}
        self.steps: dict[State, list[_Step]] = {s: [] for s in State}
        for (state, op), move in table.items():
            if move.changes and op not in (Operation.DELIVER, Operation.UPDATE_METADATA):
                self.moves[state].append(move)
                self.steps[state].append(
                    _Step(
                        move,
                        op in _CLIENT_OPS,
                        op is Operation.EXPIRE,
                        tuple(_INDEX[s] for s in _STAMPS if s in move.sets),
                        tuple(_INDEX[s] for s in _STAMPS if s in move.clears),
                    )
                )
        self.beat: dict[State, Move] = {
            s: mv for (s, op), mv in table.items() if op is Operation.HEARTBEAT and mv.changes
        }
        self.beat_noop = frozenset(
            s for (s, op), mv in table.items() if op is Operation.HEARTBEAT and not mv.changes
        )
        self.beat_targets = frozenset(mv.target for mv in self.beat.values())
        self.clearable = frozenset(k for mv in table.values() for k in mv.clears)
        lifecycle = _SECOND if profile.lifecycle_precision is Precision.SECONDS else _MICRO
        self.unit = tuple(_MICRO if s is Stamp.LATEST_HEARTBEAT_AT else lifecycle for s in _STAMPS)
        self.reach = {s: self._reachable(s) for s in State}
        self.one_step = {s: self._one_step(s) for s in State}
        # The timestamps some path from a state can still set or clear.
        self.changeable = {
            s: frozenset(
                i for r in self.reach[s] for step in self.steps[r] for i in step.sets + step.clears
            )
            for s in State
        }

    def precision(self, i: int) -> Precision:
        return Precision.MICROSECONDS if self.unit[i] == _MICRO else Precision.SECONDS

    def fmt(self, i: int, value: _dt.datetime) -> str:
        return format_time(value, self.precision(i))

    def _reachable(self, start: State) -> frozenset[State]:
        seen, todo = {start}, [start]
        while todo:
            for mv in self.moves[todo.pop()]:
                if mv.target not in seen:
                    seen.add(mv.target)
                    todo.append(mv.target)
        return frozenset(seen)

    def _expiries(self, start: State) -> set[State]:
        seen, todo = {start}, [start]
        while todo:
            for mv in self.moves[todo.pop()]:
                if mv.operation is Operation.EXPIRE and mv.target not in seen:
                    seen.add(mv.target)
                    todo.append(mv.target)
        return seen

    def _one_step(self, start: State) -> frozenset[State]:
        """States reachable with at most one client operation (expiries are free)."""
        out: set[State] = set()
        for s in self._expiries(start):
            out.add(s)
            for mv in self.moves[s]:
                if mv.operation in _CLIENT_OPS:
                    out |= self._expiries(mv.target)
        return frozenset(out)


@functools.cache
def _rules(profile: Profile) -> _Rules:
    return _Rules(profile)


# ------------------------------------------------------------------------------ the search
class _Node(NamedTuple):
    state: State
    stamps: tuple[_Status, ...]
    used: int  # client operations spent in the current gap (complete traces only)
    meta: bool  # whether a metadata update was spent on the current segment
    ttl: int | None  # the lease's TTL when an answer told it
    cursor: _dt.datetime  # earliest time of the latest operation on the path
    deadline: _dt.datetime | None  # earliest time the lease could run out


class _Target(NamedTuple):
    state: State
    stamps: tuple[_dt.datetime | None, ...]
    meta_changed: bool


class _Beat(NamedTuple):
    position: int
    result: HeartbeatResult
    time: _dt.datetime | None  # the parsed last_heartbeat, when it is not empty


_Seen = dict[tuple[Any, ...], list[tuple[_dt.datetime, _dt.datetime | None]]]


def _no_later(a: _dt.datetime | None, b: _dt.datetime | None) -> bool:
    return b is None if a is None else b is not None and a <= b


def _dominated(seen: _Seen, node: _Node) -> bool:
    """Whether a node with the same knowledge and no later times was already reached
    (recording ``node`` when it was not)."""
    prior = seen.setdefault(node[:5], [])
    for cursor, deadline in prior:
        if cursor <= node.cursor and _no_later(deadline, node.deadline):
            return True
    prior.append((node.cursor, node.deadline))
    return False


class _Search:
    """One segment of one item: from the nodes after a snapshot to the next observation."""

    def __init__(
        self, rules: _Rules, target: _Target | None, complete: bool, *, prune: bool = False
    ) -> None:
        self.rules = rules
        self.target = target
        self.complete = complete
        self.prune = prune and target is not None

    def relaxed(self) -> _Search:
        """The same search with no limit on operations between records."""
        return _Search(self.rules, self.target, complete=False)

    def _viable(self, node: _Node) -> bool:
        """Whether the target may still be reached from ``node`` (pruning only)."""
        target = self.target
        assert target is not None
        rules = self.rules
        if target.state not in rules.reach[node.state]:
            return False
        changeable = rules.changeable[node.state]
        for i, status in enumerate(node.stamps):
            if i not in changeable and (
                status == _TEMP or (status != _FINAL and status != target.stamps[i])
            ):
                return False
        return True

    def close(
        self, nodes: Iterable[_Node], budget: int, horizon: _dt.datetime | None = None
    ) -> list[_Node]:
        """Every node reachable from ``nodes`` with at most ``budget`` client operations
        (counted in a complete trace only) and no operation after ``horizon``."""
        seen: _Seen = {}
        out: list[_Node] = []
        todo = [n for n in nodes if not _dominated(seen, n)]
        out.extend(todo)
        prune = self.prune
        while todo and len(out) < _MAX_NODES:
            for child in self._children(todo.pop(), budget, self.complete):
                if prune and not self._viable(child):
                    continue
                if horizon is not None and child.cursor > horizon:
                    continue
                if not _dominated(seen, child):
                    out.append(child)
                    todo.append(child)
        return out

    def _children(self, node: _Node, budget: int, count: bool) -> Iterator[_Node]:
        rules, target = self.rules, self.target
        stamps = node.stamps
        for move, client, expire, sets, clears in rules.steps[node.state]:
            if client and count and node.used >= budget:
                continue
            lo = node.cursor
            if expire:
                if node.deadline is None:
                    continue  # no lease to lapse: an ack that starts none, and no heartbeat
                lo = max(lo, node.deadline + _MICRO)
            if any(stamps[i] == _FINAL for i in sets) or any(stamps[i] == _FINAL for i in clears):
                continue  # a final value cannot change again on the path
            eligible = [i for i in sets if target is not None and target.stamps[i] is not None]
            used = node.used + (1 if client and count else 0)
            for r in range(len(eligible) + 1):
                for final in itertools.combinations(eligible, r):
                    child = self._apply(node, move, lo, sets, clears, final, used)
                    if child is not None:
                        yield child
        if (
            count
            and target is not None
            and target.meta_changed
            and not node.meta
            and node.used < budget
        ):
            yield node._replace(meta=True, used=node.used + 1)

    def _apply(
        self,
        node: _Node,
        move: Move,
        lo: _dt.datetime,
        sets: tuple[int, ...],
        clears: tuple[int, ...],
        final: tuple[int, ...],
        used: int,
    ) -> _Node | None:
        t, hi = lo, None
        for i in final:
            assert self.target is not None
            value = self.target.stamps[i]
            assert value is not None
            t = max(t, value)
            top = value + self.rules.unit[i]
            hi = top if hi is None else min(hi, top)
        if hi is not None and t >= hi:
            return None
        stamps = list(node.stamps)
        for i in clears:
            stamps[i] = None
        for i in sets:
            stamps[i] = _FINAL if i in final else _TEMP
        deadline, ttl = _lease(move.lease, t, node, self.rules.profile)
        return _Node(move.target, tuple(stamps), used, node.meta, ttl, t, deadline)

    def beat(self, nodes: list[_Node], beat: _Beat) -> list[_Node]:
        """The nodes that pass through the heartbeat answer ``beat`` (as its last step)."""
        result, out = beat.result, []
        # Nothing that happened after an extended heartbeat's time can come before it.
        horizon = beat.time if result.lease_extended else None
        for node in self.close(nodes, 0, horizon):
            if result.lease_extended:
                move = self.rules.beat.get(node.state)
                t = beat.time
                if move is None or t is None or t < node.cursor:
                    continue
                latest = node.stamps[_LATEST]
                if isinstance(latest, _dt.datetime) and t <= latest:
                    continue  # every heartbeat that extends a lease hands out a new token
                sets = [_INDEX[s] for s in _STAMPS if s in move.sets]
                if any(node.stamps[i] == _FINAL for i in sets):
                    continue
                stamps = list(node.stamps)
                for i in sets:
                    stamps[i] = truncate(t, self.rules.precision(i))
                deadline = t + _dt.timedelta(seconds=result.ttl_seconds)
                out.append(
                    _Node(move.target, tuple(stamps), 0, node.meta, result.ttl_seconds, t, deadline)
                )
            elif self._quiet_beat_fits(node, beat):
                out.append(node._replace(used=0))
        return out

    def _quiet_beat_fits(self, node: _Node, beat: _Beat) -> bool:
        result = beat.result
        if node.state is not result.state or node.state not in self.rules.beat_noop:
            return False
        if node.ttl is not None and node.ttl != result.ttl_seconds:
            return False
        status = node.stamps[_LATEST]
        if status == _TEMP:
            return beat.time is not None  # set on this path at a time nobody saw: any token
        if status == _FINAL:
            assert self.target is not None
            status = self.target.stamps[_LATEST]
        return status == beat.time

    def matches(self, node: _Node) -> bool:
        target = self.target
        assert target is not None
        if node.state is not target.state:
            return False
        if self.complete and target.meta_changed and not node.meta:
            return False
        for status, value in zip(node.stamps, target.stamps, strict=True):
            if status == _TEMP or (status != _FINAL and status != value):
                return False
        return True


def _lease(
    effect: LeaseEffect, t: _dt.datetime, node: _Node, profile: Profile
) -> tuple[_dt.datetime | None, int | None]:
    if effect is LeaseEffect.START:
        ttl = profile.ack_lease_seconds()
        if ttl is None:  # the ack starts no lease (a profile knob); a quiet answer says default
            return None, profile.default_ttl_seconds
        return t + _dt.timedelta(seconds=ttl), ttl
    if effect is LeaseEffect.EXTEND:
        # An unobserved heartbeat may have asked for any TTL: the shortest one is the bound.
        return t + _dt.timedelta(seconds=profile.min_ttl_seconds), None
    if effect is LeaseEffect.END:
        return None, node.ttl
    if effect is LeaseEffect.RELEASE:
        return None, None
    return node.deadline, node.ttl


def _stamps_of(work: Work) -> tuple[_dt.datetime | None, ...]:
    return (
        work.acknowledged_at,
        work.started_at,
        work.latest_heartbeat_at,
        work.stop_requested_at,
        work.stopped_at,
    )


def _baseline(work: Work, rules: _Rules) -> _Node:
    """What is known right after a snapshot, with nothing carried over from before it."""
    stamps = _stamps_of(work)
    cursor = max([work.created_at, *(s for s in stamps if s is not None)])
    deadline = None
    profile = rules.profile
    latest = work.latest_heartbeat_at
    # With no heartbeat in this pass, the lease (if any) is the ack's, as long as the profile
    # says (maybe none at all); a heartbeat may have asked for any TTL, so only the shortest
    # one bounds it.
    known_ttl = None
    ack_lease = profile.ack_lease_seconds()
    if latest is None and work.state is not State.QUEUED:
        known_ttl = profile.default_ttl_seconds if ack_lease is None else ack_lease
    if work.state in LEASE_STATES:
        anchor = latest or work.acknowledged_at or work.created_at
        ttl = profile.min_ttl_seconds if latest is not None else ack_lease
        if ttl is not None:
            deadline = anchor + _dt.timedelta(seconds=ttl)
    return _Node(work.state, stamps, 0, False, known_ttl, cursor, deadline)


# ------------------------------------------------------------------------------ parsing
_Problem = tuple[str, str | None, str]  # (rule, key, message)


def _parse_work(obj: Mapping[str, Any], profile: Profile) -> tuple[Work | None, list[_Problem]]:
    """A snapshot as a record, or every problem it has (all broken invariants, if it is only
    inconsistent; else the parser's first complaint)."""
    try:
        return work_from_json(obj, profile=profile), []
    except InvalidInputError as exc:
        first = exc
    malformed: list[_Problem] = [("malformed", first.key, first.message)]
    # The parser stops at the first broken invariant; to list them all, parse the record with
    # its lifecycle fields neutralised, then put them back and ask the invariant checker.
    neutral = {**obj, "state": "queued", "metadata": {}, **dict.fromkeys(_KEYS)}
    try:
        base = work_from_json(neutral, profile=profile)
        state = State(obj["state"])
        stamps = {k: None if obj[k] is None else parse_time(obj[k], key=k) for k in _KEYS}
    except (InvalidInputError, KeyError, ValueError):
        return None, malformed
    metadata = obj["metadata"]
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return None, malformed
    body = attrs.evolve(base.body, metadata=MappingProxyType(dict(metadata)))
    work = attrs.evolve(base, body=body, state=state, **stamps)
    problems = invariant_violations(work, private=False)
    if not problems:  # pragma: no cover - the parser only rejects what these checks find
        return None, malformed
    return None, [("invariant", p.key, p.message) for p in problems]


def _parse_beat(obj: Mapping[str, Any]) -> tuple[HeartbeatResult | None, list[_Problem]]:
    rest = {k: v for k, v in obj.items() if k != "work_id"}
    try:
        return heartbeat_from_json(rest), []
    except InvalidInputError as exc:
        return None, [("malformed", exc.key, exc.message)]


# ------------------------------------------------------------------------------ the checker
class _Item:
    """What the checker remembers about one work item."""

    def __init__(self) -> None:
        self.first: Work | None = None  # the first sound snapshot: the set-once reference
        self.base: Work | None = None  # the latest sound snapshot
        self.nodes: list[_Node] = []  # search nodes right after ``base``
        self.beats: list[_Beat] = []  # heartbeat answers seen since ``base``
        self.prefix_time: _dt.datetime | None = None  # latest heartbeat before any snapshot


class TraceChecker:
    """Feed records one at a time; :meth:`finish` returns the :class:`TraceReport`.

    A record is a work snapshot (the API's work object) or a heartbeat answer carrying the
    item's ``work_id`` (see :func:`heartbeat_record`), as a mapping or as JSON text.
    ``complete=True`` states that the trace records every client operation on each item
    (ack, heartbeat, stop, metadata update), so consecutive records of an item are at most
    one such operation apart; lease expiries happen on the server and need no record.
    """

    def __init__(self, *, profile: Profile = ANTHROPIC, complete: bool = False) -> None:
        self.profile = profile
        self.complete = complete
        self._rules = _rules(profile)
        self._items: dict[str, _Item] = {}
        # Fresh ids (``fresh_id_on_redelivery``): the latest id of each item, by what never
        # changes across attempts, and the ids a re-hand-out retired (old id -> new id).
        self._lineage: dict[tuple[str, str, str, _dt.datetime], str] = {}
        self._retired: dict[str, str] = {}
        self._violations: list[TraceViolation] = []
        self._count = 0
        self._finished = False

    def feed(self, record: object) -> list[TraceViolation]:
        """Check one more record; returns the violations this record brought to light.

        A heartbeat answer is judged when the item's next snapshot (or :meth:`finish`)
        arrives, so its violations may be returned then.
        """
        if self._finished:
            raise ValueError("this TraceChecker has finished; start a new one")
        index = self._count
        self._count += 1
        before = len(self._violations)
        self._feed(index, record)
        return self._violations[before:]

    def finish(self) -> TraceReport:
        """Judge what is still pending and return the verdict on the whole trace."""
        if not self._finished:
            self._finished = True
            for work_id, item in self._items.items():
                if item.beats:
                    self._segment(work_id, item, None, None)
        return TraceReport(
            records=self._count,
            work_ids=tuple(self._items),
            violations=tuple(sorted(self._violations, key=lambda v: v.index)),
            profile=self.profile.name,
            complete=self.complete,
        )

    # ------------------------------------------------------------------ records
    def _report(self, index: int, work_id: str | None, problems: Iterable[_Problem]) -> None:
        for rule, key, message in problems:
            self._violations.append(
                TraceViolation(index=index, work_id=work_id, rule=rule, message=message, key=key)
            )

    def _feed(self, index: int, record: object) -> None:
        if isinstance(record, (str, bytes, bytearray)):
            try:
                record = json.loads(record)
            except ValueError as exc:
                self._report(index, None, [("malformed", None, f"not JSON: {exc}")])
                return
        if not isinstance(record, Mapping):
            message = f"a record must be a JSON object, got {type(record).__name__}"
            self._report(index, None, [("malformed", None, message)])
            return
        kind = record.get("type")
        if kind == "work":
            self._snapshot(index, record)
        elif kind == "work_heartbeat":
            self._heartbeat(index, record)
        else:
            message = (
                f"record type {kind!r} is neither 'work' (a work snapshot) nor "
                "'work_heartbeat' (a heartbeat answer with a work_id)"
            )
            self._report(index, None, [("malformed", "type", message)])

    def _snapshot(self, index: int, obj: Mapping[str, Any]) -> None:
        raw_id = obj.get("id")
        work_id = raw_id if isinstance(raw_id, str) else None
        work, problems = _parse_work(obj, self.profile)
        if work is None:
            self._report(index, work_id, problems)
            if work_id is not None:
                self._items.setdefault(work_id, _Item())
            return
        if self._is_retired(index, work.id):
            return
        item = self._items.setdefault(work.id, _Item())
        if item.first is None:
            item.first = work
            if self.profile.fresh_id_on_redelivery:
                self._follow(work)
        else:
            self._report(index, work.id, _set_once(item.first, work))
        if item.base is None:
            self._start(index, item, work)
            return
        self._segment(work.id, item, index, work)

    def _follow(self, work: Work) -> None:
        """A new id of an item seen before under another id: the old one is retired."""
        key = (work.environment_id, work.data.type, work.data.id, work.created_at)
        old = self._lineage.get(key)
        if old is not None and old != work.id:
            self._retired[old] = work.id
        self._lineage[key] = work.id

    def _is_retired(self, index: int, work_id: str) -> bool:
        new = self._retired.get(work_id)
        if new is None:
            return False
        message = (
            f"{work_id} was handed out again as {new}; under profile {self.profile.name} "
            "(fresh_id_on_redelivery) the old id answers 404 and shows nothing more"
        )
        self._report(index, work_id, [("retired-id", "id", message)])
        return True

    def _start(self, index: int, item: _Item, work: Work) -> None:
        prefix = item.prefix_time
        latest = work.latest_heartbeat_at
        if prefix is not None and latest is not None and latest < prefix:
            message = (
                f"latest_heartbeat_at ({format_time(latest)}) is earlier than a heartbeat "
                f"answered before ({format_time(prefix)})"
            )
            self._report(index, work.id, [("timestamp-backwards", "latest_heartbeat_at", message)])
        item.base = work
        item.nodes = [_baseline(work, self._rules)]
        item.beats = []

    def _heartbeat(self, index: int, obj: Mapping[str, Any]) -> None:
        raw_id = obj.get("work_id")
        if not isinstance(raw_id, str) or not raw_id.startswith("work_"):
            message = (
                f"a heartbeat record needs the item's work_id (a string starting with "
                f"'work_'), got {raw_id!r}"
            )
            self._report(index, None, [("malformed", "work_id", message)])
            return
        result, problems = _parse_beat(obj)
        if result is None:
            self._report(index, raw_id, problems)
            return
        if self._is_retired(index, raw_id):
            return
        time = parse_time(result.last_heartbeat) if result.last_heartbeat else None
        problems = self._beat_shape(result, time)
        if problems:
            self._report(index, raw_id, problems)
            return
        item = self._items.setdefault(raw_id, _Item())
        beat = _Beat(index, result, time)
        if item.base is not None:
            item.beats.append(beat)
        elif result.lease_extended:
            assert time is not None
            prefix = item.prefix_time
            if prefix is not None and time < prefix:
                message = (
                    f"last_heartbeat {result.last_heartbeat} is earlier than the heartbeat "
                    f"answered before ({format_time(prefix)})"
                )
                self._report(index, raw_id, [("timestamp-backwards", "last_heartbeat", message)])
            else:
                item.prefix_time = time

    def _beat_shape(self, result: HeartbeatResult, time: _dt.datetime | None) -> list[_Problem]:
        """What a heartbeat answer gets wrong on its own, whatever the item did."""
        rules, profile = self._rules, self.profile
        out: list[_Problem] = []
        state = result.state.value
        if result.lease_extended:
            if result.state not in rules.beat_targets:
                targets = ", ".join(sorted(s.value for s in rules.beat_targets))
                out.append(
                    (
                        "heartbeat",
                        "state",
                        f"a heartbeat that extended the lease leaves the item {targets}, "
                        f"but the answer says {state}",
                    )
                )
            if time is None:
                out.append(
                    (
                        "heartbeat",
                        "last_heartbeat",
                        "a heartbeat that extended the lease must return its time as "
                        "last_heartbeat, not an empty string",
                    )
                )
        elif result.state not in rules.beat_noop:
            quiet = ", ".join(sorted(s.value for s in rules.beat_noop))
            out.append(
                (
                    "heartbeat",
                    "state",
                    f"a heartbeat answered without extending the lease happens only on a "
                    f"{quiet} item under profile {profile.name}, but the answer says {state}",
                )
            )
        if not profile.min_ttl_seconds <= result.ttl_seconds <= profile.max_ttl_seconds:
            out.append(
                (
                    "heartbeat",
                    "ttl_seconds",
                    f"ttl_seconds {result.ttl_seconds} is outside the profile's range "
                    f"{profile.min_ttl_seconds}-{profile.max_ttl_seconds} (a server started with "
                    "--default-ttl, --min-ttl or --max-ttl answers outside it: check with the "
                    "same options)",
                )
            )
        return out

    # ------------------------------------------------------------------ segments
    def _segment(self, work_id: str, item: _Item, index: int | None, work: Work | None) -> None:
        """Explain the heartbeat answers since the last snapshot and the new snapshot ``work``
        (None at the end of the trace); report what cannot be explained and resynchronise."""
        assert item.base is not None
        rules, complete = self._rules, self.complete
        target = None
        if work is not None:
            target = _Target(
                work.state, _stamps_of(work), work.body.metadata != item.base.body.metadata
            )
        # A search pruned towards the next snapshot is fast; when it fails, the unpruned search
        # finds which record is the first one that cannot be explained, and why.
        search = _Search(rules, target, complete, prune=True)
        nodes, failed = self._through_beats(work_id, search, item.nodes, item.beats, False)
        matched = [n for n in search.close(nodes, 1) if search.matches(n)] if target else []
        if failed or (target is not None and not matched):
            search = _Search(rules, target, complete)
            nodes, _ = self._through_beats(work_id, search, item.nodes, item.beats, True)
            matched = [n for n in search.close(nodes, 1) if search.matches(n)] if target else []
        item.beats = []
        if work is None or index is None:
            return
        if matched:
            deadlines = [n.deadline for n in matched if n.deadline is not None]
            ttls = {n.ttl for n in matched}
            best = _Node(
                work.state,
                _stamps_of(work),
                0,
                False,
                ttls.pop() if len(ttls) == 1 else None,
                min(n.cursor for n in matched),
                min(deadlines) if deadlines else None,
            )
            item.nodes = [best]
        else:
            self._report(index, work_id, self._diagnose(search, nodes, work))
            item.nodes = [_baseline(work, rules)]
        item.base = work

    def _through_beats(
        self, work_id: str, search: _Search, nodes: list[_Node], beats: list[_Beat], report: bool
    ) -> tuple[list[_Node], bool]:
        """The nodes after passing every heartbeat answer in turn, and whether one failed
        (reported when ``report``; a failed answer is skipped)."""
        failed = False
        for beat in beats:
            passed = search.beat(nodes, beat)
            if not passed:
                failed = True
                if report:
                    problems = self._diagnose_beat(search, nodes, beat)
                    self._report(beat.position, work_id, problems)
                passed = [n._replace(used=0) for n in search.close(nodes, 0)]
            nodes = passed
        return nodes, failed

    # ------------------------------------------------------------------ diagnosis
    def _diagnose(self, search: _Search, nodes: list[_Node], work: Work) -> list[_Problem]:
        """Why no path leads from ``nodes`` to the snapshot ``work``, in plain words."""
        rules = self._rules
        node = min(nodes, key=lambda n: n.cursor)
        before, after = node.state, work.state
        if not any(after in rules.reach[n.state] for n in nodes):
            return [
                (
                    "illegal-state-change",
                    "state",
                    f"illegal state change {before.value} → {after.value}: no sequence of "
                    f"legal operations leads from {before.value} to {after.value}",
                )
            ]
        out: list[_Problem] = []
        for i, key in enumerate(_KEYS):
            out.extend(self._diagnose_stamp(rules, i, key, node, work))
        if out:
            return out
        if self.complete:
            relaxed = search.relaxed()
            if not any(after in rules.one_step[n.state] for n in nodes) or any(
                relaxed.matches(n) for n in relaxed.close(nodes, _NO_LIMIT)
            ):
                return [
                    (
                        "missing-step",
                        None,
                        f"the change from {_summary(rules, node)} to {_summary_work(rules, work)}"
                        " needs more than one client operation, but the trace is complete "
                        "(it records every one): a step is missing",
                    )
                ]
        return [
            (
                "unexplained",
                None,
                f"no sequence of legal operations leads from {_summary(rules, node)} to "
                f"{_summary_work(rules, work)}",
            )
        ]

    def _diagnose_stamp(
        self, rules: _Rules, i: int, key: str, node: _Node, work: Work
    ) -> list[_Problem]:
        old, new = node.stamps[i], _stamps_of(work)[i]
        if isinstance(old, str) or old == new:
            return []  # set on a path the search tried: nothing plain to say about it
        stamp = _STAMPS[i]
        cursor = truncate(node.cursor, rules.precision(i))
        if new is None:
            assert old is not None
            why = "nothing clears it"
            if stamp in rules.clearable:
                # Only an expiry clears it, and an expiry ends the pass: if the item kept its
                # acknowledged_at, there was no expiry.
                ack = _INDEX[Stamp.ACKNOWLEDGED_AT]
                old_ack = node.stamps[ack]
                if i == ack or old_ack is None or old_ack != _stamps_of(work)[ack]:
                    return []
                why = "only a lease expiry clears it, and that clears acknowledged_at too"
            return [
                (
                    "timestamp-vanished",
                    key,
                    f"{key} vanished: it was {rules.fmt(i, old)} and is now null; {why}",
                )
            ]
        if old is not None and new < old:
            return [
                (
                    "timestamp-backwards",
                    key,
                    f"{key} moved backwards from {rules.fmt(i, old)} to {rules.fmt(i, new)}",
                )
            ]
        if new < cursor:
            return [
                (
                    "timestamp-backwards",
                    key,
                    f"{key} is {rules.fmt(i, new)}, earlier than {rules.fmt(i, cursor)}, the "
                    "latest time the item had already reached: a new timestamp cannot lie "
                    "in the past",
                )
            ]
        if old is not None and stamp not in rules.clearable:
            return [
                (
                    "timestamp-changed",
                    key,
                    f"{key} changed from {rules.fmt(i, old)} to {rules.fmt(i, new)}; it is "
                    "set once and never changes",
                )
            ]
        expiry = _earliest_expiry(rules, node)
        if old is not None and expiry is not None and new <= expiry:
            return [
                (
                    "timestamp-changed",
                    key,
                    f"{key} changed from {rules.fmt(i, old)} to {rules.fmt(i, new)}; only a "
                    "new pass after a lease expiry sets it again, and the lease ran until "
                    f"{format_time(expiry)} at the earliest",
                )
            ]
        return []

    def _diagnose_beat(self, search: _Search, nodes: list[_Node], beat: _Beat) -> list[_Problem]:
        rules, result = self._rules, beat.result
        closed = search.close(nodes, 0)
        states = sorted({n.state.value for n in closed})
        was = " or ".join(states)
        token = result.last_heartbeat
        if result.lease_extended:
            if not any(n.state in rules.beat for n in closed):
                relaxed = search.relaxed()
                if not any(n.state in rules.beat for n in relaxed.close(nodes, _NO_LIMIT)):
                    return [
                        (
                            "illegal-state-change",
                            "state",
                            f"a heartbeat extended the lease, but the item was {was}, from "
                            "where no legal operations let a heartbeat extend it",
                        )
                    ]
                return [
                    (
                        "missing-step",
                        None,
                        f"a heartbeat extended the lease of an item that was {was}; that needs "
                        "another client operation first, but the trace is complete: a step "
                        "is missing",
                    )
                ]
            cursor = min(n.cursor for n in closed if n.state in rules.beat)
            assert beat.time is not None
            if beat.time < cursor:
                return [
                    (
                        "timestamp-backwards",
                        "last_heartbeat",
                        f"last_heartbeat {token} is earlier than {format_time(cursor)}, the "
                        "latest time the item had already reached",
                    )
                ]
            latest = [
                n.stamps[_LATEST]
                for n in closed
                if n.state in rules.beat and isinstance(n.stamps[_LATEST], _dt.datetime)
            ]
            if latest and all(beat.time <= t for t in latest if isinstance(t, _dt.datetime)):
                return [
                    (
                        "heartbeat",
                        "last_heartbeat",
                        f"last_heartbeat {token} repeats the time of the item's previous "
                        "heartbeat; every heartbeat that extends the lease hands out a new "
                        "token (a microsecond later when the clock has not moved)",
                    )
                ]
            # Defensive: a node that can beat at or after its own time always can.
            return [  # pragma: no cover
                (
                    "unexplained",
                    None,
                    f"no sequence of legal operations from {was} ends in a heartbeat at "
                    f"{token} that extends the lease",
                )
            ]
        if not any(n.state is result.state for n in closed):
            return [
                (
                    "illegal-state-change",
                    "state",
                    f"a heartbeat answer says the item is {result.state.value}, but it was "
                    f"{was} and no legal operations lead there",
                )
            ]
        return [
            (
                "heartbeat",
                "last_heartbeat",
                f"a heartbeat answer in state {result.state.value} reports last_heartbeat "
                f"{token!r} and ttl_seconds {result.ttl_seconds}, which are not the item's "
                "latest heartbeat and lease",
            )
        ]


def _earliest_expiry(rules: _Rules, node: _Node) -> _dt.datetime | None:
    """The earliest time the node's lease could run out (an unseen heartbeat asking for the
    shortest TTL could bring a starting or active item's deadline forward)."""
    if node.deadline is None:
        return None
    if node.state in rules.beat:
        short = node.cursor + _dt.timedelta(seconds=rules.profile.min_ttl_seconds)
        return min(node.deadline, short)
    return node.deadline


def _set_once(first: Work, work: Work) -> list[_Problem]:
    out: list[_Problem] = []
    for key in _SET_ONCE:
        old, new = getattr(first, key), getattr(work, key)
        if old != new:
            if key == "data":
                old, new = old.to_json(), new.to_json()
            elif key == "created_at":
                old, new = format_time(old), format_time(new)
            out.append(
                (
                    "set-once",
                    key,
                    f"{key} changed from {old!r} to {new!r}; it is set once, when the item "
                    "is created",
                )
            )
    return out


def _summary(rules: _Rules, node: _Node) -> str:
    parts = [
        f"{key}={rules.fmt(i, value)}"
        for i, (key, value) in enumerate(zip(_KEYS, node.stamps, strict=True))
        if isinstance(value, _dt.datetime)
    ]
    return f"{node.state.value}" + (f" ({', '.join(parts)})" if parts else "")


def _summary_work(rules: _Rules, work: Work) -> str:
    return _summary(rules, _baseline(work, rules))


# ------------------------------------------------------------------------------ command line
def main(argv: Sequence[str]) -> int:
    """``python -m workstate check [--profile NAME] [--complete] FILE``; returns the exit status.

    Reads JSON Lines (``-`` for standard input): one work snapshot or heartbeat answer per
    line; blank lines are skipped.  Prints a readable report; returns 0 when the trace is
    explained, 1 when it is not, 2 when the input cannot be read.
    """
    parser = argparse.ArgumentParser(
        prog="python -m workstate check",
        description="Check that some sequence of legal operations explains a recorded trace "
        "of work snapshots and heartbeat answers (JSON Lines), or the request journal of "
        "the mock server (serve --journal FILE).",
    )
    parser.add_argument("file", metavar="FILE", help="the trace, JSON Lines; - for stdin")
    add_profile_options(parser)  # the same as serve's, so a journal is checked as it was served
    parser.set_defaults(profile=None)  # none given: a journal's recorded one, else anthropic
    parser.add_argument(
        "--complete",
        action="store_true",
        help="the trace records every client operation, so consecutive records of an item "
        "are at most one operation apart",
    )
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help or a usage error: argparse has printed it
        return exc.code if isinstance(exc.code, int) else 2
    name = "<stdin>" if args.file == "-" else args.file
    # (The options are built into a profile once the first line says whether a journal's
    # header gives them a start: --max-ttl 5 alone is no profile over anthropic's default of
    # 120 s, and a fine one over a journal's recorded default of 4.)
    lines: list[int] = []
    try:
        if args.file == "-":
            checker, problem = _read(sys.stdin, name, args, lines)
        else:
            with open(args.file, encoding="utf-8") as stream:
                checker, problem = _read(stream, name, args, lines)
    except (OSError, UnicodeDecodeError) as exc:
        checker, problem = None, f"{name}: cannot read: {exc}"
    except ProfileOptionError as exc:  # the options name no profile (over the journal's)
        print(exc, file=sys.stderr)
        return 2
    if problem is not None or checker is None:
        print(f"workstate check: {problem}", file=sys.stderr)
        return 2
    report = checker.finish()
    print(report.format(source=name, lines=lines))
    return 0 if report.ok else 1


def _read(
    stream: Iterable[str], name: str, args: argparse.Namespace, lines: list[int]
) -> tuple[TraceChecker | None, str | None]:
    """Feed every line of ``stream`` to a checker under the profile of ``args``; returns it,
    or None and a complaint about unreadable input.

    A request journal of the mock server (lines with ``seq`` and ``operation``) is turned
    into its trace records first (:func:`journal_trace_records`); each record's line is the
    line of the journal entry it came from.  A journal's header line (``serve --journal``
    writes one first) gives the profile it was served under, unless ``--profile`` or
    ``--profile-file`` name another.
    """
    checker: TraceChecker | None = None
    journal: list[tuple[int, Mapping[str, Any]]] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            return None, f"{name}:{number}: invalid JSON: {exc}"
        if checker is None:
            recorded = None
            if is_journal_header(record):
                try:
                    recorded = journal_profile(record)
                except ProfileOptionError as exc:
                    return None, f"{name}:{number}: {exc}"
            checker = _checker(args, recorded)
            if recorded is not None:
                continue
        if _is_journal_entry(record):
            journal.append((number, record))
            continue
        lines.append(number)
        checker.feed(record)
    if checker is None:  # nothing but blank lines
        checker = _checker(args, None)
    if journal:
        for number, entry in sorted(journal, key=lambda pair: _applied_order(pair[1])):
            for record in journal_trace_records([entry]):
                lines.append(number)
                checker.feed(record)
    return checker, None


def _checker(args: argparse.Namespace, recorded: Profile | None) -> TraceChecker:
    return TraceChecker(
        profile=profile_from_options(args, recorded=recorded), complete=args.complete
    )


def _applied_order(entry: Mapping[str, Any]) -> tuple[bool, int, int]:
    core_seq, seq = entry.get("core_seq"), entry.get("seq")
    return (
        not isinstance(core_seq, int),
        core_seq if isinstance(core_seq, int) else 0,
        seq if isinstance(seq, int) else 0,
    )
