"""How the cost of each Environment call grows with the number of items it holds.

Run by hand (not in CI)::

    python benchmarks/environment.py           # 1,000 / 100,000 / 1,000,000 items (~2-3 min)
    python benchmarks/environment.py --quick   # 1,000 / 10,000 / 100,000 items

For each size the script builds one environment holding that many items (half ``queued``, a
quarter leased with a 600 s TTL, a quarter ``stopped``).  Then, in five rounds that take the
sizes in turn, it times a few thousand calls of each kind in chunks of 100 and prints the lower
quartile of the chunks' µs per call, which stays steady on a machine shared with other work.
The last column is the ratio of the slowest size to the fastest: the target is at most 2× for
every call, since no call may cost time linear in the items held.  ``expire_due`` is reported
per expired item (sweeps that each expire 100 leases).  A bare dict lookup of the same random
ids is shown as the floor that memory latency sets.  Memory per held item is measured with
``tracemalloc`` while building the middle size, and from the resident size for the largest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import TypeVar

from workstate import NO_HEARTBEAT
from workstate._environment import Environment

T0 = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)
A = TypeVar("A")
CALLS = (
    "create",
    "get",
    "stats",
    "list",
    "poll",
    "ack",
    "heartbeat",
    "stop",
    "expire_due/item",
    "dict lookup",
)
FLOOR_NOTE = """\
"dict lookup" is not an Environment call: it is a bare dict lookup of the same random ids that
"get" reads, shown as the floor.  Past the CPU caches every random access pays memory latency,
so a cheap call's time grows with the working set even though no call does more work."""


