"""The history format, the journal converter, the checker's verdicts, the CLI and the timeline."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import attrs
import httpx2
import pytest
from helpers import ACK_LEASE

from workstate import (
    NO_HEARTBEAT,
    QODER,
    History,
    HistoryCall,
    HistoryFormatError,
    check_history,
    history_from_journal,
    read_history,
    render_timeline,
)
from workstate.__main__ import main
from workstate._history import call_from_http, outcome_for_status
from workstate.testing import HistoryRecorder

ENV = "env_1"
WID = "work_1"
T = "2026-07-01T08:00:0{}.000000Z"
W = 1_782_892_800.0  # 2026-07-01T08:00:00Z: call times are seconds after it, on the wall clock


def work(state: str = "queued", **stamps: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "work",
        "id": WID,
        "environment_id": ENV,
        "data": {"type": "session", "id": "sesn_1"},
        "state": state,
        "created_at": T.format(0),
        "acknowledged_at": None,
        "started_at": None,
        "latest_heartbeat_at": None,
        "stop_requested_at": None,
        "stopped_at": None,
        "metadata": {},
        "secret": None,
    }
    body.update(stamps)
    return body


def call(
    ident: int,
    op: str,
    invoke: float,
    ret: float | None,
    body: Any = None,
    *,
    client: str = "a",
    work_id: str | None = WID,
    outcome: str = "ok",
    status: int | None = 200,
    error_type: str | None = None,
    **inputs: Any,
) -> HistoryCall:
    return HistoryCall(
        id=ident,
        client=client,
        op=op,
        environment_id=ENV,
        work_id=work_id,
        input=inputs,
        invoke=W + invoke,
        ret=None if ret is None else W + ret,
        outcome=outcome,
        status=status,
        body=body,
        error_type=error_type,
    )


def refused(ident: int, op: str, invoke: float, ret: float, status: int, kind: str, **kw: Any):
    envelope = {"type": "error", "error": {"type": kind, "message": "no"}, "request_id": None}
    return call(
        ident, op, invoke, ret, envelope, outcome="fail", status=status, error_type=kind, **kw
    )


def lost(ident: int, op: str, invoke: float, **kw: Any) -> HistoryCall:
    return call(ident, op, invoke, None, None, outcome="info", status=None, **kw)


def created(ident: int = 0) -> HistoryCall:
    return call(ident, "create", 0, 1, work(), work_id=None)


ACKED = work("starting", acknowledged_at=T.format(1))


def history(*calls: HistoryCall, **kw: Any) -> History:
    """A history whose server reads the recorder's wall clock (server times inside calls)."""
    return History(calls=calls, **{"server_clock": "same", **kw})


# ------------------------------------------------------------------------------ the format
def test_a_history_round_trips_through_its_file() -> None:
    h = history(created(), call(1, "ack", 1, 2, ACKED), lost(2, "get", 3), clock="wall")
    again = read_history(h.to_jsonl())
    assert again == h
    assert read_history(list(h.lines())) == h


def test_server_time_round_trips() -> None:
    import datetime as dt

    stamped = attrs.evolve(created(), server_time=dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
    assert read_history(history(stamped).to_jsonl()).calls[0].server_time == stamped.server_time


def _fields(c: HistoryCall) -> dict[str, Any]:
    return attrs.asdict(c, recurse=False)


HEADER = '{"type": "history", "version": 1}'
GOOD = json.dumps(created().to_json())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header line"),
        ("[1]", "each line must be a JSON object"),
        ("{", "invalid JSON"),
        (GOOD, "the first line must be the header"),
        ('{"type": "history", "version": 2}', "version 2 is not supported"),
        ('{"type": "history", "version": 1, "clock": "sundial"}', "clock must be"),
        ('{"type": "history", "version": 1, "server_clock": "x"}', "server_clock must be"),
        (
            '{"type": "history", "version": 1, "clock": "monotonic", "server_clock": "same"}',
            "needs clock 'wall'",
        ),
        ('{"type": "history", "version": 1, "skew_seconds": -1}', "skew_seconds must be"),
        ('{"type": "history", "version": 1, "profile": 3}', "'profile' must be a string"),
        (HEADER + '\n{"type": "note"}', "a record of type 'note'"),
        (HEADER + "\n" + GOOD + "\n" + GOOD, "call id 0 appears twice"),
    ],
)
def test_unreadable_histories_name_the_line_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        read_history(text)


