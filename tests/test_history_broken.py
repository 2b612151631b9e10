"""Deliberately broken servers: their concurrent histories, recorded through HTTP, are illegal.

Each server is a small Starlette app over the core's :class:`~workstate.Work` records with one
bug.  Where the bug needs a race, the server forces the interleaving itself (a rendezvous inside
its handlers, with generous safety timeouts), so no test depends on timing luck.  The clients
are the official SDK over the recording transport, in real threads, on a loopback socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import attrs
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from workstate import ANTHROPIC, NO_HEARTBEAT, StopResponse, SystemClock, Work, WorkstateError
from workstate._history import HistoryCall
from workstate._linearize import HistoryReport, check_history
from workstate.server import serve_in_thread
from workstate.testing import HistoryRecorder

# The tiny servers answer a stop with the item (200), as a profile with stop_response "item" says.
ITEM_STOPS = attrs.evolve(ANTHROPIC, name="anthropic-item-stops", stop_response=StopResponse.ITEM)

ENV = "env_broken"
_PATIENCE = 5.0  # seconds a forced rendezvous waits before giving up (never reached when sound)


class TinyServer:
    """A correct little work API over ``Work`` records; subclasses add one bug each."""

    def __init__(self) -> None:
        self.items: dict[str, Work] = {}
        self.windows: dict[str, dt.datetime] = {}
        self.clock = SystemClock()
        self.last = self.clock.now()
        self.count = 0
        base = "/v1/environments/{env}/work"
        self.app = Starlette(
            routes=[
                Route("/mock/environments/{env}/work", self.create, methods=["POST"]),
                Route(base + "/poll", self.poll, methods=["GET"]),
                Route(base + "/{id}", self.get, methods=["GET"]),
                Route(base + "/{id}/ack", self.ack, methods=["POST"]),
                Route(base + "/{id}/heartbeat", self.heartbeat, methods=["POST"]),
                Route(base + "/{id}/stop", self.stop, methods=["POST"]),
            ],
            exception_handlers={WorkstateError: self.error},
        )

    def now(self) -> dt.datetime:
        self.last = max(self.last, self.clock.now())
        return self.last

    async def error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WorkstateError)
        return JSONResponse(exc.to_json(), status_code=exc.status)

    async def create(self, request: Request) -> Response:
        self.count += 1
        work_id = f"work_{self.count}"
        work = Work.create(id=work_id, environment_id=ENV, session_id="sesn_1", now=self.now())
        self.items[work_id] = work
        return JSONResponse(work.to_json())

    def deliverable(self, work_id: str, now: dt.datetime) -> bool:
        until = self.windows.get(work_id)
        return self.items[work_id].state.value == "queued" and (until is None or until <= now)

    async def poll(self, request: Request) -> Response:
        now = self.now()
        for work_id, work in self.items.items():
            if self.deliverable(work_id, now):
                self.items[work_id] = work.deliver(now)
                self.windows[work_id] = now + dt.timedelta(seconds=5)
                return JSONResponse(self.items[work_id].to_json(include_secret=True))
        return JSONResponse(None)

    async def get(self, request: Request) -> Response:
        return JSONResponse(self.items[request.path_params["id"]].to_json())

    async def ack(self, request: Request) -> Response:
        work_id = request.path_params["id"]
        self.items[work_id] = self.items[work_id].ack(self.now())
        return JSONResponse(self.items[work_id].to_json())

    def beat_args(self, request: Request) -> dict[str, Any]:
        ttl = request.query_params.get("desired_ttl_seconds")
        return {
            "expected_last_heartbeat": request.query_params.get("expected_last_heartbeat"),
            "desired_ttl_seconds": None if ttl is None else int(ttl),
        }

    async def heartbeat(self, request: Request) -> Response:
        work_id = request.path_params["id"]
        work, beat = self.items[work_id].heartbeat(self.now(), **self.beat_args(request))
        self.items[work_id] = work
        return JSONResponse(beat.to_json())

    async def stop(self, request: Request) -> Response:
        work_id = request.path_params["id"]
        force = (await request.json()).get("force", False)
        self.items[work_id] = self.items[work_id].stop(self.now(), force=force)
        return JSONResponse(self.items[work_id].to_json())


class Rendezvous:
    """Lets ``n`` coroutines wait until all of them have arrived (on the server's loop)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived = 0
        self.event: asyncio.Event | None = None

    async def wait(self) -> None:
        if self.event is None:
            self.event = asyncio.Event()
        self.arrived += 1
        if self.arrived >= self.n:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), _PATIENCE)


