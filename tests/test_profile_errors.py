"""Profiles are plain data; errors carry everything an adapter and a programmer need."""

from __future__ import annotations

import attrs
import pytest

from workstate import (
    ANTHROPIC,
    PROFILES,
    QODER,
    IllegalMoveError,
    InvalidInputError,
    NotFoundError,
    Operation,
    Precision,
    State,
    WorkstateError,
)


def test_shipped_profiles_answer_spec_section_7() -> None:
    assert PROFILES == {"anthropic": ANTHROPIC, "qoder": QODER}
    assert (ANTHROPIC.default_ttl_seconds, QODER.default_ttl_seconds) == (120, 60)
    assert ANTHROPIC.lifecycle_precision is Precision.MICROSECONDS
    assert QODER.lifecycle_precision is Precision.SECONDS
    assert (ANTHROPIC.min_reclaim_older_than_ms, QODER.min_reclaim_older_than_ms) == (1, 0)
    assert ANTHROPIC.conflict_error_type == "conflict_error"
    assert QODER.precondition_error_type == "precondition_failed_error"
    with pytest.raises(TypeError):
        PROFILES["x"] = ANTHROPIC  # type: ignore[index]


def test_custom_profile() -> None:
    mine = attrs.evolve(ANTHROPIC, name="mine", default_ttl_seconds=30)
    assert mine.clamp_ttl(None) == 30
    assert mine.clamp_ttl(1) == 10
    assert mine.clamp_ttl(9999) == 600


@pytest.mark.parametrize(
    "changes",
    [
        {"default_ttl_seconds": 5},
        {"min_ttl_seconds": 0},
        {"max_ttl_seconds": 100},
        {"max_metadata_pairs": -1},
        {"default_ttl_seconds": True},
        {"min_reclaim_older_than_ms": 6000},
    ],
)
def test_inconsistent_profile_is_refused(changes: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="Profile"):
        attrs.evolve(ANTHROPIC, **changes)


def test_error_envelopes() -> None:
    err = IllegalMoveError(
        "no",
        work_id="work_1",
        state=State.STOPPED,
        operation=Operation.ACK,
        allowed=[Operation.UPDATE_METADATA],
    )
    assert err.to_json() == {
        "type": "error",
        "error": {"type": "conflict_error", "message": "no"},
        "request_id": None,
    }
    assert err.allowed == (Operation.UPDATE_METADATA,)
    assert repr(err) == "IllegalMoveError('no', status=409)"
    nf = NotFoundError("no such work item work_9", work_id="work_9")
    assert (nf.status, nf.error_type, nf.error_code, nf.details()) == (
        404,
        "not_found_error",
        None,
        None,
    )
    bad = InvalidInputError("limit out of range", key="limit", expected="1-1000", got=0)
    assert (bad.status, bad.key, bad.expected, bad.got) == (400, "limit", "1-1000", 0)
    generic = WorkstateError("auth", status=401, error_type="authentication_error")
    assert generic.to_json(request_id="r")["error"]["type"] == "authentication_error"
    assert isinstance(err, WorkstateError)
    assert isinstance(bad, WorkstateError)
