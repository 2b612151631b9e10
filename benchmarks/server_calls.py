"""The worst single call the mock server makes while it fills up, against the bare environment.

Run by hand (not in CI)::

    python benchmarks/server_calls.py                  # 1,100,000 items, ~1 minute
    python benchmarks/server_calls.py --items 200000

Issue 14's second target asks that no single call cost more than a few milliseconds at a
million items, in the worst case and not only on average.  ``benchmarks/environment.py``
measures that for :class:`~workstate.Environment`; this script measures what the server adds
around it, in process and under the server's lock, as a request would: each creation through
``MockServer.create_work`` (the item and its scripted session), then each delivery (the poll
and the sessions token it mints).  The baseline, in the same run, is the same calls on a bare
``Environment``.  The collector is off during the timed calls, so that what is printed is the
calls' own cost (``serve`` keeps collections short; ``docs/performance.md``).  A plain dict
that grows rebuilds itself in one insertion, which is what this would show.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import time
from collections.abc import Callable

from workstate import Environment, ManualClock
from workstate.server import MockServer

T0 = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
ENV = "env_calls"


def timed(count: int, call: Callable[[], object]) -> list[float]:
    """Each of ``count`` calls' duration in ms."""
    out = []
    clock = time.perf_counter
    for _ in range(count):
        begun = clock()
        call()
        out.append((clock() - begun) * 1e3)
    return out


def row(name: str, server: list[float], bare: list[float], limit: float) -> str:
    return (
        f"| {name} | {statistics.median(bare) * 1e3:.1f} / {statistics.median(server) * 1e3:.1f}"
        f" | {max(bare):.2f} / {max(server):.2f} | {sum(d > limit for d in bare)} / "
        f"{sum(d > limit for d in server)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_100_000)
    parser.add_argument("--limit-ms", type=float, default=5.0, help="count calls over this")
    args = parser.parse_args()
    server = MockServer(clock=ManualClock(T0), seed=1)
    bare = Environment(ENV, seed=1)
    gc.disable()
    try:
        created = timed(args.items, lambda: server.create_work(ENV))
        bare_created = timed(args.items, lambda: bare.create(T0))
        with server.lock:
            env, now = server._touch(ENV)

            def deliver() -> None:
                work = env.poll(now)
                assert work is not None
                server.sessions.delivery_secret(work, "http://127.0.0.1:8765")

            delivered = timed(args.items, deliver)
        bare_delivered = timed(args.items, lambda: bare.poll(T0))
    finally:
        gc.enable()
    print(
        f"benchmarks/server_calls.py: {args.items:,} items, collector off while timed\n\n"
        f"| call | median µs, environment / server | worst ms, environment / server "
        f"| calls over {args.limit_ms:g} ms, environment / server |\n|---|---|---|---|\n"
        + row("create (server: with its session)", created, bare_created, args.limit_ms)
        + "\n"
        + row("poll (server: and its sessions token)", delivered, bare_delivered, args.limit_ms)
    )


if __name__ == "__main__":
    main()
