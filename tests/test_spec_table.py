"""Every (state, operation) cell of spec §3-§5 and §7, written out by hand from the prose.

The exhaustive tests in ``test_table.py`` take their expectations from ``MOVES`` and so cannot
catch a wrong row.  The literals below were written from ``work-lifecycle.md`` alone (the §3
table, the §4 heartbeat rules, the §5 expiry rules and the §7 profile table) and are checked
against the public operations: the state reached, the lifecycle stamps set and cleared, what
happens to the lease, or the error's status and type.  A cell is one of:

* ``(target, sets, clears, lease)``: ``sets``/``clears`` name stamps (``ack``, ``started``,
  ``latest``, ``stop_req``, ``stopped``); ``lease`` is ``keep``, ``start`` (the ack's lease,
  by ``ack_lease``), ``extend`` (the heartbeat time plus the default TTL), ``end`` (no deadline)
  or ``release`` (no deadline, no token, no TTL);
* ``"same"``: 200 and the item exactly as it was;
* ``(status, error type)``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from helpers import at, in_state

from workstate import ANTHROPIC, NO_HEARTBEAT, QODER, Profile, State, Work, WorkstateError

WHEN = 1000.0  # past every lease deadline the builders leave
STAMPS = {
    "ack": "acknowledged_at",
    "started": "started_at",
    "latest": "latest_heartbeat_at",
    "stop_req": "stop_requested_at",
    "stopped": "stopped_at",
}
C409 = (409, "conflict_error")
ATTEMPT = ("ack", "started", "latest")

ANTHROPIC_CELLS: dict[tuple[str, str], Any] = {
    ("queued", "deliver"): ("queued", (), (), "keep"),
    ("queued", "ack"): ("starting", ("ack",), (), "start"),
    ("queued", "heartbeat"): C409,
    ("queued", "stop"): ("stopped", ("stopped",), (), "end"),
    ("queued", "force_stop"): ("stopped", ("stopped",), (), "end"),
    ("queued", "expire"): C409,
    ("queued", "metadata"): ("queued", (), (), "keep"),
    ("starting", "deliver"): C409,
    ("starting", "ack"): "same",
    ("starting", "heartbeat"): ("active", ("started", "latest"), (), "extend"),
    ("starting", "stop"): ("stopping", ("stop_req",), (), "keep"),
    ("starting", "force_stop"): ("stopped", ("stopped",), (), "end"),
    ("starting", "expire"): C409,  # anthropic: the ack started no lease, nothing can lapse
    ("starting", "metadata"): ("starting", (), (), "keep"),
    ("active", "deliver"): C409,
    ("active", "ack"): "same",
    ("active", "heartbeat"): ("active", ("latest",), (), "extend"),
    ("active", "stop"): ("stopping", ("stop_req",), (), "keep"),
    ("active", "force_stop"): ("stopped", ("stopped",), (), "end"),
    ("active", "expire"): ("queued", (), ATTEMPT, "release"),
    ("active", "metadata"): ("active", (), (), "keep"),
    ("stopping", "deliver"): C409,
    ("stopping", "ack"): C409,
    ("stopping", "heartbeat"): "same",
    ("stopping", "stop"): ("stopped", ("stopped",), (), "end"),
    ("stopping", "force_stop"): ("stopped", ("stopped",), (), "end"),
    ("stopping", "expire"): ("stopped", ("stopped",), (), "end"),
    ("stopping", "metadata"): ("stopping", (), (), "keep"),
    ("stopped", "deliver"): C409,
    ("stopped", "ack"): C409,
    ("stopped", "heartbeat"): "same",
    ("stopped", "stop"): C409,
    ("stopped", "force_stop"): C409,
    ("stopped", "expire"): C409,
    ("stopped", "metadata"): ("stopped", (), (), "keep"),
}

Q409 = (409, "invalid_request_error")
QODER_CELLS: dict[tuple[str, str], Any] = {
    **{cell: (Q409 if value == C409 else value) for cell, value in ANTHROPIC_CELLS.items()},
    ("starting", "expire"): ("queued", (), ATTEMPT, "release"),  # the ack's 60 s lapsed
    ("stopped", "heartbeat"): Q409,
    ("stopped", "stop"): "same",
    ("stopped", "force_stop"): "same",
}


def perform(work: Work, op: str, now: dt.datetime) -> Work:
    if op == "deliver":
        return work.deliver(now, worker_id="w")
    if op == "ack":
        return work.ack(now)
    if op == "heartbeat":  # the precondition holds: the token the server holds
        return work.heartbeat(now, expected_last_heartbeat=work.last_heartbeat or NO_HEARTBEAT)[0]
    if op == "stop":
        return work.stop(now)
    if op == "force_stop":
        return work.stop(now, force=True)
    if op == "expire":
        return work.expire(now)
    assert op == "metadata"
    return work.update_metadata(now, {"k": "v"})


CASES = [
    pytest.param(profile, state, op, id=f"{profile.name}-{state}-{op}")
    for profile, cells in ((ANTHROPIC, ANTHROPIC_CELLS), (QODER, QODER_CELLS))
    for (state, op) in cells
]


def test_the_literal_covers_every_cell() -> None:
    ops = {"deliver", "ack", "heartbeat", "stop", "force_stop", "expire", "metadata"}
    for cells in (ANTHROPIC_CELLS, QODER_CELLS):
        assert set(cells) == {(s.value, op) for s in State for op in ops}


@pytest.mark.parametrize(("profile", "state", "op"), CASES)
def test_each_cell_as_the_spec_says(profile: Profile, state: str, op: str) -> None:
    cells = ANTHROPIC_CELLS if profile is ANTHROPIC else QODER_CELLS
    expected = cells[(state, op)]
    before = in_state(State(state), profile)
    now = at(WHEN)
    if isinstance(expected, tuple) and isinstance(expected[0], int):
        with pytest.raises(WorkstateError) as info:
            perform(before, op, now)
        assert (info.value.status, info.value.error_type) == expected
        return
    after = perform(before, op, now)
    if expected == "same":
        assert after is before
        return
    target, sets, clears, lease = expected
    assert after.state.value == target
    for short, attr in STAMPS.items():
        if short in sets:
            assert getattr(after, attr) == now, attr
        elif short in clears:
            assert getattr(after, attr) is None, attr
        else:
            assert getattr(after, attr) == getattr(before, attr), attr
    if lease == "keep":
        assert after.lease_expires_at == before.lease_expires_at
        assert after.last_heartbeat == before.last_heartbeat
    elif lease == "start":
        seconds = {"anthropic": None, "qoder": 60}[profile.name]
        assert after.lease_expires_at == (None if seconds is None else at(WHEN + seconds))
        assert after.last_heartbeat is None
        assert after.attempt == before.attempt + 1
    elif lease == "extend":
        ttl = {"anthropic": 120, "qoder": 60}[profile.name]
        assert after.lease_expires_at == at(WHEN + ttl)
        assert after.last_heartbeat == "1970-01-01T00:00:00.000000Z".replace(
            "1970-01-01T00:00:00", now.strftime("%Y-%m-%dT%H:%M:%S")
        )
    elif lease == "end":
        assert after.lease_expires_at is None
    else:
        assert lease == "release"
        assert (after.lease_expires_at, after.last_heartbeat, after.ttl_seconds) == (
            None,
            None,
            None,
        )
