"""Scripted sessions: what the agent of a work item's session does, played to a worker.

Theory of operation
-------------------
The official worker (``anthropic.lib.environments.EnvironmentWorker``) serves a work item by
reading its *session*: it fetches the session, opens its event stream, lists its history, runs
the tools the agent asks for and posts their results back.  The mock has no model behind a
session; instead a test writes a *script*, a list of steps, and this module plays it.

A :class:`Session` is an immutable record: the session's API fields, its script, how far the
script has been played, and every event so far in both directions (what the session emitted
and what clients sent).  Every operation is a function of (record, inputs, time) that returns a
new record or raises a :class:`~workstate.WorkstateError` and changes nothing, like the core's
``Work``.  There is no I/O and no clock: the adapter passes ``now``.

Steps (the JSON form is a one-key object, ``{"tool_use": {...}}``):

* ``message`` ``{"text": ...}`` emits ``agent.message``;
* ``tool_use`` ``{"name": ..., "input": {...}}`` emits ``agent.tool_use`` and a
  ``session.status_idle`` whose stop reason ``requires_action`` names it, then *waits* for a
  ``user.tool_result`` answering it (``custom_tool_use`` is the same with
  ``agent.custom_tool_use`` and ``user.custom_tool_result``);
* ``end_turn`` ``{}`` emits ``session.status_idle`` with stop reason ``end_turn``; steps after
  it play on at once, as if a user had answered;
* ``terminate`` ``{}`` emits ``session.status_terminated`` and ends the session; it must be the
  last step.

The script plays when a worker *attaches* (:meth:`Session.attach`, which the adapter calls when
an event stream opens): ``session.status_running``, then every step up to the first one that
waits.  A result for the awaited tool call (:meth:`Session.receive`) records the client's
event, emits ``session.status_running`` and plays on.  A script must end with ``end_turn`` or
``terminate``, so a played-out session is never left ``running`` with nothing to say.  A
session created ``terminated`` has no script and one event, its ``session.status_terminated``.

Event ids are ``sevt_<session>_<n>`` with ``n`` the event's place in the log, so a session's
history is the same in every run.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from workstate._errors import IllegalMoveError, InvalidInputError
from workstate._records import is_int
from workstate._time import format_time, parse_time

__all__ = [
    "EventPage",
    "Session",
    "SessionEvent",
    "SessionStatus",
    "Step",
    "StepKind",
    "parse_session_spec",
    "session_from_record",
    "session_to_record",
]

MAX_EVENTS_PAGE = 1000
"""The largest ``limit`` of an events listing."""
DEFAULT_EVENTS_PAGE = 20
"""The ``limit`` of an events listing that names none."""
_CURSOR = re.compile(r"page_([0-9]{1,9})", re.ASCII)


class SessionStatus(enum.Enum):
    """A session's ``status``."""

    RESCHEDULING = "rescheduling"
    RUNNING = "running"
    IDLE = "idle"
    TERMINATED = "terminated"


class StepKind(enum.Enum):
    """What one step of a script does."""

    MESSAGE = "message"
    TOOL_USE = "tool_use"
    CUSTOM_TOOL_USE = "custom_tool_use"
    END_TURN = "end_turn"
    TERMINATE = "terminate"


_WAITS = {StepKind.TOOL_USE: "agent.tool_use", StepKind.CUSTOM_TOOL_USE: "agent.custom_tool_use"}
# The result event that answers each kind of tool-use event, and the key naming the call.
_RESULTS = {
    "user.tool_result": ("agent.tool_use", "tool_use_id"),
    "user.custom_tool_result": ("agent.custom_tool_use", "custom_tool_use_id"),
}
_STEP_NAMES = [k.value for k in StepKind]
_STATUS_NAMES = [s.value for s in SessionStatus]


@attrs.frozen(kw_only=True)
class Step:
    """One step of a script."""

    kind: StepKind
    """What the step does."""
    name: str | None = None
    """The tool's name (tool uses only)."""
    input: Mapping[str, Any] | None = None
    """The tool's input (tool uses only)."""
    text: str | None = None
    """The message's text (``message`` only)."""

    def to_json(self) -> dict[str, Any]:
        """The step as a script writes it."""
        if self.kind is StepKind.MESSAGE:
            return {"message": {"text": self.text}}
        if self.kind in _WAITS:
            return {self.kind.value: {"name": self.name, "input": dict(self.input or {})}}
        return {self.kind.value: {}}


