"""Whether the client of a waiting request is still there (for long polls).

Theory of operation
-------------------
A poll with ``block_ms`` waits for work; if its client disconnects meanwhile, a handler that
went on waiting would hand the next new item to nobody (and hide it for the redelivery window).
:class:`ClientWatch` lets the handler wait for *either* its wake-up *or* the ASGI
``http.disconnect`` message, and check right before it delivers.

The check (:meth:`ClientWatch.gone`) reads uvicorn's request cycle (its ``disconnected`` flag),
or elsewhere asks the receive channel without waiting (Starlette's ``Request.is_disconnected``),
so it sees a disconnect the server has already processed even
when the watching task has not run yet.  The handler's ``receive`` is wrapped by the middleware
(the journal's tee, the body limits), so the cycle is found where the outermost middleware put
it: :func:`note_cycle` keeps it in the scope under :data:`CYCLE_KEY`.  (Asking Starlette instead
cancels a receive, which cost more than the rest of a poll.)  A disconnect the server has not
yet *seen* (the packet is still in flight) cannot be known by anyone; such a delivery is an
ordinary lost answer, and the item comes back after the poll's redelivery window.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope

__all__ = ["CYCLE_KEY", "ClientWatch", "forget_cycle", "note_cycle"]

CYCLE_KEY = "workstate.cycle"
"""The scope key under which :func:`note_cycle` keeps uvicorn's request cycle."""


def _cycle(receive: Receive) -> Any:
    """The server's request cycle behind ``receive`` if it says whether its client
    disconnected (uvicorn's does: ``receive`` is its bound method), else None."""
    cycle = getattr(receive, "__self__", None)
    return cycle if isinstance(getattr(cycle, "disconnected", None), bool) else None


def note_cycle(scope: Scope, receive: Receive) -> None:
    """Keep in ``scope`` the server's request cycle behind ``receive``, if there is one."""
    cycle = _cycle(receive)
    if cycle is not None:
        scope[CYCLE_KEY] = cycle


def forget_cycle(scope: Scope) -> None:
    """Drop what :func:`note_cycle` kept, once the request is over: uvicorn's cycle holds the
    scope, so the scope holding the cycle is a reference cycle, which only the garbage
    collector would free (with the scope's headers, state and the rest, every request)."""
    scope.pop(CYCLE_KEY, None)


class ClientWatch:
    """Watch one request's client while its handler waits; :meth:`close` when done."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._scope = scope
        self._receive = receive
        self._task: asyncio.Task[None] | None = None

    async def gone(self) -> bool:
        """Whether the client has disconnected (as far as the server has seen), without waiting."""
        task = self._task
        if task is not None and task.done():
            error = task.exception()  # e.g. a body over the limit: answer with that error
            if error is not None:
                raise error
            return True
        # Under uvicorn the request cycle knows; asking it is free (see the module).
        cycle = self._scope.get(CYCLE_KEY) or _cycle(self._receive)  # (no middleware between)
        if cycle is not None:
            return bool(cycle.disconnected)
        return await Request(self._scope, self._receive).is_disconnected()

    async def wait(self, waiter: asyncio.Future[None], timeout: float) -> None:
        """Wait until ``waiter`` is done, the client disconnects, or ``timeout`` seconds pass."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._until_disconnect())
        await asyncio.wait((waiter, self._task), timeout=timeout, return_when="FIRST_COMPLETED")

    def close(self) -> None:
        """Stop watching."""
        # Let go of the task: cancelled, it keeps its CancelledError, whose traceback holds
        # the frame of _until_disconnect, which holds this watch.  Kept here, that would be a
        # reference cycle per long poll, freed only by the collector (or never, once a
        # collection's survivors are frozen: see the server's _quiet_collector).
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # (a no-op once it has finished)

    async def _until_disconnect(self) -> None:
        receive = self._receive
        while (await receive())["type"] != "http.disconnect":
            pass  # a body the poll does not read
