"""The mock server: the work API of self-hosted sandbox environments over HTTP.

An adapter over :class:`~workstate._environment.Environment` with no rules of its own: it
parses requests, calls the core under one lock and renders what the core answers.  Run it with
``python -m workstate serve`` (see ``docs/mock-server.md``), or in process:

* :class:`MockServer` holds the environments, the clock and the ASGI application
  (``MockServer().app``), to serve with any ASGI server or to call through
  ``httpx2.ASGITransport``;
* :func:`serve_in_thread` runs an application with uvicorn on a loopback port in a
  background thread, for test fixtures, and stops it afterwards;
* :class:`ConnectionDropped` is what the app raises in process where a fault rule drops the
  connection (over a socket the connection is closed instead);
* :class:`StateFileError` is what ``MockServer(state=path)`` raises for a file it cannot use.

``MockServer.harness`` holds the fault rules and the request journal; ``workstate.pytest_plugin``
gives tests fixtures around a shared server.

Needs the ``server`` extra: ``pip install 'sandbox-workstate[server]'``.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401  (imported to fail early with a helpful message)
    import uvicorn  # noqa: F401
except ImportError as exc:  # tested by hiding starlette from the import system
    raise ImportError(
        "workstate.server needs Starlette and uvicorn, which come with the 'server' extra: "
        "pip install 'sandbox-workstate[server]'"
    ) from exc

from workstate.server._app import MockServer, serve_in_thread
from workstate.server._harness import ConnectionDropped
from workstate.server._store import StateFileError

__all__ = ["ConnectionDropped", "MockServer", "StateFileError", "serve_in_thread"]
