"""A Hypothesis fuzz of every endpoint of the mock server, through a direct ASGI call.

Each example builds a server on a manual clock (at an ordinary time, near the year 1, or near
the end of the year 9999) with one item in every state, then sends a few generated requests:
any method, a path built from the routes with known, unseen, malformed and hostile ids
(unpaired surrogates included), any query parameters, worker-id and length headers, and
bodies from valid JSON to raw bytes.  After every request:

* the status is never 5xx, and every error is the API's envelope with the request id;
* every answer's JSON is valid UTF-8;
* after every *refused* request (4xx) the server's full state — every record with its private
  lease fields, every index, counter and waiter — is exactly what it was;
* every record the server holds satisfies the invariants.

The ``ci`` Hypothesis profile keeps this to a few seconds; run it by hand with
``HYPOTHESIS_PROFILE=thorough pytest tests/test_server_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any
from urllib.parse import quote

from helpers import full_state
from hypothesis import given
from hypothesis import strategies as st

from workstate import NO_HEARTBEAT, ManualClock, WorkData, format_time, invariant_violations
from workstate._time import EARLIEST, LATEST
from workstate.server import MockServer

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)
ENV = "env_fuzz"
STARTS = [T0, EARLIEST + dt.timedelta(seconds=5), LATEST - dt.timedelta(seconds=150)]
IDS = ["work_q", "work_p", "work_s", "work_a", "work_x", "work_z"]  # x: stopping, z: stopped


def build(start: dt.datetime) -> tuple[MockServer, str | None]:
    """A server with one item in each state; returns it and the active item's token."""
    server = MockServer(clock=ManualClock(start), max_body_bytes=2048)
    env = server.environment(ENV)
    now = server.now()
    token = None
    with server.lock:
        for work_id in IDS[1:]:
            server.create_work(
                ENV, work_id=work_id, metadata={"k": "v"}, data=WorkData(id=f"sesn_{work_id}")
            )
            polled = env.poll(now, worker_id="w1")
            assert polled is not None
            assert polled.id == work_id
        server.create_work(ENV, work_id="work_q", data=WorkData(id="sesn_work_q"))
        try:
            for work_id in IDS[2:]:
                env.ack(work_id, now)
            for work_id in IDS[3:]:
                token = env.heartbeat(work_id, now, expected_last_heartbeat=NO_HEARTBEAT)
                token = token.last_heartbeat
            env.stop("work_x", now)
            env.stop("work_z", now, force=True)
        except Exception:  # near the end of time no lease fits: the items stay as they are
            pass
    return server, token


# ------------------------------------------------------------------------------ strategies
HOSTILE_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec=None, categories=["Cs"]), min_size=1, max_size=3),
    st.sampled_from(["", " ", "a/b", "..", "%2F", "\x00", "x" * 300, "é", "\ud800"]),
)


def mostly(usual: Any, rare: Any) -> Any:
    """``usual`` seven times in eight, else ``rare``."""
    return st.integers(0, 7).flatmap(lambda i: rare if i == 0 else usual)


ENV_IDS = mostly(
    st.sampled_from([ENV] * 6 + ["env_unseen"]),
    st.sampled_from(["nope", "env_", "env_a.b"]) | HOSTILE_TEXT.map(lambda s: "env_" + s),
)
WORK_IDS = mostly(
    st.sampled_from(IDS), st.sampled_from(["work_missing", "poll", "stats"]) | HOSTILE_TEXT
)
SESSION_IDS = mostly(st.sampled_from([f"sesn_{w}" for w in IDS]), HOSTILE_TEXT)
SUFFIXES = st.sampled_from(["", "/ack", "/heartbeat", "/stop", "/", "/x", "/ack/"])


ROUTES = {  # kind -> (path template, the methods it answers)
    "poll": ("/v1/environments/{env}/work/poll", ["GET"]),
    "stats": ("/v1/environments/{env}/work/stats", ["GET"]),
    "list": ("/v1/environments/{env}/work", ["GET"]),
    "item": ("/v1/environments/{env}/work/{work}", ["GET", "POST"]),
    "ack": ("/v1/environments/{env}/work/{work}/ack", ["POST"]),
    "heartbeat": ("/v1/environments/{env}/work/{work}/heartbeat", ["POST"]),
    "stop": ("/v1/environments/{env}/work/{work}/stop", ["POST"]),
    "mock": ("/mock/environments/{env}/work", ["POST"]),
    "clock": ("/mock/clock", ["GET", "POST"]),
    "session": ("/v1/sessions/{session}", ["GET"]),
    "events": ("/v1/sessions/{session}/events", ["GET", "POST"]),
    "inspect": ("/mock/sessions/{session}", ["GET"]),
    # (.../events/stream is left out: a stream stays open until its session's turn ends)
    "journal": ("/mock/journal", ["GET"]),
    "faults": ("/mock/faults", ["GET"]),
    "health": ("/mock/health", ["GET"]),
    "inspect env": ("/mock/environments/{env}", ["GET"]),
}
OTHER_METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]


