"""Shared test set-up: Hypothesis profiles and common times."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# The fixtures of workstate's pytest plugin (its entry point is off here; see pyproject.toml).
pytest_plugins = ["workstate.pytest_plugin"]

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """T0 plus ``seconds``."""
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def t0() -> dt.datetime:
    return T0


@pytest.fixture(scope="module")
def url(mock: Any) -> Iterator[str]:
    """The base URL of the module's ``mock`` server on a loopback port, up for the whole module.

    A server test module defines its own (module-scoped) ``mock`` fixture, the server it wants.
    """
    from workstate.server import serve_in_thread

    with serve_in_thread(mock) as base:
        yield base


@pytest.fixture(scope="session", autouse=True)
def _fresh_core_caches() -> None:
    """Empty the core's per-profile caches once per test session.

    Nothing needs this in a normal run.  Mutation testing (``scripts/mutation.py``) forks each
    mutant's session from a process that already ran the suite: without this, the compiled
    table rows and lookups of the unmutated code would answer in place of the mutant's.
    """
    from workstate import _engine, _work

    _work._PLANS.clear()
    _work._TTL_CACHE.clear()
    for cached in (_engine.machine, _engine.lookup, _engine.allowed_operations):
        cached.cache_clear()
