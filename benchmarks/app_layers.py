"""What each layer of the mock server's ASGI app costs per request, in process, against the floor.

Run by hand (not in CI)::

    python benchmarks/app_layers.py                 # heartbeat, get and poll+ack, ~1 minute
    python benchmarks/app_layers.py --scenarios heartbeat --requests 20000

No sockets: each request is one ``await app(scope, receive, send)`` with a scope like uvicorn's
(its ``receive`` a bound method of a fresh object with uvicorn's ``disconnected`` flag that
keeps the scope, as uvicorn's request cycle is and does: so a reference cycle through the scope
would show here as it does over HTTP).  The floor is ``benchmarks/floor.py``'s bare Starlette
app with the same routes and answers.  workstate is measured whole (``server.app``: the
harness's middleware), then with its outer layers peeled off one at a time: the body limits
(``RequestLimits``) and the dispatch of the work API's calls with the core call under it
(``Dispatch``).  A layer's cost is the difference between two rows.  (The whole app answers a
bodiless call in the harness's middleware, without the two layers below it; the inner rows
measure those layers, which a call with a body still takes.)  Each figure is the best of
``--rounds`` runs of ``--requests`` requests (wall clock per request; a poll+ack row is per
request, half a pair).

These are hot-loop costs: over HTTP the same Python code shares the CPU's caches with uvicorn's
parser and the event loop, and costs about 1.5-2x as much (compare ``benchmarks/server.py``'s
server CPU per request).  Use this script to see where a change helps; use ``server.py`` for
the ratios that count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor

from workstate.server import MockServer
from workstate.server._render import render_work, use_orjson

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
ENV = "env_layers"


class Cycle:
    """Stands for uvicorn's request cycle: ``receive`` is its bound method, and it keeps the
    scope."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    disconnected = False

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}


def scope(method: str, path: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000")]
    if method == "POST":
        headers.append((b"content-length", b"0"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def layers(app: Any) -> list[tuple[str, App]]:
    """The app, then each inner layer down to the dispatch."""
    found = [("whole app (harness middleware)", app)]
    inner = app.app
    while inner is not None:
        name = type(inner).__name__
        found.append((name, inner))
        if name == "Dispatch":
            break
        inner = getattr(inner, "app", None)
    return found


async def measure(args: argparse.Namespace) -> list[str]:
    server = MockServer(seed=1)
    items = args.requests * args.rounds * (len(layers(server.app)) + 1) + 1000
    for _ in range(items if "poll_ack" in args.scenarios else 300):
        server.create_work(ENV)
    env = server.environment(ENV)
    ids = []
    for _ in range(100):
        work = env.poll(server.now())
        assert work is not None
        env.ack(work.id, server.now())
        ids.append(work.id)
    first = env.get(ids[0], server.now())
    samples = {
        "poll": json.loads(render_work(first, server.sessions.delivery_secret(first, "http://x"))),
        "ack": first.to_json(),
        "heartbeat": env.heartbeat(ids[1], server.now()).to_json(),
        "get": first.to_json(),
    }
    floor_app = floor.build(samples, floor.renderer("orjson" if args.orjson else "json"))
    last: list[dict[str, Any]] = [{}]

    async def send(message: dict[str, Any]) -> None:
        last[0] = message

    base = f"/v1/environments/{ENV}/work"

    async def call(app: App, method: str, path: str) -> None:
        request = scope(method, path)
        await app(request, Cycle(request).receive, send)

    async def run(app: App, scenario: str) -> float:
        best = float("inf")
        for _ in range(args.rounds):
            begun = time.perf_counter()
            for i in range(args.requests):
                if scenario == "heartbeat":
                    await call(app, "POST", f"{base}/{ids[i % 100]}/heartbeat")
                elif scenario == "get":
                    await call(app, "GET", f"{base}/{ids[i % 100]}")
                else:
                    await call(app, "GET", f"{base}/poll")
                    body = last[0]["body"]
                    delivered = app is not floor_app and body != b"null"
                    work_id = json.loads(body)["id"] if delivered else ids[0]
                    await call(app, "POST", f"{base}/{work_id}/ack")
            per = (time.perf_counter() - begun) / args.requests * 1e6
            best = min(best, per / 2 if scenario == "poll_ack" else per)
        return best

    lines = [
        f"benchmarks/app_layers.py: best of {args.rounds} x {args.requests} requests, "
        f"{'orjson' if args.orjson else 'json'}; µs per request, in process",
        "",
        "| scenario | floor | " + " | ".join(name for name, _ in layers(server.app)) + " |",
        "|---|---:|" + "---:|" * len(layers(server.app)),
    ]
    for scenario in args.scenarios:
        row = [f"{await run(floor_app, scenario):.1f}"]
        row += [f"{await run(app, scenario):.1f}" for _, app in layers(server.app)]
        lines.append(f"| {scenario} | " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="heartbeat,get,poll_ack")
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-orjson", dest="orjson", action="store_false")
    args = parser.parse_args()
    args.scenarios = args.scenarios.split(",")
    use_orjson(args.orjson)
    print("\n".join(asyncio.run(measure(args))))


if __name__ == "__main__":
    main()
