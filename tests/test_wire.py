"""The wire: exact shapes out, strict parsing in, one clear error per kind of bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import ACK_LEASE, at, in_state, new

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    WORK_KEYS,
    HeartbeatResult,
    IllegalMoveError,
    InvalidInputError,
    LeaseState,
    NotFoundError,
    PreconditionFailedError,
    State,
    WorkstateError,
    error_from_json,
    heartbeat_from_json,
    heartbeat_to_json,
    lease_state_from_json,
    work_from_json,
    work_to_json,
)


def good() -> dict[str, Any]:
    return in_state(State.ACTIVE).to_json()


def test_work_json_has_every_key_in_api_order() -> None:
    assert list(good()) == list(WORK_KEYS)
    assert good()["latest_heartbeat_at"] == "2026-07-01T08:15:02.000000Z"


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("profile_name", ["anthropic", "qoder"])
def test_round_trip_through_json_text(state: State, profile_name: str) -> None:
    from workstate import PROFILES

    profile = PROFILES[profile_name]
    w = in_state(state, profile)
    text = json.dumps(work_to_json(w))
    back = work_from_json(text, profile=profile)
    assert work_to_json(back) == work_to_json(w)
    assert back.last_heartbeat == w.last_heartbeat
    assert back.state is w.state


def test_parsed_lease_is_derived_from_public_fields() -> None:
    back = work_from_json(good())
    assert back.ttl_seconds == 120
    assert back.lease_expires_at == at(122)
    assert (back.attempt, back.version, back.touched_at) == (1, 1, at(2))
    assert work_from_json(new().to_json()).lease_expires_at is None


@pytest.mark.parametrize(
    ("profile", "ttl", "deadline"),
    [(ANTHROPIC, None, None), (ACK_LEASE, 120, at(121)), (QODER, 60, at(61))],
    ids=["anthropic", "ack-lease", "qoder"],
)
@pytest.mark.parametrize("state", [State.STARTING, State.STOPPING])
def test_an_item_never_heartbeated_holds_the_lease_its_ack_started(
    profile: Any, ttl: int | None, deadline: Any, state: State
) -> None:
    """The profile's ack_lease decides, as in Work.ack: none at all under anthropic."""
    w = new(profile).ack(at(1))
    if state is State.STOPPING:
        w = w.stop(at(3))
    assert (w.ttl_seconds, w.lease_expires_at) == (ttl, deadline)
    back = work_from_json(w.to_json(), profile=profile)
    assert (back.state, back.ttl_seconds, back.lease_expires_at) == (state, ttl, deadline)


def test_any_offset_is_accepted_and_normalised() -> None:
    obj = good()
    obj["created_at"] = "2026-07-01T10:15:00+02:00"
    assert work_from_json(obj).created_at == at(0)


def _mutate(path: str, value: Any) -> dict[str, Any]:
    obj = good()
    if path.startswith("data."):
        obj["data"][path[5:]] = value
    else:
        obj[path] = value
    return obj


def _drop(key: str) -> dict[str, Any]:
    obj = good()
    if key.startswith("data."):
        del obj["data"][key[5:]]
    else:
        del obj[key]
    return obj


BAD: list[tuple[str, Any, str, str]] = [
    # (case, value, key blamed, words in the message)
    *((f"missing {k}", _drop(k), k, "missing the key") for k in WORK_KEYS),
    ("missing data.id", _drop("data.id"), "data.id", "missing the key"),
    ("unknown key", {**good(), "extra": 1}, "extra", "unknown key"),
    ("type", _mutate("type", "job"), "type", "must be 'work'"),
    ("id prefix", _mutate("id", "job_1"), "id", "starting with 'work_'"),
    ("id type", _mutate("id", 7), "id", "must be"),
    ("environment", _mutate("environment_id", "e1"), "environment_id", "'env_'"),
    ("data type", _mutate("data", []), "data", "must be an object"),
    ("data.type", _mutate("data.type", "batch"), "data.type", "must be one of"),
    ("data.type unhashable", _mutate("data.type", []), "data.type", "must be one of"),
    (
        "past year 9999",
        _mutate("latest_heartbeat_at", "9999-12-31T23:59:59-01:00"),
        "latest_heartbeat_at",
        "years 1-9999",
    ),
    ("data.id", _mutate("data.id", None), "data.id", "1 to 128 of the characters"),
    ("state", _mutate("state", "running"), "state", "must be one of queued"),
    ("state type", _mutate("state", 3), "state", "must be one of"),
    ("naive", _mutate("started_at", "2026-07-01T08:15:02"), "started_at", "no UTC offset"),
    ("malformed", _mutate("started_at", "yesterday"), "started_at", "not an RFC 3339"),
    ("impossible", _mutate("started_at", "2026-02-30T08:15:02Z"), "started_at", "not a valid"),
    ("time type", _mutate("started_at", 1751357702), "started_at", "must be a string"),
    ("created null", _mutate("created_at", None), "created_at", "got null"),
    ("metadata type", _mutate("metadata", ["a"]), "metadata", "object of strings"),
    ("metadata value", _mutate("metadata", {"a": 1}), "metadata.a", "must be a string"),
    ("secret type", _mutate("secret", 5), "secret", "or null"),
    ("active without started_at", _mutate("started_at", None), "started_at", "null in state"),
    (
        "queued with ack",
        {**new().to_json(), "acknowledged_at": "2026-07-01T08:15:01Z"},
        "acknowledged_at",
        "set in state queued",
    ),
    (
        "order",
        _mutate("acknowledged_at", "2026-07-01T08:15:05Z"),
        "started_at",
        "earlier than acknowledged_at",
    ),
    (
        "too much metadata",
        _mutate("metadata", {f"k{i}": "v" for i in range(17)}),
        "metadata",
        "at most 16",
    ),
]


