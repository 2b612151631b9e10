"""The scripted-session model (``workstate.server._sessions``), without a socket.

Like the core: every step kind, the session's life from creation to termination, every
rejected input with its exact error (status, type, key) and the record left unchanged, and
every JSON shape validated strictly against the official SDK's types.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import T0, at
from hypothesis import given
from hypothesis import strategies as st
from sdk_shapes import strictly

from workstate import IllegalMoveError, InvalidInputError
from workstate.server._sessions import (
    Session,
    SessionStatus,
    Step,
    StepKind,
    parse_session_spec,
)

SID = "sesn_abc"
BASH = {"tool_use": {"name": "bash", "input": {"command": "echo hi"}}}
WEATHER = {"custom_tool_use": {"name": "get_weather", "input": {"city": "Oslo"}}}


def scripted(*steps: dict[str, Any], status: str = "idle") -> Session:
    parsed_status, script = parse_session_spec({"script": list(steps), "status": status})
    return Session.create(SID, "env_1", T0, status=parsed_status, script=script)


def types(session: Session) -> list[str]:
    return [e.type for e in session.events]


def result(session: Session, text: str = "hi", **extra: Any) -> dict[str, Any]:
    use = next(e for e in session.events if e.id == session.awaiting)
    kind, key = (
        ("user.tool_result", "tool_use_id")
        if use.type == "agent.tool_use"
        else ("user.custom_tool_result", "custom_tool_use_id")
    )
    return {
        "type": kind,
        key: use.id,
        "content": [{"type": "text", "text": text}],
        "is_error": False,
        **extra,
    }


def assert_valid(session: Session) -> None:
    strictly("session", session.to_json())
    for event in session.events:
        strictly("event", event.to_json())
        strictly("stream_event", event.to_json())


# ------------------------------------------------------------------------------ parsing
def test_a_spec_defaults_to_an_idle_session_that_ends_its_turn() -> None:
    assert parse_session_spec({}) == (SessionStatus.IDLE, (Step(kind=StepKind.END_TURN),))
    status, script = parse_session_spec(
        {"script": [{"message": {"text": "hello"}}, BASH, WEATHER, {"end_turn": {}}]}
    )
    assert status is SessionStatus.IDLE
    assert [s.kind for s in script] == [
        StepKind.MESSAGE,
        StepKind.TOOL_USE,
        StepKind.CUSTOM_TOOL_USE,
        StepKind.END_TURN,
    ]
    assert [s.to_json() for s in script] == [
        {"message": {"text": "hello"}},
        BASH,
        WEATHER,
        {"end_turn": {}},
    ]
    assert parse_session_spec({"status": "terminated"}) == (SessionStatus.TERMINATED, ())
    assert parse_session_spec({"status": "running", "script": [{"terminate": {}}]})[0] is (
        SessionStatus.RUNNING
    )
    assert (
        parse_session_spec({"script": [{"tool_use": {"name": "x"}}, {"end_turn": {}}]})[1][0].input
        == {}
    )


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ([], "session", "an object"),
        ({"scrip": []}, "session.scrip", "unknown key"),
        ({"status": "asleep"}, "session.status", "one of"),
        ({"status": "terminated", "script": [BASH]}, "session.script", "never plays"),
        ({"script": {"end_turn": {}}}, "session.script", "a list of steps"),
        ({"script": []}, "session.script", "must end with"),
        ({"script": [BASH]}, "session.script", "must end with"),
        ({"script": ["end_turn"]}, "session.script[0]", "one-key object"),
        ({"script": [{"end_turn": {}, "terminate": {}}]}, "session.script[0]", "exactly one"),
        ({"script": [{"sleep": {}}]}, "session.script[0].sleep", "unknown step"),
        ({"script": [{"end_turn": []}]}, "session.script[0].end_turn", "an object"),
        ({"script": [{"end_turn": {"x": 1}}]}, "session.script[0].end_turn.x", "unknown key"),
        ({"script": [{"message": {}}, {"end_turn": {}}]}, "session.script[0].message.text", ""),
        (
            {"script": [{"message": {"text": ""}}, {"end_turn": {}}]},
            "session.script[0].message.text",
            "non-empty",
        ),
        (
            {"script": [{"tool_use": {"input": {}}}, {"end_turn": {}}]},
            "session.script[0].tool_use.name",
            "non-empty string",
        ),
        (
            {"script": [{"tool_use": {"name": "bash", "input": "ls"}}, {"end_turn": {}}]},
            "session.script[0].tool_use.input",
            "the tool's input",
        ),
        (
            {"script": [{"custom_tool_use": {"name": "f", "args": {}}}, {"end_turn": {}}]},
            "session.script[0].custom_tool_use.args",
            "unknown key",
        ),
        (
            {"script": [{"terminate": {}}, {"end_turn": {}}]},
            "session.script[0]",
            "must be the last step",
        ),
    ],
)
def test_every_bad_spec_is_a_400_naming_its_key(spec: object, key: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_session_spec(spec)
    assert (info.value.status, info.value.error_type, info.value.key) == (
        400,
        "invalid_request_error",
        key,
    )
    assert words in info.value.message


# ------------------------------------------------------------------------------ playing
def test_nothing_plays_before_a_worker_attaches() -> None:
    session = scripted(BASH, {"end_turn": {}})
    assert (session.status, session.events, session.attached) == (SessionStatus.IDLE, (), False)
    assert_valid(session)


def test_a_tool_use_waits_for_its_result_then_the_turn_ends() -> None:
    session = scripted({"message": {"text": "let me look"}}, BASH, {"end_turn": {}})
    session = session.attach(at(1))
    assert types(session) == [
        "session.status_running",
        "agent.message",
        "agent.tool_use",
        "session.status_idle",
    ]
    use, idle = session.events[2], session.events[3]
    assert use.to_json() == {
        "id": "sevt_abc_3",
        "type": "agent.tool_use",
        "processed_at": "2026-07-01T08:15:01.000000Z",
        "name": "bash",
        "input": {"command": "echo hi"},
    }
    assert idle.fields == {"stop_reason": {"type": "requires_action", "event_ids": [use.id]}}
    assert (session.status, session.awaiting, session.position) == (SessionStatus.IDLE, use.id, 2)
    assert session.attach(at(2)) is session  # attaching again plays nothing

    answered, recorded = session.receive([result(session)], at(3))
    assert [e.sent_by for e in recorded] == ["client"]
    assert recorded[0].to_json() == {
        "id": "sevt_abc_5",
        "type": "user.tool_result",
        "processed_at": "2026-07-01T08:15:03.000000Z",
        "tool_use_id": use.id,
        "content": [{"type": "text", "text": "hi"}],
        "is_error": False,
    }
    assert types(answered)[4:] == [
        "user.tool_result",
        "session.status_running",
        "session.status_idle",
    ]
    assert answered.events[-1].fields == {"stop_reason": {"type": "end_turn"}}
    assert (answered.status, answered.awaiting, answered.position) == (SessionStatus.IDLE, None, 3)
    assert answered.updated_at == at(3)
    assert_valid(answered)
    strictly("sent", {"data": [e.to_json() for e in recorded]})


def test_a_custom_tool_use_is_answered_by_a_custom_tool_result() -> None:
    session = scripted(WEATHER, {"terminate": {}}).attach(T0)
    assert types(session)[1:] == ["agent.custom_tool_use", "session.status_idle"]
    tools = session.to_json()["agent"]["tools"]
    assert [t["type"] for t in tools] == ["agent_toolset_20260401", "custom"]
    assert tools[1]["name"] == "get_weather"
    done, recorded = session.receive([result(session, "sunny")], at(1))
    assert recorded[0].fields["custom_tool_use_id"] == session.awaiting
    assert types(done)[-2:] == ["session.status_running", "session.status_terminated"]
    assert done.status is SessionStatus.TERMINATED
    assert_valid(done)


def test_end_turn_in_the_middle_plays_on_and_terminate_ends_it_mid_run() -> None:
    session = scripted({"end_turn": {}}, BASH, {"terminate": {}}).attach(T0)
    assert types(session) == [
        "session.status_running",
        "session.status_idle",
        "agent.tool_use",
        "session.status_idle",
    ]
    done, _ = session.receive([result(session)], at(1))
    assert done.status is SessionStatus.TERMINATED
    assert done.events[-1].type == "session.status_terminated"
    assert done.attach(at(2)) is done


def test_a_session_created_terminated_plays_nothing() -> None:
    session = scripted(status="terminated")
    assert session.status is SessionStatus.TERMINATED
    assert types(session) == ["session.status_terminated"]
    assert session.script == ()
    assert session.attach(at(1)) is session
    assert session.to_json()["status"] == "terminated"
    assert_valid(session)


def test_the_inspection_shows_both_directions_and_the_progress() -> None:
    session = scripted(BASH, {"end_turn": {}}).attach(T0)
    session, _ = session.receive([result(session)], at(1))
    view = session.inspect_json()
    assert list(view) == ["session", "script", "position", "attached", "awaiting", "events"]
    assert view["script"] == [BASH, {"end_turn": {}}]
    assert (view["position"], view["attached"], view["awaiting"]) == (2, True, None)
    assert [e["sent_by"] for e in view["events"]] == ["session"] * 3 + ["client"] + ["session"] * 2
    assert view["events"][3]["event"]["type"] == "user.tool_result"


# ------------------------------------------------------------------------------ receiving
@pytest.mark.parametrize(
    ("make", "key", "words"),
    [
        (lambda g: None, "events", "non-empty list"),
        (lambda g: [], "events", "non-empty list"),
        (lambda g: [3], "events[0]", "an event object"),
        (lambda g: [{"type": "user.message"}], "events[0].type", "only the tool results"),
        (lambda g: [{"content": []}], "events[0].type", "one of"),
        (lambda g: [{**g, "tool_use_id": "sevt_x"}], "events[0].tool_use_id", "must name"),
        (lambda g: [{"type": "user.tool_result"}], "events[0].tool_use_id", "must name"),
        (
            lambda g: [{"type": "user.custom_tool_result", "custom_tool_use_id": g["tool_use_id"]}],
            "events[0].custom_tool_use_id",
            "agent.custom_tool_use",
        ),
        (lambda g: [{**g, "output": "hi"}], "events[0].output", "unknown key"),
        (lambda g: [{**g, "content": "hi"}], "events[0].content", "content blocks"),
        (lambda g: [{**g, "content": [{"text": "hi"}]}], "events[0].content", "content blocks"),
        (lambda g: [{**g, "is_error": "no"}], "events[0].is_error", "boolean or null"),
        (lambda g: [g, {"type": "user.interrupt"}], "events[1].type", "one of"),
    ],
)
def test_every_bad_send_is_a_400_and_records_nothing(make: Any, key: str, words: str) -> None:
    session = scripted(BASH, {"end_turn": {}}).attach(T0)
    good = result(session)
    with pytest.raises(InvalidInputError) as info:
        session.receive(make(good), at(1))
    assert (info.value.status, info.value.error_type, info.value.key) == (
        400,
        "invalid_request_error",
        key,
    )
    assert words in info.value.message
    assert session.awaiting == good["tool_use_id"]
    assert len(session.events) == 3


def test_a_result_for_an_answered_call_is_a_409() -> None:
    session = scripted(BASH, BASH, {"end_turn": {}}).attach(T0)
    first = result(session)
    session, _ = session.receive([first], at(1))
    with pytest.raises(IllegalMoveError) as info:
        session.receive([first], at(2))
    assert (info.value.status, info.value.error_type) == (409, "conflict_error")
    assert "already has its result" in info.value.message
    assert session.awaiting != first["tool_use_id"]


def test_a_terminated_session_accepts_no_events() -> None:
    session = scripted(status="terminated")
    with pytest.raises(IllegalMoveError) as info:
        session.receive([{"type": "user.tool_result", "tool_use_id": "x"}], at(1))
    assert (info.value.status, info.value.error_type) == (409, "conflict_error")
    assert "terminated" in info.value.message
    assert types(session) == ["session.status_terminated"]


# ------------------------------------------------------------------------------ listing
def test_the_events_list_pages_in_both_orders() -> None:
    session = scripted(BASH, {"end_turn": {}}).attach(T0)
    session, _ = session.receive([result(session)], at(1))
    everything = session.events_page()
    assert everything.data == session.events
    assert everything.next_page is None
    first = session.events_page(limit=4)
    assert first.data == session.events[:4]
    assert first.next_page == "page_4"
    rest = session.events_page(limit=4, page=first.next_page)
    assert rest.data == session.events[4:]
    assert rest.next_page is None
    newest = session.events_page(limit=2, order="desc")
    assert newest.data == session.events[::-1][:2]
    assert session.events_page(limit=2, order="desc", page="page_6").data == ()
    assert first.to_json() == {"data": [e.to_json() for e in first.data], "next_page": "page_4"}


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": True}, "limit"),
        ({"order": "newest"}, "order"),
        ({"page": "page_99"}, "page"),
        ({"page": "4"}, "page"),
    ],
)
def test_every_bad_listing_argument_is_a_400(kw: dict[str, Any], key: str) -> None:
    session = scripted(BASH, {"end_turn": {}}).attach(T0)
    with pytest.raises(InvalidInputError) as info:
        session.events_page(**kw)
    assert (info.value.status, info.value.error_type, info.value.key) == (
        400,
        "invalid_request_error",
        key,
    )


# ------------------------------------------------------------------------------ any script
_tool = st.fixed_dictionaries(
    {"name": st.sampled_from(["bash", "read", "get_weather"]), "input": st.just({"x": 1})}
)
_middle = st.one_of(
    st.builds(lambda t: {"message": {"text": t}}, st.text(min_size=1, max_size=5)),
    st.builds(lambda a: {"tool_use": a}, _tool),
    st.builds(lambda a: {"custom_tool_use": a}, _tool),
    st.just({"end_turn": {}}),
)
_scripts = st.builds(
    lambda steps, last: [*steps, {last: {}}],
    st.lists(_middle, max_size=6),
    st.sampled_from(["end_turn", "terminate"]),
)


@given(_scripts)
def test_any_script_plays_to_its_end_when_every_call_is_answered(script: list[Any]) -> None:
    session = scripted(*script).attach(T0)
    answered = 0
    while session.awaiting is not None:
        session, _ = session.receive([result(session, str(answered))], at(answered + 1))
        answered += 1
    waits = [s for s in script if {"tool_use", "custom_tool_use"} & set(s)]
    assert answered == len(waits)
    assert session.position == len(script)
    assert [e.id for e in session.events] == [
        f"sevt_abc_{i}" for i in range(1, len(session.events) + 1)
    ]
    assert [e.sent_by for e in session.events].count("client") == answered
    last = session.events[-1]
    if "terminate" in script[-1]:
        assert (session.status, last.type) == (
            SessionStatus.TERMINATED,
            "session.status_terminated",
        )
    else:
        assert session.status is SessionStatus.IDLE
        assert last.fields == {"stop_reason": {"type": "end_turn"}}
    assert_valid(session)
