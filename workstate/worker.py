"""Worker-side rules as pure decisions: keep one item's lease, and pace the poll loop.

A worker daemon polls its environment for work, acks what it gets, serves the item while it
heartbeats the item's lease, and finally stops the item (or leaves it alone when the lease was
lost).  This module decides *what to do next* at each of those steps.  It does no I/O, reads no
clock and draws no random number of its own: the caller does the requests, reads its own
monotonic clock (``time.monotonic()``) and passes the times in, and hands in a random source
where jitter is needed.

Theory of operation
-------------------
Two small immutable machines.  Each is fed what happened and answers what to do; every feed
returns a *new* machine, and a feed that is not legal where the machine is raises
:class:`IllegalFeedError` (409) and changes nothing.  Malformed inputs (a time earlier than one
already fed, an HTTP status that is no error, a malformed heartbeat answer) raise
:class:`~workstate.InvalidInputError` (400), again changing nothing.

* :class:`LeaseKeeper` follows the lease of one claimed item through :class:`KeeperState`:
  ``claimed → starting → serving → (draining →) ended``.  It answers the token to send with the
  next heartbeat, when that heartbeat is due and how long it may take, whether to keep serving
  or to drain, why the lease ended (:class:`EndReason`; the first reason wins) and the final
  action (:class:`FinalAction`).  Which feed is legal in which state is one table,
  ``_KEEPER_FEEDS``.
* :class:`PollLoop` paces the loop that claims items: the delay after an empty poll, the
  exponential backoff after failures (separate counters for poll and ack), and what to do when
  an ack fails for good.  Its state is the next :class:`PollAction`.

The rules, constants and formulas are those of the official SDK's worker (``anthropic``
2.10.0: ``anthropic/lib/environments/_worker.py``, ``_poller.py`` and ``lib/_retry.py``);
``docs/worker-guide.md`` lists each constant with its SDK name, and where we differ and why.
:data:`SDK_HEARTBEAT_RULES` reproduces the SDK's heartbeat decisions exactly; the default
:data:`DEFAULT_HEARTBEAT_RULES` differs in one decision (how soon to retry a failed heartbeat).

>>> keeper = LeaseKeeper(work_id="work_1").acked(now=100.0)
>>> keeper.next_token, keeper.next_heartbeat_at, keeper.request_timeout
('NO_HEARTBEAT', 100.0, 30.0)
>>> answer = {"type": "work_heartbeat", "last_heartbeat": "2026-07-01T08:15:00.000000Z",
...           "lease_extended": True, "state": "active", "ttl_seconds": 20}
>>> keeper = keeper.answered(answer, now=100.5)
>>> keeper.state, keeper.next_token, keeper.next_heartbeat_at, keeper.request_timeout
(<KeeperState.SERVING: 'serving'>, '2026-07-01T08:15:00.000000Z', 110.5, 10.0)
>>> keeper = keeper.refused(412, now=110.6)
>>> keeper.should_keep_serving, keeper.end_reason, keeper.final_action
(False, <EndReason.LEASE_LOST_412: 'lease_lost_412'>, <FinalAction.RELEASE: 'release'>)
"""

from __future__ import annotations

import enum
import math
import random as _random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import attrs

from workstate._errors import IllegalMoveError, InvalidInputError, LeaseState
from workstate._records import HeartbeatResult, is_int
from workstate._table import State
from workstate._wire import heartbeat_from_json, lease_state_from_json
from workstate._work import NO_HEARTBEAT

__all__ = [
    "ASSUMED_TTL",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "BACKOFF_JITTER",
    "DEFAULT_HEARTBEAT_RULES",
    "EMPTY_POLL_DELAY",
    "HEARTBEAT_INTERVAL",
    "MIN_HEARTBEAT_INTERVAL",
    "POLL_BLOCK_MS",
    "RETRYABLE_4XX",
    "SDK_HEARTBEAT_RULES",
    "EndReason",
    "Feed",
    "FinalAction",
    "HeartbeatAnswer",
    "HeartbeatRules",
    "IllegalFeedError",
    "KeeperState",
    "LeaseKeeper",
    "PollAction",
    "PollFeed",
    "PollLoop",
    "RandomSource",
    "backoff",
    "is_retryable_status",
    "jitter",
]

# ----------------------------------------------------------------------------- constants
HEARTBEAT_INTERVAL = 30.0
"""Seconds between heartbeats until a response tells the TTL, and the cap afterwards
(SDK ``_HEARTBEAT_DEFAULT``)."""

MIN_HEARTBEAT_INTERVAL = 1.0
"""The floor of the heartbeat interval (the SDK's ``max(1.0, ...)``)."""

