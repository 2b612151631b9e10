"""The mock server's ASGI application: the work API over HTTP, on top of the Environment.

Theory of operation
-------------------
This is an adapter and holds no lifecycle rules.  A request goes through three steps:

1. *Parse*: the path names the environment and the item; query strings become ints (a 400 names
   the parameter); a JSON body must be an object with known keys.  Range checks (``block_ms``
   1-999, ``limit`` 1-1000, TTLs, tokens, metadata limits) are the core's, not ours.
2. *Call the core under one lock*: read the clock, apply a slice of the leases that fell due
   (:meth:`Environment.expire_due` with ``limit=EXPIRY_SLICE``), make the one call the endpoint
   stands for.  The lock is a
   re-entrant lock held only by synchronous code (never across an ``await``), so the
   event loop serves requests concurrently while no two of them touch an environment at once,
   and a test thread may inspect an environment safely while the server runs in another thread
   (re-entrant, so the documented ``with server.lock: server.environment(...)`` works; since
   no coroutine holds it across an ``await``, re-entry never lets two requests interleave).
3. *Render*: the core's records know their JSON; every :class:`~workstate.WorkstateError`
   knows its status and its envelope.

The calls a worker makes all day are routed by one split of the path and answered directly
(``_dispatch.py``); the rest goes through Starlette's router.  Around it all sits the harness's
middleware (``_harness.py``): a ``request-id`` header on every response (and the same id in
every error envelope), the API key, fault rules, the request journal, and a 500 envelope for
an unexpected exception; the harness also holds reset and inspection.  The one hook it needs
here is in :meth:`MockServer._touch`, which tells it the time handed to the core and the item
as the core found it.

Hostile input is bounded outside this module: ``_limits`` (body and head size, read
deadlines, malformed HTTP in the envelope), ``_render`` (answers that cannot fail to render),
``_disconnect`` (a long poll whose client left), ``_auth`` (an API key that could never match);
strings and ids are checked by the core.  Reads (``_touch(create=False)``) never create an
environment; only a creation and a poll that names its worker do, and a refused one is undone.

Long polls.  A poll with ``block_ms`` that finds nothing registers a future for its environment
(under the lock, so a creation cannot slip between the empty answer and the registration), then
waits for it outside the lock.  Creating an item and moving the manual clock resolve the futures
of the environments concerned (thread-safely, so a creation from a test thread wakes the
server's loop too); the poll then tries again until its time is up.  On the real clock, time
alone also makes items deliverable (a redelivery window ends, a lease lapses); nothing announces
that, so a waiting poll sleeps at most until :meth:`Environment.next_change_at` and then looks
again.  No background task is needed: every request applies the expiries due at its own time.

Time.  The server reads its clock (a :class:`~workstate.SystemClock`, or a
:class:`~workstate.ManualClock` that only ``POST /mock/clock`` moves) and never lets the time it
hands to the core go backwards, even if the system clock does.

State.  The environments live in memory; with ``state=`` a SQLite file keeps them too, and
the server restores them from it at start-up.  The lock is the commit point (see
:mod:`workstate.server._store`): every change made under it is committed before it is
released, so before any answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from workstate._environment import Environment, check_retention
from workstate._errors import InvalidInputError, NotFoundError, WorkstateError
from workstate._profile import ANTHROPIC, Profile, StopResponse, evolve_profile
from workstate._records import WorkData
from workstate._text import excerpt
from workstate._time import (
    ManualClock,
    SystemClock,
    format_time,
    parse_time,
    resume_manual_clock,
)
from workstate._wire import work_data_from_json as _work_data_from_json
from workstate._work import Work
from workstate.server._auth import check_api_key
from workstate.server._disconnect import ClientWatch
from workstate.server._dispatch import Application, Call, Dispatch, Handler, endpoint
from workstate.server._harness import Harness
from workstate.server._limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_READ_TIMEOUT,
    Limits,
    RequestLimits,
    uvicorn_options,
)
from workstate.server._query import int_query
from workstate.server._render import JSONResponse, render_json, render_work, scope_request_id
from workstate.server._session_api import SessionHub
from workstate.server._sessions import Session
from workstate.server._store import CommittingLock, MemoryStore, StateKeeper, Store

if TYPE_CHECKING:  # (loaded with a state file: see _store)
    from workstate.server._sqlite import Saved

__all__ = ["MockServer", "serve_in_thread"]


EXPIRY_SLICE = 16
"""How many lapsed leases a request applies before its own call (``expire_due(limit=...)``):
a mass expiry is spread over the requests that follow, each paying for at most this many,
while every answer already treats a lapsed lease as expired (see ``workstate._environment``)."""

_ENVIRONMENT_ID = re.compile(r"env_[A-Za-z0-9_-]{1,128}", re.ASCII)
# Path segments under .../work that are routes of their own; POST to them is a wrong method,
# not a metadata update of an item called "poll".
_RESERVED_WORK_IDS = {"poll": "GET", "stats": "GET"}

Clock = SystemClock | ManualClock
"""The clocks the server can read."""


# ------------------------------------------------------------------------------ parsing
async def _json_body(call: Call | Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body), with only ``allowed`` keys."""
    raw = await call.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError; too deep a nesting
        raise InvalidInputError(
            f"the request body is not valid JSON: {exc}",
            key="body",
            expected="a JSON object",
            got=raw[:200].decode("utf-8", "replace"),
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"the request body must be a JSON object, got {type(value).__name__}",
            key="body",
            expected="a JSON object",
            got=value,
        )
    for key in value:
        if key not in allowed:
            raise InvalidInputError(
                f"the request body has the unknown key {excerpt(key)}; "
                f"the known keys are {list(allowed)}",
                key=key,
                expected=f"only the keys {list(allowed)}",
                got=key,
            )
    return value


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# ------------------------------------------------------------------------------ the server
class MockServer:
    """A stand-in for the work API: environments, a clock, and the ASGI app serving them.

    ``profile`` answers the questions where providers differ (spec §7); ``clock`` is a
    :class:`~workstate.SystemClock` (the default) or a :class:`~workstate.ManualClock` that only
    ``POST /mock/clock`` (or :meth:`advance` and :meth:`set_time`) moves; with ``api_key`` every
    request must carry it as ``x-api-key`` or ``Authorization: Bearer`` (a key no header could
    carry is refused here, with a 400).  ``max_body_bytes`` bounds a request body (413 beyond);
    ``read_timeout`` bounds, in seconds, how long a request's head may take to arrive and each
    wait for its body (408 beyond; see ``workstate.server._limits``).

    Every ``env_...`` id names an environment, created by the first write that names it (a
    creation, or a poll that names its worker); reads of an environment never used answer as
    an empty one and keep nothing.  Touch an environment only
    through this object's methods, or while holding :attr:`lock`.  ``id_factory`` (given the
    prefix ``work_`` or ``sesn_``) chooses the generated ids, as for
    :class:`~workstate._environment.Environment`.  ``profile_overrides`` changes fields of
    ``profile`` (e.g. ``{"default_ttl_seconds": 2}`` for leases that lapse in seconds; see
    :func:`~workstate._profile.evolve_profile`).

    ``seed`` makes every id, sessions token and request id the server generates, and every
    draw of a probabilistic fault rule, the same from run to run (None: a random seed).  Fault
    rules, the request journal, :meth:`reset` and inspection are on :attr:`harness`.

    ``state`` names a SQLite file that keeps everything across restarts (created if missing;
    ``state_sync`` is ``"normal"`` or ``"full"``, see ``docs/mock-server.md``); the server
    restores what it holds, and a manual clock resumes at the file's last time.  Each
    environment keeps at most ``retain_stopped`` stopped items (the newest; None: all) and
    none stopped more than ``retain_stopped_seconds`` ago (None: no age limit).
    """

    def __init__(
        self,
        *,
        profile: Profile = ANTHROPIC,
        clock: Clock | None = None,
        api_key: str | None = None,
        id_factory: Callable[[str], str] | None = None,
        seed: int | None = None,
        profile_overrides: Mapping[str, Any] | None = None,
        state: str | os.PathLike[str] | None = None,
        state_sync: str = "normal",
        retain_stopped: int | None = 10_000,
        retain_stopped_seconds: float | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        self.profile = evolve_profile(profile, profile_overrides or {})
        """The profile of every environment this server creates (with the overrides applied)."""
        self.clock: Clock = SystemClock() if clock is None else clock
        """The clock the server reads for every request."""
        self.api_key = check_api_key(api_key)
        """The key every request must carry, or None to accept any request."""
        self.limits = Limits(max_body_bytes=max_body_bytes, read_timeout=read_timeout)
        """The bounds on one request's size and read time."""
        self.seed: int = secrets.randbits(64) if seed is None else seed
        """The seed of every id, token, request id and fault draw the server makes."""
        self._random = random.Random(self.seed)
        self._id_factory = id_factory
        # Where a manual clock started, for reset (which puts a new clock there).
        self._clock_start = self.clock.now() if isinstance(self.clock, ManualClock) else None
        self.harness = Harness(self, seed=random.Random(f"{self.seed}:faults").getrandbits(64))
        """Fault rules, the request journal, inspection and health."""
        check_retention(retain_stopped, retain_stopped_seconds)
        self._retention = (retain_stopped, retain_stopped_seconds)
        self._environments: dict[str, Environment] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._last_now: _dt.datetime | None = None
        if state is None:
            store: Store = MemoryStore()
        else:
            from workstate.server._sqlite import SqliteStore  # (only with a file: see _store)

            store = SqliteStore(state, synchronous=state_sync)
        self._keeper = StateKeeper(store, clock=lambda: self._last_now)
        self.lock: CommittingLock = self._keeper.lock
        """Held around every touch of an environment or a session; re-entrant, so a test may
        hold it across several inspections (``with server.lock: server.environment(...)``);
        it commits the state before it is released."""
        self.sessions = SessionHub(self)
        """The scripted sessions of the session items, their tokens and streams."""
        try:
            self._last_now, self._environments = self._keeper.restore(
                self.profile, self._new_environment
            )
            self.sessions.restore()
        except BaseException:
            store.close()
            raise
        if self._last_now is not None:  # a restart: go on from the saved state
            if isinstance(self.clock, ManualClock):
                resume_manual_clock(self.clock, self._last_now)  # it resumes where it was
            # A seeded generator would hand out the tokens of the last run again: draw anew.
            restarts = int(self._keeper.record("server", "restarts") or 0) + 1
            self._keeper.put("server", "restarts", restarts)
            self._random = random.Random(f"{self.seed}:restart {restarts}")
        self.app: Application = self._build_app()
        """The ASGI application."""

    def close(self) -> None:
        """Close the state file, if any (the server must not serve afterwards)."""
        with self.lock:
            self._keeper.flush()  # what changed outside a request, through environment()
            self._keeper.store.close()

    # -------------------------------------------------------------- for programs and tests
    @property
    def manual_clock(self) -> bool:
        """Whether the clock is a manual one (time moves only when told)."""
        return isinstance(self.clock, ManualClock)

    def now(self) -> _dt.datetime:
        """The server's current time (never earlier than a time it already used)."""
        with self.lock:
            return self._now()

    def environment(self, environment_id: str) -> Environment:
        """The environment ``environment_id``, created on first use (404 for a non-``env_`` id).

        The object is live: hold :attr:`lock` while you read it if the server is serving.
        """
        with self.lock:
            env = self._environment(environment_id)
            self._keeper.watch(environment_id, env)  # the caller may change it outside a request
            return env

    def environment_ids(self) -> list[str]:
        """The ids of the environments used so far, in order of first use."""
        with self.lock:
            return list(self._environments)

    def create_work(
        self,
        environment_id: str,
        *,
        data: WorkData | None = None,
        metadata: Mapping[str, str] | None = None,
        secret: str | None = None,
        work_id: str | None = None,
        session: Mapping[str, Any] | None = None,
    ) -> Work:
        """Queue a new item, as ``POST /mock/environments/{environment_id}/work`` does.

        Without ``data`` the item is about a new session with a generated id.  A session item
        gets a scripted session: ``session`` is ``{"script": [...], "status": ...}`` (see
        ``docs/mock-server.md``); without it the session ends its turn as soon as a worker
        attaches.  Without ``secret`` every delivery mints one the SDK understands.
        """
        with self.lock, self._writing(environment_id, create=True) as (env, now):
            kind = "session" if data is None else data.type
            parsed = self.sessions.check_new(session, kind, None if data is None else data.id)
            work = env.create(now, data=data, metadata=metadata, secret=secret, work_id=work_id)
            self.sessions.add(work, parsed)
            self._wake(environment_id)
            return work

    def session(self, session_id: str) -> Session:
        """The scripted session ``session_id`` as it is now (404 when there is none)."""
        with self.lock:
            return self.sessions.session(session_id)

    def advance(self, seconds: float) -> _dt.datetime:
        """Move the manual clock forward by ``seconds`` and apply the leases that fell due."""
        with self.lock:
            clock = self._manual()
            clock.advance(seconds)
            return self._after_clock_moved()

    def set_time(self, now: _dt.datetime) -> _dt.datetime:
        """Move the manual clock to ``now`` (never backwards) and apply the leases that fell due."""
        with self.lock:
            clock = self._manual()
            clock.set(now)
            return self._after_clock_moved()

    def new_request_id(self) -> str:
        """A fresh ``request-id`` (from the seeded generator)."""
        return f"req_{self._random.getrandbits(96):024x}"

    def reset(self) -> None:
        """Start afresh: no items, sessions, fault rules or journal entries, the clock at its
        start, and ids and draws as from a new server with the same seed."""
        with self.lock:
            if self._clock_start is not None:
                self.clock = ManualClock(self._clock_start)
            self._last_now = None
            self._environments.clear()
            self._keeper.clear()  # the state file starts afresh too
            self.sessions.reset()
            self._random = random.Random(self.seed)
            for environment_id in list(self._waiters):
                self._wake(environment_id)  # a waiting long poll looks again, at nothing
        self.harness.reset()

    def uvicorn_options(self) -> dict[str, Any]:
        """The ``uvicorn.Config`` keyword arguments that enforce :attr:`limits` (and answer
        malformed HTTP in the API's envelope); :func:`serve_in_thread` and ``serve`` use them."""
        return uvicorn_options(self.limits, self.new_request_id)

    # -------------------------------------------------------------- internals (under the lock)
    def _now(self) -> _dt.datetime:
        now = self.clock.now()
        last = self._last_now
        if last is not None and now < last:
            now = last  # a system clock stepped back; the core must never see time reverse
        self._last_now = now
        return now

    def _environment(self, environment_id: str) -> Environment:
        env = self._environments.get(environment_id)
        if env is None:
            if _ENVIRONMENT_ID.fullmatch(environment_id) is None:
                raise NotFoundError(
                    f"environment {excerpt(environment_id)} not found; the mock server serves "
                    "every id of the form env_<letters, digits, _ or ->",
                    error_code=self.profile.environment_not_found_error_code,
                )
            env = self._environments[environment_id] = self._new_environment(environment_id)
        self._keeper.touched(environment_id, env)  # its changes go in this hold's commit
        return env

    def _new_environment(self, environment_id: str, saved: Saved | None = None) -> Environment:
        factory, (count, seconds) = self._id_factory, self._retention
        # The id generator's seed is kept with the state, so ids go on as they would have.
        seed = self._keeper.record("environment_seed", environment_id)
        if seed is None and factory is None:
            seed = self._random.getrandbits(64)
            self._keeper.put("environment_seed", environment_id, seed)
        if saved is None:
            return Environment(
                environment_id,
                profile=self.profile,
                id_factory=factory,
                seed=seed,
                retain_stopped=count,
                retain_stopped_seconds=seconds,
                track_changes=self._keeper.store.durable,
                on_drop=self.sessions.item_left,
            )
        return Environment.restore(
            environment_id,
            now=saved.now,
            state=saved.state,
            items=saved.items,
            profile=self.profile,
            id_factory=factory,
            seed=seed,
            retain_stopped=count,
            retain_stopped_seconds=seconds,
            track_changes=self._keeper.store.durable,
            on_drop=self.sessions.item_left,
        )

    def _touch(
        self, environment_id: str, *, create: bool = True
    ) -> tuple[Environment, _dt.datetime]:
        """The environment and the time, with every lease that fell due applied.

        With ``create=False`` (a read) an environment never used is answered by an empty one
        that is not kept, so reads of unseen ids cost no memory.
        """
        if not create and environment_id not in self._environments:
            if _ENVIRONMENT_ID.fullmatch(environment_id) is None:
                self._environment(environment_id)  # the 404 for an id not of the form env_...
            env = Environment(environment_id, profile=self.profile)
            now = self._now()
        else:
            env = self._environment(environment_id)
            now = self._now()
            if env.expire_due(now, limit=EXPIRY_SLICE):
                self._wake(environment_id)  # expired items are back in the queue
        self.harness.note_core_call(env, now)
        return env, now

    def _writing(
        self, environment_id: str, *, create: bool
    ) -> contextlib.AbstractContextManager[tuple[Environment, _dt.datetime]]:
        """:meth:`_touch`, and a refused first write keeps no environment behind."""
        if create and environment_id not in self._environments:
            return self._first_write(environment_id)
        # Nothing to undo (a kept environment, or a read): no generator to run, which cost a
        # poll more than the rest of this.
        return contextlib.nullcontext(self._touch(environment_id, create=create))

    @contextlib.contextmanager
    def _first_write(self, environment_id: str) -> Iterator[tuple[Environment, _dt.datetime]]:
        # A new environment draws its id seed from the server's generator: a refused first
        # write puts the draw back, so it leaves the seeded sequence of ids as it was.
        drawn = self._random.getstate()
        touched = self._touch(environment_id, create=True)
        try:
            yield touched
        except BaseException:
            del self._environments[environment_id]
            self._random.setstate(drawn)
            self._keeper.discard(environment_id, ("environment_seed", environment_id))
            raise

    def _wake(self, environment_id: str) -> None:
        for waiter in self._waiters.pop(environment_id, ()):
            # A creation may come from another thread than the waiter's loop.
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    def _manual(self) -> ManualClock:
        clock = self.clock
        if not isinstance(clock, ManualClock):
            raise WorkstateError(
                "the server runs on the real clock, which cannot be moved; start it with "
                "--clock manual (or MockServer(clock=ManualClock(...))) to move time by hand",
                status=409,
                error_type=self.profile.conflict_error_type,
            )
        return clock

    def _after_clock_moved(self) -> _dt.datetime:
        now = self._now()
        for environment_id, env in self._environments.items():
            env.expire_due(now, limit=EXPIRY_SLICE)
            self._keeper.touched(environment_id, env)
        for environment_id in list(self._waiters):
            self._wake(environment_id)  # reclaim windows may have passed too
        return now

    # -------------------------------------------------------------- the application
    def _build_app(self) -> Application:
        work = "/v1/environments/{environment_id}/work"
        item = work + "/{work_id}"
        routes = [
            Route(work + "/poll", endpoint(self._poll), methods=["GET"]),
            Route(work + "/stats", endpoint(self._stats), methods=["GET"]),
            Route(work, endpoint(self._list), methods=["GET"]),
            Route(item, endpoint(self._item), methods=["GET", "POST"]),
            Route(item + "/ack", endpoint(self._ack), methods=["POST"]),
            Route(item + "/heartbeat", endpoint(self._heartbeat), methods=["POST"]),
            Route(item + "/stop", endpoint(self._stop), methods=["POST"]),
            Route(
                "/mock/environments/{environment_id}/work",
                endpoint(self._mock_create),
                methods=["POST"],
            ),
            Route("/mock/clock", self._mock_clock, methods=["GET", "POST"]),
            *self.sessions.routes(),
            *self.harness.routes(),
        ]
        # The router answers what the dispatch leaves to it (a trailing slash is an enveloped
        # 404, not a 307); its exception middleware renders the envelopes.
        router = Router(routes, redirect_slashes=False, default=_no_route)
        handlers = {WorkstateError: _render_error, HTTPException: _render_http_exception}
        fallback = ExceptionMiddleware(router, handlers=handlers)
        # The calls a worker makes all day skip the router (see _dispatch); the operation
        # names are the journal's, so each stands for one method and path shape.
        direct: dict[str, Handler] = {
            "poll": self._poll,
            "stats": self._stats,
            "list": self._list,
            "get": self._get,
            "update": self._update,
            "ack": self._ack,
            "heartbeat": self._heartbeat,
            "stop": self._stop,
            "create": self._mock_create,
        }
        app: ASGIApp = Dispatch(direct, fallback)
        return Application(
            RequestLimits(app, self.limits),
            self.harness,
            routes,
            handlers=direct,
            limits=self.limits,
        )

    async def _poll(self, call: Call) -> bytes:
        if call.method == "HEAD":  # Starlette adds HEAD to GET routes; a poll is no read
            raise HTTPException(405, headers={"Allow": "GET"})
        block_ms = int_query(call, "block_ms")
        reclaim = int_query(call, "reclaim_older_than_ms")
        worker_id = call.header(b"anthropic-worker-id") or None
        watch = ClientWatch(call.scope, call.receive)  # a client that leaves mid-wait must
        try:  # not claim an item
            return await self._poll_until(call, worker_id, block_ms, reclaim, watch)
        finally:
            watch.close()

    async def _poll_until(
        self,
        call: Call,
        worker_id: str | None,
        block_ms: int | None,
        reclaim: int | None,
        watch: ClientWatch,
    ) -> bytes:
        environment_id = call.environment_id
        deadline: float | None = None
        while True:
            if await watch.gone():  # right before delivering: a poll nobody awaits takes nothing
                return _NULL
            with self.lock:
                # A poll that names its worker is recorded for the stats: it is a write.
                with self._writing(environment_id, create=worker_id is not None) as (env, now):
                    work = env.poll(
                        now, worker_id=worker_id, reclaim_older_than_ms=reclaim, block_ms=block_ms
                    )
                if work is not None:
                    return render_work(work, self.sessions.delivery_secret(work, call.base_url))
                loop = asyncio.get_running_loop()
                if deadline is None:
                    deadline = loop.time() + (block_ms or 0) / 1000
                wait = deadline - loop.time()
                if wait <= 0:
                    return _NULL  # the literal null: an empty body breaks the SDK
                change = env.next_change_at(reclaim_older_than_ms=reclaim)
                if change is not None and not self.manual_clock:
                    wait = min(wait, max((change - now).total_seconds(), 0.001))
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(environment_id, set()).add(waiter)
            try:
                await watch.wait(waiter, wait)
            finally:
                with self.lock:
                    waiting = self._waiters.get(environment_id)
                    if waiting is not None:
                        waiting.discard(waiter)
                        if not waiting:  # no empty sets left behind for ids polled once
                            del self._waiters[environment_id]

    async def _ack(self, call: Call) -> bytes:
        work_id = _work_id(call)
        worker_id = call.header(b"anthropic-worker-id") or None
        with self.lock:
            env, now = self._touch(call.environment_id, create=False)
            work = env.ack(work_id, now, worker_id=worker_id)
        return render_work(work)

    async def _heartbeat(self, call: Call) -> bytes:
        work_id = _work_id(call)
        ttl = int_query(call, "desired_ttl_seconds")
        token = None
        if call.scope.get("query_string"):  # (parsing an empty query costs a few µs)
            token = call.query_params.get("expected_last_heartbeat")
        with self.lock:
            env, now = self._touch(call.environment_id, create=False)
            result = env.heartbeat(
                work_id, now, expected_last_heartbeat=token, desired_ttl_seconds=ttl
            )
        return render_json(result.to_json())

    async def _stop(self, call: Call) -> bytes | None:
        work_id = _work_id(call)
        body = await _json_body(call, ("force",))
        force = body.get("force", False)  # the core checks it is a boolean
        with self.lock:
            env, now = self._touch(call.environment_id, create=False)
            work = env.stop(work_id, now, force=force)
        if self.profile.stop_response is StopResponse.NO_CONTENT:
            self.harness.note_unshown_item(work)  # the journal still records what it did
            return None  # 204: what the deployed API answers (divergences.md)
        return render_work(work)

    async def _item(self, call: Call) -> bytes:
        # One route for both methods, so that a wrong method's 405 lists both in Allow.
        if call.method == "POST":
            return await self._update(call)
        return await self._get(call)

    async def _get(self, call: Call) -> bytes:
        work_id = _work_id(call)
        with self.lock:
            env, now = self._touch(call.environment_id, create=False)
            work = env.get(work_id, now)
        return render_work(work)

    async def _update(self, call: Call) -> bytes:
        work_id = _work_id(call)
        if work_id in _RESERVED_WORK_IDS:
            raise HTTPException(405, headers={"Allow": _RESERVED_WORK_IDS[work_id]})
        body = await _json_body(call, ("metadata",))
        patch = body.get("metadata", {})  # omitted: keep the metadata as it is
        with self.lock:
            env, now = self._touch(call.environment_id, create=False)
            work = env.update_metadata(work_id, now, patch)
        return render_work(work)

    async def _list(self, call: Call) -> bytes:
        limit = int_query(call, "limit")
        page = call.query_params.get("page") if call.scope.get("query_string") else None
        with self.lock:
            env, now = self._touch(call.environment_id, create=False)
            if limit is None:
                listing = env.list(now, page=page)
            else:
                listing = env.list(now, limit=limit, page=page)
        return render_json(listing.to_json())

    async def _stats(self, call: Call) -> bytes:
        with self.lock:
            env, now = self._touch(call.environment_id, create=False)
            stats = env.stats(now)
        return render_json(stats.to_json())

    async def _mock_create(self, call: Call) -> bytes:
        body = await _json_body(call, ("data", "metadata", "secret", "work_id", "session"))
        data = _work_data_from_json(body["data"]) if "data" in body else None
        work = self.create_work(
            call.environment_id,
            data=data,
            metadata=body.get("metadata"),
            secret=body.get("secret"),
            work_id=body.get("work_id"),
            session=body.get("session"),
        )
        return render_work(work)

    async def _mock_clock(self, request: Request) -> Response:
        if request.method != "POST":  # GET, and the HEAD Starlette adds to it
            return JSONResponse(self._clock_json(self.now()))
        body = await _json_body(request, ("advance_seconds", "now"))
        if len(body) != 1:
            raise InvalidInputError(
                'POST /mock/clock takes exactly one of {"advance_seconds": n} and '
                f'{{"now": "<RFC 3339>"}}, got {sorted(body)}',
                key="body",
                expected='{"advance_seconds": n} or {"now": "<RFC 3339>"}',
                got=body,
            )
        if "now" in body:
            now = self.set_time(parse_time(body["now"], key="now"))
        else:
            now = self.advance(body["advance_seconds"])  # the clock checks the number
        return JSONResponse(self._clock_json(now))

    def _clock_json(self, now: _dt.datetime) -> dict[str, Any]:
        return {"now": format_time(now), "clock": "manual" if self.manual_clock else "real"}


_NULL = b"null"


async def _no_route(scope: Scope, receive: Receive, send: Send) -> None:
    raise HTTPException(404)  # rendered in the envelope by the exception middleware


def _work_id(call: Call) -> str:
    assert call.work_id is not None  # the routes of these handlers all name an item
    return call.work_id


# ------------------------------------------------------------------------------ rendering
async def _render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WorkstateError)
    return JSONResponse(
        exc.to_json(request_id=scope_request_id(request.scope)), status_code=exc.status
    )


