"""Durable state: the store interface, the SQLite file, restarts, and a SIGKILL mid-load.

The restart tests go through real HTTP (a uvicorn server on a loopback port); the SIGKILL test
drives ``python -m workstate serve --state FILE`` in a subprocess through the official SDK,
kills it at a random moment and checks every answered call against the restored state.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx2
import pytest

from workstate import (
    NO_HEARTBEAT,
    QODER,
    InvalidInputError,
    ManualClock,
    State,
    WorkstateError,
    invariant_violations,
)
from workstate._environment import Environment, EnvironmentChanges, ItemState
from workstate._profile import ANTHROPIC
from workstate.server import MockServer, _cli, serve_in_thread
from workstate.server._sqlite import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Batch,
    SqliteStore,
    item_from_json,
    item_to_json,
)
from workstate.server._store import CommittingLock, MemoryStore, StateFileError, StateKeeper

T0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)
ENV = "env_durable"


def full_state(mock: MockServer) -> dict[str, Any]:
    """Every environment's bookkeeping and items, private lease fields included."""
    with mock.lock:
        return {
            env_id: (env.state(), env.item_states()) for env_id, env in mock._environments.items()
        }


def stored_state(mock: MockServer) -> dict[str, Any]:
    """What the state file holds right now (read through the server's own connection)."""
    with mock.lock:
        snapshot = mock._keeper.store.load(mock.profile)
    return dict(snapshot.environments)


def work_path(*rest: str) -> str:
    return "/".join((f"/v1/environments/{ENV}/work", *rest))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


# ------------------------------------------------------------------------------ records as JSON
def items_in_every_state() -> list[ItemState]:
    env = Environment("env_1")
    for i in range(5):
        env.create(T0, session_id=f"sesn_{i}", work_id=f"work_{i}", secret=f"s{i}")
    env.update_metadata("work_0", T0, {"team": "a", "é": "\U0001f600"})
    env.poll(T0, worker_id="w1")  # work_0 pending
    for i in (1, 2, 3, 4):
        env.ack(f"work_{i}", T0, worker_id="w2")
    for i in (2, 3, 4):
        env.heartbeat(f"work_{i}", T0, expected_last_heartbeat=NO_HEARTBEAT)
    env.stop("work_3", T0)
    env.stop("work_4", T0, force=True)
    return list(env.item_states())


def test_an_item_round_trips_with_every_private_field() -> None:
    items = items_in_every_state()
    assert {i.work.state for i in items} == set(State)
    for item in items:
        text = json.dumps(item_to_json(item))
        back = item_from_json(json.loads(text), "env_1", ANTHROPIC)
        assert attrs.evolve(back, seq=item.seq) == item
        assert back.work.secret == item.work.secret
    assert items[0].window_until == T0 + dt.timedelta(seconds=5)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda r: r.pop("version"), "version"),
        (lambda r: r.update(version="2"), "version"),
        (lambda r: r.update(attempt=None), "attempt"),
        (lambda r: r.update(state="lost"), "state"),
        (lambda r: r.update(created_at="yesterday"), "created_at"),
        (lambda r: r.update(metadata={"k": 1}), "metadata"),
        (lambda r: r.update(data=[]), "data"),
        (lambda r: r.update(secret=7), "secret"),
    ],
)
def test_a_bad_item_record_is_refused_naming_the_key(change: Any, key: str) -> None:
    record = item_to_json(items_in_every_state()[2])
    change(record)
    with pytest.raises(WorkstateError) as info:
        item_from_json(record, "env_1", ANTHROPIC)
    assert (info.value.status, getattr(info.value, "key", None)) == (400, key)


def test_an_item_record_must_be_an_object() -> None:
    with pytest.raises(WorkstateError) as info:
        item_from_json([], "env_1", ANTHROPIC)
    assert getattr(info.value, "key", None) == "record"


# ------------------------------------------------------------------------------ the file
def test_a_new_file_is_private_versioned_and_in_wal_mode(path: Path) -> None:
    store = SqliteStore(path)
    assert store.load(ANTHROPIC).environments == {}
    store.close()
    store.close()  # idempotent
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(con.execute("SELECT key, value FROM meta"))
        assert meta["profile"] == "anthropic"
        assert json.loads(meta["profile_settings"])["default_ttl_seconds"] == "120"
    finally:
        con.close()


