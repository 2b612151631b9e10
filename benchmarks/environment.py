"""The cost of each Environment call at fixed sizes: median, p99.9 and the worst single call.

Run by hand (not in CI)::

    python benchmarks/environment.py           # 1,000 / 100,000 / 1,000,000 items (~4 min)
    python benchmarks/environment.py --quick   # 1,000 / 10,000 / 100,000 items (~40 s)

For each size the script builds one environment holding that many items (half ``queued``, a
quarter leased with a 600 s TTL, a quarter ``stopped``) with ``retain_stopped`` set to that
quarter.  Every round is a full cycle that leaves the size where it was: ``calls`` creations,
reads (``get``, ``stats``, ``list`` from a random cursor), ``poll``/``ack``/``heartbeat`` (TTL
10 s) of as many items, time moved past their leases, ``expire_due(limit=16)`` slices until
none is left (the server's way: ``EXPIRY_SLICE``), and a forced ``stop`` of each, whose stopped
items push as many old ones out of the retention bound.  The rounds take the sizes in turn
(1k, 100k, 1M, 1k, ...), so whatever else the machine is doing weighs on every size alike.

Every call is timed on its own, by the wall clock and by this thread's CPU clock.  Printed per
call: the median at each size, and at the largest the p99.9, the maximum and the maximum CPU
time, in µs.  Targets, printed with PASS/FAIL: the median at the largest size is at most 2x the
median at the smallest (no call costs time linear in the items held), and the worst single call
at the largest size is at most 5 ms.  The worst call is judged on its CPU time, which counts
everything the call did (a garbage collection included) but not the time the scheduler gave
to other processes; the wall maximum is printed beside it as measured.  On a shared machine a
preempted call shows up as a wall maximum in multiples of the scheduler tick (4 ms) with a
small CPU time, and the p99.9 shows whether a slow call is a one-off or a pattern.  The build
phase runs with the garbage collector off and then freezes what it built (``gc.freeze()``), so
a collection during the measurement does not walk a million long-lived records; the collector
stays on while measuring.

Then a mass expiry: in the largest environment a quarter of the items (250,000 at 1M) take
leases that all lapse at the same instant.  A stream of server-like requests follows (each
applies ``expire_due(now, limit=16)`` first, as ``MockServer`` does, then makes one call:
heartbeat, get, poll+ack, stats, list) until every lapsed lease is applied.  Printed: the worst
single request of each kind while the expiries were being applied (target: 5 ms), how many
requests the backlog took, and, for comparison, one unbounded ``expire_due`` over a second
mass expiry of the same size (what the server paid before it applied expiries in slices).

Memory per held item is measured with ``tracemalloc`` while building the middle size.  The build
reports the worst single ``create`` while the environment grows (the id indexes are split over
256 dicts, so no insertion rebuilds a table of a million entries).  A bare dict lookup of the
same random ids in the environment's own id index is shown as the floor that memory latency
sets: past the CPU caches every random access pays it, so a cheap call's time grows with the
working set even though no call does more work.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any

from workstate import NO_HEARTBEAT, WorkstateError
from workstate._environment import Environment

T0 = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)
SLICE = 16  # workstate.server._app.EXPIRY_SLICE
MEDIAN_RATIO_TARGET = 2.0
WORST_TARGET_US = 5000.0
CALLS = (
    "create",
    "get",
    "stats",
    "list",
    "poll",
    "ack",
    "heartbeat",
    "expire_due/slice",
    "stop",
    "dict lookup",
)
_clock = time.perf_counter_ns


def seconds(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def build(n: int, worst: list[int] | None = None) -> Environment:
    """``n`` items: 1/2 queued, 1/4 leased (TTL 600 s), 1/4 stopped (the retention bound).

    With ``worst``, the worst CPU time of one ``create`` while growing is appended to it (ns).
    """
    env = Environment("env_bench", retain_stopped=n // 4)
    now = T0
    if worst is None:
        for _ in range(n):
            env.create(now)
    else:
        cpu, most = time.thread_time_ns, 0
        for _ in range(n):
            c0 = cpu()
            env.create(now)
            most = max(most, cpu() - c0)
        worst.append(most)
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


def timed(samples: Samples, call: Callable[[Any], object], args: Iterable[Any]) -> list[Any]:
    """Call ``call(arg)`` for each arg, each call timed on its own into ``samples``.

    Wall time (µs) goes to ``samples.wall``; the worst CPU time of this thread over one call
    goes to ``samples.cpu_max``.  The CPU clock is read outside the wall interval (it costs a
    system call, ~1 µs), so the medians are not inflated by it.
    """
    results = []
    wall_clock, cpu_clock = _clock, time.thread_time_ns
    wall = samples.wall
    cpu_max = samples.cpu_max
    for arg in args:
        c0 = cpu_clock()
        w0 = wall_clock()
        result = call(arg)
        w1 = wall_clock()
        c1 = cpu_clock()
        wall.append((w1 - w0) / 1000)
        if c1 - c0 > cpu_max:
            cpu_max = c1 - c0
        results.append(result)
    samples.cpu_max = cpu_max
    return results


class Samples:
    """Every wall time of one call at one size, and its worst CPU time (ns)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu_max = 0


