"""Bounds on what one request may cost the mock server: body size, read time, and bad HTTP.

Theory of operation
-------------------
Three layers see a request, and each bound lives in the first layer that can enforce it:

1. *The HTTP parser* (uvicorn's h11 protocol, subclassed by :func:`protocol_class`).  The
   request line and headers together are bounded by h11's ``max_incomplete_event_size``
   (:attr:`Limits.max_header_bytes`); a request that is not valid HTTP/1.1 (a header block over
   that size, raw non-ASCII bytes in the target, a malformed chunk) gets uvicorn's 400, which
   the subclass writes as the API's error envelope instead of plain text.  The subclass also
   bounds *time*: a new connection must deliver its first request's head within
   :attr:`Limits.read_timeout` seconds, and every later head must arrive in full within that
   time of its first byte (uvicorn itself only times out a keep-alive connection on which
   nothing at all arrives, after ``timeout_keep_alive`` = 5 s, so a client that trickles a
   header byte every few seconds would otherwise hold a connection for ever); a late head is
   answered 408 and the connection closed, a new connection that sent nothing is closed
   quietly.  After an answer, a request body the
   application never read must finish arriving within the same time, or the connection closes.
2. *The ASGI middleware* :class:`RequestLimits`, directly inside the front middleware (so its
   answers carry the request id).  A head that arrived whole but is larger than
   :attr:`Limits.max_header_bytes` (h11 bounds only an *incomplete* head) is 431
   ``request_too_large``.  A declared ``content-length`` over
   :attr:`Limits.max_body_bytes` is refused with 413 ``request_too_large`` *before* the
   application runs, so nothing is parsed or applied.  A body without a length (chunked) is
   counted as it streams in and refused the moment it passes the limit: the application reads
   its body before it touches any state, so the refusal changes nothing either.  Each wait for
   more body bytes is bounded by :attr:`Limits.read_timeout` (408 ``request_timeout``).  Both
   answers close the connection (``connection: close``): the rest of the body is not wanted.
3. *The core* bounds every value it stores (ids, metadata, worker ids) and every value an error
   quotes (:mod:`workstate._text`).

What cannot be enveloped: a connection closed by the operating system, a TLS or ASGI-server
failure before h11 sees a request, and a client that sends nothing at all (closed quietly after
uvicorn's keep-alive timeout or :attr:`Limits.read_timeout`, as there is nobody to answer).

Starlette's own ``max_body_size`` is not used: it checks a declared length only when the
application first reads the body or starts its answer, so a ``GET .../poll`` with a large
``content-length`` would deliver an item and then answer 413.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import h11
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from workstate._errors import InvalidInputError, WorkstateError
from workstate._records import is_int
from workstate._text import excerpt
from workstate.server._render import JSONResponse, render_json, scope_request_id

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "Limits",
    "RequestLimits",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "envelope_bytes",
    "protocol_class",
    "uvicorn_options",
    "within_limits",
]

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # h11's own default
DEFAULT_READ_TIMEOUT = 10.0


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not is_int(value) or value <= 0:
        raise InvalidInputError(
            f"{attribute.name} must be a positive integer, got {excerpt(value)}",
            key=attribute.name,
            expected="a positive integer (bytes)",
            got=value,
        )


def _positive_seconds(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < float("inf")
    ):
        raise InvalidInputError(
            f"{attribute.name} must be a positive, finite number of seconds, got {excerpt(value)}",
            key=attribute.name,
            expected="a positive, finite number of seconds",
            got=value,
        )


@attrs.frozen(kw_only=True)
class Limits:
    """How much one request may send, and how slowly (a bad value is a 400 naming it)."""

    max_body_bytes: int = attrs.field(default=DEFAULT_MAX_BODY_BYTES, validator=_positive_int)
    """The largest request body accepted (default 1 MiB); beyond it 413 ``request_too_large``."""
    max_header_bytes: int = attrs.field(default=DEFAULT_MAX_HEADER_BYTES, validator=_positive_int)
    """The largest request line plus headers (default 16 KiB); beyond it a 400 envelope."""
    read_timeout: float = attrs.field(default=DEFAULT_READ_TIMEOUT, validator=_positive_seconds)
    """Seconds a request's head may take to arrive, and each wait for body bytes (default 10)."""


