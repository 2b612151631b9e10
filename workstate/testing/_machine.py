"""The oracle: a rule-based machine that tests another implementation against the core.

Theory of operation
-------------------
The user subclasses :class:`WorkOracle` and supplies an adapter (:class:`WorkAdapter`) that
performs each operation against *their* system under test (the SUT: a server, a client
library, a fake) and returns its answer as a :class:`Reply` (an HTTP-like status and the JSON
body).  Hypothesis draws random operations; each one goes to the adapter and, in the same
step, to the model (the core :class:`~workstate.Work`), and the two answers are compared.

Values that the SUT chooses itself are adopted, never predicted: work ids, creation and
lifecycle times, heartbeat tokens.  Around every request the machine reads the adapter's
clock (before and after); a timestamp the SUT set is accepted when it lies within that window
(at the profile's precision) and not before the item's latest time, and the model then
performs the operation *at that time*.  A heartbeat token is a string the SUT makes up: the
machine keeps a map from each SUT token to the model's token of the same heartbeat, and
translates the tokens it sends.

Leases run out in the SUT as its time passes (the machine asks the adapter to advance time).
Before each request the model expires an item whose deadline had surely passed when the
request started; when the deadline falls inside the request's window (or within
``expiry_grace_seconds`` after it, for servers that sweep late) both outcomes are tried and
the one the SUT shows is adopted.  When a lease lapse stops a ``stopping`` item, the time the
SUT recorded is only known when a snapshot shows ``stopped_at``; it is adopted then if it
lies between the deadline and that request.

The first answer that no admissible model outcome explains fails the run with an
:class:`AssertionError` listing the differences and the whole history: every step's
operation, inputs and time window, the model's answer and the SUT's.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from workstate._engine import lookup
from workstate._errors import InvalidInputError, NotFoundError, WorkstateError
from workstate._profile import ANTHROPIC, Precision, Profile
from workstate._records import HeartbeatResult, WorkData
from workstate._table import Move, Operation, Stamp, State
from workstate._time import ManualClock, ensure_utc, format_time, parse_time, truncate
from workstate._wire import heartbeat_from_json, work_from_json, work_to_json
from workstate._work import NO_HEARTBEAT, Work

__all__ = ["CoreAdapter", "Reply", "WorkAdapter", "WorkOracle"]

_MICRO = _dt.timedelta(microseconds=1)
_SECOND = _dt.timedelta(seconds=1)
_NO_TIME = _dt.timedelta(0)
_FOREIGN_TOKEN = "2001-01-01T00:00:00.000000Z"  # well-formed, and never any item's token
_ADVANCES = (0.0, 0.001, 1.0, 5.0, 9.999, 30.0, 59.0, 61.0, 119.0, 121.0, 300.0, 601.0)
# A well-behaved client echoes the last token: that path is drawn most, so runs go deep.
_TOKEN_KINDS = ("echo", "echo", "echo", "fresh", "omit", "stale", "foreign", "garbage")
_BEATS = (0.5, 1.0, 15.0, 30.0, 59.0)  # waits before a keep-alive heartbeat
_TTLS = (None, None, None, 10, 30, 61, 120, 600, 900, 0)  # 0 is invalid (400)
_BAD_PATCH = (None, None, None, None, None, None, 0, 1, 2, 3)  # an index into the bad patches
_PICK = st.integers(0, 255)
_META_KEYS = ("a", "b", "owner", "x-y")
_STAMP_KEYS = tuple(s.value for s in Stamp)


@attrs.frozen(kw_only=True)
class Reply:
    """What the system under test answered: an HTTP status and the JSON body.

    Success bodies are the API's objects (a work object, a heartbeat answer); an error body is
    the API's error envelope (build one with :meth:`error`).
    """

    status: int
    """The HTTP status (2xx for success)."""
    body: Any = None
    """The decoded JSON body."""

    @classmethod
    def ok(cls, body: Any, *, status: int = 200) -> Reply:
        """A successful answer."""
        return cls(status=status, body=body)

    @classmethod
    def error(cls, status: int, error_type: str, message: str = "") -> Reply:
        """An error answer with the API's envelope."""
        envelope = {"type": error_type, "message": message}
        return cls(status=status, body={"type": "error", "error": envelope, "request_id": None})

    @classmethod
    def from_error(cls, exc: WorkstateError) -> Reply:
        """The answer an HTTP adapter gives for a core error."""
        return cls(status=exc.status, body=exc.to_json())

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def error_type(self) -> str | None:
        """The envelope's ``error.type``, when the body is an error envelope."""
        error = self.body.get("error") if isinstance(self.body, Mapping) else None
        kind = error.get("type") if isinstance(error, Mapping) else None
        return kind if isinstance(kind, str) else None

    def describe(self) -> str:
        """One line: the status, then the body as compact JSON."""
        if not self.is_success and self.error_type is not None:
            return f"{self.status} {self.error_type}"
        return f"{self.status} {json.dumps(self.body, separators=(',', ':'), default=str)}"


