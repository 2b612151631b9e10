"""Every rejection of a work item's operations, pinned field by field.

``tests/test_work.py`` checks each rejection's status, type and key; mutation testing showed
that the rest of an error (the message, what was expected, what was received, the item, its
state, the operation, what was allowed, the error code) could change without a test noticing.
Here every rejection the core's :class:`~workstate.Work` raises is written out in full, as
literals worked out from the spec (``shared/spec/work-lifecycle.md`` §3-§5, §7, §8): the
allowed operations per state come from the transition table, the error types and TTLs from the
profiles' table, the limits from §8.  Each case also shows the item is exactly as it was.

The second half pins the fast record builders' own guard (``_writer``), the per-profile caches
and the two places where a shared object is part of the contract.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from helpers import T0, at, in_state, new

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    QODER,
    InvalidInputError,
    LeaseState,
    Operation,
    PreconditionFailedError,
    Profile,
    State,
    Work,
    WorkData,
    WorkstateError,
    _work,
)

DELIVER, ACK, HEARTBEAT, STOP, FORCE_STOP, EXPIRE, UPDATE = (
    Operation.DELIVER,
    Operation.ACK,
    Operation.HEARTBEAT,
    Operation.STOP,
    Operation.FORCE_STOP,
    Operation.EXPIRE,
    Operation.UPDATE_METADATA,
)
QUEUED, STARTING, ACTIVE, STOPPING, STOPPED = State

# What each state allows (spec §3's table; "deliver" is what a poll does to a queued item).
QUEUED_ALLOWS = (DELIVER, ACK, STOP, FORCE_STOP, UPDATE)
LEASED_ALLOWS = (ACK, HEARTBEAT, STOP, FORCE_STOP, EXPIRE, UPDATE)  # starting and active
STOPPING_ALLOWS = (HEARTBEAT, STOP, FORCE_STOP, EXPIRE, UPDATE)
STOPPED_ALLOWS = {"anthropic": (HEARTBEAT, UPDATE), "qoder": (STOP, FORCE_STOP, UPDATE)}

TOKEN_EXPECTED = "'NO_HEARTBEAT' or the last_heartbeat returned last time"
RFC3339 = "an RFC 3339 timestamp with an offset, e.g. 2026-07-01T08:15:06.120394Z"
BEAT_2S = "2026-07-01T08:15:02.000000Z"  # the token of in_state(ACTIVE)'s heartbeat at 2 s
STALE = "2026-07-01T08:15:01.000000Z"


def fields(err: WorkstateError) -> dict[str, Any]:
    """Everything an error tells a person or a program, as one comparable dict."""
    out: dict[str, Any] = {
        "class": type(err).__name__,
        "status": err.status,
        "error_type": err.error_type,
        "message": err.message,
        "work_id": err.work_id,
        "state": err.state,
        "operation": err.operation,
        "allowed": err.allowed,
        "error_code": err.error_code,
    }
    if isinstance(err, InvalidInputError):
        out.update(key=err.key, expected=err.expected, got=err.got)
    if isinstance(err, PreconditionFailedError):
        out.update(
            current_state=err.current_state, expected_last_heartbeat=err.expected_last_heartbeat
        )
    return out


def bad_input(
    message: str,
    key: str,
    expected: str,
    got: object,
    *,
    work_id: str | None = "work_1",
    state: State | None = None,
    operation: Operation | None = None,
    error_code: str | None = None,
) -> dict[str, Any]:
    """The fields of a 400 (spec §8: the API's ``invalid_request_error``)."""
    return {
        "class": "InvalidInputError",
        "status": 400,
        "error_type": "invalid_request_error",
        "message": message,
        "work_id": work_id,
        "state": state,
        "operation": operation,
        "allowed": (),
        "error_code": error_code,
        "key": key,
        "expected": expected,
        "got": got,
    }


def conflict(
    message: str,
    state: State,
    operation: Operation,
    allowed: tuple[Operation, ...],
    error_type: str = "conflict_error",
) -> dict[str, Any]:
    """The fields of a lifecycle 409 (its type is a profile's, spec §7)."""
    return {
        "class": "IllegalMoveError",
        "status": 409,
        "error_type": error_type,
        "message": message,
        "work_id": "work_1",
        "state": state,
        "operation": operation,
        "allowed": allowed,
        "error_code": None,
    }


def precondition(
    message: str,
    current: LeaseState,
    token: str,
    error_type: str = "invalid_request_error",
) -> dict[str, Any]:
    """The fields of a heartbeat's 412 (spec §1 and §4)."""
    return {
        "class": "PreconditionFailedError",
        "status": 412,
        "error_type": error_type,
        "message": message,
        "work_id": "work_1",
        "state": current.state,
        "operation": HEARTBEAT,
        "allowed": (),
        "error_code": "heartbeat_precondition_failed",
        "current_state": current,
        "expected_last_heartbeat": token,
    }


def metadata_error(message: str, key: str, expected: str, got: object) -> dict[str, Any]:
    """A 400 of a metadata patch on the queued ``work_1`` under ``anthropic``."""
    return bad_input(
        message,
        key,
        expected,
        got,
        state=QUEUED,
        operation=UPDATE,
        error_code="invalid_metadata",
    )


def qoder_in(state: State) -> Work:
    return in_state(state, QODER)


SEVENTEEN = {f"k{i}": "v" for i in range(17)}
LATE = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)