@st.composite
def routes(draw: st.DrawFn) -> tuple[str, str]:
    """(method, path): mostly a route's own method, sometimes any; sometimes a path of junk."""
    kind = draw(st.sampled_from([*ROUTES, "other"]))
    if kind == "other":
        return draw(st.sampled_from(OTHER_METHODS)), "/" + draw(HOSTILE_TEXT) + draw(SUFFIXES)
    template, methods = ROUTES[kind]
    method = draw(mostly(st.sampled_from(methods), st.sampled_from(OTHER_METHODS)))
    path = template.format(env=draw(ENV_IDS), work=draw(WORK_IDS), session=draw(SESSION_IDS))
    if draw(st.integers(0, 9)) == 0:
        path += draw(SUFFIXES)
    return method, path


def times(token: str | None) -> Any:
    edges = [
        NO_HEARTBEAT,
        "",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        format_time(T0),
    ]
    if token is not None:
        edges.append(token)
    return st.sampled_from(edges)


def query_values(token: str | None) -> Any:
    return st.one_of(
        st.integers(-3, 12).map(str),
        st.sampled_from(["999", "1000", "0", "9" * 40, "1e3", "+5", " 5"]),
        times(token),
        HOSTILE_TEXT,
    )


def json_values(token: str | None) -> Any:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False),
        HOSTILE_TEXT,
        times(token),
        st.sampled_from(IDS),
    )
    keys = st.sampled_from(["type", "id", "k", "\ud800", ""]) | HOSTILE_TEXT
    nested = leaves | st.lists(leaves, max_size=3) | st.dictionaries(keys, leaves, max_size=3)
    return nested | st.lists(nested, max_size=2) | st.dictionaries(keys, nested, max_size=3)


BODY_KEYS = [
    *["data", "metadata", "secret", "work_id", "force", "advance_seconds", "now", "junk"],
    *["session", "events"],
]


@st.composite
def requests(draw: st.DrawFn, token: str | None) -> tuple[str, str, bytes, list[Any], bytes]:
    method, path = draw(routes())
    query = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "block_ms",
                    "reclaim_older_than_ms",
                    "limit",
                    "page",
                    "expected_last_heartbeat",
                    "desired_ttl_seconds",
                    "beta",
                    "junk",
                ]
            ),
            query_values(token),
            max_size=3,
        )
    )
    query_string = "&".join(
        f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in query.items()
    ).encode()
    headers: list[Any] = [(b"host", b"mock")]
    if draw(st.booleans()):
        worker = draw(st.sampled_from(["w1", "w2", ""]) | HOSTILE_TEXT)
        headers.append((b"anthropic-worker-id", worker.encode("utf-8", "surrogatepass")))
    body_kind = draw(
        st.sampled_from(["none"] * 3 + ["object", "raw", "big", "events"] + ["keys"] * 4)
    )
    if body_kind == "none":
        body = b""
    elif body_kind == "object":
        body = json.dumps(draw(json_values(token))).encode()
    elif body_kind == "keys":
        obj = draw(st.dictionaries(st.sampled_from(BODY_KEYS), json_values(token), max_size=3))
        body = json.dumps(obj).encode()  # surrogates become \\udXXX escapes
    elif body_kind == "events":
        event = {
            "type": draw(st.sampled_from(["user.message", "user.interrupt", "x"])),
            "content": [{"type": "text", "text": draw(HOSTILE_TEXT)}],
        }
        body = json.dumps({"events": [event]}).encode()
    elif body_kind == "raw":
        body = draw(st.binary(max_size=40))
    else:
        body = b'{"secret": "' + b"x" * 3000 + b'"}'
    if body:
        headers.append((b"content-type", b"application/json"))
        if draw(st.booleans()):
            headers.append((b"content-length", str(len(body)).encode()))
    return method, path, query_string, headers, body


# ------------------------------------------------------------------------------ the harness
async def call(
    server: MockServer, method: str, path: str, query: bytes, headers: list[Any], body: bytes
) -> tuple[int, bytes]:
    """One request through the ASGI app, as a server would make it; (status, body)."""
    done = asyncio.Event()
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Any] = []

    async def receive() -> Any:
        if pending:
            return pending.pop()
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("mock", 80),
        "root_path": "",
    }
    await server.app(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], content


@given(data=st.data(), start=st.sampled_from(STARTS))
def test_no_request_is_a_500_and_no_refusal_changes_anything(data: Any, start: dt.datetime) -> None:
    server, token = build(start)
    reqs = data.draw(st.lists(requests(token), min_size=1, max_size=6))

    async def go() -> None:
        for method, path, query, headers, body in reqs:
            before = full_state(server)
            status, content = await call(server, method, path, query, headers, body)
            assert status < 500, (status, content)
            if status == 204:  # a stop under anthropic: no body at all
                assert (method, content) == ("POST", b""), (method, path, content)
            elif method != "HEAD":
                answer = json.loads(content.decode("utf-8"))
                if status >= 400:
                    assert answer["type"] == "error"
                    assert answer["request_id"].startswith("req_")
                    assert len(answer["error"]["message"]) < 2100
            if status >= 400:
                assert full_state(server) == before, (method, path, query, body)
            for env in server._environments.values():
                for slot in env._by_seq.values():
                    assert not invariant_violations(slot.work), slot.work

    asyncio.run(go())
