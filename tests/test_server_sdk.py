"""The mock server against the official ``anthropic`` client (pinned 2.10.0), both profiles.

Every endpoint through the SDK's own methods and models; every error class the SDK tells apart
(409, 412, 404, 400, 401); the profile differences as the SDK sees them; and the SDK's own
poller (``iter_work`` and the async ``poller``) claiming and stopping queued items end to end.
The server runs in uvicorn on a loopback ephemeral port and requires an API key, so every test
also proves the key is accepted; the clients never retry (``max_retries=0``), so no retry hides
an error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.lib.environments import iter_work
from anthropic.lib.environments._worker import _heartbeat_loop, _Lease, _LeaseEndReason
from anthropic.types.beta.environments import (
    BetaHeartbeatPreconditionFailedError,
    BetaSelfHostedWork,
)

from workstate import ANTHROPIC, NO_HEARTBEAT, PROFILES, ManualClock, Profile, invariant_violations
from workstate.server import MockServer, serve_in_thread

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)
KEY = "sk-mock-test"


@pytest.fixture(scope="module", params=sorted(PROFILES))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[MockServer, str]]:
    mock = MockServer(profile=PROFILES[request.param], clock=ManualClock(T0), api_key=KEY)
    with serve_in_thread(mock) as url:
        yield mock, url


@pytest.fixture
def mock(served: tuple[MockServer, str]) -> MockServer:
    return served[0]


@pytest.fixture
def profile(mock: MockServer) -> Profile:
    return mock.profile


@pytest.fixture
def client(served: tuple[MockServer, str]) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=served[1], api_key=KEY, max_retries=0) as c:
        yield c


@pytest.fixture
def work(client: anthropic.Anthropic) -> anthropic.resources.beta.environments.work.Work:
    return client.beta.environments.work


@pytest.fixture
def env() -> str:
    return f"env_{uuid.uuid4().hex[:16]}"


def stop(work: Any, work_id: str, env: str, **kw: Any) -> Any:
    """``work.stop`` through the SDK, then the item as the API holds it.

    The SDK accepts both answers a profile may give: 200 with the item, or 204 with no body
    (which the client returns as the empty string, raising nothing).
    """
    answer = work.stop(work_id, environment_id=env, **kw)
    if isinstance(answer, str):
        assert answer == ""
        return work.retrieve(work_id, environment_id=env)
    return answer


WORKER = {"Anthropic-Worker-ID": "worker-1"}  # sent on ack too, for profiles that bind acks


def claimed(
    work: anthropic.resources.beta.environments.work.Work, mock: MockServer, env: str
) -> tuple[str, str]:
    """An item polled, acked and heartbeaten through the SDK: its id and token."""
    made = mock.create_work(env)
    item = work.poll(env, anthropic_worker_id="worker-1")
    assert item is not None
    assert item.id == made.id
    work.ack(item.id, environment_id=env, extra_headers=WORKER)
    beat = work.heartbeat(item.id, environment_id=env, expected_last_heartbeat=NO_HEARTBEAT)
    return item.id, beat.last_heartbeat


# ------------------------------------------------------------------------------ every endpoint
def test_every_endpoint_through_the_sdk(
    work: anthropic.resources.beta.environments.work.Work, mock: MockServer, env: str
) -> None:
    made = mock.create_work(env, secret="opaque-secret", metadata={"team": "a"})
    stats = work.stats(env)
    assert (stats.type, stats.depth, stats.pending, stats.workers_polling) == (
        "work_queue_stats",
        1,
        0,
        None,
    )
    assert stats.oldest_queued_at is not None

    item = work.poll(env, block_ms=50, reclaim_older_than_ms=5000, anthropic_worker_id="worker-1")
    assert isinstance(item, BetaSelfHostedWork)
    assert item.id == made.id
    assert item.state == "queued"
    assert item.secret == "opaque-secret"
    assert item.data.id == made.data.id
    assert work.poll(env, block_ms=10) is None
    stats = work.stats(env)
    assert (stats.depth, stats.pending, stats.workers_polling) == (0, 1, 1)

    acked = work.ack(item.id, environment_id=env, extra_headers=WORKER)
    assert acked.state == "starting"
    assert acked.secret is None
    assert work.ack(item.id, environment_id=env, extra_headers=WORKER) == acked  # a safe retry

    beat = work.heartbeat(
        item.id, environment_id=env, expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=30
    )
    assert (beat.type, beat.state, beat.lease_extended, beat.ttl_seconds) == (
        "work_heartbeat",
        "active",
        True,
        30,
    )
    mock.advance(10)
    again = work.heartbeat(item.id, environment_id=env, expected_last_heartbeat=beat.last_heartbeat)
    assert again.lease_extended
    assert again.ttl_seconds == mock.profile.default_ttl_seconds

    got = work.retrieve(item.id, environment_id=env)
    assert got.state == "active"
    assert got.latest_heartbeat_at == again.last_heartbeat
    assert got.secret is None

    updated = work.update(item.id, environment_id=env, metadata={"team": None, "k": "v"})
    assert updated.metadata == {"k": "v"}

    others = [mock.create_work(env).id for _ in range(4)]
    listed = [w.id for w in work.list(env, limit=2)]  # the SDK follows next_page itself
    assert listed == [item.id, *others]
    first = work.list(env, limit=2)
    assert len(first.data) == 2
    assert first.next_page is not None

    stopping = stop(work, item.id, env)
    assert stopping.state == "stopping"
    assert stopping.stop_requested_at is not None
    seen = work.heartbeat(
        item.id, environment_id=env, expected_last_heartbeat="2020-01-01T00:00:00Z"
    )
    assert (seen.state, seen.lease_extended) == ("stopping", False)
    stopped = stop(work, item.id, env, force=False)
    assert stopped.state == "stopped"
    forced = stop(work, others[0], env, force=True)
    assert forced.state == "stopped"
    assert forced.stop_requested_at is None


# ------------------------------------------------------------------------------ every error
def test_409_is_a_conflict_error(
    work: anthropic.resources.beta.environments.work.Work,
    mock: MockServer,
    env: str,
    profile: Profile,
) -> None:
    made = mock.create_work(env)
    work.stop(made.id, environment_id=env, force=True)
    with pytest.raises(anthropic.ConflictError) as info:
        work.ack(made.id, environment_id=env)
    error = info.value
    assert error.status_code == 409
    assert error.type == profile.conflict_error_type
    assert error.request_id == error.response.headers["request-id"]
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert "stopped" in (error.api_message or "")


def test_412_is_the_heartbeat_precondition_error_with_the_current_state(
    work: anthropic.resources.beta.environments.work.Work,
    mock: MockServer,
    env: str,
    profile: Profile,
) -> None:
    work_id, token = claimed(work, mock, env)
    with pytest.raises(BetaHeartbeatPreconditionFailedError) as info:
        work.heartbeat(work_id, environment_id=env, expected_last_heartbeat=NO_HEARTBEAT)
    error = info.value
    assert error.status_code == 412
    assert error.type == profile.precondition_error_type
    assert error.error_code == "heartbeat_precondition_failed"
    current = error.details.current_state
    assert (current.state, current.last_heartbeat, current.lease_extended, current.ttl_seconds) == (
        "active",
        token,
        False,
        profile.default_ttl_seconds,
    )
    assert work.retrieve(work_id, environment_id=env).latest_heartbeat_at == token  # unchanged


def test_404_is_a_not_found_error(
    work: anthropic.resources.beta.environments.work.Work, env: str
) -> None:
    for call in (
        lambda: work.retrieve("work_missing", environment_id=env),
        lambda: work.ack("work_missing", environment_id=env),
        lambda: work.heartbeat("work_missing", environment_id=env),
        lambda: work.stop("work_missing", environment_id=env),
        lambda: work.update("work_missing", environment_id=env, metadata={}),
        lambda: work.poll("project_1"),
        lambda: work.stats("environment-1"),
    ):
        with pytest.raises(anthropic.NotFoundError) as info:
            call()
        assert info.value.type == "not_found_error"


def test_400_is_a_bad_request_error_and_changes_nothing(
    work: anthropic.resources.beta.environments.work.Work, mock: MockServer, env: str
) -> None:
    work_id, _ = claimed(work, mock, env)
    before = work.retrieve(work_id, environment_id=env)
    for call in (
        lambda: work.poll(env, block_ms=0),
        lambda: work.poll(env, block_ms=1000),
        lambda: work.poll(env, reclaim_older_than_ms=-5),
        lambda: work.heartbeat(work_id, environment_id=env, desired_ttl_seconds=0),
        lambda: work.heartbeat(work_id, environment_id=env, expected_last_heartbeat="yesterday"),
        lambda: work.update(work_id, environment_id=env, metadata={"k": "v" * 513}),
        lambda: work.list(env, limit=0),
        lambda: work.list(env, page="not-a-cursor"),
    ):
        with pytest.raises(anthropic.BadRequestError) as info:
            call()
        assert info.value.type == "invalid_request_error"
    assert work.retrieve(work_id, environment_id=env) == before


def test_401_is_an_authentication_error(served: tuple[MockServer, str], env: str) -> None:
    _, url = served
    with anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as info:
            wrong.beta.environments.work.stats(env)
        assert info.value.type == "authentication_error"
    with anthropic.Anthropic(base_url=url, auth_token=KEY, max_retries=0) as bearer:
        assert bearer.beta.environments.work.stats(env).depth == 0


# ------------------------------------------------------------------------------ the profiles
def test_the_profile_differences_as_the_sdk_sees_them(
    work: anthropic.resources.beta.environments.work.Work,
    mock: MockServer,
    env: str,
    profile: Profile,
) -> None:
    anthropic_profile = profile == ANTHROPIC

    # Stop on a stopped item.
    stopped = mock.create_work(env).id
    work.stop(stopped, environment_id=env, force=True)
    if anthropic_profile:
        with pytest.raises(anthropic.ConflictError):
            work.stop(stopped, environment_id=env)
    else:
        assert stop(work, stopped, env).state == "stopped"

    # Heartbeat on a stopped item.
    if anthropic_profile:
        beat = work.heartbeat(stopped, environment_id=env)
        assert (beat.state, beat.lease_extended) == ("stopped", False)
    else:
        with pytest.raises(anthropic.ConflictError):
            work.heartbeat(stopped, environment_id=env)

    # The old worker's heartbeat after its lease expired.
    work_id, token = claimed(work, mock, env)
    mock.advance(profile.default_ttl_seconds + 1)
    if anthropic_profile:
        with pytest.raises(BetaHeartbeatPreconditionFailedError) as info:
            work.heartbeat(work_id, environment_id=env, expected_last_heartbeat=token)
        assert info.value.details.current_state.state == "queued"
        assert info.value.details.current_state.last_heartbeat is None
    else:
        with pytest.raises(anthropic.ConflictError):
            work.heartbeat(work_id, environment_id=env, expected_last_heartbeat=token)

    # An ack from another worker than the poll's.
    assert work.poll(env, anthropic_worker_id="worker-1", reclaim_older_than_ms=60_000) is not None
    if profile.ack_binds_worker:
        with pytest.raises(anthropic.ConflictError):
            work.ack(work_id, environment_id=env, extra_headers={"Anthropic-Worker-ID": "w-2"})
        assert work.ack(work_id, environment_id=env, extra_headers=WORKER).state == "starting"
        # the SDK's ack sends no worker id by itself: an ack that names none is not bound
        assert work.ack(work_id, environment_id=env).state == "starting"
    else:
        assert work.ack(work_id, environment_id=env).state == "starting"


# ------------------------------------------------------------------------------ the SDK's poller
def test_iter_work_drains_the_queue_and_auto_stop_asks_each_item_to_stop(
    client: anthropic.Anthropic, mock: MockServer, env: str
) -> None:
    made = [mock.create_work(env).id for _ in range(5)]
    work = client.beta.environments.work
    seen: list[str] = []
    for item in iter_work(
        work,
        environment_id=env,
        worker_id="worker-1",
        block_ms=None,  # the final empty poll answers at once
        drain=True,
        extra_headers=WORKER,  # lets profiles that bind acks to the polling worker accept them
    ):
        assert item.state == "queued"  # the poll's snapshot; the poller has acked it since
        beat = work.heartbeat(item.id, environment_id=env, expected_last_heartbeat=NO_HEARTBEAT)
        assert beat.state == "active"
        seen.append(item.id)
    assert seen == made  # oldest first, each exactly once
    for work_id in made:  # auto_stop sent a graceful stop; the worker confirms it
        assert work.retrieve(work_id, environment_id=env).state == "stopping"
        assert stop(work, work_id, env).state == "stopped"
    assert work.stats(env).depth == 0
    records = mock.environment(env).list(mock.now(), limit=10).data
    assert [invariant_violations(w) for w in records] == [[]] * 5


def test_iter_work_in_dispatch_shape_hands_each_item_over(
    client: anthropic.Anthropic, mock: MockServer, env: str
) -> None:
    made = [mock.create_work(env).id for _ in range(3)]
    work = client.beta.environments.work
    for item in iter_work(
        work,
        environment_id=env,
        worker_id="worker-1",
        block_ms=50,
        drain=True,
        auto_stop=False,
        extra_headers=WORKER,
    ):
        work.stop(item.id, environment_id=env, force=True)  # the process it was handed to
    assert [work.retrieve(i, environment_id=env).state for i in made] == ["stopped"] * 3


def test_the_async_poller_authenticates_with_the_environment_key(
    served: tuple[MockServer, str], mock: MockServer, env: str
) -> None:
    made = [mock.create_work(env).id for _ in range(3)]

    async def go() -> list[str]:
        # The parent client's own key is wrong: only the poller's Bearer key can succeed.
        async with (
            anthropic.AsyncAnthropic(
                base_url=served[1], api_key="not-the-key", max_retries=0
            ) as parent,
            anthropic.AsyncAnthropic(base_url=served[1], api_key=KEY, max_retries=0) as admin,
        ):
            seen = []
            async for item in parent.beta.environments.work.poller(
                environment_id=env,
                environment_key=KEY,
                worker_id="worker-1",
                block_ms=None,
                drain=True,
                auto_stop=False,
                extra_headers=WORKER,
            ):
                await admin.beta.environments.work.stop(item.id, environment_id=env, force=True)
                seen.append(item.id)
            with pytest.raises(anthropic.AuthenticationError):
                await parent.beta.environments.work.stats(env)
            return seen

    assert asyncio.run(go()) == made
    assert all(mock.environment(env).get(i, mock.now()).state.value == "stopped" for i in made)


def test_the_sdk_heartbeat_loop_ends_as_the_server_says(
    served: tuple[MockServer, str], mock: MockServer, env: str
) -> None:
    """The SDK worker's private heartbeat loop (pinned version) reads our answers correctly."""
    draining = mock.create_work(env).id
    lost = mock.create_work(env).id

    async def go() -> tuple[_LeaseEndReason | None, _LeaseEndReason | None]:
        async with anthropic.AsyncAnthropic(base_url=served[1], api_key=KEY, max_retries=0) as c:
            work = c.beta.environments.work
            for work_id in (draining, lost):
                assert await work.poll(env) is not None
                await work.ack(work_id, environment_id=env)
            await work.stop(draining, environment_id=env)  # graceful: the worker should drain
            await work.heartbeat(lost, environment_id=env)  # someone else holds the lease now
            reasons = []
            for work_id in (draining, lost):
                lease = _Lease()
                await asyncio.wait_for(
                    _heartbeat_loop(work, work_id=work_id, environment_id=env, lease=lease), 10
                )
                reasons.append(lease._end_reason)
            return reasons[0], reasons[1]

    assert asyncio.run(go()) == (_LeaseEndReason.HEARTBEAT_STOP, _LeaseEndReason.LEASE_LOST)
