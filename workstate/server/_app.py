"""The mock server's ASGI application: the work API over HTTP, on top of the Environment.

Theory of operation
-------------------
This is an adapter and holds no lifecycle rules.  A request goes through three steps:

1. *Parse*: the path names the environment and the item; query strings become ints (a 400 names
   the parameter); a JSON body must be an object with known keys.  Range checks (``block_ms``
   1-999, ``limit`` 1-1000, TTLs, tokens, metadata limits) are the core's, not ours.
2. *Call the core under one lock*: read the clock, apply the leases that fell due
   (:meth:`Environment.expire_due`), make the one call the endpoint stands for.  The lock is a
   :class:`threading.RLock` held only by synchronous code (never across an ``await``), so the
   event loop serves requests concurrently while no two of them touch an environment at once,
   and a test thread may inspect an environment safely while the server runs in another thread
   (re-entrant, so the documented ``with server.lock: server.environment(...)`` works; since
   no coroutine holds it across an ``await``, re-entry never lets two requests interleave).
3. *Render*: the core's records know their JSON; every :class:`~workstate.WorkstateError`
   knows its status and its envelope.  The front middleware adds a ``request-id`` header to
   every response (and the same id to every error envelope), checks the API key, and turns an
   unexpected exception into a 500 envelope.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hmac
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workstate._environment import Environment
from workstate._errors import InvalidInputError, NotFoundError, WorkstateError
from workstate._profile import ANTHROPIC, Profile, StopResponse, evolve_profile
from workstate._records import WorkData
from workstate._time import ManualClock, SystemClock, format_time, parse_time
from workstate._wire import work_data_from_json as _work_data_from_json
from workstate._work import Work
from workstate.server._session_api import SessionHub
from workstate.server._sessions import Session

__all__ = ["MockServer", "serve_in_thread"]

_log = logging.getLogger("workstate.server")

_ENVIRONMENT_ID = re.compile(r"env_[A-Za-z0-9_-]{1,128}", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)  # the core checks the ranges
# Path segments under .../work that are routes of their own; POST to them is a wrong method,
# not a metadata update of an item called "poll".
_RESERVED_WORK_IDS = {"poll": "GET", "stats": "GET"}

Clock = SystemClock | ManualClock
"""The clocks the server can read."""


# ------------------------------------------------------------------------------ parsing
def _int_query(request: Request, name: str) -> int | None:
    """The query parameter ``name`` as an int, None when absent; 400 naming it otherwise."""
    text = request.query_params.get(name)
    if text is None:
        return None
    if _INTEGER.fullmatch(text) is None:
        raise InvalidInputError(
            f"query parameter {name} must be an integer, got {text!r}",
            key=name,
            expected="an integer",
            got=text,
        )
    return int(text)


async def _json_body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body), with only ``allowed`` keys."""
    raw = await request.body()
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
                f"the request body has the unknown key {key!r}; the known keys are {list(allowed)}",
                key=key,
                expected=f"only the keys {list(allowed)}",
                got=key,
            )
    return value


def _request_id(request: Request) -> str | None:
    state = request.scope.get("state")
    return state.get("request_id") if isinstance(state, Mapping) else None


