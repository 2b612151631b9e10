"""The work API's calls routed by one split of the path, answered with two ASGI messages.

Theory of operation
-------------------
The mock server's own work per request is small, so the web framework's share of a request
matters: Starlette's router tries one compiled pattern per route until one matches, wraps the
endpoint in an exception middleware and a request/response adapter, builds a ``Request`` and a
``Response`` object, and passes each message through layers of ``send`` closures.  For
the calls a worker makes all day (poll, ack, heartbeat, get, stop, update, list, stats, and
the mock's create) that machinery cost about as much as the core call itself
(``benchmarks/server.py`` measures the whole server against a bare Starlette app with the same
routes; ``docs/performance.md`` has the numbers).

So :class:`Dispatch` routes those calls itself.  It classifies the request with the journal's
:func:`~workstate.server._journal.classify` (one ``str.split``, cached per path), and when the
method and path name one of the calls in its table it runs the handler with a :class:`Call` (the
scope, the receive channel and the ids from the path) and sends the answer as two ASGI
messages: ``http.response.start`` with ``content-length`` and ``content-type`` as Starlette's
``JSONResponse`` writes them, then the body.  A handler returns the JSON bytes of a 200, or
None for a 204 without a body; a :class:`~workstate.WorkstateError` it raises is answered in
the API's envelope with the request's id, exactly as the Starlette exception handler does.

Everything else goes to Starlette's router behind it (with its exception middleware, which
renders the envelopes), and the router keeps every route, the direct calls' too, with the same
handlers adapted by :func:`endpoint`: ``HEAD`` on a read, a wrong method (405 with ``Allow``), a
trailing slash (404), the mock's controls, the sessions and the harness.  The table here holds
only exact (method, path shape) pairs whose route would call the same handler, so both paths
give the same answer (``tests/test_dispatch.py`` sends every call both ways and compares).

Most of those calls never reach :class:`Dispatch`: the harness's middleware has classified
the request already, and :class:`Application` (the middleware, as the server's app) runs the
same handler and answers on the server's own channels when the request has no body and no
fault rule withholds its answer.  The layers in between (the journal's body tee and answer
capture, the body limits, the dispatch's classification) cost a heartbeat about as much as its
core call did, and such a request needs none of them.  A call with a body (a stop, a metadata
update) still goes through the limits and the dispatch.

A query string is parsed only when one is present, and only once.  Headers are read by a
linear scan of the raw list (a request carries a handful).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import URL
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from workstate._errors import WorkstateError
from workstate.server._harness import Exchange, Harness, HarnessMiddleware
from workstate.server._journal import classify
from workstate.server._limits import Limits, within_limits
from workstate.server._render import json_headers, render_json, scope_request_id

__all__ = ["Application", "Call", "Dispatch", "Handler", "endpoint"]

_DIRECT_METHODS = frozenset({"GET", "POST"})


class Call:
    """One request to a work-API handler: its scope, its body channel and the path's ids."""

    __slots__ = ("_query", "environment_id", "receive", "scope", "work_id")

    def __init__(
        self, scope: Scope, receive: Receive, environment_id: str, work_id: str | None
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.environment_id = environment_id
        self.work_id = work_id
        self._query: dict[str, str] | None = None

    @classmethod
    def from_request(cls, request: Request) -> Call:
        """The call a Starlette route's request stands for (its path parameters as the ids)."""
        params = request.path_params
        return cls(request.scope, request.receive, params["environment_id"], params.get("work_id"))

    @property
    def method(self) -> str:
        """The HTTP method."""
        return str(self.scope["method"])

    @property
    def query_params(self) -> Mapping[str, str]:
        """The query parameters (the last value of a repeated one, as Starlette's ``get``)."""
        if self._query is None:
            raw = self.scope.get("query_string", b"")
            self._query = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
        return self._query

    def header(self, name: bytes) -> str | None:
        """The first header called ``name`` (lower case), or None."""
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    @property
    def base_url(self) -> str:
        """The server's base URL as the client addressed it, without a trailing slash."""
        scope = self.scope
        host = self.header(b"host")
        return _base_url(
            scope.get("scheme", "http"),
            host,
            None if host is not None else _server(scope),
            scope.get("app_root_path", scope.get("root_path", "")),
        )

    async def body(self) -> bytes:
        """The whole request body; :class:`~starlette.requests.ClientDisconnect` if the client
        leaves before it ends (as Starlette's ``Request.body``): a part of a body must never
        be applied as if it were all of it (``{}`` of a longer stop body is valid JSON)."""
        chunks = []
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


def _server(scope: Scope) -> tuple[str, int] | None:
    server = scope.get("server")
    return None if server is None else (str(server[0]), int(server[1]))


@functools.lru_cache(maxsize=256)
def _base_url(scheme: str, host: str | None, server: tuple[str, int] | None, root_path: str) -> str:
    # Starlette's own Request.base_url from the same parts, remembered: it is the same for
    # every poll a client makes.
    scope: dict[str, Any] = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "root_path": root_path,
        "path": root_path if root_path.endswith("/") else root_path + "/",
        "query_string": b"",
        "headers": [] if host is None else [(b"host", host.encode("latin-1"))],
    }
    return str(URL(scope=scope)).rstrip("/")


