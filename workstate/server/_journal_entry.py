"""One journal entry: a request and its outcome, as plain data (see :mod:`._journal`).

Theory of operation
-------------------
The fields and their JSON are described in :mod:`workstate.server._journal`, which holds the
journal itself; this record lives apart so that a server loads it only when an entry is first
built (the journal is read, or a sink such as ``serve --journal`` takes every entry): building
the attrs class was ~1 ms of ``serve``'s cold start, and most servers never read a journal.
Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["JournalEntry"]


@attrs.frozen(kw_only=True)
class JournalEntry:
    """One request and its outcome (see the module's docstring for each field)."""

    seq: int
    request_id: str | None
    client: str
    worker_id: str | None
    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    operation: str | None
    environment_id: str | None
    work_id: str | None
    started_mono: float
    finished_mono: float
    server_time: str | None
    status: int | None
    response: Any
    applied: bool
    fault: Mapping[str, Any] | None
    move: Mapping[str, Any] | None
    error: Mapping[str, Any] | None
    core_seq: int | None = None
    withheld: Mapping[str, Any] | None = None
    item: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as ``GET /mock/journal`` and ``serve --journal`` write it."""
        return {
            "seq": self.seq,
            "request_id": self.request_id,
            "client": self.client,
            "worker_id": self.worker_id,
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "body": self.body,
            "operation": self.operation,
            "environment_id": self.environment_id,
            "work_id": self.work_id,
            "started_mono": self.started_mono,
            "finished_mono": self.finished_mono,
            "server_time": self.server_time,
            "status": self.status,
            "response": self.response,
            "applied": self.applied,
            "fault": None if self.fault is None else dict(self.fault),
            "move": None if self.move is None else dict(self.move),
            "error": None if self.error is None else dict(self.error),
            "core_seq": self.core_seq,
            "withheld": None if self.withheld is None else dict(self.withheld),
            "item": None if self.item is None else dict(self.item),
        }