async def _render_http_exception(request: Request, exc: Exception) -> Response:
    """The router's own 404 and 405, in the API's envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        path = request.url.path
        hint = "; the API's paths have no trailing slash" if path.endswith("/") else ""
        error = WorkstateError(
            f"no such endpoint: {request.method} {excerpt(path)}{hint}",
            status=404,
            error_type="not_found_error",
        )
    elif exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        error = WorkstateError(
            f"method {excerpt(request.method)} is not allowed on {excerpt(request.url.path)}; "
            f"allowed: {allow}",
            status=405,
            error_type="invalid_request_error",
        )
    else:  # pragma: no cover - the router raises nothing else
        error = WorkstateError(exc.detail, status=exc.status_code)
    return JSONResponse(
        error.to_json(request_id=scope_request_id(request.scope)),
        status_code=error.status,
        headers=exc.headers,
    )


# ------------------------------------------------------------------------------ serving
def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (``port=0``: an ephemeral port)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket) -> str:
    """``http://host:port`` for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@contextlib.contextmanager
def serve_in_thread(
    app: ASGIApp | MockServer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    startup_timeout: float = 10.0,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yield its base URL; stop it on exit.

    ``port=0`` (the default) picks a free ephemeral port.  Meant for test fixtures::

        with serve_in_thread(MockServer()) as url:
            client = anthropic.Anthropic(base_url=url, api_key="test")
    """
    options = uvicorn_options(Limits(), lambda: f"req_{secrets.token_hex(12)}")
    if isinstance(app, MockServer):
        options = app.uvicorn_options()
        app = app.app
    sock = bind(host, port)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=5,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="workstate-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the mock server did not start; see the log")
            time.sleep(0.005)
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()
