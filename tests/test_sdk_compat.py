"""Compatibility with the official `anthropic` client (pinned in the dev extra)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types.beta.environments import (
    BetaHeartbeatPreconditionFailedError,
    BetaSelfHostedWork,
    BetaSelfHostedWorkHeartbeatResponse,
)
from helpers import at, in_state

from workstate import NO_HEARTBEAT, PROFILES, IllegalMoveError, State, Work

assert anthropic.__version__ == "2.10.0"


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("state", list(State))
def test_work_json_validates_with_the_sdk_model(profile: str, state: State) -> None:
    w = in_state(state, PROFILES[profile])
    model = BetaSelfHostedWork.model_validate(w.to_json(include_secret=True), strict=True)
    assert model.state == state.value
    assert model.id == w.id
    assert model.latest_heartbeat_at == w.to_json()["latest_heartbeat_at"]
    assert model.model_dump(mode="json") == w.to_json(include_secret=True)


def test_heartbeat_json_validates_with_the_sdk_model() -> None:
    _, beat = in_state(State.STARTING).heartbeat(at(5), expected_last_heartbeat=NO_HEARTBEAT)
    model = BetaSelfHostedWorkHeartbeatResponse.model_validate(beat.to_json(), strict=True)
    assert (model.last_heartbeat, model.ttl_seconds, model.state) == (
        beat.last_heartbeat,
        120,
        "active",
    )


def _client(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test-key",
        base_url="http://workstate.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def test_our_412_makes_the_sdk_raise_its_precondition_error() -> None:
    w = in_state(State.ACTIVE)
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        token = request.url.params.get("expected_last_heartbeat")
        try:
            w.heartbeat(at(9), expected_last_heartbeat=token)
        except Exception as err:  # a WorkstateError, rendered the way a server would
            status = getattr(err, "status", 500)
            body = err.to_json(request_id="req_412")  # type: ignore[attr-defined]
            return httpx2.Response(status, json=body, headers={"request-id": "req_412"})
        raise AssertionError("the heartbeat should have been refused")

    client = _client(handler)
    with pytest.raises(BetaHeartbeatPreconditionFailedError) as info:
        client.beta.environments.work.heartbeat(
            w.id, environment_id=w.environment_id, expected_last_heartbeat=NO_HEARTBEAT
        )
    err = info.value
    assert err.status_code == 412
    assert err.error_code == "heartbeat_precondition_failed"
    assert err.request_id == "req_412"
    assert err.details.current_state.state == "active"
    assert err.details.current_state.last_heartbeat == w.last_heartbeat
    assert err.details.current_state.lease_extended is False
    assert err.details.current_state.ttl_seconds == 120
    assert seen[0].headers["authorization"] == "Bearer test-key"


def test_our_409_makes_the_sdk_raise_conflict_error() -> None:
    w = in_state(State.STOPPED)

    def handler(request: httpx2.Request) -> httpx2.Response:
        with pytest.raises(IllegalMoveError) as info:
            w.ack(at(9))
        return httpx2.Response(409, json=info.value.to_json(request_id="req_409"))

    with pytest.raises(anthropic.ConflictError) as caught:
        _client(handler).beta.environments.work.ack(w.id, environment_id=w.environment_id)
    assert caught.value.type == "conflict_error"


def test_sdk_parses_our_ack_answer() -> None:
    w = Work.create(id="work_9", environment_id="env_9", session_id="sesn_9", now=at(0))

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/environments/env_9/work/work_9/ack"
        return httpx2.Response(200, content=json.dumps(w.ack(at(1)).to_json()).encode())

    got = _client(handler).beta.environments.work.ack("work_9", environment_id="env_9")
    assert (got.state, got.acknowledged_at) == ("starting", "2026-07-01T08:15:01.000000Z")
