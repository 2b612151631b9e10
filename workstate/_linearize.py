"""The linearizability checker: can some order of a history's calls explain every answer?

Theory of operation
-------------------
A history (:mod:`workstate._history`) is *linearizable* when each call can be given one
instant — its linearization point, inside the interval from its invocation to its return —
such that applying the calls one by one in that order to the model (:class:`~workstate.Work`
under a :class:`~workstate.Profile`, with the :class:`~workstate.Environment`'s rules for
delivery windows and lease expiry) gives every ``ok`` answer exactly and every ``fail`` answer's
status and error type.  An ``info`` call (no trustworthy answer) may be placed anywhere after its
invocation, or nowhere: it may never have happened.

**Split by item.**  Every call that touches one item is checked against that item alone (the
P-compositionality of Horn and Kroening: the model's items do not interact except through a
poll's choice).  Splitting only drops constraints, so a history legal as a whole is legal
item by item: the split can never turn a legal history illegal.  What crosses items:

* a poll that returns an item is that item's *deliver* (checked: the item was queued and not
  inside another poll's redelivery window, and the answer is the item as it was); whether it
  was the *oldest* deliverable item is not checked;
* a poll that answers ``null``, and ``stats``, say something about every item at once: their
  answers are not checked (only a refusal is, see below);
* a list's page is one observation of each item on it (checked like a ``get``, each at its
  own point in the list's interval rather than all at one instant); that the page holds the
  right items is not checked;
* a refused poll, list, stats or create that names no item is checked against a fresh
  environment: such refusals depend only on the inputs.
* an ``info`` poll may have delivered some item to its worker; that matters only to a profile
  that binds acks to the delivering worker, so under such a profile it is offered to every
  item that has a refused ack.

**Reads.**  A call that never changes the model (a ``get``, a list's observation, a
refusal, a heartbeat answered ``lease_extended: false``) does not raise the time bound: server
time is only followed through calls that change something.  That drops a constraint (so it
is sound) and makes such a call commute with every other: when it can be placed leaving the
state as it was, placing it first loses nothing.  So after every call it places, the search
first places every such read that can go next, and only then tries the calls that change
something; it never tries the alternatives to such a read.  The reads of one item between two
changes are thus one step of the search, not an ordering to explore: without this, a change
would be tried once before each read that follows it, and a few concurrent changes among
hundreds of reads (an item that every list shows) in every interleaving with them.

**The search** is Wing and Gong's, as porcupine runs it: the calls' invocations and returns,
sorted by time (an invocation before a return at the same instant, so touching calls count as
concurrent), form a list; the search takes the first calls in turn, applies one to the model,
lifts it out of the list and starts again; when it meets a return whose call is still in the
list, that call could not be placed, and it backtracks.  A cache of (set of calls placed,
model state) pairs already explored (Lowe's memoisation) keeps it from exploring the same
situation twice, or one that differs only by a later time bound (an earlier bound allows
everything a later one does).  The state is a *set* of model states (the model's choices are not all
determined by the answers), and a call is placeable when it leaves at least one.

**Server-chosen values.**  Each model state carries a lower bound on the server's time (time
never goes backwards).  A call's time is the earliest the bound and the call's interval allow,
or one of the few later instants that change what the model does: the first instant after the
lease deadline (the lease expires first), the end of a redelivery window (the item becomes
deliverable), or a timestamp in the answer (an ack's ``acknowledged_at``, a heartbeat's
``last_heartbeat``, ...).  Any other time gives the same answer as the earliest of these, and
a later time is never better for what follows, so the choice is exact.  Ids, secrets and
tokens come from the answers, as the trace checker adopts them.  An item whose creation is not
in the history is *adopted*: calls are accepted until one answers with the whole item, which
becomes the model's state (its lease as ``work_from_json`` derives it).

**Where the search is not exact**, it says so: an ``info`` ack or heartbeat that took effect
unseen starts a lease at a time nothing pins, and the search tries only the earliest time and
the times later answers show; an adopted lease's TTL is a guess, and so, under a profile that
binds acks to the delivering worker, is the worker an adopted item was handed to; under
whole-second timestamps an ack's exact time within its second is not known, so an expiry of
its lease within a second of the earliest deadline is not certain.  When an item that needed
one of these cannot be ordered, the verdict for it is ``unknown``, never ``illegal``.

**Verdicts.**  ``ok``; ``illegal`` with, for the first item that cannot be ordered, a smallest
set of its calls whose answers cannot all be true (found by turning the others into ``info``
one at a time while the rest stays unorderable), the longest order of its calls the search
found, and why the next call could not follow it; ``unknown`` when the step budget or the time
budget ran out, or the search was not exact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from workstate._environment import Environment
from workstate._errors import NotFoundError, PreconditionFailedError, WorkstateError
from workstate._history import History, HistoryCall
from workstate._profile import ANTHROPIC, PROFILES, Precision, Profile, StopResponse
from workstate._records import is_int
from workstate._table import LEASE_STATES, State
from workstate._text import counted
from workstate._time import UTC, format_time, parse_time
from workstate._wire import work_data_from_json, work_from_json
from workstate._work import Work

__all__ = ["HistoryProblem", "HistoryReport", "check_history"]

_MICRO = _dt.timedelta(microseconds=1)
_SECOND = _dt.timedelta(seconds=1)
_BEGINNING = _dt.datetime(1, 1, 2, tzinfo=UTC)
_ABSENT, _UNKNOWN, _KNOWN = 0, 1, 2
_CHECKED_STATUSES = frozenset({400, 404, 409, 412})
_STAMP_KEYS = (
    "created_at",
    "acknowledged_at",
    "started_at",
    "latest_heartbeat_at",
    "stop_requested_at",
    "stopped_at",
)
# Which answer timestamps an info call's unseen effect may have written (candidate times).
_INFO_PINS: Mapping[str, tuple[str, ...]] = {
    "ack": ("acknowledged_at",),
    "heartbeat": ("latest_heartbeat_at", "started_at"),
    "stop": ("stop_requested_at", "stopped_at"),
}
_PIN_KEYS: Mapping[str, tuple[str, ...]] = {
    "create": ("created_at",),
    "ack": ("acknowledged_at",),
    "heartbeat": ("last_heartbeat",),
    "stop": ("stop_requested_at", "stopped_at"),
}
_MISSING = object()
_DEFAULT_STEPS = 5_000_000


@attrs.frozen(kw_only=True)
class HistoryProblem:
    """Why part of a history is not (or not known to be) linearizable."""

    verdict: str
    """``illegal`` or ``unknown``."""
    environment_id: str | None
    """The environment of the item concerned (None for a call that names none)."""
    work_id: str | None
    """The item concerned (None for a call that names none)."""
    calls: tuple[int, ...]
    """Illegal: a smallest set of call ids whose answers cannot all be true together."""
    linearized: tuple[int, ...]
    """The longest order of the item's calls the search found (call ids, in order)."""
    explanation: str
    """Why, in plain words: the first contradiction, or what ran out."""

    def format(self) -> str:
        """A readable paragraph."""
        where = f"{self.work_id}: " if self.work_id else ""
        out = [f"{self.verdict}: {where}{self.explanation}"]
        if self.calls:
            out.append("  calls that cannot be ordered: " + ", ".join(f"#{c}" for c in self.calls))
        if self.linearized:
            shown = ", ".join(f"#{c}" for c in self.linearized)
            out.append(f"  longest order found ({len(self.linearized)} calls): {shown}")
        return "\n".join(out)