@attrs.frozen(kw_only=True)
class SessionEvent:
    """One event of a session's log."""

    id: str
    """``sevt_...``."""
    type: str
    """The event type, e.g. ``agent.tool_use``."""
    processed_at: _dt.datetime
    """When the session recorded it."""
    sent_by: str
    """``session`` for what the session emitted, ``client`` for what a client sent."""
    fields: Mapping[str, Any] = attrs.field(factory=dict)
    """The type's other fields, JSON-ready."""

    def to_json(self) -> dict[str, Any]:
        """The API's event object."""
        return {
            "id": self.id,
            "type": self.type,
            "processed_at": format_time(self.processed_at),
            **self.fields,
        }


@attrs.frozen(kw_only=True)
class EventPage:
    """One page of an events listing."""

    data: tuple[SessionEvent, ...]
    """The events on this page."""
    next_page: str | None
    """The cursor of the next page; None on the last page."""

    def to_json(self) -> dict[str, Any]:
        """The API shape: ``{"data": [...], "next_page": ...}``."""
        return {"data": [e.to_json() for e in self.data], "next_page": self.next_page}


# ------------------------------------------------------------------------------ parsing
def _object(value: object, key: str, expected: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{key} must be {expected}, got {value!r}", key=key, expected=expected, got=value
        )
    return value