def _bad_call(**changes: Any) -> str:
    record = {**created().to_json(), **changes}
    record = {k: v for k, v in record.items() if v != "DROP"}
    return HEADER + "\n" + json.dumps(record)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "DROP"}, "has no 'id'"),
        ({"id": "1"}, "'id' has the wrong type"),
        ({"id": True}, "'id' has the wrong type"),
        ({"op": "dance"}, "unknown operation 'dance'"),
        ({"work_id": 5}, "'work_id' must be a string or null"),
        ({"input": []}, "'input' must be an object"),
        ({"input": {"force": True}}, "create takes the inputs"),
        ({"outcome": "maybe"}, "outcome must be"),
        ({"invoke": float("inf")}, "must be a finite number"),
        ({"return": None}, "an ok call needs a 'return' time"),
        ({"return": -1}, r"returned \(-1.0\) before it was invoked"),
        ({"status": "200"}, "'status' must be an integer"),
        ({"outcome": "fail", "status": 200}, "a fail call needs a 4xx 'status'"),
        ({"outcome": "fail", "status": 409, "body": {}}, "a fail call needs an 'error_type'"),
        ({"error_type": "x"}, "an ok call has no 'error_type'"),
        ({"body": "DROP"}, "an ok call needs a 'body'"),
        ({"server_time": "yesterday"}, "server_time"),
    ],
)
def test_each_malformed_call_is_refused_with_its_reason(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(HistoryFormatError, match=message) as info:
        read_history(_bad_call(**changes))
    assert info.value.line == 2


def test_a_fail_call_takes_its_error_type_from_the_envelope() -> None:
    record = refused(0, "ack", 0, 1, 409, "conflict_error").to_json()
    del record["error_type"]
    parsed = read_history(HEADER + "\n" + json.dumps(record))
    assert parsed.calls[0].error_type == "conflict_error"


def test_outcomes_by_status() -> None:
    assert [outcome_for_status(s) for s in (200, 204, 400, 404, 408, 409, 412, 429, 500)] == [
        "ok", "ok", "fail", "fail", "info", "fail", "fail", "info", "info",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "expected"),
    [
        ("GET", "/v1/environments/env_1/work/poll",
         {"block_ms": "5", "reclaim_older_than_ms": "x"}, None,
         ("poll", "env_1", None, {"block_ms": 5, "reclaim_older_than_ms": "x"})),
        ("GET", "/v1/environments/env_1/work/stats", "", None, ("stats", "env_1", None, {})),
        ("GET", "/v1/environments/env_1/work", {"limit": "3", "page": "abc"}, None,
         ("list", "env_1", None, {"limit": 3, "page": "abc"})),
        ("GET", "/v1/environments/env_1/work/w", "", None, ("get", "env_1", "w", {})),
        ("POST", "/v1/environments/env_1/work/w", "", None,
         ("update", "env_1", "w", {"metadata": {}})),
        ("POST", "/v1/environments/env_1/work/w", "", {"metadata": {"a": None}},
         ("update", "env_1", "w", {"metadata": {"a": None}})),
        ("POST", "/v1/environments/env_1/work/w/stop", "", {"force": True},
         ("stop", "env_1", "w", {"force": True})),
        ("POST", "/mock/environments/env_1/work", "", {"work_id": "work_9", "x": 1},
         ("create", "env_1", "work_9", {"work_id": "work_9"})),
        ("GET", "/mock/environments/env_1/work", "", None, None),
        ("POST", "/v1/environments/env_1/work/poll", "", None, None),
        ("POST", "/v1/environments/env_1/work", "", None, None),
        ("GET", "/v1/environments/env_1/work/w/ack", "", None, None),
        ("PUT", "/v1/environments/env_1/work/w", "", None, None),
        ("GET", "/v1/sessions/sesn_1", "", None, None),
    ],
)  # fmt: skip
def test_requests_map_to_operations(
    method: str, path: str, query: Any, body: Any, expected: Any
) -> None:
    assert call_from_http(method, path, query or {}, {}, body) == expected


def test_the_worker_header_is_an_input_of_polls_and_acks_only() -> None:
    headers = {"Anthropic-Worker-ID": "w9"}
    poll = call_from_http("GET", "/v1/environments/e/work/poll", {}, headers, None)
    beat = call_from_http("POST", "/v1/environments/e/work/w/heartbeat", {}, headers, None)
    assert poll is not None
    assert poll[3] == {"worker_id": "w9"}
    assert beat is not None
    assert beat[3] == {}


