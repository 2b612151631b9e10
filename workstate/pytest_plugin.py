"""workstate's pytest plugin: a mock work API for your worker's tests, reset for each test.

Installed with the package (entry point ``pytest11``), active once the ``server`` extra is
there too (``pip install 'sandbox-workstate[server]'``); without it, importing this module
still works and the fixtures fail with a message naming the extra.

Fixtures (all prefixed ``workstate_``, so they cannot shadow yours):

- ``workstate_server`` (session): one :class:`~workstate.server.MockServer` on a manual clock,
  served by uvicorn on a loopback port in a background thread for the whole session;
- ``workstate_mock`` (function): that server :meth:`reset <workstate.server.MockServer.reset>`
  for this test, wrapped in :class:`WorkstateMock`, whose helpers create work, move the
  clock, add fault rules and read the journal;
- ``workstate_client`` / ``workstate_async_client``: ``anthropic.Anthropic`` /
  ``anthropic.AsyncAnthropic`` pointed at the server over loopback (``max_retries=0``: a
  test sees each answer; pass your own client options through :meth:`WorkstateMock.client`);
- ``workstate_asgi_client``: an ``anthropic.AsyncAnthropic`` that reaches the *same* server
  in process, through ``httpx2.ASGITransport`` (no socket).

Whichever way a test reaches it, the state is one: an item created with
``workstate_mock.create_work`` is polled by either client, and the journal lists requests
from both (``client`` is ``"asgi"`` for the in-process ones).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import anthropic

    from workstate._records import WorkData
    from workstate._trace import TraceReport
    from workstate._work import Work
    from workstate.server import MockServer

__all__ = ["WorkstateMock"]

START = _dt.datetime(2026, 7, 1, 8, 0, tzinfo=_dt.UTC)
"""Where the session server's manual clock starts, and goes back to before each test."""
ENVIRONMENT_ID = "env_test"
"""The environment the helpers use unless told otherwise."""
_MISSING = (
    "workstate's pytest fixtures need the mock server, which comes with the 'server' extra: "
    "pip install 'sandbox-workstate[server]' (they also need the anthropic SDK for the "
    "client fixtures)"
)


def _require_server() -> None:
    try:
        import workstate.server  # noqa: F401
    except ImportError:
        pytest.fail(_MISSING, pytrace=False)