@attrs.frozen(kw_only=True)
class HistoryReport:
    """The verdict on a history."""

    verdict: str
    """``ok``, ``illegal`` or ``unknown``."""
    calls: int
    """How many calls the history holds."""
    items: int
    """How many items were checked."""
    profile: str
    """The profile the history was checked under."""
    problems: tuple[HistoryProblem, ...]
    """The illegal items (first) and the unknown ones; empty when ``ok``."""
    not_checked: Mapping[str, int]
    """What the checker did not judge, by kind (e.g. ``null poll``, ``stats``), with counts."""
    steps: int
    """How many search steps were taken."""

    @property
    def ok(self) -> bool:
        """True when every answer is explained."""
        return self.verdict == "ok"

    @property
    def exit_status(self) -> int:
        """0 ok, 1 illegal, 3 unknown (2 is for an unreadable history)."""
        return {"ok": 0, "illegal": 1}.get(self.verdict, 3)

    @property
    def illegal_calls(self) -> tuple[int, ...]:
        """The ids of the calls named by illegal problems."""
        return tuple(c for p in self.problems if p.verdict == "illegal" for c in p.calls)

    def format(self, *, source: str = "history") -> str:
        """A readable report."""
        out = [
            f"{source}: {counted(self.calls, 'call')}, {counted(self.items, 'item')} "
            f"(profile {self.profile}): "
            f"{self.verdict}"
        ]
        out.extend(p.format() for p in self.problems)
        if self.not_checked:
            parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.not_checked.items()))
            out.append(f"not checked: {parts}")
        return "\n".join(out)


# ------------------------------------------------------------------------------ per-item calls
@attrs.frozen(kw_only=True)
class _Sub:
    """A call as one item's search sees it."""

    call: HistoryCall
    kind: str  # the op, or "deliver" (a poll that returned this item) or "observe" (a list)
    body: Any  # the answer concerning this item
    outcome: str
    lo: _dt.datetime | None
    hi: _dt.datetime | None
    pins: tuple[_dt.datetime, ...]

    @property
    def pure(self) -> bool:
        """Whether the call changes nothing wherever it is placed: a read, a refusal, or a
        heartbeat whose answer says it extended nothing (the model's no-change rows)."""
        if self.kind in ("get", "observe") or self.outcome == "fail":
            return True
        body = self.body
        return (
            self.kind == "heartbeat"
            and self.outcome == "ok"
            and isinstance(body, Mapping)
            and body.get("lease_extended") is False
        )


class _S:
    """One model state of one item: the record, what is known, and the server time's bound."""

    __slots__ = ("_hash", "band", "cursor", "key", "phase", "secret", "window", "work")

    def __init__(
        self,
        work: Work | None,
        phase: int,
        window: _dt.datetime | None,
        secret: bool,
        cursor: _dt.datetime,
        band: _dt.datetime | _dt.timedelta | None = None,
        wkey: tuple[Any, ...] = (),
    ) -> None:
        self.work = work
        self.phase = phase
        self.window = window
        self.secret = secret
        self.cursor = cursor
        # The latest the lease's real deadline may be, when ``work.lease_expires_at`` is only
        # its earliest (None: it is exact): a time, or a TTL to add to the next call's time
        # (an unseen ack or heartbeat happened before that call).
        self.band = band
        # ``wkey`` stands for the record's fields (see _Model.mk); the cursor comes second, so
        # that key[:1] + key[2:] is the state without its time bound.
        self.key: tuple[Any, ...] = (phase, cursor, window, secret, band, wkey)
        self._hash = hash(self.key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _S) and self._hash == other._hash and self.key == other.key


def _parse_stamps(body: object, keys: Iterable[str]) -> list[_dt.datetime]:
    out = []
    if isinstance(body, Mapping):
        for key in keys:
            value = body.get(key)
            if isinstance(value, str) and value:
                with contextlib.suppress(WorkstateError):
                    out.append(parse_time(value))
    return out


def _same(model: Mapping[str, Any] | None, body: object, skip: str | None = None) -> bool:
    """Whether ``body`` carries every key of the model's answer with the same value (None: an
    answer with no body, such as a 204 stop)."""
    if model is None:
        return body is None
    if not isinstance(body, Mapping):
        return False
    for key, value in model.items():
        if key != skip and body.get(key, _MISSING) != value:
            return False
    return True


