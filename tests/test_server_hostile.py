"""Hostile input against the mock server: every refusal is an envelope and changes nothing.

One test (or more) per failure class of issue 9, through real HTTP on a loopback port where a
socket matters, else through the ASGI app in process.  ``full_state`` compares the server's
*complete* state (every record with its private lease fields, every index and counter), not
just the public JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import uvicorn
from helpers import ACK_LEASE, full_state

from workstate import InvalidInputError, ManualClock, WorkData
from workstate._environment import Environment
from workstate._time import EARLIEST, LATEST
from workstate.server import MockServer, _app, _cli, serve_in_thread
from workstate.server._limits import Limits, RequestTooLargeError

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def mock() -> MockServer:
    return MockServer(clock=ManualClock(T0), max_body_bytes=4096, read_timeout=0.3)


@pytest.fixture(scope="module")
def url(mock: MockServer) -> Iterator[str]:
    with serve_in_thread(mock) as base:
        yield base


@pytest.fixture
def http(url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture
def env() -> str:
    return f"env_{uuid.uuid4().hex[:16]}"


def work_path(env: str, *rest: str) -> str:
    return "/".join((f"/v1/environments/{env}/work", *rest))


def assert_envelope(r: httpx2.Response, status: int, error_type: str, *words: str) -> str:
    """The API's error envelope with this status and type; returns the message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = json.loads(r.content.decode("utf-8"))  # always valid UTF-8
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == r.headers["request-id"]
    message: str = body["error"]["message"]
    for word in words:
        assert word in message, message
    assert len(message) < 1000, len(message)
    return message


def raw_post(http: httpx2.Client, path: str, raw: str) -> httpx2.Response:
    """POST JSON text as written (so ``\\ud800`` escapes reach the server unchanged)."""
    return http.post(path, content=raw.encode(), headers={"content-type": "application/json"})


