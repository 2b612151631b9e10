"""``workstate.testing``: test *your* server or worker against workstate's model.

Three tools, all following a :class:`~workstate.Profile`:

- **Strategies** (Hypothesis): :func:`works` (items in any reachable state, built by legal
  operations), :func:`calls` (legal and illegal operations on an item), :func:`runs`
  (operation sequences), :func:`traces` (JSON Lines records the core produces),
  :func:`timestamps`, :func:`bad_work_json` (each kind of malformed work object, with the key
  the parser must blame).  Importing this package registers :func:`works` for
  ``st.from_type(Work)``.
- **The oracle** :class:`WorkOracle`: a rule-based state machine you subclass with an adapter
  (:class:`WorkAdapter`) to your system; it reports the first divergence from the model with
  the whole history.  :class:`CoreAdapter` is the core itself behind that interface.
- **The trace checker** :func:`check_trace` / :class:`TraceChecker` (also
  ``python -m workstate check FILE``): can some sequence of legal operations explain a
  recorded trace?  It needs no Hypothesis and lives in the core package; it is re-exported
  here for convenience.
- **Concurrent histories** for the linearizability checker (:func:`workstate.check_history`,
  ``python -m workstate check --history FILE``): :class:`HistoryRecorder` (an ``httpx2``
  transport for the official SDK that records what a client saw), :func:`model_histories`
  (legal histories drawn from the model, calls overlapping in real time),
  :func:`answer_mutations` (each answer turned into one the model never gives), and
  :func:`client_programs` / :func:`run_programs` (concurrent clients against any server).

This package needs Hypothesis: ``pip install 'sandbox-workstate[testing]'``.
"""

from __future__ import annotations

try:
    import hypothesis as _hypothesis
except ImportError as exc:
    raise ImportError(
        "workstate.testing needs Hypothesis, which the 'testing' extra installs: "
        "pip install 'sandbox-workstate[testing]'",
        name=__name__,
    ) from exc

from hypothesis import strategies as _st

from workstate._trace import (
    TraceChecker,
    TraceReport,
    TraceViolation,
    check_trace,
    heartbeat_record,
)
from workstate._work import Work as _Work
from workstate.testing._histories import (
    ProgramStep,
    answer_mutations,
    client_programs,
    model_histories,
    run_programs,
)
from workstate.testing._machine import CoreAdapter, Reply, WorkAdapter, WorkOracle
from workstate.testing._recorder import HistoryRecorder
from workstate.testing._strategies import (
    BAD_WIRE_KINDS,
    BadInput,
    Call,
    Run,
    Step,
    bad_work_json,
    calls,
    metadata_patches,
    profiles,
    runs,
    timestamps,
    traces,
    works,
)

__all__ = [
    "BAD_WIRE_KINDS",
    "BadInput",
    "Call",
    "CoreAdapter",
    "HistoryRecorder",
    "ProgramStep",
    "Reply",
    "Run",
    "Step",
    "TraceChecker",
    "TraceReport",
    "TraceViolation",
    "WorkAdapter",
    "WorkOracle",
    "answer_mutations",
    "bad_work_json",
    "calls",
    "check_trace",
    "client_programs",
    "heartbeat_record",
    "metadata_patches",
    "model_histories",
    "profiles",
    "run_programs",
    "runs",
    "timestamps",
    "traces",
    "works",
]

del _hypothesis
_st.register_type_strategy(_Work, works())
