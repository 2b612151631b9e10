"""The request journal as plain data: classification, outcomes, filters, trace records."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workstate._trace import journal_trace_records
from workstate.server._journal import (
    OPERATIONS,
    Journal,
    JournalEntry,
    RequestFacts,
    classify,
    decode_body,
    outcome,
)

W = "/v1/environments/env_a/work"


@pytest.mark.parametrize(
    ("method", "path", "facts"),
    [
        ("GET", W + "/poll", ("poll", "env_a", None)),
        ("GET", W + "/stats", ("stats", "env_a", None)),
        ("GET", W, ("list", "env_a", None)),
        ("HEAD", W, ("list", "env_a", None)),
        ("POST", W + "/work_1/ack", ("ack", "env_a", "work_1")),
        ("POST", W + "/work_1/heartbeat", ("heartbeat", "env_a", "work_1")),
        ("POST", W + "/work_1/stop", ("stop", "env_a", "work_1")),
        ("GET", W + "/work_1", ("get", "env_a", "work_1")),
        ("POST", W + "/work_1", ("update", "env_a", "work_1")),
        ("POST", W + "/poll", (None, None, None)),  # a wrong method, not an update
        ("POST", W + "/stats", (None, None, None)),
        ("DELETE", W + "/work_1", (None, None, None)),
        ("POST", "/mock/environments/env_a/work", ("create", "env_a", None)),
        ("GET", "/v1/sessions/sesn_1", ("session_get", None, None)),
        ("GET", "/v1/sessions/sesn_1/events", ("session_events", None, None)),
        ("GET", "/v1/sessions/sesn_1/events/stream", ("session_stream", None, None)),
        ("POST", "/v1/sessions/sesn_1/events", ("session_send", None, None)),
        ("POST", "/mock/faults", (None, None, None)),
        ("GET", "/mock/journal", (None, None, None)),
        ("GET", "/elsewhere", (None, None, None)),
    ],
)
def test_requests_are_classified_by_method_and_path(
    method: str, path: str, facts: tuple[str | None, str | None, str | None]
) -> None:
    assert classify(method, path) == RequestFacts(*facts)
    assert facts[0] is None or facts[0] in OPERATIONS


def test_bodies_are_json_text_or_none() -> None:
    assert decode_body(b"") is None
    assert decode_body(b"  ") is None
    assert decode_body(b'{"force": true}') == {"force": True}
    assert decode_body(b"not json") == "not json"
    assert decode_body(b"\xff") == "\ufffd"


QUEUED = {"type": "work", "id": "work_1", "state": "queued", "metadata": {}}
STARTING = {**QUEUED, "state": "starting"}


@pytest.mark.parametrize(
    ("operation", "before", "status", "response", "expected"),
    [
        ("create", None, 200, QUEUED, (True, {"from": None, "to": "queued"}, None)),
        ("poll", None, 200, QUEUED, (True, {"from": "queued", "to": "queued"}, None)),
        ("poll", None, 200, None, (False, None, None)),
        ("ack", QUEUED, 200, STARTING, (True, {"from": "queued", "to": "starting"}, None)),
        ("ack", STARTING, 200, STARTING, (False, None, None)),  # a safe retry
        ("ack", None, 200, STARTING, (False, None, None)),
        (
            "heartbeat",
            STARTING,
            200,
            {"type": "work_heartbeat", "state": "active", "lease_extended": True},
            (True, {"from": "starting", "to": "active"}, None),
        ),
        (
            "heartbeat",
            {**QUEUED, "state": "stopping"},
            200,
            {"type": "work_heartbeat", "state": "stopping", "lease_extended": False},
            (False, None, None),
        ),
        ("get", QUEUED, 200, QUEUED, (False, None, None)),
        ("session_get", None, 200, {"id": "sesn_1"}, (False, None, None)),
        (
            "heartbeat",
            STARTING,
            412,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "m"}},
            (
                False,
                None,
                {
                    "status": 412,
                    "type": "invalid_request_error",
                    "message": "m",
                    "error_code": None,
                },
            ),
        ),
        (
            "ack",
            QUEUED,
            500,
            "Internal Server Error",
            (False, None, {"status": 500, "type": None, "message": None, "error_code": None}),
        ),
        ("stop", QUEUED, None, None, (False, None, None)),
    ],
)
def test_what_a_call_did_is_read_from_its_answer(
    operation: str, before: Any, status: int | None, response: Any, expected: Any
) -> None:
    assert outcome(operation, before, status, response) == expected


def entry(seq: int, **kw: Any) -> JournalEntry:
    fields: dict[str, Any] = {
        "seq": seq,
        "request_id": f"req_{seq}",
        "client": "asgi",
        "worker_id": None,
        "method": "GET",
        "path": W,
        "query": {},
        "body": None,
        "operation": "list",
        "environment_id": "env_a",
        "work_id": None,
        "started_mono": 1.0,
        "finished_mono": 2.0,
        "server_time": None,
        "status": 200,
        "response": {"data": [], "next_page": None},
        "applied": False,
        "fault": None,
        "move": None,
        "error": None,
    }
    fields.update(kw)
    return JournalEntry(**fields)


def test_the_journal_keeps_arrival_order_filters_and_feeds_a_sink() -> None:
    seen: list[dict[str, Any]] = []
    journal = Journal(sink=seen.append)
    seqs = [journal.arrive() for _ in range(4)]
    assert seqs == [1, 2, 3, 4]
    # A long poll (seq 1) finishes after the requests that arrived behind it.
    journal.record(entry(2, operation="ack", work_id="work_1"))
    journal.record(entry(3, environment_id="env_b"))
    journal.record(entry(1, operation="poll", work_id="work_1"))
    journal.record(entry(4, operation="heartbeat", work_id="work_2"))
    assert [e.seq for e in journal.entries()] == [1, 2, 3, 4]
    assert [e["seq"] for e in seen] == [2, 3, 1, 4]  # the sink sees them as they finish
    assert [e.seq for e in journal.entries(environment_id="env_b")] == [3]
    assert [e.seq for e in journal.entries(work_id="work_1")] == [1, 2]
    assert [e.seq for e in journal.entries(operation="heartbeat")] == [4]
    assert [e.seq for e in journal.entries(operation=["poll", "ack"])] == [1, 2]
    assert [e.seq for e in journal.entries(since=2)] == [3, 4]
    assert len(journal) == 4
    journal.clear()
    assert journal.entries() == []
    assert journal.arrive() == 5  # numbering goes on after a clear...
    journal.reset()
    assert journal.arrive() == 1  # ...and starts again after a reset


def test_an_entry_writes_every_field_in_order() -> None:
    e = entry(1, fault={"id": "flt_1", "effect": {"status": 503}}, core_seq=3)
    assert list(e.to_json()) == [
        "seq",
        "request_id",
        "client",
        "worker_id",
        "method",
        "path",
        "query",
        "body",
        "operation",
        "environment_id",
        "work_id",
        "started_mono",
        "finished_mono",
        "server_time",
        "status",
        "response",
        "applied",
        "fault",
        "move",
        "error",
        "core_seq",
        "withheld",
        "item",
    ]
    assert e.to_json()["fault"] == {"id": "flt_1", "effect": {"status": 503}}


def test_trace_records_follow_the_order_the_core_applied_the_calls() -> None:
    beat = {"type": "work_heartbeat", "state": "active", "last_heartbeat": "t"}
    entries = [
        {"seq": 1, "core_seq": 2, "status": 200, "response": STARTING, "work_id": "work_1"},
        {"seq": 2, "core_seq": 1, "status": 200, "response": QUEUED, "work_id": "work_1"},
        {"seq": 3, "core_seq": None, "status": 503, "response": {"type": "error"}},
        {
            "seq": 4,
            "core_seq": 3,
            "status": None,
            "withheld": {"status": 200, "response": beat},
            "work_id": "work_1",
        },
        {
            "seq": 5,
            "core_seq": 4,
            "status": 200,
            "operation": "list",
            "response": {"data": [QUEUED, 5]},
        },
        # A session's events page has a data list too; it shows no item.
        {
            "seq": 9,
            "core_seq": 8,
            "status": 200,
            "operation": "session_events",
            "response": {"data": [{"type": "agent.tool_use"}]},
        },
        {"seq": 6, "core_seq": 5, "status": 200, "response": {"depth": 0}},
        {"seq": 7, "core_seq": 6, "status": 200, "response": beat},  # no work id
        {"seq": 8, "core_seq": 7, "status": 200, "response": None},
    ]
    assert journal_trace_records(entries) == [
        QUEUED,
        STARTING,
        {"type": "work_heartbeat", "work_id": "work_1", "state": "active", "last_heartbeat": "t"},
        QUEUED,
    ]


def test_memory_keeps_the_latest_entries_and_the_sink_sees_all() -> None:
    seen: list[dict[str, Any]] = []
    journal = Journal(sink=seen.append, max_entries=10)
    for _ in range(11):
        journal.record(entry(journal.arrive()))
    assert len(journal) == 11  # within the slack of a batch
    journal.record(entry(journal.arrive()))
    assert [e.seq for e in journal.entries()] == list(range(3, 13))
    assert len(seen) == 12


# The route table classify() replaced: a pattern per route, kept here as the reference.
_SEG = r"[^/]+"
_WORK = rf"/v1/environments/(?P<env>{_SEG})/work"
_REFERENCE = [
    (method, re.compile(pattern), operation)
    for method, pattern, operation in (
        ("GET", _WORK + "/poll", "poll"),
        ("GET", _WORK + "/stats", "stats"),
        ("GET", _WORK, "list"),
        ("POST", _WORK + rf"/(?P<work>{_SEG})/ack", "ack"),
        ("POST", _WORK + rf"/(?P<work>{_SEG})/heartbeat", "heartbeat"),
        ("POST", _WORK + rf"/(?P<work>{_SEG})/stop", "stop"),
        ("GET", _WORK + rf"/(?P<work>{_SEG})", "get"),
        ("POST", _WORK + rf"/(?P<work>(?!poll$|stats$){_SEG})", "update"),
        ("POST", rf"/mock/environments/(?P<env>{_SEG})/work", "create"),
        ("GET", rf"/v1/sessions/(?P<session>{_SEG})", "session_get"),
        ("GET", rf"/v1/sessions/(?P<session>{_SEG})/events", "session_events"),
        ("GET", rf"/v1/sessions/(?P<session>{_SEG})/events/stream", "session_stream"),
        ("POST", rf"/v1/sessions/(?P<session>{_SEG})/events", "session_send"),
    )
]


def _reference(method: str, path: str) -> tuple[str | None, str | None, str | None]:
    method = "GET" if method == "HEAD" else method
    for route_method, pattern, operation in _REFERENCE:
        found = pattern.fullmatch(path) if route_method == method else None
        if found is not None:
            groups = found.groupdict()
            return operation, groups.get("env"), groups.get("work")
    return None, None, None


_WORDS = ["v1", "mock", "environments", "sessions", "work", "poll", "stats", "ack"]
_WORDS += ["heartbeat", "stop", "events", "stream", "env_a", "w", "", "x/y"]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
    st.lists(st.sampled_from(_WORDS), max_size=7),
    st.sampled_from(["/", "", "x"]),
)
def test_classify_agrees_with_a_pattern_per_route(
    method: str, segments: list[str], lead: str
) -> None:
    path = lead + "/".join(segments)
    assert tuple(classify(method, path)) == _reference(method, path)


class _Lazy:
    """A pending entry that counts its builds."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.builds = 0

    def build(self) -> JournalEntry:
        self.builds += 1
        return entry(self.seq, operation="heartbeat")


