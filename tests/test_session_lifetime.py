"""How long the mock keeps a session and its sessions tokens: as long as the items using them.

A server left running must hold what its live and retained items need, not one session and one
token for every item that ever went through it.  In process (``httpx2.ASGITransport``), on a
manual clock; the state file's part restarts the server on the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import httpx2
from helpers import asgi_client, decode_secret, served_http

from workstate import ANTHROPIC, ManualClock, WorkData
from workstate.server import MockServer
from workstate.server._sessions import session_to_record

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)
ENV = "env_lifetime"
WORK = f"/v1/environments/{ENV}/work"


def token_of(polled: dict[str, Any]) -> str:
    return str(decode_secret(polled["secret"])["sessions_token"])


def held(server: MockServer) -> tuple[int, int, int, int, int]:
    """Sessions, tokens, kept items, counted sessions and loose items the hub holds."""
    hub = server.sessions
    kept = sum(len(items) for items in hub._kept.values())
    return len(hub._sessions), len(hub._grants), kept, len(hub._holders), len(hub._loose)


async def lifecycle(client: httpx2.AsyncClient, **create: Any) -> tuple[dict[str, Any], str]:
    """One item created, polled, acked and force-stopped; the item and its delivery's token."""
    r = await client.post(f"/mock/environments/{ENV}/work", json=create or None)
    assert r.status_code == 200, r.text
    polled = (await client.get(f"{WORK}/poll")).json()
    assert polled["id"] == r.json()["id"]
    assert (await client.post(f"{WORK}/{polled['id']}/ack")).status_code == 200
    r = await client.post(f"{WORK}/{polled['id']}/stop", json={"force": True})
    assert r.status_code == 204, r.text  # (the deployed API's answer: divergences.md)
    return polled, token_of(polled)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_server_left_running_keeps_only_what_its_retained_items_use() -> None:
    server = MockServer(clock=ManualClock(T0), seed=3, retain_stopped=2)

    async def go() -> None:
        async with asgi_client(server) as client:
            done = [await lifecycle(client) for _ in range(40)]
            await client.get(f"{WORK}/stats")  # (the bound applies from the next call on)
            assert held(server) == (2, 2, 2, 2, 0)
            (gone, gone_token), (kept, kept_token) = done[-3], done[-1]
            sid = gone["data"]["id"]
            r = await client.get(f"/v1/sessions/{sid}")
            assert r.status_code == 404, r.text
            assert "for as long as it keeps the item" in r.json()["error"]["message"]
            assert (await client.get(f"/mock/sessions/{sid}")).status_code == 404
            # The dropped item's token authorizes nothing any more; a kept one still does.
            server.api_key = "sk-lifetime"
            r = await client.get(f"/v1/sessions/{sid}", headers=bearer(gone_token))
            assert r.status_code == 401, r.text
            r = await client.get(f"/v1/sessions/{kept['data']['id']}", headers=bearer(kept_token))
            assert r.status_code == 200, r.text

    asyncio.run(go())


def test_every_token_of_a_redelivered_item_goes_with_it() -> None:
    server = MockServer(clock=ManualClock(T0), seed=3, retain_stopped=0)

    async def go() -> None:
        async with asgi_client(server) as client:
            work_id = (await client.post(f"/mock/environments/{ENV}/work")).json()["id"]
            first = token_of((await client.get(f"{WORK}/poll")).json())
            server.advance(5)  # the unacknowledged delivery's window ends: handed out again
            second = token_of((await client.get(f"{WORK}/poll")).json())
            assert first != second
            assert set(server.sessions._grants) == {first, second}
            await client.post(f"{WORK}/{work_id}/stop", json={"force": True})
            assert held(server) == (1, 2, 1, 1, 0)  # stopped, not yet dropped
            await client.get(f"{WORK}/stats")
            assert held(server) == (0, 0, 0, 0, 0)

    asyncio.run(go())


def test_a_session_served_by_two_items_goes_with_the_last_of_them() -> None:
    server = MockServer(clock=ManualClock(T0), seed=3, retain_stopped=0)

    async def go() -> None:
        async with asgi_client(server) as client:
            r = await client.post(f"/mock/environments/{ENV}/work")
            first, sid = r.json()["id"], r.json()["data"]["id"]
            again = {"data": {"type": "session", "id": sid}}  # serves the same session again
            second = (await client.post(f"/mock/environments/{ENV}/work", json=again)).json()
            assert held(server)[0] == 1
            assert dict(server.sessions._holders.items()) == {sid: 2}
            await client.post(f"{WORK}/{first}/stop", json={"force": True})
            await client.get(f"{WORK}/stats")  # the first one goes
            assert dict(server.sessions._holders.items()) == {sid: 1}
            assert (await client.get(f"/v1/sessions/{sid}")).status_code == 200
            await client.post(f"{WORK}/{second['id']}/stop", json={"force": True})
            await client.get(f"{WORK}/stats")
            assert (await client.get(f"/v1/sessions/{sid}")).status_code == 404
            assert held(server) == (0, 0, 0, 0, 0)

    asyncio.run(go())