def _current_state(body: object) -> object:
    """A 412 envelope's ``error.details.current_state`` (None when it has none)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    return details.get("current_state") if isinstance(details, Mapping) else None


def _same_error(exc: WorkstateError, sub: _Sub) -> bool:
    call = sub.call
    if exc.status != call.status or exc.error_type != call.error_type:
        return False
    if isinstance(exc, PreconditionFailedError):
        current = _current_state(call.body)
        if current is not None:
            return _same(exc.current_state.to_json(), current)
    return True


def _describe_error(exc: WorkstateError) -> str:
    return f"{exc.status} {exc.error_type} ({exc.message})"


# ------------------------------------------------------------------------------ the model step
class _Model:
    """The model of one item as the search applies calls to it."""

    def __init__(self, profile: Profile, subs: Sequence[_Sub] = ()) -> None:
        self.profile = profile
        self.approx = False  # set when a step was not exact (see the theory of operation)
        self.seconds = profile.lifecycle_precision is Precision.SECONDS
        self.subs = subs
        self._stops: list[_dt.datetime] | None = None
        # Per record object (kept alive here, so an id is never reused): its fields as a
        # tuple, and its JSON with and without the secret.
        self._keys: dict[int, tuple[Work, tuple[Any, ...]]] = {}
        self._json: dict[tuple[int, bool], tuple[Work, dict[str, Any]]] = {}

    def mk(
        self,
        work: Work | None,
        phase: int,
        window: _dt.datetime | None,
        secret: bool,
        cursor: _dt.datetime,
        band: _dt.datetime | _dt.timedelta | None = None,
    ) -> _S:
        """A state, its record's fields looked up once per record object."""
        if work is None:
            return _S(None, phase, window, secret, cursor, band)
        entry = self._keys.get(id(work))
        if entry is None:
            b = work.body
            wkey = (
                work.state,
                work.acknowledged_at,
                work.started_at,
                work.latest_heartbeat_at,
                work.stop_requested_at,
                work.stopped_at,
                work.last_heartbeat,
                work.ttl_seconds,
                work.lease_expires_at,
                work.delivered_at,
                work.delivered_to,
                tuple(sorted(b.metadata.items())),
                b.secret,
                b.created_at,
                b.data,
            )
            entry = self._keys[id(work)] = (work, wkey)
        return _S(work, phase, window, secret, cursor, band, entry[1])

    def render(self, s: _S, include_secret: bool) -> dict[str, Any]:
        """The JSON of the state's record (computed once per record object)."""
        work = s.work
        assert work is not None
        entry = self._json.get((id(work), include_secret))
        if entry is None:
            entry = (work, work.to_json(include_secret=include_secret))
            self._json[(id(work), include_secret)] = entry
        return entry[1]

    def stops_seen(self) -> list[_dt.datetime]:
        """Every ``stopped_at`` some answer about the item shows."""
        if self._stops is None:
            values = {
                v
                for s in self.subs
                if s.outcome == "ok"
                for v in _parse_stamps(s.body, ("stopped_at",))
            }
            self._stops = sorted(values)
        return self._stops

    def step(self, states: frozenset[_S], sub: _Sub) -> frozenset[_S]:
        if len(states) == 1:
            (only,) = states
            found = self.successors(only, sub)
            if len(found) <= 1:
                return frozenset(found)
        best: dict[tuple[Any, ...], _S] = {}
        for s in states:
            for n in self.successors(s, sub):
                # States that differ only in the time bound: the earlier bound allows more.
                k = n.key[:1] + n.key[2:]
                old = best.get(k)
                if old is None or n.cursor < old.cursor:
                    best[k] = n
        return frozenset(best.values())

    def reclaim(self, sub: _Sub) -> _dt.timedelta:
        """How old a delivery must be before the poll ``sub`` may take the item over."""
        reclaim = sub.call.input.get("reclaim_older_than_ms")
        if not is_int(reclaim):
            reclaim = self.profile.default_reclaim_older_than_ms
        return _dt.timedelta(milliseconds=reclaim)

    def times(self, s: _S, sub: _Sub) -> list[_dt.datetime]:
        lo, hi = sub.lo, sub.hi
        a = s.cursor if lo is None or lo <= s.cursor else lo
        if hi is not None and a > hi:
            return []
        times = {a}
        w = s.work
        extra: list[_dt.datetime] = list(sub.pins)
        if w is not None:
            if w.lease_expires_at is not None:
                extra.append(w.lease_expires_at + _MICRO)
                if isinstance(s.band, _dt.datetime):
                    extra.append(s.band + _MICRO)
            if s.window is not None and sub.kind == "deliver":
                extra.append(s.window + self.reclaim(sub))
        for t in extra:
            if t > a and (hi is None or t <= hi):
                times.add(t)
        return sorted(times)

    def advance(self, s: _S, t: _dt.datetime) -> list[_S]:
        """The states once time has passed up to ``t`` (leases expired, windows closed).

        Two when the lease's real deadline is not known exactly and ``t`` falls between its
        bounds: expired, and not yet (the deadline then known to be at least ``t``).
        """
        w, window, band = s.work, s.window, s.band
        if band is None and (w is None or w.lease_expires_at is None or w.lease_expires_at >= t):
            return [s if t == s.cursor else self.mk(w, s.phase, window, s.secret, t)]
        if isinstance(band, _dt.timedelta):
            # The unseen call that set the lease came no later than this one: its deadline is
            # at most this call's time plus its TTL.
            band = t + band
        out = []
        if w is not None and s.phase == _KNOWN:
            deadline = w.lease_expires_at
            if deadline is not None and deadline < t:
                if band is not None and t <= band:
                    later = attrs.evolve(w, lease_expires_at=t)
                    out.append(self.mk(later, s.phase, window, s.secret, t, band))
                if band is not None and w.state is State.STOPPING:
                    # The expiry stamps stopped_at with a time only known to lie between the
                    # deadline's bounds: the earliest, or a stopped_at that answers show.
                    top = band if band < t else t
                    for v in self.stops_seen():
                        if deadline < v <= top:
                            out.append(self.mk(w.expire(v), s.phase, None, s.secret, t))
                w = w.expire(deadline + _MICRO)
                window = band = None
        out.append(self.mk(w, s.phase, window, s.secret, t, band))
        return out

    def successors(self, s: _S, sub: _Sub) -> list[_S]:
        out = []
        for t in self.times(s, sub):
            for s1 in self.advance(s, t):
                n = self.apply(s1, sub, t)
                if n is None:
                    continue
                if sub.pure and n is s1 and n.key[2:] == s.key[2:] and n.phase == s.phase:
                    # A read or a refusal that found the item as it was does not raise the
                    # time bound either: see "reads" in the theory of operation.
                    n = s
                out.append(n)
        return out

    def outcome(self, s: _S, sub: _Sub, t: _dt.datetime) -> tuple[_S | None, Any, Any]:
        """The model's answer to ``sub`` in state ``s`` at ``t``: (next state, answer, error).

        The next state is None when the model cannot say (an item not yet observed); the
        answer is a JSON object (None for no answer), the error a WorkstateError or None.
        """
        kind, call = sub.kind, sub.call
        inputs = call.input
        w = s.work
        if kind == "create":
            if s.phase == _KNOWN:
                return s, None, self._duplicate(call)
            if s.phase == _UNKNOWN:
                return None, None, None
            try:
                new = self._create(call, sub.body, t)
            except WorkstateError as exc:
                return s, None, exc
            n = self.mk(new, _KNOWN, None, True, t)
            return n, self.render(n, False), None
        if s.phase == _ABSENT:
            return (
                s,
                None,
                NotFoundError(
                    f"no work item {call.work_id!r} in environment {call.environment_id}",
                    work_id=call.work_id,
                ),
            )
        if s.phase == _UNKNOWN:
            return None, None, None
        assert w is not None
        try:
            if kind == "deliver":
                # The polling call's own window decides whether an unacked delivery is due for
                # reclaim (boundary inclusive); ``window`` holds the delivery's time.
                due = None if s.window is None else s.window + self.reclaim(sub)
                if w.state is not State.QUEUED or (due is not None and t < due):
                    return s, None, _NotDeliverable(w, due)
                new = w.deliver(t, worker_id=inputs.get("worker_id"))
                n = self.mk(new, _KNOWN, t, s.secret, t)
                return n, self.render(n, True), None
            if kind in ("get", "observe"):
                return s, self.render(s, False), None
            if kind == "ack":
                new = w.ack(t, worker_id=inputs.get("worker_id"))
            elif kind == "heartbeat":
                new, beat = w.heartbeat(
                    t,
                    expected_last_heartbeat=inputs.get("expected_last_heartbeat"),
                    desired_ttl_seconds=inputs.get("desired_ttl_seconds"),
                )
                window = s.window if new.state is State.QUEUED else None
                return self.mk(new, _KNOWN, window, s.secret, t), beat.to_json(), None
            elif kind == "stop":
                new = w.stop(t, force=inputs.get("force", False))
            else:  # update
                new = w.update_metadata(t, inputs.get("metadata", {}))
        except WorkstateError as exc:
            return s, None, exc
        window = s.window if new.state is State.QUEUED else None
        n = s if new is w else self.mk(new, _KNOWN, window, s.secret, t)
        if kind == "stop" and self.profile.stop_response is StopResponse.NO_CONTENT:
            return n, None, None  # a 204: the answer shows nothing of the item
        return n, self.render(n, False), None

    def apply(self, s: _S, sub: _Sub, t: _dt.datetime) -> _S | None:
        """The next state when the model can give the call's outcome at ``t``, else None."""
        call = sub.call
        if sub.outcome == "fail" and call.status not in _CHECKED_STATUSES:
            return s  # an answer the model never gives (401, 413, ...): changed nothing
        if sub.outcome == "info" and sub.kind == "create":
            # Created unseen: the item exists from here on, its record not yet observed.
            return self.mk(None, _UNKNOWN, None, False, t) if s.phase == _ABSENT else s
        n, answer, error = self.outcome(s, sub, t)
        if n is None:  # not observed yet: adopt a whole item when the answer carries one
            return self._adopt(s, sub, t)
        if sub.outcome == "info":
            if error is not None:
                return s
            if sub.kind in ("ack", "heartbeat") and n.work is not None:
                ttl = n.work.ttl_seconds or 0
                return self._banded(s, n, _dt.timedelta(seconds=ttl))
            return self._banded(s, n, None)
        if sub.outcome == "fail":
            return s if error is not None and _same_error(error, sub) else None
        if error is not None:
            return None
        if sub.kind == "deliver":
            assert n.work is not None
            # A secret the item was created with is handed out as it is; without one (or when
            # the creation is not in the history) a server may mint one per delivery.
            minted = not s.secret or n.work.body.secret is None
            return n if _same(answer, sub.body, skip="secret" if minted else None) else None
        if not _same(answer, sub.body):
            return None
        band = None
        if self.seconds and sub.kind == "ack" and n.work is not None:
            deadline = n.work.lease_expires_at
            band = None if deadline is None else deadline + _SECOND - _MICRO
        return self._banded(s, n, band)

    def _banded(self, s: _S, n: _S, band: _dt.datetime | _dt.timedelta | None) -> _S:
        """``n`` with the uncertainty of its lease deadline: ``band`` when the call set a new
        deadline, else the one ``s`` had."""
        if n is s:
            return s
        old, new = s.work, n.work
        if old is not None and new is not None and old.lease_expires_at == new.lease_expires_at:
            band = s.band
        if band == n.band:
            return n
        return self.mk(n.work, n.phase, n.window, n.secret, n.cursor, band)

    def _adopt(self, s: _S, sub: _Sub, t: _dt.datetime) -> _S:
        body = sub.body if sub.outcome == "ok" else None
        if sub.kind == "heartbeat" or not isinstance(body, Mapping):
            return s
        try:
            work = work_from_json(body, profile=self.profile, strict=False)
        except WorkstateError:
            return s  # not an item: the unobserved item stays unobserved
        if work.body.id != sub.call.work_id and sub.kind not in ("deliver", "observe", "create"):
            return s
        if work.touched_at > t:
            t = work.touched_at  # the answer shows the server's clock had got this far
        if self.profile.ack_binds_worker:
            # The worker an item was handed to is not in its JSON: under a profile that binds
            # acks to it, the model cannot tell which worker's ack a server would refuse.
            self.approx = True
        window = None
        secret = sub.kind == "deliver"
        if secret:
            window = t  # handed out now
        band = None
        latest = work.latest_heartbeat_at
        if work.state in LEASE_STATES and latest is not None:
            # The TTL the last heartbeat asked for is not shown: the deadline lies somewhere in
            # the profile's range, and answers that report the TTL cannot be predicted.
            self.approx = True
            profile = self.profile
            work = attrs.evolve(
                work, lease_expires_at=latest + _dt.timedelta(seconds=profile.min_ttl_seconds)
            )
            band = latest + _dt.timedelta(seconds=profile.max_ttl_seconds)
        return self.mk(work, _KNOWN, window, secret, t, band)

    def _create(self, call: HistoryCall, body: object, t: _dt.datetime) -> Work:
        inputs = call.input
        data = inputs.get("data")
        work_id = inputs.get("work_id")
        if isinstance(body, Mapping):
            work_id = body.get("id", work_id)
            if data is None:
                data = body.get("data")
        session = None
        work_data = None
        if data is not None:
            work_data = work_data_from_json(data)
        else:
            session = "sesn_unknown"  # no answer shows it: an unseen create's session
        return Work.create(
            id=str(work_id),
            environment_id=call.environment_id,
            now=t,
            session_id=session,
            data=work_data,
            metadata=inputs.get("metadata"),
            secret=inputs.get("secret"),
            profile=self.profile,
        )

    def _duplicate(self, call: HistoryCall) -> WorkstateError:
        return WorkstateError(
            f"work item {call.work_id!r} already exists in environment {call.environment_id}",
            status=409,
            error_type=self.profile.conflict_error_type,
        )