def seconds(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def build(n: int) -> Environment:
    """An environment of ``n`` items: 1/2 queued, 1/4 leased (TTL 600 s), 1/4 stopped."""
    env = Environment("env_bench")
    now = T0
    for _ in range(n):
        env.create(now)
    for i in range(n // 4):
        work = env.poll(now, worker_id=f"builder{i % 50}")
        assert work is not None
        env.ack(work.id, now)
        env.heartbeat(work.id, now, expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=600)
    for _ in range(n // 4):
        work = env.poll(now)
        assert work is not None
        env.stop(work.id, now, force=True)
    return env


CHUNK = 100


def timed(samples: list[float], call: Callable[[A], object], args: Sequence[A]) -> None:
    """Call ``call(arg)`` for every arg, timing chunks of ``CHUNK`` calls into ``samples``.

    Each sample is µs per call over one chunk.  Reporting a low quantile of many small chunks
    keeps the numbers steady on a machine shared with other work, where a whole batch would
    often include someone else's time slice.
    """
    clock = time.perf_counter_ns
    for i in range(0, len(args), CHUNK):
        chunk = args[i : i + CHUNK]
        start = clock()
        for arg in chunk:
            call(arg)
        samples.append((clock() - start) / len(chunk) / 1000)


def one_round(
    env: Environment, calls: int, start: float, rng: random.Random, out: dict[str, list[float]]
) -> None:
    """Time ``calls`` calls of each kind at about ``start`` seconds, into ``out``."""
    t1, t2 = seconds(start), seconds(start + 1)
    held = len(env)
    ids = [env._order[rng.randrange(held)].work.id for _ in range(calls)]
    cursors = [env._encode_cursor(rng.randrange(held - 40)) for _ in range(calls)]
    workers = [f"w{i % 100}" for i in range(calls)]
    polled: list[str] = []

    def poll(worker: str) -> None:
        work = env.poll(t1, worker_id=worker)
        assert work is not None
        polled.append(work.id)

    timed(out["create"], lambda _: env.create(t1), [None] * calls)
    # Reads change nothing, so they run three times over; the rest consume their items.
    timed(out["get"], lambda i: env.get(i, t1), ids * 3)
    slots = env._slots
    timed(out["dict lookup"], lambda i: slots.get(i), ids * 3)
    timed(out["stats"], lambda _: env.stats(t1), [None] * calls * 3)
    timed(out["list"], lambda p: env.list(t1, limit=20, page=p), cursors * 3)
    timed(out["poll"], poll, workers)
    timed(out["ack"], lambda i: env.ack(i, t1), polled)
    # Chunk c heartbeats c µs after t2, so its leases lapse one µs after chunk c - 1's.
    beats = [(w, t2 + j // CHUNK * US) for j, w in enumerate(polled)]
    timed(
        out["heartbeat"],
        lambda a: env.heartbeat(
            a[0],
            a[1],
            expected_last_heartbeat=NO_HEARTBEAT,
            desired_ttl_seconds=10,
        ),
        beats,
    )
    t_stop = t2 + dt.timedelta(milliseconds=1)
    timed(out["stop"], lambda i: env.stop(i, t_stop), polled)
    # Sweeps that each expire one chunk of the leases stopped above (TTL 10 s).
    lapse = t2 + dt.timedelta(seconds=10) + US
    for c in range(calls // CHUNK):
        begin = time.perf_counter_ns()
        expired = env.expire_due(lapse + c * US)
        out["expire_due/item"].append((time.perf_counter_ns() - begin) / CHUNK / 1000)
        assert len(expired) == CHUNK, len(expired)


def quartile(values: list[float]) -> float:
    """The lower quartile (or the minimum of fewer than four values)."""
    if len(values) < 4:
        return min(values)
    return statistics.quantiles(values, n=4)[0]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 1k/10k/100k, fewer calls")
    args = parser.parse_args(argv)
    sizes = (1_000, 10_000, 100_000) if args.quick else (1_000, 100_000, 1_000_000)
    calls = 1000 if args.quick else 2000
    rounds = 5
    rng = random.Random(1)

    # Memory: tracemalloc while building the middle size (tracing slows the build down).
    middle = sizes[1]
    gc.collect()
    tracemalloc.start()
    env = build(middle)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del env
    gc.collect()
    print(f"memory per held item (tracemalloc, {middle:,} items): {traced / middle:,.0f} bytes")

    # Warm up (imports, caches, the allocator) on a throwaway environment first.
    warm = build(2000)
    one_round(warm, 1000, 1, rng, {name: [] for name in CALLS})
    del warm

    # Build every size first, then interleave the rounds (1k, 100k, 1M, 1k, ...), so that
    # whatever else the machine is doing weighs on every size alike.
    envs: dict[int, Environment] = {}
    for n in sizes:
        gc.collect()
        before = rss_bytes()
        started = time.perf_counter()
        envs[n] = build(n)
        built = time.perf_counter() - started
        grown = rss_bytes() - before
        print(
            f"built {n:,} items in {built:.1f} s (resident size +{grown / n:,.0f} bytes per "
            "item; meaningful for the largest size only)",
            flush=True,
        )
    samples: dict[int, dict[str, list[float]]] = {n: {name: [] for name in CALLS} for n in sizes}
    for r in range(rounds):
        for n in sizes:
            one_round(envs[n], calls, 1 + 15 * r, rng, samples[n])
    results = {n: {name: quartile(v) for name, v in samples[n].items()} for n in sizes}
    print("held after the timed calls: " + ", ".join(f"{len(e):,}" for e in envs.values()))

    width = 12
    head = "call".ljust(16) + "".join(f"{n:>{width},}" for n in sizes) + "  ratio max/min"
    print()
    print(
        f"µs per call: lower quartile of {CHUNK}-call chunks, {rounds} rounds of {calls:,} "
        f"calls (expire_due: per item, sweeps of {CHUNK})"
    )
    print(head)
    print("-" * len(head))
    worst = 0.0
    for name in CALLS:
        values = [results[n][name] for n in sizes]
        ratio = max(values) / min(values)
        if name != "dict lookup":
            worst = max(worst, ratio)
        flag = "" if ratio <= 2 else "  > 2x!"
        cells = "".join(f"{v:>{width}.2f}" for v in values)
        print(f"{name:<16}{cells}  {ratio:>8.2f}{flag}")
    print(f"\nworst ratio: {worst:.2f} (target ≤ 2)")
    print(FLOOR_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
