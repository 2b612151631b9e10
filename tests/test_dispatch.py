"""The work API's direct dispatch answers every call exactly as Starlette's router would.

Each case runs on three servers built alike (same seed, same manual clock, same items): one
request through the whole app (which answers a bodiless call in the harness's middleware and
dispatches the rest directly), the same request with the middleware's answer switched off
(through the body limits and the :class:`Dispatch`), and with the dispatch bypassed too (its
fallback router answers).  Status, headers and body must be equal, and so must the servers'
state and journal entries afterwards.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import T0, full_state

from workstate import ManualClock, WorkData
from workstate.server import MockServer
from workstate.server._dispatch import Call, Dispatch, endpoint

ENV = "env_dispatch"
W = f"/v1/environments/{ENV}/work"


def build() -> MockServer:
    """A server with a queued, a delivered, an active and a stopped item."""
    server = MockServer(clock=ManualClock(T0), seed=7)
    for name in ("work_q", "work_d", "work_a", "work_s"):
        server.create_work(ENV, work_id=name, data=WorkData(id=f"sesn_{name}"))
    env = server.environment(ENV)
    with server.lock:
        now = server.now()
        env.poll(now)  # work_q is the oldest: delivered... then acked below
        env.ack("work_q", now)
        env.poll(now)  # work_d: delivered, not acked
        env.poll(now)
        env.ack("work_a", now)
        env.heartbeat("work_a", now)
        env.poll(now)
        env.ack("work_s", now)
        env.stop("work_s", now, force=True)
    return server


def through_layers(server: MockServer) -> Any:
    """The server's app with the middleware's own answer switched off: every call goes through
    the body limits and the Dispatch."""
    server.app._handlers = {}
    return server.app


def without_dispatch(server: MockServer) -> Any:
    """The server's app with its Dispatch replaced by the router the dispatch falls back to."""
    through_layers(server)
    limits = server.app.app
    dispatch = limits.app  # type: ignore[attr-defined]
    assert isinstance(dispatch, Dispatch)
    limits.app = dispatch.fallback  # type: ignore[attr-defined]
    return server.app


def journal(server: MockServer) -> list[dict[str, Any]]:
    """The journal's entries without their monotonic times (which differ from run to run)."""
    entries = server.harness.entries()
    for entry in entries:
        del entry["started_mono"], entry["finished_mono"]
    return entries


async def call(
    app: Any,
    method: str,
    path: str,
    query: bytes,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    headers = [(b"host", b"mock"), (b"anthropic-worker-id", b"w1"), *(extra or [])]
    if body:
        headers += [(b"content-type", b"application/json")]
    if (b"transfer-encoding", b"chunked") not in headers:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("mock", 80),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    raw = b"".join(m.get("body", b"") for m in sent[1:])
    return {
        "status": start["status"],
        "headers": sorted((bytes(k), bytes(v)) for k, v in start["headers"]),
        "body": json.loads(raw) if raw else None,
    }


CASES = [
    ("GET", f"{W}/poll", b"", b""),
    ("GET", f"{W}/poll", b"reclaim_older_than_ms=0", b""),
    ("GET", f"{W}/poll", b"block_ms=abc", b""),
    ("GET", f"{W}/stats", b"", b""),
    ("GET", W, b"", b""),
    ("GET", W, b"limit=2", b""),
    ("GET", W, b"limit=0", b""),
    ("GET", W, b"page=bogus", b""),
    ("GET", f"{W}/work_a", b"", b""),
    ("GET", f"{W}/work_nope", b"", b""),
    ("POST", f"{W}/work_a", b"", b'{"metadata": {"k": "v"}}'),
    ("POST", f"{W}/work_a", b"", b'{"metadata": {"k": 1}}'),
    ("POST", f"{W}/work_a", b"", b'{"other": 1}'),
    ("POST", f"{W}/work_a", b"", b"not json"),
    ("POST", f"{W}/work_d/ack", b"", b""),
    ("POST", f"{W}/work_s/ack", b"", b""),
    ("POST", f"{W}/work_a/heartbeat", b"", b""),
    ("POST", f"{W}/work_a/heartbeat", b"desired_ttl_seconds=30", b""),
    ("POST", f"{W}/work_a/heartbeat", b"desired_ttl_seconds=x", b""),
    ("POST", f"{W}/work_a/heartbeat", b"expected_last_heartbeat=2020-01-01T00:00:00Z", b""),
    ("POST", f"{W}/work_d/heartbeat", b"", b""),
    ("POST", f"{W}/work_a/stop", b"", b""),
    ("POST", f"{W}/work_a/stop", b"", b'{"force": true}'),
    ("POST", f"{W}/work_a/stop", b"", b'{"force": "yes"}'),
    ("POST", f"{W}/work_nope/stop", b"", b""),
    ("POST", f"/mock/environments/{ENV}/work", b"", b""),
    ("POST", f"/mock/environments/{ENV}/work", b"", b'{"work_id": "work_new"}'),
    ("POST", f"/mock/environments/{ENV}/work", b"", b'{"work_id": "work_a"}'),
    ("GET", "/v1/environments/nope/work/stats", b"", b""),
]


@pytest.mark.parametrize(("method", "path", "query", "body"), CASES)
def test_a_direct_call_answers_as_the_router_does(
    method: str, path: str, query: bytes, body: bytes
) -> None:
    direct, layered, routed = build(), build(), build()
    got = asyncio.run(call(direct.app, method, path, query, body))
    layers = asyncio.run(call(through_layers(layered), method, path, query, body))
    want = asyncio.run(call(without_dispatch(routed), method, path, query, body))
    assert got == layers == want
    assert full_state(direct) == full_state(layered) == full_state(routed)
    assert journal(direct) == journal(layered) == journal(routed)
    assert len(journal(direct)) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "extra", "answered_here"),
    [
        ("POST", f"{W}/work_a/heartbeat", b"", [], True),
        ("GET", f"{W}/work_a", b"", [], True),
        ("GET", f"{W}/poll", b"", [], True),
        ("POST", f"{W}/work_a/stop", b"", [], True),
        # a body: the limits bound it, the journal's tee keeps it
        ("POST", f"{W}/work_a/stop", b"{}", [], False),
        ("POST", f"{W}/work_a/heartbeat", b"", [(b"transfer-encoding", b"chunked")], False),
        ("POST", f"{W}/work_a/heartbeat", b"", [(b"x-big", b"x" * 17_000)], False),  # 431
        ("HEAD", f"{W}/work_a", b"", [], False),  # the router's
        ("GET", "/mock/clock", b"", [], False),  # not a direct call
    ],
)
def test_the_middleware_answers_a_bodiless_direct_call_itself(
    method: str, path: str, body: bytes, extra: list[tuple[bytes, bytes]], answered_here: bool
) -> None:
    """Only a direct call with nothing for the limits to bound skips the inner layers: with
    those layers failing, it is answered still, and anything else meets the failure."""
    server = build()

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("the inner layers were called")

    server.app.app = failing
    got = asyncio.run(call(server.app, method, path, b"", body, extra))
    if answered_here:
        assert got["status"] in (200, 204)
    else:
        assert got["status"] == 500
        assert got["body"]["error"]["message"].startswith("the mock server failed unexpectedly")