def test_describe_names_the_call_and_its_answer() -> None:
    assert created().describe() == "#0 a create → 200"
    assert lost(3, "get", 1).describe() == "#3 a get work_1 → no answer (info)"
    assert refused(4, "ack", 0, 1, 409, "conflict_error").describe().endswith("409 conflict_error")
    assert call(5, "poll", 0, 1, None, work_id=None).describe().endswith("poll → null")
    assert call(6, "poll", 0, 1, work(), work_id=None).describe().endswith("poll → 200 work_1")


# ------------------------------------------------------------------------------ the journal
def entry(seq: int, method: str, path: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "seq": seq,
        "request_id": f"req_{seq}",
        "client": "127.0.0.1:5000",
        "worker_id": None,
        "method": method,
        "path": path,
        "query": {},
        "body": None,
        "operation": None,
        "environment_id": ENV,
        "work_id": None,
        "started_mono": float(seq),
        "finished_mono": seq + 0.5,
        "server_time": T.format(seq % 10),
        "status": 200,
        "response": None,
        "applied": False,
        "fault": None,
        "move": None,
        "error": None,
    }
    base.update(kw)
    return base


ITEM = f"/v1/environments/{ENV}/work/{WID}"


def test_the_journal_converts_each_case_soundly() -> None:
    journal = [
        entry(1, "POST", f"/mock/environments/{ENV}/work", operation="create", response=work(),
              applied=True, server_time=T.format(0)),
        entry(2, "POST", "/mock/clock", body={"advance_seconds": 1}),
        entry(3, "POST", ITEM + "/ack", operation="ack", work_id=WID, worker_id="w1",
              response=ACKED, applied=True, server_time=T.format(1)),
        entry(4, "GET", ITEM, operation="get", work_id=WID, status=None, response=None),
        entry(5, "POST", ITEM + "/stop", operation="stop", work_id=WID, status=503,
              fault={"id": "f1", "effect": {"status": 503}}, server_time=None, applied=False),
        entry(6, "POST", ITEM + "/heartbeat", operation="heartbeat", work_id=WID, status=503,
              fault={"id": "f2", "effect": {"after": True}}, applied=True),
        entry(7, "GET", f"/v1/environments/{ENV}/work/poll", operation="poll",
              query={"block_ms": "500"}, response=None),
        entry(8, "POST", ITEM + "/ack", operation="ack", work_id=WID, status=500,
              response={"type": "error", "error": {"type": "api_error", "message": "x"}}),
        entry(9, "GET", f"/v1/environments/{ENV}/work/work_2", operation="get",
              work_id="work_2", status=404,
              response={"type": "error", "error": {"type": "not_found_error", "message": "x"}}),
        entry(10, "GET", "/v1/sessions/sesn_1", operation="session_get"),
    ]  # fmt: skip
    h = history_from_journal(journal)
    by_id = {c.id: c for c in h.calls}
    assert sorted(by_id) == [1, 3, 4, 6, 7, 8, 9]  # controls, sessions, pre-core faults left out
    assert h.clock == "monotonic"
    assert h.server_clock == "unrelated"
    assert by_id[3].input == {"worker_id": "w1"}
    assert by_id[3].outcome == "ok"
    assert by_id[3].server_time is not None
    assert by_id[4].outcome == "info"
    assert by_id[4].ret is None  # dropped connection
    assert by_id[6].outcome == "info"  # the core ran, then the answer was replaced
    assert by_id[7].server_time is None  # a long poll: its core time is only a lower bound
    assert by_id[8].outcome == "info"  # a 500: unknown
    assert by_id[9].outcome == "fail"
    assert by_id[9].error_type == "not_found_error"
    assert check_history(h).verdict == "ok"


