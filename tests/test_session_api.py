"""The sessions surface over HTTP: ``/v1/sessions/...``, minted secrets, inspection, TTL overrides.

A real uvicorn server on a loopback port (manual clock, API key required); the official SDK's
sync client where it has a method for the call, raw ``httpx2`` where the exact bytes matter.
Every answer the SDK's worker reads is validated strictly against the SDK's own types.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from helpers import decode_secret as decode
from sdk_shapes import strictly

from workstate import ANTHROPIC, ManualClock, WorkData
from workstate._profile import evolve_profile
from workstate.server import MockServer, _cli, _session_api, serve_in_thread

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)
KEY = "sk-mock-sessions"
BASH = {"tool_use": {"name": "bash", "input": {"command": "echo hi"}}}
SCRIPT = {"script": [BASH, {"terminate": {}}]}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[MockServer, str]]:
    mock = MockServer(clock=ManualClock(T0), api_key=KEY, seed=7)
    with serve_in_thread(mock) as url:
        yield mock, url


@pytest.fixture
def mock(served: tuple[MockServer, str]) -> MockServer:
    return served[0]


@pytest.fixture
def http(served: tuple[MockServer, str]) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=served[1], headers={"x-api-key": KEY}, timeout=10) as client:
        yield client


@pytest.fixture
def anon(served: tuple[MockServer, str]) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=served[1], timeout=10) as client:
        yield client


@pytest.fixture
def sdk(served: tuple[MockServer, str]) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=served[1], api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def env() -> str:
    return f"env_{uuid.uuid4().hex[:16]}"


def create(http: httpx2.Client, env: str, **body: Any) -> dict[str, Any]:
    r = http.post(f"/mock/environments/{env}/work", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def error(r: httpx2.Response, status: int, error_type: str, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    for word in words:
        assert word in body["error"]["message"], body["error"]["message"]
    return body  # type: ignore[no-any-return]


def poll(http: httpx2.Client, env: str) -> dict[str, Any]:
    r = http.get(f"/v1/environments/{env}/work/poll", params={"reclaim_older_than_ms": 1})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def read_frames(lines: Iterator[str], count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next ``count`` SSE frames as (event name, data)."""
    frames: list[tuple[str, dict[str, Any]]] = []
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert name is not None
            frames.append((name, json.loads(line.removeprefix("data: "))))
            name = None
            if len(frames) == count:
                break
    return frames


# ------------------------------------------------------------------------------ creation
def test_a_scripted_item_has_its_session(http: httpx2.Client, env: str) -> None:
    item = create(http, env, session=SCRIPT)
    sid = item["data"]["id"]
    r = http.get(f"/v1/sessions/{sid}")
    assert r.status_code == 200, r.text
    session = strictly("session", r.json())
    assert (session.id, session.status, session.environment_id) == (sid, "idle", env)
    assert session.agent.skills == []
    assert session.resources == []
    view = http.get(f"/mock/sessions/{sid}").json()
    assert view["script"] == SCRIPT["script"]
    assert (view["position"], view["attached"], view["events"]) == (0, False, [])


def test_an_item_without_a_spec_gets_a_session_that_ends_its_turn(
    http: httpx2.Client, mock: MockServer, env: str
) -> None:
    sid = create(http, env)["data"]["id"]
    assert http.get(f"/mock/sessions/{sid}").json()["script"] == [{"end_turn": {}}]
    work = mock.create_work(env, data=WorkData(id="sesn_given"), session={"status": "running"})
    assert mock.session("sesn_given").status.value == "running"
    # Another item about the same session serves the same session again.
    again = mock.create_work(env, data=WorkData(id="sesn_given"))
    assert again.body.data.id == work.body.data.id
    assert mock.session("sesn_given").status.value == "running"


@pytest.mark.parametrize(
    ("body", "status", "error_type", "words"),
    [
        ({"session": {"script": [BASH]}}, 400, "invalid_request_error", "must end with"),
        ({"session": []}, 400, "invalid_request_error", "session must be an object"),
        (
            {"session": {}, "data": {"type": "healthcheck", "id": "hc_1"}},
            400,
            "invalid_request_error",
            "has no session",
        ),
        (
            {"session": {}, "data": {"type": "session", "id": "sesn_taken"}},
            409,
            "conflict_error",
            "already exists",
        ),
    ],
)
def test_a_bad_session_spec_creates_nothing(
    http: httpx2.Client,
    mock: MockServer,
    env: str,
    body: Any,
    status: int,
    error_type: str,
    words: str,
) -> None:
    if status == 409:
        create(http, env, data={"type": "session", "id": "sesn_taken"})
    before = len(mock.environment(env))
    error(http.post(f"/mock/environments/{env}/work", json=body), status, error_type, words)
    assert len(mock.environment(env)) == before


