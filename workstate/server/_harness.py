"""The mock as a test harness: fault rules, the request journal, reset, inspection, health.

Theory of operation
-------------------
The rules live in pure modules (``_faults.py`` matches and counts fault rules, ``_journal.py``
classifies requests and builds journal entries); this module is the ASGI glue around them.

:class:`HarnessMiddleware` is the outermost middleware of the app.  For each HTTP request it

1. gives the request its ``request-id`` (from the server's seeded generator), numbers its
   arrival (``seq``) and classifies it (operation, environment, work item);
2. asks the :class:`~workstate.server._faults.FaultSet` whether a rule fires (``/mock/``
   controls never match), and applies the effect: wait ``delay_ms``; answer an error status
   in the API's envelope without calling the app; or drop the connection before calling it,
   or after (the call is applied, its answer withheld);
3. otherwise checks the API key (a 401 envelope without it; :func:`~workstate.server._auth.allowed`)
   and serves the request (:meth:`HarnessMiddleware.serve`: the app, with the journal's tee
   and capture as its channels; the server's :class:`~workstate.server._dispatch.Application`
   answers a bodiless work-API call itself, through :meth:`Exchange.respond`) with a context
   (a :class:`contextvars.ContextVar`) in which the server notes, under its lock, the time it
   hands to the core, the order of the core call (``core_seq``) and the item as it stood (its
   state alone, unless the call's outcome compares records: :meth:`Harness.note_core_call`);
   an exception raised before the answer begins becomes a 500 envelope;
4. puts the ``request-id`` header on every answer, and records the journal entry: the
   request, the answer it captured on the way out, and what the call did
   (:func:`~workstate.server._journal.outcome`).

One :class:`Exchange` object per request holds all of it (its methods are the app's
``receive`` and ``send``, or its answer) and is the journal's pending entry, built into a
:class:`~workstate.server._journal.JournalEntry` only if someone reads it.

Dropping a connection.  ASGI has no message for "close without answering".  Under uvicorn
the ``receive`` callable is a method of the connection's request cycle, which holds the
socket's transport: the middleware closes that transport, lets the event loop run once so
uvicorn sees the disconnection (and sends no 500 of its own), and returns; the client reads
end-of-file where the status line should be (httpx: ``RemoteProtocolError: Server
disconnected without sending a response``; the SDK: ``APIConnectionError``, retried).  In
process (``httpx2.ASGITransport``) there is no connection: the middleware raises
:class:`ConnectionDropped` out of the app, which the transport raises to the client
(``raise_app_exceptions=True``, its default) and the SDK turns into the same
``APIConnectionError``.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as _dt
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workstate._environment import Environment
from workstate._errors import InvalidInputError, NotFoundError, WorkstateError
from workstate._profile import profile_to_mapping
from workstate._table import State
from workstate._time import format_time
from workstate._work import Work
from workstate.server._auth import allowed
from workstate.server._disconnect import forget_cycle, note_cycle
from workstate.server._journal import COMPARED, OPERATIONS, Journal, classify, decode_body
from workstate.server._journal import outcome as _outcome
from workstate.server._render import JSONResponse, json_headers

if TYPE_CHECKING:
    from workstate.server._app import MockServer
    from workstate.server._faults import FaultRule, FaultSet
    from workstate.server._journal import PendingEntry
    from workstate.server._journal_entry import JournalEntry

__all__ = ["ConnectionDropped", "Exchange", "Harness", "HarnessMiddleware"]

_log = logging.getLogger("workstate.server")

_BODY_CAP = 1 << 20  # the journal keeps at most this much of a request or response body
# The journal's own listings are not kept as answers: each would hold the journal again.
_UNKEPT_ANSWERS = frozenset({"/mock/journal"})


class ConnectionDropped(Exception):
    """Raised out of the app in process, where a fault rule drops the connection."""


_CALL: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "workstate_harness_call", default=None
)


class Harness:
    """The server's fault rules and journal, and the ``/mock/`` endpoints that control them.

    Reach it as ``server.harness``; every method is safe to call from a test thread while
    the server runs.
    """

    def __init__(self, server: MockServer, seed: int) -> None:
        self.server = server
        self._fault_seed = seed
        # Built with the first rule (see faults): until then no request can match one.
        self._fault_set: FaultSet | None = None
        self.journal = Journal()
        """The request journal; set ``journal.sink`` to receive each finished entry."""
        self.lock = threading.Lock()
        """Held around every touch of the rules and the journal."""
        self._core_seq = 0
        self._epoch = 0  # grows with every reset; a request of an earlier one is not recorded

    @property
    def faults(self) -> FaultSet:
        """The fault rules (use the methods below rather than this object directly)."""
        if self._fault_set is None:
            # Loaded on first use: most servers never add a rule, and the rules' module (its
            # parser and three attrs records) was ~2 ms of serve's cold start.  A set built
            # now from the seed draws as one built at start-up would, since none drew yet.
            from workstate.server._faults import FaultSet

            self._fault_set = FaultSet(seed=self._fault_seed)
        return self._fault_set

    # -------------------------------------------------------------- for programs and tests
    def add_fault(self, rule: object) -> dict[str, Any]:
        """Add a fault rule (the JSON of ``POST /mock/faults``); returns it with its id."""
        with self.lock:
            return self.faults.add(rule).to_json()

    def fault_rules(self) -> list[dict[str, Any]]:
        """Every fault rule with its counts, in the order added."""
        with self.lock:
            return [] if self._fault_set is None else [r.to_json() for r in self._fault_set.rules()]

    def clear_faults(self) -> int:
        """Remove every fault rule; returns how many there were."""
        with self.lock:
            if self._fault_set is None:
                return 0
            n = len(self._fault_set.rules())
            self._fault_set.clear()
            return n

    def remove_fault(self, rule_id: str) -> None:
        """Remove one fault rule (404 if there is none with this id)."""
        with self.lock:
            if self._fault_set is None or not self._fault_set.remove(rule_id):
                raise NotFoundError(f"no fault rule {rule_id!r}; GET /mock/faults lists them")

    def entries(
        self,
        *,
        environment_id: str | None = None,
        work_id: str | None = None,
        operation: str | None = None,
        since: int | None = None,
    ) -> list[dict[str, Any]]:
        """The journal's entries (as JSON) that match every filter given, in ``seq`` order."""
        if operation is not None and operation not in OPERATIONS:
            raise InvalidInputError(
                f"operation {operation!r} is not an operation the journal records",
                key="operation",
                expected=f"one of {list(OPERATIONS)}",
                got=operation,
            )
        with self.lock:
            found = self.journal.entries(
                environment_id=environment_id, work_id=work_id, operation=operation, since=since
            )
        return [e.to_json() for e in found]

    def clear_journal(self) -> int:
        """Forget every journal entry (numbering goes on); returns how many there were."""
        with self.lock:
            n = len(self.journal)
            self.journal.clear()
            return n

    def inspect(self, environment_id: str) -> dict[str, Any]:
        """Every item of an environment with the server's private lease fields."""
        server = self.server
        with server.lock:
            env = server._environment(environment_id)
            now = server._now()
            env.expire_due(now)
            items: list[dict[str, Any]] = []
            page: str | None = None
            while True:
                listing = env.list(now, limit=1000, page=page)
                items.extend(_inspection(w) for w in listing.data)
                page = listing.next_page
                if page is None:
                    break
            stats = env.stats(now).to_json()
        return {
            "environment_id": environment_id,
            "profile": env.profile.name,
            "now": format_time(now),
            "stats": stats,
            "data": items,
        }

    def health(self) -> dict[str, Any]:
        """``GET /mock/health``: the server is up, and what it holds."""
        server = self.server
        with server.lock:
            now = server._now()
            ids = list(server._environments)
            items = sum(len(server._environments[i]) for i in ids)
        with self.lock:
            rules = 0 if self._fault_set is None else len(self._fault_set.rules())
            entries = len(self.journal)
        return {
            "status": "ok",
            "profile": server.profile.name,
            "clock": "manual" if server.manual_clock else "real",
            "now": format_time(now),
            "seed": server.seed,
            "environments": len(ids),
            "items": items,
            "faults": rules,
            "journal_entries": entries,
        }

    def reset(self) -> None:
        """Forget every rule and journal entry; numbering and draws start afresh."""
        with self.lock:
            if self._fault_set is not None:  # (a set not built yet is as fresh as a reset one)
                self._fault_set.reset()
            self.journal.reset()
            self._core_seq = 0
            self._epoch += 1

    # -------------------------------------------------------------- hooks for the server
    def note_core_call(self, env: Environment, now: Any) -> None:
        """Called by the server, under its lock, just before it calls the core."""
        call = _CALL.get()
        if call is None:
            return  # not a request (a test thread's create_work, say)
        self._core_seq += 1
        call.core_seq = self._core_seq
        call.now = now
        work_id = call.facts.work_id
        if work_id is not None:
            # (``now`` is begun: the server applied a slice of expiries at it just now, or the
            # environment is a new, empty one that no peek finds anything in)
            before = env._peek(work_id, now)
            if before is not None and call.facts.operation not in COMPARED:
                # The outcome of a heartbeat (or a get) reads only the item's state before it:
                # the entry keeps that, not the record, which the core may be about to replace
                # (~330 bytes and a tracked object a heartbeat).
                call.before = before.state
            else:
                call.before = before

    def note_unshown_item(self, work: Work) -> None:
        """Called by the server when it answers a call on ``work`` with no body (a 204 stop):
        the journal keeps the item the answer stood for."""
        call = _CALL.get()
        if call is not None:
            call.after = work

    # -------------------------------------------------------------- the endpoints
    def routes(self) -> list[Route]:
        """The ``/mock/`` control endpoints of the harness."""
        return [
            Route("/mock/faults", self._faults, methods=["GET", "POST", "DELETE"]),
            Route("/mock/faults/{rule_id}", self._fault, methods=["DELETE"]),
            Route("/mock/journal", self._journal, methods=["GET", "DELETE"]),
            Route("/mock/reset", self._reset, methods=["POST"]),
            Route("/mock/health", self._health, methods=["GET"]),
            Route("/mock/environments/{environment_id}", self._inspect, methods=["GET"]),
        ]

    async def _faults(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):  # (Starlette adds HEAD to GET routes)
            return JSONResponse({"data": self.fault_rules()})
        if request.method == "DELETE":
            return JSONResponse({"deleted": self.clear_faults()})
        raw = await request.body()
        try:
            value = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError) as exc:
            raise InvalidInputError(
                f"the request body is not valid JSON: {exc}",
                key="body",
                expected="a fault rule as a JSON object",
                got=raw[:200].decode("utf-8", "replace"),
            ) from None
        return JSONResponse(self.add_fault(value))

    async def _fault(self, request: Request) -> Response:
        rule_id = request.path_params["rule_id"]
        self.remove_fault(rule_id)
        return JSONResponse({"deleted": 1, "id": rule_id})

    async def _journal(self, request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse({"deleted": self.clear_journal()})
        query = request.query_params
        for key in query:
            if key not in ("environment_id", "work_id", "operation", "since"):
                raise InvalidInputError(
                    f"GET /mock/journal has no filter {key!r}",
                    key=key,
                    expected="environment_id, work_id, operation or since",
                    got=key,
                )
        since_text = query.get("since")
        since = None
        if since_text is not None:
            if not since_text.isascii() or not since_text.isdigit():
                raise InvalidInputError(
                    f"since must be a seq number, got {since_text!r}",
                    key="since",
                    expected="a non-negative integer (the seq of an earlier entry)",
                    got=since_text,
                )
            since = int(since_text)
        entries = self.entries(
            environment_id=query.get("environment_id"),
            work_id=query.get("work_id"),
            operation=query.get("operation"),
            since=since,
        )
        # The profile too, as serve --journal's header line records it: what check needs.
        return JSONResponse({"data": entries, "profile": profile_to_mapping(self.server.profile)})

    async def _reset(self, request: Request) -> Response:
        self.server.reset()
        return JSONResponse(self.health())

    async def _health(self, request: Request) -> Response:
        return JSONResponse(self.health())

    async def _inspect(self, request: Request) -> Response:
        return JSONResponse(self.inspect(request.path_params["environment_id"]))

    # -------------------------------------------------------------- one request
    def _arrive(
        self, facts: tuple[str | None, str | None, str | None], worker: str | None
    ) -> tuple[int, int, FaultRule | None]:
        with self.lock:
            seq = self.journal.arrive()
            faults = self._fault_set
            rule = None if faults is None else faults.pick(facts[0], facts[1], facts[2], worker)
            return self._epoch, seq, rule

    def _record(self, epoch: int, entry: JournalEntry | PendingEntry) -> None:
        with self.lock:
            if epoch == self._epoch:  # a reset since the request arrived: it is forgotten
                self.journal.record(entry)


def _inspection(work: Work) -> dict[str, Any]:
    def t(value: Any) -> str | None:
        return None if value is None else format_time(value)

    return {
        **work.to_json(include_secret=True),
        "lease": {
            "last_heartbeat": work.last_heartbeat,
            "ttl_seconds": work.ttl_seconds,
            "lease_expires_at": t(work.lease_expires_at),
            "delivered_at": t(work.delivered_at),
            "delivered_to": work.delivered_to,
            "attempt": work.attempt,
            "version": work.version,
            "touched_at": t(work.touched_at),
        },
    }


def _worker_id(headers: Any) -> str | None:
    """The ``anthropic-worker-id`` header (ASGI names are lower case), None if absent or empty."""
    for name, value in headers:
        if name == b"anthropic-worker-id":
            return value.decode("latin-1") or None
    return None


def _transport(receive: Receive) -> asyncio.BaseTransport | None:
    """The socket transport behind ``receive``, when uvicorn serves the request."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    # asyncio's transports, and uvloop's (the fast stack), which do not subclass asyncio's.
    if isinstance(transport, asyncio.BaseTransport) or (
        callable(getattr(transport, "close", None))
        and callable(getattr(transport, "is_closing", None))
    ):
        return cast(asyncio.BaseTransport, transport)
    return None


async def _drop(receive: Receive, rule: FaultRule) -> None:
    transport = _transport(receive)
    if transport is None:
        raise ConnectionDropped(
            f"fault rule {rule.id} dropped the connection (in process there is no "
            "connection to close, so the app raises instead)"
        )
    transport.close()
    # Let the loop deliver connection_lost, so uvicorn marks the request disconnected and
    # does not answer a 500 for an app that returned without a response.
    await asyncio.sleep(0)


class HarnessMiddleware:
    """Outermost middleware: request ids, the API key, fault rules, the journal, and a 500
    envelope for surprises (see the module)."""

    def __init__(self, app: ASGIApp, harness: Harness) -> None:
        self.app = app
        self.harness = harness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        harness = self.harness
        request_id = harness.server.new_request_id()
        # The server hands every request a scope of its own: noted in place, not copied.
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["request_id"] = request_id
        note_cycle(scope, receive)  # for a long poll's disconnect check, behind our wrappers
        ex = Exchange(harness, scope, receive, send, request_id, _transport(receive) is not None)
        rule = ex.rule
        try:
            if rule is not None:
                effect = rule.effect
                if effect.delay_ms:
                    # At least the delay by the journal's clock: uvloop's timers round to the
                    # millisecond and may wake a fraction of one early.
                    deadline = ex.started + effect.delay_ms / 1000
                    while (left := deadline - time.monotonic()) > 0:
                        await asyncio.sleep(left)
                if effect.status is not None or effect.drop == "before":
                    while not ex.request_done and len(ex.body) < _BODY_CAP:
                        if (await ex.tee())["type"] != "http.request":
                            break
                    if effect.status is None:
                        ex.finish(False)
                        await _drop(receive, rule)
                    else:
                        await self._refuse(rule, request_id, scope, receive, ex.capture)
                    return
            token = _CALL.set(ex)
            try:
                key = harness.server.api_key
                if key is None or allowed(
                    scope["headers"], key, ex.path, harness.server.sessions.token_allows
                ):
                    await self.serve(ex, scope, receive, send)
                else:
                    await _envelope(_unauthorized(), request_id, scope, receive, ex.capture)
            except ClientDisconnect:
                pass  # the client left before its body ended: nobody to answer, nothing done
            except Exception:
                _log.exception("unexpected error serving %s %s", ex.method, ex.path)
                if ex.status is not None:
                    raise  # the answer has begun: nothing better to do than end it
                error = WorkstateError(
                    "the mock server failed unexpectedly; see its log", status=500
                )
                await _envelope(error, request_id, scope, receive, ex.capture)
            finally:
                _CALL.reset(token)
            if ex.withhold:
                ex.finish(False)
                assert rule is not None
                await _drop(receive, rule)
        finally:
            ex.finish(ex.sent)  # an app that failed half way: what was sent, if anything
            ex.close()
            forget_cycle(scope)

    async def serve(self, ex: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve an admitted request through the app, the journal's tee and capture around
        its channels (a subclass may answer some requests itself, filling ``ex`` directly)."""
        await self.app(scope, ex.tee, ex.capture)

    async def _refuse(
        self, rule: FaultRule, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        from workstate.server._faults import error_type_for  # loaded: a rule fired

        effect = rule.effect
        assert effect.status is not None
        conflict = self.harness.server.profile.conflict_error_type
        message = effect.message or (
            f"fault rule {rule.id} answered {effect.status}; the call was not applied"
        )
        error = WorkstateError(
            message,
            status=effect.status,
            error_type=effect.error_type or error_type_for(effect.status, conflict),
        )
        headers = {}
        if effect.retry_after is not None:
            headers["retry-after"] = f"{effect.retry_after:g}"
        response = JSONResponse(
            error.to_json(request_id=request_id), status_code=effect.status, headers=headers
        )
        await response(scope, receive, send)


def _unauthorized() -> WorkstateError:
    return WorkstateError(
        "invalid or missing API key: send the server's key as the x-api-key header "
        "or as Authorization: Bearer <key> (an item's sessions token also works, on "
        "that item's own calls)",
        status=401,
        error_type="authentication_error",
    )


async def _envelope(
    error: WorkstateError, request_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    response = JSONResponse(error.to_json(request_id=request_id), status_code=error.status)
    await response(scope, receive, send)


def _kept(kept: bytes | bytearray, chunk: bytes) -> bytes | bytearray:
    """``kept`` and then ``chunk``, up to the journal's cap (the chunk itself if it is the first
    and fits: bytes are immutable, so keeping it copies nothing)."""
    room = _BODY_CAP - len(kept)
    if not kept and type(chunk) is bytes and len(chunk) <= room:
        return chunk
    grown = kept if isinstance(kept, bytearray) else bytearray(kept)
    grown.extend(chunk[:room])
    return grown


class Exchange:
    """One request as the harness sees it: what arrived, what the server noted while the
    core served it, and what was answered; :meth:`build` makes its journal entry.

    Once finished, everything here is immutable or owned by this request alone (bytes, the
    core's frozen records, the rule's frozen effect), so building later gives what building
    at once would.  One object per request, with the journal's tee and capture as its
    methods, costs less than closures and a record made at the end (``benchmarks/server.py``).
    """

    __slots__ = (
        "_receive",
        "_send",
        "after",
        "answer",
        "before",
        "body",
        "client",
        "core_seq",
        "epoch",
        "facts",
        "finished",
        "harness",
        "keep",
        "method",
        "now",
        "path",
        "query",
        "recorded",
        "request_done",
        "request_id",
        "rule",
        "sent",
        "seq",
        "started",
        "status",
        "withhold",
        "worker",
    )

    def __init__(
        self,
        harness: Harness,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        over_socket: bool,
    ) -> None:
        self.started = time.monotonic()
        self.harness = harness
        self.request_id = request_id
        self.method = method = scope["method"]
        self.path = path = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self.client = scope.get("client") if over_socket else None
        self.worker = worker = _worker_id(scope["headers"])
        self.facts = facts = classify(method, path)
        self.epoch, self.seq, rule = harness._arrive(facts, worker)
        self.rule = rule
        self.withhold = rule is not None and rule.effect.drop == "after"
        self.keep = path not in _UNKEPT_ANSWERS
        self._receive: Receive | None = receive
        self._send: Send | None = send
        # A body of one chunk (the usual case) is kept as the chunk itself, without a copy.
        self.body: bytes | bytearray = b""
        self.answer: bytes | bytearray = b""
        self.request_done = False
        self.status: int | None = None
        self.sent = False
        self.recorded = False
        self.finished = 0.0
        # Noted by the server while the core serves the request (Harness.note_core_call).
        self.now: _dt.datetime | None = None  # the time handed to the core
        self.core_seq: int | None = None
        self.before: Work | State | None = None  # (the state alone: see note_core_call)
        self.after: Work | None = None  # the item, when the answer carries none (a 204 stop)

    @property
    def work_id(self) -> str | None:
        """The item the request's path names."""
        return self.facts.work_id

    async def tee(self) -> Message:
        """The app's ``receive``: the body is kept for the journal as it passes."""
        receive = self._receive
        assert receive is not None, "the request is over"
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk and len(self.body) < _BODY_CAP and not self.recorded:
                self.body = _kept(self.body, chunk)
            self.request_done = not message.get("more_body", False)
        return message

    async def capture(self, message: Message) -> None:
        """The app's ``send``: the request id goes on the answer, the answer into the journal."""
        kind = message["type"]
        if kind == "http.response.start":
            status = self.status = message["status"]
            # Every answer carries the request's id, as the real API's do.
            message["headers"] = [
                *message.get("headers", ()),
                (b"request-id", self.request_id.encode("latin-1")),
            ]
            if status in (204, 304):  # no body follows: the headers are the whole answer
                self.finish(not self.withhold)
        elif kind == "http.response.body":
            chunk = message.get("body", b"")
            if chunk and self.keep and len(self.answer) < _BODY_CAP and not self.recorded:
                self.answer = _kept(self.answer, chunk)
            if not message.get("more_body", False):
                self.finish(not self.withhold)
        if not self.withhold:
            self.sent = True
            send = self._send
            assert send is not None, "the request is over"
            await send(message)

    async def respond(self, send: Send, status: int, body: bytes | None) -> None:
        """Answer ``status`` with the JSON ``body`` (None: no body) on the server's own
        ``send``, as :meth:`capture` would record it: for a request that is neither tee'd nor
        captured (see :class:`~workstate.server._dispatch.Application`; never one whose
        answer a fault rule withholds)."""
        self.status = status
        self.sent = True
        headers = json_headers(body)
        headers.append((b"request-id", self.request_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if body is None:
            body = b""
        else:
            self.answer = _kept(b"", body)
        self.finish(True)  # before the last part leaves, as capture does
        await send({"type": "http.response.body", "body": body})

    def finish(self, delivered: bool) -> None:
        """Record the request in the journal (once), as delivered or not.

        Recorded before the answer's last byte leaves (or the connection closes), so a client
        that has its answer finds the request in the journal.  Only the raw pieces: the entry
        is built if it is ever read.
        """
        if self.recorded:
            return
        self.recorded = True
        self.finished = time.monotonic()
        self.sent = delivered  # (the body and the answer change no more: see ``recorded``)
        self.harness._record(self.epoch, self)

    def close(self) -> None:
        """Let go of the server's channels, so the journal does not keep connections alive."""
        self._receive = self._send = None

    def build(self) -> JournalEntry:
        """The journal entry of this request."""
        from workstate.server._journal_entry import JournalEntry  # (loaded on first use)

        operation, environment_id, work_id = self.facts
        status, sent, rule = self.status, self.sent, self.rule
        response = decode_body(bytes(self.answer)) if status is not None else None
        item = self.after.to_json() if status == 204 and self.after is not None else None
        kept = self.before
        before: dict[str, Any] | None = None
        if isinstance(kept, State):
            before = {"state": kept.value}  # (all its outcome reads: see note_core_call)
        elif kept is not None:
            before = kept.to_json()
        applied, move, error = _outcome(operation, before, status, response, item)
        if work_id is None and operation in ("poll", "create") and isinstance(response, dict):
            found = response.get("id")
            work_id = found if isinstance(found, str) else None
        withheld = None
        if not sent and status is not None:
            withheld = {"status": status, "response": response}
        return JournalEntry(
            seq=self.seq,
            request_id=self.request_id,
            client="asgi" if self.client is None else f"{self.client[0]}:{self.client[1]}",
            worker_id=self.worker,
            method=self.method,
            path=self.path,
            query=dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True)),
            body=decode_body(bytes(self.body)),
            operation=operation,
            environment_id=environment_id,
            work_id=work_id,
            started_mono=self.started,
            finished_mono=self.finished,
            server_time=None if self.now is None else format_time(self.now),
            status=status if sent else None,
            response=response if sent else None,
            applied=applied,
            fault=None if rule is None else {"id": rule.id, "effect": rule.effect.to_json()},
            move=move,
            error=error if sent else None,
            core_seq=self.core_seq,
            withheld=withheld,
            item=item,
        )
