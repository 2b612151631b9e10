"""What ``import workstate`` loads: the model, not the checkers or the optional dependencies;
and what a server loads only on first use (fault rules, sessions, journal entries, the state
file).

Each test but the last runs a fresh interpreter (the test process has imported everything
long ago) and reads its ``sys.modules``; nothing here is timed (``benchmarks/startup.py`` measures).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from workstate import NotFoundError
from workstate.server import MockServer

# Loaded on first use only (see "Start-up" in docs/performance.md).
CHECKERS = [
    "workstate._invariants",
    "workstate._trace",
    "workstate._history",
    "workstate._linearize",
    "workstate._timeline",
]
OPTIONAL = ["pendulum", "dateutil", "transitions", "tomllib", "hypothesis", "sqlite3", "hashlib"]


def run(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object, returned parsed."""
    prelude = (
        "import json, sys\ndef loaded(names):\n    return [n for n in names if n in sys.modules]\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_import_workstate_loads_neither_the_checkers_nor_the_optional_dependencies() -> None:
    out = run(
        f"""
        import workstate
        deferred = {CHECKERS + OPTIONAL + ["argparse", "workstate._environment_state"]!r}
        print(json.dumps({{"loaded": loaded(deferred)}}))
        """
    )
    assert out == {"loaded": []}


def test_the_server_loads_neither_the_checkers_nor_sqlite_without_a_state_file() -> None:
    out = run(
        f"""
        import workstate.server._cli
        from workstate.server import MockServer
        MockServer().close()
        print(json.dumps({{"loaded": loaded({CHECKERS + OPTIONAL[:-1]!r})}}))
        """
    )
    assert out == {"loaded": []}


def test_each_checker_name_loads_its_module_on_first_use() -> None:
    out = run(
        """
        import workstate
        names = set(dir(workstate))
        before = loaded(["workstate._trace", "workstate._linearize"])
        from workstate import check_history
        check_trace = workstate.check_trace
        print(json.dumps({
            "all_in_dir": sorted(set(workstate.__all__) - names),
            "before": before,
            "after": loaded(["workstate._trace", "workstate._linearize"]),
            "same": check_trace is sys.modules["workstate._trace"].check_trace
            and check_history is sys.modules["workstate._linearize"].check_history,
            "cached": "check_trace" in vars(workstate),
            "doc": bool(workstate.TraceChecker.__doc__),
        }))
        """
    )
    assert out == {
        "all_in_dir": [],
        "before": [],
        "after": ["workstate._trace", "workstate._linearize"],
        "same": True,
        "cached": True,
        "doc": True,
    }


def test_pendulum_and_transitions_load_when_used() -> None:
    out = run(
        """
        import datetime as dt
        import workstate
        from workstate._engine import fire
        workstate.SystemClock().now()
        workstate.ManualClock(dt.datetime(2026, 7, 1, tzinfo=dt.UTC)).advance(1)
        before = loaded(["pendulum", "transitions"])
        workstate.to_pendulum(dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
        fire(workstate.ANTHROPIC, workstate.State.QUEUED, workstate.Operation.ACK)
        print(json.dumps({"before": before, "after": loaded(["pendulum", "transitions"])}))
        """
    )
    assert out == {"before": [], "after": ["pendulum", "transitions"]}


def test_an_unknown_name_is_an_attribute_error() -> None:
    out = run(
        """
        import workstate
        try:
            workstate.check_everything
        except AttributeError as exc:
            print(json.dumps({"error": str(exc)}))
        """
    )
    assert out == {"error": "module 'workstate' has no attribute 'check_everything'"}


def test_a_lazy_module_that_cannot_load_raises_its_import_error() -> None:
    """Loading on first use hides nothing: a missing module is an ImportError when used."""
    out = run(
        """
        import datetime as dt
        sys.modules["pendulum"] = None  # as if pendulum were not installed
        sys.modules["workstate._trace"] = None
        import workstate
        errors = []
        for use in (
            lambda: workstate.to_pendulum(dt.datetime(2026, 7, 1, tzinfo=dt.UTC)),
            lambda: workstate.check_trace,
        ):
            try:
                use()
            except ImportError as exc:
                errors.append(type(exc).__name__)
        print(json.dumps({"errors": errors}))
        """
    )
    assert out == {"errors": ["ModuleNotFoundError", "ModuleNotFoundError"]}


def test_the_fault_rules_load_with_the_first_rule_and_draw_as_if_built_at_start() -> None:
    """A server without rules never loads their module; the first rule loads it and works."""
    out = run(
        """
        from workstate.server import MockServer
        server = MockServer(seed=5)
        harness = server.harness
        before = loaded(["workstate.server._faults"])
        quiet = [harness.fault_rules(), harness.clear_faults(), harness.health()["faults"]]
        harness.reset()
        try:
            harness.remove_fault("flt_1")
        except Exception as exc:
            quiet.append(type(exc).__name__)
        still = loaded(["workstate.server._faults"])
        rule = harness.add_fault({"match": {"operation": "poll"}, "probability": 0.5,
                                  "effect": {"status": 503}})
        draws = [harness.faults.pick("poll", "env_a", None, None) is not None for _ in range(8)]
        server.close()
        print(json.dumps({"before": before, "quiet": quiet, "still": still,
                          "after": loaded(["workstate.server._faults"]), "id": rule["id"],
                          "draws": draws}))
        """
    )
    eager = MockServer(seed=5)
    assert eager.harness.faults.rules() == []  # built at once: the draws must be the same
    eager.harness.add_fault(
        {"match": {"operation": "poll"}, "probability": 0.5, "effect": {"status": 503}}
    )
    draws = [eager.harness.faults.pick("poll", "env_a", None, None) is not None for _ in range(8)]
    eager.close()
    assert out == {
        "before": [],
        "quiet": [[], 0, 0, "NotFoundError"],
        "still": [],
        "after": ["workstate.server._faults"],
        "id": "flt_1",
        "draws": draws,
    }
    assert sorted(set(draws)) == [False, True]  # (this seed draws both ways)


# What the server defers: neither its start nor its first work-API calls need them.
SERVER_DEFERRED = [
    "workstate._environment_state",
    "workstate.server._faults",
    "workstate.server._journal_entry",
    "workstate.server._sqlite",
]


def test_a_server_answers_its_first_calls_without_the_deferred_modules() -> None:
    out = run(
        f"""
        import httpx2, asyncio
        from workstate.server import MockServer
        server = MockServer()
        async def calls():
            transport = httpx2.ASGITransport(app=server.app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
                work = "/v1/environments/env_a/work"
                stats = await c.get(work + "/stats")
                created = await c.post("/mock/environments/env_a/work")
                polled = await c.get(work + "/poll")
                acked = await c.post(f"{{work}}/{{polled.json()['id']}}/ack")
                health = await c.get("/mock/health")
                codes = [r.status_code for r in (stats, created, polled, acked)]
                return codes, health.json()["faults"]
        answers = asyncio.run(calls())
        server.close()
        from workstate._time import _patterns, parse_time
        from workstate.server._session_api import _token_paths
        compiled = [_patterns.cache_info().currsize, _token_paths.cache_info().currsize]
        parse_time("2026-07-01T08:15:00Z")
        compiled.append(_patterns.cache_info().currsize)
        print(json.dumps({{"answers": answers, "loaded": loaded({SERVER_DEFERRED!r}),
                          "compiled": compiled}}))
        """
    )
    # (the regular expressions only a time parse or a sessions token needs: compiled then)
    assert out == {"answers": [[200, 200, 200, 200], 0], "loaded": [], "compiled": [0, 0, 1]}


def test_the_journal_entry_class_loads_when_the_journal_is_first_read() -> None:
    out = run(
        f"""
        import httpx2, asyncio
        from workstate.server import MockServer
        server = MockServer()
        async def calls():
            transport = httpx2.ASGITransport(app=server.app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
                await c.get("/v1/environments/env_a/work/stats")
                before = loaded({SERVER_DEFERRED!r})
                journal = (await c.get("/mock/journal")).json()["data"]
                return before, [(e["seq"], e["operation"], e["status"]) for e in journal]
        before, journal = asyncio.run(calls())
        server.close()
        from workstate.server import _journal, _journal_entry
        try:
            _journal.NoSuchName
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({{"before": before, "journal": journal,
                          "after": loaded({SERVER_DEFERRED!r}),
                          "same": _journal.JournalEntry is _journal_entry.JournalEntry,
                          "missing": missing}}))
        """
    )
    assert out == {
        "before": [],
        "journal": [[1, "stats", 200]],
        "after": ["workstate.server._journal_entry"],
        "same": True,
        "missing": "module 'workstate.server._journal' has no attribute 'NoSuchName'",
    }


def test_the_store_records_load_when_an_environment_is_stored_or_restored() -> None:
    out = run(
        f"""
        import datetime as dt
        from workstate import Environment
        from workstate import _environment
        env = Environment("env_a", track_changes=True)
        env.create(dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
        before = loaded({SERVER_DEFERRED!r})
        changes = env.take_changes()
        copy = Environment.restore("env_a", now=dt.datetime(2026, 7, 1, tzinfo=dt.UTC),
                                   state=env.state(), items=env.item_states())
        try:
            _environment.NoSuchName
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({{"before": before, "after": loaded({SERVER_DEFERRED!r}),
                          "items": [len(changes.items), len(copy)],
                          "same": _environment.ItemState is type(changes.items[0]),
                          "missing": missing}}))
        """
    )
    assert out == {
        "before": [],
        "after": ["workstate._environment_state"],
        "items": [1, 1],
        "same": True,
        "missing": "module 'workstate._environment' has no attribute 'NoSuchName'",
    }


def test_a_state_file_loads_the_sqlite_half_and_keeps_the_state(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.db"
    code = f"""
        from workstate.server import MockServer
        server = MockServer(state={str(path)!r})
        ids = [w.id for w in server.environment("env_a").list(server.now()).data]
        if not ids:
            server.create_work("env_a")
        server.close()
        print(json.dumps({{"ids": len(ids), "loaded": loaded({SERVER_DEFERRED!r})}}))
        """
    first, second = run(code), run(code)
    assert first["ids"] == 0
    assert second["ids"] == 1  # restored from the file
    assert first["loaded"] == second["loaded"]
    assert "workstate.server._sqlite" in second["loaded"]
    assert "workstate._environment_state" in second["loaded"]


def test_a_harness_without_rules_answers_as_an_empty_rule_set() -> None:
    """In process (the fresh-interpreter test above cannot count for coverage)."""
    harness = MockServer().harness
    assert harness.fault_rules() == []
    assert harness.clear_faults() == 0
    assert harness.health()["faults"] == 0
    with pytest.raises(NotFoundError, match="no fault rule 'flt_1'"):
        harness.remove_fault("flt_1")
    harness.reset()
    assert harness._fault_set is None  # none of these built the set