def test_a_healthcheck_item_has_no_session(http: httpx2.Client, env: str) -> None:
    item = create(http, env, data={"type": "healthcheck", "id": "hc_ping"})
    assert item["data"] == {"type": "healthcheck", "id": "hc_ping"}
    error(http.get("/v1/sessions/hc_ping"), 404, "not_found_error", "hc_ping")
    assert decode(poll(http, env)["secret"])["sessions_token"].startswith("sesstok_")


# ------------------------------------------------------------------------------ secrets
def test_every_delivery_mints_a_secret_the_sdk_decodes(
    http: httpx2.Client,
    anon: httpx2.Client,
    mock: MockServer,
    served: tuple[MockServer, str],
    env: str,
) -> None:
    item = create(http, env, session=SCRIPT)
    first = poll(http, env)
    payload = decode(first["secret"])
    assert list(payload) == ["sessions_token", "api_base_url"]
    assert payload["api_base_url"] == served[1]
    mock.advance(0.01)  # past the 1 ms redelivery window
    second = decode(poll(http, env)["secret"])
    assert second["sessions_token"] != payload["sessions_token"]
    # The stored item keeps no secret: only a poll's answer carries one.
    assert http.get(f"/v1/environments/{env}/work/{item['id']}").json()["secret"] is None

    sid, wid = item["data"]["id"], item["id"]
    for token in (payload["sessions_token"], second["sessions_token"]):
        bearer = {"authorization": f"Bearer {token}"}
        assert anon.get(f"/v1/sessions/{sid}", headers=bearer).status_code == 200
        assert anon.get(f"/v1/sessions/{sid}/events", headers=bearer).status_code == 200
        r = anon.post(f"/v1/environments/{env}/work/{wid}/ack", headers=bearer)
        assert r.status_code == 200, r.text
        assert anon.get(f"/v1/environments/{env}/work/{wid}", headers=bearer).status_code == 200
        other = create(http, env)
        for path in (
            f"/v1/environments/{env}/work/poll",
            f"/v1/environments/{env}/work/{other['id']}",
            f"/v1/sessions/{other['data']['id']}",
            f"/v1/environments/env_elsewhere/work/{wid}",
            f"/mock/sessions/{sid}",
        ):
            error(anon.get(path, headers=bearer), 401, "authentication_error", "sessions token")
        error(anon.get(f"/v1/sessions/{sid}"), 401, "authentication_error")
        forged = {"authorization": "Bearer sesstok_" + "0" * 40}
        error(anon.get(f"/v1/sessions/{sid}", headers=forged), 401, "authentication_error")
        error(
            anon.get(f"/v1/sessions/{sid}", headers={"authorization": "Token " + token}),
            401,
            "authentication_error",
        )


@pytest.mark.parametrize("secret", ["opaque-secret", ""])
def test_a_given_secret_is_passed_through_and_mints_nothing(
    http: httpx2.Client, mock: MockServer, env: str, secret: str
) -> None:
    create(http, env, secret=secret)
    grants = len(mock.sessions._grants)
    assert poll(http, env)["secret"] == secret
    assert len(mock.sessions._grants) == grants


def test_the_same_seed_mints_the_same_tokens() -> None:
    tokens = []
    for _ in range(2):
        mock = MockServer(clock=ManualClock(T0), seed=42)
        work = mock.create_work("env_seeded")
        tokens.append(decode(mock.sessions.delivery_secret(work, "http://x")))
    assert tokens[0] == tokens[1]


# ------------------------------------------------------------------------------ the stream
def test_the_stream_is_live_and_ends_after_the_termination(
    http: httpx2.Client, sdk: anthropic.Anthropic, env: str
) -> None:
    sid = create(http, env, session={"script": [{"message": {"text": "hi"}}, *SCRIPT["script"]]})[
        "data"
    ]["id"]
    with http.stream("GET", f"/v1/sessions/{sid}/events/stream") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        frames = read_frames(lines, 4)
        assert [name for name, _ in frames] == [
            "session.status_running",
            "agent.message",
            "agent.tool_use",
            "session.status_idle",
        ]
        for name, data in frames:
            assert data["type"] == name
            strictly("stream_event", data)
        use = frames[2][1]
        sent = sdk.beta.sessions.events.send(
            sid,
            events=[
                {
                    "type": "user.tool_result",
                    "tool_use_id": use["id"],
                    "content": [{"type": "text", "text": "hi"}],
                    "is_error": False,
                }
            ],
        )
        assert [e.type for e in sent.data or []] == ["user.tool_result"]
        rest = read_frames(lines, 3)
        assert [name for name, _ in rest] == [
            "user.tool_result",
            "session.status_running",
            "session.status_terminated",
        ]
        assert list(lines) == [""]  # the blank line closing the last frame, then the end
    # A stream opened on a terminated session repeats the termination and ends; so does the SDK.
    again = list(sdk.beta.sessions.events.stream(sid))
    assert [e.type for e in again] == ["session.status_terminated"]