def test_journal_text_lines_are_accepted() -> None:
    line = json.dumps(entry(1, "GET", ITEM, operation="get", work_id=WID, response=work()))
    assert history_from_journal([line]).calls[0].op == "get"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([1], "must be a JSON object"),
        ([{"operation": "get", "method": 1, "path": ITEM}], "needs 'method' and 'path'"),
        ([entry(1, "GET", ITEM, operation="get", started_mono=None)], "numeric 'started_mono'"),
        ([entry(1, "GET", ITEM, operation="get", server_time="soon")], "server_time"),
    ],
)
def test_unreadable_journal_entries_are_refused(bad: list[Any], message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        history_from_journal(bad)


def test_journal_entries_the_work_api_does_not_know_are_left_out() -> None:
    odd = entry(1, "PUT", ITEM, operation="get", work_id=WID)
    assert history_from_journal([odd]).calls == ()


def test_a_journal_with_a_wrong_answer_is_illegal() -> None:
    journal = [
        entry(1, "POST", f"/mock/environments/{ENV}/work", operation="create", response=work(),
              server_time=T.format(0)),
        entry(2, "POST", ITEM + "/ack", operation="ack", work_id=WID, response=ACKED,
              server_time=T.format(2)),  # the answer says :01, the core ran at :02
    ]  # fmt: skip
    report = check_history(history_from_journal(journal))
    assert report.verdict == "illegal"
    assert report.illegal_calls == (1, 2)  # made info, the create would let any ack through


# ------------------------------------------------------------------------------ verdicts
def test_overlapping_acks_with_one_ack_time_are_ok() -> None:
    h = history(created(), call(1, "ack", 1, 3, ACKED), call(2, "ack", 2, 4, ACKED, client="b"))
    assert check_history(h).verdict == "ok"


def test_two_winning_acks_are_illegal_and_explained() -> None:
    other = work("starting", acknowledged_at=T.format(2))
    report = check_history(
        history(created(), call(1, "ack", 1, 3, ACKED), call(2, "ack", 2, 4, other, client="b"))
    )
    assert report.verdict == "illegal"
    assert report.exit_status == 1
    problem = report.problems[0]
    assert problem.calls == (1, 2)
    assert problem.work_id == WID
    assert len(problem.linearized) == 2
    assert "the model answers" in problem.explanation
    text = report.format()
    assert "calls that cannot be ordered: #1, #2" in text
    assert "longest order found (2 calls)" in text


def test_real_time_order_is_respected() -> None:
    # The get returned queued after the ack had returned starting: no order explains it.
    h = history(created(), call(1, "ack", 1, 2, ACKED), call(2, "get", 3, 4, work()))
    report = check_history(h)
    assert report.verdict == "illegal"
    assert set(report.illegal_calls) == {1, 2}
    # Overlapping, the get may come first.
    assert check_history(history(created(), call(1, "ack", 1, 3, ACKED),
                                 call(2, "get", 0.5, 4, work()))).ok  # fmt: skip


def test_a_call_before_the_create_meets_404() -> None:
    missing = refused(1, "get", 0, 0.5, 404, "not_found_error")
    assert check_history(history(created(), missing)).ok
    late = refused(1, "get", 2, 3, 404, "not_found_error")
    assert check_history(history(created(), late)).verdict == "illegal"
    later = work(created_at=T.format(1))
    ghost = call(1, "get", 0, 0.5, later)  # seen before it was created
    made = call(0, "create", 1, 2, later, work_id=None)
    assert check_history(history(made, ghost)).verdict == "illegal"


def test_an_info_call_may_take_effect_or_not() -> None:
    # The ack's answer was lost; a later get shows it took effect.
    h = history(created(), lost(1, "ack", 1), call(2, "get", 3, 4, ACKED))
    assert check_history(h).ok
    # ... or that it did not.
    assert check_history(history(created(), lost(1, "ack", 1), call(2, "get", 3, 4, work()))).ok


def test_an_info_heartbeat_seen_only_through_a_412_is_placed() -> None:
    beat_at = T.format(3)
    envelope = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "x",
            "details": {
                "error_code": "heartbeat_precondition_failed",
                "current_state": {"state": "active", "last_heartbeat": beat_at,
                                  "lease_extended": False, "ttl_seconds": 120},
            },
        },
    }  # fmt: skip
    h = history(
        created(),
        call(1, "ack", 1, 2, ACKED),
        lost(2, "heartbeat", 2.5, expected_last_heartbeat=NO_HEARTBEAT),
        call(3, "heartbeat", 5, 6, envelope, outcome="fail", status=412,
             error_type="invalid_request_error", expected_last_heartbeat=NO_HEARTBEAT),
    )  # fmt: skip
    assert check_history(h).ok