class _NotDeliverable(WorkstateError):
    """What the model says to a poll that returned an item it could not hand out."""

    def __init__(self, work: Work, window: _dt.datetime | None) -> None:
        if work.state is not State.QUEUED:
            why = f"it was {work.state.value}, and a poll hands out only queued items"
        else:
            assert window is not None
            why = (
                "an earlier poll had handed it out and its redelivery window runs until "
                f"{format_time(window)}"
            )
        super().__init__(f"no poll could hand it out: {why}", status=200, error_type="none")


# ------------------------------------------------------------------------------ the search
class _Budget:
    def __init__(self, steps: int, clock: Callable[[], float] | None, timeout: float | None):
        self.steps = steps
        self.used = 0
        self.clock = clock
        self.deadline = None if clock is None or timeout is None else clock() + timeout

    def spend(self) -> bool:
        """Count one step; False when the budget is spent."""
        self.used += 1
        if self.used > self.steps:
            return False
        if self.deadline is not None and not self.used & 1023:
            assert self.clock is not None
            return self.clock() <= self.deadline
        return True


class _Result:
    def __init__(self, verdict: str, best: list[int], best_states: frozenset[_S]) -> None:
        self.verdict = verdict  # "ok", "illegal", "budget"
        self.best = best  # the longest order found (positions in the item's call list)
        self.best_states = best_states


