"""Random interleavings of every Environment call, checked against a deliberately simple reference.

The reference below keeps the items in a plain list in creation order and answers every
question by a linear scan: which item a poll hands out, which leases have lapsed, what the
stats are.  It uses the single-item operations of :class:`~workstate.Work` (tested on their
own in ``test_work.py``), so what is under test here is the environment's bookkeeping: its
indexes, counts, lazy and sliced expiry, and cursors.

After every step: the two agree on every record, on the stats and on the listing; every
record keeps every invariant; no item is lost or duplicated; and no item is held by more than
one worker's valid lease.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from helpers import ACK_LEASE, T0
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    InvalidInputError,
    NotFoundError,
    Profile,
    State,
    Work,
    WorkstateError,
    invariant_violations,
)
from workstate._environment import Environment

US = dt.timedelta(microseconds=1)
WORKERS = ("w1", "w2", "w3", "w4")
LEASED = frozenset({State.STARTING, State.ACTIVE})


class Reference:
    """The environment's rules, written as plainly as possible: lists and linear scans."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.items: list[Work] = []  # creation order; ``delivered_at`` marks a pending delivery
        self.polls: list[tuple[dt.datetime, str]] = []  # every named poll

    def find(self, work_id: str) -> int:
        for i, work in enumerate(self.items):
            if work.id == work_id:
                return i
        raise NotFoundError(f"no work item {work_id!r}", work_id=work_id)

    def advance(self, now: dt.datetime) -> list[Work]:
        changed = []
        for i, work in enumerate(self.items):
            deadline = work.lease_expires_at
            if deadline is not None and now > deadline:
                self.items[i] = work.expire(deadline + US)
                changed.append(self.items[i])
        changed.sort(key=lambda w: w.touched_at)
        return changed

    def deliverable(self, i: int, now: dt.datetime, reclaim: int) -> bool:
        """Queued, and never handed out or handed out at least ``reclaim`` ms ago (the
        reclaiming poll's window, boundary inclusive)."""
        work = self.items[i]
        if work.state is not State.QUEUED:
            return False
        return work.delivered_at is None or now - work.delivered_at >= dt.timedelta(
            milliseconds=reclaim
        )

    def create(self, work: Work) -> None:
        self.items.append(work)

    def poll(self, now: dt.datetime, worker: str | None, reclaim: int) -> Work | None:
        if worker is not None:
            self.polls.append((now, worker))
        for i in range(len(self.items)):
            if self.deliverable(i, now, reclaim):
                self.items[i] = self.items[i].deliver(now, worker_id=worker)
                return self.items[i]
        return None

    def apply(self, work_id: str, op: Callable[[Work], Work]) -> Work:
        i = self.find(work_id)
        new = op(self.items[i])  # raises before anything changes
        self.items[i] = new
        return new

    def stats(self, now: dt.datetime) -> tuple[int, int, dt.datetime | None, int | None]:
        queued = [i for i, w in enumerate(self.items) if w.state is State.QUEUED]
        window = self.profile.default_reclaim_older_than_ms
        depth = sum(1 for i in queued if self.deliverable(i, now, window))
        oldest = min((self.items[i].created_at for i in queued), default=None)
        recent = {w for t, w in self.polls if t >= now - dt.timedelta(seconds=30)}
        return depth, len(queued) - depth, oldest, len(recent) if self.polls else None


