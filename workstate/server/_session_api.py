"""The sessions surface of the mock server: ``/v1/sessions/...``, sessions tokens, inspection.

Theory of operation
-------------------
An adapter over :class:`~workstate.server._sessions.Session` with no rules of its own, shaped
by what the official worker calls for a session item (``anthropic.lib.environments``):

* ``GET /v1/sessions/{id}`` — the session (its ``status`` says whether to run it at all);
* ``GET /v1/sessions/{id}/events/stream`` — server-sent events, live.  Opening it attaches the
  worker, which starts the script.  The stream carries every event recorded from the moment it
  opened (``event: <type>`` and ``data: <json>``; the SDK skips frames without an event name),
  a ``ping`` frame when nothing happened for a while, and ends right after
  ``session.status_terminated`` (a stream opened on a terminated session repeats that event
  and ends).  An idle session keeps its stream open: the SDK's runner decides when an idle
  session is done (its ``max_idle``);
* ``GET /v1/sessions/{id}/events`` — the history, paged (the runner reads it right after the
  stream opens, so nothing is lost between the two);
* ``POST /v1/sessions/{id}/events`` — the tool results the worker sends.

Anything else under ``/v1/`` (skills, memory stores, session creation) is the router's 404 in
the API's envelope; the sessions the mock creates have no skills and no resources, so the
worker never asks for them.

Secrets.  A poll that hands out an item created without a ``secret`` answers with a freshly
minted one, the unpadded base64url JSON ``{"sessions_token": ..., "api_base_url": ...}`` the
SDK decodes.  The token (from the server's seeded random generator) authorizes, as a Bearer,
the calls of that item — its session's ``/v1/sessions/{id}...`` and its own
``/v1/environments/{env}/work/{id}...`` — in addition to the server's API key.  An item created
with a ``secret`` (an opaque string, even ``""``) gets that secret verbatim and no token.

Lifetime.  A session and its tokens live as long as the items that use them.  The hub hears
of every item an environment lets go of (the environments' ``on_drop``): an item the retention
bound drops takes its tokens with it, and the last item serving a session takes the session
(its open streams end); an item that takes a fresh id on redelivery (a profile's
``fresh_id_on_redelivery``) keeps its session, but the tokens of its old id go with that id.
So a server left running holds what its live and retained items need, whatever number of
items went through it.  A restart rebuilds the bookkeeping from the restored items and lets
go of the tokens and sessions no restored item uses.

Every touch of a session happens under the server's lock, in synchronous code; a stream waits
for changes outside it, on a future that a change resolves (as the long poll does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from workstate._errors import IllegalMoveError, InvalidInputError, NotFoundError
from workstate._indexes import ShardedDict
from workstate._work import Work
from workstate.server._query import int_query
from workstate.server._render import JSONResponse
from workstate.server._sessions import (
    Session,
    SessionStatus,
    Step,
    parse_session_spec,
    session_from_record,
    session_to_record,
)

if TYPE_CHECKING:
    from workstate.server._app import MockServer

__all__ = ["SessionHub"]

_PING_SECONDS = 10.0  # a quiet stream sends a ping this often, so proxies keep it open


@functools.cache
def _token_paths() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The paths a sessions token may call: its item's, and its session's.  Compiled when a
    token is first presented, not at import (start-up time most servers never need)."""
    return (
        re.compile(r"/v1/environments/([^/]+)/work/([^/]+)(?:/[^/]*)?", re.ASCII),
        re.compile(r"/v1/sessions/([^/]+)(?:/.*)?", re.ASCII),
    )


_Parsed = tuple[SessionStatus, tuple[Step, ...]]


_Grant = tuple[str, str, str]
"""What one sessions token authorizes: one item and its session, as (environment id, work id,
session id).  A plain tuple of strings, not a named one: one is kept for every delivery, and
the collector stops tracking a plain tuple of strings once it has seen it, never a subclass's."""


def _grant(record: Any) -> _Grant:
    environment_id, work_id, session_id = map(str, record)
    return environment_id, work_id, session_id


