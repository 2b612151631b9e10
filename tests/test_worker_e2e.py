"""The official SDK's pre-built ``EnvironmentWorker``, unchanged, against the mock on a socket.

Nothing is monkeypatched: the worker polls, acks, heartbeats, reads its sessions, runs the
default agent toolset (a real bash in a temporary workdir), posts the results and force-stops
every item, all over HTTP.  The mock runs on a manual clock with a 2 s default TTL, so the
worker heartbeats every second and a lease lapses only when a test moves the clock; every
``run()`` is bounded and cancelled once the test has seen what it waits for.

This file runs against the pinned SDK (the dev extra) and, from ``scripts/check.py``, against
the newest release too; it needs nothing but workstate, the SDK and pytest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import pathlib
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.lib.environments import EnvironmentWorker
from anthropic.lib.tools import beta_async_tool
from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401
from starlette.types import Message, Receive, Scope, Send

from workstate import ManualClock
from workstate.server import MockServer, serve_in_thread

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)
KEY = "sk-mock-e2e"  # the API key, which is also the environment key
TIMEOUT = 30.0  # seconds any one worker run may take before the test fails


# Every call the worker makes for a session item: nothing else (skills, memory stores) is asked.
WORKER_CALLS = re.compile(
    r"(GET /v1/environments/env_\w+/work/poll"
    r"|POST /v1/environments/env_\w+/work/work_\w+/(ack|heartbeat|stop)"
    r"|GET /v1/sessions/sesn_\w+(/events(/stream)?)?"
    r"|POST /v1/sessions/sesn_\w+/events)",
    re.ASCII,
)


class Recorder:
    """An ASGI wrapper around the mock's app that notes every request and its answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        call: dict[str, Any] = {
            "seq": len(self.calls),
            "method": scope["method"],
            "path": scope["path"],
            "credential": "key" if KEY in (bearer, headers.get("x-api-key")) else bearer[:8],
            "body": b"",
            "status": None,
        }
        self.calls.append(call)

        async def recv() -> Message:
            message = await receive()
            call["body"] += message.get("body", b"")
            return message

        async def snd(message: Message) -> None:
            if message["type"] == "http.response.start":
                call["status"] = message["status"]
            await send(message)

        await self.app(scope, recv, snd)

    def of(self, fragment: str) -> list[dict[str, Any]]:
        """The calls of the API (not the mock's controls) whose path has ``fragment``."""
        return [c for c in self.calls if fragment in c["path"] and c["path"].startswith("/v1/")]


@pytest.fixture
def served() -> Iterator[tuple[MockServer, str, Recorder]]:
    mock = MockServer(
        clock=ManualClock(T0), api_key=KEY, seed=10, profile_overrides={"default_ttl_seconds": 2}
    )
    recorder = Recorder(mock.app)
    with serve_in_thread(recorder) as url:
        yield mock, url, recorder


@pytest.fixture
def env() -> str:
    return f"env_{uuid.uuid4().hex[:12]}"


def state(mock: MockServer, env: str, work_id: str) -> str:
    with mock.lock:  # re-entrant: environment() and now() take it too
        return mock.environment(env).get(work_id, mock.now()).state.value


def inspect(url: str, session_id: str) -> dict[str, Any]:
    """``GET /mock/sessions/{id}``: the session and every event, both directions."""
    r = httpx2.get(f"{url}/mock/sessions/{session_id}", headers={"x-api-key": KEY}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def sent_by_worker(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["event"] for e in view["events"] if e["sent_by"] == "client"]


def result_text(event: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in event["content"])


async def run_worker(
    url: str, env: str, until: Callable[[], bool], workdir: pathlib.Path, **options: Any
) -> None:
    """``EnvironmentWorker.run()`` until ``until()`` holds, then cancelled (failing on timeout)."""
    async with anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0) as client:
        worker = client.beta.environments.work.worker(
            environment_id=env, environment_key=KEY, workdir=str(workdir), **options
        )
        assert isinstance(worker, EnvironmentWorker)  # the SDK's pre-built worker, as shipped
        task = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + TIMEOUT
        try:
            while not until():
                assert not task.done(), f"the worker stopped early: {task}"
                assert time.monotonic() < deadline, "the worker did not get there in time"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def bash(command: str) -> dict[str, Any]:
    return {"tool_use": {"name": "bash", "input": {"command": command}}}