class WorkAdapter(Protocol):
    """What the oracle needs from a system under test: one method per operation.

    Each operation method performs the request and returns the SUT's :class:`Reply`; it
    never raises for an error answer.  Work ids are the SUT's own (from its ``create``
    answer).  Metadata patches may hold invalid values on purpose (to test rejections).
    """

    def now(self) -> _dt.datetime:
        """The SUT's current time (timezone-aware); read before and after each request."""
        ...

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the SUT's clock (leases may run out meanwhile)."""
        ...

    def create(self, *, data: Mapping[str, str], metadata: Mapping[str, str]) -> Reply:
        """Create a work item for ``data`` (``{"type": ..., "id": ...}``); answer the item."""
        ...

    def get(self, work_id: str) -> Reply:
        """Read the item."""
        ...

    def ack(self, work_id: str) -> Reply:
        """Acknowledge the item; answer the item."""
        ...

    def heartbeat(
        self,
        work_id: str,
        *,
        expected_last_heartbeat: str | None,
        desired_ttl_seconds: int | None,
    ) -> Reply:
        """Send a heartbeat (None: leave the parameter out); answer the heartbeat object."""
        ...

    def stop(self, work_id: str, *, force: bool) -> Reply:
        """Stop the item, gracefully or by force; answer the item."""
        ...

    def update_metadata(self, work_id: str, patch: Mapping[str, Any]) -> Reply:
        """Apply a metadata merge patch; answer the item."""
        ...