def test_a_fresh_id_keeps_the_session_and_lets_the_old_ids_tokens_go() -> None:
    fresh = attrs.evolve(ANTHROPIC, name="fresh-ids", fresh_id_on_redelivery=True)
    server = MockServer(clock=ManualClock(T0), seed=3, profile=fresh, api_key="sk-fresh")
    key = {"x-api-key": "sk-fresh"}

    async def go() -> None:
        async with asgi_client(server) as client:
            r = await client.post(f"/mock/environments/{ENV}/work", headers=key)
            sid = r.json()["data"]["id"]
            old = (await client.get(f"{WORK}/poll", headers=key)).json()
            server.advance(5)
            new = (await client.get(f"{WORK}/poll", headers=key)).json()
            assert new["id"] != old["id"]
            r = await client.get(f"/v1/sessions/{sid}", headers=bearer(token_of(old)))
            assert r.status_code == 401, r.text
            r = await client.get(f"/v1/sessions/{sid}", headers=bearer(token_of(new)))
            assert r.status_code == 200, r.text
            assert held(server) == (1, 1, 1, 1, 0)
            assert set(server.sessions._kept[ENV]) == {new["id"]}

    asyncio.run(go())


def test_an_item_put_straight_into_an_environment_takes_its_tokens_too() -> None:
    server = MockServer(clock=ManualClock(T0), seed=3, retain_stopped=0)

    async def go() -> None:
        async with asgi_client(server) as client:
            with server.lock:
                env = server.environment(ENV)
                env.create(server.now(), data=WorkData(id="sesn_direct"), work_id="work_d")
            token_of((await client.get(f"{WORK}/poll")).json())
            assert held(server) == (0, 1, 0, 0, 1)  # no session: the hub made none
            await client.post(f"{WORK}/work_d/stop", json={"force": True})
            await client.get(f"{WORK}/stats")
            assert held(server) == (0, 0, 0, 0, 0)

    asyncio.run(go())


def test_an_open_stream_ends_when_its_session_goes() -> None:
    server = MockServer(clock=ManualClock(T0), seed=3, retain_stopped=0)
    bash = {"tool_use": {"name": "bash", "input": {"command": "true"}}}  # then it waits
    with served_http(server) as http:
        script = {"script": [bash, {"terminate": {}}]}
        r = http.post(f"/mock/environments/{ENV}/work", json={"session": script})
        work_id, sid = r.json()["id"], r.json()["data"]["id"]
        http.post(f"{WORK}/{work_id}/stop", json={"force": True})
        with http.stream("GET", f"/v1/sessions/{sid}/events/stream") as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: session.status_running"
            with httpx2.Client(base_url=str(http.base_url), timeout=5) as other:
                other.get(f"{WORK}/stats")  # the item goes, and its session with it
            rest = list(lines)  # the stream ended (the read timeout would raise)
    assert sid not in server.sessions._sessions
    assert "event: session.status_terminated" not in rest


def records(path: Path, kind: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {k for (k,) in db.execute("SELECT key FROM records WHERE kind = ?", (kind,))}


def test_the_state_file_lets_go_of_what_the_dropped_items_used(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    server = MockServer(clock=ManualClock(T0), seed=3, state=path, retain_stopped=1)

    async def go() -> list[tuple[dict[str, Any], str]]:
        async with asgi_client(server) as client:
            done = [await lifecycle(client) for _ in range(5)]
            await client.get(f"{WORK}/stats")
            return done

    done = asyncio.run(go())
    kept, kept_token = done[-1]
    before = held(server)
    server.close()
    assert records(path, "session") == {kept["data"]["id"]}
    assert records(path, "session_token") == {kept_token}
    again = MockServer(clock=ManualClock(T0), seed=3, state=path, retain_stopped=1)
    assert held(again) == before == (1, 1, 1, 1, 0)
    assert again.sessions._grants[kept_token] == (ENV, kept["id"], kept["data"]["id"])
    # The hub took the loaded records over: the keeper holds no second copy of them.
    assert again._keeper.records("session") == again._keeper.records("session_token") == {}
    again.close()


def test_a_restart_lets_go_of_sessions_and_tokens_no_restored_item_uses(tmp_path: Path) -> None:
    # A file written before sessions went with their items holds them all: a restart keeps
    # those a restored item uses and deletes the rest from the file too.
    path = tmp_path / "state.db"
    server = MockServer(clock=ManualClock(T0), seed=3, state=path)

    async def go() -> tuple[dict[str, Any], str]:
        async with asgi_client(server) as client:
            return await lifecycle(client)

    item, token = asyncio.run(go())
    with server.lock:
        keeper = server._keeper
        orphan = session_to_record(server.sessions._sessions[item["data"]["id"]])
        keeper.put("session", "sesn_orphan", orphan)
        keeper.put("session_token", "sesstok_orphan", [ENV, "work_gone", "sesn_orphan"])
    server.close()
    assert records(path, "session") == {item["data"]["id"], "sesn_orphan"}
    again = MockServer(clock=ManualClock(T0), seed=3, state=path)
    assert set(again.sessions._sessions) == {item["data"]["id"]}
    assert set(again.sessions._grants) == {token}
    again.close()
    assert records(path, "session") == {item["data"]["id"]}
    assert records(path, "session_token") == {token}
