"""The server applies a mass expiry in slices, one per request, and no answer sees a lapsed lease.

Each request (and each move of the manual clock) applies at most ``EXPIRY_SLICE`` lapsed leases
before its own call; what is left is counted as expired by every answer all the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from helpers import T0, served_http

from workstate import NO_HEARTBEAT, ManualClock
from workstate.server import MockServer
from workstate.server._app import EXPIRY_SLICE

ITEMS = 5 * EXPIRY_SLICE


@pytest.fixture
def served() -> Iterator[tuple[MockServer, httpx2.Client, list[str]]]:
    server = MockServer(clock=ManualClock(T0))
    env = server.environment("env_mass")
    claimed = []
    with server.lock:  # (straight on the core: quicker than 3 requests per item)
        for _ in range(ITEMS):
            work = env.create(T0)
            env.poll(T0)
            env.ack(work.id, T0)
            env.heartbeat(work.id, T0, expected_last_heartbeat=NO_HEARTBEAT)  # 120 s lease
            claimed.append(work.id)
    with served_http(server) as http:
        yield server, http, claimed


def test_a_mass_expiry_is_applied_a_slice_per_request(
    served: tuple[MockServer, httpx2.Client, list[str]],
) -> None:
    server, http, claimed = served
    env = server.environment("env_mass")
    now = server.advance(121)  # every lease lapses; the move applies one slice
    with server.lock:
        assert env.expiries_due(now) == ITEMS - EXPIRY_SLICE
    stats = http.get("/v1/environments/env_mass/work/stats").json()
    assert (stats["depth"], stats["pending"]) == (ITEMS, 0)  # all of them, applied or not
    with server.lock:
        left = env.expiries_due(now)
    assert ITEMS - 2 * EXPIRY_SLICE - 8 <= left <= ITEMS - 2 * EXPIRY_SLICE
    # The last item's lease is not applied yet, and a read sees it expired all the same.
    got = http.get(f"/v1/environments/env_mass/work/{claimed[-1]}").json()
    assert (got["state"], got["acknowledged_at"]) == ("queued", None)
    requests = 2
    while True:
        with server.lock:
            if not env.expiries_due(now):
                break
        http.get("/v1/environments/env_mass/work/stats")
        requests += 1
    assert requests <= ITEMS // EXPIRY_SLICE
    polled = http.get("/v1/environments/env_mass/work/poll").json()
    assert polled["id"] == claimed[0]  # the oldest by creation goes out first