def _only(obj: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
    for name in obj:
        if name not in allowed:
            raise InvalidInputError(
                f"{key} has the unknown key {name!r}; the known keys are {list(allowed)}",
                key=f"{key}.{name}",
                expected=f"only the keys {list(allowed)}",
                got=name,
            )


def _text(obj: Mapping[str, Any], name: str, key: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInputError(
            f"{key}.{name} must be a non-empty string, got {value!r}",
            key=f"{key}.{name}",
            expected="a non-empty string",
            got=value,
        )
    return value


def _step(value: object, key: str) -> Step:
    shape = 'a one-key object such as {"tool_use": {"name": "bash", "input": {...}}}'
    obj = _object(value, key, shape)
    if len(obj) != 1:
        raise InvalidInputError(
            f"{key} must have exactly one key, the step's kind (one of {_STEP_NAMES}), "
            f"got {sorted(obj)}",
            key=key,
            expected=shape,
            got=dict(obj),
        )
    ((name, body),) = obj.items()
    try:
        kind = StepKind(name)
    except ValueError:
        raise InvalidInputError(
            f"{key} has the unknown step {name!r}; the steps are {_STEP_NAMES}",
            key=f"{key}.{name}",
            expected=f"one of {_STEP_NAMES}",
            got=name,
        ) from None
    key = f"{key}.{name}"
    args = _object(body, key, "an object")
    if kind is StepKind.MESSAGE:
        _only(args, key, ("text",))
        return Step(kind=kind, text=_text(args, "text", key))
    if kind in _WAITS:
        _only(args, key, ("name", "input"))
        tool_input = args.get("input", {})
        _object(tool_input, f"{key}.input", "an object (the tool's input)")
        return Step(kind=kind, name=_text(args, "name", key), input=dict(tool_input))
    _only(args, key, ())
    return Step(kind=kind)


def parse_session_spec(value: object) -> tuple[SessionStatus, tuple[Step, ...]]:
    """The starting status and the script of ``{"status": ..., "script": [...]}``, or a 400.

    ``status`` defaults to ``idle``; ``script`` to ``[{"end_turn": {}}]`` (``[]`` for a
    session created ``terminated``, which plays nothing).
    """
    spec = _object(value, "session", 'an object such as {"script": [...], "status": "idle"}')
    _only(spec, "session", ("script", "status"))
    raw_status = spec.get("status", "idle")
    try:
        status = SessionStatus(raw_status)
    except ValueError:
        raise InvalidInputError(
            f"session.status must be one of {_STATUS_NAMES}, got {raw_status!r}",
            key="session.status",
            expected=f"one of {_STATUS_NAMES}",
            got=raw_status,
        ) from None
    if status is SessionStatus.TERMINATED:
        if spec.get("script", []) != []:
            raise InvalidInputError(
                "a session created terminated never plays a script; leave session.script out",
                key="session.script",
                expected="no script",
                got=spec["script"],
            )
        return status, ()
    raw = spec.get("script", [{"end_turn": {}}])
    if not isinstance(raw, list):
        raise InvalidInputError(
            f"session.script must be a list of steps, got {raw!r}",
            key="session.script",
            expected="a list of steps",
            got=raw,
        )
    script = tuple(_step(s, f"session.script[{i}]") for i, s in enumerate(raw))
    for i, step in enumerate(script[:-1]):
        if step.kind is StepKind.TERMINATE:
            raise InvalidInputError(
                f"session.script[{i}] terminates the session, so the steps after it would "
                "never play; terminate must be the last step",
                key=f"session.script[{i}]",
                expected="terminate only as the last step",
                got=step.to_json(),
            )
    if not script or script[-1].kind not in (StepKind.END_TURN, StepKind.TERMINATE):
        raise InvalidInputError(
            "session.script must end with an end_turn or a terminate step, so the worker "
            "learns that the session is done",
            key="session.script",
            expected='a list ending with {"end_turn": {}} or {"terminate": {}}',
            got=raw,
        )
    return status, script


# ------------------------------------------------------------------------------ the record
_AGENT_TOOLSET = {
    "type": "agent_toolset_20260401",
    "configs": [],
    "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
}


@attrs.frozen(kw_only=True)
class Session:
    """A scripted session: its API fields, its script and every event so far."""

    id: str
    """``sesn_...``, the work item's ``data.id``."""
    environment_id: str
    """The environment of the work item."""
    created_at: _dt.datetime
    """When the session was created."""
    updated_at: _dt.datetime
    """When the session last changed."""
    status: SessionStatus
    """The session's status."""
    script: tuple[Step, ...] = ()
    """The steps to play."""
    position: int = 0
    """How many steps have been played."""
    attached: bool = False
    """Whether a worker has attached (the script starts then)."""
    awaiting: str | None = None
    """The id of the tool-use event whose result the script waits for."""
    events: tuple[SessionEvent, ...] = ()
    """Every event, oldest first."""

    @classmethod
    def create(
        cls,
        session_id: str,
        environment_id: str,
        now: _dt.datetime,
        *,
        status: SessionStatus = SessionStatus.IDLE,
        script: Sequence[Step] = (Step(kind=StepKind.END_TURN),),
    ) -> Session:
        """A new session; one created ``terminated`` has only its termination event."""
        session = cls(
            id=session_id,
            environment_id=environment_id,
            created_at=now,
            updated_at=now,
            status=status,
            script=tuple(script) if status is not SessionStatus.TERMINATED else (),
        )
        if status is SessionStatus.TERMINATED:
            return session._emit(now, [("session.status_terminated", {})])
        return session

    # -------------------------------------------------------------- operations
    def attach(self, now: _dt.datetime) -> Session:
        """The session once a worker attached: the script plays up to its first wait.

        Attaching again, or to a terminated session, changes nothing.
        """
        if self.attached or self.status is SessionStatus.TERMINATED:
            return self
        started = attrs.evolve(self, attached=True)._emit(now, [("session.status_running", {})])
        return started._play(now)

    def receive(
        self, events: object, now: _dt.datetime
    ) -> tuple[Session, tuple[SessionEvent, ...]]:
        """The session after a client sent ``events``, and the events as recorded.

        Only tool results are modelled: each must answer the tool call the script waits for.
        Anything else is a 400 (or a 409 for a terminated session or an answered call), and
        then nothing is recorded, not even the valid events before the bad one.
        """
        if self.status is SessionStatus.TERMINATED:
            raise IllegalMoveError(
                f"session {self.id} is terminated and accepts no events",
                error_type="conflict_error",
            )
        if not isinstance(events, list) or not events:
            raise InvalidInputError(
                f"events must be a non-empty list of events, got {events!r}",
                key="events",
                expected="a non-empty list of user.tool_result / user.custom_tool_result events",
                got=events,
            )
        session = self
        recorded: list[SessionEvent] = []
        for i, event in enumerate(events):
            session, one = session._receive_one(event, f"events[{i}]", now)
            recorded.append(one)
        return session, tuple(recorded)

    def events_page(
        self, *, limit: int | None = None, page: str | None = None, order: str | None = None
    ) -> EventPage:
        """A page of the log (``order`` ``asc``, the default, or ``desc``), or a 400."""
        if limit is None:
            limit = DEFAULT_EVENTS_PAGE
        if not is_int(limit) or not 1 <= limit <= MAX_EVENTS_PAGE:
            raise InvalidInputError(
                f"limit must be an integer from 1 to {MAX_EVENTS_PAGE}, got {limit!r}",
                key="limit",
                expected=f"an integer from 1 to {MAX_EVENTS_PAGE}",
                got=limit,
            )
        if order not in (None, "asc", "desc"):
            raise InvalidInputError(
                f"order must be 'asc' or 'desc', got {order!r}",
                key="order",
                expected="'asc' or 'desc'",
                got=order,
            )
        log = self.events[::-1] if order == "desc" else self.events
        offset = 0
        if page is not None:
            match = _CURSOR.fullmatch(page) if isinstance(page, str) else None
            if match is None or int(match.group(1)) > len(log):
                raise InvalidInputError(
                    f"page {page!r} is not a cursor of this listing; pass the next_page of a "
                    "previous answer",
                    key="page",
                    expected="a next_page value from a previous answer",
                    got=page,
                )
            offset = int(match.group(1))
        end = offset + limit
        return EventPage(data=log[offset:end], next_page=f"page_{end}" if end < len(log) else None)

    # -------------------------------------------------------------- the wire
    def to_json(self) -> dict[str, Any]:
        """The API's session object (``BetaManagedAgentsSession``)."""
        custom = {}
        for step in self.script:
            if step.kind is StepKind.CUSTOM_TOOL_USE and step.name not in custom:
                custom[step.name] = {
                    "type": "custom",
                    "name": step.name,
                    "description": "a custom tool of the scripted session",
                    "input_schema": {"type": "object", "properties": {}},
                }
        return {
            "id": self.id,
            "type": "session",
            "agent": {
                "id": "agent_workstate_mock",
                "type": "agent",
                "name": "workstate mock agent",
                "description": "plays the session's script",
                "version": 1,
                "model": {"id": "claude-sonnet-4-5"},
                "system": None,
                "execution_identity": {"type": "service_account"},
                "mcp_servers": [],
                "multiagent": None,
                "skills": [],
                "tools": [_AGENT_TOOLSET, *custom.values()],
            },
            "archived_at": None,
            "budget": None,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "environment_id": self.environment_id,
            "metadata": {},
            "outcome_evaluations": [],
            "resources": [],
            "stats": {
                "active_seconds": None,
                "duration_seconds": (self.updated_at - self.created_at).total_seconds(),
            },
            "status": self.status.value,
            "title": None,
            "usage": {},
            "vault_ids": [],
            "deployment_id": None,
        }

    def inspect_json(self) -> dict[str, Any]:
        """The mock's view: the session, its script's progress and every event with its sender."""
        return {
            "session": self.to_json(),
            "script": [s.to_json() for s in self.script],
            "position": self.position,
            "attached": self.attached,
            "awaiting": self.awaiting,
            "events": [{"sent_by": e.sent_by, "event": e.to_json()} for e in self.events],
        }

    # -------------------------------------------------------------- internals
    def _emit(
        self,
        now: _dt.datetime,
        emitted: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        sent_by: str = "session",
        **changes: Any,
    ) -> Session:
        events = list(self.events)
        for kind, fields in emitted:
            events.append(
                SessionEvent(
                    id=f"sevt_{self.id.removeprefix('sesn_')}_{len(events) + 1}",
                    type=kind,
                    processed_at=now,
                    sent_by=sent_by,
                    fields=dict(fields),
                )
            )
        return attrs.evolve(self, events=tuple(events), updated_at=now, **changes)

    def _next_id(self, offset: int = 0) -> str:
        return f"sevt_{self.id.removeprefix('sesn_')}_{len(self.events) + 1 + offset}"

    def _play(self, now: _dt.datetime) -> Session:
        session = attrs.evolve(self, status=SessionStatus.RUNNING)
        while session.position < len(session.script):
            step = session.script[session.position]
            session = attrs.evolve(session, position=session.position + 1)
            if step.kind is StepKind.MESSAGE:
                block = {"type": "text", "text": step.text}
                session = session._emit(now, [("agent.message", {"content": [block]})])
            elif step.kind in _WAITS:
                call = session._next_id()
                use = {"name": step.name, "input": dict(step.input or {})}
                idle = {"stop_reason": {"type": "requires_action", "event_ids": [call]}}
                return session._emit(
                    now,
                    [(_WAITS[step.kind], use), ("session.status_idle", idle)],
                    status=SessionStatus.IDLE,
                    awaiting=call,
                )
            elif step.kind is StepKind.END_TURN:
                idle = {"stop_reason": {"type": "end_turn"}}
                session = session._emit(
                    now, [("session.status_idle", idle)], status=SessionStatus.IDLE
                )
            else:
                return session._emit(
                    now, [("session.status_terminated", {})], status=SessionStatus.TERMINATED
                )
        return session

    def _receive_one(
        self, event: object, key: str, now: _dt.datetime
    ) -> tuple[Session, SessionEvent]:
        accepted = sorted(_RESULTS)
        obj = _object(event, key, f"an event object of a type in {accepted}")
        kind = obj.get("type")
        if kind not in _RESULTS:
            raise InvalidInputError(
                f"{key}.type must be one of {accepted} (the mock models only the tool results "
                f"a worker sends), got {kind!r}",
                key=f"{key}.type",
                expected=f"one of {accepted}",
                got=kind,
            )
        use_type, id_key = _RESULTS[kind]
        _only(obj, key, ("type", id_key, "content", "is_error"))
        call = obj.get(id_key)
        use = next((e for e in self.events if e.id == call and e.type == use_type), None)
        if use is None:
            raise InvalidInputError(
                f"{key}.{id_key} must name an {use_type} event of session {self.id}, got {call!r}",
                key=f"{key}.{id_key}",
                expected=f"the id of an {use_type} event of this session",
                got=call,
            )
        if call != self.awaiting:
            raise IllegalMoveError(
                f"{use_type} {call} of session {self.id} already has its result",
                error_type="conflict_error",
            )
        content = obj.get("content", [])
        if not isinstance(content, list) or not all(
            isinstance(b, Mapping) and isinstance(b.get("type"), str) for b in content
        ):
            raise InvalidInputError(
                f"{key}.content must be a list of content blocks, got {content!r}",
                key=f"{key}.content",
                expected='a list of blocks such as {"type": "text", "text": "..."}',
                got=content,
            )
        is_error = obj.get("is_error")
        if is_error is not None and not isinstance(is_error, bool):
            raise InvalidInputError(
                f"{key}.is_error must be a boolean or null, got {is_error!r}",
                key=f"{key}.is_error",
                expected="true, false or null",
                got=is_error,
            )
        fields = {id_key: call, "content": list(content), "is_error": is_error}
        answered = self._emit(now, [(kind, fields)], sent_by="client", awaiting=None)
        recorded = answered.events[-1]
        running = answered._emit(now, [("session.status_running", {})])
        return running._play(now), recorded


# ------------------------------------------------------------------------------ records
def session_to_record(session: Session) -> dict[str, Any]:
    """Every field of ``session`` as JSON, for a state file (:func:`session_from_record`)."""
    return {
        "id": session.id,
        "environment_id": session.environment_id,
        "created_at": format_time(session.created_at),
        "updated_at": format_time(session.updated_at),
        "status": session.status.value,
        "script": [step.to_json() for step in session.script],
        "position": session.position,
        "attached": session.attached,
        "awaiting": session.awaiting,
        "events": [
            {
                "id": e.id,
                "type": e.type,
                "processed_at": format_time(e.processed_at),
                "sent_by": e.sent_by,
                "fields": dict(e.fields),
            }
            for e in session.events
        ],
    }


def session_from_record(record: Any) -> Session:
    """The session :func:`session_to_record` wrote; a 400 (or a TypeError, KeyError) if not."""
    script = tuple(_step(step, f"script[{n}]") for n, step in enumerate(record["script"]))
    events = tuple(
        SessionEvent(
            id=str(e["id"]),
            type=str(e["type"]),
            processed_at=parse_time(e["processed_at"], key="processed_at"),
            sent_by=str(e["sent_by"]),
            fields=dict(e["fields"]),
        )
        for e in record["events"]
    )
    position, attached, awaiting = record["position"], record["attached"], record["awaiting"]
    if not is_int(position) or type(attached) is not bool or not isinstance(awaiting, str | None):
        raise InvalidInputError(
            "a session record's position, attached or awaiting has the wrong type",
            key="session",
            expected="an int, a bool and a string or null",
            got=record,
        )
    return Session(
        id=str(record["id"]),
        environment_id=str(record["environment_id"]),
        created_at=parse_time(record["created_at"], key="created_at"),
        updated_at=parse_time(record["updated_at"], key="updated_at"),
        status=SessionStatus(record["status"]),
        script=script,
        position=position,
        attached=attached,
        awaiting=awaiting,
        events=events,
    )