ASSUMED_TTL = 90.0
"""The lease TTL assumed until the first heartbeat response reports it
(SDK ``_HEARTBEAT_TTL_DEFAULT``)."""

RETRYABLE_4XX = frozenset({408, 409, 429})
"""The 4xx statuses worth retrying: request timeout, conflict, rate limit (SDK
``_retry._RETRYABLE_4XX``).  Every other 4xx is final; every 5xx is retryable."""

POLL_BLOCK_MS = 999
"""How long a poll asks the server to hold an empty answer open; the API accepts 1-999
(SDK ``POLL_BLOCK_MS``)."""

EMPTY_POLL_DELAY = (1.0, 3.0)
"""The uniform range of the pause after an empty poll, in seconds (SDK ``_jitter(1.0, 3.0)``)."""

BACKOFF_BASE = 2.0
"""The base of the exponential backoff: attempt *n* waits ``BACKOFF_BASE ** n`` seconds before
the cap (SDK ``_retry.backoff``)."""

BACKOFF_CAP = 60.0
"""The cap of the exponential backoff, before jitter (SDK ``_POLL_BACKOFF_CAP``)."""

BACKOFF_JITTER = (0.0, 1.0)
"""The uniform range added to every backoff, in seconds (SDK ``_jitter(0.0, 1.0)``)."""

# Any exponent this large already gives more than any sane cap; bounding it keeps
# ``BACKOFF_BASE ** attempt`` from overflowing a float (the SDK raises OverflowError at 1024).
_MAX_EXPONENT = 64

RandomSource: TypeAlias = Callable[[], float] | _random.Random
"""Where jitter comes from: a :class:`random.Random`, or a callable returning floats in
``[0, 1)`` (for instance ``random.Random(7).random``)."""

HeartbeatAnswer: TypeAlias = HeartbeatResult | Mapping[str, Any] | str | bytes
"""A heartbeat's 200 answer: a :class:`~workstate.HeartbeatResult`, or its JSON (a mapping, or
the response text).  With the SDK, pass ``response.to_dict()``."""


# ----------------------------------------------------------------------------- helpers
def _check_status(status: object) -> int:
    if not is_int(status) or not 400 <= status <= 599:
        raise InvalidInputError(
            f"status must be an HTTP error status (400-599), got {status!r}",
            key="status",
            expected="an integer from 400 to 599",
            got=status,
        )
    return status


def is_retryable_status(status: int) -> bool:
    """Whether a request that failed with HTTP ``status`` is worth retrying.

    408, 409 and 429 and every 5xx are retryable; every other 4xx is final (the SDK's
    ``is_fatal_status_error``, negated).  ``status`` must be 400-599.

    >>> [is_retryable_status(s) for s in (400, 408, 409, 412, 429, 500, 503)]
    [False, True, True, False, True, True, True]
    """
    status = _check_status(status)
    return status >= 500 or status in RETRYABLE_4XX


def backoff(attempt: int) -> float:
    """The backoff before jitter for the ``attempt``-th consecutive failure (1-indexed).

    ``min(BACKOFF_CAP, BACKOFF_BASE ** attempt)``: 2, 4, 8, 16, 32, 60, 60, ... seconds.

    >>> [backoff(n) for n in (1, 2, 5, 6, 5000)]
    [2.0, 4.0, 32.0, 60.0, 60.0]
    """
    if not is_int(attempt) or attempt < 1:
        raise InvalidInputError(
            f"attempt must be a positive integer, got {attempt!r}",
            key="attempt",
            expected="a positive integer (1 for the first failure)",
            got=attempt,
        )
    return min(BACKOFF_CAP, BACKOFF_BASE ** min(attempt, _MAX_EXPONENT))


def _draw(source: RandomSource) -> float:
    value = source.random() if isinstance(source, _random.Random) else source()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0.0 <= value < 1.0  # also rejects NaN
    ):
        raise InvalidInputError(
            f"the random source must return a float in [0, 1), it returned {value!r}",
            key="random",
            expected="a float in [0, 1)",
            got=value,
        )
    return float(value)


def jitter(low: float, high: float, *, random: RandomSource) -> float:
    """A uniform delay from ``low`` to ``high``: ``low + (high - low) * u`` with ``u`` drawn once.

    The same formula as :meth:`random.Random.uniform`, so a worker seeded like the SDK draws the
    SDK's delays; like it, the result may round up to ``high`` itself.

    >>> jitter(1.0, 3.0, random=lambda: 0.25)
    1.5
    """
    return low + (high - low) * _draw(random)


