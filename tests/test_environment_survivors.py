"""Environment: what mutation testing found unguarded (``scripts/mutation.py _environment``).

Only the public API is used (``Environment`` methods, ``QueueStats``, ``WorkPage``, the
errors), so these tests hold for any implementation of the indexes behind it.  The expected
values are written from the spec (§1, §3, §5, §7, §8) and ``docs/server-guide.md``.
"""

from __future__ import annotations

import datetime as dt

from workstate._environment import Environment

T0 = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)


def test_a_new_environment_is_empty() -> None:
    env = Environment("env_1")
    assert (len(env), env.latest_now, "work_1" in env) == (0, None, False)