def test_a_pending_entry_is_built_on_the_first_read_only() -> None:
    journal = Journal()
    lazy = [_Lazy(2), _Lazy(1)]
    for pending in lazy:
        journal.record(pending)
    journal.record(entry(3))
    assert [p.builds for p in lazy] == [0, 0]  # recording builds nothing
    assert [e.seq for e in journal.entries()] == [1, 2, 3]  # seq order, built
    assert [e.seq for e in journal.entries(operation="heartbeat")] == [1, 2]
    assert [p.builds for p in lazy] == [1, 1]  # built once, kept
    journal.clear()
    assert journal.entries() == []


def test_a_sink_gets_a_pending_entry_built_at_once() -> None:
    seen: list[dict[str, Any]] = []
    journal = Journal(sink=seen.append)
    pending = _Lazy(1)
    journal.record(pending)
    assert pending.builds == 1
    assert [e["seq"] for e in seen] == [1]
    assert [e.seq for e in journal.entries()] == [1]
    assert pending.builds == 1
    journal.reset()
    assert len(journal) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/sessions/sesn_1/events/stream"),  # a stream is only read
        ("GET", "/v1/sessions/sesn_1/events/other"),
        ("GET", "/v1/sessions/sesn_1/other"),
        ("DELETE", "/v1/sessions/sesn_1/events"),
        ("GET", "/v1/sessions/sesn_1/events/stream/more"),
    ],
)
def test_paths_beside_the_session_routes_are_no_operation(method: str, path: str) -> None:
    assert classify(method, path) == (None, None, None)
    assert _reference(method, path) == (None, None, None)
