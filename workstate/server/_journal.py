"""The request journal: every request the mock server saw, what it did, and why.

Theory of operation
-------------------
A :class:`JournalEntry` is one request and its outcome, as plain data (its class lives in
``_journal_entry``, loaded when the first entry is built; it is importable from here).  Its
JSON (one object per request, the format the history checker reads) has these keys, in this
order:

``seq`` (from 1, in arrival order), ``request_id``, ``client`` (the peer ``host:port``, or
``"asgi"`` in process), ``worker_id`` (the ``anthropic-worker-id`` header), ``method``,
``path``, ``query`` (str → str), ``body`` (parsed JSON; the raw text if it is not JSON; null if
empty), ``operation`` (see :data:`OPERATIONS`; null for ``/mock/`` controls and unknown routes),
``environment_id``, ``work_id``, ``started_mono``/``finished_mono`` (the server process's
``time.monotonic()`` at arrival and when the answer was sent — just before its last part, so a
client holding its answer finds the entry — or the connection dropped),
``server_time`` (the time handed to the core, null if the core was not called), ``status``
(null when the connection was dropped), ``response`` (the parsed answer; null when none was
sent, and for the journal's own listings, which would hold the journal again), ``applied``
(the call changed the item), ``fault`` (``{"id", "effect"}`` of the rule that fired, or null),
``move`` (``{"from", "to"}`` when a row of the table applied; ``from`` is null for a creation),
``error`` (``{"status", "type", "message", "error_code"}`` when the
request was refused),

and two more: ``core_seq`` (the order in which the core served the calls, under its lock: the
order the changes happened in, which concurrent requests need not share with ``seq``) and
``withheld`` (the answer the server computed but never sent, for a ``drop: after`` fault:
``{"status", "response"}``, else null), and ``item``: the item a call left when its answer
carries none (a stop answered 204 under a profile with ``stop_response = "no_content"``),
else null, so the journal and the trace checker still see what the stop did.

What a call did is read from what the server answered, compared with the item as it stood
when the core took the call (:func:`outcome`): an answer equal to that record changed nothing
(a safe retry), a heartbeat applied a row when it extended the lease, a poll when it handed
out an item.  So the journal needs no hook inside the core.

:class:`Journal` keeps the entries, numbers arrivals, filters by environment, item, operation
and ``since`` (a ``seq``), and hands every finished entry to an optional sink (``serve
--journal FILE`` writes JSON Lines).  Its :func:`~workstate._trace.journal_trace_records`
records feed ``python -m workstate check`` as they are.

No I/O here, no clock reads: the adapter passes every time in.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

if TYPE_CHECKING:
    from workstate.server._journal_entry import JournalEntry

__all__ = [
    "COMPARED",
    "OPERATIONS",
    "Journal",
    "JournalEntry",
    "PendingEntry",
    "RequestFacts",
    "classify",
    "decode_body",
    "outcome",
]

OPERATIONS: tuple[str, ...] = (
    "poll",
    "ack",
    "heartbeat",
    "stop",
    "get",
    "update",
    "list",
    "stats",
    "create",
    "session_get",
    "session_events",
    "session_stream",
    "session_send",
)
"""Every operation name a journal entry may carry (``create`` is the mock's queueing call)."""


def __getattr__(name: str) -> object:
    # JournalEntry lives in _journal_entry, loaded when the first entry is built (see there);
    # it is still importable from here, where the journal's format is described.
    if name == "JournalEntry":
        from workstate.server._journal_entry import JournalEntry

        return JournalEntry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_HEAD_AS_GET = {"HEAD": "GET"}
_ITEM_CALLS = frozenset({"ack", "heartbeat", "stop"})

COMPARED = frozenset({"ack", "stop", "update"})
"""The operations whose :func:`outcome` compares the item before the call with the item after
it; the others read at most the state it was in."""
_NOT_ITEMS = frozenset({"poll", "stats"})  # route names under .../work, never item ids


class RequestFacts(NamedTuple):
    """What a request is about, read from its method and path alone."""

    operation: str | None
    """The operation name, or None (a ``/mock/`` control, an unknown route, a wrong method)."""
    environment_id: str | None
    """The environment the path names."""
    work_id: str | None
    """The work item the path names."""


_NONE = RequestFacts(None, None, None)


@functools.lru_cache(maxsize=4096)
def classify(method: str, path: str) -> RequestFacts:
    """The operation, environment and item a request is about.

    Every request is classified, so this splits the path once instead of trying a pattern per
    route, and remembers the latest few thousand answers (a worker heartbeats the same path
    over and over); a path segment is any non-empty text without ``/`` (an empty one matches
    nothing).

    >>> classify("POST", "/v1/environments/env_a/work/work_1/heartbeat")
    RequestFacts(operation='heartbeat', environment_id='env_a', work_id='work_1')
    >>> classify("POST", "/mock/faults")
    RequestFacts(operation=None, environment_id=None, work_id=None)
    """
    method = _HEAD_AS_GET.get(method, method)
    parts = path.split("/")
    n = len(parts)
    if n < 4 or parts[0] or not all(parts[1:]):
        return _NONE
    head, kind = parts[1], parts[2]
    if head == "v1" and kind == "environments" and n >= 5 and parts[4] == "work":
        return _classify_work(method, parts)
    if head == "v1" and kind == "sessions":
        return _classify_session(method, parts)
    if head == "mock" and kind == "environments" and n == 5 and parts[4] == "work":
        return RequestFacts("create", parts[3], None) if method == "POST" else _NONE
    return _NONE


def _classify_work(method: str, parts: list[str]) -> RequestFacts:
    n, env = len(parts), parts[3]
    if n == 5:
        return RequestFacts("list", env, None) if method == "GET" else _NONE
    last = parts[5]
    if n == 6:
        if method == "GET":
            if last in _NOT_ITEMS:
                return RequestFacts(last, env, None)
            return RequestFacts("get", env, last)
        if method == "POST" and last not in _NOT_ITEMS:
            return RequestFacts("update", env, last)
        return _NONE
    if n == 7 and method == "POST" and parts[6] in _ITEM_CALLS:
        return RequestFacts(parts[6], env, last)
    return _NONE


def _classify_session(method: str, parts: list[str]) -> RequestFacts:
    n = len(parts)
    if n == 4:
        return RequestFacts("session_get", None, None) if method == "GET" else _NONE
    if parts[4] != "events" or n > 6:
        return _NONE
    if n == 5:
        if method == "GET":
            return RequestFacts("session_events", None, None)
        return RequestFacts("session_send", None, None) if method == "POST" else _NONE
    if parts[5] == "stream" and method == "GET":
        return RequestFacts("session_stream", None, None)
    return _NONE


def decode_body(raw: bytes) -> Any:
    """A body as the journal shows it: parsed JSON, else the text, None when empty."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")


def _error_of(status: int | None, response: object) -> dict[str, Any] | None:
    if status is None or status < 400:
        return None
    error = response.get("error") if isinstance(response, Mapping) else None
    if not isinstance(error, Mapping):
        return {"status": status, "type": None, "message": None, "error_code": None}
    return {
        "status": status,
        "type": error.get("type"),
        "message": error.get("message"),
        "error_code": error.get("error_code"),
    }


def outcome(
    operation: str | None,
    before: Mapping[str, Any] | None,
    status: int | None,
    response: object,
    item: Mapping[str, Any] | None = None,
) -> tuple[bool, dict[str, Any] | None, dict[str, Any] | None]:
    """``(applied, move, error)`` of a call, from the item's JSON when the core took the call
    (``before``, None when the path named no existing item) and the answer (or ``item``, the
    record a bodiless 204 answer stood for).

    >>> outcome("ack", {"state": "queued"}, 200, {"state": "starting"})
    (True, {'from': 'queued', 'to': 'starting'}, None)
    >>> outcome("ack", {"state": "starting"}, 200, {"state": "starting"})
    (False, None, None)
    >>> outcome("stop", {"state": "active"}, 204, None, {"state": "stopping"})
    (True, {'from': 'active', 'to': 'stopping'}, None)
    """
    if status == 204 and item is not None:
        status, response = 200, item  # what the empty answer stood for
    error = _error_of(status, response)
    if status != 200 or not isinstance(response, Mapping):
        return False, None, error
    applied = False
    if operation == "create":
        return True, {"from": None, "to": response.get("state")}, None
    if operation == "poll":
        applied = response.get("type") == "work"
    elif operation == "heartbeat":
        applied = response.get("lease_extended") is True
    elif operation in COMPARED:
        applied = before is not None and dict(before) != dict(response)
    if not applied:
        return False, None, None
    source = "queued" if operation == "poll" else None if before is None else before.get("state")
    return True, {"from": source, "to": response.get("state")}, None


class PendingEntry(Protocol):
    """A finished request whose :class:`JournalEntry` is built only when someone reads it.

    Building an entry (parsing the bodies, formatting times, comparing the item before and
    after) costs more than serving a heartbeat; most entries are never read, so the adapter
    records what it saw and the journal builds the entry on the first read.
    """

    @property
    def seq(self) -> int:
        """The request's ``seq``."""

    def build(self) -> JournalEntry:
        """The entry (called at most once)."""


class Journal:
    """The entries in arrival order, and the numbers handed to arrivals.

    ``sink`` receives every finished entry's JSON (a file writer, say).  Memory holds the
    latest ``max_entries`` entries (a server left running must not grow without bound); the
    sink sees every one.  :meth:`record` takes a built entry or a :class:`PendingEntry`, built
    on the first read (or at once, for the sink).
    """

    def __init__(
        self,
        sink: Callable[[dict[str, Any]], None] | None = None,
        *,
        max_entries: int = 100_000,
    ) -> None:
        self.sink = sink
        """Called with each finished entry's JSON, or None."""
        self.max_entries = max_entries
        """How many entries memory keeps (the oldest go first)."""
        self._entries: list[JournalEntry | PendingEntry] = []
        self._pending = False  # some kept entries are not built yet
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._entries)

    def arrive(self) -> int:
        """The ``seq`` of a request that just arrived."""
        self._arrivals += 1
        return self._arrivals

    def record(self, entry: JournalEntry | PendingEntry) -> None:
        """Keep a finished entry (in ``seq`` order) and hand it to the sink."""
        # A PendingEntry has a build method, a JournalEntry none (asked by name, so that the
        # journal needs the entry class only once an entry is built).
        build = getattr(entry, "build", None)
        if self.sink is not None:
            if build is not None:
                entry, build = build(), None
            self.sink(cast("JournalEntry", entry).to_json())  # (built now)
        if build is not None:
            self._pending = True
        entries = self._entries
        entries.append(entry)
        # Entries finish out of order (a long poll outlives later requests); keep seq order.
        i = len(entries) - 1
        seq = entry.seq
        while i > 0 and entries[i - 1].seq > seq:
            entries[i], entries[i - 1] = entries[i - 1], entries[i]
            i -= 1
        excess = len(entries) - self.max_entries
        if excess > self.max_entries // 10:  # trim in batches: a list's front is costly to cut
            del entries[:excess]

    def entries(
        self,
        *,
        environment_id: str | None = None,
        work_id: str | None = None,
        operation: str | Iterable[str] | None = None,
        since: int | None = None,
    ) -> list[JournalEntry]:
        """The entries that match every filter given, in ``seq`` order.

        ``since`` keeps the entries with a larger ``seq``.
        """
        names = {operation} if isinstance(operation, str) else operation
        names = None if names is None else set(names)
        return [
            e
            for e in self._built()
            if (environment_id is None or e.environment_id == environment_id)
            and (work_id is None or e.work_id == work_id)
            and (names is None or e.operation in names)
            and (since is None or e.seq > since)
        ]

    def _built(self) -> list[JournalEntry]:
        entries = self._entries
        if self._pending:
            for i, entry in enumerate(entries):
                build = getattr(entry, "build", None)  # (see record)
                if build is not None:
                    entries[i] = build()
            self._pending = False
        return cast("list[JournalEntry]", entries)  # every one is built now

    def clear(self) -> None:
        """Forget every entry; numbering goes on (so ``since`` stays meaningful)."""
        self._entries = []
        self._pending = False

    def reset(self) -> None:
        """Forget every entry and number from 1 again."""
        self._entries = []
        self._pending = False
        self._arrivals = 0