Case = tuple[Callable[[], Work], Callable[[Work], object], dict[str, Any]]
CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- the time (§3)
    "a time before the latest recorded one": (
        lambda: in_state(ACTIVE),
        lambda w: w.ack(at(1)),
        bad_input(
            "cannot ack work work_1 at 2026-07-01T08:15:01.000000Z: that is earlier than its "
            "latest recorded time 2026-07-01T08:15:02.000000Z",
            "now",
            "a time at or after 2026-07-01T08:15:02.000000Z",
            at(1),
            state=ACTIVE,
            operation=ACK,
        ),
    ),
    "a naive time": (
        lambda: in_state(ACTIVE),
        lambda w: w.stop(dt.datetime(2026, 7, 2)),
        bad_input(
            "now must be timezone-aware, got the naive datetime 2026-07-02T00:00:00",
            "now",
            "a timezone-aware datetime",
            dt.datetime(2026, 7, 2),
            work_id=None,
        ),
    ),
    "a lease past the year 9999": (
        lambda: Work.create(id="work_1", environment_id="env_1", session_id="s", now=LATE).ack(
            LATE
        ),
        lambda w: w.heartbeat(LATE, expected_last_heartbeat=NO_HEARTBEAT),
        bad_input(
            "a lease of 120 s from 9999-12-31T23:59:00.000000Z would end after the year 9999",
            "now",
            "a time more than 120 s before 9999-12-31T23:59:59.999999Z",
            LATE,
            work_id=None,
        ),
    ),
    # ---------------------------------------------------------------- the table (§3, §7)
    "ack of a stopped item": (
        lambda: in_state(STOPPED),
        lambda w: w.ack(at(5)),
        conflict(
            "cannot ack work work_1: it is stopped, where only heartbeat, update_metadata is "
            "allowed",
            STOPPED,
            ACK,
            STOPPED_ALLOWS["anthropic"],
        ),
    ),
    "ack of a stopping item": (
        lambda: in_state(STOPPING),
        lambda w: w.ack(at(5)),
        conflict(
            "cannot ack work work_1: it is stopping, where only heartbeat, stop, force_stop, "
            "expire, update_metadata is allowed",
            STOPPING,
            ACK,
            STOPPING_ALLOWS,
        ),
    ),
    "stop of a stopped item (anthropic)": (
        lambda: in_state(STOPPED),
        lambda w: w.stop(at(5), force=True),
        conflict(
            "cannot force_stop work work_1: it is stopped, where only heartbeat, "
            "update_metadata is allowed",
            STOPPED,
            FORCE_STOP,
            STOPPED_ALLOWS["anthropic"],
        ),
    ),
    "heartbeat of a stopped item (qoder)": (
        lambda: qoder_in(STOPPED),
        lambda w: w.heartbeat(at(5)),
        conflict(
            "cannot heartbeat work work_1: it is stopped, where only stop, force_stop, "
            "update_metadata is allowed",
            STOPPED,
            HEARTBEAT,
            STOPPED_ALLOWS["qoder"],
            "invalid_request_error",
        ),
    ),
    "heartbeat of a queued item without a timestamp token": (
        lambda: new(),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=NO_HEARTBEAT),
        conflict(
            "cannot heartbeat work work_1: it is queued, where only deliver, ack, stop, "
            "force_stop, update_metadata is allowed",
            QUEUED,
            HEARTBEAT,
            QUEUED_ALLOWS,
        ),
    ),
    "heartbeat of a queued item with a timestamp token (qoder)": (
        lambda: new(QODER),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=STALE),
        conflict(
            "cannot heartbeat work work_1: it is queued, where only deliver, ack, stop, "
            "force_stop, update_metadata is allowed",
            QUEUED,
            HEARTBEAT,
            QUEUED_ALLOWS,
            "invalid_request_error",
        ),
    ),
    "expire of a queued item": (
        lambda: new(),
        lambda w: w.expire(at(5)),
        conflict(
            "cannot expire work work_1: it is queued, where only deliver, ack, stop, "
            "force_stop, update_metadata is allowed",
            QUEUED,
            EXPIRE,
            QUEUED_ALLOWS,
        ),
    ),
    # ---------------------------------------------------------------- expiry (§5)
    "expire at the deadline": (
        lambda: in_state(ACTIVE),
        lambda w: w.expire(at(122)),
        conflict(
            "cannot expire work work_1: its lease runs until 2026-07-01T08:17:02.000000Z, and "
            "it is 2026-07-01T08:17:02.000000Z; expire applies after the deadline",
            ACTIVE,
            EXPIRE,
            LEASED_ALLOWS,
        ),
    ),
    "expire of an acked item that holds no lease": (
        lambda: in_state(STARTING),  # anthropic: an ack starts no lease
        lambda w: w.expire(at(500)),
        conflict(
            "cannot expire work work_1: it holds no lease, and it is "
            "2026-07-01T08:23:20.000000Z; expire applies after a lease's deadline",
            STARTING,
            EXPIRE,
            LEASED_ALLOWS,
        ),
    ),
    "expire before the deadline (qoder)": (
        lambda: qoder_in(STARTING),  # qoder: the ack starts a lease of 60 s
        lambda w: w.expire(at(60)),
        conflict(
            "cannot expire work work_1: its lease runs until 2026-07-01T08:16:01.000000Z, and "
            "it is 2026-07-01T08:16:00.000000Z; expire applies after the deadline",
            STARTING,
            EXPIRE,
            LEASED_ALLOWS,
            "invalid_request_error",
        ),
    ),
    # ---------------------------------------------------------------- ack (§7)
    "ack by another worker than the poll's (qoder)": (
        lambda: new(QODER).deliver(at(1), worker_id="wrk_a"),
        lambda w: w.ack(at(2), worker_id="wrk_b"),
        conflict(
            "cannot ack work work_1: it was delivered to worker 'wrk_a', not 'wrk_b'; only "
            "that worker may ack it",
            QUEUED,
            ACK,
            QUEUED_ALLOWS,
            "invalid_request_error",
        ),
    ),
    "a retried ack by another worker (qoder)": (
        lambda: new(QODER).deliver(at(1), worker_id="wrk_a").ack(at(2), worker_id="wrk_a"),
        lambda w: w.ack(at(3), worker_id="wrk_b"),
        conflict(
            "cannot ack work work_1: it was delivered to worker 'wrk_a', not 'wrk_b'; only "
            "that worker may ack it",
            STARTING,
            ACK,
            LEASED_ALLOWS,
            "invalid_request_error",
        ),
    ),
    # ---------------------------------------------------------------- heartbeat (§4)
    "a desired TTL of zero": (
        lambda: in_state(ACTIVE),
        lambda w: w.heartbeat(at(5), desired_ttl_seconds=0),
        bad_input(
            "desired_ttl_seconds must be a positive integer, got 0",
            "desired_ttl_seconds",
            "a positive integer (clamped to 10-600)",
            0,
            state=ACTIVE,
            operation=HEARTBEAT,
        ),
    ),
    "a desired TTL as text": (
        lambda: in_state(STARTING),
        lambda w: w.heartbeat(at(5), desired_ttl_seconds="30"),
        bad_input(
            "desired_ttl_seconds must be a positive integer, got '30'",
            "desired_ttl_seconds",
            "a positive integer (clamped to 10-600)",
            "30",
            state=STARTING,
            operation=HEARTBEAT,
        ),
    ),
    "a token that is no string": (
        lambda: in_state(ACTIVE),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=5),
        bad_input(
            "expected_last_heartbeat must be a string, got int",
            "expected_last_heartbeat",
            TOKEN_EXPECTED,
            5,
            state=ACTIVE,
            operation=HEARTBEAT,
        ),
    ),
    "a token that is no timestamp": (
        lambda: in_state(ACTIVE),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat="junk"),
        bad_input(
            f"expected_last_heartbeat is not an RFC 3339 timestamp: 'junk'; expected {RFC3339}; "
            "or 'NO_HEARTBEAT' for the first heartbeat",
            "expected_last_heartbeat",
            TOKEN_EXPECTED,
            "junk",
            state=ACTIVE,
            operation=HEARTBEAT,
        ),
    ),
    "a token without an offset": (
        lambda: in_state(STARTING),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat="2026-07-01T08:15:06"),
        bad_input(
            "expected_last_heartbeat has no UTC offset: '2026-07-01T08:15:06'; expected "
            f"{RFC3339}; or 'NO_HEARTBEAT' for the first heartbeat",
            "expected_last_heartbeat",
            TOKEN_EXPECTED,
            "2026-07-01T08:15:06",
            state=STARTING,
            operation=HEARTBEAT,
        ),
    ),
    "a token no wire can carry": (
        lambda: in_state(ACTIVE),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat="\ud800"),
        bad_input(
            "expected_last_heartbeat holds an unpaired surrogate (U+D800 at index 0), which is "
            "not Unicode text and cannot be written as UTF-8",
            "expected_last_heartbeat",
            "valid Unicode text (no unpaired surrogates)",
            "\ud800",
            work_id=None,
        ),
    ),
    "a stale token": (
        lambda: in_state(ACTIVE),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=STALE),
        precondition(
            f"heartbeat on work work_1 expected last_heartbeat '{STALE}', but the server holds "
            f"'{BEAT_2S}' in state active; the lease may belong to another worker",
            LeaseState(state=ACTIVE, last_heartbeat=BEAT_2S, ttl_seconds=120),
            STALE,
        ),
    ),
    "NO_HEARTBEAT once a heartbeat exists (qoder)": (
        lambda: qoder_in(ACTIVE),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=NO_HEARTBEAT),
        precondition(
            "heartbeat on work work_1 expected last_heartbeat 'NO_HEARTBEAT', but the server "
            f"holds '{BEAT_2S}' in state active; the lease may belong to another worker",
            LeaseState(state=ACTIVE, last_heartbeat=BEAT_2S, ttl_seconds=60),
            NO_HEARTBEAT,
            "precondition_failed_error",
        ),
    ),
    "a timestamp before any heartbeat": (
        lambda: in_state(STARTING),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=STALE),
        precondition(
            f"heartbeat on work work_1 expected last_heartbeat '{STALE}', but the item has no "
            "heartbeat yet (state starting); the lease may belong to another worker",
            LeaseState(state=STARTING, last_heartbeat=None, ttl_seconds=120),
            STALE,
        ),
    ),
    "a timestamp token on a queued item (anthropic)": (
        lambda: new(),
        lambda w: w.heartbeat(at(5), expected_last_heartbeat=STALE),
        precondition(
            f"heartbeat on work work_1 expected last_heartbeat '{STALE}', but the item has no "
            "heartbeat yet (state queued); the lease may belong to another worker",
            LeaseState(state=QUEUED, last_heartbeat=None, ttl_seconds=120),
            STALE,
        ),
    ),
    # ---------------------------------------------------------------- stop
    "force that is no boolean": (
        lambda: in_state(ACTIVE),
        lambda w: w.stop(at(5), force="yes"),
        bad_input(
            "force must be a boolean, got str",
            "force",
            "true or false",
            "yes",
            state=ACTIVE,
            operation=STOP,
        ),
    ),
    # ---------------------------------------------------------------- metadata (§8)
    "a patch that is no object": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), ["a"]),
        metadata_error(
            "metadata must be an object of string keys to string or null values, got list",
            "metadata",
            "an object of string keys to string or null values",
            ["a"],
        ),
    ),
    "a key that is no string": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), {1: "a"}),
        metadata_error(
            "a metadata key must be a non-empty string, got 1",
            "metadata",
            "non-empty string keys",
            1,
        ),
    ),
    "an empty key": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), {"": "a"}),
        metadata_error(
            "a metadata key must be a non-empty string, got ''",
            "metadata",
            "non-empty string keys",
            "",
        ),
    ),
    "a key of 65 characters": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), {"k" * 65: "a"}),
        metadata_error(
            f"metadata key '{'k' * 20}'... (65 characters) is 65 characters long; at most 64 "
            "are accepted",
            "metadata." + "k" * 65,
            "a key of at most 64 characters",
            "k" * 65,
        ),
    ),
    "a value that is no string": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), {"a": 1}),
        metadata_error(
            "metadata.a must be a string (or null to delete it), got int",
            "metadata.a",
            "a string, or null to delete the key",
            1,
        ),
    ),
    "a value of 513 characters": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), {"a": "v" * 513}),
        metadata_error(
            "metadata.a is 513 characters long; at most 512 are accepted",
            "metadata.a",
            "a value of at most 512 characters",
            "v" * 256,  # an error's got holds at most 256 characters of the input
        ),
    ),
    "a value no wire can carry": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), {"a": "x\ud800"}),
        metadata_error(
            "metadata.a holds an unpaired surrogate (U+D800 at index 1), which is not Unicode "
            "text and cannot be written as UTF-8",
            "metadata.a",
            "valid Unicode text (no unpaired surrogates)",
            "x\ud800",
        ),
    ),
    "a seventeenth pair": (
        lambda: new(),
        lambda w: w.update_metadata(at(1), SEVENTEEN),
        metadata_error(
            "metadata would hold 17 pairs; at most 16 are accepted",
            "metadata",
            "at most 16 pairs",
            SEVENTEEN,
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_rejection_carries_its_exact_error_and_changes_nothing(name: str) -> None:
    build, call, expected = CASES[name]
    work = build()
    snapshot = attrs.asdict(work, recurse=False)
    wire = work.to_json(include_secret=True)
    with pytest.raises(WorkstateError) as info:
        call(work)
    assert fields(info.value) == expected
    assert attrs.asdict(work, recurse=False) == snapshot
    assert work.to_json(include_secret=True) == wire


# The two wordings of a 412's message, on the envelope a server answers.  The rest of the error
# (status, type, error code, current_state, the token sent) is the same whichever applies.
@pytest.mark.parametrize(
    ("build", "state"),
    [(new, "queued"), (lambda: in_state(STARTING), "starting")],
    ids=["queued", "starting"],
)
def test_a_412_on_an_item_never_heartbeated_says_it_has_no_heartbeat(
    build: Callable[[], Work], state: str
) -> None:
    work = build()
    with pytest.raises(PreconditionFailedError) as info:
        work.heartbeat(at(5), expected_last_heartbeat=STALE)
    err = info.value
    envelope = err.to_json(request_id="req_1")["error"]
    assert envelope["message"] == (
        f"heartbeat on work work_1 expected last_heartbeat '{STALE}', but the item has no "
        f"heartbeat yet (state {state}); the lease may belong to another worker"
    )
    assert "None" not in envelope["message"]
    assert (err.status, envelope["type"], envelope["error_code"]) == (
        412,
        "invalid_request_error",
        "heartbeat_precondition_failed",
    )
    assert envelope["details"]["current_state"]["last_heartbeat"] is None
    assert err.expected_last_heartbeat == STALE
    assert work.last_heartbeat is None  # unchanged


def test_a_412_against_another_token_quotes_the_one_the_server_holds() -> None:
    work = in_state(ACTIVE)
    with pytest.raises(PreconditionFailedError) as info:
        work.heartbeat(at(5), expected_last_heartbeat=STALE)
    err = info.value
    envelope = err.to_json(request_id="req_1")["error"]
    assert envelope["message"] == (
        f"heartbeat on work work_1 expected last_heartbeat '{STALE}', but the server holds "
        f"'{BEAT_2S}' in state active; the lease may belong to another worker"
    )
    assert (err.status, envelope["type"], envelope["error_code"]) == (
        412,
        "invalid_request_error",
        "heartbeat_precondition_failed",
    )
    assert envelope["details"]["current_state"]["last_heartbeat"] == BEAT_2S
    assert err.expected_last_heartbeat == STALE
    assert work.last_heartbeat == BEAT_2S  # unchanged


def create_error(message: str, key: str, expected: str, got: object) -> dict[str, Any]:
    """A 400 of :meth:`Work.create`: there is no item yet, so no id, state or operation."""
    return bad_input(message, key, expected, got, work_id=None)


ID_CHARS = "1 to 128 of the characters A-Z a-z 0-9 _ -"
CREATE_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "neither data nor session_id": (
        {"session_id": None},
        create_error(
            "create needs data or session_id",
            "data",
            "data={'type': 'session', 'id': ...} or session_id=...",
            None,
        ),
    ),
    "both data and session_id": (
        {"data": WorkData(id="sesn_2")},
        create_error(
            "give data or session_id, not both",
            "data",
            "exactly one of data and session_id",
            "sesn_1",
        ),
    ),
    "an id without the work_ prefix": (
        {"id": "job_1"},
        create_error(
            f"id must be a string starting with 'work_', then {ID_CHARS}, got 'job_1'",
            "id",
            f"a string starting with 'work_', then {ID_CHARS}",
            "job_1",
        ),
    ),
    "an environment id without the env_ prefix": (
        {"environment_id": "environment"},
        create_error(
            f"environment_id must be a string starting with 'env_', then {ID_CHARS}, got "
            "'environment'",
            "environment_id",
            f"a string starting with 'env_', then {ID_CHARS}",
            "environment",
        ),
    ),
    "an empty session id": (
        {"session_id": ""},
        create_error(
            f"data.id must be a string of {ID_CHARS}, got ''",
            "data.id",
            f"a string of {ID_CHARS}",
            "",
        ),
    ),
    "an unknown data type": (
        {"session_id": None, "data": WorkData(type="batch", id="x")},
        create_error(
            "data.type must be one of ['healthcheck', 'session'], got 'batch'",
            "data.type",
            "one of ['healthcheck', 'session']",
            "batch",
        ),
    ),
    "a secret that is no string": (
        {"secret": 42},
        create_error("secret must be a string or null, got 42", "secret", "a string or null", 42),
    ),
    "metadata that is no object": (
        {"metadata": ["a"]},
        bad_input(
            "metadata must be an object of string keys to string or null values, got list",
            "metadata",
            "an object of string keys to string or null values",
            ["a"],
            work_id=None,
            operation=UPDATE,
            error_code="invalid_metadata",
        ),
    ),
    "a metadata value that is no string (qoder: no error code)": (
        {"metadata": {"a": 1}, "profile": QODER},
        bad_input(
            "metadata.a must be a string (or null to delete it), got int",
            "metadata.a",
            "a string, or null to delete the key",
            1,
            work_id=None,
            operation=UPDATE,
        ),
    ),
    "a naive creation time": (
        {"now": dt.datetime(2026, 7, 1)},
        create_error(
            "now must be timezone-aware, got the naive datetime 2026-07-01T00:00:00",
            "now",
            "a timezone-aware datetime",
            dt.datetime(2026, 7, 1),
        ),
    ),
}


@pytest.mark.parametrize("name", list(CREATE_CASES))
def test_each_refused_create_carries_its_exact_error(name: str) -> None:
    kwargs, expected = CREATE_CASES[name]
    args: dict[str, Any] = {
        "id": "work_1",
        "environment_id": "env_1",
        "session_id": "sesn_1",
        "now": T0,
        **kwargs,
    }
    with pytest.raises(WorkstateError) as info:
        Work.create(**args)
    assert fields(info.value) == expected


def test_the_metadata_error_code_is_the_profiles() -> None:
    """§7 / docs/divergences.md: ``invalid_metadata`` under anthropic, none under qoder."""
    for profile, code in ((ANTHROPIC, "invalid_metadata"), (QODER, None)):
        with pytest.raises(InvalidInputError) as info:
            new(profile).update_metadata(at(1), {"a": 1})
        assert info.value.error_code == code
        assert info.value.to_json()["error"].get("error_code") == code


# ------------------------------------------------------------------ what a move keeps
def test_an_ack_that_names_no_worker_keeps_the_polls_worker() -> None:
    w = new().deliver(at(1), worker_id="wrk_a")
    assert (w.delivered_at, w.delivered_to) == (at(1), "wrk_a")
    acked = w.ack(at(2))
    assert (acked.delivered_at, acked.delivered_to) == (None, "wrk_a")
    assert w.ack(at(2), worker_id="wrk_b").delivered_to == "wrk_b"


def test_metadata_emptied_by_a_patch_is_the_shared_empty_mapping() -> None:
    """An item without metadata holds the one shared empty mapping, however it got there."""
    empty = new().metadata
    w = new(metadata={"a": "1"}).update_metadata(at(1), {"a": None})
    assert w.metadata == {}
    assert w.metadata is empty
    assert new(metadata={}).metadata is empty


def test_the_creation_time_keeps_the_profiles_precision() -> None:
    """§7: microseconds under anthropic; whole seconds under qoder, while the item's own
    clock (the earliest time a later call may give) keeps the exact time."""
    exact = T0 + dt.timedelta(microseconds=250)
    for profile, created in ((ANTHROPIC, exact), (QODER, T0)):
        w = Work.create(
            id="work_1", environment_id="env_1", session_id="s", now=exact, profile=profile
        )
        assert (w.created_at, w.touched_at) == (created, exact)


def test_a_subclass_is_created_with_the_same_fields() -> None:
    class MyWork(Work):
        pass

    exact = T0 + dt.timedelta(microseconds=250)
    mine = MyWork.create(id="work_1", environment_id="env_1", session_id="sesn_1", now=exact)
    plain = Work.create(id="work_1", environment_id="env_1", session_id="sesn_1", now=exact)
    assert type(mine) is MyWork
    assert attrs.asdict(mine, recurse=False) == attrs.asdict(plain, recurse=False)


# ------------------------------------------------------------------ the caches
def test_a_profiles_rows_are_compiled_once() -> None:
    profile = attrs.evolve(ANTHROPIC, name="compiled-once")
    plans = _work._plans(profile)
    assert _work._plans(profile) is plans
    assert _work._plans(attrs.evolve(profile)) is not plans  # by identity, not by value
    assert plans[("queued", "ack")].target is STARTING


def test_a_ttl_is_turned_into_a_duration_once() -> None:
    delta = _work._ttl_delta(37)
    assert delta == dt.timedelta(seconds=37)
    assert _work._ttl_delta(37) is delta


# ------------------------------------------------------------------ the fast builders' guard
@attrs.frozen(kw_only=True)
class Plain:
    a: int
    b: str = "x"


def test_the_writer_of_a_plain_class_builds_an_ordinary_frozen_instance() -> None:
    writer = _work._writer(Plain)
    assert (writer.__name__, writer.__bases__, writer.__slots__) == ("_PlainWriter", (Plain,), ())
    assert "__weakref__" in Plain.__slots__  # attrs' own slot is allowed
    new_obj: Any = object.__new__(writer)
    new_obj.a = 1
    new_obj.b = "gone"
    del new_obj.b  # the writer may also delete, as attrs' own __init__ never needs to
    new_obj.b = "y"
    new_obj.__class__ = Plain
    assert new_obj == Plain(a=1, b="y")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        new_obj.a = 2


@attrs.frozen
class Validated:
    a: int = attrs.field(validator=attrs.validators.instance_of(int))


@attrs.frozen
class Converted:
    a: int = attrs.field(converter=int)


@attrs.frozen
class PreHook:
    a: int

    def __attrs_pre_init__(self) -> None:
        pass


@attrs.frozen
class PostHook:
    a: int

    def __attrs_post_init__(self) -> None:
        pass


class ExtraSlot(Plain):
    __slots__ = ("extra",)


@pytest.mark.parametrize(
    "cls",
    [Validated, Converted, PreHook, PostHook, ExtraSlot],
    ids=lambda c: c.__name__,
)
def test_the_writer_refuses_a_class_whose_init_does_more_than_store(cls: type) -> None:
    with pytest.raises(AssertionError) as info:
        _work._writer(cls)
    assert str(info.value) == f"{cls.__name__}.__init__ does more than store its fields"


def test_a_custom_profile_answers_with_its_own_values() -> None:
    """The numbers in the messages are the profile's, not the shipped defaults."""
    profile: Profile = attrs.evolve(
        ANTHROPIC,
        name="tight",
        min_ttl_seconds=5,
        default_ttl_seconds=20,
        max_ttl_seconds=50,
        max_metadata_pairs=2,
        max_metadata_key_length=3,
        max_metadata_value_length=4,
    )
    w = new(profile).ack(at(1))
    with pytest.raises(InvalidInputError) as info:
        w.heartbeat(at(2), desired_ttl_seconds=-1)
    assert info.value.expected == "a positive integer (clamped to 5-50)"
    cases = [
        ({"abcd": "v"}, "metadata key 'abcd' is 4 characters long; at most 3 are accepted"),
        ({"a": "vvvvv"}, "metadata.a is 5 characters long; at most 4 are accepted"),
        ({"a": "1", "b": "2", "c": "3"}, "metadata would hold 3 pairs; at most 2 are accepted"),
    ]
    for patch, message in cases:
        with pytest.raises(InvalidInputError) as info:
            w.update_metadata(at(2), patch)
        assert info.value.message == message
