"""The mock server over raw HTTP: exact paths, JSON, headers, errors, long polls, the command.

Most tests talk to a real uvicorn server on a loopback ephemeral port (one per module, on a
manual clock, each test in an environment of its own); a few run the ASGI app in process
through ``httpx2.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from workstate import (
    NO_HEARTBEAT,
    QODER,
    WORK_KEYS,
    ManualClock,
    State,
    WorkData,
    format_time,
    invariant_violations,
)
from workstate._environment import Environment
from workstate.server import MockServer, _app, _cli, serve_in_thread
from workstate.server._harness import HarnessMiddleware

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)
REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def mock() -> MockServer:
    return MockServer(clock=ManualClock(T0))


@pytest.fixture(scope="module")
def url(mock: MockServer) -> Iterator[str]:
    with serve_in_thread(mock) as base:
        yield base


@pytest.fixture
def http(url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=url, timeout=10, verify=False) as client:
        yield client


@pytest.fixture
def env() -> str:
    return f"env_{uuid.uuid4().hex[:16]}"


def work_path(env: str, *rest: str) -> str:
    return "/".join((f"/v1/environments/{env}/work", *rest))


def create(http: httpx2.Client, env: str, **body: Any) -> dict[str, Any]:
    r = http.post(f"/mock/environments/{env}/work", json=body or None)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_error(r: httpx2.Response, status: int, error_type: str, *words: str) -> dict[str, Any]:
    """The response is the API's error envelope with this status and type, naming ``words``.

    An empty ``error_type`` stands for ``invalid_request_error``.
    """
    error_type = error_type or "invalid_request_error"
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["type", "error", "request_id"]
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == r.headers["request-id"]
    assert REQUEST_ID.fullmatch(body["request_id"])
    for word in words:
        assert word in body["error"]["message"], body["error"]["message"]
    return body  # type: ignore[no-any-return]


def claim(http: httpx2.Client, env: str) -> tuple[str, str]:
    """Create, poll, ack and heartbeat an item; return its id and the last_heartbeat token."""
    item = create(http, env)
    polled = http.get(work_path(env, "poll")).json()
    assert polled["id"] == item["id"]
    assert http.post(work_path(env, item["id"], "ack")).status_code == 200
    beat = http.post(
        work_path(env, item["id"], "heartbeat"),
        params={"expected_last_heartbeat": NO_HEARTBEAT},
    )
    assert beat.status_code == 200, beat.text
    return item["id"], beat.json()["last_heartbeat"]


# ------------------------------------------------------------------------------ the endpoints
def test_a_whole_life_over_http(http: httpx2.Client, env: str, mock: MockServer) -> None:
    made = create(
        http,
        env,
        data={"type": "session", "id": "sesn_life"},
        metadata={"team": "a"},
        secret="s3cret",
    )
    assert list(made) == list(WORK_KEYS)
    assert made["state"] == "queued"
    assert made["environment_id"] == env
    assert made["data"] == {"type": "session", "id": "sesn_life"}
    assert made["metadata"] == {"team": "a"}
    assert made["secret"] is None  # only a poll's answer carries the secret
    assert made["created_at"] == format_time(mock.now())
    work_id = made["id"]

    r = http.get(work_path(env, "poll"), params={"beta": "true", "block_ms": 10})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert REQUEST_ID.fullmatch(r.headers["request-id"])
    polled = r.json()
    assert polled["id"] == work_id
    assert polled["secret"] == "s3cret"
    assert polled["state"] == "queued"

    acked = http.post(work_path(env, work_id, "ack"), params={"beta": "true"}).json()
    assert acked["state"] == "starting"
    assert acked["secret"] is None
    assert acked["acknowledged_at"] is not None

    beat = http.post(
        work_path(env, work_id, "heartbeat"),
        params={"expected_last_heartbeat": NO_HEARTBEAT, "desired_ttl_seconds": 3600},
    ).json()
    assert list(beat) == ["type", "last_heartbeat", "lease_extended", "state", "ttl_seconds"]
    assert beat["type"] == "work_heartbeat"
    assert beat["state"] == "active"
    assert beat["lease_extended"] is True
    assert beat["ttl_seconds"] == 600  # clamped into the profile's range
    token = beat["last_heartbeat"]
    mock.advance(1)
    beat = http.post(
        work_path(env, work_id, "heartbeat"), params={"expected_last_heartbeat": token}
    ).json()
    assert beat["last_heartbeat"] != token
    assert beat["ttl_seconds"] == 120

    got = http.get(work_path(env, work_id)).json()
    assert got["state"] == "active"
    assert got["latest_heartbeat_at"] == beat["last_heartbeat"]
    assert got["secret"] is None

    updated = http.post(work_path(env, work_id), json={"metadata": {"team": None, "k": "v"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["metadata"] == {"k": "v"}
    assert http.post(work_path(env, work_id), json={}).json()["metadata"] == {"k": "v"}

    listing = http.get(work_path(env)).json()
    assert list(listing) == ["data", "next_page"]
    assert [w["id"] for w in listing["data"]] == [work_id]

    stats = http.get(work_path(env, "stats")).json()
    assert stats["type"] == "work_queue_stats"
    assert stats["depth"] == 0
    assert stats["pending"] == 0

    # anthropic: a stop answers 204 with no body (docs/divergences.md); read the item back.
    r = http.post(work_path(env, work_id, "stop"), json={"force": False})
    assert (r.status_code, r.content) == (204, b"")
    stopping = http.get(work_path(env, work_id)).json()
    assert stopping["state"] == "stopping"
    assert stopping["stop_requested_at"] is not None
    r = http.post(work_path(env, work_id, "stop"))  # an empty body is allowed
    assert (r.status_code, r.content) == (204, b"")
    stopped = http.get(work_path(env, work_id)).json()
    assert stopped["state"] == "stopped"
    assert stopped["stopped_at"] is not None

    record = mock.environment(env).get(work_id, mock.now())
    assert record.state is State.STOPPED
    assert invariant_violations(record) == []


def test_an_empty_poll_answers_the_json_literal_null(http: httpx2.Client, env: str) -> None:
    r = http.get(work_path(env, "poll"))
    assert r.status_code == 200
    assert r.content == b"null"
    assert r.headers["content-type"] == "application/json"


def test_the_worker_id_header_is_counted_in_the_stats(http: httpx2.Client, env: str) -> None:
    assert http.get(work_path(env, "stats")).json()["workers_polling"] is None
    for worker in ("w-1", "w-2", "w-1"):
        http.get(work_path(env, "poll"), headers={"Anthropic-Worker-ID": worker})
    assert http.get(work_path(env, "stats")).json()["workers_polling"] == 2


def test_force_stop_and_stop_body_forms(http: httpx2.Client, env: str) -> None:
    work_id, _ = claim(http, env)
    r = http.post(
        work_path(env, work_id, "stop"),
        content=b'{"force": true}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 204
    record = http.get(work_path(env, work_id)).json()
    assert record["state"] == "stopped"
    assert record["stop_requested_at"] is None


def test_listing_pages_through_every_item(http: httpx2.Client, env: str) -> None:
    ids = [create(http, env)["id"] for _ in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = http.get(work_path(env), params=params).json()
        assert len(page["data"]) <= 2
        seen += [w["id"] for w in page["data"]]
        if page["next_page"] is None:
            break
        params = {"limit": 2, "page": page["next_page"]}
    assert seen == ids


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("path", "params", "key"),
    [
        ("poll", {"block_ms": "soon"}, "block_ms"),
        ("poll", {"block_ms": "1.5"}, "block_ms"),
        ("poll", {"block_ms": ""}, "block_ms"),
        ("poll", {"block_ms": "0"}, "block_ms"),
        ("poll", {"block_ms": "1000"}, "block_ms"),
        ("poll", {"reclaim_older_than_ms": "x"}, "reclaim_older_than_ms"),
        ("poll", {"reclaim_older_than_ms": "-1"}, "reclaim_older_than_ms"),
        ("", {"limit": "many"}, "limit"),
        ("", {"limit": "0"}, "limit"),
        ("", {"limit": "1001"}, "limit"),
    ],
)
def test_bad_query_parameters_are_400_naming_them(
    http: httpx2.Client, env: str, path: str, params: dict[str, str], key: str
) -> None:
    r = http.get(work_path(env, path) if path else work_path(env), params=params)
    assert_error(r, 400, "invalid_request_error", key)


def test_a_bad_page_cursor_is_400(http: httpx2.Client, env: str) -> None:
    create(http, env)
    assert_error(http.get(work_path(env), params={"page": "garbage"}), 400, "invalid_request_error")


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"desired_ttl_seconds": "long"}, "desired_ttl_seconds"),
        ({"desired_ttl_seconds": "0"}, "desired_ttl_seconds"),
        ({"expected_last_heartbeat": "yesterday"}, "expected_last_heartbeat"),
        ({"expected_last_heartbeat": "2026-07-01T08:15:00"}, "expected_last_heartbeat"),
    ],
)
def test_bad_heartbeat_parameters_are_400_and_change_nothing(
    http: httpx2.Client, env: str, params: dict[str, str], key: str
) -> None:
    work_id, _ = claim(http, env)
    before = http.get(work_path(env, work_id)).json()
    r = http.post(work_path(env, work_id, "heartbeat"), params=params)
    assert_error(r, 400, "invalid_request_error", key)
    assert http.get(work_path(env, work_id)).json() == before


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", ("not valid JSON",)),
        (b"\xff\xfe", ("not valid JSON",)),
        (b"[true]", ("JSON object", "list")),
        (b'"force"', ("JSON object", "str")),
        (b'{"force": "yes"}', ("force",)),
        (b'{"force": null}', ("force",)),
        (b'{"force": true, "now": 1}', ("unknown key 'now'",)),
    ],
)
def test_bad_stop_bodies_are_400_and_change_nothing(
    http: httpx2.Client, env: str, content: bytes, words: tuple[str, ...]
) -> None:
    work_id, _ = claim(http, env)
    before = http.get(work_path(env, work_id)).json()
    r = http.post(
        work_path(env, work_id, "stop"),
        content=content,
        headers={"content-type": "application/json"},
    )
    assert_error(r, 400, "invalid_request_error", *words)
    assert http.get(work_path(env, work_id)).json() == before


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"metadata": "x"}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {}, "state": "active"}, "state"),
    ],
)
def test_bad_metadata_updates_are_400_and_change_nothing(
    http: httpx2.Client, env: str, body: dict[str, Any], key: str
) -> None:
    work_id = create(http, env, metadata={"a": "1"})["id"]
    before = http.get(work_path(env, work_id)).json()
    assert_error(http.post(work_path(env, work_id), json=body), 400, "invalid_request_error", key)
    assert http.get(work_path(env, work_id)).json() == before


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"data": {"type": "session"}}, "data"),
        ({"data": {"type": "chat", "id": "sesn_1"}}, "data.type"),
        ({"data": "sesn_1"}, "data"),
        ({"metadata": {"k": 2}}, "metadata.k"),
        ({"secret": 5}, "secret"),
        ({"session": "sesn_1"}, "session"),
    ],
)
def test_bad_mock_creations_are_400_and_create_nothing(
    http: httpx2.Client, env: str, body: dict[str, Any], key: str
) -> None:
    r = http.post(f"/mock/environments/{env}/work", json=body)
    assert_error(r, 400, "invalid_request_error", key)
    assert http.get(work_path(env)).json()["data"] == []


# ------------------------------------------------------------------------------ 404, 405, 409, 412
def test_unknown_routes_items_and_environments_are_404(http: httpx2.Client, env: str) -> None:
    assert_error(http.get("/v1/nothing"), 404, "not_found_error", "/v1/nothing")
    assert_error(http.get("/"), 404, "not_found_error")
    assert_error(http.get(work_path(env, "work_nope")), 404, "not_found_error", "work_nope")
    assert_error(http.post(work_path(env, "work_nope", "ack")), 404, "not_found_error")
    assert_error(http.get(work_path("project_1", "poll")), 404, "not_found_error", "project_1")
    assert_error(http.get(work_path("env_", "stats")), 404, "not_found_error")
    assert_error(http.get(work_path(env, "w", "x", "y")), 404, "not_found_error")


def test_a_wrong_method_is_405_with_allow(http: httpx2.Client, env: str) -> None:
    r = http.delete(work_path(env, "work_1"))
    assert_error(r, 405, "invalid_request_error", "DELETE")
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    r = http.get(work_path(env, "work_1", "ack"))
    assert_error(r, 405, "invalid_request_error")
    assert r.headers["allow"] == "POST"
    for reserved in ("poll", "stats"):
        r = http.post(work_path(env, reserved), json={"metadata": {}})
        assert_error(r, 405, "invalid_request_error", "POST")
        assert r.headers["allow"] == "GET"
    assert_error(http.put("/mock/clock"), 405, "invalid_request_error")


def test_illegal_moves_are_409_and_change_nothing(http: httpx2.Client, env: str) -> None:
    work_id = create(http, env)["id"]
    r = http.post(work_path(env, work_id, "heartbeat"))
    assert_error(r, 409, "conflict_error", "queued")
    http.post(work_path(env, work_id, "stop"), json={"force": True})
    before = http.get(work_path(env, work_id)).json()
    assert_error(http.post(work_path(env, work_id, "ack")), 409, "conflict_error", "stopped")
    assert_error(http.post(work_path(env, work_id, "stop")), 409, "conflict_error")
    assert http.get(work_path(env, work_id)).json() == before


def test_a_stale_heartbeat_is_412_with_the_current_state(http: httpx2.Client, env: str) -> None:
    work_id, token = claim(http, env)
    r = http.post(
        work_path(env, work_id, "heartbeat"), params={"expected_last_heartbeat": NO_HEARTBEAT}
    )
    body = assert_error(r, 412, "invalid_request_error")
    assert body["error"]["error_code"] == "heartbeat_precondition_failed"
    assert body["error"]["details"] == {
        "error_code": "heartbeat_precondition_failed",
        "current_state": {
            "state": "active",
            "last_heartbeat": token,
            "lease_extended": False,
            "ttl_seconds": 120,
        },
    }


# ------------------------------------------------------------------------------ the clock
def test_the_manual_clock_moves_only_forward(http: httpx2.Client, mock: MockServer) -> None:
    now = http.get("/mock/clock").json()
    assert now == {"now": format_time(mock.now()), "clock": "manual"}
    moved = http.post("/mock/clock", json={"advance_seconds": 1.5}).json()
    assert moved["now"] == format_time(mock.now())
    assert dt.datetime.fromisoformat(moved["now"]) - dt.datetime.fromisoformat(
        now["now"]
    ) == dt.timedelta(seconds=1.5)
    later = format_time(mock.now() + dt.timedelta(seconds=2))
    assert http.post("/mock/clock", json={"now": later}).json()["now"] == later
    before = http.get("/mock/clock").json()
    assert_error(http.post("/mock/clock", json={"now": now["now"]}), 400, "", "backwards")
    assert_error(http.post("/mock/clock", json={"advance_seconds": -1}), 400, "", "advance")
    assert_error(http.post("/mock/clock", json={"advance_seconds": "1"}), 400, "", "advance")
    assert_error(http.post("/mock/clock", json={"now": "2026-07-01 08:00"}), 400, "", "now")
    assert_error(http.post("/mock/clock", json={}), 400, "", "exactly one")
    r = http.post("/mock/clock", json={"now": later, "advance_seconds": 1})
    assert_error(r, 400, "", "exactly one")
    assert http.get("/mock/clock").json() == before


def test_leases_expire_as_the_clock_passes(http: httpx2.Client, env: str, mock: MockServer) -> None:
    work_id, token = claim(http, env)
    http.post("/mock/clock", json={"advance_seconds": 120})
    # The deadline itself still belongs to the lease.
    assert http.get(work_path(env, work_id)).json()["state"] == "active"
    http.post("/mock/clock", json={"advance_seconds": 0.001})
    # Seen by a read and by the stats without any poll.
    got = http.get(work_path(env, work_id)).json()
    assert got["state"] == "queued"
    assert got["acknowledged_at"] is None
    assert http.get(work_path(env, "stats")).json()["depth"] == 1
    r = http.post(work_path(env, work_id, "heartbeat"), params={"expected_last_heartbeat": token})
    body = assert_error(r, 412, "invalid_request_error")
    assert body["error"]["details"]["current_state"]["state"] == "queued"
    assert body["error"]["details"]["current_state"]["last_heartbeat"] is None
    assert http.get(work_path(env, "poll")).json()["id"] == work_id


def test_unacked_deliveries_are_reclaimed_after_the_window(
    http: httpx2.Client, env: str, mock: MockServer
) -> None:
    work_id = create(http, env)["id"]
    assert http.get(work_path(env, "poll")).json()["id"] == work_id
    assert http.get(work_path(env, "poll")).json() is None
    stats = http.get(work_path(env, "stats")).json()
    assert stats["depth"] == 0
    assert stats["pending"] == 1
    mock.advance(4.999)
    assert http.get(work_path(env, "poll")).json() is None
    mock.advance(0.001)  # the window is inclusive
    assert http.get(work_path(env, "poll"), params={"reclaim_older_than_ms": 500}).json()
    mock.advance(0.5)  # the reclaiming poll's window decides: 0.5 s old is enough for 500 ms
    assert http.get(work_path(env, "poll")).json() is None
    polled = http.get(work_path(env, "poll"), params={"reclaim_older_than_ms": 500}).json()
    assert polled["id"] == work_id


def test_a_real_clock_server_refuses_to_move_time() -> None:
    server = MockServer()
    assert not server.manual_clock

    async def go() -> None:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            r = await client.post("/mock/clock", json={"advance_seconds": 1})
            assert_error(r, 409, "conflict_error", "--clock manual")
            clock = (await client.get("/mock/clock")).json()
            assert clock["clock"] == "real"

    asyncio.run(go())


# ------------------------------------------------------------------------------ long polls
def test_a_long_poll_answers_as_soon_as_work_arrives(http: httpx2.Client, env: str) -> None:
    result: dict[str, Any] = {}

    def poll() -> None:
        start = time.monotonic()
        r = http.get(work_path(env, "poll"), params={"block_ms": 999})
        result.update(body=r.json(), elapsed=time.monotonic() - start)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.15)
    with httpx2.Client(base_url=str(http.base_url), verify=False) as other:
        work_id = create(other, env)["id"]
    thread.join(5)
    assert result["body"]["id"] == work_id
    assert result["elapsed"] < 0.9


def test_an_empty_long_poll_waits_for_its_time(http: httpx2.Client, env: str) -> None:
    start = time.monotonic()
    r = http.get(work_path(env, "poll"), params={"block_ms": 300})
    elapsed = time.monotonic() - start
    assert r.json() is None
    assert 0.28 <= elapsed < 2


def test_long_polls_do_not_block_other_requests(url: str, env: str) -> None:
    def long_poll() -> None:
        with httpx2.Client(base_url=url, verify=False) as c:
            c.get(work_path(env, "poll"), params={"block_ms": 999})

    pollers = [threading.Thread(target=long_poll) for _ in range(8)]
    for t in pollers:
        t.start()
    time.sleep(0.1)
    with httpx2.Client(base_url=url, verify=False) as c:
        start = time.monotonic()
        assert c.get(work_path(env, "stats")).status_code == 200
        assert time.monotonic() - start < 0.5
    for t in pollers:
        t.join(5)


def test_a_creation_from_another_thread_wakes_a_long_poll(
    http: httpx2.Client, env: str, mock: MockServer
) -> None:
    timer = threading.Timer(0.15, lambda: mock.create_work(env))
    timer.start()
    start = time.monotonic()
    polled = http.get(work_path(env, "poll"), params={"block_ms": 999}).json()
    timer.join()
    assert polled is not None
    assert time.monotonic() - start < 0.9


def test_moving_the_clock_wakes_a_long_poll_for_a_reclaimed_item(
    http: httpx2.Client, env: str, mock: MockServer
) -> None:
    work_id = create(http, env)["id"]
    http.get(work_path(env, "poll"))
    timer = threading.Timer(0.15, lambda: mock.advance(5))
    timer.start()
    start = time.monotonic()
    polled = http.get(work_path(env, "poll"), params={"block_ms": 999}).json()
    timer.join()
    assert polled["id"] == work_id
    assert time.monotonic() - start < 0.9


def test_on_the_real_clock_a_long_poll_sees_a_redelivery() -> None:
    server = MockServer()
    env = "env_real"
    with serve_in_thread(server) as base, httpx2.Client(base_url=base, verify=False) as http:
        work_id = create(http, env)["id"]
        params = {"reclaim_older_than_ms": 200}
        assert http.get(work_path(env, "poll"), params=params).json()["id"] == work_id
        start = time.monotonic()
        polled = http.get(work_path(env, "poll"), params={"block_ms": 999, **params}).json()
        elapsed = time.monotonic() - start
    assert polled is not None
    assert polled["id"] == work_id
    assert 0.1 <= elapsed < 0.9


# ------------------------------------------------------------------------------ auth, ids, 500
def test_an_api_key_is_required_when_configured() -> None:
    server = MockServer(api_key="sk-test", clock=ManualClock(T0))

    async def go() -> None:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            path = work_path("env_auth", "stats")
            for headers in (
                {},
                {"x-api-key": "wrong"},
                {"authorization": "Bearer wrong"},
                {"authorization": "Basic sk-test"},
                {"authorization": "sk-test"},
            ):
                r = await client.get(path, headers=headers)
                assert_error(r, 401, "authentication_error", "x-api-key", "Bearer")
            # Auth comes first: an unknown route without the key is 401 too.
            assert_error(await client.get("/nowhere"), 401, "authentication_error")
            for headers in (
                {"x-api-key": "sk-test"},
                {"authorization": "Bearer sk-test"},
                {"authorization": "bearer sk-test"},
                {"x-api-key": "wrong", "authorization": "Bearer sk-test"},
            ):
                r = await client.get(path, headers=headers)
                assert r.status_code == 200, headers
                assert REQUEST_ID.fullmatch(r.headers["request-id"])
            # A header given twice counts once, its first value (as Starlette's Headers.get).
            for name, value in (("x-api-key", "sk-test"), ("authorization", "Bearer sk-test")):
                twice = [(name, value), (name, "wrong")]
                assert (await client.get(path, headers=twice)).status_code == 200, twice
                r = await client.get(path, headers=twice[::-1])
                assert_error(r, 401, "authentication_error", "x-api-key", "Bearer")

    asyncio.run(go())


def test_every_response_has_its_own_request_id(http: httpx2.Client, env: str) -> None:
    ids = {http.get(work_path(env, "stats")).headers["request-id"] for _ in range(5)}
    ids.add(http.get("/nowhere").headers["request-id"])
    assert len(ids) == 6
    assert all(REQUEST_ID.fullmatch(i) for i in ids)


def test_an_unexpected_failure_is_a_500_envelope(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = MockServer(clock=ManualClock(T0))

    def boom(self: Environment, now: dt.datetime) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Environment, "stats", boom)

    async def go() -> None:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            r = await client.get(work_path("env_boom", "stats"))
            assert_error(r, 500, "api_error", "unexpectedly")

    with caplog.at_level("ERROR", logger="workstate.server"):
        asyncio.run(go())
    assert "boom" in caplog.text


# ------------------------------------------------------------------------------ the Python API
def test_the_python_api_matches_the_mock_endpoints() -> None:
    server = MockServer(profile=QODER, clock=ManualClock(T0), id_factory=iter_ids())
    work = server.create_work("env_py", data=WorkData(id="sesn_py"), metadata={"a": "b"})
    assert work.id == "work_0001"
    assert work.profile is QODER
    assert server.environment_ids() == ["env_py"]
    assert server.environment("env_py").get(work.id, T0) == work
    assert server.set_time(T0 + dt.timedelta(seconds=3)) == T0 + dt.timedelta(seconds=3)
    assert server.advance(2) == server.now() == T0 + dt.timedelta(seconds=5)
    real = MockServer()
    with pytest.raises(Exception, match="real clock") as info:
        real.advance(1)
    assert getattr(info.value, "status", None) == 409


def iter_ids() -> Any:
    counter = iter(range(1, 10**6))
    return lambda prefix: f"{prefix}{next(counter):04d}"


def test_the_time_never_goes_backwards_even_if_the_clock_does() -> None:
    class SteppingClock:
        def __init__(self) -> None:
            self.times = [T0 + dt.timedelta(seconds=10), T0]

        def now(self) -> dt.datetime:
            return self.times.pop(0) if len(self.times) > 1 else self.times[0]

    server = MockServer(clock=SteppingClock())  # type: ignore[arg-type]
    assert server.now() == T0 + dt.timedelta(seconds=10)
    assert server.now() == T0 + dt.timedelta(seconds=10)


def test_an_in_process_client_through_asgi_transport() -> None:
    server = MockServer(clock=ManualClock(T0))

    async def go() -> None:
        transport = httpx2.ASGITransport(app=server.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://mock") as client:
            await client.post("/mock/environments/env_asgi/work")
            polled = await client.get(work_path("env_asgi", "poll"), params={"block_ms": 5})
            work_id = polled.json()["id"]
            assert (await client.post(work_path("env_asgi", work_id, "ack"))).status_code == 200
            # An empty long poll in process waits on the manual clock's wake-up, then answers.
            r = await client.get(work_path("env_asgi", "poll"), params={"block_ms": 50})
            assert r.json() is None

    asyncio.run(go())


# ------------------------------------------------------------------------------ packaging, command
def test_importing_the_server_without_starlette_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = {k: v for k, v in sys.modules.items() if k.startswith("workstate.server")}
    for name in saved:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'sandbox-workstate\[server\]'"):
            importlib.import_module("workstate.server")
    finally:
        for name in [k for k in sys.modules if k.startswith("workstate.server")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_the_command_builds_the_server_it_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(server: MockServer, sock: socket.socket, log_level: str, **options: Any) -> None:
        seen.update(server=server, port=sock.getsockname()[1], log_level=log_level)

    monkeypatch.setattr(_cli, "serve", fake_serve)
    argv = ["--port", "0", "--profile", "qoder", "--api-key", "k", "--log-level", "warning"]
    argv += ["--clock", "manual", "--start", "2026-07-01T10:15:00+02:00"]
    assert _cli.main(argv) == 0
    server = seen["server"]
    assert server.profile is QODER
    assert server.api_key == "k"
    assert seen["log_level"] == "warning"
    assert server.now() == T0
    out = capsys.readouterr().out
    assert f"listening on http://127.0.0.1:{seen['port']} " in out
    assert "profile qoder, manual clock, API key required" in out
    assert "/mock/environments/env_demo/work -H 'x-api-key: <the --api-key>'\n" in out

    assert _cli.main(["--port", "0", "--clock", "manual"]) == 0
    assert capsys.readouterr().out.endswith("/mock/environments/env_demo/work\n")
    assert seen["server"].manual_clock
    assert seen["server"].api_key is None
    assert _cli.main(["--port", "0"]) == 0
    assert not seen["server"].manual_clock


@pytest.mark.parametrize(
    "argv",
    [
        ["--start", "2026-07-01T08:15:00Z"],
        ["--clock", "manual", "--start", "2026-07-01 08:15"],
        ["--profile", "acme"],
        ["--clock", "sundial"],
    ],
)
def test_the_command_rejects_bad_options(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_the_command_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _cli.main(["--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_python_m_workstate_serve_runs_until_stopped(stop: signal.Signals) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workstate",
            "serve",
            "--port",
            "0",
            "--clock",
            "manual",
            "--log-level",
            "warning",
            "--start",
            "2026-07-01T08:15:00Z",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+) ", line)
        assert match, line
        with httpx2.Client(base_url=match.group(1), verify=False) as http:
            clock = http.get("/mock/clock").json()
        assert clock == {"now": "2026-07-01T08:15:00.000000Z", "clock": "manual"}
        proc.send_signal(stop)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_in_thread_reports_a_server_that_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    def broken(self: uvicorn.Server, sockets: Any = None) -> None:
        return None  # as if it failed to bind: the thread ends, never started

    monkeypatch.setattr(uvicorn.Server, "run", broken)
    with (
        pytest.raises(RuntimeError, match="did not start"),
        serve_in_thread(MockServer()),
    ):
        pass  # pragma: no cover


def test_json_rendering_is_compact_utf8(http: httpx2.Client, env: str) -> None:
    made = create(http, env, metadata={"note": "é"})
    raw = http.get(work_path(env, made["id"])).content
    assert "é".encode() in raw
    assert json.loads(raw)["metadata"] == {"note": "é"}


def test_the_command_serves_until_sigterm_and_returns() -> None:
    """``serve`` in this very process: SIGTERM is a graceful stop and a normal return."""
    server = MockServer(clock=ManualClock(T0))
    sock = _app.bind("127.0.0.1", 0)
    base = _app.base_url(sock)

    def stop_when_serving() -> None:
        deadline = time.monotonic() + 10
        with httpx2.Client(base_url=base, verify=False) as http:
            while time.monotonic() < deadline:
                try:
                    if http.get("/mock/clock").status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    stopper = threading.Thread(target=stop_when_serving)
    stopper.start()
    try:
        _cli.serve(server, sock, "warning")
    finally:
        stopper.join(10)
        sock.close()
    assert signal.getsignal(signal.SIGTERM) == previous


def test_a_wake_up_after_the_wait_ended_is_harmless() -> None:
    async def go() -> None:
        waiter = asyncio.get_running_loop().create_future()
        waiter.set_result(None)
        _app._resolve(waiter)  # a second wake-up: nothing happens
        assert waiter.done()

    asyncio.run(go())


def test_the_app_passes_lifespan_events_through() -> None:
    server = MockServer()
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    asyncio.run(server.app(scope, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_a_failure_after_the_response_started_propagates() -> None:
    async def half_then_fail(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-response")

    server = MockServer()
    front = HarnessMiddleware(half_then_fail, harness=server.harness)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(RuntimeError, match="mid-response"):
        asyncio.run(front(scope, receive, send))
    assert sent[0]["status"] == 200
    assert (b"request-id", sent[0]["headers"][0][1]) == sent[0]["headers"][0]


def test_base_urls_bracket_ipv6_hosts() -> None:
    class Sock:
        def getsockname(self) -> tuple[str, int, int, int]:
            return ("::1", 8765, 0, 0)

    assert _app.base_url(Sock()) == "http://[::1]:8765"  # type: ignore[arg-type]


def test_serve_in_thread_takes_any_asgi_app(mock: MockServer) -> None:
    with serve_in_thread(mock.app) as base, httpx2.Client(base_url=base, verify=False) as http:
        assert http.get("/mock/clock").json()["clock"] == "manual"


# ------------------------------------------------------------------------------ odd input, no 500s
def test_odd_bodies_and_edge_times_are_400_never_500(
    http: httpx2.Client, env: str, mock: MockServer
) -> None:
    deep = http.post(f"/mock/environments/{env}/work", content=b"[" * 100_000)
    assert_error(deep, 400, "", "not valid JSON")
    unhashable = http.post(f"/mock/environments/{env}/work", json={"data": {"type": [], "id": "x"}})
    assert_error(unhashable, 400, "", "data.type")
    item = create(http, env)
    edge = http.post(
        work_path(env, item["id"], "heartbeat"),
        params={"expected_last_heartbeat": "9999-12-31T23:59:59-01:00"},
    )
    assert_error(edge, 400, "", "9999")
    assert http.get(work_path(env)).json()["data"] == [item]
