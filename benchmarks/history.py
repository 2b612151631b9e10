"""How long the linearizability checker takes, against history length, clients and items.

Run by hand (not in CI)::

    python benchmarks/history.py           # up to 100,000 calls (~1 min)
    python benchmarks/history.py --quick   # up to 20,000 calls

Histories are legal by construction: one :class:`~workstate.Environment` runs a random mix
of calls (create, poll, ack, heartbeat with the right token, get, list, metadata update,
stop; a few with stale tokens that meet 412) at increasing server times, each item living
through about ``calls per item`` calls; every call then gets an interval of real time around
its own instant, as wide as ``clients`` calls spaced 1 ms apart, so about that many calls are
in flight at once.  Every check must answer ``ok``.

Three tables:

1. time against history length (1,000 items, 32 clients);
2. time against concurrency (the clients in flight, at a fixed length);
3. time against the number of items at a fixed 100 calls per item: the ratio of time per call
   between the largest and the smallest size is the linearity check (target: about 1×).

Each row also runs the *naive* search in the same process, on the same history when it is
small enough (≤ 10,000 calls): Wing and Gong's search over all calls at once (no split by
item), without the cache of explored (calls placed, state) pairs and without the shortcut for
reads, under a budget of 300,000 steps; its time (or "gave up" when the budget ran out) is
printed beside the checker's.  The target: a 100,000-call history from 32 clients over
1,000 items checks in under 10 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from workstate import NO_HEARTBEAT, Environment, History, HistoryCall, WorkstateError, check_history
from workstate._linearize import _Budget, _Checker, _Model, _search, _Sub
from workstate._profile import ANTHROPIC

T0_US = 1_782_893_700 * 1_000_000
NAIVE_STEPS = 300_000


def legal_history(calls: int, items: int, clients: int, seed: int = 1) -> History:
    """A legal history of about ``calls`` calls over ``items`` items, ``clients`` in flight."""
    rnd = random.Random(seed)
    env = Environment("env_bench")
    now_us = T0_US
    live: list[str] = []
    tokens: dict[str, str] = {}
    left: dict[str, int] = {}
    per_item = max(calls // items, 4)
    out: list[HistoryCall] = []
    created = 0
    for ident in range(calls):
        now_us += 1000  # 1 ms between instants
        now = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=now_us)
        inputs: dict[str, Any] = {}
        work_id: str | None = None
        if created < items and (not live or rnd.random() < items / calls * 1.2):
            op = "create"
        else:
            op = rnd.choice(
                (
                    "poll",
                    "ack",
                    "heartbeat",
                    "heartbeat",
                    "heartbeat",
                    "get",
                    "list",
                    "update",
                    "stop",
                )
            )
            if op not in ("poll", "list"):
                if not live:
                    op = "list"
                else:
                    work_id = rnd.choice(live)
        try:
            if op == "create":
                body: Any = env.create(now).to_json()
                live.append(body["id"])
                left[body["id"]] = per_item
                created += 1
            elif op == "poll":
                w = env.poll(now, worker_id=f"c{ident % clients}")
                body = None if w is None else w.to_json(include_secret=True)
            elif op == "list":
                body = env.list(now, limit=5).to_json()
            elif op == "ack":
                assert work_id is not None
                body = env.ack(work_id, now).to_json()
            elif op == "heartbeat":
                assert work_id is not None
                token = tokens.get(work_id, NO_HEARTBEAT) if rnd.random() < 0.95 else NO_HEARTBEAT
                inputs = {"expected_last_heartbeat": token, "desired_ttl_seconds": 60}
                body = env.heartbeat(work_id, now, **inputs).to_json()
                tokens[work_id] = body["last_heartbeat"]
            elif op == "get":
                assert work_id is not None
                body = env.get(work_id, now).to_json()
            elif op == "update":
                assert work_id is not None
                inputs = {"metadata": {"k": str(ident % 3)}}
                body = env.update_metadata(work_id, now, inputs["metadata"]).to_json()
            else:
                assert work_id is not None
                inputs = {"force": True}
                body = env.stop(work_id, now, force=True).to_json()
            status, kind = 200, None
        except WorkstateError as exc:
            status, kind, body = exc.status, exc.error_type, exc.to_json()
        if work_id is not None:
            left[work_id] -= 1
            if left[work_id] <= 0:
                live.remove(work_id)
        point = now_us / 1e6
        width = clients * 0.001
        out.append(
            HistoryCall(
                id=ident,
                client=f"c{ident % clients}",
                op=op,
                environment_id="env_bench",
                work_id=work_id,
                input=inputs,
                invoke=point - rnd.random() * width,
                ret=point + rnd.random() * width,
                outcome="ok" if status == 200 else "fail",
                status=status,
                body=body,
                error_type=kind,
            )
        )
    return History(calls=tuple(out), clock="wall", server_clock="same", profile="anthropic")


class _Joint:
    """The naive model: every item in one state (a tuple of the items' state sets)."""

    def __init__(self, slots: dict[tuple[str, str], int]) -> None:
        self.model = _Model(ANTHROPIC)
        self.slots = slots

    def step(self, states: tuple[Any, ...], sub: tuple[int, _Sub]) -> tuple[Any, ...] | None:
        slot, inner = sub
        new = self.model.step(states[slot], inner)
        if not new:
            return None
        return (*states[:slot], new, *states[slot + 1 :])


def naive(history: History, steps: int) -> str:
    """Wing–Gong over all calls at once, no split, no memoisation."""
    checker = _Checker(history, ANTHROPIC, _Budget(steps, None, None))
    checker.split()
    slots = {key: i for i, key in enumerate(checker.items)}
    subs: list[Any] = []
    for key, item in checker.items.items():
        subs.extend((slots[key], s) for s in checker.prepare(item))
    subs.sort(key=lambda p: p[1].call.invoke)
    init = tuple(checker.initial(item) for item in checker.items.values())

    class _Wrapped:
        def __init__(self, pair: tuple[int, _Sub]) -> None:
            self.pair = pair
            self.call = pair[1].call
            self.outcome = pair[1].outcome
            self.pure = False  # no shortcut for reads either: the plain search

    joint = _Joint(slots)

    class _Adapter:
        def step(self, states: Any, sub: Any) -> Any:
            return joint.step(states, sub.pair)

    result = _search(
        _Adapter(), [_Wrapped(p) for p in subs], init, _Budget(steps, None, None), memo=False
    )  # type: ignore[arg-type]
    return result.verdict


def timed(history: History) -> float:
    start = time.perf_counter()
    report = check_history(history)
    elapsed = time.perf_counter() - start
    if report.verdict != "ok":
        sys.exit(f"the checker said {report.verdict} on a legal history:\n{report.format()}")
    return elapsed


def naive_timed(history: History, limit: int) -> str:
    if len(history.calls) > limit:
        return "-"
    start = time.perf_counter()
    verdict = naive(history, steps=NAIVE_STEPS)
    elapsed = time.perf_counter() - start
    return f"{elapsed:.2f} s" if verdict == "ok" else f"gave up ({elapsed:.1f} s)"


def table(title: str, header: Sequence[str], rows: list[Sequence[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    big = 20_000 if args.quick else 100_000
    naive_limit = 10_000

    rows = []
    for n in sorted({1_000, 10_000, big // 2, big}):
        h = legal_history(n, 1000, 32)
        t = timed(h)
        rows.append((f"{n:,}", f"{t:.2f} s", f"{t / n * 1e6:.1f}", naive_timed(h, naive_limit)))
    table(
        "time against history length (1,000 items, 32 clients)",
        ("calls", "checker", "µs/call", "naive"),
        rows,
    )

    rows = []
    n = big // 5
    for clients in (1, 8, 32, 128):
        h = legal_history(n, 1000, clients)
        t = timed(h)
        rows.append((str(clients), f"{t:.2f} s", f"{t / n * 1e6:.1f}", naive_timed(h, naive_limit)))
    table(
        f"time against clients in flight ({n:,} calls, 1,000 items)",
        ("clients", "checker", "µs/call", "naive"),
        rows,
    )

    rows = []
    per_call = []
    for items in (100, 300, 1000) if args.quick else (100, 300, 1000, 3000):
        n = items * 100
        h = legal_history(n, items, 32)
        t = timed(h)
        per_call.append(t / n)
        rows.append((f"{items:,}", f"{n:,}", f"{t:.2f} s", f"{t / n * 1e6:.1f}"))
    table(
        "time against items (100 calls per item, 32 clients)",
        ("items", "calls", "checker", "µs/call"),
        rows,
    )
    print(f"\nµs per call, largest / smallest item count: {per_call[-1] / per_call[0]:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