def _dominated(
    bounds: dict[tuple[int, tuple[Any, ...]], _dt.datetime], bits: int, new: frozenset[_S]
) -> bool:
    """Whether the same calls were already placed reaching the same state with an earlier
    time bound (which allows at least as much: see the theory of operation)."""
    if len(new) != 1:
        return False
    (only,) = new
    seen = bounds.get((bits, only.key[:1] + only.key[2:]))
    return seen is not None and seen <= only.cursor


def _search(
    model: _Model,
    subs: Sequence[_Sub],
    init: frozenset[_S],
    budget: _Budget,
    *,
    track: bool = False,
    memo: bool = True,
) -> _Result:
    """Wing–Gong search with memoisation over one item's calls (porcupine's algorithm)."""
    n = len(subs)
    inf = float("inf")
    events: list[tuple[float, int, int]] = []
    for i, sub in enumerate(subs):
        call = sub.call
        ret = inf if sub.outcome == "info" or call.ret is None else call.ret
        events.append((call.invoke, 0, i))
        events.append((ret, 1, i))
    events.sort()
    size = 2 * n + 1  # node 0 is the head; node k + 1 is events[k]
    nxt = list(range(1, size + 1))
    nxt[-1] = -1
    prv = [-1, *range(size - 1)]
    call_node = [0] * n
    ret_node = [0] * n
    is_call = [False] * size
    owner = [0] * size
    for k, (_, kind, i) in enumerate(events):
        node = k + 1
        owner[node] = i
        if kind == 0:
            call_node[i] = node
            is_call[node] = True
        else:
            ret_node[i] = node
    required = sum(1 for s in subs if s.outcome != "info")
    info = [s.outcome == "info" for s in subs]
    state = init
    placed = 0
    stack: list[tuple[int, frozenset[_S], bool]] = []
    cache: set[tuple[int, frozenset[_S]]] = set()
    bounds: dict[tuple[int, tuple[Any, ...]], _dt.datetime] = {}
    best: list[int] = []
    best_states = init
    entry = nxt[0]

    def lift(i: int) -> None:
        for node in (call_node[i], ret_node[i]):
            p, q = prv[node], nxt[node]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(i: int) -> None:
        for node in (ret_node[i], call_node[i]):
            p, q = prv[node], nxt[node]
            nxt[p] = node
            if q != -1:
                prv[q] = node

    # After every placement the search first places every call in the frontier (invoked
    # before the first outstanding return) that leaves the state as it is, before it tries
    # any that changes it.  Such a call could always go first (see the backtracking below),
    # so placing them all first loses nothing; without it, a change would be tried once
    # before each of the reads that follow it in the list, and a few concurrent changes
    # among many reads would be tried in every interleaving with them.
    closing = True
    while True:
        if required == 0:
            return _Result("ok", [owner[e] for e, _, _ in stack], state)
        if not budget.spend():
            return _Result("budget", best, best_states)
        if entry == -1:  # defensive: a required call's return is always still in the list
            return _Result("illegal", best, best_states)  # pragma: no cover
        if closing:
            if not is_call[entry]:
                closing = False
                entry = nxt[0]
                continue
            i = owner[entry]
            if subs[i].pure and model.step(state, subs[i]) == state:
                stack.append((entry, state, True))
                placed |= 1 << i
                following = nxt[entry]
                lift(i)
                if not info[i]:
                    required -= 1
                if track and len(stack) > len(best):
                    best = [owner[e] for e, _, _ in stack]
                    best_states = state
                entry = following
            else:
                entry = nxt[entry]
            continue
        if is_call[entry]:
            i = owner[entry]
            new = model.step(state, subs[i])
            if new:
                bits = placed | (1 << i)
                key = (bits, new)
                forced = subs[i].pure and new == state
                if forced or (key not in cache and not _dominated(bounds, bits, new)):
                    if memo and not forced:
                        cache.add(key)
                        if len(new) == 1:
                            (only,) = new
                            bounds[(bits, only.key[:1] + only.key[2:])] = only.cursor
                    stack.append((entry, state, forced))
                    state = new
                    placed = bits
                    lift(i)
                    if not info[i]:
                        required -= 1
                    if track and len(stack) > len(best):
                        best = [owner[e] for e, _, _ in stack]
                        best_states = state
                    entry = nxt[0]
                    closing = not forced
                    continue
            entry = nxt[entry]
        else:
            while True:
                if not stack:
                    return _Result("illegal", best, best_states)
                top, state, forced = stack.pop()
                i = owner[top]
                placed &= ~(1 << i)
                unlift(i)
                if not info[i]:
                    required += 1
                if not forced:
                    break
                # A call that changed nothing could always go first: no other choice at this
                # point can succeed where it failed, so back up past it.
            entry = nxt[top]