def test_an_empty_sqlite_file_becomes_a_state_file(path: Path) -> None:
    sqlite3.connect(path).close()  # zero bytes
    SqliteStore(path).close()
    other = path.with_name("other.db")
    con = sqlite3.connect(other)
    con.execute("PRAGMA user_version=7")  # a SQLite file with no tables and no mark
    con.close()
    assert other.stat().st_size > 0
    SqliteStore(other).close()
    con = sqlite3.connect(other)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def start_error(path: Path, profile: Any = ANTHROPIC) -> str:
    with pytest.raises(StateFileError) as info:
        MockServer(state=path, profile=profile)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"state file {path}: ")
    return info.value.problem


def test_a_file_that_is_not_sqlite_is_refused(path: Path) -> None:
    path.write_text("not a database, just some text that is long enough " * 100)
    assert "is not a workstate state file" in start_error(path)


def test_a_foreign_sqlite_database_is_refused(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    problem = start_error(path)
    assert "is a SQLite database but not a workstate state file" in problem
    assert "application_id 0x0" in problem


def test_another_schema_version_is_refused(path: Path) -> None:
    SqliteStore(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    problem = start_error(path)
    assert f"has schema version {SCHEMA_VERSION + 1}" in problem
    assert f"reads version {SCHEMA_VERSION}" in problem


def test_a_file_of_another_profile_is_refused(path: Path) -> None:
    MockServer(state=path).close()
    assert "written under the profile 'anthropic', not 'qoder'" in start_error(path, QODER)
    assert "--profile anthropic" in start_error(path, QODER)


def test_a_file_of_other_profile_settings_is_refused(path: Path) -> None:
    MockServer(state=path, profile_overrides={"default_ttl_seconds": 2}).close()
    with pytest.raises(StateFileError) as info:
        MockServer(state=path)
    assert "with other settings: default_ttl_seconds 2 (now 120)" in info.value.problem
    assert "min_ttl_seconds 2 (now 10)" in info.value.problem
    MockServer(state=path, profile_overrides={"default_ttl_seconds": 2}).close()
    corrupt(path, "UPDATE meta SET value = '[' WHERE key = 'profile_settings'")
    assert "default_ttl_seconds ? (now 120)" in start_error(path)


def test_a_file_in_use_by_another_server_is_refused(path: Path) -> None:
    first = MockServer(state=path)
    try:
        assert "is in use" in start_error(path)
    finally:
        first.close()
    MockServer(state=path).close()  # free again once the first server let go


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert "is a directory" in start_error(tmp_path)


def test_a_file_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    assert "cannot be created" in start_error(tmp_path / "missing" / "state.db")


def corrupt(path: Path, sql: str, *args: Any) -> None:
    con = sqlite3.connect(path)
    con.execute(sql, args)
    con.commit()
    con.close()


def saved_server(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    mock.create_work(ENV, work_id="work_1")
    mock.close()


@pytest.mark.parametrize(
    ("sql", "args", "words"),
    [
        ("UPDATE items SET record = ?", ("{not json",), "its record is not JSON"),
        ("UPDATE items SET record = ?", ("[]",), "must be an object"),
        ("UPDATE items SET environment_id = ?", ("env_gone",), "an environment it has no record"),
        ("UPDATE items SET work_id = ?", ("work_2",), "its record names another id"),
        ("UPDATE items SET seq = ?", (5,), "sequence number 5"),
        ("UPDATE environments SET state = ?", ("{}",), "the record has no 'pollers'"),
        ("UPDATE environments SET state = ?", ("[]",), "must be an object"),
        ("UPDATE environments SET state = ?", ("{",), "a record is not JSON"),
        ("INSERT INTO records VALUES ('k', 'k', ?)", ("{",), "a record is not JSON"),
        ("UPDATE meta SET value = ? WHERE key = 'clock'", ("noon",), "clock is not"),
        ("DELETE FROM meta WHERE key = ?", ("clock",), "holds environments but no clock"),
        (
            "UPDATE items SET record = json_set(record, '$.state', 'active')",
            (),
            "breaks an invariant",
        ),
    ],
)
def test_records_that_do_not_restore_are_refused(
    path: Path, sql: str, args: tuple[Any, ...], words: str
) -> None:
    saved_server(path)
    corrupt(path, sql, *args)
    assert words in start_error(path)


def test_a_damaged_file_is_refused(path: Path) -> None:
    saved_server(path)
    corrupt(path, "DROP TABLE records")
    assert "cannot be read" in start_error(path)


def test_the_sync_mode_is_checked(path: Path) -> None:
    with pytest.raises(WorkstateError) as info:
        SqliteStore(path, synchronous="sometimes")
    assert (info.value.status, getattr(info.value, "key", None)) == (400, "synchronous")
    store = SqliteStore(path, synchronous="full")
    assert store.synchronous == "full"
    store.close()
    with pytest.raises(StateFileError, match="is closed"):
        store.load(ANTHROPIC)


# ------------------------------------------------------------------------------ commit points
def test_every_answered_call_is_committed_before_its_answer(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    with serve_in_thread(mock) as url, httpx2.Client(base_url=url) as http:
        calls = [
            ("POST", f"/mock/environments/{ENV}/work", {"json": {"work_id": "work_1"}}),
            ("POST", f"/mock/environments/{ENV}/work", {"json": {"secret": "s"}}),
            ("GET", work_path("poll"), {"headers": {"anthropic-worker-id": "w1"}}),
            ("POST", work_path("work_1", "ack"), {}),
            (
                "POST",
                work_path("work_1", "heartbeat"),
                {"params": {"expected_last_heartbeat": NO_HEARTBEAT}},
            ),
            ("POST", work_path("work_1"), {"json": {"metadata": {"k": "v"}}}),
            ("POST", "/mock/clock", {"json": {"advance_seconds": 10}}),
            ("POST", work_path("work_1", "stop"), {"json": {"force": False}}),
            ("POST", work_path("work_1", "ack"), {}),  # 409: changes nothing
            ("POST", "/mock/clock", {"json": {"advance_seconds": 200}}),  # the lease runs out
            ("GET", work_path(), {}),
        ]
        for method, url_path, kwargs in calls:
            answer = http.request(method, url_path, **kwargs)
            assert answer.status_code in (200, 204, 409), answer.text  # (204: the stop)
            assert stored_state(mock) == full_state(mock), (method, url_path)
    assert mock.environment(ENV).get("work_1", mock.now()).state is State.STOPPED
    mock.close()


def test_a_call_that_changes_nothing_commits_nothing(path: Path) -> None:
    commits: list[Batch] = []
    mock = MockServer(state=path, clock=ManualClock(T0))
    store = mock._keeper.store
    original = store.commit

    def spy(batch: Batch) -> None:
        commits.append(batch)
        original(batch)

    store.commit = spy  # type: ignore[method-assign]
    mock.create_work(ENV, work_id="work_1")
    assert len(commits) == 1
    (batch,) = commits
    assert batch.clock == T0  # the first time handed to the core
    assert [i.work.id for _, changes in batch.changes for i in changes.items] == ["work_1"]
    with serve_in_thread(mock) as url, httpx2.Client(base_url=url) as http:
        assert http.get(work_path("work_1")).status_code == 200
        assert http.get(work_path("stats")).status_code == 200
        assert http.post(work_path("work_9", "ack")).status_code == 404
    assert len(commits) == 1
    mock.advance(1)
    assert len(commits) == 2
    assert commits[1].clock == T0 + dt.timedelta(seconds=1)
    assert commits[1].changes == ()
    mock.close()


def test_a_failed_commit_is_a_500_and_is_written_by_the_next_commit(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    store = mock._keeper.store
    original = store.commit
    fail = [True]

    def flaky(batch: Batch) -> None:
        if fail.pop(0):
            raise sqlite3.OperationalError("disk I/O error")
        original(batch)

    store.commit = flaky  # type: ignore[method-assign]
    fail.append(False)
    with serve_in_thread(mock) as url, httpx2.Client(base_url=url) as http:
        r = http.post(f"/mock/environments/{ENV}/work", json={"work_id": "work_1"})
        assert r.status_code == 500
        body = r.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "api_error"
        assert "could not write its state file (disk I/O error)" in body["error"]["message"]
        assert http.post(f"/mock/environments/{ENV}/work").status_code == 200
    assert stored_state(mock) == full_state(mock)
    assert len(full_state(mock)[ENV][1]) == 2
    mock.close()


def test_the_lock_is_reentrant_and_commits_once_at_the_outermost_release() -> None:
    flushed: list[int] = []
    lock = CommittingLock(lambda: flushed.append(1))
    with lock:
        with lock:
            pass
        assert flushed == []
    assert flushed == [1]
    assert lock.acquire(blocking=False)
    lock.release()
    assert flushed == [1, 1]

    def fail() -> None:
        raise RuntimeError("commit failed")

    failing = CommittingLock(fail)
    with pytest.raises(RuntimeError), failing:
        pass
    assert failing.acquire(blocking=False)  # released all the same
    failing._on_release = lambda: None
    failing.release()


def test_the_memory_store_keeps_nothing() -> None:
    store = MemoryStore()
    assert not store.durable
    keeper = StateKeeper(store, clock=lambda: T0)
    keeper.put("kind", "k", 1)
    env = Environment("env_1", track_changes=True)
    keeper.touched("env_1", env)
    env.create(T0)
    with keeper.lock:
        pass
    assert store.load(ANTHROPIC).environments == {}
    assert keeper.record("kind", "k") is None  # the release dropped what was staged
    assert env.take_changes()  # a memory store collects nothing: memory is the state
    store.close()


def test_a_memory_server_tracks_no_changes() -> None:
    """Without a state file nothing is written, so nothing is collected per call either."""
    mock = MockServer()
    with pytest.raises(InvalidInputError) as info:
        mock.environment("env_a").take_changes()
    assert info.value.key == "track_changes"


# ------------------------------------------------------------------------------ keyed records
def test_keyed_records_are_committed_with_the_call_and_loaded_at_start(path: Path) -> None:
    mock = MockServer(state=path)
    with mock.lock:
        mock._keeper.put("note", "n1", {"events": [1, 2]})
        mock._keeper.put("note", "n2", "x")
        mock._keeper.put("fault", "f1", None)
        assert mock._keeper.record("note", "n1") == {"events": [1, 2]}  # staged
    with mock.lock:
        mock._keeper.delete("note", "n2")
        mock._keeper.delete("fault", "f1")
        mock._keeper.put("fault", "f1", {"again": True})
        mock._keeper.delete("fault", "never")
        assert mock._keeper.record("note", "n2") is None  # staged for deletion
        assert mock._keeper.record("fault", "f1") == {"again": True}
    with pytest.raises(TypeError):
        mock._keeper.put("note", "bad", object())
    mock.close()
    again = MockServer(state=path)
    assert again._keeper.records("note") == {"n1": {"events": [1, 2]}}
    assert again._keeper.records("fault") == {"f1": {"again": True}}
    assert again._keeper.records("nothing") == {}
    assert again._keeper.record("note", "n1") == {"events": [1, 2]}  # loaded
    assert again._keeper.record("note", "n2") is None
    assert again._keeper.records("note", forget=True) == {"n1": {"events": [1, 2]}}
    assert again._keeper.records("note") == {}  # handed over once
    assert again._keeper.record("note", "n1") is None
    assert again._keeper.records("fault") == {"f1": {"again": True}}  # the others stay
    again.close()


# ------------------------------------------------------------------------------ restarts
def test_a_restart_restores_everything_through_real_http(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0), retain_stopped=1)
    with serve_in_thread(mock) as url:
        client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
        work = client.beta.environments.work
        for n in range(4):
            mock.create_work(ENV, metadata={"n": str(n)}, secret=f"secret-{n}")
        mock.create_work("env_other")
        first = work.poll(ENV, anthropic_worker_id="w1", reclaim_older_than_ms=60_000)
        second = work.poll(ENV, anthropic_worker_id="w2")
        third = work.poll(ENV)
        assert first is not None
        assert second is not None
        assert third is not None
        work.ack(first.id, environment_id=ENV)
        beat = work.heartbeat(first.id, environment_id=ENV, expected_last_heartbeat=NO_HEARTBEAT)
        work.ack(third.id, environment_id=ENV)
        work.stop(third.id, environment_id=ENV, force=True)
        mock.advance(3)
        before = full_state(mock)
        ids_before = mock.environment_ids()
        page = work.list(ENV, limit=2)
    mock.close()

    again = MockServer(state=path, clock=ManualClock(T0 + dt.timedelta(days=1)))
    assert again.now() == T0 + dt.timedelta(seconds=3)  # the manual clock resumes
    assert full_state(again) == before
    assert again.environment_ids() == ids_before
    with serve_in_thread(again) as url:
        client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
        work = client.beta.environments.work
        # The worker carries on with its token; the pending item stays hidden, then returns.
        next_beat = work.heartbeat(
            first.id, environment_id=ENV, expected_last_heartbeat=beat.last_heartbeat
        )
        assert next_beat.lease_extended
        stats = work.stats(ENV)
        assert (stats.depth, stats.pending, stats.workers_polling) == (1, 1, 2)
        again.advance(2)
        redelivered = work.poll(ENV)
        assert redelivered is not None
        assert redelivered.id == second.id
        assert redelivered.secret == "secret-1"
        # New ids never collide with old ones; the cursor of an old page still works.
        made = again.create_work(ENV)
        assert made.id not in {i.work.id for i in before[ENV][1]}
        assert page.next_page is not None
        rest = work.list(ENV, limit=2, page=page.next_page)
        assert rest.data
    again.close()


def test_a_real_clock_never_hands_the_core_an_earlier_time(path: Path) -> None:
    future = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
    mock = MockServer(state=path, clock=ManualClock(future))
    mock.create_work(ENV)
    mock.close()
    again = MockServer(state=path)  # the real clock, centuries behind the file's time
    assert not again.manual_clock
    assert again.now() == future
    assert again.create_work(ENV).created_at == future
    again.close()


def test_a_manual_clock_starts_where_asked_on_a_new_file(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    assert mock.now() == T0
    mock.close()
    again = MockServer(state=path, clock=ManualClock(T0 + dt.timedelta(hours=1)))
    assert again.now() == T0  # the file held T0 (the first time used)
    again.close()


def test_retention_through_the_server_and_across_a_restart(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0), retain_stopped=2)
    with serve_in_thread(mock) as url, httpx2.Client(base_url=url) as http:
        for n in range(5):
            made = http.post(f"/mock/environments/{ENV}/work", json={"work_id": f"work_{n}"})
            assert made.status_code == 200
            assert (
                http.post(work_path(f"work_{n}", "stop"), json={"force": True}).status_code == 204
            )
        gone = http.get(work_path("work_0"))
        assert gone.status_code == 404
        assert gone.json()["error"]["type"] == "not_found_error"
        listed = [w["id"] for w in http.get(work_path()).json()["data"]]
        assert listed == ["work_3", "work_4"]
    mock.close()
    with sqlite3.connect(path) as con:
        assert [r[0] for r in con.execute("SELECT work_id FROM items ORDER BY seq")] == [
            "work_3",
            "work_4",
        ]
    con.close()
    again = MockServer(state=path, clock=ManualClock(T0), retain_stopped=1)
    assert [w.id for w in again.environment(ENV).list(again.now()).data] == ["work_4"]
    again.close()


def test_the_server_checks_its_retention_bound() -> None:
    with pytest.raises(WorkstateError) as info:
        MockServer(retain_stopped=-1)
    assert getattr(info.value, "key", None) == "retain_stopped"
    assert MockServer(retain_stopped=None, retain_stopped_seconds=60)._retention == (None, 60)


# ------------------------------------------------------------------------------ the command
def test_the_command_takes_the_state_options(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, MockServer] = {}
    monkeypatch.setattr(_cli, "serve", lambda server, sock, level, **_: seen.update(server=server))
    argv = ["--port", "0", "--state", str(path), "--state-sync", "full"]
    argv += ["--retain-stopped", "all", "--retain-stopped-seconds", "90"]
    assert _cli.main(argv) == 0
    server = seen["server"]
    assert server._retention == (None, 90.0)
    store = server._keeper.store
    assert isinstance(store, SqliteStore)
    assert store.synchronous == "full"
    assert f"state in {path}" in capsys.readouterr().out
    assert _cli.main(["--port", "0", "--retain-stopped", "5"]) == 0
    assert seen["server"]._retention == (5, None)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--retain-stopped", "-1"], "--retain-stopped: retain_stopped must be an integer >= 0"),
        (["--retain-stopped", "many"], "--retain-stopped: invalid"),
        (["--retain-stopped-seconds", "-5"], "--retain-stopped-seconds: retain_stopped_seconds"),
        (["--state-sync", "sometimes"], "--state-sync: invalid choice"),
    ],
)
def test_the_command_rejects_bad_state_options(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(["--port", "0", *argv])
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_the_command_reports_a_bad_state_file(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path.write_text("hello " * 1000)
    assert _cli.main(["--port", "0", "--state", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"cannot start: state file {path}: is not a workstate state file" in err


# ------------------------------------------------------------------------------ SIGKILL
def start_server(path: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workstate",
            "serve",
            "--port",
            "0",
            "--state",
            str(path),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+) ", line)
    if match is None:  # pragma: no cover - only when the server cannot start
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r}")
    return proc, match.group(1)


@attrs.define
class Worker:
    """One SDK worker's record of what the server answered."""

    name: str
    answered: list[tuple[str, str, Any]] = attrs.field(factory=list)
    in_flight: tuple[str, str] | None = None

    def call(self, op: str, work_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.in_flight = (op, work_id)
        result = fn(*args, **kwargs)  # raises once the server is gone
        self.answered.append((op, work_id, result))
        self.in_flight = None
        return result


def run_worker(worker: Worker, url: str, stop: threading.Event, rng: random.Random) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0, timeout=5)
    work = client.beta.environments.work
    http = httpx2.Client(base_url=url, timeout=5)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            work_id = f"work_{worker.name}_{n}"
            worker.call(
                "create",
                work_id,
                http.post,
                f"/mock/environments/{ENV}/work",
                json={"work_id": work_id},
            )
            item = worker.call(
                "poll",
                "?",
                work.poll,
                ENV,
                anthropic_worker_id=worker.name,
                reclaim_older_than_ms=600_000,
            )
            if item is None:  # changed nothing
                worker.answered.pop()
                continue
            worker.answered[-1] = ("poll", item.id, None)
            worker.call("ack", item.id, work.ack, item.id, environment_id=ENV)
            token = NO_HEARTBEAT
            for _ in range(rng.randrange(1, 4)):
                beat = worker.call(
                    "heartbeat",
                    item.id,
                    work.heartbeat,
                    item.id,
                    environment_id=ENV,
                    expected_last_heartbeat=token,
                )
                token = beat.last_heartbeat
            if rng.random() < 0.5:
                worker.call("stop", item.id, work.stop, item.id, environment_id=ENV, force=True)
    except (anthropic.APIConnectionError, httpx2.TransportError):
        pass  # the server was killed: this worker's last call is in flight, unanswered
    finally:
        http.close()
        client.close()


def expected_versions(workers: list[Worker]) -> tuple[dict[str, int], dict[str, str]]:
    """Each item's version and last token implied by the answered calls alone."""
    versions: dict[str, int] = {}
    tokens: dict[str, str] = {}
    for worker in workers:
        for op, work_id, result in worker.answered:
            versions[work_id] = versions.get(work_id, 0) + 1  # every one of these changes it
            if op == "heartbeat":
                tokens[work_id] = result.last_heartbeat
            elif op == "stop":
                tokens.pop(work_id, None)
    return versions, tokens


@pytest.mark.parametrize("seed", [None])
def test_sigkill_mid_load_loses_no_answered_call(path: Path, seed: int | None) -> None:
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    why = f"seed {seed}"
    proc, url = start_server(path)
    workers = [Worker(f"w{n}") for n in range(4)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_worker, args=(w, url, stop, random.Random(rng.random())))
        for w in workers
    ]
    try:
        for thread in threads:
            thread.start()
        # A random point mid-load: after a random number of answers (a fixed delay would
        # depend on how fast this machine is today), plus a random fraction of a call.
        target = rng.randrange(30, 90)
        deadline = time.monotonic() + 30
        while sum(len(w.answered) for w in workers) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.01))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    answered = sum(len(w.answered) for w in workers)
    assert answered >= 30, why  # the kill came mid-load, not before it

    mock = MockServer(state=path)  # restart on the same file
    env = mock.environment(ENV)
    with mock.lock:
        items = {i.work.id: i.work for i in env.item_states()}
    versions, tokens = expected_versions(workers)
    in_flight = [w.in_flight for w in workers if w.in_flight is not None]
    maybe = {work_id for _, work_id in in_flight}
    polls_in_flight = sum(1 for op, _ in in_flight if op == "poll")
    extra = 0
    for work_id, version in versions.items():
        assert work_id in items, (why, work_id, "an answered create was lost")
        got = items[work_id].version
        if work_id in maybe:
            assert got in (version, version + 1), (why, work_id, got, version)
        elif got == version + 1 and items[work_id].delivered_at is not None:
            extra += 1  # delivered by a poll whose answer never came
        else:
            assert got == version, (why, work_id, got, version, "lost or applied twice")
    assert extra <= polls_in_flight, why
    for work in items.values():
        assert invariant_violations(work) == [], (why, work)
        if work.id not in versions:  # created by a call whose answer never came
            assert ("create", work.id) in in_flight, (why, work.id)
    stats = env.stats(mock.now())
    queued = sum(1 for w in items.values() if w.state is State.QUEUED)
    assert stats.depth + stats.pending == queued, why

    # The workers carry on: every lease whose last heartbeat was answered takes the next one.
    with serve_in_thread(mock) as new_url:
        client = anthropic.Anthropic(base_url=new_url, api_key="k", max_retries=0)
        work = client.beta.environments.work
        carried = 0
        for work_id, token in tokens.items():
            if work_id in maybe or items[work_id].state is not State.ACTIVE:
                continue
            beat = work.heartbeat(work_id, environment_id=ENV, expected_last_heartbeat=token)
            assert beat.lease_extended, (why, work_id)
            carried += 1
        made = mock.create_work(ENV)
        assert made.id not in items
    mock.close()
    assert carried + len(maybe) >= 1 or not tokens, why


def test_changes_of_the_environments_module_are_what_the_store_commits() -> None:
    assert EnvironmentChanges(state=None, items=(), dropped=()).__bool__() is False


def test_a_commit_is_all_or_nothing(path: Path) -> None:
    store = SqliteStore(path)
    state = Environment("env_1").state()
    bad = ItemState(work="not a work", seq=0)  # type: ignore[arg-type]
    changes = EnvironmentChanges(state=state, items=(bad,), dropped=())
    with pytest.raises(AttributeError):
        store.commit(Batch(clock=T0, changes=(("env_1", changes),)))
    snapshot = store.load(ANTHROPIC)
    assert (snapshot.clock, dict(snapshot.environments)) == (None, {})
    store.commit(Batch(clock=T0, changes=(("env_1", attrs.evolve(changes, items=())),)))
    assert store.load(ANTHROPIC).environments == {"env_1": (state, ())}
    store.close()


def test_a_file_that_cannot_be_opened_is_refused(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    assert "cannot be opened: unable to open database file" in start_error(path)


def test_the_lock_excludes_other_threads() -> None:
    lock = CommittingLock(lambda: None)
    got: list[bool] = []
    with lock:
        thread = threading.Thread(target=lambda: got.append(lock.acquire(blocking=False)))
        thread.start()
        thread.join()
    assert got == [False]


def test_changes_made_through_environment_are_committed_with_the_next_hold(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    env = mock.environment(ENV)
    env.create(T0, work_id="work_1", session_id="sesn_1")  # outside any request
    assert stored_state(mock)[ENV][1] == ()
    mock.now()  # any hold of the lock commits it
    assert stored_state(mock) == full_state(mock)
    env.stop("work_1", T0, force=True)
    mock.close()  # and so does closing
    again = MockServer(state=path)
    assert again.environment(ENV).get("work_1", again.now()).state is State.STOPPED
    again.close()


def test_sessions_and_their_tokens_survive_a_restart(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0), api_key="key")
    script = [{"message": {"text": "hello"}}, {"tool_use": {"name": "bash", "input": {}}}]
    script.append({"end_turn": {}})
    with (
        serve_in_thread(mock) as url,
        httpx2.Client(base_url=url, headers={"x-api-key": "key"}) as http,
    ):
        made = http.post(f"/mock/environments/{ENV}/work", json={"session": {"script": script}})
        assert made.status_code == 200, made.text
        session_id = made.json()["data"]["id"]
        polled = http.get(work_path("poll")).json()
    with mock.lock:
        mock.sessions._keep(mock.session(session_id).attach(mock.now()))
    before = mock.session(session_id)
    assert before.awaiting is not None  # played up to the tool use
    mock.close()

    again = MockServer(state=path, api_key="key")
    assert again.session(session_id) == before
    secret = json.loads(base64.urlsafe_b64decode(polled["secret"] + "==").decode())
    headers = httpx2.Headers({"authorization": f"Bearer {secret['sessions_token']}"})
    assert again.sessions.token_allows(headers, f"/v1/sessions/{session_id}")
    again.close()


def test_a_session_record_that_does_not_restore_is_refused(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    mock.create_work(ENV)
    mock.close()
    session = "WHERE kind = 'session'"
    corrupt(path, f"UPDATE records SET value = json_set(value, '$.position', 'x') {session}")
    assert "the session record 'sesn_" in start_error(path)
    corrupt(path, f"UPDATE records SET value = '{{}}' {session}")
    assert "does not restore: KeyError('script')" in start_error(path)


def test_a_sessions_token_record_that_does_not_restore_is_refused(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    mock.create_work(ENV)
    with mock.lock:
        env, now = mock._touch(ENV)
        work = env.poll(now)
        assert work is not None
        mock.sessions.delivery_secret(work, "http://mock")
    mock.close()
    corrupt(
        path, "UPDATE records SET value = '[\"env_only\", \"two\"]' WHERE kind = 'session_token'"
    )
    message = start_error(path)
    assert "the session_token record 'sesstok_" in message
    assert "does not restore: ValueError('not enough values to unpack" in message


def test_reset_starts_the_state_file_afresh(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0))
    mock.create_work(ENV)
    with mock.lock:
        mock._keeper.put("note", "k", 1)
    mock.reset()
    mock.close()
    again = MockServer(state=path, clock=ManualClock(T0))
    assert again.environment_ids() == []
    assert again._keeper.records("note") == {}
    again.close()


def test_a_restarted_seeded_server_mints_new_tokens_and_keeps_its_ids(path: Path) -> None:
    def token(server: MockServer) -> str:
        with server.lock:
            env, now = server._touch(ENV)
            work = env.poll(now)
            assert work is not None
            return str(server.sessions.delivery_secret(work, "http://mock"))

    mock = MockServer(state=path, clock=ManualClock(T0), seed=7)
    mock.create_work(ENV)
    mock.create_work(ENV)
    first = token(mock)
    mock.close()
    again = MockServer(state=path, seed=7)
    assert token(again) != first  # the seeded sequence is not replayed after a restart
    fresh = MockServer(clock=ManualClock(T0), seed=7)
    ids = [fresh.create_work(ENV).id for _ in range(3)]
    assert again.create_work(ENV).id == ids[2]  # the id sequence goes on where it was
    again.close()


def test_a_refused_first_write_leaves_nothing_in_the_file(path: Path) -> None:
    mock = MockServer(state=path, clock=ManualClock(T0), seed=7)
    with pytest.raises(InvalidInputError) as info:
        mock.create_work(ENV, metadata={"k": "\ud800"})
    assert info.value.key == "metadata.k"
    assert mock.environment_ids() == []
    mock.close()
    again = MockServer(state=path, clock=ManualClock(T0), seed=7)
    assert again.environment_ids() == []
    assert again._keeper.records("environment_seed") == {}
    again.close()


def test_items_load_in_creation_order_whatever_their_ids(path: Path) -> None:
    """The file keys items by id; a load still gives them by creation, as item_states does."""
    mock = MockServer(state=path, clock=ManualClock(T0), seed=43)
    mock.create_work(ENV, work_id="work_1")
    later = mock.create_work(ENV)
    assert later.id < "work_1"  # the seed's id sorts first: the case an unordered read got wrong
    assert stored_state(mock) == full_state(mock)
    mock.close()
