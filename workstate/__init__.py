"""workstate: the lifecycle of a sandbox work item as a pure, I/O-free state machine.

The public names live here; the logic lives in the private modules named in each docstring.

The checkers (the invariant checker, the trace checker, the history reader and
linearizability checker, the HTML timeline) are loaded on first use: their names are in
``__all__`` and ``dir()`` like every other, and reading one (``workstate.check_trace``,
``from workstate import check_history``) imports its module then.  A plain ``import
workstate`` for the model alone does not pay for them (see "Start-up" in ``docs/performance.md``).
"""

from typing import TYPE_CHECKING

from workstate._engine import allowed_operations, mermaid
from workstate._environment import Environment, QueueStats, WorkPage
from workstate._errors import (
    HEARTBEAT_PRECONDITION_FAILED,
    IllegalMoveError,
    InvalidInputError,
    LeaseState,
    NotFoundError,
    PreconditionFailedError,
    WorkstateError,
)
from workstate._profile import (
    ANTHROPIC,
    PROFILES,
    QODER,
    AckLease,
    Precision,
    Profile,
    StopResponse,
    load_profile,
    profile_from_mapping,
    profile_to_mapping,
)
from workstate._records import HeartbeatResult, WorkData
from workstate._table import MOVES, LeaseEffect, Move, Operation, Rule, Stamp, State
from workstate._time import (
    ManualClock,
    SystemClock,
    ensure_utc,
    format_time,
    parse_time,
    to_pendulum,
)
from workstate._wire import (
    WORK_KEYS,
    error_from_json,
    heartbeat_from_json,
    heartbeat_to_json,
    lease_state_from_json,
    work_data_from_json,
    work_from_json,
    work_to_json,
)
from workstate._work import NO_HEARTBEAT, Work, WorkBody

if TYPE_CHECKING:  # the names below are loaded on first use, by __getattr__
    from workstate._history import (
        History,
        HistoryCall,
        HistoryFormatError,
        history_from_journal,
        read_history,
    )
    from workstate._invariants import Violation, invariant_violations
    from workstate._linearize import HistoryProblem, HistoryReport, check_history
    from workstate._timeline import render_timeline
    from workstate._trace import (
        TraceChecker,
        TraceReport,
        TraceViolation,
        check_trace,
        heartbeat_record,
    )

# Each name loaded on first use, and the module that holds it.
_LAZY = {
    **dict.fromkeys(
        ("History", "HistoryCall", "HistoryFormatError", "history_from_journal", "read_history"),
        "workstate._history",
    ),
    # Only restoring or reading a record checks its invariants; serve's start-up does neither.
    **dict.fromkeys(("Violation", "invariant_violations"), "workstate._invariants"),
    **dict.fromkeys(("HistoryProblem", "HistoryReport", "check_history"), "workstate._linearize"),
    "render_timeline": "workstate._timeline",
    **dict.fromkeys(
        ("TraceChecker", "TraceReport", "TraceViolation", "check_trace", "heartbeat_record"),
        "workstate._trace",
    ),
}


def __getattr__(name: str) -> object:
    """Load a checker's name on first use (PEP 562); later reads find it in the module."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workstate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the ones not loaded yet included."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ANTHROPIC",
    "HEARTBEAT_PRECONDITION_FAILED",
    "MOVES",
    "NO_HEARTBEAT",
    "PROFILES",
    "QODER",
    "WORK_KEYS",
    "AckLease",
    "Environment",
    "HeartbeatResult",
    "History",
    "HistoryCall",
    "HistoryFormatError",
    "HistoryProblem",
    "HistoryReport",
    "IllegalMoveError",
    "InvalidInputError",
    "LeaseEffect",
    "LeaseState",
    "ManualClock",
    "Move",
    "NotFoundError",
    "Operation",
    "Precision",
    "PreconditionFailedError",
    "Profile",
    "QueueStats",
    "Rule",
    "Stamp",
    "State",
    "StopResponse",
    "SystemClock",
    "TraceChecker",
    "TraceReport",
    "TraceViolation",
    "Violation",
    "Work",
    "WorkBody",
    "WorkData",
    "WorkPage",
    "WorkstateError",
    "allowed_operations",
    "check_history",
    "check_trace",
    "ensure_utc",
    "error_from_json",
    "format_time",
    "heartbeat_from_json",
    "heartbeat_record",
    "heartbeat_to_json",
    "history_from_journal",
    "invariant_violations",
    "lease_state_from_json",
    "load_profile",
    "mermaid",
    "parse_time",
    "profile_from_mapping",
    "profile_to_mapping",
    "read_history",
    "render_timeline",
    "to_pendulum",
    "work_data_from_json",
    "work_from_json",
    "work_to_json",
]

__version__ = "0.1.0"