class WorkstateMock:
    """The session's mock server, reset for this test, with helpers for a test's needs."""

    def __init__(self, server: MockServer, url: str) -> None:
        self.server = server
        """The :class:`~workstate.server.MockServer` (its ``harness`` has the rest)."""
        self.url = url
        """The server's base URL, e.g. ``http://127.0.0.1:41234``."""
        self.environment_id = ENVIRONMENT_ID
        """The environment the helpers use by default."""

    def create_work(
        self,
        environment_id: str | None = None,
        *,
        data: WorkData | None = None,
        metadata: dict[str, str] | None = None,
        secret: str | None = None,
        work_id: str | None = None,
    ) -> Work:
        """Queue an item (it wakes a waiting long poll at once)."""
        return self.server.create_work(
            environment_id or self.environment_id,
            data=data,
            metadata=metadata,
            secret=secret,
            work_id=work_id,
        )

    def advance(self, seconds: float) -> _dt.datetime:
        """Move the manual clock forward (leases that fall due expire)."""
        return self.server.advance(seconds)

    def now(self) -> _dt.datetime:
        """The server's time."""
        return self.server.now()

    def add_fault(self, rule: dict[str, Any] | None = None, **short: Any) -> dict[str, Any]:
        """Add a fault rule, as ``POST /mock/faults`` takes it, or in short form.

        The short form takes the match keys (``operation``, ``environment_id``, ``work_id``,
        ``worker_id``), ``times`` and ``probability``, and the effect's keys (``status``,
        ``type``, ``message``, ``retry_after``, ``delay_ms``, ``drop``)::

            workstate_mock.add_fault(operation="heartbeat", status=503, times=1)
        """
        if rule is None:
            match_keys = ("operation", "environment_id", "work_id", "worker_id")
            rule = {
                "match": {k: short.pop(k) for k in match_keys if k in short},
                **{k: short.pop(k) for k in ("times", "probability") if k in short},
                "effect": short,
            }
        elif short:
            raise TypeError("give a rule or keywords, not both")
        return self.server.harness.add_fault(rule)

    def journal(self, **filters: Any) -> list[dict[str, Any]]:
        """The journal's entries (``environment_id``, ``work_id``, ``operation``, ``since``)."""
        return self.server.harness.entries(**filters)

    def requests(self, **filters: Any) -> list[tuple[Any, ...]]:
        """The journal in short: ``(operation, status, applied, fault id)`` per request."""
        return [
            (e["operation"], e["status"], e["applied"], e["fault"] and e["fault"]["id"])
            for e in self.journal(**filters)
        ]

    def check_journal(self, *, complete: bool = True) -> TraceReport:
        """The trace checker's verdict on the journal's per-item records."""
        from workstate._trace import check_trace, journal_trace_records

        records = journal_trace_records(self.journal())
        return check_trace(records, profile=self.server.profile, complete=complete)

    def inspect(self, environment_id: str | None = None) -> dict[str, Any]:
        """Every item of the environment with its private lease fields."""
        return self.server.harness.inspect(environment_id or self.environment_id)

    def client(self, **options: Any) -> anthropic.Anthropic:
        """A new ``anthropic.Anthropic`` for the server (``max_retries=0`` unless given)."""
        import anthropic

        options.setdefault("max_retries", 0)
        options.setdefault("api_key", "workstate-test")
        return anthropic.Anthropic(base_url=self.url, **options)

    def async_client(self, **options: Any) -> anthropic.AsyncAnthropic:
        """A new ``anthropic.AsyncAnthropic`` for the server over loopback."""
        import anthropic

        options.setdefault("max_retries", 0)
        options.setdefault("api_key", "workstate-test")
        return anthropic.AsyncAnthropic(base_url=self.url, **options)

    def asgi_client(self, **options: Any) -> anthropic.AsyncAnthropic:
        """A new ``anthropic.AsyncAnthropic`` that reaches the server in process."""
        import anthropic
        import httpx2

        transport = httpx2.ASGITransport(app=self.server.app)
        options.setdefault("max_retries", 0)
        options.setdefault("api_key", "workstate-test")
        http = httpx2.AsyncClient(transport=transport, base_url="http://workstate.mock")
        return anthropic.AsyncAnthropic(
            base_url="http://workstate.mock", http_client=http, **options
        )


@pytest.fixture(scope="session")
def workstate_server() -> Iterator[tuple[MockServer, str]]:
    """The session's mock server and its URL (manual clock at :data:`START`, seed 0)."""
    _require_server()
    from workstate._time import ManualClock
    from workstate.server import MockServer, serve_in_thread

    server = MockServer(clock=ManualClock(START), seed=0)
    with serve_in_thread(server) as url:
        yield server, url


@pytest.fixture
def workstate_mock(workstate_server: tuple[MockServer, str]) -> WorkstateMock:
    """The session's mock server, reset for this test (items, faults, journal, clock, ids)."""
    server, url = workstate_server
    server.reset()
    return WorkstateMock(server, url)


@pytest.fixture
def workstate_client(workstate_mock: WorkstateMock) -> Iterator[anthropic.Anthropic]:
    """An ``anthropic.Anthropic`` pointed at the mock server (``max_retries=0``)."""
    with workstate_mock.client() as client:
        yield client


@pytest.fixture
def workstate_async_client(workstate_mock: WorkstateMock) -> anthropic.AsyncAnthropic:
    """An ``anthropic.AsyncAnthropic`` pointed at the mock server over loopback."""
    return workstate_mock.async_client()


@pytest.fixture
def workstate_asgi_client(workstate_mock: WorkstateMock) -> anthropic.AsyncAnthropic:
    """An ``anthropic.AsyncAnthropic`` reaching the same mock server in process."""
    return workstate_mock.asgi_client()