def _check_now(now: object, latest: float | None, work_id: str | None) -> float:
    if (
        isinstance(now, bool)
        or not isinstance(now, (int, float))
        or not -1e15 <= now <= 1e15  # no NaN, no infinity, no int too big for a float
    ):
        raise InvalidInputError(
            f"now must be a finite number of seconds from a monotonic clock, got {now!r}",
            key="now",
            expected="a finite number of seconds",
            got=now,
            work_id=work_id,
        )
    if latest is not None and now < latest:
        raise InvalidInputError(
            f"now={now!r} is earlier than the latest time fed ({latest!r}); feed the times of "
            "one monotonic clock, in order",
            key="now",
            expected=f"a time >= {latest!r}",
            got=now,
            work_id=work_id,
        )
    return float(now)


# ----------------------------------------------------------------------------- enums
class KeeperState(enum.Enum):
    """Where a :class:`LeaseKeeper` is."""

    CLAIMED = "claimed"
    """A poll delivered the item; it is not acked, so there is no lease yet."""
    STARTING = "starting"
    """Acked: the lease runs from the ack on; the first heartbeat is due at once."""
    SERVING = "serving"
    """At least one heartbeat extended the lease; serve, and heartbeat when due."""
    DRAINING = "draining"
    """The server asked for a graceful stop (``state: stopping``): start nothing new, finish
    what is running, then feed :meth:`LeaseKeeper.finished`.  No more heartbeats."""
    ENDED = "ended"
    """The lease is over; :attr:`LeaseKeeper.end_reason` says why."""


class EndReason(enum.Enum):
    """Why the lease of an item ended.  The first reason recorded wins."""

    FINISHED = "finished"
    """The work finished while the lease was held."""
    STOP_REQUESTED = "stop_requested"
    """A heartbeat answered ``state: stopping``: the server asked for a graceful stop."""
    STOPPED = "stopped"
    """A heartbeat answered ``state: stopped``: the item already stopped."""
    NOT_EXTENDED = "not_extended"
    """A heartbeat answered ``lease_extended: false`` for a live lease."""
    LEASE_LOST_412 = "lease_lost_412"
    """A heartbeat met 412: the item went back to the queue or belongs to another worker."""
    REJECTED = "rejected"
    """A heartbeat met a 4xx that retrying will not fix (not 408, 409, 412 or 429)."""
    LEASE_ASSUMED_LOST = "lease_assumed_lost"
    """No heartbeat succeeded for longer than the TTL: the lease must be assumed lost."""

    @property
    def is_lease_lost(self) -> bool:
        """Whether the item may now belong to the queue or another worker (never stop it)."""
        return self in (EndReason.LEASE_LOST_412, EndReason.LEASE_ASSUMED_LOST)

    @property
    def sdk_reason(self) -> str:
        """The value of the SDK worker's ``_LeaseEndReason`` for the same end.

        The SDK folds ``STOP_REQUESTED``, ``STOPPED`` and ``NOT_EXTENDED`` into one reason.

        >>> EndReason.STOPPED.sdk_reason
        'heartbeat_stop'
        """
        return _SDK_REASONS[self]


_SDK_REASONS = {
    EndReason.FINISHED: "runner_done",
    EndReason.STOP_REQUESTED: "heartbeat_stop",
    EndReason.STOPPED: "heartbeat_stop",
    EndReason.NOT_EXTENDED: "heartbeat_stop",
    EndReason.LEASE_LOST_412: "lease_lost",
    EndReason.REJECTED: "heartbeat_rejected",
    EndReason.LEASE_ASSUMED_LOST: "assumed_lost",
}


class FinalAction(enum.Enum):
    """What to do with the item once its lease ended (or the drain is done)."""

    FORCE_STOP = "force_stop"
    """Send stop with ``force=true``; a 409 means it already stopped: ignore it."""
    RELEASE = "release"
    """Send nothing: the lease was lost, so the item belongs to the queue or another worker."""


class Feed(enum.Enum):
    """What can be fed to a :class:`LeaseKeeper`; the values are its method names."""

    ACKED = "acked"
    ANSWERED = "answered"
    REFUSED = "refused"
    FAILED = "failed"
    FINISHED = "finished"
    TICK = "tick"


class PollAction(enum.Enum):
    """What a :class:`PollLoop` says to do next (after waiting :attr:`PollLoop.delay`)."""

    POLL = "poll"
    """Poll for work (``block_ms`` = :data:`POLL_BLOCK_MS`)."""
    ACK = "ack"
    """Ack the item the poll delivered."""
    SERVE = "serve"
    """The ack succeeded: serve the item (with a :class:`LeaseKeeper`), then feed ``served``."""
    FORCE_STOP = "force_stop"
    """The ack failed for good: stop the item with ``force=true`` (ignore any failure, a 409
    means it already stopped), then feed ``force_stopped``."""
    GIVE_UP = "give_up"
    """A poll failed for good (a final 4xx, such as a bad key): stop and report the error."""
    DONE = "done"
    """Drain mode only: the queue is empty."""


