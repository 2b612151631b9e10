"""Fault rules as plain data: parsing (400 naming the key), matching, counting, seeded draws."""

from __future__ import annotations

from typing import Any

import pytest

from workstate import InvalidInputError
from workstate.server._faults import (
    FAULT_OPERATIONS,
    FaultEffect,
    FaultMatch,
    FaultSet,
    error_type_for,
    parse_rule,
)

HEARTBEAT_503 = {"match": {"operation": "heartbeat"}, "times": 1, "effect": {"status": 503}}


def test_a_rule_round_trips_through_its_json() -> None:
    rule = parse_rule(
        {
            "match": {
                "operation": ["heartbeat", "ack", "heartbeat"],
                "environment_id": "env_a",
                "work_id": "work_1",
                "worker_id": "w1",
            },
            "times": 3,
            "probability": 0.5,
            "effect": {
                "status": 429,
                "type": "rate_limit_error",
                "message": "slow down",
                "retry_after": 1.5,
                "delay_ms": 10,
            },
        },
        rule_id="flt_9",
    )
    assert rule.match.operation == ("heartbeat", "ack")
    assert rule.to_json() == {
        "id": "flt_9",
        "match": {
            "operation": ["heartbeat", "ack"],
            "environment_id": "env_a",
            "work_id": "work_1",
            "worker_id": "w1",
        },
        "effect": {
            "status": 429,
            "type": "rate_limit_error",
            "message": "slow down",
            "retry_after": 1.5,
            "delay_ms": 10,
        },
        "times": 3,
        "probability": 0.5,
        "fired": 0,
        "remaining": 3,
    }
    assert parse_rule({"effect": {"drop": "after"}}, rule_id="flt_1").to_json() == {
        "id": "flt_1",
        "match": {},
        "effect": {"drop": "after"},
        "times": None,
        "probability": None,
        "fired": 0,
        "remaining": None,
    }
    assert parse_rule({"effect": {"delay_ms": 0}}, rule_id="flt_1").effect == FaultEffect()


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ([], "body", "must be a JSON object"),
        ({"effect": {"status": 503}, "when": 1}, "when", "unknown key"),
        ({}, "effect", "needs an effect"),
        ({"effect": {}}, "effect", "must say what happens"),
        ({"effect": 503}, "effect", "must be a JSON object"),
        ({"effect": {"status": 503, "colour": 1}}, "effect.colour", "unknown key"),
        ({"effect": {"status": 200}}, "effect.status", "from 400 to 599"),
        ({"effect": {"status": "503"}}, "effect.status", "from 400 to 599"),
        ({"effect": {"status": True}}, "effect.status", "from 400 to 599"),
        ({"effect": {"drop": "later"}}, "effect.drop", "'before' or 'after'"),
        ({"effect": {"drop": "after", "status": 503}}, "effect.drop", "both status and drop"),
        ({"effect": {"delay_ms": -1}}, "effect.delay_ms", "from 0 to 600000"),
        ({"effect": {"delay_ms": 1.5}}, "effect.delay_ms", "from 0 to 600000"),
        ({"effect": {"delay_ms": 600_001}}, "effect.delay_ms", "from 0 to 600000"),
        ({"effect": {"drop": "before", "retry_after": 1}}, "effect.retry_after", "needs"),
        ({"effect": {"delay_ms": 5, "type": "x"}}, "effect.type", "needs effect.status"),
        ({"effect": {"status": 503, "type": ""}}, "effect.type", "non-empty string"),
        ({"effect": {"status": 503, "message": 5}}, "effect.message", "non-empty string"),
        ({"effect": {"status": 429, "retry_after": -1}}, "effect.retry_after", "0 to 3600"),
        ({"effect": {"status": 429, "retry_after": "2"}}, "effect.retry_after", "0 to 3600"),
        ({"effect": {"status": 429, "retry_after": True}}, "effect.retry_after", "0 to 3600"),
        ({"match": [], "effect": {"status": 503}}, "match", "must be a JSON object"),
        ({"match": {"op": "poll"}, "effect": {"status": 503}}, "match.op", "unknown key"),
        (
            {"match": {"operation": "create"}, "effect": {"status": 503}},
            "match.operation",
            "/mock/",
        ),
        (
            {"match": {"operation": "mock_reset"}, "effect": {"status": 503}},
            "match.operation",
            "/mock/",
        ),
        ({"match": {"operation": "frob"}, "effect": {"status": 503}}, "match.operation", "not an"),
        ({"match": {"operation": []}, "effect": {"status": 503}}, "match.operation", "non-empty"),
        ({"match": {"operation": 3}, "effect": {"status": 503}}, "match.operation", "non-empty"),
        ({"match": {"operation": [3]}, "effect": {"status": 503}}, "match.operation", "not an"),
        (
            {"match": {"environment_id": "x"}, "effect": {"status": 503}},
            "match.environment_id",
            "env_",
        ),
        ({"match": {"work_id": "work_"}, "effect": {"status": 503}}, "match.work_id", "work_"),
        ({"match": {"worker_id": ""}, "effect": {"status": 503}}, "match.worker_id", "non-empty"),
        ({"times": 0, "effect": {"status": 503}}, "times", "positive integer"),
        ({"times": "1", "effect": {"status": 503}}, "times", "positive integer"),
        ({"probability": 0, "effect": {"status": 503}}, "probability", "(0, 1]"),
        ({"probability": 1.5, "effect": {"status": 503}}, "probability", "(0, 1]"),
        ({"probability": True, "effect": {"status": 503}}, "probability", "(0, 1]"),
    ],
)
def test_a_bad_rule_is_400_naming_the_key(body: Any, key: str, words: str) -> None:
    faults = FaultSet(seed=1)
    with pytest.raises(InvalidInputError) as info:
        faults.add(body)
    assert info.value.status == 400
    assert info.value.error_type == "invalid_request_error"
    assert info.value.key == key
    assert words in info.value.message
    assert info.value.expected
    assert faults.rules() == []  # nothing added, and no id used:
    assert faults.add(HEARTBEAT_503).id == "flt_1"