def at(work: Work, now: dt.datetime) -> dt.datetime:
    """When an operation on ``work`` happens: at ``now``, unless a heartbeat on a clock
    standing still put the item's own time a few microseconds ahead (tokens never repeat)."""
    return max(now, work.touched_at)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)`` or ``("error", (class, status, type))``."""
    try:
        return "ok", call()
    except WorkstateError as exc:
        return "error", (type(exc).__name__, exc.status, exc.error_type)


TIME_STEPS = st.sampled_from(
    [0, 1e-6, 0.001, 0.5, 1, 4.999999, 5, 5.000001, 9, 10, 30, 30.000001, 60, 120, 600]
)


class EnvironmentMachine(RuleBasedStateMachine):
    """Drive an Environment and the reference with the same calls, and compare."""

    @initialize(profile=st.sampled_from([ANTHROPIC, QODER, ACK_LEASE]), items=st.integers(0, 4))
    def setup(self, profile: Profile, items: int) -> None:
        self.env = Environment("env_stateful", profile=profile)
        self.ref = Reference(profile)
        self.now = T0
        # What each worker believes: (worker, work id) -> (attempt, token it will send).
        self.beliefs: dict[tuple[str, str], tuple[int, str]] = {}
        for _ in range(items):
            self.ref.create(self.env.create(self.now))

    # ---------------------------------------------------------------- helpers
    def ids(self) -> list[str]:
        return [w.id for w in self.ref.items]

    def pick(self, data: st.DataObject, prefer: Callable[[Work], bool] | None = None) -> str:
        """Mostly an existing item (one that ``prefer`` likes, when there is one)."""
        ids = self.ids()
        liked = [w.id for w in self.ref.items if prefer is not None and prefer(w)]
        roll = data.draw(st.integers(0, 9), label="roll")
        if roll == 0 or not ids:
            return "work_unknown"
        pool = liked if liked and roll > 3 else ids
        return data.draw(st.sampled_from(pool), label="work_id")

    def same(self, env_call: Callable[[], Any], ref_call: Callable[[], Any]) -> tuple[str, Any]:
        got, want = outcome(env_call), outcome(ref_call)
        assert got == want
        event(f"{got[0]} {got[1][:2] if got[0] == 'error' else ''}")
        return got

    def ref_op(self, work_id: str, op: Callable[[Work], Any]) -> Callable[[], Any]:
        def call() -> Any:
            return op(self.ref.items[self.ref.find(work_id)])

        return call

    # ---------------------------------------------------------------- rules
    @rule(step=TIME_STEPS, sweep=st.booleans())
    def time_passes(self, step: float, sweep: bool) -> None:
        self.now = self.now + dt.timedelta(seconds=step)
        if sweep:  # here, before the invariants look (and so apply due expiries lazily)
            expired = self.env.expire_due(self.now)
            assert expired == self.ref.advance(self.now)
            if expired:
                event("expire_due expired something")

    @rule()
    def expire_due_again(self) -> None:
        assert self.env.expire_due(self.now) == self.ref.advance(self.now) == []

    @rule(
        metadata=st.sampled_from([None, {"k": "v"}, {"k": 5}]),
        secret=st.sampled_from([None, "s3cret"]),
    )
    def create(self, metadata: dict[str, Any] | None, secret: str | None) -> None:
        self.ref.advance(self.now)
        kind, got = outcome(lambda: self.env.create(self.now, metadata=metadata, secret=secret))
        if metadata == {"k": 5}:
            assert (kind, got) == ("error", ("InvalidInputError", 400, "invalid_request_error"))
            return
        assert kind == "ok"
        assert got.id not in self.ids()
        # The ids are the environment's to choose; everything else must be a plain create.
        want = Work.create(
            id=got.id,
            environment_id="env_stateful",
            now=self.now,
            session_id=got.data.id,
            metadata=metadata,
            secret=secret,
            profile=self.ref.profile,
        )
        assert got == want
        self.ref.create(want)

    @rule(
        worker=st.sampled_from([*WORKERS, None]),
        reclaim=st.sampled_from([None, 0, 1, 1000, 5000, 20_000]),
        block=st.sampled_from([None, 1, 999]),
    )
    def poll(self, worker: str | None, reclaim: int | None, block: int | None) -> None:
        self.ref.advance(self.now)
        if reclaim is not None and reclaim < self.env.profile.min_reclaim_older_than_ms:
            kind, err = outcome(
                lambda: self.env.poll(
                    self.now, worker_id=worker, reclaim_older_than_ms=reclaim, block_ms=block
                )
            )
            assert (kind, err) == ("error", ("InvalidInputError", 400, "invalid_request_error"))
            return
        window = self.env.profile.default_reclaim_older_than_ms if reclaim is None else reclaim
        got = self.env.poll(
            self.now, worker_id=worker, reclaim_older_than_ms=reclaim, block_ms=block
        )
        assert got == self.ref.poll(self.now, worker, window)
        if got is not None and got.attempt:
            event("poll handed out an item whose lease had expired")
        elif got is not None and got.version > 2:
            event("poll handed out an item again")

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def poll_then_ack(self, worker: str, data: st.DataObject) -> None:
        """The usual worker loop: poll, then ack what came (a separate step may come between)."""
        self.poll(worker, None, None)
        self.ack(data, worker)

    @rule(data=st.data(), worker=st.sampled_from([*WORKERS, None]))
    def ack(self, data: st.DataObject, worker: str | None) -> None:
        self.ref.advance(self.now)
        work_id = self.pick(data, lambda w: w.state is State.QUEUED and w.delivered_to == worker)
        kind, got = self.same(
            lambda: self.env.ack(work_id, self.now, worker_id=worker),
            lambda: self.ref.apply(work_id, lambda w: w.ack(at(w, self.now), worker_id=worker)),
        )
        if kind == "ok" and worker is not None and got.state in LEASED:
            known = self.beliefs.get((worker, work_id))
            if known is None or known[0] != got.attempt:
                self.beliefs[(worker, work_id)] = (got.attempt, NO_HEARTBEAT)

    @rule(
        data=st.data(),
        worker=st.sampled_from(WORKERS),
        ttl=st.sampled_from([None, 1, 10, 30, 10_000]),
    )
    def heartbeat(
        self, data: st.DataObject, worker: str, ttl: int | None, work_id: str | None = None
    ) -> None:
        self.ref.advance(self.now)
        if work_id is None:
            work_id = self.pick(data, lambda w: (worker, w.id) in self.beliefs)
        # A well-behaved worker sends NO_HEARTBEAT first, then echoes the last token.
        _, token = self.beliefs.get((worker, work_id), (0, NO_HEARTBEAT))

        def on_ref(w: Work) -> Any:
            return w.heartbeat(
                at(w, self.now), expected_last_heartbeat=token, desired_ttl_seconds=ttl
            )

        def ref_call() -> Any:
            new, result = self.ref_op(work_id, on_ref)()
            self.ref.apply(work_id, lambda _: new)
            return result

        kind, result = self.same(
            lambda: self.env.heartbeat(
                work_id, self.now, expected_last_heartbeat=token, desired_ttl_seconds=ttl
            ),
            ref_call,
        )
        if kind == "ok" and result.lease_extended:
            attempt = self.ref.items[self.ref.find(work_id)].attempt
            self.beliefs[(worker, work_id)] = (attempt, result.last_heartbeat)
        elif kind == "error" or result.state not in LEASED:
            self.beliefs.pop((worker, work_id), None)  # the worker gives the lease up

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def worker_heartbeats_everything_it_holds(self, worker: str, data: st.DataObject) -> None:
        """A worker's heartbeat loop: one heartbeat per lease it believes it holds."""
        for held_worker, work_id in sorted(self.beliefs):
            if held_worker == worker:
                self.heartbeat(data, worker, None, work_id=work_id)

    @rule(data=st.data(), force=st.booleans())
    def stop(self, data: st.DataObject, force: bool) -> None:
        self.ref.advance(self.now)
        work_id = self.pick(data)
        self.same(
            lambda: self.env.stop(work_id, self.now, force=force),
            lambda: self.ref.apply(work_id, lambda w: w.stop(at(w, self.now), force=force)),
        )

    @rule(
        data=st.data(),
        patch=st.sampled_from([{"a": "1"}, {"a": None}, {"b": "2", "a": "3"}, {"x": 1}, {}]),
    )
    def update_metadata(self, data: st.DataObject, patch: dict[str, Any]) -> None:
        self.ref.advance(self.now)
        work_id = self.pick(data)
        self.same(
            lambda: self.env.update_metadata(work_id, self.now, patch),
            lambda: self.ref.apply(work_id, lambda w: w.update_metadata(at(w, self.now), patch)),
        )

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        self.ref.advance(self.now)
        work_id = self.pick(data)
        self.same(lambda: self.env.get(work_id, self.now), self.ref_op(work_id, lambda w: w))

    @precondition(lambda self: self.env.latest_now is not None)
    @rule(call=st.sampled_from(["create", "poll", "get", "stats", "list", "expire_due"]))
    def going_back_in_time_is_refused(self, call: str) -> None:
        earlier = self.env.latest_now - US  # type: ignore[operator]
        calls: dict[str, Callable[[], Any]] = {
            "create": lambda: self.env.create(earlier),
            "poll": lambda: self.env.poll(earlier, worker_id="w1"),
            "get": lambda: self.env.get("work_unknown", earlier),
            "stats": lambda: self.env.stats(earlier),
            "list": lambda: self.env.list(earlier),
            "expire_due": lambda: self.env.expire_due(earlier),
        }
        with pytest.raises(InvalidInputError) as info:
            calls[call]()
        assert (info.value.status, info.value.key) == (400, "now")

    # ---------------------------------------------------------------- invariants
    def listing(self) -> list[Work]:
        out: list[Work] = []
        page = None
        while True:
            got = self.env.list(self.now, limit=3, page=page)
            out.extend(got.data)
            page = got.next_page
            if page is None:
                return out

    @invariant()
    def agrees_with_the_reference(self) -> None:
        self.ref.advance(self.now)
        listed = self.listing()
        assert listed == self.ref.items
        stats = self.env.stats(self.now)
        assert (
            stats.depth,
            stats.pending,
            stats.oldest_queued_at,
            stats.workers_polling,
        ) == self.ref.stats(self.now)

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        ids = [w.id for w in self.listing()]
        assert len(ids) == len(set(ids)) == len(self.env)
        assert all(i in self.env for i in ids)
        queued = sum(1 for w in self.ref.items if w.state is State.QUEUED)
        stats = self.env.stats(self.now)
        assert stats.depth + stats.pending == queued

    @invariant()
    def every_record_is_sound(self) -> None:
        for work in self.ref.items:
            assert invariant_violations(work) == [], work
            if work.attempt and work.state is State.QUEUED:
                event("an item went back to the queue after its lease expired")
            if work.attempt and work.state is State.STOPPED and work.stop_requested_at:
                event("a stop was requested")

    @invariant()
    def at_most_one_valid_lease_per_item(self) -> None:
        for work in self.ref.items:
            if work.state not in LEASED or work.last_heartbeat is None:
                continue
            holders = [
                worker
                for (worker, work_id), (attempt, token) in self.beliefs.items()
                if work_id == work.id and attempt == work.attempt and token == work.last_heartbeat
            ]
            assert len(holders) <= 1, (work, holders)


_THOROUGH = settings.default.max_examples > 100  # HYPOTHESIS_PROFILE=thorough
EnvironmentMachine.TestCase.settings = settings(
    settings.default,
    max_examples=settings.default.max_examples if _THOROUGH else 50,
    stateful_step_count=60 if _THOROUGH else 40,
    deadline=None,
)
TestEnvironmentMachine = EnvironmentMachine.TestCase