# ------------------------------------------------------------------------------ the happy path
def test_the_worker_serves_several_scripted_items(
    served: tuple[MockServer, str, Recorder], env: str, tmp_path: pathlib.Path
) -> None:
    mock, url, recorder = served

    @beta_async_tool
    async def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    def tools(ctx: AgentToolContext) -> list[Any]:
        return [*beta_agent_toolset_20260401(ctx), get_weather]

    scripts = [
        [bash("echo hello > note.txt && cat note.txt && pwd"), {"terminate": {}}],
        [{"message": {"text": "checking"}}, bash("cat note.txt; exit 3"), {"end_turn": {}}],
        [
            {"custom_tool_use": {"name": "get_weather", "input": {"city": "Oslo"}}},
            bash("ls"),
            {"terminate": {}},
        ],
    ]
    items = [mock.create_work(env, session={"script": s}) for s in scripts]
    asyncio.run(
        run_worker(
            url,
            env,
            lambda: all(state(mock, env, w.id) == "stopped" for w in items),
            tmp_path,
            tools=tools,
            max_idle=0.3,  # the second session ends its turn; the runner waits this long
        )
    )

    assert (tmp_path / "note.txt").read_text() == "hello\n"
    views = [inspect(url, w.body.data.id) for w in items]
    first, second, third = (sent_by_worker(v) for v in views)
    assert [e["type"] for e in first] == ["user.tool_result"]
    assert result_text(first[0]) == f"hello\n{tmp_path}"
    assert first[0]["is_error"] is False
    assert second[0]["is_error"] is True  # exit 3: the bash tool reports an error
    assert "hello" in result_text(second[0])
    assert [e["type"] for e in third] == ["user.custom_tool_result", "user.tool_result"]
    assert result_text(third[0]) == "sunny in Oslo"
    assert "note.txt" in result_text(third[1])
    assert [v["session"]["status"] for v in views] == ["terminated", "idle", "terminated"]
    assert all(v["position"] == len(v["script"]) for v in views)

    for work in items:
        calls = recorder.of(work.id) + recorder.of(work.body.data.id)
        stops = [c for c in calls if c["path"].endswith("/stop")]
        assert [json.loads(c["body"]) for c in stops] == [{"force": True}]
        # anthropic: a stop answers 204 with no body (docs/divergences.md), all else 200
        assert all(c["status"] == (204 if c["path"].endswith("/stop") else 200) for c in calls)
        # Poll and ack ride the environment key; the item's own calls its sessions token.
        by_credential = {c["path"].rsplit("/", 1)[-1]: c["credential"] for c in calls}
        assert by_credential["ack"] == "key"
        for call in ("heartbeat", "stop", "stream", "events", work.body.data.id):
            assert by_credential[call] == "sesstok_", call
    assert all(c["credential"] == "key" for c in recorder.of("/poll"))
    worker_calls = recorder.of("/v1/")
    # None: the long poll in flight when the test cancelled the worker got no answer.
    assert [c for c in worker_calls if c["status"] not in (200, 204, None)] == []
    assert [
        c for c in worker_calls if not WORKER_CALLS.fullmatch(f"{c['method']} {c['path']}")
    ] == []


