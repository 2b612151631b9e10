"""The harness against the SDK's own worker logic, each run read back from the journal.

The SDK's heartbeat loop (``anthropic.lib.environments._worker._heartbeat_loop``) runs in
process over ``httpx2.ASGITransport`` with its clock and sleeps faked (as in
``test_worker_sdk.py``), and its poller (``iter_work``) over loopback with its sleeps recorded;
the mock server's own clock stands still throughout.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import anthropic
import anyio
import pytest
from anthropic.lib import _retry as sdk_retry
from anthropic.lib.environments import _poller as sdk_poller
from anthropic.lib.environments import _worker as sdk_worker
from helpers import T0, asgi_client

from workstate import NO_HEARTBEAT, ManualClock
from workstate.server import MockServer, serve_in_thread

ENV = "env_sdk"


def requests(server: MockServer, *ops: str) -> list[tuple[Any, ...]]:
    """The journal as (operation, token sent, status, applied, fault id) per request."""
    out = []
    for e in server.harness.entries():
        if ops and e["operation"] not in ops:
            continue
        token = e["query"].get("expected_last_heartbeat")
        fault = e["fault"]["id"] if e["fault"] else None
        out.append((e["operation"], token, e["status"], e["applied"], fault))
    return out


def run_heartbeat_loop(
    server: MockServer, work_id: str, on_sleep: Callable[[int, Any], None]
) -> str:
    """The SDK's heartbeat loop on ``work_id``, then its stop-unless-lost, in process.

    ``on_sleep(n, lease)`` runs at the loop's n-th wait (from 1); it may end the lease.
    """
    clock = SimpleNamespace(t=0.0)
    sleeps = 0
    lease_box: list[Any] = []

    def move_on_after(delay: float) -> Any:
        nonlocal sleeps
        sleeps += 1
        clock.t += delay
        on_sleep(sleeps, lease_box[0])
        return anyio.move_on_after(0)

    fake_anyio = SimpleNamespace(
        Event=anyio.Event,
        fail_after=lambda delay: anyio.fail_after(None),
        move_on_after=move_on_after,
    )

    async def main() -> str:
        lease = sdk_worker._Lease()
        lease_box.append(lease)
        async with asgi_client(server) as http:
            client = anthropic.AsyncAnthropic(
                api_key="k", base_url="http://mock", max_retries=0, http_client=http
            )
            work = client.beta.environments.work
            await sdk_worker._heartbeat_loop(work, work_id=work_id, environment_id=ENV, lease=lease)
            if not lease.lost:  # EnvironmentWorker._handle_item's finally, in substance
                await work.stop(work_id, environment_id=ENV, force=True)
        assert lease._end_reason is not None
        return str(lease._end_reason.value)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sdk_worker, "time", SimpleNamespace(monotonic=lambda: clock.t))
        mp.setattr(sdk_worker, "anyio", fake_anyio)
        return anyio.run(main)


def claimed(server: MockServer) -> str:
    """An item polled and acked through the API (so the journal shows it)."""
    work = server.create_work(ENV)

    async def claim() -> None:
        async with asgi_client(server) as http:
            assert (await http.get(f"/v1/environments/{ENV}/work/poll")).json()["id"] == work.id
            assert (await http.post(f"/v1/environments/{ENV}/work/{work.id}/ack")).is_success

    anyio.run(claim)
    return work.id


def test_a_503_on_a_heartbeat_is_retried_and_the_lease_kept() -> None:
    server = MockServer(clock=ManualClock(T0), seed=1)
    work_id = claimed(server)
    server.harness.add_fault(
        {
            "match": {"operation": "heartbeat", "work_id": work_id},
            "times": 1,
            "effect": {"status": 503},
        }
    )

    def on_sleep(n: int, lease: Any) -> None:
        if n == 3:
            lease.finish(sdk_worker._LeaseEndReason.RUNNER_DONE)

    assert run_heartbeat_loop(server, work_id, on_sleep) == "runner_done"
    beats = [e for e in server.harness.entries(operation="heartbeat") if e["status"] == 200]
    first, second = (b["response"]["last_heartbeat"] for b in beats)
    assert requests(server) == [
        ("poll", None, 200, True, None),
        ("ack", None, 200, True, None),
        ("heartbeat", NO_HEARTBEAT, 503, False, "flt_1"),
        ("heartbeat", NO_HEARTBEAT, 200, True, None),  # the same claim, retried
        ("heartbeat", first, 200, True, None),
        ("stop", None, 204, True, None),
    ]
    # The server's clock never moved, and still each heartbeat handed out a new token.
    assert (first, second) == ("2026-07-01T08:15:00.000000Z", "2026-07-01T08:15:00.000001Z")
    assert server.harness.entries(operation="stop")[0]["move"] == {
        "from": "active",
        "to": "stopped",
    }


def test_a_heartbeat_answer_lost_after_it_applied_leads_to_the_412_the_sdk_then_meets() -> None:
    server = MockServer(clock=ManualClock(T0), seed=2)
    work_id = claimed(server)

    def on_sleep(n: int, lease: Any) -> None:
        if n == 1:  # the first heartbeat went through; lose the answer of the next one
            server.harness.add_fault(
                {"match": {"operation": "heartbeat"}, "times": 1, "effect": {"drop": "after"}}
            )

    assert run_heartbeat_loop(server, work_id, on_sleep) == "lease_lost"
    first, dropped, retried = server.harness.entries(operation="heartbeat")
    token = first["response"]["last_heartbeat"]
    replaced = dropped["withheld"]["response"]["last_heartbeat"]
    assert requests(server) == [
        ("poll", None, 200, True, None),
        ("ack", None, 200, True, None),
        ("heartbeat", NO_HEARTBEAT, 200, True, None),
        ("heartbeat", token, None, True, "flt_1"),  # applied, answer never sent
        ("heartbeat", token, 412, False, None),  # the retry holds the replaced token
    ]  # and no stop: the SDK treats a 412 as a lost lease and leaves the item alone
    assert replaced != token
    assert retried["error"]["status"] == 412
    current = retried["response"]["error"]["details"]["current_state"]
    assert current == {
        "state": "active",
        "last_heartbeat": replaced,
        "lease_extended": False,
        "ttl_seconds": 120,
    }


def run_poller(server: MockServer, url: str, *, seed: int, max_retries: int = 0) -> Any:
    sleeps: list[float] = []
    served: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sdk_poller, "time", SimpleNamespace(sleep=sleeps.append, monotonic=lambda: 0.0))
        mp.setattr(sdk_retry, "random", random.Random(seed))
        with anthropic.Anthropic(api_key="k", base_url=url, max_retries=max_retries) as client:
            for item in sdk_poller.iter_work(
                client.beta.environments.work,
                environment_id=ENV,
                worker_id="worker-1",
                block_ms=None,
                drain=True,
            ):
                served.append(item.id)
    return sleeps, served


def test_429s_on_poll_back_off_as_the_sdk_says() -> None:
    server = MockServer(clock=ManualClock(T0), seed=3)
    work = server.create_work(ENV)
    server.harness.add_fault(
        {"match": {"operation": "poll"}, "times": 3, "effect": {"status": 429, "retry_after": 1}}
    )
    with serve_in_thread(server) as url:
        sleeps, served = run_poller(server, url, seed=9)
    rng = random.Random(9)
    # iter_work's own backoff for the poll (the SDK client's retries are off here).
    assert sleeps == [min(60.0, 2.0**n) + rng.uniform(0.0, 1.0) for n in (1, 2, 3)]
    assert served == [work.id]
    assert requests(server) == [
        ("poll", None, 429, False, "flt_1"),
        ("poll", None, 429, False, "flt_1"),
        ("poll", None, 429, False, "flt_1"),
        ("poll", None, 200, True, None),
        ("ack", None, 200, True, None),
        ("stop", None, 204, True, None),  # auto_stop when the loop body ends
        ("poll", None, 200, False, None),  # drained: the literal null
    ]
    assert {e["worker_id"] for e in server.harness.entries(operation="poll")} == {"worker-1"}


def test_the_sdk_clients_own_retries_honour_retry_after() -> None:
    server = MockServer(clock=ManualClock(T0), seed=4)
    work = server.create_work(ENV)
    server.harness.add_fault(
        {"match": {"operation": "poll"}, "times": 2, "effect": {"status": 429, "retry_after": 0.01}}
    )
    with serve_in_thread(server) as url:
        sleeps, served = run_poller(server, url, seed=9, max_retries=2)
    assert (sleeps, served) == ([], [work.id])  # retried inside the client: no poller backoff
    polls = server.harness.entries(operation="poll")
    assert [e["status"] for e in polls] == [429, 429, 200, 200]
    assert polls[1]["started_mono"] - polls[0]["finished_mono"] >= 0.01


def journal_of_a_seeded_run(seed: int) -> list[tuple[Any, ...]]:
    server = MockServer(clock=ManualClock(T0), seed=seed)
    for _ in range(4):
        server.create_work(ENV)
    server.harness.add_fault(
        {"match": {"operation": ["poll", "ack"]}, "probability": 0.5, "effect": {"status": 503}}
    )
    with serve_in_thread(server) as url:
        run_poller(server, url, seed=1)
    return [
        (e["seq"], e["request_id"], e["operation"], e["work_id"], e["status"], e["fault"])
        for e in server.harness.entries()
    ]


def test_a_seeded_probabilistic_rule_gives_the_same_journal_twice() -> None:
    first = journal_of_a_seeded_run(21)
    assert first == journal_of_a_seeded_run(21)
    statuses = [status for _, _, _, _, status, _ in first]
    assert 503 in statuses
    assert 200 in statuses
    assert first != journal_of_a_seeded_run(22)