def test_a_poll_inside_the_redelivery_window_cannot_deliver_again() -> None:
    polled = work()
    two = history(
        created(),
        call(1, "poll", 1, 2, polled, work_id=None),
        call(2, "poll", 3, 4, polled, work_id=None, client="b"),
    )
    report = check_history(two, profile=None)
    assert report.verdict == "illegal"
    assert "redelivery window" in report.problems[0].explanation


def test_a_poll_of_an_acked_item_is_explained() -> None:
    report = check_history(
        history(created(), call(1, "ack", 1, 2, ACKED), call(2, "poll", 3, 4, work(), work_id=None))
    )
    assert report.verdict == "illegal"
    assert "it was starting" in report.problems[0].explanation


def test_calls_that_couple_items_are_counted_as_not_checked() -> None:
    stats = {"type": "work_queue_stats", "depth": 9, "pending": 0, "oldest_queued_at": None,
             "workers_polling": None}  # fmt: skip
    h = history(
        created(),
        call(1, "poll", 1, 2, None, work_id=None),
        call(2, "stats", 1, 2, stats, work_id=None),
        call(3, "list", 1, 2, {"data": [work()], "next_page": None}, work_id=None),
        lost(4, "poll", 1, work_id=None),
        lost(5, "list", 1, work_id=None),
        lost(6, "create", 1, work_id=None),
    )
    report = check_history(h)
    assert report.ok
    assert report.not_checked == {
        "null poll": 1,
        "stats": 1,
        "list page membership": 1,
        "info poll": 1,
        "info list": 1,
        "info create without a work_id": 1,
    }
    assert "not checked:" in report.format()


def test_a_list_entry_is_an_observation_of_its_item() -> None:
    page = {"data": [ACKED], "next_page": None}
    h = history(created(), call(1, "list", 1, 2, page, work_id=None))
    assert check_history(h).verdict == "illegal"


@pytest.mark.parametrize("body", [{"data": 3}, None], ids=["data not a list", "no body"])
def test_unreadable_list_and_create_answers_are_illegal(body: Any) -> None:
    assert check_history(history(call(0, "list", 0, 1, body, work_id=None))).verdict == "illegal"
    no_id = call(0, "create", 0, 1, {"type": "work"}, work_id=None)
    assert check_history(history(no_id)).verdict == "illegal"


def test_refusals_that_depend_only_on_inputs_are_checked() -> None:
    bad_block = refused(0, "poll", 0, 1, 400, "invalid_request_error", work_id=None, block_ms=0)
    assert check_history(history(bad_block)).ok
    good_block = refused(0, "poll", 0, 1, 400, "invalid_request_error", work_id=None, block_ms=5)
    report = check_history(history(good_block))
    assert report.verdict == "illegal"
    assert "the model accepts them" in report.problems[0].explanation
    assert check_history(history(refused(0, "list", 0, 1, 400, "invalid_request_error",
                                         work_id=None, limit=0))).ok  # fmt: skip
    assert check_history(history(refused(0, "stats", 0, 1, 409, "conflict_error",
                                         work_id=None))).verdict == "illegal"  # fmt: skip
    bad_meta = refused(0, "create", 0, 1, 400, "invalid_request_error", work_id=None,
                       metadata={"k": 1}, data={"type": "session", "id": "sesn_1"})  # fmt: skip
    assert check_history(history(bad_meta)).ok
    no_env = refused(0, "stats", 0, 1, 404, "not_found_error", work_id=None)
    bad_env = attrs.evolve(no_env, environment_id="nope")
    assert check_history(history(bad_env)).ok


def test_answers_the_model_never_gives_are_not_judged() -> None:
    denied = refused(1, "ack", 1, 2, 401, "authentication_error")
    assert check_history(history(created(), denied)).ok
    no_route = refused(1, "stats", 1, 2, 401, "authentication_error", work_id=None)
    report = check_history(history(no_route))
    assert report.ok
    assert report.not_checked == {"401 answer": 1}


def test_an_item_created_outside_the_history_is_adopted() -> None:
    h = history(
        refused(0, "heartbeat", 0, 1, 409, "conflict_error"),
        call(1, "ack", 1, 2, ACKED),
        call(2, "ack", 3, 4, work("starting", acknowledged_at=T.format(3))),
    )
    report = check_history(h)
    assert report.verdict == "illegal"
    assert report.illegal_calls == (1, 2)


