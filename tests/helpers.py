"""Builders shared by the tests: a work item in each state (by legal operations only), a mock
server's full state for "nothing changed" checks, and the ways the server tests reach a server
(in process through its ASGI app, or over a loopback socket)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import httpx2
import pytest

from workstate import ANTHROPIC, NO_HEARTBEAT, AckLease, Profile, State, Work

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)


ACK_LEASE = attrs.evolve(ANTHROPIC, name="anthropic-ack-lease", ack_lease=AckLease.DEFAULT_TTL)
"""``anthropic`` but with an ack that starts a lease of the default TTL (what ``anthropic`` did
before the ack lease became a knob), for the tests about an acked item's expiry."""


def at(seconds: float) -> dt.datetime:
    """T0 plus ``seconds``."""
    return T0 + dt.timedelta(seconds=seconds)


def new(profile: Profile = ANTHROPIC, **kw: object) -> Work:
    return Work.create(
        id="work_1", environment_id="env_1", session_id="sesn_1", now=T0, profile=profile, **kw
    )


def in_state(state: State, profile: Profile = ANTHROPIC, *, beat: bool = True) -> Work:
    """An item in ``state`` at time 10 s at the latest; ``beat`` adds a heartbeat before a stop."""
    w = new(profile)
    if state is State.QUEUED:
        return w
    w = w.ack(at(1))
    if state is State.STARTING:
        return w
    if state is State.STOPPED and not beat:
        return w.stop(at(3), force=True)
    w, _ = w.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT)
    if state is State.ACTIVE:
        return w
    w = w.stop(at(3))
    if state is State.STOPPING:
        return w
    return w.stop(at(4))


def full_state(server: Any) -> Any:
    """Everything the server holds, private lease fields and index bookkeeping included."""
    with server.lock:
        envs = {}
        for env_id, env in server._environments.items():
            slots = [(s.work, s.seq, s.delivery, s.delivery_key) for s in env._by_seq.values()]
            envs[env_id] = (
                slots,
                sorted(env._slots),
                list(env._present.iter_from(0)),
                list(env._fresh.iter_from(0)),
                list(env._queued.iter_from(0)),
                [key for block in env._deliveries._blocks for key in block],
                [key for block in env._returning._blocks for key in block],
                [key for block in env._ending._blocks for key in block],
                [key for block in env._polls._blocks for key in block],
                dict(env._pollers),
                env._named_poll_seen,
                env._id_counter,
                env._now,
            )
        waiters = {k: len(v) for k, v in server._waiters.items()}
        hub = server.sessions
        sessions = (
            dict(hub._sessions.items()),
            dict(hub._grants.items()),
            {k: sorted(v.items()) for k, v in hub._kept.items()},
            dict(hub._holders.items()),
            dict(hub._loose),
            {k: len(v) for k, v in hub._waiters.items()},
        )
        return envs, waiters, sessions, server.clock.now()


def asgi_client(server: Any, base_url: str = "http://mock") -> httpx2.AsyncClient:
    """An async client that calls ``server``'s ASGI app in process, no socket (``async with``)."""
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=server.app), base_url=base_url)


@contextlib.contextmanager
def served_http(server: Any, *, timeout: float = 10) -> Iterator[httpx2.Client]:
    """``server`` on a loopback port in a thread, and a client on it; both closed on leaving."""
    # Imported here: some tests unload and re-import workstate.server to test its absence.
    from workstate.server import serve_in_thread

    with serve_in_thread(server) as base, httpx2.Client(base_url=base, timeout=timeout) as client:
        yield client


def create_work(http: httpx2.Client, env: str, **body: Any) -> dict[str, Any]:
    """``POST /mock/environments/{env}/work``: a new queued item, as the server answers it."""
    r = http.post(f"/mock/environments/{env}/work", json=body or None)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def record_serve(
    monkeypatch: pytest.MonkeyPatch, then: Callable[[Any], None] | None = None
) -> dict[str, Any]:
    """Make ``serve``'s command return instead of serving forever; returns what it would serve.

    The dict fills in when the command runs: ``server``, ``port``, ``log_level`` and the
    keyword options it passes on (``stack``, ``access_log``).  ``then(server)`` runs in place of
    serving, so a test can drive the server the command built.
    """
    from workstate.server import _cli

    seen: dict[str, Any] = {}

    def fake_serve(server: Any, sock: Any, log_level: str, **options: Any) -> None:
        seen.update(options, server=server, port=sock.getsockname()[1], log_level=log_level)
        if then is not None:
            then(server)

    monkeypatch.setattr(_cli, "serve", fake_serve)
    return seen


def decode_secret(secret: str) -> dict[str, Any]:
    """The JSON payload of a minted ``secret`` (unpadded base64url, as the SDK decodes it)."""
    assert "=" not in secret
    return json.loads(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4)))  # type: ignore[no-any-return]