class RequestTooLargeError(WorkstateError):
    """413: the request body is larger than the server accepts."""

    default_status = 413
    default_error_type = "request_too_large"


class RequestTimeoutError(WorkstateError):
    """408: the client stopped sending its request."""

    default_status = 408
    default_error_type = "request_timeout"


def _too_large(limit: int, got: str) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"the request body is {got}; this server accepts at most {limit} bytes "
        "(MockServer(max_body_bytes=...), serve --max-body-bytes)"
    )


def envelope_bytes(error: WorkstateError, request_id: str | None) -> bytes:
    """The error envelope as the bytes of a JSON body."""
    return render_json(error.to_json(request_id=request_id))


def _line_size(scope: Scope, headers: Sequence[tuple[bytes, bytes]]) -> int:
    """The size of the request line and of each header's separators: a head's size is this
    and its headers' names and values."""
    return (
        len(scope.get("raw_path", b""))
        + len(scope.get("query_string", b""))
        + 16
        + 4 * len(headers)  # ": " and CRLF per header
    )


def _measure(scope: Scope) -> tuple[int | None, int]:
    """The declared content-length (None if absent or no number, which h11 refuses before we
    see it), and about the size of the request line and headers as sent (h11 bounds a head
    only while it is incomplete; one that arrives at once can be larger)."""
    declared = None
    headers = scope.get("headers", ())
    size = _line_size(scope, headers)
    for name, value in headers:
        size += len(name) + len(value)
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
    return declared, size


def within_limits(scope: Scope, limits: Limits) -> bool:
    """Whether :class:`RequestLimits` has nothing to bound in this request: it has no body
    and its head is within :attr:`Limits.max_header_bytes`.

    One pass that stops at the first sign of a body (``tests/test_dispatch.py`` checks it
    against :func:`_measure`).  HTTP/1 without a length or chunking has no body; other ASGI
    servers (HTTP/2 ones, say) may stream a body with neither header, so only HTTP/1 is
    unbounded here."""
    if scope.get("http_version") not in ("1.0", "1.1"):
        return False
    headers = scope.get("headers", ())
    size = _line_size(scope, headers)
    for name, value in headers:
        if name == b"content-length":
            try:
                if int(value):
                    return False
            except ValueError:
                pass  # (h11 refuses such a request before the app sees it)
        elif name == b"transfer-encoding":
            return False
        size += len(name) + len(value)
    return size <= limits.max_header_bytes