class AckWithoutStateCheck(TinyServer):
    """Reads the item, lets the other ack in, then writes its own ack over whatever is there."""

    def __init__(self) -> None:
        super().__init__()
        self.race = Rendezvous(2)

    async def ack(self, request: Request) -> Response:
        work_id = request.path_params["id"]
        seen = self.items[work_id]
        await self.race.wait()
        self.items[work_id] = seen.ack(self.now())  # the state it checked is stale by now
        return JSONResponse(self.items[work_id].to_json())


class HeartbeatComparesAfterWriting(TinyServer):
    """Writes the new lease first and only then compares the caller's token."""

    async def heartbeat(self, request: Request) -> Response:
        work_id = request.path_params["id"]
        before = self.items[work_id]
        args = self.beat_args(request)
        now = self.now()
        work, beat = before.heartbeat(now, desired_ttl_seconds=args["desired_ttl_seconds"])
        self.items[work_id] = work  # written...
        before.heartbeat(now, **args)  # ...then compared: a 412 here leaves the write in place
        return JSONResponse(beat.to_json())


class DoubleDelivery(TinyServer):
    """Hands the oldest queued item to every poll, inside the redelivery window too."""

    def deliverable(self, work_id: str, now: dt.datetime) -> bool:
        return self.items[work_id].state.value == "queued"


class StopLosesToHeartbeat(TinyServer):
    """A heartbeat reads the item, waits for a stop to finish, then writes its stale result."""

    def __init__(self) -> None:
        super().__init__()
        self.beat_read: asyncio.Event | None = None
        self.stopped: asyncio.Event | None = None

    def events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self.beat_read is None or self.stopped is None:
            self.beat_read, self.stopped = asyncio.Event(), asyncio.Event()
        return self.beat_read, self.stopped

    async def heartbeat(self, request: Request) -> Response:
        beat_read, stopped = self.events()
        work_id = request.path_params["id"]
        seen = self.items[work_id]
        now = self.now()
        beat_read.set()
        await asyncio.wait_for(stopped.wait(), _PATIENCE)
        work, beat = seen.heartbeat(now, **self.beat_args(request))
        self.items[work_id] = work  # overwrites the stop that landed in between
        return JSONResponse(beat.to_json())

    async def stop(self, request: Request) -> Response:
        beat_read, stopped = self.events()
        await asyncio.wait_for(beat_read.wait(), _PATIENCE)
        response = await super().stop(request)
        stopped.set()
        return response


# ------------------------------------------------------------------------------ the clients
_OPEN: list[anthropic.Anthropic] = []


@pytest.fixture
def recorder() -> Iterator[HistoryRecorder]:
    yield HistoryRecorder()
    while _OPEN:
        _OPEN.pop().close()


@contextlib.contextmanager
def serve(server: TinyServer) -> Iterator[str]:
    with serve_in_thread(server.app) as url:
        yield url
        while _OPEN:  # close the clients' connections before the server shuts down
            _OPEN.pop().close()


def sdk(recorder: HistoryRecorder, url: str, name: str) -> anthropic.Anthropic:
    client = anthropic.Anthropic(
        base_url=url, api_key="k", max_retries=0, http_client=recorder.http_client(name)
    )
    _OPEN.append(client)
    return client


def concurrently(*actions: Callable[[], object]) -> None:
    """Run the actions in threads that start together; re-raise nothing (answers are recorded)."""
    barrier = threading.Barrier(len(actions))

    def run(action: Callable[[], object]) -> None:
        barrier.wait()
        with contextlib.suppress(anthropic.APIStatusError):  # a refusal is part of the history
            action()

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def create(client: anthropic.Anthropic) -> str:
    answer = client.post(f"/mock/environments/{ENV}/work", cast_to=object, body={})
    assert isinstance(answer, dict)
    return str(answer["id"])


def named(report: HistoryReport, calls: tuple[HistoryCall, ...], op: str) -> list[HistoryCall]:
    """The calls of kind ``op`` that the report names as unorderable."""
    bad = set(report.illegal_calls)
    return [c for c in calls if c.id in bad and c.op == op]