def test_an_adopted_acked_item_holds_only_the_lease_its_ack_started() -> None:
    """Adopted from an ack's answer, an item never heartbeated holds what the profile's
    ack_lease starts: under anthropic no lease, so an ack minutes later is still a retry."""
    h = history(call(1, "ack", 1, 2, ACKED), call(2, "ack", 300, 301, ACKED))
    assert check_history(h).ok
    # A lease of the default TTL from the ack ran out at 08:02:01: the second ack is a new one.
    assert check_history(h, profile=ACK_LEASE).verdict == "illegal"


def test_a_create_answered_in_an_impossible_state_is_the_call_named() -> None:
    """Found by ``answer_mutations``: with the create made ``info`` (the item then adopted from
    the ack's answer), the acks are explained, so the smallest set is the create alone.  (The
    create comes last in the file, so the shrinking tries it first.)"""
    h = history(
        call(1, "ack", 0, 1, ACKED),
        call(2, "ack", 130, 131, ACKED),
        call(0, "create", 0, 1, work("starting"), work_id=None),
    )
    report = check_history(h)
    assert report.verdict == "illegal"
    assert report.illegal_calls == (0,)


def test_under_a_binding_profile_an_adopted_items_worker_is_not_known() -> None:
    """qoder refuses an ack from any worker but the one the item was handed to, which an item's
    JSON does not show: an adopted item's refused ack proves nothing (anthropic never refuses
    it).  Found by ``answer_mutations``: the smallest set named a refused ack, not the answer
    that was changed."""
    h = history(
        call(0, "get", 0, 1, ACKED),
        refused(1, "ack", 2, 3, 409, "invalid_request_error", worker_id="wrk_b"),
    )
    report = check_history(h, profile=QODER)
    assert report.verdict == "unknown"
    assert "not proven illegal" in report.problems[0].explanation
    refused_409 = history(h.calls[0], refused(1, "ack", 2, 3, 409, "conflict_error"))
    assert check_history(refused_409).verdict == "illegal"


def test_an_adopted_active_item_that_cannot_be_ordered_is_unknown() -> None:
    active = work("active", acknowledged_at=T.format(0), started_at=T.format(0),
                  latest_heartbeat_at=T.format(0))  # fmt: skip
    h = history(call(0, "get", 0, 1, active), call(1, "get", 2, 3, work()))
    report = check_history(h)
    assert report.verdict == "unknown"
    assert report.exit_status == 3
    assert "not proven illegal" in report.problems[0].explanation


def test_a_lease_expires_between_calls() -> None:
    def seen_queued_at(second: float) -> History:
        return history(
            created(), call(1, "ack", 1, 2, ACKED), call(2, "get", second, second + 1, work())
        )

    # Under a profile whose acks start a lease (anthropic's start none: ack_lease = "none").
    assert check_history(seen_queued_at(50), profile=ACK_LEASE).verdict == "illegal"
    assert check_history(seen_queued_at(126), profile=ACK_LEASE).ok  # expired at 08:02:01
    assert check_history(seen_queued_at(126)).verdict == "illegal"  # anthropic: still starting
    # With no relation between the clocks, any amount of server time may have passed.
    assert check_history(seen_queued_at(50), profile=ACK_LEASE).ok is False
    unrelated = History(calls=seen_queued_at(50).calls, server_clock="unrelated")
    assert check_history(unrelated, profile=ACK_LEASE).ok
    assert not check_history(unrelated).ok  # anthropic: an ack starts no lease, so no expiry


def test_the_budget_gives_unknown() -> None:
    h = history(created(), call(1, "ack", 1, 2, ACKED))
    report = check_history(h, max_steps=1)
    assert report.verdict == "unknown"
    assert "budget" in report.problems[0].explanation
    clock = iter(range(0, 10_000_000, 1000))
    timed = check_history(h, timeout=0.5, clock=lambda: float(next(clock)))
    assert timed.verdict == "ok"  # the clock is read only every 1024 steps


def test_a_profile_from_the_history_is_used() -> None:
    whole = work("starting", acknowledged_at="2026-07-01T08:00:01Z")
    h = history(
        call(0, "create", 0, 1, {**work(), "created_at": "2026-07-01T08:00:00Z"}, work_id=None),
        call(1, "ack", 1, 2, {**whole, "created_at": "2026-07-01T08:00:00Z"}),
        profile="qoder",
    )
    assert check_history(h).profile == "qoder"
    assert check_history(h).ok
    assert check_history(h, profile=QODER).ok


