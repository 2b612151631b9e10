"""The pytest plugin: its fixtures here (it loads itself), and its documented example run."""

from __future__ import annotations

import asyncio
import importlib
import pathlib
import re
import subprocess
import sys
from typing import Any

import anthropic
import pytest

import workstate.pytest_plugin as plugin
from workstate import NO_HEARTBEAT

ENV = "env_test"
DOCS = pathlib.Path(__file__).parent.parent / "docs" / "mock-server.md"


def fresh(mock: Any) -> None:
    """What every test starts from, whatever ran before it."""
    assert mock.journal() == []
    assert mock.now() == plugin.START
    assert mock.inspect()["data"] == []
    assert mock.server.harness.fault_rules() == []


def test_a_test_starts_from_a_reset_server(workstate_mock: Any) -> None:
    fresh(workstate_mock)
    workstate_mock.create_work()
    workstate_mock.add_fault(operation="poll", status=503)
    workstate_mock.advance(30)


def test_and_so_does_the_next_one(workstate_mock: Any) -> None:
    fresh(workstate_mock)
    workstate_mock.create_work()
    workstate_mock.advance(30)


def test_the_loopback_and_in_process_clients_share_one_server(
    workstate_mock: Any,
    workstate_client: anthropic.Anthropic,
    workstate_asgi_client: anthropic.AsyncAnthropic,
    workstate_async_client: anthropic.AsyncAnthropic,
) -> None:
    first = workstate_mock.create_work(secret="s1")
    second = workstate_mock.create_work(work_id="work_second", metadata={"k": "v"})
    polled = workstate_client.beta.environments.work.poll(ENV)

    async def in_process() -> Any:
        work = workstate_asgi_client.beta.environments.work
        item = await work.poll(ENV)
        await work.ack(polled.id, environment_id=ENV)  # the item the other client polled
        return item

    async def over_loopback() -> Any:
        async with workstate_async_client as client:
            return await client.beta.environments.work.retrieve(second.id, environment_id=ENV)

    other = asyncio.run(in_process())
    seen = asyncio.run(over_loopback())
    assert (polled.id, polled.secret, other.id, seen.metadata) == (
        first.id,
        "s1",
        second.id,
        {"k": "v"},
    )
    clients = [e["client"] for e in workstate_mock.journal()]
    assert clients[1:3] == ["asgi", "asgi"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", clients[0])
    assert workstate_mock.inspect()["data"][0]["state"] == "starting"


def test_the_helpers(workstate_mock: Any, workstate_client: anthropic.Anthropic) -> None:
    item = workstate_mock.create_work()
    rule = workstate_mock.add_fault(
        operation="ack", work_id=item.id, times=1, status=429, retry_after=1
    )
    assert rule["match"] == {"operation": "ack", "work_id": item.id}
    assert (rule["times"], rule["effect"]) == (1, {"status": 429, "retry_after": 1})
    full = workstate_mock.add_fault({"match": {"operation": "stop"}, "effect": {"delay_ms": 1}})
    assert full["id"] == "flt_2"
    with pytest.raises(TypeError, match="not both"):
        workstate_mock.add_fault({"effect": {"status": 503}}, status=503)
    work = workstate_client.beta.environments.work
    work.poll(ENV)
    with pytest.raises(anthropic.RateLimitError):
        work.ack(item.id, environment_id=ENV)
    work.ack(item.id, environment_id=ENV)
    work.heartbeat(item.id, environment_id=ENV, expected_last_heartbeat=NO_HEARTBEAT)
    work.stop(item.id, environment_id=ENV, force=True)
    assert workstate_mock.requests() == [
        ("poll", 200, True, None),
        ("ack", 429, False, "flt_1"),
        ("ack", 200, True, None),
        ("heartbeat", 200, True, None),
        ("stop", 204, True, "flt_2"),
    ]
    assert workstate_mock.requests(operation="ack")[0][1] == 429
    assert workstate_mock.check_journal().ok
    with workstate_mock.client(max_retries=2) as patient:
        assert patient.max_retries == 2


def test_the_fixtures_name_the_extra_when_the_server_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "workstate.server", None)
    with pytest.raises(pytest.fail.Exception, match=r"sandbox-workstate\[server\]"):
        plugin._require_server()


def test_the_plugin_module_imports_without_the_server() -> None:
    # The plugin loads before anything is measured; reloading it runs its module code again,
    # with workstate.server hidden, to show the import needs no extra.
    saved = {k: v for k, v in sys.modules.items() if k.startswith("workstate.server")}
    try:
        for name in saved:
            sys.modules[name] = None  # type: ignore[assignment]
        reloaded = importlib.reload(plugin)
    finally:
        sys.modules.update(saved)
    assert reloaded.ENVIRONMENT_ID == ENV


def test_the_documented_example_runs(tmp_path: pathlib.Path) -> None:
    text = DOCS.read_text()
    code = text.split("<!-- the plugin example -->\n```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "test_example.py").write_text(code)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
            "test_example.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