def test_a_withheld_answer_goes_through_the_capture() -> None:
    """A fault rule that drops the connection after the call (its answer withheld) needs the
    journal's capture, so even a bodiless direct call takes the inner layers then."""
    from workstate.server._harness import ConnectionDropped

    server = build()
    server.harness.add_fault({"match": {"operation": "heartbeat"}, "effect": {"drop": "after"}})
    with pytest.raises(ConnectionDropped):
        asyncio.run(call(server.app, "POST", f"{W}/work_a/heartbeat", b"", b""))
    [entry] = server.harness.entries()
    assert entry["status"] is None
    assert entry["withheld"]["status"] == 200
    assert entry["applied"] is True


def test_every_direct_operation_is_covered_by_a_case() -> None:
    from workstate.server._journal import classify

    server = build()
    limits = server.app.app
    dispatch = limits.app  # type: ignore[attr-defined]
    assert isinstance(dispatch, Dispatch)
    covered = {classify(method, path).operation for method, path, _, _ in CASES}
    assert set(dispatch.handlers) <= covered


def test_the_router_path_runs_a_handler_that_answers_no_content() -> None:
    """endpoint() turns a handler's None (a 204 stop under the anthropic profile) into a 204
    without a body, as the direct path does."""
    from starlette.requests import Request

    async def handler(call: Call) -> bytes | None:
        assert (call.environment_id, call.work_id) == ("env_x", "work_y")
        return None

    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [],
            "path_params": {"environment_id": "env_x", "work_id": "work_y"},
        }
    )
    response = asyncio.run(endpoint(handler)(request))
    assert (response.status_code, response.body) == (204, b"")
    assert endpoint(handler).__name__ == "handler"


@pytest.mark.parametrize(
    ("scope", "url"),
    [
        ({"headers": [(b"host", b"mock.test:8080")]}, "http://mock.test:8080"),
        ({"headers": [], "server": ("10.0.0.2", 8765)}, "http://10.0.0.2:8765"),
        ({"headers": [], "server": ("10.0.0.2", 80)}, "http://10.0.0.2"),
        (
            {"headers": [], "scheme": "https", "server": ("h", 443), "root_path": "/api"},
            "https://h/api",
        ),
    ],
)
def test_a_calls_base_url_is_starlettes(scope: dict[str, Any], url: str) -> None:
    """The base URL a poll puts in a minted secret, as Starlette's Request.base_url gives it
    (without the trailing slash): from the Host header, else the server's address."""
    from starlette.requests import Request

    full = {"type": "http", "method": "GET", "path": "/", "query_string": b"", **scope}
    assert Call(full, None, "env_x", None).base_url == url  # type: ignore[arg-type]
    assert str(Request(full).base_url).rstrip("/") == url


def _head(*headers: tuple[bytes, bytes], version: str = "1.1", path: bytes = b"/x") -> Any:
    return {"http_version": version, "raw_path": path, "query_string": b"", "headers": headers}


@pytest.mark.parametrize(
    ("scope", "direct"),
    [
        (_head(), True),
        (_head((b"host", b"h"), (b"content-length", b"0")), True),
        (_head((b"content-length", b"00")), True),
        (_head((b"content-length", b"2")), False),
        (_head((b"content-length", b"x")), True),  # (h11 refuses it first)
        (_head((b"transfer-encoding", b"chunked")), False),
        (_head((b"x-big", b"v" * 16_000)), True),
        (_head((b"x-big", b"v" * 16_400)), False),
        (_head(path=b"/" + b"p" * 16_400), False),
        (_head(version="2"), False),
    ],
)
def test_within_limits_says_what_the_measured_head_does(scope: Any, direct: bool) -> None:
    # The one-pass check that RequestLimits and the direct path share must agree with the
    # head RequestLimits measures when it has something to bound.
    from workstate.server._limits import Limits, _measure, within_limits

    limits = Limits()
    assert within_limits(scope, limits) is direct
    declared, head = _measure(scope)
    chunked = any(name == b"transfer-encoding" for name, _ in scope["headers"])
    http1 = scope["http_version"] in ("1.0", "1.1")
    unbounded = not chunked and not declared and head <= limits.max_header_bytes and http1
    assert unbounded is direct