# ------------------------------------------------------------------------------ the recorder
def test_the_recorder_turns_transport_errors_into_info() -> None:
    recorder = HistoryRecorder(wall=False, clock=iter(range(100)).__next__)

    def server(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/ack"):
            raise httpx2.ReadTimeout("slow", request=request)
        if request.url.path.endswith("/stop"):
            return httpx2.Response(503, json={"type": "error", "error": {"type": "x"}})
        if request.url.path.endswith("/heartbeat"):
            return httpx2.Response(409, json={"type": "error", "error": {"type": "conflict_error"}})
        if request.url.path.endswith("/stats"):
            return httpx2.Response(400, text="not json")
        return httpx2.Response(200, json={"ok": True})

    transport = recorder.transport("w", httpx2.MockTransport(server))
    with httpx2.Client(transport=transport, base_url="http://t") as client:
        with pytest.raises(httpx2.ReadTimeout):
            client.post(f"/v1/environments/{ENV}/work/{WID}/ack")
        client.post(f"/v1/environments/{ENV}/work/{WID}/stop", json={"force": True})
        client.post(f"/v1/environments/{ENV}/work/{WID}/heartbeat")
        client.get(f"/v1/environments/{ENV}/work/stats")
        client.get("/v1/sessions/sesn_1")  # not the work API: passed through unrecorded
    h = recorder.history()
    assert h.clock == "monotonic"
    assert h.server_clock == "unrelated"
    ack, stop, beat, stats = h.calls
    assert (ack.op, ack.outcome, ack.ret) == ("ack", "info", None)
    assert (stop.outcome, stop.input) == ("info", {"force": True})
    assert (beat.outcome, beat.error_type) == ("fail", "conflict_error")
    assert (stats.outcome, stats.error_type, stats.body) == ("fail", "unknown", "not json")
    assert [c.id for c in h.calls] == [0, 1, 2, 3]


def test_the_recorder_writes_a_file(tmp_path: pathlib.Path) -> None:
    recorder = HistoryRecorder(profile="anthropic")
    target = tmp_path / "h.jsonl"
    recorder.write(target)
    assert read_history(target.read_text()).profile == "anthropic"


def test_the_async_transport_records_too() -> None:
    import asyncio

    recorder = HistoryRecorder()

    async def server(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/ack"):
            raise httpx2.ConnectError("refused", request=request)
        return httpx2.Response(200, json=None)

    async def run() -> None:
        inner = httpx2.MockTransport(server)
        async with httpx2.AsyncClient(transport=recorder.async_transport("w", inner)) as client:
            await client.get(f"http://t/v1/environments/{ENV}/work/poll")
            with pytest.raises(httpx2.ConnectError):
                await client.post(f"http://t/v1/environments/{ENV}/work/{WID}/ack")
            await client.get("http://t/elsewhere")

    asyncio.run(run())
    assert [(c.op, c.outcome) for c in recorder.history().calls] == [
        ("poll", "ok"), ("ack", "info"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------ CLI, HTML
def write(tmp_path: pathlib.Path, h: History) -> str:
    target = tmp_path / "h.jsonl"
    target.write_text(h.to_jsonl())
    return str(target)


def test_cli_exit_statuses(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, history(created(), call(1, "ack", 1, 2, ACKED)))
    assert main(["check", "--history", good]) == 0
    assert ": ok" in capsys.readouterr().out
    other = work("starting", acknowledged_at=T.format(2))
    bad = history(created(), call(1, "ack", 1, 3, ACKED), call(2, "ack", 2, 4, other))
    html_out = tmp_path / "t.html"
    assert main(["check", f"--history={write(tmp_path, bad)}", "--html", str(html_out)]) == 1
    page = html_out.read_text()
    assert "illegal" in page
    assert "✗ ack" in page
    (tmp_path / "junk").write_text("nope")
    assert main(["check", "--history", str(tmp_path / "junk")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["check", "--history", str(tmp_path / "missing")]) == 2
    active = work("active", acknowledged_at=T.format(0), started_at=T.format(0),
                  latest_heartbeat_at=T.format(0))  # fmt: skip
    unknown = history(call(0, "get", 0, 1, active), call(1, "get", 2, 3, work()))
    assert main(["check", "--history", write(tmp_path, unknown), "--timeout", "30"]) == 3
    assert main(["check", "--history", good, "--profile", "nobody"]) == 2
    assert main(["check", "--history", good, "--html", str(tmp_path / "no" / "t.html")]) == 2


EMPTY_EXPECTED = (
    'expected a history (its header line {"type": "history", "version": 1, ...} first) '
    "or a mock server's request journal (one JSON entry a line, as serve --journal writes)"
)


@pytest.mark.parametrize(
    ("text", "found"),
    [("", "is empty"), ("\n  \n\n", "holds only blank lines")],
    ids=["empty", "blank-lines"],
)
def test_cli_on_a_file_with_nothing_in_it_names_both_kinds_it_reads(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], text: str, found: str
) -> None:
    # An empty journal (serve --journal before any request) is as likely as an empty history.
    target = tmp_path / "j.jsonl"
    target.write_text(text)
    assert main(["check", "--history", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"workstate check: {target}: cannot read: the file {found}; {EMPTY_EXPECTED}\n"
    )
    assert target.read_text() == text  # (read only)


def test_cli_on_empty_stdin_names_both_kinds_it_reads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["check", "--history", "-"]) == 2
    assert capsys.readouterr().err == (
        f"workstate check: <stdin>: cannot read: the input is empty; {EMPTY_EXPECTED}\n"
    )


def test_cli_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(history(created()).to_jsonl()))
    assert main(["check", "--history", "-", "--profile", "anthropic"]) == 0


def test_the_trace_check_still_works(tmp_path: pathlib.Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps(work()) + "\n")
    assert main(["check", str(trace)]) == 0


def test_the_timeline_shows_lanes_bars_and_the_illegal_calls() -> None:
    other = work("starting", acknowledged_at=T.format(2))
    h = history(
        created(),
        call(1, "ack", 1, 3, ACKED, client="alice"),
        call(2, "ack", 2, 4, other, client="bob"),
        lost(3, "get", 5, client="carol"),
    )
    page = render_timeline(h, check_history(h))
    assert page.startswith("<!DOCTYPE html>")
    for lane in ("alice", "bob", "carol"):
        assert f">{lane}</text>" in page
    assert page.count("<rect") == 4
    assert page.count('stroke="#c0392b"') == 2
    assert "fill-opacity" in page  # the info call fades
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def _reads_among_changes() -> History:
    """Four concurrent metadata updates (a, b, a, b) invoked among 60 concurrent reads of the
    five states they make, all answered at the same instant."""
    calls = [created()]
    states = [{}, *({"k": v} for v in "abab")]
    for n in range(60):
        calls.append(call(len(calls), "get", 2 + n / 100, 3, work(metadata=states[n % 5])))
        if n % 15 == 7:
            meta = states[n // 15 + 1]
            calls.append(
                call(len(calls), "update", 2 + n / 100, 3, work(metadata=meta), metadata=meta)
            )
    return history(*calls)


def test_reads_among_concurrent_changes_take_few_steps() -> None:
    # Every read that finds the item as it is goes before any change is tried: the four
    # updates are not tried in every interleaving with the 48 reads.
    report = check_history(_reads_among_changes(), max_steps=5_000)
    assert report.verdict == "ok"
    assert report.steps < 5_000


def test_a_read_that_no_order_of_the_changes_explains_is_still_illegal() -> None:
    h = _reads_among_changes()
    calls = list(h.calls)
    calls.append(call(len(calls), "get", 2, 3, work(metadata={"k": "c"})))
    report = check_history(history(*calls))
    assert report.verdict == "illegal"
    assert report.illegal_calls == (0, len(calls) - 1)  # the create, and the read


def test_an_unexplained_answer_names_the_field_it_differs_in() -> None:
    """A journal of `serve --default-ttl 4` checked without the flag: the heartbeat differs
    from the model's only in ttl_seconds, which the explanation must show on both sides."""
    beat = {
        "type": "work_heartbeat",
        "last_heartbeat": T.format(2),
        "lease_extended": True,
        "state": "active",
        "ttl_seconds": 4,
    }
    report = check_history(
        history(created(), call(1, "ack", 1, 1.5, ACKED), call(2, "heartbeat", 2, 3, beat))
    )
    assert report.verdict == "illegal"
    explanation = report.problems[0].explanation
    assert "the model answers {state: active" in explanation
    assert "ttl_seconds: 120}, the server answered 200 {" in explanation
    assert explanation.endswith("ttl_seconds: 4}")
