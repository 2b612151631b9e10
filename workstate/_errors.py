"""The error hierarchy: everything an HTTP adapter and a programmer need to know.

Theory of operation
-------------------
Every rejection raises a subclass of :class:`WorkstateError` *before* anything is built, so the
item the caller holds is unchanged (records are immutable; a rejected operation returns
nothing).  Each error carries the HTTP status and API error ``type`` an adapter must send, a
message that says what was wrong and what would have been accepted, and structured fields for
programs: the item id, its state, the operation, the operations that were allowed.
:meth:`WorkstateError.to_json` renders the API's exact error envelope (spec §1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from workstate._text import bounded, safe_message

if TYPE_CHECKING:
    from workstate._table import Operation, State

__all__ = [
    "HEARTBEAT_PRECONDITION_FAILED",
    "IllegalMoveError",
    "InvalidInputError",
    "LeaseState",
    "NotFoundError",
    "PreconditionFailedError",
    "WorkstateError",
]

HEARTBEAT_PRECONDITION_FAILED = "heartbeat_precondition_failed"
"""The ``error_code`` of a 412 heartbeat rejection; the official SDK picks its exception by it."""


@attrs.frozen(kw_only=True)
class LeaseState:
    """A work item's lease as the server holds it: the ``current_state`` of a 412."""

    state: State
    """The item's state."""
    last_heartbeat: str | None
    """The stored ``last_heartbeat`` token, or None when there has been no heartbeat."""
    ttl_seconds: int
    """The TTL of the lease."""
    lease_extended: bool = False
    """Always False: a refused heartbeat does not extend the lease."""

    def to_json(self) -> dict[str, Any]:
        """The API shape (``BetaWorkLeaseState``)."""
        return {
            "state": self.state.value,
            "last_heartbeat": self.last_heartbeat,
            "lease_extended": self.lease_extended,
            "ttl_seconds": self.ttl_seconds,
        }


class WorkstateError(Exception):
    """The root of every error the library raises on purpose.

    ``status`` and ``error_type`` are what an HTTP adapter answers; ``message`` is for people;
    the other attributes are for programs and are None where they do not apply.
    """

    default_status: ClassVar[int] = 500
    default_error_type: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        work_id: str | None = None,
        state: State | None = None,
        operation: Operation | None = None,
        allowed: Sequence[Operation] = (),
        error_code: str | None = None,
    ) -> None:
        # Whatever a message quotes, it can always be rendered, and it stays short.
        message = safe_message(message)
        super().__init__(message)
        self._error_code = error_code
        self.message = message
        self.status: int = self.default_status if status is None else status
        self.error_type: str = self.default_error_type if error_type is None else error_type
        self.work_id = work_id
        self.state = state
        self.operation = operation
        self.allowed: tuple[Operation, ...] = tuple(allowed)

    @property
    def error_code(self) -> str | None:
        """A stable code naming the cause, where the API defines one."""
        return self._error_code

    def details(self) -> dict[str, Any] | None:
        """The API's ``error.details`` object, where the API defines one.

        An error with a code carries it as ``details.error_code``: the official SDK picks its
        exception class from (status, ``error.details.error_code``).
        """
        code = self.error_code
        return None if code is None else {"error_code": code}

    def to_json(self, *, request_id: str | None = None) -> dict[str, Any]:
        """The API's error envelope: ``{"type": "error", "error": {...}, "request_id": ...}``."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        details = self.details()
        if details is not None:
            error["details"] = details
        if self.error_code is not None:
            error["error_code"] = self.error_code
        return {"type": "error", "error": error, "request_id": request_id}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class IllegalMoveError(WorkstateError):
    """409: the operation is not legal in the item's state (spec §3), or not yet due."""

    default_status = 409
    default_error_type = "conflict_error"


class PreconditionFailedError(WorkstateError):
    """412: the heartbeat's ``expected_last_heartbeat`` does not match the server's lease."""

    default_status = 412
    default_error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        current_state: LeaseState,
        error_type: str | None = None,
        work_id: str | None = None,
        operation: Operation | None = None,
        expected_last_heartbeat: str | None = None,
    ) -> None:
        super().__init__(
            message,
            error_type=error_type,
            work_id=work_id,
            state=current_state.state,
            operation=operation,
        )
        self.current_state = current_state
        self.expected_last_heartbeat = expected_last_heartbeat

    @property
    def error_code(self) -> str:
        """Always ``heartbeat_precondition_failed``."""
        return HEARTBEAT_PRECONDITION_FAILED

    def details(self) -> dict[str, Any]:
        """``{"error_code": ..., "current_state": {...}}``."""
        return {"error_code": self.error_code, "current_state": self.current_state.to_json()}


class InvalidInputError(WorkstateError):
    """400: an input is malformed or out of range (spec §8).

    ``key`` names the input (a JSON key, a query parameter, an argument), ``expected`` says what
    would have been accepted and ``got`` holds what was received (a long string cut to its
    first 256 characters, so an error never holds a huge input).
    """

    default_status = 400
    default_error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        key: str,
        expected: str,
        got: object = None,
        work_id: str | None = None,
        state: State | None = None,
        operation: Operation | None = None,
        status: int | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            error_type=error_type,
            work_id=work_id,
            state=state,
            operation=operation,
            error_code=error_code,
        )
        self.key = safe_message(key, 200)
        self.expected = expected
        self.got = bounded(got)


class NotFoundError(WorkstateError):
    """404: no such work item or environment."""

    default_status = 404
    default_error_type = "not_found_error"