def test_a_terminated_session_and_a_healthcheck_are_stopped_without_running_anything(
    served: tuple[MockServer, str, Recorder], env: str, tmp_path: pathlib.Path
) -> None:
    mock, url, recorder = served
    ended = mock.create_work(env, session={"status": "terminated"})
    check = mock.create_work(env, data=_healthcheck())
    asyncio.run(
        run_worker(
            url,
            env,
            lambda: state(mock, env, ended.id) == state(mock, env, check.id) == "stopped",
            tmp_path,
        )
    )
    sid = ended.body.data.id
    view = inspect(url, sid)
    assert [e["event"]["type"] for e in view["events"]] == ["session.status_terminated"]
    assert not view["attached"]
    assert [c["path"].rsplit("/", 1)[-1] for c in recorder.of(sid)] == [sid]  # one retrieve
    assert [c["path"].rsplit("/", 1)[-1] for c in recorder.of(check.id)] == ["ack", "stop"]
    for work in (ended, check):
        stops = [c for c in recorder.of(work.id) if c["path"].endswith("/stop")]
        assert (json.loads(stops[0]["body"]), stops[0]["status"]) == ({"force": True}, 204)
        # The SDK's poller may also stop the item it handed out, gracefully (no body), if it
        # resumes before the test cancels the worker: on a stopped item that is 409 under the
        # anthropic profile, which the poller ignores.
        assert [(c["body"], c["status"]) for c in stops[1:]] in ([], [(b"", 409)])
    assert list(tmp_path.iterdir()) == []


def _healthcheck() -> Any:
    from workstate import WorkData

    return WorkData(type="healthcheck", id="hc_e2e")


# ------------------------------------------------------------------------------ stop and loss
WAITING = {"script": [{"custom_tool_use": {"name": "approve", "input": {}}}, {"terminate": {}}]}
"""A session waiting on a custom tool the worker does not own: it holds the item until told."""


def _waiting_and_beating(mock: MockServer, recorder: Recorder, env: str, work_id: str) -> bool:
    beats = [c for c in recorder.of(work_id) if c["path"].endswith("/heartbeat")]
    return state(mock, env, work_id) == "active" and len(beats) >= 2


def test_a_graceful_stop_is_seen_at_the_next_heartbeat(
    served: tuple[MockServer, str, Recorder], env: str, tmp_path: pathlib.Path
) -> None:
    mock, url, recorder = served
    work = mock.create_work(env, session=WAITING)
    path = f"/v1/environments/{env}/work/{work.id}/stop"

    async def scenario() -> None:
        async def stop_when_serving() -> None:
            while not _waiting_and_beating(mock, recorder, env, work.id):
                await asyncio.sleep(0.05)
            async with httpx2.AsyncClient(base_url=url, headers={"x-api-key": KEY}) as http:
                r = await http.post(path, json={"force": False})
                assert r.status_code == 204  # anthropic: no body; read the item back
                item = await http.get(path.removesuffix("/stop"))
                assert item.json()["state"] == "stopping"

        outside = asyncio.ensure_future(stop_when_serving())
        await run_worker(url, env, lambda: state(mock, env, work.id) == "stopped", tmp_path)
        await outside

    asyncio.run(scenario())
    stops = [c for c in recorder.of(work.id) if c["path"].endswith("/stop")]
    assert [(json.loads(c["body"]), c["credential"]) for c in stops] == [
        ({"force": False}, "key"),  # from outside
        ({"force": True}, "sesstok_"),  # the worker, after the heartbeat that said stopping
    ]
    beats = [c for c in recorder.of(work.id) if c["path"].endswith("/heartbeat")]
    assert beats[-1]["seq"] > stops[0]["seq"]
    with mock.lock:
        stopped = mock.environment(env).get(work.id, mock.now())
    assert stopped.stop_requested_at is not None