def test_matching_needs_every_key_given_and_never_matches_mock_controls() -> None:
    match = FaultMatch(operation=("heartbeat",), environment_id="env_a", work_id="work_1")
    assert match.matches("heartbeat", "env_a", "work_1", "w")
    assert not match.matches("ack", "env_a", "work_1", None)
    assert not match.matches("heartbeat", "env_b", "work_1", None)
    assert not match.matches("heartbeat", "env_a", "work_2", None)
    anything = FaultMatch()
    assert all(anything.matches(op, None, None, None) for op in FAULT_OPERATIONS)
    assert not anything.matches(None, None, None, None)  # a /mock/ control
    assert not anything.matches("create", "env_a", None, None)  # the mock's queueing call
    by_worker = FaultMatch(worker_id="w1")
    assert by_worker.matches("poll", "env_a", None, "w1")
    assert not by_worker.matches("poll", "env_a", None, "w2")


def test_times_counts_firings_and_the_first_live_rule_wins() -> None:
    faults = FaultSet(seed=1)
    first = faults.add(HEARTBEAT_503)
    second = faults.add({"match": {"operation": "heartbeat"}, "effect": {"status": 500}})
    picks = [faults.pick("heartbeat", "env_a", "work_1", None) for _ in range(3)]
    assert picks == [first, second, second]
    assert first.exhausted
    assert (first.to_json()["fired"], first.to_json()["remaining"]) == (1, 0)
    assert second.to_json()["remaining"] is None
    assert faults.remove(second.id)
    assert not faults.remove(second.id)
    assert faults.pick("heartbeat", "env_a", "work_1", None) is None
    faults.clear()
    assert faults.rules() == []
    assert faults.add(HEARTBEAT_503).id == "flt_3"  # ids keep counting up
    faults.reset()
    assert faults.rules() == []
    assert faults.add(HEARTBEAT_503).id == "flt_1"


def test_probability_draws_are_seeded_and_only_matching_requests_draw() -> None:
    def fired(seed: int, noise: bool) -> list[bool]:
        faults = FaultSet(seed=seed)
        faults.add({"match": {"operation": "poll"}, "probability": 0.5, "effect": {"status": 503}})
        out = []
        for _ in range(40):
            if noise:  # requests the rule does not match draw nothing
                assert faults.pick("ack", "env_a", "work_1", None) is None
            out.append(faults.pick("poll", "env_a", None, None) is not None)
        return out

    once = fired(7, noise=False)
    assert once == fired(7, noise=True)
    assert once != fired(8, noise=False)
    assert 5 < sum(once) < 35
    faults = FaultSet(seed=7)
    faults.add({"match": {"operation": "poll"}, "probability": 0.5, "effect": {"status": 503}})
    first = [faults.pick("poll", None, None, None) is not None for _ in range(40)]
    faults.reset()
    faults.add({"match": {"operation": "poll"}, "probability": 0.5, "effect": {"status": 503}})
    assert [faults.pick("poll", None, None, None) is not None for _ in range(40)] == first


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (408, "timeout_error"),
        (409, "conflict_error"),
        (413, "request_too_large"),
        (418, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (599, "api_error"),
    ],
)
def test_each_status_has_the_apis_error_type(status: int, error_type: str) -> None:
    assert error_type_for(status) == error_type


def test_a_409_takes_the_profiles_conflict_type() -> None:
    assert error_type_for(409, "invalid_request_error") == "invalid_request_error"