# ------------------------------------------------------------------------------ the checker
class _Item:
    def __init__(self, env: str, work_id: str) -> None:
        self.env = env
        self.work_id = work_id
        self.subs: list[_Sub] = []
        self.created = False  # an ok or info create names it: it starts absent
        # Under a profile that binds acks to the delivering worker: the workers whose acks
        # were accepted, and those refused with 409 (an unseen delivery may explain either).
        self.acked_by: set[object] = set()
        self.refused: set[object] = set()


def _bodiless(sub: _Sub) -> bool:
    """A stop answered 204: its effect's time shows only in other answers."""
    return sub.kind == "stop" and sub.outcome == "ok" and sub.body is None


def _first_after(values: Sequence[_dt.datetime], lo: _dt.datetime | None) -> tuple[Any, ...]:
    return tuple(v for v in values if lo is None or v >= lo)


class _Checker:
    def __init__(
        self,
        history: History,
        profile: Profile,
        budget: _Budget,
    ) -> None:
        self.history = history
        self.profile = profile
        self.budget = budget
        self.items: dict[tuple[str, str], _Item] = {}
        self.not_checked: dict[str, int] = {}
        self.problems: list[HistoryProblem] = []
        self.info_polls: list[HistoryCall] = []

    def skip(self, kind: str) -> None:
        self.not_checked[kind] = self.not_checked.get(kind, 0) + 1

    def item(self, env: str, work_id: str) -> _Item:
        key = (env, work_id)
        item = self.items.get(key)
        if item is None:
            item = self.items[key] = _Item(env, work_id)
        return item

    def add(self, item: _Item, call: HistoryCall, kind: str, body: Any, outcome: str) -> None:
        lo, hi = self.history.window(call)
        pins: list[_dt.datetime] = []
        if outcome == "ok" and kind in _PIN_KEYS:
            # Only these calls write a time into their answer; any other call's time matters
            # only through expiries and windows, which are candidates of their own.
            pins = _parse_stamps(body, _PIN_KEYS[kind])
        item.subs.append(
            _Sub(call=call, kind=kind, body=body, outcome=outcome, lo=lo, hi=hi, pins=tuple(pins))
        )

    def split(self) -> None:
        for call in self.history.calls:
            op, outcome, body = call.op, call.outcome, call.body
            if op == "poll":
                if (
                    outcome == "ok"
                    and isinstance(body, Mapping)
                    and isinstance(body.get("id"), str)
                ):
                    item = self.item(call.environment_id, body["id"])
                    self.add(item, call, "deliver", body, "ok")
                elif outcome == "ok":
                    self.skip("null poll" if body is None else "unreadable poll answer")
                elif outcome == "fail":
                    self.refusal(call)
                else:
                    self.info_polls.append(call)
            elif op == "list":
                if outcome == "ok":
                    data = body.get("data") if isinstance(body, Mapping) else None
                    if not isinstance(data, list):
                        self.problems.append(self.unexplained(call, "a list answer needs data"))
                        continue
                    for entry in data:
                        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
                            self.add(
                                self.item(call.environment_id, entry["id"]),
                                call,
                                "observe",
                                entry,
                                "ok",
                            )
                    self.skip("list page membership")
                elif outcome == "fail":
                    self.refusal(call)
                else:
                    self.skip("info list")
            elif op == "stats":
                if outcome == "fail":
                    self.refusal(call)
                else:
                    self.skip("stats")
            elif op == "create":
                work_id = call.work_id
                if (
                    outcome == "ok"
                    and isinstance(body, Mapping)
                    and isinstance(body.get("id"), str)
                ):
                    work_id = body["id"]
                if work_id is None:
                    if outcome == "fail":
                        self.refusal(call)
                    elif outcome == "ok":
                        self.problems.append(self.unexplained(call, "a create answer needs an id"))
                    else:
                        self.skip("info create without a work_id")
                    continue
                item = self.item(call.environment_id, work_id)
                if outcome != "fail":
                    item.created = True
                self.add(item, call, "create", body, outcome)
            else:
                assert call.work_id is not None
                item = self.item(call.environment_id, call.work_id)
                if op == "ack" and outcome == "ok":
                    item.acked_by.add(call.input.get("worker_id"))
                elif op == "ack" and outcome == "fail" and call.status == 409:
                    item.refused.add(call.input.get("worker_id"))
                self.add(item, call, op, body, outcome)
        if self.profile.ack_binds_worker:
            for item in self.items.values():
                for call in self.info_polls:
                    if call.environment_id == item.env and self.may_matter(item, call):
                        self.add(item, call, "deliver", None, "info")
        elif self.info_polls:
            self.not_checked["info poll"] = len(self.info_polls)

    def may_matter(self, item: _Item, poll: HistoryCall) -> bool:
        """Whether an unanswered poll's possible delivery of ``item`` could explain an ack:
        one accepted from its worker (or after an anonymous poll), or one refused from another
        worker."""
        worker = poll.input.get("worker_id")
        accepted = worker is None and any(w is not None for w in item.acked_by)
        return accepted or worker in item.acked_by or bool(item.refused - {worker, None})

    def unexplained(self, call: HistoryCall, why: str) -> HistoryProblem:
        return HistoryProblem(
            verdict="illegal",
            environment_id=call.environment_id,
            work_id=call.work_id,
            calls=(call.id,),
            linearized=(),
            explanation=f"{call.describe()}: {why}",
        )

    def refusal(self, call: HistoryCall) -> None:
        """A refused call that names no item: its refusal depends only on its inputs."""
        if call.status not in _CHECKED_STATUSES:
            self.skip(f"{call.status} answer")
            return
        t = _BEGINNING
        inputs = call.input
        try:
            env = Environment(call.environment_id, profile=self.profile)
        except WorkstateError:
            error: WorkstateError | None = NotFoundError(
                f"environment {call.environment_id!r} not found"
            )
        else:
            try:
                if call.op == "poll":
                    env.poll(
                        t,
                        worker_id=inputs.get("worker_id"),
                        reclaim_older_than_ms=inputs.get("reclaim_older_than_ms"),
                        block_ms=inputs.get("block_ms"),
                    )
                elif call.op == "list":
                    limit = inputs.get("limit", 20)
                    env.list(t, limit=limit, page=inputs.get("page"))
                elif call.op == "create":
                    data = inputs.get("data")
                    work_data = None
                    if data is not None:
                        work_data = work_data_from_json(data)
                    env.create(
                        t,
                        data=work_data,
                        metadata=inputs.get("metadata"),
                        secret=inputs.get("secret"),
                    )
                else:
                    env.stats(t)
                error = None
            except WorkstateError as exc:
                error = exc
        if error is not None and (error.status, error.error_type) == (call.status, call.error_type):
            return
        said = "accepts them" if error is None else f"answers {_describe_error(error)}"
        self.problems.append(
            self.unexplained(
                call,
                f"refused with {call.status} {call.error_type}, but with these inputs the model "
                f"{said}",
            )
        )

    def initial(self, item: _Item) -> frozenset[_S]:
        phase = _ABSENT if item.created else _UNKNOWN
        return frozenset({_S(None, phase, None, False, _BEGINNING)})

    def prepare(self, item: _Item) -> list[_Sub]:
        subs = item.subs
        if not any(s.outcome == "info" or _bodiless(s) for s in subs):
            return subs
        seen: dict[str, list[_dt.datetime]] = {}
        for s in subs:
            if s.outcome == "ok":
                for key in _STAMP_KEYS:
                    seen.setdefault(key, []).extend(_parse_stamps(s.body, (key,)))
                if s.kind == "heartbeat":
                    seen.setdefault("latest_heartbeat_at", []).extend(
                        _parse_stamps(s.body, ("last_heartbeat",))
                    )
            elif s.outcome == "fail" and s.call.status == 412:
                seen.setdefault("latest_heartbeat_at", []).extend(
                    _parse_stamps(_current_state(s.call.body), ("last_heartbeat",))
                )
            if s.kind == "heartbeat":
                token = s.call.input.get("expected_last_heartbeat")
                seen.setdefault("latest_heartbeat_at", []).extend(
                    _parse_stamps({"t": token}, ("t",))
                )
        out = []
        for s in subs:
            # An info call's effect, and a stop answered 204, show no time of their own: the
            # stamps other answers show are the candidates.
            if (s.outcome == "info" or _bodiless(s)) and s.kind in _INFO_PINS:
                values = sorted({v for k in _INFO_PINS[s.kind] for v in seen.get(k, ())})
                s = attrs.evolve(s, pins=_first_after(values, s.lo))
            out.append(s)
        return out

    def check_item(self, item: _Item) -> HistoryProblem | None:
        subs = self.prepare(item)
        model = _Model(self.profile, subs)
        result = _search(model, subs, self.initial(item), self.budget)
        if result.verdict == "ok":
            return None
        label = {"env": item.env, "work_id": item.work_id}
        if result.verdict == "budget":
            return HistoryProblem(
                verdict="unknown",
                environment_id=label["env"],
                work_id=label["work_id"],
                calls=(),
                linearized=(),
                explanation="the search ran out of its budget before it could decide",
            )
        # Illegal, if the search was exact.  Find the longest order and the smallest set.
        track = _Model(self.profile, subs)
        tracked = _search(
            track, subs, self.initial(item), _Budget(self.budget.steps, None, None), track=True
        )
        best = [subs[i].call.id for i in tracked.best]
        if model.approx:
            return HistoryProblem(
                verdict="unknown",
                environment_id=item.env,
                work_id=item.work_id,
                calls=(),
                linearized=tuple(best),
                explanation="no order of its calls explains every answer, but the search was "
                "not exact for this item (an unanswered ack or heartbeat that may have taken "
                "effect unseen, an adopted lease, or whole-second timestamps), so this is not "
                "proven illegal",
            )
        explanation = self.explain(subs, tracked)
        core = self.shrink(item, subs)
        return HistoryProblem(
            verdict="illegal",
            environment_id=item.env,
            work_id=item.work_id,
            calls=tuple(sorted(core)),
            linearized=tuple(best),
            explanation=explanation,
        )

    def explain(self, subs: Sequence[_Sub], result: _Result) -> str:
        """Why no call can follow the longest order found."""
        placed = set(result.best)
        rest = [i for i in range(len(subs)) if i not in placed]
        required = [i for i in rest if subs[i].outcome != "info"]
        first_return = min(subs[i].call.ret or float("inf") for i in required)
        # The calls that could come next: invoked before the first outstanding return.
        candidates = [i for i in required if subs[i].call.invoke <= first_return]
        candidates.sort(key=lambda i: (subs[i].call.ret or 0.0, subs[i].call.invoke))
        state = min(result.best_states, key=lambda s: s.cursor)
        model = _Model(self.profile)
        after = (
            f"after {len(placed)} of its calls in the longest order found"
            if placed
            else "before any of its calls"
        )
        lines = []
        for i in candidates[:1]:
            sub = subs[i]
            times = model.times(state, sub)
            said = self.expected(model, state, sub, times)
            lines.append(
                f"{after}, the item is {self.summary(state)}; {sub.call.describe()} cannot "
                f"come next: {said}"
            )
        return "; ".join(lines)

    def expected(self, model: _Model, state: _S, sub: _Sub, times: list[_dt.datetime]) -> str:
        if not times:
            return (
                "its interval ends before the latest server time the item had already reached "
                f"({format_time(state.cursor)})"
            )
        t = times[0]
        s1 = model.advance(state, t)[-1]
        _n, answer, error = model.outcome(s1, sub, t)
        observed = self.observed(sub)
        if error is not None:
            if isinstance(error, _NotDeliverable):
                return error.message
            return f"the model answers {_describe_error(error)}, the server answered {observed}"
        # The fields the two answers disagree on are shown too, whichever they are (a TTL
        # the checker was not told about differs only in ttl_seconds).
        differ = _differing(answer, sub.body) if sub.outcome != "fail" else ()
        return (
            f"the model answers {_short(answer, differ)}, the server answered "
            f"{self.observed(sub, differ)}"
        )

    def observed(self, sub: _Sub, differ: tuple[str, ...] = ()) -> str:
        call = sub.call
        if sub.outcome == "fail":
            return f"{call.status} {call.error_type}"
        return f"200 {_short(sub.body, differ)}"

    def summary(self, state: _S) -> str:
        w = state.work
        if state.phase == _ABSENT:
            return "not created yet"
        if w is None:
            return "not observed yet"
        parts = [w.state.value]
        if w.last_heartbeat:
            parts.append(f"last_heartbeat {w.last_heartbeat}")
        if w.lease_expires_at is not None:
            parts.append(f"lease until {format_time(w.lease_expires_at)}")
        if state.window is not None:
            parts.append(f"handed out at {format_time(state.window)}")
        parts.append(f"server time ≥ {format_time(state.cursor)}")
        return ", ".join(parts)

    def shrink(self, item: _Item, subs: list[_Sub]) -> list[int]:
        """A 1-minimal set of calls whose answers cannot all hold (the others made ``info``)."""
        current = list(subs)
        order = [i for i in range(len(subs)) if subs[i].outcome != "info"]
        for i in reversed(order):
            trial = list(current)
            trial[i] = attrs.evolve(trial[i], outcome="info", body=None, pins=())
            trial = self.prepare_list(trial)
            model = _Model(self.profile, trial)
            budget = _Budget(min(self.budget.steps, 200_000), None, None)
            result = _search(model, trial, self.initial(item), budget)
            if result.verdict == "illegal" and not model.approx:
                current = trial
        return [s.call.id for s in current if s.outcome != "info"]

    def prepare_list(self, subs: list[_Sub]) -> list[_Sub]:
        holder = _Item("", "")
        holder.subs = subs
        return self.prepare(holder)

    def run(self) -> HistoryReport:
        self.split()
        illegal: list[HistoryProblem] = list(self.problems)
        unknown: list[HistoryProblem] = []
        for item in self.items.values():
            problem = self.check_item(item)
            if problem is None:
                continue
            (illegal if problem.verdict == "illegal" else unknown).append(problem)
        verdict = "illegal" if illegal else "unknown" if unknown else "ok"
        return HistoryReport(
            verdict=verdict,
            calls=len(self.history.calls),
            items=len(self.items),
            profile=self.profile.name,
            problems=(*illegal, *unknown),
            not_checked=dict(self.not_checked),
            steps=self.budget.used,
        )


