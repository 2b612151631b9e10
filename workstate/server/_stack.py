"""The stack ``serve`` runs on: plain (asyncio, stdlib json) or fast (uvloop, orjson).

Theory of operation
-------------------
The mock server's own work per request is small, so the HTTP stack under it is a large share
of what a request costs.  Two stacks are supported, both on uvicorn with the guarded h11
protocol of :mod:`workstate.server._limits` (which answers malformed HTTP in the API's
envelope and bounds read time; a different parser would need its own copy of those guards):

* ``plain``: the asyncio event loop and the standard library's :mod:`json`.  Always there.
* ``fast``: the ``uvloop`` event loop and ``orjson`` for rendering answers, which come with
  ``pip install 'sandbox-workstate[fast]'``.  ``benchmarks/server.py`` measures each stack
  against a bare Starlette app on the same stack; ``docs/performance.md`` has the numbers
  that justify each package.

``auto`` (the default of ``serve --stack``) is ``fast`` when both packages are importable, else
``plain``.  Asking for ``fast`` without them is an error that names the extra.  The choice of
renderer is process-wide (:func:`workstate.server._render.use_orjson`); the loop is uvicorn's
``loop`` option.
"""

from __future__ import annotations

import importlib.util

__all__ = ["FAST_PACKAGES", "STACKS", "StackUnavailableError", "describe", "loop", "resolve"]

STACKS = ("auto", "plain", "fast")
"""The names ``serve --stack`` takes."""

FAST_PACKAGES = ("uvloop", "orjson")
"""What the ``fast`` stack needs (the ``fast`` extra)."""


class StackUnavailableError(Exception):
    """The ``fast`` stack was asked for, but a package it needs is not installed."""


def _missing() -> list[str]:
    return [name for name in FAST_PACKAGES if importlib.util.find_spec(name) is None]


def resolve(name: str) -> str:
    """``plain`` or ``fast``: the stack ``name`` stands for on this installation.

    >>> resolve("plain")
    'plain'
    """
    if name not in STACKS:
        raise ValueError(f"unknown stack {name!r}; the stacks are {list(STACKS)}")
    if name == "plain":
        return name
    missing = _missing()
    if not missing:
        return "fast"
    if name == "auto":
        return "plain"
    raise StackUnavailableError(
        f"the fast stack needs {', '.join(missing)}, which come with the 'fast' extra: "
        "pip install 'sandbox-workstate[fast]' (or run with --stack plain)"
    )


def loop(stack: str) -> str:
    """uvicorn's ``loop`` option for a resolved stack.

    >>> loop("plain"), loop("fast")
    ('asyncio', 'uvloop')
    """
    return "uvloop" if stack == "fast" else "asyncio"


def describe(stack: str) -> str:
    """The stack as the ``serve`` banner names it.

    >>> describe("fast")
    'fast stack: uvloop, orjson'
    """
    if stack == "fast":
        return "fast stack: " + ", ".join(FAST_PACKAGES)
    return "plain stack: asyncio, json (pip install 'sandbox-workstate[fast]' for uvloop, orjson)"