def raw_exchange(url: str, data: bytes, *, shut: bool = False) -> bytes:
    """Send raw bytes on a new connection; return everything the server answers until it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_raw(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return status, headers, json.loads(body)


def create(http: httpx2.Client, env: str, **body: Any) -> dict[str, Any]:
    r = http.post(f"/mock/environments/{env}/work", json=body or None)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------ 1. surrogates
SURROGATE_BODIES = [
    ("work_id", '{"work_id": "work_\\ud800"}', "work_id"),
    ("data.id", '{"data": {"type": "session", "id": "sesn_\\udfff"}}', "data.id"),
    ("metadata key", '{"metadata": {"\\ud800": "v"}}', "metadata key"),
    ("metadata value", '{"metadata": {"k": "a\\udc00b"}}', "metadata.k"),
    ("secret", '{"secret": "s\\ud834"}', "secret"),
]


@pytest.mark.parametrize(
    ("case", "raw", "word"), SURROGATE_BODIES, ids=[c[0] for c in SURROGATE_BODIES]
)
def test_an_unpaired_surrogate_is_refused_at_create(
    http: httpx2.Client, env: str, mock: MockServer, case: str, raw: str, word: str
) -> None:
    create(http, env)
    before = full_state(mock)
    r = raw_post(http, f"/mock/environments/{env}/work", raw)
    assert_envelope(r, 400, "invalid_request_error", word)
    assert full_state(mock) == before
    assert http.get(work_path(env)).status_code == 200


def test_an_unpaired_surrogate_in_a_metadata_update_changes_nothing(
    http: httpx2.Client, env: str, mock: MockServer
) -> None:
    item = create(http, env, metadata={"k": "v"})
    before = full_state(mock)
    for raw in ('{"metadata": {"\\ud800x": "v"}}', '{"metadata": {"k": "\\udbff"}}'):
        r = raw_post(http, work_path(env, item["id"]), raw)
        message = assert_envelope(r, 400, "invalid_request_error", "unpaired surrogate")
        assert "\\ud" in message or "index" in message  # escaped, never the raw code point
    assert full_state(mock) == before
    assert http.get(work_path(env, item["id"])).json() == item
    polled = http.get(work_path(env, "poll")).json()
    assert polled["id"] == item["id"]


def test_a_bad_metadata_key_is_echoed_escaped_and_short(http: httpx2.Client, env: str) -> None:
    item = create(http, env)
    r = raw_post(http, work_path(env, item["id"]), json.dumps({"metadata": {"x" * 3000: 1}}))
    message = assert_envelope(r, 400, "invalid_request_error", "3000 characters")
    assert len(message) < 300


def test_the_core_refuses_every_unrenderable_string() -> None:
    env = Environment("env_core")
    bad = "\ud800"
    with pytest.raises(InvalidInputError) as info:
        env.create(T0, secret=bad)
    assert info.value.key == "secret"
    with pytest.raises(InvalidInputError) as info:
        env.poll(T0, worker_id="w" + bad)
    assert info.value.key == "worker_id"
    with pytest.raises(InvalidInputError, match="at most 256") as info:
        env.poll(T0, worker_id="w" * 257)
    assert info.value.key == "worker_id"
    item = env.create(T0)
    env.poll(T0)
    env.ack(item.id, T0)
    with pytest.raises(InvalidInputError) as info:
        env.heartbeat(item.id, T0, expected_last_heartbeat="2026" + bad)
    assert info.value.key == "expected_last_heartbeat"
    assert len(env) == 1


def test_the_renderer_never_fails_on_a_string() -> None:
    from workstate.server._render import render_json

    assert render_json({"k": "é"}) == '{"k":"é"}'.encode()
    assert json.loads(render_json({"k": "\ud800"})) == {"k": "\ud800"}  # escaped, valid JSON
    assert render_json({"\udfff": 1}) == b'{"\\udfff":1}'


def test_an_error_message_can_always_be_rendered() -> None:
    from workstate import WorkstateError

    error = WorkstateError("bad \ud800 " + "x" * 10_000, status=400)
    rendered = json.dumps(error.to_json()).encode("utf-8")
    assert b"\\\\ud800" in rendered
    assert len(error.message) < 2100


# ------------------------------------------------------------------------------ 2. edge times
def test_the_year_1_clock_is_served_without_overflow() -> None:
    server = MockServer(clock=ManualClock(EARLIEST + dt.timedelta(seconds=10)))
    with serve_in_thread(server) as base, httpx2.Client(base_url=base) as http:
        r = http.post("/mock/environments/env_y1/work")
        assert r.status_code == 200, r.text
        polled = http.get(work_path("env_y1", "poll"), headers={"anthropic-worker-id": "w1"})
        assert polled.status_code == 200, polled.text
        stats = http.get(work_path("env_y1", "stats")).json()
        assert stats["workers_polling"] == 1
        assert stats["oldest_queued_at"] == "0001-01-01T00:00:10.000000Z"


def test_a_lease_ending_at_the_end_of_time_is_refused_and_one_just_before_works() -> None:
    ttl = 120
    # ACK_LEASE: the lease the ack starts is the point (anthropic's ack starts none).
    server = MockServer(profile=ACK_LEASE, clock=ManualClock(LATEST - dt.timedelta(seconds=ttl)))
    with serve_in_thread(server) as base, httpx2.Client(base_url=base) as http:
        item = http.post("/mock/environments/env_y9/work").json()
        assert http.get(work_path("env_y9", "poll")).json()["id"] == item["id"]
        before = full_state(server)
        r = http.post(work_path("env_y9", item["id"], "ack"))
        assert_envelope(r, 400, "invalid_request_error", "after the year 9999")
        assert full_state(server) == before
    near = LATEST - dt.timedelta(seconds=ttl, microseconds=1)
    server = MockServer(profile=ACK_LEASE, clock=ManualClock(near))
    with serve_in_thread(server) as base, httpx2.Client(base_url=base) as http:
        item = http.post("/mock/environments/env_y9/work").json()
        http.get(work_path("env_y9", "poll"))
        assert http.post(work_path("env_y9", item["id"], "ack")).status_code == 200
        empty = http.get(work_path("env_y9", "poll"), params={"block_ms": 5})
        assert (empty.status_code, empty.json()) == (200, None)
        assert http.get(work_path("env_y9", "stats")).status_code == 200
    assert server.environment("env_y9").next_change_at() == LATEST


def test_next_change_at_saturates_for_a_private_deadline_at_the_end_of_time() -> None:
    env = Environment("env_edge")
    item = env.create(T0)
    env.poll(T0)
    env.ack(item.id, T0)
    slot = env._slots[item.id]
    env._returning.add((LATEST, slot.seq))  # (the ack started no lease: only this one)
    slot.work = slot.work.__class__(**{**_fields(slot.work), "lease_expires_at": LATEST})
    assert env.next_change_at() == LATEST


def _fields(work: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(work, recurse=False)


# ------------------------------------------------------------------------------ 3. HEAD
def test_head_never_changes_state(http: httpx2.Client, env: str, mock: MockServer) -> None:
    item = create(http, env)
    before = full_state(mock)
    r = http.head(work_path(env, "poll"), headers={"anthropic-worker-id": "w1"})
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    for path in (
        work_path(env),
        work_path(env, "stats"),
        work_path(env, item["id"]),
        "/mock/clock",
    ):
        assert http.head(path).status_code == 200, path
    for path in (
        work_path(env, item["id"], "ack"),
        work_path(env, item["id"], "stop"),
        f"/mock/environments/{env}/work",
    ):
        assert http.head(path).status_code == 405, path
    assert full_state(mock) == before
    assert http.get(work_path(env, "poll")).json()["id"] == item["id"]


# ------------------------------------------------------------------------------ 4. ids
BAD_IDS = [
    ("slash", {"work_id": "work_a/b"}, "work_id"),
    ("query", {"work_id": "work_a?b"}, "work_id"),
    ("hash", {"work_id": "work_a#b"}, "work_id"),
    ("dots", {"work_id": "work_.."}, "work_id"),
    ("space", {"work_id": "work_a b"}, "work_id"),
    ("newline", {"work_id": "work_a\nb"}, "work_id"),
    ("long", {"work_id": "work_" + "x" * 3000}, "work_id"),
    ("data slash", {"data": {"type": "session", "id": "sesn/1"}}, "data.id"),
    ("data long", {"data": {"type": "session", "id": "s" * 129}}, "data.id"),
]


@pytest.mark.parametrize(("case", "body", "key"), BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_mock_ids_must_be_url_safe_and_bounded(
    http: httpx2.Client, env: str, mock: MockServer, case: str, body: Any, key: str
) -> None:
    before = full_state(mock)
    r = http.post(f"/mock/environments/{env}/work", json=body)
    assert_envelope(r, 400, "invalid_request_error", key, "A-Z a-z 0-9 _ -")
    assert full_state(mock) == before
    assert env not in mock.environment_ids()


def test_the_longest_id_is_accepted_and_can_be_acked(http: httpx2.Client, env: str) -> None:
    work_id = "work_" + "x" * 128
    assert create(http, env, work_id=work_id)["id"] == work_id
    assert http.get(work_path(env, "poll")).json()["id"] == work_id
    assert http.post(work_path(env, work_id, "ack")).status_code == 200


# ------------------------------------------------------------------------------ 5. metadata
@pytest.mark.parametrize("metadata", [[], False, 0, "", [["k", "v"]]])
def test_falsy_or_non_object_metadata_at_create_is_400(
    http: httpx2.Client, env: str, mock: MockServer, metadata: object
) -> None:
    before = full_state(mock)
    r = http.post(f"/mock/environments/{env}/work", json={"metadata": metadata})
    assert_envelope(r, 400, "invalid_request_error", "metadata")
    assert full_state(mock) == before


# ------------------------------------------------------------------------------ 6. reads
def test_reads_and_refused_writes_never_create_environments(
    http: httpx2.Client, mock: MockServer
) -> None:
    before = full_state(mock)
    for i in range(5):
        env = f"env_unseen{i}"
        assert http.get(work_path(env)).json() == {"data": [], "next_page": None}
        stats = http.get(work_path(env, "stats")).json()
        assert (stats["depth"], stats["workers_polling"]) == (0, None)
        assert http.get(work_path(env, "poll"), params={"block_ms": 2}).json() is None
        for step in ("", "/ack", "/heartbeat", "/stop"):
            method = "GET" if not step else "POST"
            r = http.request(method, work_path(env, "work_nope") + step)
            assert_envelope(r, 404, "not_found_error", "work_nope")
        r = http.post(work_path(env, "work_nope"), json={"metadata": {"a": "b"}})
        assert r.status_code == 404
        bad = http.get(
            work_path(env, "poll"), params={"block_ms": 0}, headers={"anthropic-worker-id": "w"}
        )
        assert bad.status_code == 400
        r = http.post(f"/mock/environments/{env}/work", json={"secret": 5})
        assert r.status_code == 400
    assert full_state(mock) == before


def test_a_named_poll_is_a_write_and_creates_its_environment(
    http: httpx2.Client, env: str, mock: MockServer
) -> None:
    r = http.get(work_path(env, "poll"), headers={"anthropic-worker-id": "w1"})
    assert r.json() is None
    assert env in mock.environment_ids()
    assert http.get(work_path(env, "stats")).json()["workers_polling"] == 1


# ------------------------------------------------------------------------------ 7. limits
def test_a_declared_oversized_body_is_413_before_anything_is_read(
    url: str, env: str, mock: MockServer
) -> None:
    before = full_state(mock)
    head = (
        f"POST /mock/environments/{env}/work HTTP/1.1\r\nhost: x\r\n"
        "content-type: application/json\r\ncontent-length: 2000000\r\n\r\n"
    )
    status, headers, body = parse_raw(raw_exchange(url, head.encode()))  # no body ever sent
    assert status == 413
    assert headers["connection"] == "close"
    assert body["error"]["type"] == "request_too_large"
    assert "4096" in body["error"]["message"]
    assert body["request_id"] == headers["request-id"]
    assert full_state(mock) == before


def test_a_declared_oversized_poll_body_delivers_nothing(
    url: str, http: httpx2.Client, env: str, mock: MockServer
) -> None:
    item = create(http, env)
    head = f"GET {work_path(env, 'poll')} HTTP/1.1\r\nhost: x\r\ncontent-length: 999999\r\n\r\n"
    status, _, _ = parse_raw(raw_exchange(url, head.encode()))
    assert status == 413
    assert http.get(work_path(env, "poll")).json()["id"] == item["id"]


def test_a_streamed_oversized_body_is_413_and_changes_nothing(
    url: str, env: str, mock: MockServer
) -> None:
    before = full_state(mock)
    chunk = b"x" * 1000
    data = (
        f"POST /mock/environments/{env}/work HTTP/1.1\r\nhost: x\r\n"
        "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    ).encode()
    data += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    status, headers, body = parse_raw(raw_exchange(url, data))
    assert status == 413
    assert body["error"]["type"] == "request_too_large"
    assert headers["connection"] == "close"
    assert full_state(mock) == before


def test_a_body_at_the_limit_is_accepted(http: httpx2.Client, env: str) -> None:
    body = json.dumps({"secret": ""})
    body = body[:-2] + " " * (4096 - len(body)) + '""}'
    body = json.dumps({"secret": "s" * (4096 - len('{"secret": ""}'))})
    assert len(body) == 4096
    assert raw_post(http, f"/mock/environments/{env}/work", body).status_code == 200
    assert raw_post(http, f"/mock/environments/{env}/work", body + " ").status_code == 413


def test_a_whole_but_oversized_head_is_431_in_the_envelope() -> None:
    server = MockServer(clock=ManualClock(T0))

    async def go() -> None:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            r = await client.get("/mock/clock", headers={"x-big": "a" * 20_000})
            assert_envelope(r, 431, "request_too_large", "16384")

    asyncio.run(go())


def test_a_huge_bad_id_is_not_echoed_in_full(http: httpx2.Client, env: str) -> None:
    r = http.get(work_path(env, "work_" + "x" * 8000))
    message = assert_envelope(r, 404, "not_found_error", "8005 characters")
    assert len(message) < 300
    r = http.get(work_path(env), params={"limit": "9" * 40})
    assert_envelope(r, 400, "invalid_request_error", "limit")


def test_limits_are_checked_when_the_server_is_built() -> None:
    for kwargs, key in (
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"max_body_bytes": True}, "max_body_bytes"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"read_timeout": float("inf")}, "read_timeout"),
    ):
        with pytest.raises(InvalidInputError) as info:
            MockServer(**kwargs)  # type: ignore[arg-type]
        assert info.value.key == key
    assert Limits().max_body_bytes == 1 << 20


# ------------------------------------------------------------------------------ 8. transport
def test_a_trailing_slash_is_an_enveloped_404(http: httpx2.Client, env: str) -> None:
    r = http.get(work_path(env) + "/", follow_redirects=False)
    assert_envelope(r, 404, "not_found_error", "trailing slash")
    r = http.post(work_path(env, "work_x", "ack") + "/", follow_redirects=False)
    assert_envelope(r, 404, "not_found_error")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/environments/env_\xff/work HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /mock/clock HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000,  # never ends
        b"POST /mock/clock HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["non-ascii path", "huge header", "bad chunk", "garbage"],
)
def test_malformed_http_is_answered_in_the_envelope(url: str, request_bytes: bytes) -> None:
    status, headers, body = parse_raw(raw_exchange(url, request_bytes))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["request_id"] == headers["request-id"]


# ------------------------------------------------------------------------------ 9. API keys
@pytest.mark.parametrize(
    ("key", "words"),
    [
        (" sk-test", "whitespace"),
        ("sk-test\n", "whitespace"),
        ("sk-тест", "Latin-1"),
        ("sk\x00test", "control"),
        ("", "empty"),
        (b"sk", "must be a string"),
    ],
)
def test_an_api_key_no_header_can_carry_is_refused_at_start_up(
    key: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InvalidInputError) as info:
        MockServer(api_key=key)  # type: ignore[arg-type]
    assert info.value.key == "api_key"
    assert words in info.value.message
    if isinstance(key, str):
        with pytest.raises(SystemExit) as exit_info:
            _cli.main(["--port", "0", "--api-key", key])
        assert exit_info.value.code == 2
        assert words in capsys.readouterr().err


def test_a_latin_1_key_with_inner_spaces_is_accepted_and_matches() -> None:
    server = MockServer(clock=ManualClock(T0), api_key="sk test é")

    async def go() -> None:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            r = await client.get(
                "/mock/clock", headers={"x-api-key": "sk test é".encode("latin-1")}
            )
            assert r.status_code == 200

    asyncio.run(go())


def test_the_command_refuses_a_bad_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli.main(["--port", "0", "--max-body-bytes", "0"])
    assert "--max-body-bytes" in capsys.readouterr().err


# ------------------------------------------------------------------------------ 10. orphans
def test_an_orphaned_long_poll_claims_nothing_asgi() -> None:
    """The client leaves mid-wait, and an item arrives at once: the orphan must not take it."""
    server = MockServer(clock=ManualClock(T0))
    sent: list[Any] = []

    async def go() -> None:
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> Any:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": work_path("env_orphan", "poll"),
            "raw_path": work_path("env_orphan", "poll").encode(),
            "query_string": b"block_ms=999",
            "headers": [(b"host", b"mock")],
            "client": ("127.0.0.1", 1),
            "server": ("mock", 80),
            "root_path": "",
        }
        task = asyncio.ensure_future(server.app(scope, receive, send))
        while "env_orphan" not in server._waiters:  # the poll is waiting
            await asyncio.sleep(0)
        gone.set()
        item = server.create_work("env_orphan")  # wakes the poll in the same instant
        await asyncio.wait_for(task, 5)
        assert server._waiters == {}
        polled = server.environment("env_orphan").poll(server.now())
        assert polled is not None
        assert polled.id == item.id

    asyncio.run(go())


def test_an_orphaned_long_poll_claims_nothing_over_http() -> None:
    server = MockServer(clock=ManualClock(T0))
    sock = _app.bind("127.0.0.1", 0)
    config = uvicorn.Config(
        server.app, log_level="warning", log_config=None, lifespan="off", **server.uvicorn_options()
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: uv.started)
        host, port = sock.getsockname()[:2]
        client = socket.create_connection((host, port), timeout=5)
        client.sendall(
            f"GET {work_path('env_gone', 'poll')}?block_ms=999 HTTP/1.1\r\nhost: x\r\n\r\n".encode()
        )
        _wait_for(lambda: "env_gone" in server._waiters)
        client.close()
        _wait_for(lambda: not uv.server_state.connections)  # the server saw the disconnect
        item = server.create_work("env_gone")
        with httpx2.Client(base_url=_app.base_url(sock)) as http:
            polled = http.get(work_path("env_gone", "poll"))
            assert polled.json()["id"] == item.id
        _wait_for(lambda: not server._waiters)
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


def _wait_for(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.002)


# ------------------------------------------------------------------------------ 11. timeouts
def test_trickling_headers_and_stalled_bodies_are_cut_off_while_others_are_served(
    url: str, http: httpx2.Client, env: str, mock: MockServer
) -> None:
    host, port = url.removeprefix("http://").split(":")
    before = full_state(mock)
    trickler = socket.create_connection((host, int(port)), timeout=0.05)
    staller = socket.create_connection((host, int(port)), timeout=10)
    silent = socket.create_connection((host, int(port)), timeout=10)
    socket.create_connection((host, int(port))).close()  # gone at once: its timer is dropped
    with trickler, staller, silent:
        trickler.sendall(b"GET /mock/clock HTTP/1.1\r\nhost: x\r\n")
        staller.sendall(
            f"POST /mock/environments/{env}/work HTTP/1.1\r\nhost: x\r\n"
            "content-type: application/json\r\ncontent-length: 100\r\n\r\n{".encode()
        )
        # Others are served meanwhile.
        assert http.get("/mock/clock").status_code == 200
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a header line every 50 ms, never the last one
            try:
                chunk = trickler.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    trickler.sendall(b"x-slow: 1\r\n")
                continue
            if not chunk:
                break
            answer += chunk
        status, headers, body = parse_raw(answer)
        assert (status, body["error"]["type"]) == (408, "request_timeout")
        assert headers["connection"] == "close"
        stalled = b""
        while chunk := staller.recv(65536):
            stalled += chunk
        status, headers, body = parse_raw(stalled)
        assert (status, body["error"]["type"]) == (408, "request_timeout")
        assert silent.recv(65536) == b""  # nothing sent, nothing answered: closed quietly
    assert http.get("/mock/clock").status_code == 200
    assert full_state(mock) == before


def _read_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and a content-length body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: (\d+)", head.lower())
    assert found is not None
    length = int(found.group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_busy_keep_alive_connection_outlives_the_read_timeout_and_its_later_heads_are_bound(
    url: str,
) -> None:
    """Requests that keep arriving whole for longer than --read-timeout (0.3 s) are all
    served on one connection; then a head that trickles on it is answered 408."""
    host, port = url.removeprefix("http://").split(":")
    request = b"GET /mock/clock HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        begun = time.monotonic()
        served = 0
        while time.monotonic() - begun < 1.0:  # > 3 deadlines of a head, each one met
            sock.sendall(request)
            assert parse_raw(_read_answer(sock))[0] == 200
            served += 1
            time.sleep(0.02)
        assert served > 10
        sock.sendall(b"GET /mock/clock HTTP/1.1\r\n")  # the next head never ends
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, headers, body = parse_raw(answer)
    assert (status, body["error"]["type"]) == (408, "request_timeout")
    assert headers["connection"] == "close"


def test_an_unread_body_still_arriving_after_the_answer_is_cut_off(url: str, env: str) -> None:
    # An ack does not read its body; the body's rest never comes.
    data = (
        f"POST {work_path(env, 'work_x', 'ack')} HTTP/1.1\r\nhost: x\r\n"
        "content-length: 50\r\n\r\n{"
    ).encode()
    answer = raw_exchange(url, data)
    status, _, body = parse_raw(answer)
    assert status == 404
    assert body["error"]["type"] == "not_found_error"


def test_a_stalled_body_is_a_408_in_process() -> None:
    server = MockServer(clock=ManualClock(T0), read_timeout=0.05)

    async def go() -> list[Any]:
        sent: list[Any] = []

        async def receive() -> Any:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")  # pragma: no cover

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/mock/environments/env_stall/work",
            "raw_path": b"/mock/environments/env_stall/work",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        await server.app(scope, receive, send)
        return sent

    sent = asyncio.run(go())
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["type"] == "request_timeout"
    assert server.environment_ids() == []


async def _asgi(server: MockServer, scope: dict[str, Any], messages: list[Any]) -> list[Any]:
    """Call the app with ``messages`` as the request; then the client waits for the answer."""
    sent: list[Any] = []
    done = asyncio.Event()

    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    base = {"type": "http", "query_string": b"", "headers": [], "raw_path": b""}
    await server.app({**base, **scope}, receive, send)
    return sent


@pytest.mark.parametrize("route", ["stop", "update", "create"])
def test_a_client_that_leaves_mid_body_changes_nothing(
    route: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The part that arrived (``{}``) is valid JSON; it must not be applied as the whole body.
    The request ends as a client that left (uvicorn answers nobody): the app raises nothing
    out, and the journal records no answer delivered."""
    server = MockServer(clock=ManualClock(T0), seed=3)
    work = server.create_work("env_left", work_id="work_l")
    with server.lock:
        env = server.environment("env_left")
        env.poll(server.now())
        env.ack("work_l", server.now())
    before = full_state(server)
    path = {
        "stop": "/v1/environments/env_left/work/work_l/stop",
        "update": "/v1/environments/env_left/work/work_l",
        "create": "/mock/environments/env_left/work",
    }[route]
    messages: list[Any] = [
        {"type": "http.request", "body": b"{}", "more_body": True},
        {"type": "http.disconnect"},
    ]
    scope = {"method": "POST", "path": path, "headers": [(b"transfer-encoding", b"chunked")]}
    with caplog.at_level(logging.ERROR, logger="workstate.server"):
        sent = asyncio.run(_asgi(server, scope, messages))
    assert sent == []  # nobody to answer
    assert caplog.records == []  # a client that leaves is no server error
    assert full_state(server) == before
    assert work.id == "work_l"
    (entry,) = server.harness.entries(operation=route)
    assert (entry["status"], entry["response"], entry["applied"]) == (None, None, False)


