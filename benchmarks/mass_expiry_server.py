"""A mock server whose environment holds N leases that all lapse at the same instant.

Used by ``benchmarks/server.py`` for its mass-expiry scenario; it builds the state in process
(250,000 items over HTTP would take many minutes), then serves it exactly as ``python -m
workstate serve`` does (the same ``serve`` function, stack and uvicorn settings).

Every item is created, polled, acked and heartbeated at one instant T0 (the core takes time
as an argument), so every lease ends at T0 + TTL; the TTL is chosen from a timed sample so that
the build, the start and the benchmark's quiet run fit before it.  Ten more items, made the
same way, are the ones the benchmark heartbeats (their heartbeats renew their leases, so only
the N lapse).
It writes ``{"environment_id", "ids", "lapse_at"}`` (``lapse_at`` in Unix seconds) to the
``--info`` file before it starts listening.

    python benchmarks/mass_expiry_server.py --port 8000 --items 250000 --info info.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import time

from workstate.server import MockServer, _cli, _stack
from workstate.server._app import bind

ENV = "env_mass"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--items", type=int, default=250_000)
    parser.add_argument("--info", required=True)
    parser.add_argument("--quiet-seconds", type=float, default=8.0)
    parser.add_argument("--stack", choices=_stack.STACKS, default="auto")
    args = parser.parse_args()

    # Time a sample of create/poll/ack to choose a TTL the build cannot outlast.
    sample = MockServer(seed=2).environment("env_sample")
    t = dt.datetime.now(dt.UTC)
    begin = time.perf_counter()
    for _ in range(2000):
        sample.create(t)
        work = sample.poll(t)
        assert work is not None
        sample.ack(work.id, t)
    per_item = (time.perf_counter() - begin) / 2000
    ttl = math.ceil(per_item * args.items * 2 + args.quiet_seconds + 15)

    server = MockServer(
        seed=1, profile_overrides={"default_ttl_seconds": ttl, "max_ttl_seconds": max(ttl, 3600)}
    )
    t0 = dt.datetime.now(dt.UTC)
    with server.lock:
        env = server.environment(ENV)
        ids = []
        for n in range(args.items + 10):
            env.create(t0)
            work = env.poll(t0)
            assert work is not None
            env.ack(work.id, t0)
            env.heartbeat(work.id, t0)  # active, as a worker leaves it (an ack holds no lease)
            if n >= args.items:
                ids.append(work.id)
    lapse_at = t0.timestamp() + ttl
    with open(args.info, "w", encoding="utf-8") as f:
        json.dump({"environment_id": ENV, "ids": ids, "lapse_at": lapse_at}, f)
    sock = bind("127.0.0.1", args.port)
    try:
        _cli.serve(server, sock, "warning", stack=_stack.resolve(args.stack))
    finally:
        sock.close()


if __name__ == "__main__":
    main()