Handler = Callable[[Call], Awaitable[bytes | None]]
"""A work-API handler: the JSON bytes of its 200 answer, or None for a 204 without a body."""


async def _run(handler: Handler, call: Call) -> tuple[int, bytes | None]:
    """The status and JSON body (None: none) of ``handler``'s answer to ``call``: a
    :class:`~workstate.WorkstateError` it raises as the API's envelope with the request's id."""
    try:
        body = await handler(call)
    except WorkstateError as exc:
        return exc.status, render_json(exc.to_json(request_id=scope_request_id(call.scope)))
    return (204 if body is None else 200), body


async def _answer(send: Send, status: int, body: bytes | None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": json_headers(body)})
    await send({"type": "http.response.body", "body": b"" if body is None else body})


class Dispatch:
    """ASGI app: the calls in ``handlers`` (by operation name) answered directly; everything
    else by ``fallback``."""

    def __init__(self, handlers: Mapping[str, Handler], fallback: ASGIApp) -> None:
        self.handlers = dict(handlers)
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # HEAD and every other method go to the router (classify reads HEAD as GET).
        if scope["type"] == "http" and scope["method"] in _DIRECT_METHODS:
            facts = classify(scope["method"], scope["path"])
            handler = self.handlers.get(facts.operation or "")
            if handler is not None:
                assert facts.environment_id is not None  # every work-API call names one
                call = Call(scope, receive, facts.environment_id, facts.work_id)
                await _answer(send, *await _run(handler, call))
                return
        # Starlette's routes answer a wrong method with an exception (rendered in the envelope)
        # only under an app; bare, they write plain text.
        scope["app"] = self
        await self.fallback(scope, receive, send)


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint running ``handler`` (for the requests :class:`Dispatch` leaves to
    the router: ``HEAD`` on a read, say)."""

    async def run(request: Request) -> Response:
        body = await handler(Call.from_request(request))
        if body is None:
            return Response(status_code=204)
        return Response(body, media_type="application/json")

    run.__name__ = run.__qualname__ = getattr(handler, "__name__", "endpoint")
    return run


class Application(HarnessMiddleware):
    """The mock server's ASGI app: the harness's middleware, outermost, around ``app`` (the
    body limits and a :class:`Dispatch` of ``handlers``), with the Starlette ``routes`` it
    serves listed.

    A call of ``handlers`` that has nothing for the limits to bound (no body, a head within
    ``limits``) and whose answer no fault rule withholds is answered here, by the same
    handler, without the layers in between: no body to tee, no answer to capture, no second
    classification (the harness classified it).  Anything else goes through ``app``, which
    answers the same (``tests/test_dispatch.py``).
    """

    def __init__(
        self,
        app: ASGIApp,
        harness: Harness,
        routes: Iterable[BaseRoute],
        *,
        handlers: Mapping[str, Handler],
        limits: Limits,
    ) -> None:
        super().__init__(app, harness)
        self.routes: list[BaseRoute] = list(routes)
        """Every route, as Starlette's ``Route`` objects (the direct calls included)."""
        self._handlers = dict(handlers)
        self._limits = limits

    async def serve(self, ex: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a direct call here, anything else through the app (see the class)."""
        facts = ex.facts
        handler = self._handlers.get(facts.operation or "")
        if (
            handler is None
            or ex.withhold
            or scope["method"] not in _DIRECT_METHODS  # (classify reads HEAD as GET)
            or not within_limits(scope, self._limits)
        ):
            await super().serve(ex, scope, receive, send)
            return
        assert facts.environment_id is not None  # every work-API call names one
        call = Call(scope, receive, facts.environment_id, facts.work_id)
        await ex.respond(send, *await _run(handler, call))