class CoreAdapter:
    """A system under test made of the core itself, on a manual clock.

    The reference adapter: the oracle must find no divergence with it, and it is a template
    (and a base class) for adapters of other implementations.  Leases expire lazily: an
    item whose deadline has passed is expired when it is next touched.
    """

    def __init__(
        self,
        *,
        profile: Profile = ANTHROPIC,
        start: _dt.datetime = _dt.datetime(2026, 7, 1, 8, 0, tzinfo=_dt.UTC),
        environment_id: str = "env_core",
    ) -> None:
        self.profile = profile
        self.clock = ManualClock(start)
        self.environment_id = environment_id
        self.items: dict[str, Work] = {}
        self._created = 0

    def now(self) -> _dt.datetime:
        """The manual clock's time."""
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the manual clock forward."""
        self.clock.advance(seconds)

    def current(self, work_id: str) -> Work:
        """The stored item, expired first if its lease ran out (404 if unknown)."""
        work = self.items.get(work_id)
        if work is None:
            raise NotFoundError(f"no work item {work_id!r}", work_id=work_id)
        now = self.clock.now()
        if work.is_lease_due(now):
            work = self.items[work_id] = self.expire(work, now)
        return work

    def expire(self, work: Work, now: _dt.datetime) -> Work:
        """Expire an item whose lease ran out (a hook for deliberately broken variants)."""
        return work.expire(now)

    def _time(self, work: Work) -> _dt.datetime:
        """The clock's time, or the item's own when it ran ahead of a clock standing still
        (a heartbeat at the time of the previous one happens a microsecond later)."""
        return max(self.clock.now(), work.touched_at)

    def _answer(self, work_id: str, op: Callable[[Work, _dt.datetime], Work]) -> Reply:
        try:
            work = self.current(work_id)
            work = op(work, self._time(work))
        except WorkstateError as exc:
            return Reply.from_error(exc)
        self.items[work_id] = work
        return Reply.ok(work.to_json())

    def create(self, *, data: Mapping[str, str], metadata: Mapping[str, str]) -> Reply:
        """Create an item with an id of the adapter's choosing."""
        self._created += 1
        work_id = f"work_{(self._created * 0x9E3779B1) & 0xFFFFFFFF:08x}"
        try:
            work = Work.create(
                id=work_id,
                environment_id=self.environment_id,
                data=WorkData(type=data["type"], id=data["id"]),
                metadata=metadata,
                now=self.clock.now(),
                profile=self.profile,
            )
        except WorkstateError as exc:
            return Reply.from_error(exc)
        self.items[work_id] = work
        return Reply.ok(work.to_json())

    def get(self, work_id: str) -> Reply:
        """Read an item."""
        return self._answer(work_id, lambda w, now: w)

    def ack(self, work_id: str) -> Reply:
        """Acknowledge an item."""
        return self._answer(work_id, lambda w, now: w.ack(now))

    def heartbeat(
        self,
        work_id: str,
        *,
        expected_last_heartbeat: str | None,
        desired_ttl_seconds: int | None,
    ) -> Reply:
        """Heartbeat an item."""
        try:
            work = self.current(work_id)
            work, beat = work.heartbeat(
                self._time(work),
                expected_last_heartbeat=expected_last_heartbeat,
                desired_ttl_seconds=desired_ttl_seconds,
            )
        except WorkstateError as exc:
            return Reply.from_error(exc)
        self.items[work_id] = work
        return Reply.ok(beat.to_json())

    def stop(self, work_id: str, *, force: bool) -> Reply:
        """Stop an item."""
        return self._answer(work_id, lambda w, now: w.stop(now, force=force))

    def update_metadata(self, work_id: str, patch: Mapping[str, Any]) -> Reply:
        """Patch an item's metadata."""
        return self._answer(work_id, lambda w, now: w.update_metadata(now, patch))


# ------------------------------------------------------------------------------ bookkeeping
@attrs.define
class _Tracked:
    """One item as the machine follows it."""

    sut_id: str
    work: Work  # the model
    tokens: dict[str, str] = attrs.Factory(dict)  # SUT token -> model token
    issued: list[str] = attrs.Factory(list)  # SUT tokens in the order they were handed out
    slack: _dt.timedelta = _dt.timedelta(0)  # how much later the SUT's lease may end
    uncertain: dict[str, tuple[_dt.datetime, _dt.datetime]] = attrs.Factory(dict)


@attrs.frozen
class _Entry:
    """One step of the history (rendered only when a run fails)."""

    number: int
    label: str
    before: _dt.datetime
    after: _dt.datetime
    model: Reply | None = None
    sut: Reply | None = None
    note: str = ""


@attrs.frozen
class _Outcome:
    """The model's answer under one admissible assumption, and how it compares."""

    work: Work
    reply: Reply
    problems: list[str]
    uncertain: dict[str, tuple[_dt.datetime, _dt.datetime]]
    slack: _dt.timedelta
    token: tuple[str, str] | None = None  # (SUT token, model token) of a new heartbeat


_Run = Callable[[Work, _dt.datetime], "Work | tuple[Work, HeartbeatResult]"]


def _has_items(self: WorkOracle) -> bool:
    return bool(self.items)