def _new_request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# ------------------------------------------------------------------------------ the server
class MockServer:
    """A stand-in for the work API: environments, a clock, and the ASGI app serving them.

    ``profile`` answers the questions where providers differ (spec §7); ``clock`` is a
    :class:`~workstate.SystemClock` (the default) or a :class:`~workstate.ManualClock` that only
    ``POST /mock/clock`` (or :meth:`advance` and :meth:`set_time`) moves; with ``api_key`` every
    request must carry it as ``x-api-key`` or ``Authorization: Bearer``.

    Every ``env_...`` id names an environment, created on first use.  Touch an environment only
    through this object's methods, or while holding :attr:`lock`.  ``id_factory`` (given the
    prefix ``work_`` or ``sesn_``) chooses the generated ids, as for
    :class:`~workstate._environment.Environment`.  ``seed`` seeds the generator of everything
    else the server makes up (sessions tokens).  ``profile_overrides`` changes fields of
    ``profile`` (e.g. ``{"default_ttl_seconds": 2}`` for leases that lapse in seconds; see
    :func:`~workstate._profile.evolve_profile`).
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
    ) -> None:
        self.profile = evolve_profile(profile, profile_overrides or {})
        """The profile of every environment this server creates (with the overrides applied)."""
        self.clock: Clock = SystemClock() if clock is None else clock
        """The clock the server reads for every request."""
        self.api_key = api_key
        """The key every request must carry, or None to accept any request."""
        self.lock = threading.RLock()
        """Held around every touch of an environment or a session; re-entrant, so a test may
        hold it across several inspections (``with server.lock: server.environment(...)``)."""
        self._random = random.Random(secrets.randbits(64) if seed is None else seed)
        self.sessions = SessionHub(self)
        """The scripted sessions of the session items, their tokens and streams."""
        self._id_factory = id_factory
        self._environments: dict[str, Environment] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._last_now: _dt.datetime | None = None
        self.app: Starlette = self._build_app()
        """The ASGI application."""

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
            return self._environment(environment_id)

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
        with self.lock:
            env, now = self._touch(environment_id)
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
                    f"environment {environment_id!r} not found; the mock server serves every "
                    "id of the form env_<letters, digits, _ or ->",
                    error_code=self.profile.environment_not_found_error_code,
                )
            if self._id_factory is None:
                env = Environment(environment_id, profile=self.profile)
            else:
                env = Environment(environment_id, profile=self.profile, id_factory=self._id_factory)
            self._environments[environment_id] = env
        return env

    def _touch(self, environment_id: str) -> tuple[Environment, _dt.datetime]:
        """The environment and the time, with every lease that fell due applied."""
        env = self._environment(environment_id)
        now = self._now()
        if env.expire_due(now):
            self._wake(environment_id)  # expired items are back in the queue
        return env, now

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
        for env in self._environments.values():
            env.expire_due(now)
        for environment_id in list(self._waiters):
            self._wake(environment_id)  # reclaim windows may have passed too
        return now

    # -------------------------------------------------------------- the application
    def _build_app(self) -> Starlette:
        work = "/v1/environments/{environment_id}/work"
        item = work + "/{work_id}"
        routes = [
            Route(work + "/poll", self._poll, methods=["GET"]),
            Route(work + "/stats", self._stats, methods=["GET"]),
            Route(work, self._list, methods=["GET"]),
            Route(item, self._item, methods=["GET", "POST"]),
            Route(item + "/ack", self._ack, methods=["POST"]),
            Route(item + "/heartbeat", self._heartbeat, methods=["POST"]),
            Route(item + "/stop", self._stop, methods=["POST"]),
            Route("/mock/environments/{environment_id}/work", self._mock_create, methods=["POST"]),
            Route("/mock/clock", self._mock_clock, methods=["GET", "POST"]),
            *self.sessions.routes(),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(_Front, server=self)],
            exception_handlers={
                WorkstateError: _render_error,
                HTTPException: _render_http_exception,
            },
        )

    async def _poll(self, request: Request) -> Response:
        environment_id = request.path_params["environment_id"]
        block_ms = _int_query(request, "block_ms")
        reclaim = _int_query(request, "reclaim_older_than_ms")
        worker_id = request.headers.get("anthropic-worker-id") or None
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            with self.lock:
                env, now = self._touch(environment_id)
                work = env.poll(
                    now, worker_id=worker_id, reclaim_older_than_ms=reclaim, block_ms=block_ms
                )
                if work is not None:
                    base = str(request.base_url).rstrip("/")
                    return JSONResponse(self.sessions.delivery_json(work, base))
                if deadline is None:
                    deadline = loop.time() + (block_ms or 0) / 1000
                wait = deadline - loop.time()
                if wait <= 0:
                    return JSONResponse(None)  # the literal null: an empty body breaks the SDK
                change = env.next_change_at(reclaim_older_than_ms=reclaim)
                if change is not None and not self.manual_clock:
                    wait = min(wait, max((change - now).total_seconds(), 0.001))
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(environment_id, set()).add(waiter)
            try:
                await asyncio.wait((waiter,), timeout=wait)
            finally:
                with self.lock:
                    self._waiters.get(environment_id, set()).discard(waiter)

    async def _ack(self, request: Request) -> Response:
        environment_id, work_id = _ids(request)
        worker_id = request.headers.get("anthropic-worker-id") or None
        with self.lock:
            env, now = self._touch(environment_id)
            work = env.ack(work_id, now, worker_id=worker_id)
        return JSONResponse(work.to_json())

    async def _heartbeat(self, request: Request) -> Response:
        environment_id, work_id = _ids(request)
        ttl = _int_query(request, "desired_ttl_seconds")
        token = request.query_params.get("expected_last_heartbeat")
        with self.lock:
            env, now = self._touch(environment_id)
            result = env.heartbeat(
                work_id, now, expected_last_heartbeat=token, desired_ttl_seconds=ttl
            )
        return JSONResponse(result.to_json())

    async def _stop(self, request: Request) -> Response:
        environment_id, work_id = _ids(request)
        body = await _json_body(request, ("force",))
        force = body.get("force", False)  # the core checks it is a boolean
        with self.lock:
            env, now = self._touch(environment_id)
            work = env.stop(work_id, now, force=force)
        if self.profile.stop_response is StopResponse.NO_CONTENT:
            return Response(status_code=204)  # what the deployed API answers (divergences.md)
        return JSONResponse(work.to_json())

    async def _item(self, request: Request) -> Response:
        # One route for both methods, so that a wrong method's 405 lists both in Allow.
        if request.method == "POST":
            return await self._update(request)
        return await self._get(request)

    async def _get(self, request: Request) -> Response:
        environment_id, work_id = _ids(request)
        with self.lock:
            env, now = self._touch(environment_id)
            work = env.get(work_id, now)
        return JSONResponse(work.to_json())

    async def _update(self, request: Request) -> Response:
        environment_id, work_id = _ids(request)
        if work_id in _RESERVED_WORK_IDS:
            raise HTTPException(405, headers={"Allow": _RESERVED_WORK_IDS[work_id]})
        body = await _json_body(request, ("metadata",))
        patch = body.get("metadata", {})  # omitted: keep the metadata as it is
        with self.lock:
            env, now = self._touch(environment_id)
            work = env.update_metadata(work_id, now, patch)
        return JSONResponse(work.to_json())

    async def _list(self, request: Request) -> Response:
        environment_id = request.path_params["environment_id"]
        limit = _int_query(request, "limit")
        page = request.query_params.get("page")
        with self.lock:
            env, now = self._touch(environment_id)
            if limit is None:
                listing = env.list(now, page=page)
            else:
                listing = env.list(now, limit=limit, page=page)
        return JSONResponse(listing.to_json())

    async def _stats(self, request: Request) -> Response:
        environment_id = request.path_params["environment_id"]
        with self.lock:
            env, now = self._touch(environment_id)
            stats = env.stats(now)
        return JSONResponse(stats.to_json())

    async def _mock_create(self, request: Request) -> Response:
        environment_id = request.path_params["environment_id"]
        body = await _json_body(request, ("data", "metadata", "secret", "work_id", "session"))
        data = _work_data_from_json(body["data"]) if "data" in body else None
        work = self.create_work(
            environment_id,
            data=data,
            metadata=body.get("metadata"),
            secret=body.get("secret"),
            work_id=body.get("work_id"),
            session=body.get("session"),
        )
        return JSONResponse(work.to_json())

    async def _mock_clock(self, request: Request) -> Response:
        if request.method == "GET":
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


def _ids(request: Request) -> tuple[str, str]:
    return request.path_params["environment_id"], request.path_params["work_id"]


# ------------------------------------------------------------------------------ rendering
async def _render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WorkstateError)
    return JSONResponse(exc.to_json(request_id=_request_id(request)), status_code=exc.status)


async def _render_http_exception(request: Request, exc: Exception) -> Response:
    """The router's own 404 and 405, in the API's envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = WorkstateError(
            f"no such endpoint: {request.method} {request.url.path}",
            status=404,
            error_type="not_found_error",
        )
    elif exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        error = WorkstateError(
            f"method {request.method} is not allowed on {request.url.path}; allowed: {allow}",
            status=405,
            error_type="invalid_request_error",
        )
    else:  # pragma: no cover - the router raises nothing else
        error = WorkstateError(exc.detail, status=exc.status_code)
    return JSONResponse(
        error.to_json(request_id=_request_id(request)),
        status_code=error.status,
        headers=exc.headers,
    )