def one_round(
    env: Environment, calls: int, start: float, rng: random.Random, out: dict[str, Samples]
) -> None:
    """One cycle of ``calls`` calls of each kind at about ``start`` seconds; the size is kept."""
    held = len(env)
    t1 = seconds(start)
    every = list(env._slots)
    ids = [every[rng.randrange(held)] for _ in range(calls)]
    cursors = [env._encode_cursor(rng.randrange(env._next_seq - 40)) for _ in range(calls)]
    del every
    workers = [f"w{i % 100}" for i in range(calls)]

    timed(out["create"], lambda _: env.create(t1), range(calls))
    timed(out["get"], lambda i: env.get(i, t1), ids * 3)
    shards = env._slots.shards  # the environment's own index, without the method call
    timed(out["dict lookup"], lambda i: shards[hash(i) & 255].get(i), ids * 3)
    timed(out["stats"], lambda _: env.stats(t1), range(calls * 3))
    timed(out["list"], lambda p: env.list(t1, limit=20, page=p), cursors * 3)
    polled = [w.id for w in timed(out["poll"], lambda w: env.poll(t1, worker_id=w), workers)]
    timed(out["ack"], lambda i: env.ack(i, t1), polled)
    timed(
        out["heartbeat"],
        lambda i: env.heartbeat(
            i, t1, expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=10
        ),
        polled,
    )
    lapse = seconds(start + 11)
    while env.expiries_due(lapse):
        timed(out["expire_due/slice"], lambda _: env.expire_due(lapse, limit=SLICE), [None])
    timed(out["stop"], lambda i: env.stop(i, lapse, force=True), polled)
    env.stats(lapse)  # (the last stop's item is pushed out of the bound by the next call)
    assert len(env) == held, (len(env), held)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mass_expiry(env: Environment, start: float, rng: random.Random) -> dict[str, Any]:
    """A quarter of ``env`` lapsing at once, then server-like requests until all are applied."""
    n = len(env)
    now = seconds(start)
    lapsing: list[str] = []
    for _ in range(n // 4):  # the queued items: poll, ack, heartbeat, all with one deadline
        work = env.poll(now)
        assert work is not None
        env.ack(work.id, now)
        env.heartbeat(work.id, now, expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=10)
        lapsing.append(work.id)
    live = [w.id for w in env.list(now, limit=1000).data if w.state.value == "active"]
    tokens = {i: env.get(i, now).last_heartbeat for i in live}
    after = seconds(start + 11)
    backlog = env.expiries_due(after)
    worst: dict[str, float] = {}
    slices: list[float] = []
    requests = 0
    kinds = ("heartbeat", "heartbeat (lapsed)", "get", "poll+ack", "stats", "list")
    worst_cpu: dict[str, float] = {}
    clock, cpu_clock = _clock, time.thread_time_ns
    while env.expiries_due(after) and requests < 10 * backlog:
        kind = kinds[requests % len(kinds)]
        c0 = cpu_clock()
        began = clock()
        env.expire_due(after, limit=SLICE)  # what MockServer._touch does first
        sliced = clock()
        if kind == "heartbeat":
            item = rng.choice(live)
            tokens[item] = env.heartbeat(
                item, after, expected_last_heartbeat=tokens[item], desired_ttl_seconds=600
            ).last_heartbeat
        elif kind == "heartbeat (lapsed)":
            with contextlib.suppress(WorkstateError):  # a 409/412 on a re-queued item
                env.heartbeat(rng.choice(lapsing), after, expected_last_heartbeat=NO_HEARTBEAT)
        elif kind == "get":
            env.get(rng.choice(lapsing), after)
        elif kind == "poll+ack":
            work = env.poll(after)
            if work is not None:
                env.ack(work.id, after)
        elif kind == "stats":
            env.stats(after)
        else:
            env.list(after, limit=20, page=env._encode_cursor(rng.randrange(env._next_seq - 40)))
        ended = clock()
        c1 = cpu_clock()
        worst_cpu[kind] = max(worst_cpu.get(kind, 0.0), (c1 - c0) / 1000)
        slices.append((sliced - began) / 1000)
        worst[kind] = max(worst.get(kind, 0.0), (ended - began) / 1000)
        requests += 1
    drained = env.expiries_due(after) == 0
    # For comparison: the same mass expiry again, applied by one unbounded call.
    again: list[str] = []
    for _ in range(n // 4):
        work = env.poll(after)
        if work is None:
            break
        env.ack(work.id, after)
        env.heartbeat(work.id, after, expected_last_heartbeat=NO_HEARTBEAT, desired_ttl_seconds=10)
        again.append(work.id)
    later = seconds(start + 22)
    began = clock()
    expired = env.expire_due(later)
    unbounded = (clock() - began) / 1000
    return {
        "backlog": backlog,
        "requests": requests,
        "drained": drained,
        "worst": worst,
        "worst_cpu": worst_cpu,
        "slice_median": statistics.median(slices),
        "slice_max": max(slices),
        "unbounded_us": unbounded,
        "unbounded_n": len(expired),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 1k/10k/100k, fewer calls")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = (1_000, 10_000, 100_000) if args.quick else (1_000, 100_000, 1_000_000)
    calls = 200 if args.quick else 400  # (below a quarter of the smallest size: kept fixed)
    rounds = args.rounds
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
    one_round(warm, 200, 1, rng, {name: Samples() for name in CALLS})
    del warm

    envs: dict[int, Environment] = {}
    for n in sizes:
        gc.collect()
        gc.disable()  # the build only: a collection would walk every record built so far
        started = time.perf_counter()
        growing: list[int] = []
        envs[n] = build(n, growing)
        built = time.perf_counter() - started
        gc.enable()
        gc.collect()
        gc.freeze()  # what was built stays out of the collector's way while measuring
        print(
            f"built {n:,} items in {built:.1f} s; worst single create while growing to "
            f"{n:,}: {growing[0] / 1e6:.2f} ms of CPU",
            flush=True,
        )

    samples = {n: {name: Samples() for name in CALLS} for n in sizes}
    for r in range(rounds):
        for n in sizes:
            one_round(envs[n], calls, 1 + 15 * r, rng, samples[n])
    print("held after the timed calls: " + ", ".join(f"{len(e):,}" for e in envs.values()))
    print(
        f"\nµs per call, every call timed on its own ({rounds} rounds of {calls} calls of each "
        f"kind per size; expire_due: slices of {SLICE} lapsed leases)"
    )
    small, large = sizes[0], sizes[-1]
    head = f"{'call':<17}" + "".join(f"{f'med {n:,}':>14}" for n in sizes)
    head += f"{'ratio':>7}{f'p99.9 {large:,}':>17}{f'max {large:,}':>15}{'max CPU':>10}"
    print(head)
    print("-" * len(head))
    failures = 0
    wall_misses = 0
    for name in CALLS:
        medians = [statistics.median(samples[n][name].wall) for n in sizes]
        big = samples[large][name]
        ratio = medians[-1] / medians[0]
        worst, cpu = max(big.wall), big.cpu_max / 1000
        cells = "".join(f"{m:>14.2f}" for m in medians)
        line = f"{name:<17}{cells}{ratio:>7.2f}{quantile(big.wall, 0.999):>17.1f}{worst:>15.1f}"
        line += f"{cpu:>10.1f}"
        if name != "dict lookup":
            ok_ratio = ratio <= MEDIAN_RATIO_TARGET
            ok_worst = cpu <= WORST_TARGET_US
            failures += (not ok_ratio) + (not ok_worst)
            wall_misses += worst > WORST_TARGET_US
            line += f"  ratio {_verdict(ok_ratio)}  worst {_verdict(ok_worst)}"
        print(line)
    print(
        f"targets: median at {large:,} <= {MEDIAN_RATIO_TARGET:g}x the median at {small:,} "
        f"(ratio); worst single call at {large:,} items <= {WORST_TARGET_US / 1000:g} ms "
        "(judged on its CPU time, max CPU; the wall max beside it also counts the time the "
        f"machine gave to other processes: {wall_misses} call kind(s) over 5 ms by the wall)"
    )

    print(f"\nmass expiry in the {large:,}-item environment:")
    mass = mass_expiry(envs[large], 1 + 15 * rounds, rng)
    print(
        f"  {mass['backlog']:,} leases lapsed at once; {mass['requests']:,} requests applied them "
        f"({SLICE} per request; drained: {mass['drained']}); the slice itself: median "
        f"{mass['slice_median']:.0f} µs, max {mass['slice_max']:.0f} µs"
    )
    for kind, us in mass["worst"].items():
        cpu = mass["worst_cpu"][kind]
        ok = cpu <= WORST_TARGET_US
        failures += not ok
        print(
            f"  worst {kind:<20} {us:>9.1f} µs wall, {cpu:>8.1f} µs CPU (slice included)  "
            f"target <= {WORST_TARGET_US / 1000:g} ms: {_verdict(ok)}"
        )
    print(
        f"  for comparison, one unbounded expire_due of {mass['unbounded_n']:,} lapsed leases: "
        f"{mass['unbounded_us'] / 1000:,.0f} ms (the stall slicing avoids)"
    )
    print(
        '\n"dict lookup" is not an Environment call: a bare dict lookup of the ids "get" '
        "reads, shown as the floor that memory latency sets."
    )
    print(f"\n{'all targets met' if not failures else f'{failures} target(s) missed'}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