def test_two_acks_both_winning_are_illegal(recorder: HistoryRecorder) -> None:
    with serve(AckWithoutStateCheck()) as url:
        a, b = sdk(recorder, url, "a"), sdk(recorder, url, "b")
        work_id = create(a)
        concurrently(
            lambda: a.beta.environments.work.ack(work_id, environment_id=ENV),
            lambda: b.beta.environments.work.ack(work_id, environment_id=ENV),
        )
    history = recorder.history()
    report = check_history(history, profile=ITEM_STOPS)
    assert report.verdict == "illegal"
    acks = named(report, history.calls, "ack")
    assert {c.client for c in acks} == {"a", "b"}  # both winners are named
    assert "ack" in report.problems[0].explanation


def test_a_heartbeat_that_compares_after_writing_is_illegal(recorder: HistoryRecorder) -> None:
    with serve(HeartbeatComparesAfterWriting()) as url:
        a, b = sdk(recorder, url, "a"), sdk(recorder, url, "b")
        work_id = create(a)
        a.beta.environments.work.ack(work_id, environment_id=ENV)
        first = a.beta.environments.work.heartbeat(
            work_id, environment_id=ENV, expected_last_heartbeat=NO_HEARTBEAT
        )
        token = first.last_heartbeat
        tokens: list[str] = []

        def beat(client: anthropic.Anthropic) -> None:
            answer = client.beta.environments.work.heartbeat(
                work_id, environment_id=ENV, expected_last_heartbeat=token
            )
            tokens.append(answer.last_heartbeat)

        concurrently(lambda: beat(a), lambda: beat(b))
        assert len(tokens) == 1  # one won, one met 412 (after writing)
        with pytest.raises(anthropic.APIStatusError):  # the winner's own token no longer works
            a.beta.environments.work.heartbeat(
                work_id, environment_id=ENV, expected_last_heartbeat=tokens[0]
            )
    history = recorder.history()
    report = check_history(history, profile=ITEM_STOPS)
    assert report.verdict == "illegal"
    beats = named(report, history.calls, "heartbeat")
    assert any(c.outcome == "fail" for c in beats)
    assert beats[-1].input["expected_last_heartbeat"] == tokens[0]


def test_double_delivery_inside_the_window_is_illegal(recorder: HistoryRecorder) -> None:
    with serve(DoubleDelivery()) as url:
        a, b = sdk(recorder, url, "a"), sdk(recorder, url, "b")
        create(a)
        concurrently(
            lambda: a.beta.environments.work.poll(ENV),
            lambda: b.beta.environments.work.poll(ENV),
        )
    history = recorder.history()
    report = check_history(history, profile=ITEM_STOPS)
    assert report.verdict == "illegal"
    polls = named(report, history.calls, "poll")
    assert {c.client for c in polls} == {"a", "b"}
    assert "redelivery window" in report.problems[0].explanation


def test_a_stop_lost_to_a_concurrent_heartbeat_is_illegal(recorder: HistoryRecorder) -> None:
    with serve(StopLosesToHeartbeat()) as url:
        a, b = sdk(recorder, url, "a"), sdk(recorder, url, "b")
        work_id = create(a)
        a.beta.environments.work.ack(work_id, environment_id=ENV)
        concurrently(
            lambda: a.beta.environments.work.heartbeat(
                work_id, environment_id=ENV, expected_last_heartbeat=NO_HEARTBEAT
            ),
            lambda: b.beta.environments.work.stop(work_id, environment_id=ENV),
        )
        assert b.beta.environments.work.retrieve(work_id, environment_id=ENV).state == "active"
    history = recorder.history()
    report = check_history(history, profile=ITEM_STOPS)
    assert report.verdict == "illegal"
    bad = {c.op for c in history.calls if c.id in set(report.illegal_calls)}
    assert {"heartbeat", "stop"} <= bad


def test_the_correct_tiny_server_is_linearizable(recorder: HistoryRecorder) -> None:
    with serve(TinyServer()) as url:
        a, b = sdk(recorder, url, "a"), sdk(recorder, url, "b")
        work_id = create(a)
        concurrently(
            lambda: a.beta.environments.work.poll(ENV),
            lambda: b.beta.environments.work.poll(ENV),
        )
        concurrently(
            lambda: a.beta.environments.work.ack(work_id, environment_id=ENV),
            lambda: b.beta.environments.work.ack(work_id, environment_id=ENV),
        )
        a.beta.environments.work.stop(work_id, environment_id=ENV)
    assert check_history(recorder.history(), profile=ITEM_STOPS).verdict == "ok"