class WorkOracle(RuleBasedStateMachine):
    """Subclass this, override :meth:`make_adapter`, and run ``YourClass.TestCase``.

    Class attributes tune the run: :attr:`profile` (the behaviour the SUT must follow),
    :attr:`max_items`, :attr:`expiry_grace_seconds`, :attr:`check_invalid_inputs` and
    :attr:`get_after_each_step`.  Hypothesis settings go on ``YourClass.TestCase.settings``.
    A divergence fails the run with an :class:`AssertionError` that lists every step.
    """

    profile: ClassVar[Profile] = ANTHROPIC
    """The profile the SUT must follow."""
    max_items: ClassVar[int] = 2
    """How many items a run creates at most."""
    expiry_grace_seconds: ClassVar[float] = 0.0
    """How late after a lease's deadline the SUT may still show the item unexpired."""
    check_invalid_inputs: ClassVar[bool] = True
    """Whether to send invalid inputs too (bad TTLs, tokens and metadata: 400)."""
    get_after_each_step: ClassVar[bool] = True
    """Whether to read the item back after every operation (proves that a rejected
    operation changed nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.adapter: WorkAdapter = self.make_adapter()
        self.items: list[_Tracked] = []
        self.history: list[_Entry] = []

    def make_adapter(self) -> WorkAdapter:
        """The adapter to the system under test, fresh for every run (override this)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override make_adapter() to return the adapter of "
            "the system under test"
        )

    def teardown(self) -> None:
        """Close the adapter if it has a ``close()`` method."""
        close = getattr(self.adapter, "close", None)
        if callable(close):
            close()

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: len(self.items) < self.max_items)
    @rule(
        kind=st.sampled_from(["session", "healthcheck"]),
        session=st.text("abcdef0123456789", min_size=1, max_size=8),
        metadata=st.dictionaries(st.sampled_from(_META_KEYS), st.text(max_size=4), max_size=2),
    )
    def create(self, kind: str, session: str, metadata: dict[str, str]) -> None:
        """Create an item; adopt its id, environment and creation time."""
        data = {"type": kind, "id": f"sesn_{session}"}
        label = f"create data={_js(data)} metadata={_js(metadata)}"
        before, reply, after = self._timed(
            lambda: self.adapter.create(data=data, metadata=metadata)
        )
        problems: list[str] = []
        model = Reply(status=200, body=None)
        work = None
        if not reply.is_success:
            problems.append(
                f"status: the model creates the item (200), the SUT answered {reply.status}"
            )
        else:
            try:
                sut = work_from_json(reply.body, profile=self.profile)
            except InvalidInputError as exc:
                problems.append(f"the SUT answered a malformed work object: {exc.message}")
            else:
                if any(item.sut_id == sut.id for item in self.items):
                    problems.append(f"the SUT gave the new item the id {sut.id!r} of another one")
                unit = self._unit(Stamp.ACKNOWLEDGED_AT)
                t, problem = _window("created_at", sut.created_at, unit, before, after, None, after)
                if problem:
                    problems.append(problem)
                work = Work.create(
                    id=sut.id,
                    environment_id=sut.environment_id,
                    data=WorkData(type=kind, id=data["id"]),
                    metadata=metadata,
                    now=t,
                    profile=self.profile,
                )
                model = Reply.ok(work.to_json())
                problems += _differences(work.to_json(), work_to_json(sut))
        self._log(label, before, after, model, reply)
        if problems or work is None:
            self._fail(problems)
        assert work is not None
        item = _Tracked(sut_id=work.id, work=work)
        self.items.append(item)
        self._read_back(item)

    @precondition(_has_items)
    @rule(pick=_PICK)
    def get(self, pick: int) -> None:
        """Read an item and compare every field."""
        item = self._pick(pick)
        self._exchange(item, f"get {item.sut_id}", None, lambda: self.adapter.get(item.sut_id))

    @precondition(_has_items)
    @rule(pick=_PICK)
    def ack(self, pick: int) -> None:
        """Acknowledge an item."""
        item = self._pick(pick)
        self._exchange(
            item,
            f"ack {item.sut_id}",
            Operation.ACK,
            lambda: self.adapter.ack(item.sut_id),
            lambda w, t: w.ack(t),
        )
        self._read_back(item)

    @precondition(_has_items)
    @rule(
        pick=_PICK,
        token=st.sampled_from(_TOKEN_KINDS),
        ttl=st.sampled_from(_TTLS),
    )
    def heartbeat(self, pick: int, token: str, ttl: int | None) -> None:
        """Heartbeat an item with a token chosen like a client would (or would not)."""
        self._heartbeat(self._pick(pick), token, ttl)

    @precondition(_has_items)
    @rule(pick=_PICK, seconds=st.sampled_from(_BEATS))
    def keep_alive(self, pick: int, seconds: float) -> None:
        """Wait a little, then heartbeat with the last token: the SDK worker's rhythm."""
        self._advance(seconds)
        self._heartbeat(self._pick(pick), "echo", None)

    def _heartbeat(self, item: _Tracked, token: str, ttl: int | None) -> None:
        if not self.check_invalid_inputs:
            token = "omit" if token == "garbage" else token
            ttl = None if ttl is not None and ttl <= 0 else ttl
        sent = self._token(item, token)
        model_token = None if sent is None else item.tokens.get(sent, sent)
        label = (
            f"heartbeat {item.sut_id} expected_last_heartbeat={sent!r} ({token}) "
            f"desired_ttl_seconds={ttl!r}"
        )
        self._exchange(
            item,
            label,
            Operation.HEARTBEAT,
            lambda: self.adapter.heartbeat(
                item.sut_id, expected_last_heartbeat=sent, desired_ttl_seconds=ttl
            ),
            lambda w, t: w.heartbeat(
                t, expected_last_heartbeat=model_token, desired_ttl_seconds=ttl
            ),
        )
        self._read_back(item)

    @precondition(_has_items)
    @rule(pick=_PICK, force=st.booleans())
    def stop(self, pick: int, force: bool) -> None:
        """Stop an item, gracefully or by force."""
        item = self._pick(pick)
        self._exchange(
            item,
            f"stop {item.sut_id} force={force}",
            Operation.FORCE_STOP if force else Operation.STOP,
            lambda: self.adapter.stop(item.sut_id, force=force),
            lambda w, t: w.stop(t, force=force),
        )
        self._read_back(item)

    @precondition(_has_items)
    @rule(
        pick=_PICK,
        patch=st.dictionaries(
            st.sampled_from(_META_KEYS), st.none() | st.text(max_size=4), max_size=3
        ),
        bad=st.sampled_from(_BAD_PATCH),
    )
    def update_metadata(self, pick: int, patch: dict[str, str | None], bad: int | None) -> None:
        """Patch an item's metadata (sometimes with a patch the API must reject)."""
        item = self._pick(pick)
        sent: dict[str, Any] = dict(patch)
        if bad is not None and self.check_invalid_inputs:
            p = self.profile
            bad_patches: list[dict[str, Any]] = [
                {"k" * (p.max_metadata_key_length + 1): "v"},
                {"k": "v" * (p.max_metadata_value_length + 1)},
                {"k": 1},
                {f"key{i}": "v" for i in range(p.max_metadata_pairs + 1)},
            ]
            sent = bad_patches[bad]
        self._exchange(
            item,
            f"update_metadata {item.sut_id} patch={_js(sent)}",
            Operation.UPDATE_METADATA,
            lambda: self.adapter.update_metadata(item.sut_id, sent),
            lambda w, t: w.update_metadata(t, sent),
        )
        self._read_back(item)

    @rule(seconds=st.sampled_from(_ADVANCES))
    def advance(self, seconds: float) -> None:
        """Let time pass in the SUT (leases may run out)."""
        self._advance(seconds)

    def _advance(self, seconds: float) -> None:
        before = self._now()
        self.adapter.advance(seconds)
        after = self._now()
        self.history.append(_Entry(len(self.history) + 1, f"advance {seconds} s", before, after))

    # ------------------------------------------------------------------ the exchange
    def _pick(self, pick: int) -> _Tracked:
        return self.items[pick % len(self.items)]

    def _now(self) -> _dt.datetime:
        return ensure_utc(self.adapter.now(), name="adapter.now()")

    def _timed(self, call: Callable[[], Reply]) -> tuple[_dt.datetime, Reply, _dt.datetime]:
        before = self._now()
        reply = call()
        after = self._now()
        if not isinstance(reply, Reply):
            raise TypeError(f"adapter methods must return a Reply, got {type(reply).__name__}")
        if after < before:
            raise AssertionError(
                f"the adapter's clock went backwards during a request: {format_time(before)} "
                f"then {format_time(after)}"
            )
        return before, reply, after

    def _unit(self, stamp: Stamp) -> _dt.timedelta:
        """The resolution of a lifecycle stamp (heartbeat times, read from tokens, are
        always microseconds)."""
        assert stamp is not Stamp.LATEST_HEARTBEAT_AT
        return _SECOND if self.profile.lifecycle_precision is Precision.SECONDS else _MICRO

    def _token(self, item: _Tracked, kind: str) -> str | None:
        if kind == "echo":
            return item.issued[-1] if item.issued else NO_HEARTBEAT
        if kind == "fresh":
            return NO_HEARTBEAT
        if kind == "omit":
            return None
        if kind == "stale" and len(item.issued) >= 2:
            return item.issued[-2]
        if kind == "garbage":
            return "not-a-time"
        return _FOREIGN_TOKEN

    def _read_back(self, item: _Tracked) -> None:
        if self.get_after_each_step:
            self._exchange(
                item, f"  then get {item.sut_id}", None, lambda: self.adapter.get(item.sut_id)
            )

    def _exchange(
        self,
        item: _Tracked,
        label: str,
        op: Operation | None,
        send: Callable[[], Reply],
        run: _Run | None = None,
    ) -> None:
        before, reply, after = self._timed(send)
        outcomes: list[tuple[_Outcome, str]] = []
        for work, uncertain, note in self._candidates(item, before, after):
            outcome = self._judge(item, work, uncertain, op, run, reply, before, after)
            if not outcome.problems:
                self._log(label, before, after, outcome.reply, reply, note)
                if outcome.work.lease_expires_at != item.work.lease_expires_at:
                    item.slack = outcome.slack
                item.work, item.uncertain = outcome.work, outcome.uncertain
                if outcome.token is not None:
                    sut_token, model_token = outcome.token
                    item.tokens[sut_token] = model_token
                    item.issued.append(sut_token)
                return
            outcomes.append((outcome, note))
        first, note = outcomes[0]
        self._log(label, before, after, first.reply, reply, note)
        self._fail(first.problems)

    def _candidates(
        self, item: _Tracked, before: _dt.datetime, after: _dt.datetime
    ) -> list[tuple[Work, dict[str, tuple[_dt.datetime, _dt.datetime]], str]]:
        """The model's item as it may stand when the SUT served the request."""
        work = item.work
        deadline = work.lease_expires_at
        unchanged = (work, item.uncertain, "")
        if deadline is None or after <= deadline:
            return [unchanged]
        when = min(max(before, deadline + _MICRO, work.touched_at), after)
        expired = work.expire(when)
        uncertain = dict(item.uncertain)
        if expired.state is State.STOPPED:
            uncertain["stopped_at"] = (deadline + _MICRO, after)
        note = f"the lease ran out at {format_time(deadline)}: the model expired the item first"
        grace = _dt.timedelta(seconds=self.expiry_grace_seconds)
        if before > deadline + item.slack + grace:
            return [(expired, uncertain, note)]
        return [unchanged, (expired, uncertain, note)]

    def _judge(
        self,
        item: _Tracked,
        work: Work,
        uncertain: dict[str, tuple[_dt.datetime, _dt.datetime]],
        op: Operation | None,
        run: _Run | None,
        reply: Reply,
        before: _dt.datetime,
        after: _dt.datetime,
    ) -> _Outcome:
        problems: list[str] = []
        floor = max(before, work.touched_at)
        t, slack = floor, max(after - floor, _NO_TIME)
        move = lookup(self.profile).get((work.state, op)) if op is not None else None
        if move is not None and move.changes and reply.is_success:
            found = self._sut_time(op, move, reply)
            if found is not None:
                key, value, unit = found
                ahead = work.touched_at
                latest = work.latest_heartbeat_at
                if op is Operation.HEARTBEAT and latest is not None:
                    ahead = max(ahead, latest + _MICRO)
                adopted, problem = _window(key, value, unit, before, after, work.touched_at, ahead)
                if problem:
                    problems.append(problem)
                else:
                    t = adopted
                    slack = max(min(value + unit - _MICRO, after) - t, _NO_TIME)
        new, token = work, None
        if run is None:
            model = Reply.ok(work.to_json())
        else:
            try:
                result = run(work, t)
            except WorkstateError as exc:
                model = Reply.from_error(exc)
            else:
                if isinstance(result, tuple):
                    new, beat = result
                    model = Reply.ok(beat.to_json())
                else:
                    new = result
                    model = Reply.ok(new.to_json())
        uncertain = dict(uncertain)
        if not problems:
            new, model, more, token = self._compare(item, new, uncertain, model, reply)
            problems += more
        return _Outcome(new, model, problems, uncertain, slack, token)

    def _sut_time(
        self, op: Operation | None, move: Move, reply: Reply
    ) -> tuple[str, _dt.datetime, _dt.timedelta] | None:
        """The time the SUT gave the operation, read from its answer, if the answer shows it."""
        body = reply.body
        if not isinstance(body, Mapping):
            return None
        if op is Operation.HEARTBEAT:
            key, unit = "last_heartbeat", _MICRO
        else:
            stamp = next((s for s in Stamp if s in move.sets), None)
            if stamp is None:
                return None  # a metadata update: no time shows
            key, unit = stamp.value, self._unit(stamp)
        text = body.get(key)
        try:
            return key, parse_time(text, key=key), unit
        except InvalidInputError:
            return None

    def _compare(
        self,
        item: _Tracked,
        work: Work,
        uncertain: dict[str, tuple[_dt.datetime, _dt.datetime]],
        model: Reply,
        reply: Reply,
    ) -> tuple[Work, Reply, list[str], tuple[str, str] | None]:
        if model.status != reply.status and not (model.is_success and reply.is_success):
            return work, model, [_status_difference(model, reply)], None
        if not model.is_success:
            return work, model, self._compare_errors(work, model, reply), None
        body = model.body
        if isinstance(body, Mapping) and body.get("type") == "work_heartbeat":
            problems, token = self._compare_beats(item, body, reply.body)
            return work, model, problems, token
        try:
            sut = work_from_json(reply.body, profile=self.profile)
        except InvalidInputError as exc:
            return work, model, [f"the SUT answered a malformed work object: {exc.message}"], None
        for key, (lo, hi) in list(uncertain.items()):
            value = getattr(sut, key)
            if value is not None and truncate(lo, self._precision(key)) <= value <= hi:
                work = attrs.evolve(work, **{key: value})
                model = Reply.ok(work.to_json(), status=model.status)
                del uncertain[key]
        return work, model, _differences(work.to_json(), work_to_json(sut)), None

    def _precision(self, key: str) -> Precision:
        return Precision.MICROSECONDS if self._unit(Stamp(key)) == _MICRO else Precision.SECONDS

    def _compare_errors(self, work: Work, model: Reply, reply: Reply) -> list[str]:
        if model.error_type != reply.error_type:
            return [
                f"error type: the model answered {model.status} {model.error_type}, the SUT "
                f"answered {reply.status} {reply.error_type}"
            ]
        if model.status != 412:
            return []
        error = reply.body.get("error") if isinstance(reply.body, Mapping) else None
        details = error.get("details") if isinstance(error, Mapping) else None
        current = details.get("current_state") if isinstance(details, Mapping) else None
        if not isinstance(current, Mapping):
            return ["a 412 must carry error.details.current_state; the SUT's has none"]
        if current.get("state") != work.state.value:
            return [
                f"current_state.state: the model has {work.state.value!r}, the SUT has "
                f"{current.get('state')!r}"
            ]
        return []

    def _compare_beats(
        self, item: _Tracked, model: Mapping[str, Any], body: Any
    ) -> tuple[list[str], tuple[str, str] | None]:
        try:
            sut = heartbeat_from_json(body)
        except InvalidInputError as exc:
            return [f"the SUT answered a malformed heartbeat object: {exc.message}"], None
        problems = [
            f"{key}: the model has {model[key]!r}, the SUT has {value!r}"
            for key, value in (
                ("lease_extended", sut.lease_extended),
                ("state", sut.state.value),
                ("ttl_seconds", sut.ttl_seconds),
            )
            if model[key] != value
        ]
        model_token = model["last_heartbeat"]
        if sut.lease_extended and model["lease_extended"]:
            # The model beat at the time the SUT's token names (checked against the request's
            # window before), so the two tokens name the same instant: remember the pair.
            return problems, (sut.last_heartbeat, model_token)
        if item.tokens.get(sut.last_heartbeat, sut.last_heartbeat) != model_token:
            problems.append(
                f"last_heartbeat: the model holds {model_token!r}, the SUT answered "
                f"{sut.last_heartbeat!r}, which is not the token it handed out for that heartbeat"
            )
        return problems, None

    # ------------------------------------------------------------------ reporting
    def _log(
        self,
        label: str,
        before: _dt.datetime,
        after: _dt.datetime,
        model: Reply,
        sut: Reply,
        note: str = "",
    ) -> None:
        self.history.append(_Entry(len(self.history) + 1, label, before, after, model, sut, note))

    def _fail(self, problems: list[str]) -> None:
        last = self.history[-1]
        lines = [
            f"The system under test diverged from the workstate model (profile "
            f"{self.profile.name}) at step {last.number}: {last.label.strip()}",
            *(f"  - {p}" for p in problems),
            "",
            "History (each step: operation and time window; the model's answer; the SUT's):",
        ]
        for entry in self.history:
            lines.append(f"{entry.number:>4}. {entry.label} @ {_span(entry.before, entry.after)}")
            if entry.note:
                lines.append(f"        note:  {entry.note}")
            if entry.model is None or entry.sut is None:
                continue
            model, sut = _brief(entry.model), _brief(entry.sut)
            if entry is last:  # the failing step in full: the difference may be anywhere
                model, sut = entry.model.describe(), entry.sut.describe()
            elif model == sut:
                lines.append(f"        both:  {model}")
                continue
            lines.append(f"        model: {model}")
            lines.append(f"        SUT:   {sut}")
        raise AssertionError("\n".join(lines))