class PollFeed(enum.Enum):
    """What can be fed to a :class:`PollLoop`; the values are its method names."""

    EMPTY = "empty"
    DELIVERED = "delivered"
    POLL_FAILED = "poll_failed"
    ACKED = "acked"
    ACK_FAILED = "ack_failed"
    SERVED = "served"
    FORCE_STOPPED = "force_stopped"


class IllegalFeedError(IllegalMoveError):
    """409: a feed that is not legal where the machine is (for instance a heartbeat answer
    after the lease ended).  The machine is unchanged.

    ``feed`` is what was fed, ``machine_state`` where the machine was (a :class:`KeeperState`
    or, for a :class:`PollLoop`, the :class:`PollAction` it expected), and ``allowed_feeds``
    what it would have accepted.
    """

    def __init__(
        self,
        message: str,
        *,
        feed: Feed | PollFeed,
        machine_state: KeeperState | PollAction,
        allowed_feeds: Iterable[Feed | PollFeed],
        work_id: str | None = None,
    ) -> None:
        super().__init__(message, work_id=work_id)
        self.feed = feed
        self.machine_state = machine_state
        self.allowed_feeds: tuple[Feed | PollFeed, ...] = tuple(allowed_feeds)


def _illegal(
    feed: Feed | PollFeed,
    where: KeeperState | PollAction,
    allowed: Iterable[Feed | PollFeed],
    why: str,
    work_id: str | None = None,
) -> IllegalFeedError:
    allowed = sorted(allowed, key=lambda f: f.value)
    names = ", ".join(f.value for f in allowed) or "nothing"
    return IllegalFeedError(
        f"cannot feed {feed.value} {why}; allowed here: {names}",
        feed=feed,
        machine_state=where,
        allowed_feeds=allowed,
        work_id=work_id,
    )


# ----------------------------------------------------------------------------- the keeper
@attrs.frozen(kw_only=True)
class HeartbeatRules:
    """The numbers and the one policy choice of a :class:`LeaseKeeper`.

    The defaults are the SDK's constants.  ``retry_within_lease`` is where we differ: True (the
    default) retries a failed heartbeat after ``min(interval, max(min_interval, left / 2))``
    seconds, where ``left`` is the time until the lease would lapse, so that several attempts
    fit inside the lease; False waits the full interval, as the SDK does.
    """

    interval: float = HEARTBEAT_INTERVAL
    """The interval (and request timeout) until the TTL is known; the cap afterwards."""
    min_interval: float = MIN_HEARTBEAT_INTERVAL
    """The floor of the interval."""
    assumed_ttl: float = ASSUMED_TTL
    """The TTL assumed until a heartbeat response reports one."""
    retry_within_lease: bool = True
    """Retry a failed heartbeat sooner when the lease is running out (see above)."""

    def __attrs_post_init__(self) -> None:
        for name in ("interval", "min_interval", "assumed_ttl"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"HeartbeatRules.{name} must be a positive number, got {value!r}")
        if self.min_interval > self.interval:
            raise ValueError(
                "HeartbeatRules.min_interval must not exceed interval, got "
                f"{self.min_interval!r} > {self.interval!r}"
            )

    def interval_for(self, ttl_seconds: float) -> float:
        """The heartbeat interval for a lease of ``ttl_seconds``: ``clamp(ttl / 2, 1, 30)``.

        >>> [DEFAULT_HEARTBEAT_RULES.interval_for(t) for t in (1, 10, 60, 600)]
        [1.0, 5.0, 30.0, 30.0]
        """
        return max(self.min_interval, min(ttl_seconds / 2, self.interval))


DEFAULT_HEARTBEAT_RULES = HeartbeatRules()
"""The SDK's numbers; a failed heartbeat is retried sooner when the lease runs short."""

SDK_HEARTBEAT_RULES = HeartbeatRules(retry_within_lease=False)
"""Exactly the SDK worker's heartbeat decisions (anthropic 2.10.0)."""

_LEASE_HOLDING = frozenset({KeeperState.STARTING, KeeperState.SERVING})
_HEARTBEAT_FEEDS = frozenset({Feed.ANSWERED, Feed.REFUSED, Feed.FAILED})

_KEEPER_FEEDS: dict[KeeperState, frozenset[Feed]] = {
    KeeperState.CLAIMED: frozenset({Feed.ACKED, Feed.TICK}),
    KeeperState.STARTING: _HEARTBEAT_FEEDS | {Feed.FINISHED, Feed.TICK},
    KeeperState.SERVING: _HEARTBEAT_FEEDS | {Feed.FINISHED, Feed.TICK},
    KeeperState.DRAINING: frozenset({Feed.FINISHED, Feed.TICK}),
    KeeperState.ENDED: frozenset({Feed.FINISHED, Feed.TICK}),
}
"""The one table of legal keeper feeds.  ``finished`` after the end is legal and changes no
reason (the work usually finishes *because* the lease ended); a heartbeat feed after the end is
a bug in the caller: no heartbeat was due."""