def test_the_sdk_lists_the_history_page_by_page(
    http: httpx2.Client, sdk: anthropic.Anthropic, mock: MockServer, env: str
) -> None:
    sid = create(http, env, session=SCRIPT)["data"]["id"]
    with http.stream("GET", f"/v1/sessions/{sid}/events/stream") as r:
        read_frames(r.iter_lines(), 3)
    listed = list(sdk.beta.sessions.events.list(sid, limit=2))
    assert [e.id for e in listed] == [e.id for e in mock.session(sid).events]
    page = http.get(f"/v1/sessions/{sid}/events", params={"limit": 2}).json()
    assert page["next_page"] == "page_2"
    for event in page["data"]:
        strictly("event", event)
    newest = http.get(f"/v1/sessions/{sid}/events", params={"order": "desc", "limit": 1})
    assert newest.json()["data"][0]["type"] == "session.status_idle"


def test_a_quiet_stream_pings_and_forgets_a_client_that_left(
    http: httpx2.Client, mock: MockServer, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_session_api, "_PING_SECONDS", 0.05)
    sid = create(
        http, env, session={"script": [{"custom_tool_use": {"name": "f"}}, {"end_turn": {}}]}
    )["data"]["id"]
    with http.stream("GET", f"/v1/sessions/{sid}/events/stream") as r:
        frames = read_frames(r.iter_lines(), 4)
    assert [name for name, _ in frames][-1] == "ping"
    deadline = time.monotonic() + 5
    while mock.sessions._waiters.get(sid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not mock.sessions._waiters.get(sid)


# ------------------------------------------------------------------------------ errors
def test_unknown_sessions_and_unmodelled_calls_answer_the_envelope(http: httpx2.Client) -> None:
    for method, path in (
        ("GET", "/v1/sessions/sesn_nobody"),
        ("GET", "/v1/sessions/sesn_nobody/events"),
        ("POST", "/v1/sessions/sesn_nobody/events"),
        ("GET", "/v1/sessions/sesn_nobody/events/stream"),
        ("GET", "/mock/sessions/sesn_nobody"),
    ):
        body = {"events": [{"type": "user.tool_result", "tool_use_id": "x"}]}
        r = http.request(method, path, json=body if method == "POST" else None)
        error(r, 404, "not_found_error", "sesn_nobody")
    for method, path in (
        ("POST", "/v1/sessions"),
        ("GET", "/v1/skills/skill_1/versions/1"),
        ("GET", "/v1/memory_stores/ms_1/memories"),
    ):
        error(http.request(method, path), 404, "not_found_error", "no such endpoint")
    error(http.delete("/v1/sessions/sesn_nobody"), 405, "invalid_request_error", "GET")


@pytest.mark.parametrize(
    ("content", "status", "key"),
    [
        (b"[]", 400, "body"),
        (b"{not json", 400, "body"),
        (b"", 400, "body"),
        (b'{"events": [], "x": 1}', 400, "x"),
        (b'{"events": []}', 400, "events"),
        (b'{"events": [{"type": "user.message"}]}', 400, "events[0].type"),
    ],
)
def test_a_bad_send_is_rejected_and_changes_nothing(
    http: httpx2.Client, mock: MockServer, env: str, content: bytes, status: int, key: str
) -> None:
    sid = create(http, env, session=SCRIPT)["data"]["id"]
    before = mock.session(sid)
    r = http.post(f"/v1/sessions/{sid}/events", content=content)
    assert error(r, status, "invalid_request_error")["error"]["message"]
    assert mock.session(sid) == before
    assert key in r.json()["error"]["message"] or key == "body"


def test_a_send_to_a_terminated_session_is_a_409(http: httpx2.Client, env: str) -> None:
    sid = create(http, env, session={"status": "terminated"})["data"]["id"]
    r = http.post(
        f"/v1/sessions/{sid}/events",
        json={"events": [{"type": "user.tool_result", "tool_use_id": "sevt_x"}]},
    )
    error(r, 409, "conflict_error", "terminated")


def test_a_non_integer_limit_is_a_400(http: httpx2.Client, env: str) -> None:
    sid = create(http, env)["data"]["id"]
    error(http.get(f"/v1/sessions/{sid}/events?limit=ten"), 400, "invalid_request_error", "limit")
    error(http.get(f"/v1/sessions/{sid}/events?limit=0"), 400, "invalid_request_error", "limit")


# ------------------------------------------------------------------------------ the lock
def test_the_documented_inspection_under_the_lock_does_not_deadlock(
    mock: MockServer, http: httpx2.Client, env: str
) -> None:
    sid = create(http, env)["data"]["id"]
    seen: list[Any] = []

    def inspect() -> None:
        with mock.lock:
            env_view = mock.environment(env)
            seen.extend([len(env_view), mock.session(sid).status.value, mock.now()])

    thread = threading.Thread(target=inspect, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "inspecting under server.lock deadlocked"
    assert seen[:2] == [1, "idle"]
    assert http.get(f"/v1/sessions/{sid}").status_code == 200  # the server still serves


# ------------------------------------------------------------------------------ fast leases
def test_profile_overrides_give_fast_leases() -> None:
    mock = MockServer(clock=ManualClock(T0), profile_overrides={"default_ttl_seconds": 2})
    assert (mock.profile.default_ttl_seconds, mock.profile.min_ttl_seconds) == (2, 2)
    assert mock.profile.max_ttl_seconds == ANTHROPIC.max_ttl_seconds
    work = mock.create_work("env_fast")
    env = mock.environment("env_fast")
    env.poll(T0)
    acked = env.ack(work.id, T0)
    assert acked.lease_expires_at is None  # anthropic: an ack starts no lease (divergences.md)
    env.heartbeat(work.id, T0, expected_last_heartbeat="NO_HEARTBEAT")
    assert env.get(work.id, T0).lease_expires_at == T0 + dt.timedelta(seconds=2)
    assert MockServer(profile_overrides={}).profile is ANTHROPIC
    wide = evolve_profile(ANTHROPIC, {"default_ttl_seconds": 900})
    assert (wide.min_ttl_seconds, wide.max_ttl_seconds) == (10, 900)
    ranged = evolve_profile(
        ANTHROPIC, {"default_ttl_seconds": 3, "min_ttl_seconds": 1, "max_ttl_seconds": 5}
    )
    assert (ranged.min_ttl_seconds, ranged.default_ttl_seconds, ranged.max_ttl_seconds) == (1, 3, 5)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"ttl": 2}, "no field 'ttl'"),
        ({"default_ttl_seconds": 2, "min_ttl_seconds": 5}, "0 < min_ttl_seconds"),
        ({"default_ttl_seconds": -1}, "non-negative"),
        ({"max_ttl_seconds": 5}, "0 < min_ttl_seconds"),
    ],
)
def test_a_bad_override_names_the_field(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        MockServer(profile_overrides=overrides)


def test_the_command_takes_ttl_overrides_and_shows_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, MockServer] = {}
    monkeypatch.setattr(_cli, "serve", lambda server, sock, level, **_: seen.update(server=server))
    assert _cli.main(["--port", "0", "--default-ttl", "2"]) == 0
    assert seen["server"].profile.default_ttl_seconds == 2
    assert "lease TTL 2 s in 2-600 s" in capsys.readouterr().out
    assert _cli.main(["--port", "0", "--default-ttl", "4", "--min-ttl", "1", "--max-ttl", "9"]) == 0
    assert "lease TTL 4 s in 1-9 s" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        _cli.main(["--port", "0", "--default-ttl", "2", "--min-ttl", "5"])
    assert info.value.code == 2
    assert "min_ttl_seconds" in capsys.readouterr().err