def _brief(reply: Reply) -> str:
    """A short rendering of an answer for the history."""
    body = reply.body
    if not reply.is_success or not isinstance(body, Mapping):
        return reply.describe()
    if body.get("type") == "work":
        parts = [f"{reply.status} {body.get('id')} {body.get('state')}"]
        parts += [f"{key}={body[key]}" for key in _STAMP_KEYS if body.get(key) is not None]
        if body.get("metadata"):
            parts.append(f"metadata={_js(body['metadata'])}")
        return " ".join(parts)
    if body.get("type") == "work_heartbeat":
        keys = ("state", "lease_extended", "last_heartbeat", "ttl_seconds")
        return f"{reply.status} heartbeat " + " ".join(f"{k}={_js(body.get(k))}" for k in keys)
    return reply.describe()


def _js(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _span(before: _dt.datetime, after: _dt.datetime) -> str:
    if before == after:
        return f"[{format_time(before)}]"
    return f"[{format_time(before)}, {format_time(after)}]"


def _window(
    key: str,
    value: _dt.datetime,
    unit: _dt.timedelta,
    before: _dt.datetime,
    after: _dt.datetime,
    touched: _dt.datetime | None,
    ahead: _dt.datetime,
) -> tuple[_dt.datetime, str | None]:
    """The model's time for an operation the SUT stamped ``value`` (at ``unit`` precision),
    or a complaint when that stamp cannot be the time of this request.

    ``ahead`` is the latest time the operation may carry even when the request ended earlier:
    an item's own time may run ahead of a clock standing still, since a heartbeat at the time
    of the previous one happens a microsecond later (tokens never repeat).
    """
    if touched is not None and value + unit <= touched:
        return before, (
            f"the SUT set {key} to {format_time(value)}, earlier than the item's latest "
            f"recorded time {format_time(touched)}: time moved backwards"
        )
    lo = max(value, before, touched or before)
    if lo > max(after, ahead) or value + unit <= before:
        return before, (
            f"the SUT set {key} to {format_time(value)}, outside the request's time window "
            f"{_span(before, after)}"
        )
    return lo, None


def _status_difference(model: Reply, sut: Reply) -> str:
    what = model.error_type if not model.is_success else "success"
    got = sut.error_type if not sut.is_success else "success"
    return (
        f"status: the model answered {model.status} ({what}), the SUT answered {sut.status} ({got})"
    )


def _differences(model: Mapping[str, Any], sut: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}: the model has {_js(model.get(key))}, the SUT has {_js(sut.get(key))}"
        for key in model
        if model.get(key) != sut.get(key)
    ]