_WHY = {
    KeeperState.CLAIMED: "before the item is acked (feed acked first)",
    KeeperState.STARTING: "while the lease is held",
    KeeperState.SERVING: "while the lease is held",
    KeeperState.DRAINING: "while draining: no heartbeat is due after the server asked to stop",
    KeeperState.ENDED: "after the lease ended: no heartbeat is due",
}


def _heartbeat_result(answer: HeartbeatAnswer) -> HeartbeatResult:
    if isinstance(answer, HeartbeatResult):
        return answer
    # Unknown keys are tolerated: a worker must keep working when the API adds a field.
    return heartbeat_from_json(answer, strict=False)


def _lease_state(value: LeaseState | Mapping[str, Any] | str | bytes) -> LeaseState:
    if isinstance(value, LeaseState):
        return value
    return lease_state_from_json(value, strict=False)


@attrs.frozen(kw_only=True)
class LeaseKeeper:
    """The lease of one claimed work item, from the worker's side.

    Start with ``LeaseKeeper(work_id=...)`` (state ``claimed``) and feed it what happens, each
    with a monotonic time in seconds that never goes backwards: :meth:`acked`,
    :meth:`answered`, :meth:`refused`, :meth:`failed`, :meth:`finished`, :meth:`tick`.  Every
    feed returns a new keeper.  Read the decisions from :attr:`next_token`,
    :attr:`next_heartbeat_at`, :attr:`request_timeout`, :attr:`should_keep_serving`,
    :attr:`should_drain`, :attr:`end_reason` and :attr:`final_action`.

    The fields are the keeper's memory; build a keeper with its defaults only.
    """

    work_id: str | None = None
    """The item's id, for error messages."""
    rules: HeartbeatRules = DEFAULT_HEARTBEAT_RULES
    """The numbers and the retry policy."""
    state: KeeperState = KeeperState.CLAIMED
    """Where the keeper is."""
    now: float | None = None
    """The latest time fed."""
    last_heartbeat: str | None = None
    """The ``last_heartbeat`` of the latest successful heartbeat; None before the first."""
    ttl_seconds: int | None = None
    """The TTL the server reported last; None until a heartbeat answered."""
    renewed_at: float | None = None
    """When the lease was last renewed: the ack, or the latest answer that extended it."""
    failures: int = 0
    """Transient heartbeat failures since the latest success."""
    next_heartbeat_at: float | None = None
    """When the next heartbeat is due; None when no heartbeat is to be sent."""
    end_reason: EndReason | None = None
    """Why the lease ended (set on draining too); None while it is held."""
    ended_at: float | None = None
    """When the keeper reached ``ended``."""
    lost_to: LeaseState | None = None
    """The server's ``current_state`` carried by a 412, when it sent one (for logs)."""
    last_error_status: int | None = None
    """The HTTP status of the latest failed heartbeat; None after a success or a timeout."""

    # ------------------------------------------------------------------ answers
    @property
    def next_token(self) -> str:
        """The ``expected_last_heartbeat`` to send: ``NO_HEARTBEAT``, then the latest
        ``last_heartbeat`` exactly as the server wrote it."""
        return NO_HEARTBEAT if self.last_heartbeat is None else self.last_heartbeat

    @property
    def ttl(self) -> float:
        """The lease TTL in seconds: the server's latest report, or the assumed 90 s."""
        return self.rules.assumed_ttl if self.ttl_seconds is None else float(self.ttl_seconds)

    @property
    def interval(self) -> float:
        """The heartbeat interval: 30 s until the TTL is known, then ``clamp(ttl/2, 1, 30)``."""
        if self.ttl_seconds is None:
            return self.rules.interval
        return self.rules.interval_for(self.ttl_seconds)

    @property
    def request_timeout(self) -> float | None:
        """How long the next heartbeat request may take (the interval); None when none is due."""
        return None if self.next_heartbeat_at is None else self.interval

    @property
    def lease_deadline(self) -> float | None:
        """When the lease lapses unless renewed (:attr:`renewed_at` + :attr:`ttl`), while there
        is a lease; the drain must be done by then."""
        if self.renewed_at is None or self.state is KeeperState.ENDED:
            return None
        return self.renewed_at + self.ttl

    @property
    def should_keep_serving(self) -> bool:
        """Whether the lease is held: keep serving, and heartbeat when due."""
        return self.state in _LEASE_HOLDING

    @property
    def should_drain(self) -> bool:
        """Whether the server asked for a graceful stop: finish up, then feed ``finished``."""
        return self.state is KeeperState.DRAINING

    @property
    def is_ended(self) -> bool:
        """Whether the lease is over (see :attr:`end_reason` and :attr:`final_action`)."""
        return self.state is KeeperState.ENDED

    @property
    def is_lease_lost(self) -> bool:
        """Whether the lease was lost (412, or assumed lost): the item is not ours to stop."""
        return self.end_reason is not None and self.end_reason.is_lease_lost

    @property
    def final_action(self) -> FinalAction | None:
        """What to do with the item at the end: force-stop it, or release it when the lease
        was lost.  None while the lease is held."""
        if self.end_reason is None:
            return None
        return FinalAction.RELEASE if self.end_reason.is_lease_lost else FinalAction.FORCE_STOP

    @property
    def allowed_feeds(self) -> frozenset[Feed]:
        """The feeds legal in the current state."""
        return _KEEPER_FEEDS[self.state]

    def can(self, feed: Feed) -> bool:
        """Whether ``feed`` is legal in the current state."""
        return feed in _KEEPER_FEEDS[self.state]

    def seconds_until_heartbeat(self, now: float) -> float | None:
        """How long to wait at ``now`` before the next heartbeat (0 when it is due); None when
        no heartbeat is to be sent."""
        if self.next_heartbeat_at is None:
            return None
        return max(0.0, self.next_heartbeat_at - now)

    # ------------------------------------------------------------------ feeds
    def acked(self, *, now: float) -> LeaseKeeper:
        """The ack succeeded at ``now`` (or, for an item acked by another process, serving
        starts): the lease runs from now, and the first heartbeat is due at once."""
        now = self._enter(Feed.ACKED, now)
        return attrs.evolve(
            self,
            state=KeeperState.STARTING,
            now=now,
            renewed_at=now,
            next_heartbeat_at=now,
        )

    def answered(self, answer: HeartbeatAnswer, *, now: float) -> LeaseKeeper:
        """A heartbeat was answered with 200 at ``now``.

        The answer's ``last_heartbeat`` becomes the next token and a positive ``ttl_seconds``
        the TTL.  ``state: stopping`` starts a drain; ``state: stopped`` or
        ``lease_extended: false`` ends the lease; otherwise the next heartbeat is due one
        interval from now.
        """
        now = self._enter(Feed.ANSWERED, now)
        result = _heartbeat_result(answer)
        # Like the SDK, a non-positive TTL in an answer is ignored rather than trusted.
        ttl = result.ttl_seconds if result.ttl_seconds > 0 else self.ttl_seconds
        new = attrs.evolve(
            self,
            now=now,
            last_heartbeat=result.last_heartbeat,
            ttl_seconds=ttl,
            renewed_at=now if result.lease_extended else self.renewed_at,
            failures=0,
            last_error_status=None,
        )
        if result.state is State.STOPPING:
            return new._drain(EndReason.STOP_REQUESTED)
        if result.state is State.STOPPED:
            return new._end(EndReason.STOPPED)
        if not result.lease_extended:
            return new._end(EndReason.NOT_EXTENDED)
        return attrs.evolve(new, state=KeeperState.SERVING, next_heartbeat_at=now + new.interval)

    def refused(
        self,
        status: int,
        *,
        now: float,
        current_state: LeaseState | Mapping[str, Any] | str | bytes | None = None,
    ) -> LeaseKeeper:
        """A heartbeat was answered with the HTTP error ``status`` at ``now``.

        412 ends the lease as lost (pass the error's ``details.current_state`` as
        ``current_state`` to keep it for logs); 408, 409, 429 and 5xx count as a transient
        failure (see :meth:`failed`); any other 4xx ends the lease as rejected.
        """
        now = self._enter(Feed.REFUSED, now)
        status = _check_status(status)
        if current_state is not None and status != 412:
            raise InvalidInputError(
                f"current_state comes only with a 412, not with {status}",
                key="current_state",
                expected="None unless status is 412",
                got=current_state,
                work_id=self.work_id,
            )
        if status == 412:
            lost_to = None if current_state is None else _lease_state(current_state)
            new = attrs.evolve(self, now=now, lost_to=lost_to, last_error_status=status)
            return new._end(EndReason.LEASE_LOST_412)
        if is_retryable_status(status):
            return self._transient(now, status)
        return attrs.evolve(self, now=now, last_error_status=status)._end(EndReason.REJECTED)

    def failed(self, *, now: float, status: int | None = None) -> LeaseKeeper:
        """A heartbeat failed transiently at ``now``: a timeout or connection error (no
        ``status``), or a retryable status (408, 409, 429, 5xx).

        When no heartbeat has succeeded for longer than the TTL, the lease is assumed lost.
        Otherwise the heartbeat is retried with the same token after the interval (or sooner
        with ``retry_within_lease``).
        """
        now = self._enter(Feed.FAILED, now)
        if status is not None and not is_retryable_status(status):
            raise InvalidInputError(
                f"failed() takes only a retryable status (408, 409, 429, 5xx), got {status}; "
                "feed a final status with refused()",
                key="status",
                expected="None, 408, 409, 429 or 500-599",
                got=status,
                work_id=self.work_id,
            )
        return self._transient(now, status)

    def finished(self, *, now: float) -> LeaseKeeper:
        """The work finished (or was abandoned) at ``now``: the lease ends.

        Any reason already recorded wins (a drain ends as ``STOP_REQUESTED``); after the end
        this only records the time.
        """
        now = self._enter(Feed.FINISHED, now)
        new = attrs.evolve(self, now=now)
        return new if self.state is KeeperState.ENDED else new._end(EndReason.FINISHED)

    def tick(self, *, now: float) -> LeaseKeeper:
        """Time passed to ``now`` with nothing else to report.

        Once the lease has gone longer than the TTL without renewal, the lease is assumed lost
        (while held) or the drain is over (while draining; the server stops the item itself).
        The SDK only notices this when a heartbeat fails; ticking notices it on time.
        """
        now = self._enter(Feed.TICK, now)
        new = attrs.evolve(self, now=now)
        deadline = self.lease_deadline
        if deadline is not None and now > deadline:
            return new._end(EndReason.LEASE_ASSUMED_LOST)
        return new

    # ------------------------------------------------------------------ internals
    def _enter(self, feed: Feed, now: float) -> float:
        checked = _check_now(now, self.now, self.work_id)
        if feed not in _KEEPER_FEEDS[self.state]:
            where = f"work {self.work_id}" if self.work_id else "this item"
            raise _illegal(
                feed,
                self.state,
                _KEEPER_FEEDS[self.state],
                f"to the lease keeper of {where} {_WHY[self.state]}"
                + (f" ({self.end_reason.value})" if self.end_reason else ""),
                self.work_id,
            )
        return checked

    def _transient(self, now: float, status: int | None) -> LeaseKeeper:
        renewed = self.renewed_at
        assert renewed is not None  # every heartbeat feed comes after the ack
        new = attrs.evolve(self, now=now, failures=self.failures + 1, last_error_status=status)
        # The SDK's test, strictly greater: a failure exactly one TTL after the renewal retries.
        if now - renewed > self.ttl:
            return new._end(EndReason.LEASE_ASSUMED_LOST)
        delay = self.interval
        if self.rules.retry_within_lease:
            left = renewed + self.ttl - now
            delay = min(delay, max(self.rules.min_interval, left / 2))
        return attrs.evolve(new, next_heartbeat_at=now + delay)

    def _drain(self, reason: EndReason) -> LeaseKeeper:
        return attrs.evolve(
            self,
            state=KeeperState.DRAINING,
            end_reason=self.end_reason or reason,
            next_heartbeat_at=None,
        )

    def _end(self, reason: EndReason) -> LeaseKeeper:
        return attrs.evolve(
            self,
            state=KeeperState.ENDED,
            end_reason=self.end_reason or reason,
            ended_at=self.now,
            next_heartbeat_at=None,
        )