def test_a_lapsed_lease_is_released_without_a_stop_and_redelivered(
    served: tuple[MockServer, str, Recorder], env: str, tmp_path: pathlib.Path
) -> None:
    mock, url, recorder = served
    work = mock.create_work(env, session=WAITING)
    sid = work.body.data.id

    async def scenario() -> None:
        async def lapse_then_answer() -> None:
            while not _waiting_and_beating(mock, recorder, env, work.id):
                await asyncio.sleep(0.05)
            mock.advance(3)  # past the 2 s lease: the item is queued again
            while len([c for c in recorder.of(work.id) if c["path"].endswith("/ack")]) < 2:
                await asyncio.sleep(0.05)  # the worker polled it again
            while not _waiting_and_beating(mock, recorder, env, work.id):
                await asyncio.sleep(0.05)
            # Answer the custom tool as the app backend would; the script then terminates.
            async with anthropic.AsyncAnthropic(base_url=url, api_key=KEY) as app:
                await app.beta.sessions.events.send(
                    sid,
                    events=[
                        {
                            "type": "user.custom_tool_result",
                            "custom_tool_use_id": mock.session(sid).awaiting or "",
                            "content": [{"type": "text", "text": "approved"}],
                        }
                    ],
                )

        outside = asyncio.ensure_future(lapse_then_answer())
        await run_worker(url, env, lambda: state(mock, env, work.id) == "stopped", tmp_path)
        await outside

    asyncio.run(scenario())
    calls = recorder.of(work.id)
    lost = next(i for i, c in enumerate(calls) if c["status"] == 412)
    assert calls[lost]["path"].endswith("/heartbeat")
    second_ack = [i for i, c in enumerate(calls) if c["path"].endswith("/ack")][1]
    between = calls[lost + 1 : second_ack]
    assert not [c for c in between if c["path"].endswith("/stop")], "the lost item was stopped"
    stops = [c for c in calls if c["path"].endswith("/stop")]
    assert [json.loads(c["body"]) for c in stops] == [{"force": True}]
    assert stops[0]["seq"] > calls[second_ack]["seq"]
    assert [e["type"] for e in sent_by_worker(inspect(url, sid))] == ["user.custom_tool_result"]


# ------------------------------------------------------------------------------ per process
CHILD = """
import asyncio, os
import anthropic
from anthropic.lib.environments import EnvironmentWorker

async def main():
    async with anthropic.AsyncAnthropic(max_retries=0) as client:
        await EnvironmentWorker(client, workdir=os.getcwd(), max_idle=0.3).handle_item()

asyncio.run(main())
"""


def test_a_child_process_serves_an_item_the_async_poller_claimed(
    served: tuple[MockServer, str, Recorder], env: str, tmp_path: pathlib.Path
) -> None:
    mock, url, recorder = served
    script = [bash("echo from-child > child.txt && cat child.txt"), {"end_turn": {}}]
    work = mock.create_work(env, session={"script": script})

    async def dispatch() -> list[int]:
        codes = []
        async with anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0) as client:
            async for item in client.beta.environments.work.poller(
                environment_id=env, environment_key=KEY, drain=True, auto_stop=False, block_ms=None
            ):
                child_env = {
                    **os.environ,
                    "ANTHROPIC_BASE_URL": url,
                    "ANTHROPIC_API_KEY": "not-the-key",  # the sessions token must carry it
                    "ANTHROPIC_WORK_ID": item.id,
                    "ANTHROPIC_ENVIRONMENT_ID": item.environment_id,
                    "ANTHROPIC_SESSION_ID": item.data.id,
                    "ANTHROPIC_WORK_SECRET": item.secret or "",
                }
                child_env.pop("ANTHROPIC_ENVIRONMENT_KEY", None)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", CHILD, cwd=tmp_path, env=child_env
                )
                codes.append(await asyncio.wait_for(proc.wait(), TIMEOUT))
        return codes

    assert asyncio.run(dispatch()) == [0]
    assert state(mock, env, work.id) == "stopped"
    assert (tmp_path / "child.txt").read_text() == "from-child\n"
    (result,) = sent_by_worker(inspect(url, work.body.data.id))
    assert result_text(result) == "from-child"
    stops = [c for c in recorder.of(work.id) if c["path"].endswith("/stop")]
    assert [(json.loads(c["body"]), c["credential"]) for c in stops] == [
        ({"force": True}, "sesstok_")
    ]
