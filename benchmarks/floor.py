"""The floor of ``benchmarks/server.py``: a bare Starlette app with the mock server's routes.

It has the same routes as the work API (in the same order, so routing costs the same), answers
the same JSON objects (captured from a workstate server in the same run, so the answers are of
the same size and shape), adds a ``request-id`` header of the same length, and is served by
uvicorn with the same settings and HTTP stack as ``python -m workstate serve``.  It keeps no
state and runs no workstate code: what workstate costs above it is the core, the adapter and
the harness.

    python benchmarks/floor.py --port 8000 --samples answers.json \\
        [--loop uvloop] [--http httptools] [--json orjson]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def renderer(name: str) -> Callable[[Any], bytes]:
    """Compact JSON bytes, as the mock server renders them on the chosen stack."""
    if name == "orjson":
        import orjson

        return orjson.dumps

    def render(content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")

    return render


def build(samples: dict[str, Any], render: Callable[[Any], bytes]) -> Starlette:
    """The floor app: every route answers its captured sample."""
    ids = (f"req_{n:024x}" for n in itertools.count(1))

    def answer(content: Any) -> Response:
        return Response(
            render(content), media_type="application/json", headers={"request-id": next(ids)}
        )

    async def poll(request: Request) -> Response:
        return answer(samples["poll"])

    async def ack(request: Request) -> Response:
        return answer(samples["ack"])

    async def heartbeat(request: Request) -> Response:
        return answer(samples["heartbeat"])

    async def item(request: Request) -> Response:
        return answer(samples["get"])

    async def other(request: Request) -> Response:
        return answer(None)

    work = "/v1/environments/{environment_id}/work"
    one = work + "/{work_id}"
    return Starlette(
        routes=[
            Route(work + "/poll", poll, methods=["GET"]),
            Route(work + "/stats", other, methods=["GET"]),
            Route(work, other, methods=["GET"]),
            Route(one, item, methods=["GET", "POST"]),
            Route(one + "/ack", ack, methods=["POST"]),
            Route(one + "/heartbeat", heartbeat, methods=["POST"]),
            Route(one + "/stop", other, methods=["POST"]),
            Route("/mock/environments/{environment_id}/work", other, methods=["POST"]),
            Route("/mock/clock", other, methods=["GET", "POST"]),
        ]
    )


def granian_app() -> Starlette:
    """The floor for granian: ``granian --interface asgi --factory floor:granian_app`` (the
    samples file in ``$FLOOR_SAMPLES``, the renderer in ``$FLOOR_JSON``)."""
    with open(os.environ["FLOOR_SAMPLES"], encoding="utf-8") as f:
        return build(json.load(f), renderer(os.environ.get("FLOOR_JSON", "json")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--samples", required=True, help="a JSON file: poll, ack, heartbeat, get")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--http", default="h11", choices=("h11", "httptools"))
    parser.add_argument("--json", default="json", choices=("json", "orjson"))
    args = parser.parse_args()
    with open(args.samples, encoding="utf-8") as f:
        app = build(json.load(f), renderer(args.json))
    import uvicorn

    # As workstate's bind(): proto IPPROTO_TCP, or asyncio leaves Nagle on (40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    print(f"floor listening on http://127.0.0.1:{args.port}", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        loop=args.loop,
        http=args.http,
        h11_max_incomplete_event_size=16 * 1024,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