@pytest.mark.parametrize(("case", "value", "key", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_work_json_gets_its_own_error(case: str, value: Any, key: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        work_from_json(value)
    assert (info.value.status, info.value.key) == (400, key), info.value.message
    assert words in info.value.message


@pytest.mark.parametrize(("text", "key"), [("{", "work"), ("[]", "work"), (b"null", "work")])
def test_not_an_object(text: Any, key: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        work_from_json(text)
    assert info.value.key == key


def test_an_empty_secret_round_trips() -> None:
    w = new(secret="")
    assert work_from_json(w.to_json(include_secret=True)).secret == ""


def test_unknown_keys_allowed_when_not_strict() -> None:
    assert work_from_json({**good(), "extra": 1}, strict=False).state is State.ACTIVE


def test_heartbeat_json_round_trip() -> None:
    r = HeartbeatResult(
        last_heartbeat="2026-07-01T08:15:02.000000Z",
        lease_extended=True,
        state=State.ACTIVE,
        ttl_seconds=120,
    )
    assert heartbeat_from_json(json.dumps(heartbeat_to_json(r))) == r
    empty = HeartbeatResult(
        last_heartbeat="", lease_extended=False, state=State.STOPPING, ttl_seconds=60
    )
    assert heartbeat_from_json(empty.to_json()) == empty


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"type": "work"}, "type"),
        ({"last_heartbeat": None}, "last_heartbeat"),
        ({"last_heartbeat": "soon"}, "last_heartbeat"),
        ({"lease_extended": "yes"}, "lease_extended"),
        ({"state": "gone"}, "state"),
        ({"ttl_seconds": "60"}, "ttl_seconds"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_heartbeat_json(patch: dict[str, Any], key: str) -> None:
    obj = {
        "type": "work_heartbeat",
        "last_heartbeat": "",
        "lease_extended": True,
        "state": "active",
        "ttl_seconds": 60,
        **patch,
    }
    with pytest.raises(InvalidInputError) as info:
        heartbeat_from_json(obj)
    assert info.value.key == key


def test_412_envelope_round_trip() -> None:
    w = in_state(State.ACTIVE, QODER)
    with pytest.raises(PreconditionFailedError) as info:
        w.heartbeat(at(5), expected_last_heartbeat=NO_HEARTBEAT)
    envelope = info.value.to_json(request_id="req_9")
    assert envelope == {
        "type": "error",
        "error": {
            "type": "precondition_failed_error",
            "message": info.value.message,
            "details": {
                "error_code": "heartbeat_precondition_failed",
                "current_state": {
                    "state": "active",
                    "last_heartbeat": w.last_heartbeat,
                    "lease_extended": False,
                    "ttl_seconds": 60,
                },
            },
            "error_code": "heartbeat_precondition_failed",
        },
        "request_id": "req_9",
    }
    back = error_from_json(json.dumps(envelope), status=412)
    assert isinstance(back, PreconditionFailedError)
    assert back.current_state == w.lease_state()
    assert back.error_type == "precondition_failed_error"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (409, IllegalMoveError),
        (404, NotFoundError),
        (400, InvalidInputError),
        (500, WorkstateError),
        (412, WorkstateError),
    ],
)
def test_error_envelope_in(status: int, kind: type[WorkstateError]) -> None:
    err = error_from_json(
        {"type": "error", "error": {"type": "x_error", "message": "m"}, "request_id": None},
        status=status,
    )
    assert type(err) is kind
    assert (err.status, err.error_type, err.message) == (status, "x_error", "m")


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        ({"type": "oops", "error": {"type": "a", "message": "m"}, "request_id": None}, "type"),
        ({"type": "error", "error": {"type": "a"}, "request_id": None}, "message"),
        (
            {"type": "error", "error": {"type": "a", "message": 3}, "request_id": None},
            "error.message",
        ),
        ({"type": "error", "error": [], "request_id": None}, "error"),
    ],
)
def test_bad_error_envelope(obj: Any, key: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        error_from_json(obj, status=409)
    assert info.value.key == key


def test_lease_state_json() -> None:
    ls = LeaseState(state=State.QUEUED, last_heartbeat=None, ttl_seconds=120)
    assert lease_state_from_json(ls.to_json()) == ls
    with pytest.raises(InvalidInputError) as info:
        lease_state_from_json({**ls.to_json(), "last_heartbeat": "bad"})
    assert info.value.key == "last_heartbeat"
    with pytest.raises(InvalidInputError, match="string or null") as info:
        lease_state_from_json({**ls.to_json(), "last_heartbeat": 5})
    assert info.value.key == "last_heartbeat"