def _authorized(headers: Headers, key: str) -> bool:
    expected = key.encode()
    given = headers.get("x-api-key")
    if given is not None and hmac.compare_digest(given.encode(), expected):
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


class _Front:
    """Outermost middleware: request id, API key, and a 500 envelope for surprises."""

    def __init__(self, app: ASGIApp, server: MockServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _new_request_id()
        scope = {**scope, "state": {**scope.get("state", {}), "request_id": request_id}}
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append("request-id", request_id)
            await send(message)

        key = self.server.api_key
        headers = Headers(scope=scope)
        if (
            key is not None
            and not _authorized(headers, key)
            and not self.server.sessions.token_allows(headers, scope["path"])
        ):
            error = WorkstateError(
                "invalid or missing API key: send the server's key as the x-api-key header "
                "or as Authorization: Bearer <key> (an item's sessions token also works, on "
                "that item's own calls)",
                status=401,
                error_type="authentication_error",
            )
            response = JSONResponse(error.to_json(request_id=request_id), status_code=401)
            await response(scope, receive, send_with_id)
            return
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            _log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            if started:
                raise
            error = WorkstateError("the mock server failed unexpectedly; see its log", status=500)
            response = JSONResponse(error.to_json(request_id=request_id), status_code=500)
            await response(scope, receive, send_with_id)


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
    if isinstance(app, MockServer):
        app = app.app
    sock = bind(host, port)
    config = uvicorn.Config(
        app, log_level=log_level, log_config=None, lifespan="off", timeout_graceful_shutdown=5
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
