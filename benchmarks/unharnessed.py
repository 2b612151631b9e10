"""``python -m workstate serve`` with the harness's middleware peeled off, for
``benchmarks/server.py --peel``.

The same command line, stack, limits and uvicorn settings as ``serve``; uvicorn is handed the
app *inside* the harness (the body limits and the dispatch of the work API, with Starlette's
router behind it), so there are no request ids, no fault rules, no API key check and no
journal.  Not a way to run the mock (a worker could not tell what it did): a measurement of
what the harness costs per request over HTTP, against the same server with it.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from workstate.server import _cli

_Config = uvicorn.Config


class _PeeledConfig(_Config):
    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(app.app, *args, **kwargs)  # the harness's inner app


if __name__ == "__main__":
    setattr(uvicorn, "Config", _PeeledConfig)  # noqa: B010 (serve builds uvicorn.Config)
    sys.exit(_cli.main(sys.argv[1:]))