class RequestLimits:
    """ASGI middleware: refuse an over-long head (431) or body (413), or a stalled body (408)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        if within_limits(scope, limits):
            # The common case (every SDK call but a stop or a metadata update) pays for no
            # wrapper.
            await self.app(scope, receive, send)
            return
        limit = limits.max_body_bytes
        declared, head = _measure(scope)
        timeout = limits.read_timeout
        error: WorkstateError | None = None
        if head > limits.max_header_bytes:
            error = RequestTooLargeError(
                f"the request line and headers are {head} bytes; this server accepts at most "
                f"{self.limits.max_header_bytes}",
                status=431,
            )
        elif declared is not None and declared > limit:
            error = _too_large(limit, f"{declared} bytes (content-length)")
        if error is not None:
            response = JSONResponse(
                error.to_json(request_id=scope_request_id(scope)),
                status_code=error.status,
                headers={"connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0
        body_done = refused = False

        async def limited_receive() -> Message:
            nonlocal received, body_done, refused
            if body_done:  # after the body only a disconnect can come: wait as long as it takes
                return await receive()
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                refused = True
                raise RequestTimeoutError(
                    f"no part of the request body arrived for {timeout:g} s; the server "
                    "stops waiting after --read-timeout seconds"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise _too_large(limit, f"over {limit} bytes")
                body_done = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            if refused and message["type"] == "http.response.start":
                # The rest of the body is not wanted: end the connection after the answer.
                MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        await self.app(scope, limited_receive, closing_send)


def protocol_class(limits: Limits, new_request_id: Callable[[], str]) -> type[H11Protocol]:
    """uvicorn's h11 protocol with enveloped 400s and a deadline for each request's head."""

    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, answering in the API's envelope and bounding read time."""

        # A head's deadline is a time, checked by one timer per connection: arming and
        # cancelling a timer for every request cost more than the check (benchmarks/server.py).
        # The timer, once armed, fires at the earliest deadline it was armed for; it then
        # answers a late head, or re-arms itself for the head now arriving, or stops (idle).
        _head_deadline: float | None = None
        _head_timer: asyncio.TimerHandle | None = None
        _drain_timer: asyncio.TimerHandle | None = None
        _head_started = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._expect_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            conn = self.conn
            if data and conn.their_state is h11.IDLE:
                self._head_started = True
                if self._head_deadline is None:  # a head's deadline runs from its first byte
                    self._expect_head()
            super().data_received(data)
            if self._head_deadline is not None and conn.their_state is not h11.IDLE:
                self._head_deadline = None  # the head is in: the ASGI layer bounds the body
            if self._drain_timer is not None and conn.their_state is h11.DONE:
                self._drain_timer.cancel()
                self._drain_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE:
                # Idle between requests: silence is uvicorn's keep-alive timeout's to end.
                self._head_started = False
            else:
                # Answered before the body was read (had both sides been done, uvicorn would
                # have started the next cycle): the rest must not take for ever.
                self._drain_timer = self.loop.call_later(limits.read_timeout, self._close)

        def send_400_response(self, msg: str) -> None:
            error = InvalidInputError(
                "the request is not valid HTTP/1.1 (a malformed request line, header or chunk, "
                f"raw non-ASCII bytes in the target, or a request line and headers over "
                f"{limits.max_header_bytes} bytes); nothing was done",
                key="request",
                expected="a well-formed HTTP/1.1 request",
            )
            request_id = new_request_id()
            body = envelope_bytes(error, request_id)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"request-id", request_id.encode()),
            ]
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self.transport.close()

        # ------------------------------------------------------------ timers
        def _expect_head(self) -> None:
            self._head_deadline = self.loop.time() + limits.read_timeout
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.read_timeout, self._check_head)

        def _check_head(self) -> None:
            self._head_timer = None
            deadline = self._head_deadline
            if deadline is None or self.transport.is_closing():
                return  # no head under way (it arrived; or the connection is going)
            left = deadline - self.loop.time()
            if left > 0:  # a later head than the one the timer was armed for
                self._head_timer = self.loop.call_later(left, self._check_head)
                return
            self._head_deadline = None
            if self._head_started:
                # h11 cannot answer before a request exists: write the 408 by hand.
                request_id = new_request_id()
                error = RequestTimeoutError(
                    f"the request line and headers did not arrive within {limits.read_timeout:g} "
                    "s; the server stops waiting after --read-timeout seconds"
                )
                body = envelope_bytes(error, request_id)
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\nrequest-id: %s\r\n\r\n%s"
                    % (len(body), request_id.encode(), body)
                )
            self._close()

        def _close(self) -> None:
            self._drain_timer = None
            self.transport.close()  # (a no-op on a transport already closing)

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._drain_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._drain_timer = None

    return GuardedH11Protocol


def uvicorn_options(limits: Limits, new_request_id: Callable[[], str]) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.Config`` that put ``limits`` in force."""
    return {
        "http": protocol_class(limits, new_request_id),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
    }
