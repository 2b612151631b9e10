"""The client-side history recorder: an ``httpx2`` transport that writes down every call.

Theory of operation
-------------------
The official SDK (``anthropic``) sends its requests through an ``httpx2`` client, and an
``httpx2`` client sends them through a *transport*.  :class:`HistoryRecorder` hands out
transports that wrap the real one: each request of the work API (see
:func:`~workstate._history.call_from_http`) is timed on the recorder's clock from just before
it is sent to just after its answer has been read, and written down as a
:class:`~workstate._history.HistoryCall`; anything else passes through unrecorded.  Because it
sits below the SDK, every attempt is its own call (the SDK's retries included), and nothing
about the server is assumed: it records ours or any other implementation.

A timeout or a broken connection is recorded as ``info`` (the request may or may not have
taken effect) and re-raised, so the SDK behaves exactly as it would unrecorded; so are 5xx,
408 and 429 answers (:func:`~workstate._history.outcome_for_status`).

The clock is the wall clock (``time.time``) unless you pass another; the history says
``server_clock="same"`` by default, which is right for a server on the same machine reading
the real clock (the mock's default): the server's timestamps then lie inside each call's
interval, give or take ``skew_seconds``.  For a server on a manual clock or on another host,
pass ``server_clock="unrelated"``.

The recorder is thread-safe: share one between the clients of a concurrent test and give each
client its own name.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2

from workstate._history import History, HistoryCall, call_from_http, outcome_for_status

__all__ = ["HistoryRecorder"]


def _json_or_text(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class HistoryRecorder:
    """Records the work API calls of any number of ``httpx2`` clients as one history.

    >>> import httpx2
    >>> recorder = HistoryRecorder()
    >>> def server(request):  # any transport: here a stand-in that answers every poll null
    ...     return httpx2.Response(200, json=None)
    >>> client = httpx2.Client(transport=recorder.transport("w1", httpx2.MockTransport(server)))
    >>> client.get("http://test/v1/environments/env_1/work/poll").status_code
    200
    >>> [(c.client, c.op, c.outcome, c.body) for c in recorder.history().calls]
    [('w1', 'poll', 'ok', None)]
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        wall: bool = True,
        server_clock: str = "same",
        skew_seconds: float = 0.01,
        profile: str | None = None,
        source: str = "sdk recorder",
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._server_clock = server_clock if wall else "unrelated"
        self._skew = skew_seconds
        self._profile = profile
        self._source = source
        self._lock = threading.Lock()
        self._calls: list[HistoryCall | None] = []

    # ------------------------------------------------------------------ clients
    def transport(
        self, client: str | None = None, inner: httpx2.BaseTransport | None = None
    ) -> httpx2.BaseTransport:
        """A transport recording as ``client`` (default: the worker id header, or the thread's
        name), sending through ``inner`` (default: a new ``httpx2.HTTPTransport``)."""
        return _Transport(self, client, httpx2.HTTPTransport() if inner is None else inner)

    def async_transport(
        self, client: str | None = None, inner: httpx2.AsyncBaseTransport | None = None
    ) -> httpx2.AsyncBaseTransport:
        """The same for an ``httpx2.AsyncClient``."""
        base = httpx2.AsyncHTTPTransport() if inner is None else inner
        return _AsyncTransport(self, client, base)

    def http_client(self, client: str | None = None, **kwargs: Any) -> httpx2.Client:
        """An ``httpx2.Client`` recording as ``client``; pass it to the SDK as ``http_client``.

        Extra keyword arguments go to ``httpx2.Client`` (``timeout``, ...).
        """
        return httpx2.Client(transport=self.transport(client), **kwargs)

    # ------------------------------------------------------------------ the history
    def history(self) -> History:
        """Every call recorded so far (calls still in flight are left out)."""
        with self._lock:
            calls = tuple(c for c in self._calls if c is not None)
        return History(
            calls=calls,
            clock="wall" if self._wall else "monotonic",
            server_clock=self._server_clock,
            skew_seconds=self._skew,
            profile=self._profile,
            source=self._source,
        )

    def write(self, path: str | pathlib.Path) -> None:
        """Write the history as JSON Lines to ``path``."""
        pathlib.Path(path).write_text(self.history().to_jsonl(), encoding="utf-8")

    # ------------------------------------------------------------------ recording
    def _begin(self) -> tuple[int, float]:
        with self._lock:
            self._calls.append(None)
            return len(self._calls) - 1, self._clock()

    def _end(
        self,
        slot: int,
        client: str | None,
        invoke: float,
        parsed: tuple[str, str, str | None, dict[str, Any]],
        response: httpx2.Response | None,
    ) -> None:
        ret = self._clock()
        op, env, work_id, inputs = parsed
        status = None if response is None else response.status_code
        outcome = outcome_for_status(status)
        body = None
        error_type = None
        if response is not None and outcome != "info":
            body = _json_or_text(response.content)
            if outcome == "fail":
                error = body.get("error") if isinstance(body, dict) else None
                kind = error.get("type") if isinstance(error, dict) else None
                error_type = kind if isinstance(kind, str) else "unknown"
        name = client or inputs.get("worker_id") or threading.current_thread().name
        call = HistoryCall(
            id=slot,
            client=str(name),
            op=op,
            environment_id=env,
            work_id=work_id,
            input=inputs,
            invoke=invoke,
            ret=None if outcome == "info" else ret,
            outcome=outcome,
            status=status,
            body=body,
            error_type=error_type,
        )
        with self._lock:
            self._calls[slot] = call


def _classify(request: httpx2.Request) -> tuple[str, str, str | None, dict[str, Any]] | None:
    body = _json_or_text(request.content) if request.content else None
    return call_from_http(
        request.method,
        request.url.path,
        dict(request.url.params),
        dict(request.headers),
        body,
    )


class _Transport(httpx2.BaseTransport):
    def __init__(
        self, recorder: HistoryRecorder, client: str | None, inner: httpx2.BaseTransport
    ) -> None:
        self._recorder = recorder
        self._client = client
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        parsed = _classify(request)
        if parsed is None:
            return self._inner.handle_request(request)
        recorder = self._recorder
        slot, invoke = recorder._begin()
        try:
            response = self._inner.handle_request(request)
            response.read()
        except BaseException:
            recorder._end(slot, self._client, invoke, parsed, None)  # no answer: info
            raise
        recorder._end(slot, self._client, invoke, parsed, response)
        return response

    def close(self) -> None:
        self._inner.close()


class _AsyncTransport(httpx2.AsyncBaseTransport):
    def __init__(
        self, recorder: HistoryRecorder, client: str | None, inner: httpx2.AsyncBaseTransport
    ) -> None:
        self._recorder = recorder
        self._client = client
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        parsed = _classify(request)
        if parsed is None:
            return await self._inner.handle_async_request(request)
        recorder = self._recorder
        slot, invoke = recorder._begin()
        try:
            response = await self._inner.handle_async_request(request)
            await response.aread()
        except BaseException:
            recorder._end(slot, self._client, invoke, parsed, None)  # no answer: info
            raise
        recorder._end(slot, self._client, invoke, parsed, response)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