# ------------------------------------------------------------------------------ stream internals
def test_waking_a_waiter_twice_is_harmless() -> None:
    async def twice() -> None:
        waiter = asyncio.get_running_loop().create_future()
        _session_api._resolve(waiter)
        _session_api._resolve(waiter)
        assert waiter.done()

    asyncio.run(twice())


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8000", 'http://odd"host\\:1', "http://h\u00e9te:80/r\u00f6\u00f6t"],
)
def test_a_minted_secret_is_the_json_the_sdk_reads(base_url: str) -> None:
    """The secret is base64url of exactly ``json.dumps({"sessions_token": ..., "api_base_url":
    ...})``, padding stripped, whatever the base URL holds (it comes from the Host header)."""
    server = MockServer(clock=ManualClock(dt.datetime(2026, 7, 1, tzinfo=dt.UTC)), seed=3)
    work = server.create_work("env_secret")
    with server.lock:
        env = server.environment("env_secret")
        delivered = env.poll(server.now())
        assert delivered is not None
        assert delivered.id == work.id
        secret = server.sessions.delivery_secret(delivered, base_url)
    raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4)).decode()
    token = json.loads(raw)["sessions_token"]
    assert raw == json.dumps({"sessions_token": token, "api_base_url": base_url})
    assert "=" not in secret