# ----------------------------------------------------------------------------- the poll loop
_POLL_FEEDS: dict[PollAction, frozenset[PollFeed]] = {
    PollAction.POLL: frozenset({PollFeed.EMPTY, PollFeed.DELIVERED, PollFeed.POLL_FAILED}),
    PollAction.ACK: frozenset({PollFeed.ACKED, PollFeed.ACK_FAILED}),
    PollAction.SERVE: frozenset({PollFeed.SERVED}),
    PollAction.FORCE_STOP: frozenset({PollFeed.FORCE_STOPPED}),
    PollAction.GIVE_UP: frozenset(),
    PollAction.DONE: frozenset(),
}
"""The one table of legal poll-loop feeds: each answers the action the loop asked for."""


@attrs.frozen(kw_only=True)
class PollLoop:
    """The pacing of a worker's poll loop (the SDK's ``iter_work`` with ``auto_stop=False``).

    Do :attr:`next_action` after waiting :attr:`delay` seconds, then feed what happened; every
    feed returns a new loop.  Poll failures and ack failures have separate counters, each reset
    by its own success, so a run of one cannot inflate the other's backoff.

    >>> import random
    >>> loop = PollLoop()
    >>> loop.next_action, loop.delay
    (<PollAction.POLL: 'poll'>, 0.0)
    >>> loop = loop.poll_failed(status=503, random=lambda: 0.5)
    >>> loop.next_action, loop.delay, loop.poll_failures
    (<PollAction.POLL: 'poll'>, 2.5, 1)
    >>> loop = loop.delivered()
    >>> loop.next_action, loop.poll_failures
    (<PollAction.ACK: 'ack'>, 0)
    >>> loop = loop.ack_failed(status=404, random=lambda: 0.5)
    >>> loop.next_action, loop.delay
    (<PollAction.FORCE_STOP: 'force_stop'>, 0.0)
    """

    drain: bool = False
    """Drain mode: finish (``DONE``) at the first empty poll instead of pausing and polling."""
    next_action: PollAction = PollAction.POLL
    """What to do next."""
    delay: float = 0.0
    """Seconds to wait before :attr:`next_action`."""
    poll_failures: int = 0
    """Consecutive transient poll failures."""
    ack_failures: int = 0
    """Consecutive transient ack failures (reset only by a successful ack)."""
    last_error_status: int | None = None
    """The HTTP status of the latest failure fed (None for a timeout or connection error)."""

    @property
    def block_ms(self) -> int:
        """The ``block_ms`` to poll with."""
        return POLL_BLOCK_MS

    @property
    def allowed_feeds(self) -> frozenset[PollFeed]:
        """The feeds legal now."""
        return _POLL_FEEDS[self.next_action]

    @property
    def is_over(self) -> bool:
        """Whether the loop is over (gave up, or drained the queue)."""
        return not _POLL_FEEDS[self.next_action]

    def empty(self, *, random: RandomSource) -> PollLoop:
        """The poll answered ``null``: pause 1-3 s with jitter and poll again (drain mode:
        done)."""
        self._enter(PollFeed.EMPTY)
        if self.drain:
            return self._next(PollAction.DONE, poll_failures=0)
        low, high = EMPTY_POLL_DELAY
        delay = jitter(low, high, random=random)
        return self._next(PollAction.POLL, delay, poll_failures=0)

    def delivered(self) -> PollLoop:
        """The poll delivered an item: ack it at once."""
        self._enter(PollFeed.DELIVERED)
        return self._next(PollAction.ACK, poll_failures=0)

    def poll_failed(self, *, status: int | None = None, random: RandomSource) -> PollLoop:
        """The poll failed: a final 4xx gives up; anything else (``status`` None for a timeout
        or connection error) backs off ``backoff(n) + jitter(0, 1)`` and polls again."""
        self._enter(PollFeed.POLL_FAILED)
        if status is not None and not is_retryable_status(status):
            return self._next(PollAction.GIVE_UP, last_error_status=status)
        attempt = self.poll_failures + 1
        delay = backoff(attempt) + jitter(*BACKOFF_JITTER, random=random)
        return self._next(PollAction.POLL, delay, poll_failures=attempt, last_error_status=status)

    def acked(self) -> PollLoop:
        """The ack succeeded: serve the item."""
        self._enter(PollFeed.ACKED)
        return self._next(PollAction.SERVE, ack_failures=0)

    def ack_failed(self, *, status: int | None = None, random: RandomSource) -> PollLoop:
        """The ack failed: a final 4xx force-stops the item (then polls at once); anything else
        backs off ``backoff(n) + jitter(0, 1)`` and polls again (the item comes back after the
        redelivery window)."""
        self._enter(PollFeed.ACK_FAILED)
        if status is not None and not is_retryable_status(status):
            return self._next(PollAction.FORCE_STOP, last_error_status=status)
        attempt = self.ack_failures + 1
        delay = backoff(attempt) + jitter(*BACKOFF_JITTER, random=random)
        return self._next(PollAction.POLL, delay, ack_failures=attempt, last_error_status=status)

    def served(self) -> PollLoop:
        """The item was served and stopped or released: poll at once."""
        self._enter(PollFeed.SERVED)
        return self._next(PollAction.POLL)

    def force_stopped(self) -> PollLoop:
        """The force-stop of an unackable item was sent (whatever its answer): poll at once."""
        self._enter(PollFeed.FORCE_STOPPED)
        return self._next(PollAction.POLL)

    def _enter(self, feed: PollFeed) -> None:
        allowed = _POLL_FEEDS[self.next_action]
        if feed not in allowed:
            raise _illegal(
                feed,
                self.next_action,
                allowed,
                f"to a poll loop whose next action is {self.next_action.value}",
            )

    def _next(self, action: PollAction, delay: float = 0.0, **changes: Any) -> PollLoop:
        return attrs.evolve(self, next_action=action, delay=delay, **changes)