def test_a_long_poll_whose_body_grows_too_large_is_413() -> None:
    server = MockServer(clock=ManualClock(T0), max_body_bytes=100)
    messages = [
        {"type": "http.request", "body": b"x" * 10, "more_body": True},
        {"type": "http.request", "body": b"x" * 500, "more_body": False},
    ]
    scope = {"method": "GET", "path": work_path("env_big", "poll"), "query_string": b"block_ms=50"}
    sent = asyncio.run(_asgi(server, scope, messages))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["type"] == "request_too_large"
    assert server.environment_ids() == []


def test_a_content_length_that_is_no_number_is_left_to_the_body_count() -> None:
    server = MockServer(clock=ManualClock(T0))
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    scope = {
        "method": "POST",
        "path": "/mock/environments/env_cl/work",
        "headers": [(b"content-length", b"abc")],
    }
    sent = asyncio.run(_asgi(server, scope, messages))
    assert sent[0]["status"] == 200


def test_the_body_limit_error_is_a_workstate_error() -> None:
    error = RequestTooLargeError("too big")
    assert (error.status, error.error_type) == (413, "request_too_large")


def test_a_woken_long_poll_that_finds_nothing_waits_again() -> None:
    """Two polls wait; one item arrives; one poll takes it, the other waits out its time."""
    server = MockServer(clock=ManualClock(T0))

    async def go() -> list[Any]:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            url = work_path("env_two", "poll")
            polls = [
                asyncio.ensure_future(client.get(url, params={"block_ms": 300})),
                # With a (declared) body: the watcher reads past it, then waits for the end.
                asyncio.ensure_future(
                    client.request("GET", url, params={"block_ms": 300}, content=b"{}")
                ),
            ]
            while len(server._waiters.get("env_two", ())) < 2:
                await asyncio.sleep(0.001)
            item = server.create_work("env_two")
            answers = [(await p).json() for p in polls]
            assert server._waiters == {}
            return [None if a is None else a["id"] for a in answers] + [item.id]

    *answers, item_id = asyncio.run(go())
    assert sorted(answers, key=str) == sorted([None, item_id], key=str)


def test_head_on_every_get_route_changes_nothing() -> None:
    """Every route that answers GET, with real ids filled in: HEAD leaves the full state as is."""
    from starlette.routing import Route

    server = MockServer(clock=ManualClock(T0))
    item = server.create_work("env_head", work_id="work_h", data=WorkData(id="sesn_h"))
    server.create_work("env_head", work_id="work_i")
    values = {"environment_id": "env_head", "work_id": item.id, "session_id": item.data.id}
    paths = []
    for route in server.app.routes:
        assert isinstance(route, Route)
        if "GET" in (route.methods or ()):
            paths.append(route.path.format(**values))
    assert len(paths) >= 8  # the work API's, the mock's and the sessions' reads

    async def go() -> None:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            for path in paths:
                before = full_state(server)
                r = await client.head(path, headers={"anthropic-worker-id": "w1"})
                assert r.status_code in (200, 405), (path, r.status_code)
                assert full_state(server) == before, path

    asyncio.run(go())
