"""Mock server throughput and latency for heartbeats, with 1, 10 and 100 concurrent clients.

Run by hand (a few seconds per level)::

    python benchmarks/server.py                 # server in a subprocess: python -m workstate serve
    python benchmarks/server.py --duration 5 --clients 1,10,100,200

The server runs in its own process (real clock, ``--log-level warning``) on a loopback
ephemeral port.  The load comes from one asyncio process with ``httpx2.AsyncClient``: each
client owns one active item and heartbeats it back to back, echoing the token, for
``--duration`` seconds.  Printed per level: requests per second, p50 and p99 latency, and the
server process's CPU time per request (from ``/proc``, Linux only): with every process on one
small machine the load generator, not the server, is often the bottleneck, and the CPU cost
per request says what the server would sustain with the load elsewhere.

Baselines, measured in the same run so that ratios compare like with like:

* ``GET /mock/clock`` at the same concurrency: the floor of the HTTP stack (uvicorn, Starlette,
  our middleware) with next to no work behind it; ``heartbeat/floor`` shows what the core and
  the adapter add per request;
* the same heartbeats straight on an in-process ``Environment`` (no HTTP): the core's share.

Durability (``--durable-clients``, default 1 and 10): the same floor and heartbeat runs against
a server with ``--state FILE`` (``--state-sync normal``, then ``full``), each against a fresh
in-memory server measured right before it; the ratio column is durable/in-memory, for the
request rate and for the server's CPU time per request.  On the real clock every request hands
the core a new time, so even the floor (``GET /mock/clock``) commits the clock: it is the
cost of the smallest commit.  Over HTTP on a busy machine these ratios are noisy, so the
same comparison is also made in process, without HTTP: heartbeats through ``MockServer``'s lock
(``_touch``, the core's call, the commit at release) on a real clock, memory against a state
file, µs per call as the lower quartile of chunks of 200.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import httpx2

from workstate import NO_HEARTBEAT
from workstate._environment import Environment
from workstate.server import MockServer

ENV = "env_bench"


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (None where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(*extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workstate",
            "serve",
            "--port",
            "0",
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+) ", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, match.group(1)


async def claim(http: httpx2.AsyncClient) -> tuple[str, str]:
    """Create, poll, ack and first-heartbeat one item; its id and token."""
    work_id = (await http.post(f"/mock/environments/{ENV}/work")).json()["id"]
    polled = (await http.get(f"/v1/environments/{ENV}/work/poll")).json()
    assert polled is not None
    assert polled["id"] == work_id
    await http.post(f"/v1/environments/{ENV}/work/{polled['id']}/ack")
    beat = await http.post(
        f"/v1/environments/{ENV}/work/{polled['id']}/heartbeat",
        params={"expected_last_heartbeat": NO_HEARTBEAT},
    )
    assert beat.status_code == 200, beat.text
    return polled["id"], beat.json()["last_heartbeat"]


async def run_level(
    url: str, clients: int, duration: float, kind: str
) -> tuple[int, float, list[float]]:
    """``clients`` concurrent loops of one request kind; (requests, seconds, latencies)."""
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(base_url=url, limits=limits, verify=False, timeout=30) as http:
        items = [await claim(http) for _ in range(clients)] if kind == "heartbeat" else []
        tokens = [token for _, token in items]  # the latest token of each item, across runs
        latencies: list[float] = []
        stop_at = 0.0

        async def loop(n: int) -> None:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                if kind == "heartbeat":
                    r = await http.post(
                        f"/v1/environments/{ENV}/work/{items[n][0]}/heartbeat",
                        params={"expected_last_heartbeat": tokens[n]},
                    )
                else:
                    r = await http.get("/mock/clock")
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    raise SystemExit(f"unexpected answer {r.status_code}: {r.text}")
                if kind == "heartbeat":
                    tokens[n] = r.json()["last_heartbeat"]

        # A short warm-up opens the connections, then the measured run.
        stop_at = time.perf_counter() + 0.3
        await asyncio.gather(*(loop(n) for n in range(clients)))
        latencies.clear()
        begin = time.perf_counter()
        stop_at = begin + duration
        await asyncio.gather(*(loop(n) for n in range(clients)))
        return len(latencies), time.perf_counter() - begin, latencies


def in_process_heartbeats(duration: float) -> float:
    """Heartbeats per second straight on an Environment (the core's share of the cost)."""
    env = Environment("env_core")
    t = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    step = dt.timedelta(microseconds=7)
    env.create(t, work_id="work_core")
    env.poll(t)
    env.ack("work_core", t)
    token = env.heartbeat("work_core", t, expected_last_heartbeat=NO_HEARTBEAT).last_heartbeat
    count = 0
    begin = time.perf_counter()
    while time.perf_counter() - begin < duration:
        for _ in range(1000):
            t += step
            token = env.heartbeat("work_core", t, expected_last_heartbeat=token).last_heartbeat
        count += 1000
    return count / (time.perf_counter() - begin)


def measure(
    extra: tuple[str, ...], clients: int, duration: float, kind: str
) -> tuple[float, float]:
    """(requests per second, server CPU µs per request) of one run on a fresh server."""
    proc, url = start_server(*extra)
    try:
        before = cpu_seconds(proc.pid)
        count, seconds, _ = asyncio.run(run_level(url, clients, duration, kind))
        after = cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    cost = float("nan") if before is None or after is None else (after - before) / count * 1e6
    return count / seconds, cost


def durability(levels: list[int], duration: float) -> None:
    """The cost of ``--state FILE`` against the in-memory mode, measured side by side."""
    print(f"\ndurability: --state FILE against the in-memory mode ({duration:g} s per run)")
    print(
        f"{'clients':>7} {'kind':>10} {'mode':>12} {'req/s':>8} {'ratio':>6} "
        f"{'server CPU µs/req':>18} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for clients in levels:
            for kind in ("floor", "heartbeat"):
                for sync in ("normal", "full"):
                    path = os.path.join(tmp, f"state-{clients}-{kind}-{sync}.db")
                    base_rate, base_cost = measure((), clients, duration, kind)
                    extra = ("--state", path, "--state-sync", sync)
                    rate, cost = measure(extra, clients, duration, kind)
                    for mode, r, c in (("memory", base_rate, base_cost), (sync, rate, cost)):
                        print(
                            f"{clients:>7} {kind:>10} {mode:>12} {r:>8.0f} {r / base_rate:>6.2f} "
                            f"{c:>18.0f} {c / base_cost:>6.2f}"
                        )


def locked_heartbeats(server: MockServer, duration: float) -> float:
    """µs per heartbeat through the server's lock and store, no HTTP (lower quartile)."""
    env_id = "env_core"
    made = server.create_work(env_id)
    with server.lock:
        env, now = server._touch(env_id)
        env.poll(now)
        env.ack(made.id, now)
    token = NO_HEARTBEAT
    chunks: list[float] = []
    begin = time.perf_counter()
    while time.perf_counter() - begin < duration or len(chunks) < 5:
        start = time.perf_counter()
        for _ in range(200):
            with server.lock:
                env, now = server._touch(env_id)
                token = env.heartbeat(made.id, now, expected_last_heartbeat=token).last_heartbeat
        chunks.append((time.perf_counter() - start) / 200 * 1e6)
    return quantile(chunks, 0.25)


def in_process_durability(duration: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        costs = {"memory": locked_heartbeats(MockServer(), duration)}
        for sync in ("normal", "full"):
            server = MockServer(state=os.path.join(tmp, f"{sync}.db"), state_sync=sync)
            costs[sync] = locked_heartbeats(server, duration)
            server.close()
        costs["memory again"] = locked_heartbeats(MockServer(), duration)
    base = min(costs["memory"], costs["memory again"])
    print("\nin process (no HTTP): one heartbeat under MockServer's lock, with its commit")
    for mode, cost in costs.items():
        print(f"{mode:>14} {cost:>8.1f} µs/call {cost / base:>6.2f}× memory")


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per level [3]")
    parser.add_argument("--clients", default="1,10,100", help="concurrency levels [1,10,100]")
    parser.add_argument(
        "--durable-clients",
        default="1,10",
        help="concurrency levels of the durability comparison; 'none' to skip it [1,10]",
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    proc, url = start_server()
    try:
        print(f"server: {url} (separate process); load: one asyncio process, httpx2")
        print(
            f"{'clients':>7} {'kind':>10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'ratio':>6} {'server CPU µs/req':>18}"
        )
        for clients in levels:
            floor_rate = None
            for kind in ("floor", "heartbeat"):
                before = cpu_seconds(proc.pid)
                count, seconds, lat = asyncio.run(run_level(url, clients, args.duration, kind))
                after = cpu_seconds(proc.pid)
                rate = count / seconds
                floor_rate = floor_rate or rate
                # The CPU time includes the warm-up and set-up requests: a slight overestimate.
                cost = (
                    "n/a"
                    if before is None or after is None
                    else f"{(after - before) / count * 1e6:.0f}"
                )
                print(
                    f"{clients:>7} {kind:>10} {rate:>8.0f} {quantile(lat, 0.5) * 1000:>8.2f} "
                    f"{quantile(lat, 0.99) * 1000:>8.2f} {rate / floor_rate:>6.2f} {cost:>18}"
                )
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    core = in_process_heartbeats(min(args.duration, 1.0))
    print(f"in-process Environment.heartbeat (no HTTP): {core:,.0f}/s")
    if args.durable_clients != "none":
        durability([int(c) for c in args.durable_clients.split(",")], args.duration)
        in_process_durability(min(args.duration, 1.0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
