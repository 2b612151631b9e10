"""Histories of concurrent calls to the work API: the format, and where histories come from.

Theory of operation
-------------------
A *history* is what the clients of a server saw: one :class:`HistoryCall` per HTTP request,
with who sent it, what it asked, when it was sent, when the answer came back, and what the
answer was.  The checker (:mod:`workstate._linearize`) decides whether some order of those
calls, consistent with real time, explains every answer under the model.

The file is JSON Lines, version 1.  The first line is a header; every other line is a call::

    {"type": "history", "version": 1, "clock": "wall", "server_clock": "same",
     "skew_seconds": 0.05, "profile": "anthropic", "source": "sdk-recorder"}
    {"type": "call", "id": 0, "client": "worker-1", "op": "ack", "environment_id": "env_1",
     "work_id": "work_1", "input": {"worker_id": "worker-1"}, "invoke": 1782893700.125,
     "return": 1782893700.131, "outcome": "ok", "status": 200, "body": {...}}

Clocks.  ``invoke`` and ``return`` are seconds on the *recorder's* clock: ``"wall"`` (UNIX time,
UTC) or ``"monotonic"`` (an arbitrary origin).  ``server_clock`` says how the timestamps the
server writes into its answers (``acknowledged_at``, ``last_heartbeat``, ...) relate to it:
``"same"`` (only with a wall clock: the server's clock is the recorder's, give or take
``skew_seconds``, so a call's server time lies in ``[invoke - skew, return + skew]``) or
``"unrelated"`` (a manual server clock, another machine, or a monotonic recorder: the server's
times are only known to never go backwards).  A call may also carry ``server_time`` (RFC 3339):
the exact time the server handed to its core for that call (the mock's journal knows it).

Outcomes.  ``ok``: a 2xx answer, ``body`` is its JSON (``null`` for an empty poll).  ``fail``:
a 4xx answer that says the call changed nothing; ``status``, ``error_type`` and ``body`` (the
error envelope).  ``info``: no trustworthy answer — a timeout, a dropped connection, a 5xx, a
408 or a 429 — the call may have taken effect at any time after ``invoke``, or never;
``return`` is then null.  :func:`outcome_for_status` is the one rule every recorder uses.

Operations and their ``input`` keys (the names the mock's journal and fault rules use):
``poll`` (``worker_id``, ``reclaim_older_than_ms``, ``block_ms``), ``ack`` (``worker_id``),
``heartbeat`` (``expected_last_heartbeat``, ``desired_ttl_seconds``), ``stop`` (``force``),
``update`` (``metadata``), ``get``, ``list`` (``limit``, ``page``), ``stats``, and the mock's
``create`` (``data``, ``metadata``, ``secret``, ``work_id``).  :func:`call_from_http` maps a
method, path, query, headers and body to these.

Sources.  The SDK recorder (``workstate.testing.HistoryRecorder``) writes what a client saw;
:func:`history_from_journal` converts the mock server's request journal (one JSON object per
request, see ``docs/mock-server.md``); ``workstate.testing`` builds histories from concurrent
runs and from the model itself.  Everything here is pure: parsing and formatting only.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from workstate._errors import InvalidInputError
from workstate._time import UTC, format_time, parse_time

__all__ = [
    "HISTORY_VERSION",
    "OPERATIONS",
    "History",
    "HistoryCall",
    "HistoryFormatError",
    "call_from_http",
    "history_from_journal",
    "outcome_for_status",
    "read_history",
]

HISTORY_VERSION = 1
"""The version of the history format this library writes and reads."""

OPERATIONS = ("poll", "ack", "heartbeat", "stop", "get", "update", "list", "stats", "create")
"""The operations a history call may name (the work API's, and the mock's ``create``)."""

OUTCOMES = ("ok", "fail", "info")
_INPUT_KEYS: Mapping[str, tuple[str, ...]] = {
    "poll": ("worker_id", "reclaim_older_than_ms", "block_ms"),
    "ack": ("worker_id",),
    "heartbeat": ("expected_last_heartbeat", "desired_ttl_seconds"),
    "stop": ("force",),
    "update": ("metadata",),
    "get": (),
    "list": ("limit", "page"),
    "stats": (),
    "create": ("data", "metadata", "secret", "work_id"),
}
_MICRO = _dt.timedelta(microseconds=1)
_INT_QUERY = {"reclaim_older_than_ms", "block_ms", "desired_ttl_seconds", "limit"}
_WORK_PATH = re.compile(r"/v1/environments/([^/]+)/work(?:/([^/]+)(?:/([a-z]+))?)?/?")
_CREATE_PATH = re.compile(r"/mock/environments/([^/]+)/work/?")


class HistoryFormatError(ValueError):
    """A history that cannot be read: names the line and what was wrong."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        """The 1-based line of the file at fault, when there is one."""
        super().__init__(f"line {line}: {message}" if line is not None else message)


@attrs.frozen(kw_only=True)
class HistoryCall:
    """One call of a history: who, what, when, and what came back."""

    id: int
    """A number unique in the history (recorders count from 0 in order of invocation)."""
    client: str
    """Who made the call: a worker id, a connection, a thread (only for reading the history)."""
    op: str
    """The operation, one of :data:`OPERATIONS`."""
    environment_id: str
    """The environment the call addressed."""
    work_id: str | None
    """The item the path names (ack, heartbeat, stop, get, update; create's ``work_id``)."""
    input: Mapping[str, Any]
    """The operation's inputs, by the names in the module docstring (absent: not sent)."""
    invoke: float
    """When the call was sent, in seconds on the history's clock."""
    ret: float | None
    """When the answer arrived (``return`` in the file); None for an ``info`` call."""
    outcome: str
    """``ok``, ``fail`` or ``info``."""
    status: int | None = None
    """The HTTP status, when an answer arrived."""
    body: Any = None
    """The answer's JSON: the result for ``ok``, the error envelope for ``fail``."""
    error_type: str | None = None
    """``error.type`` of a ``fail`` answer."""
    server_time: _dt.datetime | None = None
    """The exact time the server handed its core for this call, when known."""

    def to_json(self) -> dict[str, Any]:
        """The call's line in the file."""
        out: dict[str, Any] = {
            "type": "call",
            "id": self.id,
            "client": self.client,
            "op": self.op,
            "environment_id": self.environment_id,
            "work_id": self.work_id,
            "input": dict(self.input),
            "invoke": self.invoke,
            "return": self.ret,
            "outcome": self.outcome,
        }
        if self.status is not None:
            out["status"] = self.status
        if self.outcome != "info" or self.body is not None:
            out["body"] = self.body
        if self.error_type is not None:
            out["error_type"] = self.error_type
        if self.server_time is not None:
            out["server_time"] = format_time(self.server_time)
        return out

    def describe(self) -> str:
        """A short label: ``#12 worker-1 ack work_x → 200``."""
        target = f" {self.work_id}" if self.work_id else ""
        if self.outcome == "info":
            answer = "no answer (info)"
        elif self.outcome == "fail":
            answer = f"{self.status} {self.error_type}"
        elif self.op == "poll":
            answer = "null" if self.body is None else f"200 {_get(self.body, 'id')}"
        else:
            answer = f"{self.status or 200}"
        return f"#{self.id} {self.client} {self.op}{target} → {answer}"


@attrs.frozen(kw_only=True)
class History:
    """A whole history: how its clocks relate, and its calls."""

    calls: tuple[HistoryCall, ...]
    """The calls, in the order of the file."""
    clock: str = "wall"
    """``wall`` (UNIX seconds) or ``monotonic``: the clock of ``invoke`` and ``return``."""
    server_clock: str = "unrelated"
    """``same`` (the server's timestamps come from this clock, within ``skew_seconds``) or
    ``unrelated``."""
    skew_seconds: float = 0.0
    """How far the server's clock may be from the recorder's (``server_clock="same"``)."""
    profile: str | None = None
    """The profile the server claims to follow, when the recorder knew it."""
    source: str | None = None
    """Who wrote the history (free text)."""

    def header(self) -> dict[str, Any]:
        """The first line of the file."""
        return {
            "type": "history",
            "version": HISTORY_VERSION,
            "clock": self.clock,
            "server_clock": self.server_clock,
            "skew_seconds": self.skew_seconds,
            "profile": self.profile,
            "source": self.source,
        }

    def lines(self) -> Iterator[str]:
        """The file, line by line (no newlines)."""
        yield json.dumps(self.header())
        for call in self.calls:
            yield json.dumps(call.to_json())

    def to_jsonl(self) -> str:
        """The whole file as text."""
        return "".join(line + "\n" for line in self.lines())

    def window(self, call: HistoryCall) -> tuple[_dt.datetime | None, _dt.datetime | None]:
        """The interval of server time in which ``call`` took effect (None: unbounded)."""
        if call.server_time is not None:
            return call.server_time, call.server_time
        if self.server_clock != "same":
            return None, None
        # A float of UNIX seconds is exact to a fraction of a microsecond only: widen by one.
        lo = _from_unix(call.invoke - self.skew_seconds) - _MICRO
        hi = None if call.ret is None else _from_unix(call.ret + self.skew_seconds) + _MICRO
        return lo, hi


def _from_unix(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, UTC)


def _get(body: object, key: str) -> object:
    return body.get(key) if isinstance(body, Mapping) else None


def outcome_for_status(status: int | None) -> str:
    """How a recorder classifies an answer: ``ok``, ``fail`` or ``info``.

    No answer, a 5xx, 408 (timeout) and 429 (rate limit) say nothing about whether the call
    took effect: ``info``.  Any other 4xx is a refusal that changed nothing: ``fail``.

    >>> [outcome_for_status(s) for s in (200, 409, 412, 429, 503, None)]
    ['ok', 'fail', 'fail', 'info', 'info', 'info']
    """
    if status is None or status >= 500 or status in (408, 429):
        return "info"
    return "ok" if status < 400 else "fail"


def call_from_http(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: object,
) -> tuple[str, str, str | None, dict[str, Any]] | None:
    """Classify a request: ``(op, environment_id, work_id, input)``, or None when it is not a
    call of the work API (a mock control, a session route, an unknown path).

    ``query`` maps parameter names to their (last) values; ``headers`` keys are matched
    without regard to case; ``body`` is the parsed JSON (or None).

    >>> call_from_http("POST", "/v1/environments/env_1/work/work_9/heartbeat",
    ...                {"desired_ttl_seconds": "60"}, {}, None)
    ('heartbeat', 'env_1', 'work_9', {'desired_ttl_seconds': 60})
    """
    params = query
    method = method.upper()
    obj = body if isinstance(body, Mapping) else {}
    match = _CREATE_PATH.fullmatch(path)
    if match is not None:
        if method != "POST":
            return None
        created = {k: obj[k] for k in _INPUT_KEYS["create"] if k in obj}
        work_id = created.get("work_id")
        return "create", match[1], work_id if isinstance(work_id, str) else None, created
    match = _WORK_PATH.fullmatch(path)
    if match is None:
        return None
    env, item, action = match[1], match[2], match[3]
    op: str | None = None
    if item is None:
        op = "list" if method == "GET" else None
    elif action is None and item in ("poll", "stats"):
        op, item = (item if method == "GET" else None), None
    elif action is None:
        op = {"GET": "get", "POST": "update"}.get(method)
    elif method == "POST" and action in ("ack", "heartbeat", "stop"):
        op = action
    if op is None:
        return None
    inputs: dict[str, Any] = {}
    for key in _INPUT_KEYS[op]:
        if key in params:
            value: Any = params[key]
            if key in _INT_QUERY and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
                value = int(value)
            inputs[key] = value
        elif key in obj:
            inputs[key] = obj[key]
    if op in ("poll", "ack"):
        lowered = {k.lower(): v for k, v in headers.items()}
        worker = lowered.get("anthropic-worker-id")
        if worker:
            inputs["worker_id"] = worker
    if op == "update" and "metadata" not in inputs:
        inputs["metadata"] = {}
    return op, env, item, inputs


def _error_type(body: object) -> str | None:
    error = _get(body, "error")
    kind = _get(error, "type")
    return kind if isinstance(kind, str) else None


# ------------------------------------------------------------------------------ reading
def _need(obj: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], line: int) -> Any:
    if key not in obj:
        raise HistoryFormatError(f"the record has no {key!r}", line=line)
    value = obj[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
        raise HistoryFormatError(f"{key!r} has the wrong type: {value!r}", line=line)
    return value


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _number(obj: Mapping[str, Any], key: str, line: int, *, nullable: bool) -> float | None:
    value = obj.get(key)
    if value is None and nullable and key in obj:
        return None
    value = _need(obj, key, (int, float), line)
    if not math.isfinite(value):
        raise HistoryFormatError(f"{key!r} must be a finite number, got {value!r}", line=line)
    return float(value)


def _header(obj: Mapping[str, Any], line: int) -> dict[str, Any]:
    version = obj.get("version")
    if version != HISTORY_VERSION:
        raise HistoryFormatError(
            f"history version {version!r} is not supported; this library reads version "
            f"{HISTORY_VERSION}",
            line=line,
        )
    clock = obj.get("clock", "wall")
    server_clock = obj.get("server_clock", "unrelated")
    if clock not in ("wall", "monotonic"):
        raise HistoryFormatError(f"clock must be 'wall' or 'monotonic', got {clock!r}", line=line)
    if server_clock not in ("same", "unrelated"):
        raise HistoryFormatError(
            f"server_clock must be 'same' or 'unrelated', got {server_clock!r}", line=line
        )
    if server_clock == "same" and clock != "wall":
        raise HistoryFormatError(
            "server_clock 'same' needs clock 'wall': a monotonic clock has no relation to the "
            "server's timestamps",
            line=line,
        )
    skew = obj.get("skew_seconds", 0.0)
    if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not 0 <= skew < math.inf:
        raise HistoryFormatError(f"skew_seconds must be a number >= 0, got {skew!r}", line=line)
    for key in ("profile", "source"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise HistoryFormatError(f"{key!r} must be a string or null", line=line)
    return {
        "clock": clock,
        "server_clock": server_clock,
        "skew_seconds": float(skew),
        "profile": obj.get("profile"),
        "source": obj.get("source"),
    }


def _call(obj: Mapping[str, Any], line: int) -> HistoryCall:
    ident = _need(obj, "id", int, line)
    client = _need(obj, "client", str, line)
    op = _need(obj, "op", str, line)
    if op not in OPERATIONS:
        raise HistoryFormatError(
            f"unknown operation {op!r}; the operations are {', '.join(OPERATIONS)}", line=line
        )
    env = _need(obj, "environment_id", str, line)
    work_id = obj.get("work_id")
    if work_id is not None and not isinstance(work_id, str):
        raise HistoryFormatError(f"'work_id' must be a string or null, got {work_id!r}", line=line)
    inputs = obj.get("input", {})
    if not isinstance(inputs, Mapping):
        raise HistoryFormatError(f"'input' must be an object, got {inputs!r}", line=line)
    unknown = sorted(set(inputs) - set(_INPUT_KEYS[op]))
    if unknown:
        raise HistoryFormatError(
            f"{op} takes the inputs {list(_INPUT_KEYS[op])}, not {unknown}", line=line
        )
    outcome = _need(obj, "outcome", str, line)
    if outcome not in OUTCOMES:
        raise HistoryFormatError(
            f"outcome must be 'ok', 'fail' or 'info', got {outcome!r}", line=line
        )
    invoke = _number(obj, "invoke", line, nullable=False)
    assert invoke is not None
    ret = _number(obj, "return", line, nullable=True) if "return" in obj else None
    if outcome != "info" and ret is None:
        raise HistoryFormatError(f"an {outcome} call needs a 'return' time", line=line)
    if ret is not None and ret < invoke:
        raise HistoryFormatError(
            f"the call returned ({ret}) before it was invoked ({invoke})", line=line
        )
    status = obj.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise HistoryFormatError(f"'status' must be an integer, got {status!r}", line=line)
    body = obj.get("body")
    error_type = obj.get("error_type")
    if outcome == "fail":
        if status is None or not 400 <= status < 500:
            raise HistoryFormatError(f"a fail call needs a 4xx 'status', got {status!r}", line=line)
        error_type = error_type if error_type is not None else _error_type(body)
        if not isinstance(error_type, str):
            raise HistoryFormatError(
                "a fail call needs an 'error_type' (or a body with error.type)", line=line
            )
    elif error_type is not None:
        raise HistoryFormatError(f"an {outcome} call has no 'error_type'", line=line)
    if outcome == "ok" and "body" not in obj:
        raise HistoryFormatError("an ok call needs a 'body' (null for an empty poll)", line=line)
    server_time = None
    if obj.get("server_time") is not None:
        try:
            server_time = parse_time(obj["server_time"], key="server_time")
        except InvalidInputError as exc:
            raise HistoryFormatError(exc.message, line=line) from None
    return HistoryCall(
        id=ident,
        client=client,
        op=op,
        environment_id=env,
        work_id=work_id,
        input=dict(inputs),
        invoke=invoke,
        ret=ret,
        outcome=outcome,
        status=status,
        body=body,
        error_type=error_type,
        server_time=server_time,
    )


def read_history(source: str | Iterable[str]) -> History:
    """Parse a history from JSON Lines text (a string, or an iterable of lines).

    Raises :class:`HistoryFormatError` naming the line at fault.  Blank lines are skipped;
    the header must come first.

    >>> text = '{"type": "history", "version": 1}\\n'
    >>> read_history(text).calls
    ()
    """
    lines = source.splitlines() if isinstance(source, str) else source
    header: dict[str, Any] | None = None
    calls: list[HistoryCall] = []
    seen: set[int] = set()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise HistoryFormatError(f"invalid JSON: {exc}", line=number) from None
        if not isinstance(obj, dict):
            raise HistoryFormatError("each line must be a JSON object", line=number)
        kind = obj.get("type")
        if header is None:
            if kind != "history":
                raise HistoryFormatError(
                    'the first line must be the header {"type": "history", "version": 1, ...}',
                    line=number,
                )
            header = _header(obj, number)
            continue
        if kind != "call":
            raise HistoryFormatError(f"a record of type {kind!r}; expected 'call'", line=number)
        call = _call(obj, number)
        if call.id in seen:
            raise HistoryFormatError(f"call id {call.id} appears twice", line=number)
        seen.add(call.id)
        calls.append(call)
    if header is None:
        raise HistoryFormatError("the history is empty: it has no header line")
    return History(calls=tuple(calls), **header)


# ------------------------------------------------------------------------------ the journal
def history_from_journal(
    entries: Iterable[Mapping[str, Any] | str], *, profile: str | None = None
) -> History:
    """The history of the calls in a mock server's request journal.

    Each entry is one request (a mapping, or its JSON text).  The journal's times are the
    server's: ``started_mono``/``finished_mono`` order the calls (clock ``monotonic``), and
    ``server_time`` is the exact time the server gave its core, which pins the call (except for
    a long poll, which may have asked its core several times: only its lower bound is kept).

    How each entry maps, soundly:

    * ``operation`` null (mock controls, unknown routes) or a session route: left out;
    * ``status`` null (the connection dropped, no answer): ``info``;
    * an injected ``fault`` whose request never reached the core (``server_time`` null and
      ``applied`` false): left out, since nothing happened;
    * any other injected fault (the core ran, the answer was replaced or lost), and every 5xx,
      408 or 429: ``info`` — what the client saw is not what the core answered;
    * otherwise a 2xx is ``ok`` with ``response`` as the body, a 4xx ``fail``.
    """
    calls: list[HistoryCall] = []
    for number, raw in enumerate(entries, start=1):
        entry = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(entry, Mapping):
            raise HistoryFormatError("a journal entry must be a JSON object", line=number)
        op = entry.get("operation")
        if op not in OPERATIONS:
            continue
        method, path = entry.get("method"), entry.get("path")
        if not isinstance(method, str) or not isinstance(path, str):
            raise HistoryFormatError("a journal entry needs 'method' and 'path'", line=number)
        query = entry.get("query") or {}
        headers = {}
        if entry.get("worker_id"):
            headers["anthropic-worker-id"] = str(entry["worker_id"])
        parsed = call_from_http(method, path, query, headers, entry.get("body"))
        if parsed is None:
            continue
        _, env, work_id, inputs = parsed
        status = entry.get("status")
        fault = entry.get("fault")
        server_time_text = entry.get("server_time")
        if fault is not None and server_time_text is None and not entry.get("applied"):
            continue  # refused before the core: the call did nothing
        outcome = "info" if fault is not None else outcome_for_status(status)
        started = entry.get("started_mono")
        finished = entry.get("finished_mono")
        if not isinstance(started, (int, float)) or isinstance(started, bool):
            raise HistoryFormatError("a journal entry needs a numeric 'started_mono'", line=number)
        server_time = None
        if server_time_text is not None and not (op == "poll" and "block_ms" in inputs):
            try:
                server_time = parse_time(server_time_text, key="server_time")
            except InvalidInputError as exc:
                raise HistoryFormatError(exc.message, line=number) from None
        response = entry.get("response")
        error = entry.get("error")
        error_type = None
        if outcome == "fail":
            error_type = _error_type(response)
            if error_type is None and isinstance(error, Mapping):
                error_type = error.get("type")
        ident = entry.get("seq", number)
        calls.append(
            HistoryCall(
                id=int(ident),
                client=str(entry.get("worker_id") or entry.get("client") or "?"),
                op=op,
                environment_id=env,
                work_id=work_id,
                input=inputs,
                invoke=float(started),
                ret=None if outcome == "info" or finished is None else float(finished),
                outcome=outcome,
                status=status if isinstance(status, int) else None,
                body=None if outcome == "info" else response,
                error_type=error_type if isinstance(error_type, str) else None,
                server_time=server_time,
            )
        )
    return History(
        calls=tuple(calls),
        clock="monotonic",
        server_clock="unrelated",
        profile=profile,
        source="mock journal",
    )


def calls_by_id(calls: Sequence[HistoryCall]) -> dict[int, HistoryCall]:
    """The calls keyed by id."""
    return {c.id: c for c in calls}