_SHORT_KEYS = ("state", "acknowledged_at", "last_heartbeat", "lease_extended", "stopped_at")


def _short(value: object, differ: tuple[str, ...] = ()) -> str:
    """An answer in brief: its main fields when set, and every field named in ``differ``."""
    if isinstance(value, Mapping):
        shown = {k: value[k] for k in _SHORT_KEYS if k in value and value[k] is not None}
        shown.update({k: value.get(k) for k in differ if k not in shown})
        return "{" + ", ".join(f"{k}: {v}" for k, v in shown.items()) + "}"
    return "null" if value is None else repr(value)


def _differing(a: object, b: object) -> tuple[str, ...]:
    """The keys on which two answers (JSON objects) disagree, in sorted order."""
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return ()
    return tuple(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def check_history(
    history: History,
    *,
    profile: Profile | None = None,
    max_steps: int = _DEFAULT_STEPS,
    timeout: float | None = None,
    clock: Callable[[], float] | None = None,
) -> HistoryReport:
    """Check that some order of ``history``'s calls consistent with real time explains it.

    ``profile`` defaults to the one the history names (else ``anthropic``).  ``max_steps``
    bounds the search; ``timeout`` (seconds, read from ``clock``, e.g. ``time.monotonic``)
    bounds it in time.  Either running out gives the verdict ``unknown``.

    >>> from workstate._history import History, HistoryCall
    >>> work = {"type": "work", "id": "work_1", "environment_id": "env_1",
    ...         "data": {"type": "session", "id": "sesn_1"}, "state": "queued",
    ...         "created_at": "2026-07-01T08:00:00.000000Z", "acknowledged_at": None,
    ...         "started_at": None, "latest_heartbeat_at": None, "stop_requested_at": None,
    ...         "stopped_at": None, "metadata": {}, "secret": None}
    >>> acked = {**work, "state": "starting", "acknowledged_at": "2026-07-01T08:00:01.000000Z"}
    >>> def call(i, client, op, invoke, ret, body, **kw):
    ...     return HistoryCall(id=i, client=client, op=op, environment_id="env_1",
    ...                        work_id="work_1", input={}, invoke=invoke, ret=ret,
    ...                        outcome="ok", status=200, body=body, **kw)
    >>> h = History(calls=(call(0, "a", "create", 0, 1, work),
    ...                    call(1, "a", "ack", 2, 3, acked),
    ...                    call(2, "b", "ack", 2.5, 4, {**acked, "acknowledged_at":
    ...                                                 "2026-07-01T08:00:02.000000Z"})))
    >>> report = check_history(h)
    >>> report.verdict, report.illegal_calls
    ('illegal', (1, 2))
    """
    if profile is None:
        profile = PROFILES.get(history.profile or "", ANTHROPIC)
    budget = _Budget(max_steps, clock, timeout)
    return _Checker(history, profile, budget).run()
