"""A bounded concurrent load with faults, over loopback, checked from the journal.

A few worker threads poll, ack, heartbeat and stop items through a real uvicorn server (real
clock, one-second leases) while seeded fault rules answer 503s, drop connections before and
after applying calls and delay answers.  Workers retry what failed and abandon items now and
then; the run ends by itself once the server holds every item ``stopped``, or after
``DEADLINE`` seconds.

Afterwards the journal is the witness: one entry per request sent, exactly one applied move to
``stopped`` per item, and its per-item records explained by the trace checker, in complete mode.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import attrs
import httpx2

from workstate import ANTHROPIC, NO_HEARTBEAT, AckLease, check_trace
from workstate._trace import journal_trace_records
from workstate.server import MockServer, serve_in_thread

ITEMS = 60
WORKERS = 6
DEADLINE = 45.0
ENV = "env_faulty"
# An ack starts a (1 s) lease, as before the ack lease became a knob: a worker that vanishes
# between its ack and its first heartbeat must see its item come back, which is the point here.
PROFILE = attrs.evolve(
    ANTHROPIC,
    name="short-leases",
    min_ttl_seconds=1,
    default_ttl_seconds=1,
    ack_lease=AckLease.DEFAULT_TTL,
)
FAULTS = [
    {"match": {"operation": "poll"}, "probability": 0.05, "effect": {"drop": "before"}},
    {"match": {"operation": "ack"}, "probability": 0.1, "effect": {"drop": "after"}},
    {"match": {"operation": "heartbeat"}, "probability": 0.1, "effect": {"status": 503}},
    {"match": {"operation": "heartbeat"}, "probability": 0.05, "effect": {"drop": "after"}},
    {"match": {"operation": "stop"}, "probability": 0.1, "effect": {"status": 500}},
    {"match": {"operation": "stop"}, "probability": 0.1, "effect": {"drop": "after"}},
    {"match": {"operation": "get"}, "probability": 0.2, "effect": {"delay_ms": 20}},
]


def test_faults_under_load_leave_every_item_stopped_once_and_a_clean_journal() -> None:
    server = MockServer(profile=PROFILE, seed=5)
    for rule in FAULTS:
        server.harness.add_fault(rule)
    sent = 0
    sent_lock = threading.Lock()
    done = threading.Event()

    def worker(number: int, base: str) -> None:
        nonlocal sent
        rng = random.Random(number)
        path = f"/v1/environments/{ENV}/work"
        with httpx2.Client(base_url=base, timeout=10) as http:

            def call(method: str, url: str, **kw: Any) -> httpx2.Response | None:
                nonlocal sent
                with sent_lock:
                    sent += 1
                try:
                    return http.request(method, url, **kw)
                except httpx2.TransportError:
                    return None  # a dropped connection: the worker decides what next

            while not done.is_set():
                r = call(
                    "GET", f"{path}/poll", params={"block_ms": 50, "reclaim_older_than_ms": 200}
                )
                if r is None or r.status_code != 200 or r.json() is None:
                    continue
                work_id = r.json()["id"]
                r = call("POST", f"{path}/{work_id}/ack")
                if r is None or r.status_code != 200:
                    continue  # redelivered after the window, or its lease lapses
                token = NO_HEARTBEAT
                for _ in range(rng.randint(1, 3)):
                    r = call(
                        "POST",
                        f"{path}/{work_id}/heartbeat",
                        params={"expected_last_heartbeat": token, "desired_ttl_seconds": 1},
                    )
                    if r is not None and r.status_code == 200:
                        token = r.json()["last_heartbeat"]
                if rng.random() < 0.05:
                    continue  # vanished: the lease lapses and the item comes back
                call("GET", f"{path}/{work_id}")
                for _ in range(3):  # a stop that failed is retried; 409: it is stopped already
                    r = call("POST", f"{path}/{work_id}/stop", json={"force": True})
                    if r is not None and r.status_code in (200, 204, 409):  # (204: anthropic)
                        break

    def all_stopped() -> bool:
        items = server.harness.inspect(ENV)["data"]
        return len(items) == ITEMS and all(w["state"] == "stopped" for w in items)

    with serve_in_thread(server) as base:
        with httpx2.Client(base_url=base) as http:
            for _ in range(ITEMS):
                assert http.post(f"/mock/environments/{ENV}/work").status_code == 200
        threads = [threading.Thread(target=worker, args=(n, base)) for n in range(WORKERS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and not all_stopped():
            time.sleep(0.05)
        done.set()
        for t in threads:
            t.join(15)
        assert not any(t.is_alive() for t in threads)

    assert all_stopped()
    entries = server.harness.entries()
    assert len(entries) == ITEMS + sent  # one entry per request: creations and the workers'
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    fired = {rule["id"]: rule["fired"] for rule in server.harness.fault_rules()}
    assert all(fired.values()), fired  # every kind of fault happened
    stops = [e for e in entries if e["move"] is not None and e["move"]["to"] == "stopped"]
    assert sorted(e["work_id"] for e in stops) == sorted({e["work_id"] for e in stops})
    assert len(stops) == ITEMS  # every item stopped exactly once
    report = check_trace(journal_trace_records(entries), profile=PROFILE, complete=True)
    assert report.ok, report.format()
    assert len(report.work_ids) == ITEMS
