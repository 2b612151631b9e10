"""A bounded load test: many concurrent workers over real HTTP on loopback.

Worker threads poll, ack, heartbeat and stop a few hundred items through a real uvicorn server
(real clock), misbehaving on purpose now and then: some abandon an item after the poll (it is
redelivered after the reclaim window), some vanish while holding a lease (it expires after its
short TTL and the item goes back to the queue), some stop at once with ``force``.  A meddler
thread reads, lists and updates metadata all along.  The run stops by itself when every item is
stopped, or after ``DEADLINE`` seconds.

Afterwards: every item was stopped exactly once (exactly one stop answered ``stopped``), the
server holds every item ``stopped``, every record keeps its invariants, the queue is empty, and
no response was one a correct server would not give.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import attrs
import httpx2

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    AckLease,
    State,
    StopResponse,
    invariant_violations,
)
from workstate.server import MockServer, serve_in_thread

ITEMS = 240
WORKERS = 16
DEADLINE = 120.0  # a safety net: under coverage on a shared machine a run can take a minute
ENV = "env_load"
# Short leases, so that leases lost by vanished workers expire within the run.
# Stops answer with the item here (the load test reads the state a stop reached), and an ack
# starts a lease, so workers that vanish after the ack leave items that come back.
PROFILE = attrs.evolve(
    ANTHROPIC,
    name="short-leases",
    min_ttl_seconds=1,
    default_ttl_seconds=1,
    stop_response=StopResponse.ITEM,
    ack_lease=AckLease.DEFAULT_TTL,
)


def test_many_workers_stop_every_item_exactly_once() -> None:
    server = MockServer(profile=PROFILE)
    completed: list[str] = []  # ids whose stop answered "stopped", by whoever sent it
    unexpected: list[str] = []
    statuses: Counter[str] = Counter()
    finished = threading.Event()
    lock = threading.Lock()

    def note(kind: str) -> None:
        with lock:
            statuses[kind] += 1

    def worker(number: int, base: str) -> None:
        rng = random.Random(number)
        name = f"worker-{number}"
        with httpx2.Client(base_url=base, timeout=10, verify=False) as http:
            path = f"/v1/environments/{ENV}/work"

            def call(method: str, url: str, ok: tuple[int, ...], **kw: Any) -> httpx2.Response:
                r = http.request(method, url, **kw)
                note(f"{url.rsplit('/', 1)[-1]} {r.status_code}")
                if r.status_code not in ok:
                    unexpected.append(f"{method} {url} -> {r.status_code} {r.text}")
                return r

            while not finished.is_set():
                r = call(
                    "GET",
                    f"{path}/poll",
                    (200,),
                    params={"block_ms": 100, "reclaim_older_than_ms": 150},
                    headers={"Anthropic-Worker-ID": name},
                )
                item = r.json()
                if item is None:
                    continue
                work_id = item["id"]
                if rng.random() < 0.08:
                    continue  # abandoned before the ack: redelivered after the window
                # 409: the lease expired and another worker stopped it meanwhile.
                r = call("POST", f"{path}/{work_id}/ack", (200, 409))
                if r.status_code != 200:
                    continue
                # 412: another worker that acked the same delivery beat first (lease lost).
                r = call(
                    "POST",
                    f"{path}/{work_id}/heartbeat",
                    (200, 412),
                    params={"expected_last_heartbeat": NO_HEARTBEAT, "desired_ttl_seconds": 1},
                )
                if r.status_code != 200 or not r.json()["lease_extended"]:
                    continue
                token = r.json()["last_heartbeat"]
                if rng.random() < 0.05:
                    continue  # vanished holding the lease: it expires, the item is re-queued
                lost = False
                for _ in range(rng.randint(0, 3)):
                    r = call(
                        "POST",
                        f"{path}/{work_id}/heartbeat",
                        (200, 412),
                        params={"expected_last_heartbeat": token},
                    )
                    if r.status_code != 200 or not r.json()["lease_extended"]:
                        lost = True
                        break
                    token = r.json()["last_heartbeat"]
                if lost:
                    continue
                if rng.random() < 0.3:
                    r = call("POST", f"{path}/{work_id}/stop", (200, 409), json={"force": True})
                else:
                    r = call("POST", f"{path}/{work_id}/stop", (200, 409))
                    if r.status_code == 200 and r.json()["state"] == "stopping":
                        beat = call(
                            "POST",
                            f"{path}/{work_id}/heartbeat",
                            (200,),
                            params={"expected_last_heartbeat": token},
                        )
                        if beat.json()["state"] != "stopping":
                            unexpected.append(f"heartbeat while stopping: {beat.text}")
                        r = call("POST", f"{path}/{work_id}/stop", (200, 409))
                if r.status_code == 200 and r.json()["state"] == "stopped":
                    with lock:
                        completed.append(work_id)
                        if len(completed) >= ITEMS:
                            finished.set()

    def meddler(base: str, ids: list[str]) -> None:
        rng = random.Random(-1)
        with httpx2.Client(base_url=base, timeout=10, verify=False) as http:
            path = f"/v1/environments/{ENV}/work"
            while not finished.is_set():
                work_id = rng.choice(ids)
                for r in (
                    http.get(f"{path}/{work_id}"),
                    http.post(f"{path}/{work_id}", json={"metadata": {"seen": str(rng.random())}}),
                    http.get(path, params={"limit": 50}),
                    http.get(f"{path}/stats"),
                ):
                    if r.status_code != 200:
                        unexpected.append(f"meddler: {r.status_code} {r.text}")
                time.sleep(0.005)

    start = time.monotonic()
    with serve_in_thread(server) as base:
        with httpx2.Client(base_url=base, verify=False) as http:
            ids = [
                http.post(
                    f"/mock/environments/{ENV}/work", json={"metadata": {"n": str(n)}}
                ).json()["id"]
                for n in range(ITEMS)
            ]
        threads = [threading.Thread(target=worker, args=(n, base)) for n in range(WORKERS)]
        threads.append(threading.Thread(target=meddler, args=(base, ids)))
        for t in threads:
            t.start()
        finished.wait(DEADLINE)
        finished.set()
        for t in threads:
            t.join(15)
        assert not any(t.is_alive() for t in threads)
    elapsed = time.monotonic() - start

    assert unexpected == []
    assert sorted(completed) == sorted(ids), f"{len(completed)}/{ITEMS} in {elapsed:.1f}s"
    assert len(set(completed)) == len(completed)  # exactly once

    env = server.environment(ENV)
    now = server.now()
    records = env.list(now, limit=1000).data
    assert [w.id for w in records] == ids
    assert all(w.state is State.STOPPED for w in records)
    assert {w.id: invariant_violations(w) for w in records if invariant_violations(w)} == {}
    stats = env.stats(now)
    assert (stats.depth, stats.pending, stats.oldest_queued_at) == (0, 0, None)
    assert statuses["poll 200"] >= ITEMS
    # The misbehaviour really happened: deliveries were abandoned and leases were lost.
    assert sum(w.attempt for w in records) > ITEMS