@functools.lru_cache(maxsize=64)
def _quoted(text: str) -> str:
    return json.dumps(text)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _frame(event: Mapping[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


class SessionHub:
    """The sessions of one :class:`~workstate.server.MockServer`, their tokens and streams."""

    def __init__(self, server: MockServer) -> None:
        self._server = server
        # Sharded: each holds an entry per item or delivery, and a plain dict's growth rebuilds
        # it in one insertion (115 ms at 350,000 items, 189 at 700,000; see _indexes).
        self._sessions: ShardedDict[str, Session] = ShardedDict()
        self._grants: ShardedDict[str, _Grant] = ShardedDict()
        # The items created through the hub (environment → work id → the tokens minted for
        # the item), and how many of them serve each session: what an item takes with it.
        # (Tuples: the empty one is shared, and the collector stops tracking the others.)
        self._kept: dict[str, ShardedDict[str, tuple[str, ...]]] = {}
        self._holders: ShardedDict[str, int] = ShardedDict()
        # The tokens of items the hub did not create (put straight into an environment).
        self._loose: dict[tuple[str, str], tuple[str, ...]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    # -------------------------------------------------------------- for the server (locked)
    def check_new(self, spec: object, data_type: str, session_id: str | None) -> _Parsed | None:
        """A creation's ``session`` spec, checked before anything is created (a 400 or 409)."""
        if spec is None:
            return None
        if data_type != "session":
            raise InvalidInputError(
                f"a {data_type} item has no session; leave session out",
                key="session",
                expected="no session for a non-session item",
                got=spec,
            )
        if session_id is not None and session_id in self._sessions:
            raise IllegalMoveError(
                f"session {session_id} already exists; create the item without a session spec "
                "to serve the existing session again",
                error_type=self._server.profile.conflict_error_type,
            )
        return parse_session_spec(spec)

    def add(self, work: Work, parsed: _Parsed | None) -> None:
        """Give a new session item its session (the default one without a spec).

        An item about a session the mock already has serves that session again.
        """
        data = work.body.data
        env, now = work.body.environment_id, work.body.created_at
        kept = self._kept.get(env)
        if kept is None:
            kept = self._kept[env] = ShardedDict()
        kept[work.id] = ()
        if data.type != "session":
            return
        self._hold(data.id)
        if parsed is None and data.id in self._sessions:
            return
        if parsed is None:
            session = Session.create(data.id, env, now)
        else:
            session = Session.create(data.id, env, now, status=parsed[0], script=parsed[1])
        self._keep(session)

    def _hold(self, session_id: str) -> None:
        """One more item serves ``session_id``."""
        self._holders[session_id] = (self._holders.get(session_id) or 0) + 1

    def item_left(self, work: Work, renewed: Work | None) -> None:
        """An environment let go of ``work`` (its ``on_drop``): the item's tokens go, and with
        the last item serving it (``renewed`` is None: the item is gone), its session."""
        env, work_id = work.body.environment_id, work.id
        kept = self._kept.get(env)
        tokens = None if kept is None else kept.pop(work_id)
        ours = tokens is not None  # created through the hub (counted in _holders)
        if tokens is None:
            tokens = self._loose.pop((env, work_id), ())
        elif renewed is not None and kept is not None:
            kept[renewed.id] = ()  # the same item: its new id's tokens go with it in turn
        keeper = self._server._keeper
        for token in tokens:
            del self._grants[token]
            keeper.delete("session_token", token)
        data = work.body.data
        if renewed is not None or not ours or data.type != "session":
            return
        session_id = data.id
        left = (self._holders.get(session_id) or 0) - 1
        if left > 0:
            self._holders[session_id] = left
            return
        self._holders.pop(session_id)
        if self._sessions.pop(session_id) is not None:
            keeper.delete("session", session_id)
            self._wake(session_id)  # its streams end

    def restore(self) -> None:
        """Take the sessions and sessions tokens the server's state file holds (start-up),
        keeping those a restored item uses."""
        keeper = self._server._keeper
        sessions = keeper.records("session", session_from_record, forget=True)
        for env_id, env in self._server._environments.items():
            restored: ShardedDict[str, tuple[str, ...]] = ShardedDict()
            self._kept[env_id] = restored
            for item in env.item_states():
                work = item.work
                restored[work.id] = ()
                data = work.body.data
                if data.type == "session" and data.id in sessions:
                    self._hold(data.id)
        for session_id, session in sessions.items():
            if session_id in self._holders:
                self._sessions[session_id] = session
            else:
                keeper.delete("session", session_id)  # no item uses it any more
        grants = keeper.records("session_token", _grant, forget=True)
        for token, grant in grants.items():
            of_env = self._kept.get(grant[0])
            tokens = None if of_env is None else of_env.get(grant[1])
            if of_env is None or tokens is None:
                keeper.delete("session_token", token)  # its item is gone
            else:
                of_env[grant[1]] = (*tokens, token)
                self._grants[token] = grant

    def _keep(self, session: Session) -> None:
        # Under the server's lock: the state file commits it with the call, before its answer.
        self._sessions[session.id] = session
        self._server._keeper.put("session", session.id, session_to_record(session))

    def session(self, session_id: str) -> Session:
        """The session ``session_id`` (404 when there is none)."""
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFoundError(
                f"session {session_id!r} not found; the mock has a session for every session "
                "item created through it, for as long as it keeps the item"
            )
        return session

    def delivery_secret(self, work: Work, base_url: str) -> str:
        """The ``secret`` a poll's answer for ``work`` carries: the item's own, or a minted one
        (a sessions token for the item, with the server's base URL)."""
        secret = work.body.secret
        if secret is not None:
            return secret
        token = f"sesstok_{self._server._random.getrandbits(160):040x}"
        env = work.body.environment_id
        grant = (env, work.id, work.body.data.id)
        self._grants[token] = grant
        kept = self._kept.get(env)  # (the token goes with the item)
        tokens = None if kept is None else kept.get(work.id)
        if kept is not None and tokens is not None:
            kept[work.id] = (*tokens, token)
        else:  # an item put straight into the environment
            self._loose[env, work.id] = (*self._loose.get((env, work.id), ()), token)
        self._server._keeper.put("session_token", token, grant)  # (its record: the tuple)
        # json.dumps({"sessions_token": token, "api_base_url": base_url}), with the URL
        # quoted once per base URL (the token is hex: it needs no quoting).
        payload = f'{{"sessions_token": "{token}", "api_base_url": {_quoted(base_url)}}}'
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")

    def token_allows(self, headers: Headers, path: str) -> bool:
        """Whether the request's Bearer is a sessions token whose item ``path`` belongs to."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._server.lock:
            grant = self._grants.get(token.strip())
        if grant is None:
            return False
        item_path, session_path = _token_paths()
        item = item_path.fullmatch(path)
        if item is not None:
            return item.groups() == grant[:2]
        session = session_path.fullmatch(path)
        return session is not None and session.group(1) == grant[2]

    # -------------------------------------------------------------- routes
    def routes(self) -> list[Route]:
        """The routes of the sessions surface and its inspection."""
        one = "/v1/sessions/{session_id}"
        return [
            Route(one, self._retrieve, methods=["GET"]),
            Route(one + "/events", self._events, methods=["GET", "POST"]),
            Route(one + "/events/stream", self._stream, methods=["GET"]),
            Route("/mock/sessions/{session_id}", self._inspect, methods=["GET"]),
        ]

    def _locked(self, action: Callable[[], Any]) -> Any:
        with self._server.lock:
            return action()

    async def _retrieve(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        return JSONResponse(self._locked(lambda: self.session(session_id).to_json()))

    async def _inspect(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        return JSONResponse(self._locked(lambda: self.session(session_id).inspect_json()))

    async def _events(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if request.method != "POST":  # GET, and the HEAD Starlette adds to it
            limit = int_query(request, "limit")
            page = request.query_params.get("page")
            order = request.query_params.get("order")
            listing = self._locked(
                lambda: self.session(session_id).events_page(limit=limit, page=page, order=order)
            )
            return JSONResponse(listing.to_json())
        body = await _json_object(request)
        with self._server.lock:
            session = self.session(session_id)
            changed, recorded = session.receive(body.get("events"), self._server._now())
            self._keep(changed)
            self._wake(session_id)
        return JSONResponse({"data": [e.to_json() for e in recorded]})

    async def _stream(self, request: Request) -> Response:
        if request.method == "HEAD":  # opening a stream attaches the worker: no read
            raise HTTPException(405, headers={"Allow": "GET"})
        session_id = request.path_params["session_id"]
        with self._server.lock:
            session = self.session(session_id)
            start = len(session.events)
            if session.status is SessionStatus.TERMINATED:
                start -= 1  # repeat the termination, so a late reader learns it too
            self._keep(session.attach(self._server._now()))
            self._wake(session_id)
        # Starlette cancels the frames when the client disconnects (it listens for that on
        # ASGI servers before spec 2.4, uvicorn's; on later ones the next frame, a ping at the
        # latest, fails instead).
        return StreamingResponse(
            self._frames(session_id, start),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def _frames(self, session_id: str, cursor: int) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        while True:
            waiter: asyncio.Future[None] | None = None
            with self._server.lock:
                session = self._sessions.get(session_id)
                if session is None:
                    return  # the server was reset: the session is gone, the stream ends
                fresh = session.events[cursor:]
                cursor = len(session.events)
                over = session.status is SessionStatus.TERMINATED
                if not fresh and not over:
                    # Registered under the lock that read the log, so no change slips between.
                    waiter = loop.create_future()
                    self._waiters.setdefault(session_id, set()).add(waiter)
            for event in fresh:
                yield _frame(event.to_json())
            if over:
                return
            if waiter is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(waiter), _PING_SECONDS)
            except TimeoutError:
                yield 'event: ping\ndata: {"type":"ping"}\n\n'
            finally:
                with self._server.lock:
                    self._waiters.get(session_id, set()).discard(waiter)

    def reset(self) -> None:
        """Forget every session and sessions token (:meth:`MockServer.reset`); open streams
        wake and end."""
        self._sessions.clear()
        self._grants.clear()
        self._kept.clear()
        self._holders.clear()
        self._loose.clear()
        for session_id in list(self._waiters):
            self._wake(session_id)

    def _wake(self, session_id: str) -> None:
        for waiter in self._waiters.pop(session_id, ()):
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        value = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        value = raw[:200].decode("utf-8", "replace")
    if not isinstance(value, dict):
        raise InvalidInputError(
            f'the request body must be a JSON object {{"events": [...]}}, got {value!r}',
            key="body",
            expected='a JSON object {"events": [...]}',
            got=value,
        )
    for key in value:
        if key != "events":
            raise InvalidInputError(
                f"the request body has the unknown key {key!r}; the known key is 'events'",
                key=key,
                expected="only the key 'events'",
                got=key,
            )
    return value
