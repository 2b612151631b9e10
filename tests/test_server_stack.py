"""The stack serve runs on (plain or fast), the orjson renderer and its fallbacks, access log."""

from __future__ import annotations

import contextlib
import itertools
import json
import pathlib
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from workstate.server import MockServer, _cli, _render, _stack
from workstate.server._render import render_json


@pytest.fixture
def orjson_on() -> Iterator[None]:
    """orjson rendering for one test, and the process's setting back afterwards."""
    before = _render.orjson_in_use()
    assert _render.use_orjson(True)
    yield
    _render.use_orjson(before)


def test_the_stacks_resolve_to_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _stack.resolve("plain") == "plain"
    assert _stack.resolve("fast") == "fast"  # the dev install has the fast extra
    assert _stack.resolve("auto") == "fast"
    monkeypatch.setattr(_stack, "_missing", lambda: ["uvloop"])
    assert _stack.resolve("auto") == "plain"  # auto falls back quietly
    with pytest.raises(_stack.StackUnavailableError) as info:
        _stack.resolve("fast")
    assert "uvloop" in str(info.value)
    assert "pip install 'sandbox-workstate[fast]'" in str(info.value)


def test_an_unknown_stack_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown stack 'quick'; the stacks are \['auto'"):
        _stack.resolve("quick")


def test_each_stack_names_its_loop_and_packages() -> None:
    assert _stack.loop("plain") == "asyncio"
    assert _stack.loop("fast") == "uvloop"
    assert _stack.describe("fast") == "fast stack: uvloop, orjson"
    assert _stack.describe("plain").startswith("plain stack: asyncio, json (pip install")


@pytest.mark.usefixtures("orjson_on")
def test_orjson_renders_what_the_standard_library_does() -> None:
    server = MockServer(seed=1)
    work = server.create_work("env_a", metadata={"note": "é ✓"})
    for content in (work.to_json(include_secret=True), None, {"data": [1, 2.5, True, None]}):
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        assert render_json(content) == text


@pytest.mark.parametrize("orjson", [True, False])
def test_a_rendered_answer_holds_no_more_memory_than_its_text(
    orjson: bool, orjson_on: None
) -> None:
    """The journal keeps every answer, so an answer must not keep the renderer's buffer
    (orjson's own bytes hold 4 KB each, whatever their length)."""
    import tracemalloc

    _render.use_orjson(orjson)
    content = MockServer(seed=1).create_work("env_a").to_json()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [render_json(content) for _ in range(100)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename")) / len(kept)
    assert held < len(kept[0]) + 200  # the text and a bytes object's header, no buffer


@pytest.mark.usefixtures("orjson_on")
@pytest.mark.parametrize(
    ("content", "rendered"),
    [
        ({"k": "\ud800"}, b'{"k":"\\ud800"}'),  # an unpaired surrogate: escaped ASCII
        ({"n": 1 << 70}, b'{"n":1180591620717411303424}'),  # beyond 64 bits
        ({1: "a"}, b'{"1":"a"}'),  # a key that is not a string
    ],
)
def test_what_orjson_refuses_falls_back_to_the_standard_library(
    content: Any, rendered: bytes
) -> None:
    assert render_json(content) == rendered


def test_the_plain_stack_renders_with_the_standard_library(orjson_on: None) -> None:
    assert not _render.use_orjson(False)
    assert not _render.orjson_in_use()
    assert render_json({"k": "é"}) == '{"k":"é"}'.encode()


def test_use_orjson_without_orjson_says_so(
    monkeypatch: pytest.MonkeyPatch, orjson_on: None
) -> None:
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson now raises ImportError
    assert not _render.use_orjson(True)
    assert not _render.orjson_in_use()


def _fake_serve(seen: dict[str, Any]) -> Any:
    def fake(server: MockServer, sock: socket.socket, log_level: str, **options: Any) -> None:
        seen.update(options)

    return fake


@pytest.mark.parametrize(
    ("argv", "stack", "banner"),
    [
        ([], "fast", "fast stack: uvloop, orjson"),
        (["--stack", "fast"], "fast", "fast stack: uvloop, orjson"),
        (["--stack", "plain"], "plain", "plain stack: asyncio, json"),
    ],
)
def test_serve_runs_the_stack_it_is_asked_for_and_says_so(
    argv: list[str],
    stack: str,
    banner: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(_cli, "serve", _fake_serve(seen))
    assert _cli.main(["--port", "0", *argv]) == 0
    assert seen == {"stack": stack, "access_log": False}
    assert banner in capsys.readouterr().out


def test_the_access_log_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(_cli, "serve", _fake_serve(seen))
    assert _cli.main(["--port", "0", "--access-log"]) == 0
    assert seen["access_log"] is True


def test_serve_refuses_the_fast_stack_when_it_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_stack, "_missing", lambda: ["orjson"])
    with pytest.raises(SystemExit) as info:
        _cli.main(["--port", "0", "--stack", "fast"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--stack fast: the fast stack needs orjson" in err
    assert "pip install 'sandbox-workstate[fast]'" in err


@pytest.mark.parametrize(
    ("stack", "loop", "orjson"), [("fast", "uvloop", True), ("plain", "asyncio", False)]
)
def test_serve_hands_uvicorn_the_stack_and_the_access_log(
    stack: str, loop: str, orjson: bool, monkeypatch: pytest.MonkeyPatch, orjson_on: None
) -> None:
    seen: dict[str, Any] = {}

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        seen.update(loop=self.config.loop, access_log=self.config.access_log)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    with socket.socket() as sock:
        _cli.serve(MockServer(), sock, "warning", stack=stack, access_log=True)
    assert seen == {"loop": loop, "access_log": True}
    assert _render.orjson_in_use() is orjson


def test_serve_freezes_what_start_up_built_and_what_each_older_collection_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While uvicorn runs, start-up's objects are out of the collector's walks, and so is what
    survives a collection of the middle or oldest generation; afterwards all is as it was,
    also when the server stops with an error."""
    import gc

    before, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    callbacks_before = list(gc.callbacks)
    seen: dict[str, Any] = {}

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        seen.update(frozen=gc.get_freeze_count())
        gc.disable()  # only the collections below (an automatic one may be a full one)
        try:
            kept = [[i] for i in range(5000)]  # tracked objects that survive the collection
            gc.collect(0)  # a young collection leaves them to be walked again
            seen.update(after_young=gc.get_freeze_count())
            gc.collect(1)  # a middle one freezes its survivors
            seen.update(after_middle=gc.get_freeze_count())
            more = [[i] for i in range(3000)]
            gc.collect()  # and so does a full one
            seen.update(after_full=gc.get_freeze_count(), kept=len(kept) + len(more))
        finally:
            gc.enable()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    with socket.socket() as sock:
        _cli.serve(MockServer(), sock, "warning")
    assert seen["frozen"] > frozen_before
    # (Frozen objects that die leave the count, so it may shrink; it grows only by a freeze.)
    assert seen["after_young"] <= seen["frozen"]  # a young collection freezes nothing
    assert seen["after_middle"] >= seen["after_young"] + 5000
    assert seen["after_full"] >= seen["after_middle"] + 3000
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen_before
    assert gc.callbacks == callbacks_before

    def fail(self: uvicorn.Server, sockets: Any = None) -> None:
        raise OSError("the socket went away")

    monkeypatch.setattr(uvicorn.Server, "run", fail)
    with socket.socket() as sock, pytest.raises(OSError, match="went away"):
        _cli.serve(MockServer(), sock, "warning")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen_before
    assert gc.callbacks == callbacks_before


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((0, 0, 0), 0),
        ((5000, 10, 10), 0),  # a count at its threshold has not passed it
        ((3, 11, 0), 1),
        ((3, 11, 11), 2),
        ((3, 0, 11), 2),
    ],
)
def test_the_timer_picks_the_generation_pythons_rule_would(
    counts: tuple[int, int, int], expected: int
) -> None:
    assert _cli._due_generation(counts, (700, 10, 10)) == expected


class _Loop:
    """Just enough of an event loop for the timer: what it asked to run, and when."""

    def __init__(self) -> None:
        self.later: list[tuple[float, Any]] = []
        self.cancelled = 0

    def call_later(self, delay: float, callback: Any) -> Any:
        self.later.append((delay, callback))
        loop = self

        class Handle:
            def cancel(self) -> None:
                loop.cancelled += 1

        return Handle()


def test_the_timer_collects_only_when_python_has_not() -> None:
    import gc

    callbacks_before = list(gc.callbacks)
    collections: list[int] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    loop = _Loop()
    timer = _cli._CollectionTimer(loop)  # type: ignore[arg-type]
    timer.start()
    gc.callbacks.append(watch)
    try:
        assert loop.later == [(_cli._CollectionTimer.INTERVAL, timer._tick)]
        due = _cli._due_generation(gc.get_count(), gc.get_threshold())
        timer._tick()  # nothing collected since the start: the tick collects
        assert collections == [due]
        assert len(loop.later) == 2  # and runs again an interval later
        timer._tick()  # its own collection does not count as Python's
        assert len(collections) == 2
        gc.collect(0)  # as an automatic one would
        timer._tick()
        assert len(collections) == 3  # only the one above
        gc.disable()
        try:
            timer._tick()
            timer._tick()
        finally:
            gc.enable()
        assert len(collections) == 3  # a collector turned off stays off
        assert len(loop.later) == 6
    finally:
        gc.callbacks.remove(watch)
        timer.stop()
    assert loop.cancelled == 1
    assert gc.callbacks == callbacks_before


def test_freeing_old_objects_hides_a_growing_young_generation_but_not_from_the_timer() -> None:
    """The cause the timer is for: a freed old object for each new one kept (a mass expiry's
    new record for the old one) leaves Python's count where it was, so no collection starts
    while the young generation grows.  On the server's loop the timer collects it within two
    intervals."""
    import asyncio
    import gc

    class Record:
        pass

    gc.collect()
    old = [Record() for _ in range(20_000)]
    gc.freeze()  # old, like the items a server built before it started
    try:
        kept = []
        for _ in range(10_000):
            kept.append(Record())
            old.pop()
        assert gc.get_count()[0] < gc.get_threshold()[0]  # no collection due
        assert len(gc.get_objects(0)) >= 10_000  # yet a young generation of 10,000

        async def replace_while_the_timer_runs() -> int:
            timer = _cli._CollectionTimer(asyncio.get_running_loop())
            timer.start()
            try:
                for _ in range(10):
                    for _ in range(1000):
                        kept.append(Record())
                        old.pop()
                    await asyncio.sleep(3 * _cli._CollectionTimer.INTERVAL)
                return len(gc.get_objects(0))
            finally:
                timer.stop()

        assert asyncio.run(replace_while_the_timer_runs()) < 1000
    finally:
        gc.unfreeze()


def test_serve_runs_the_timer_while_uvicorn_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import gc

    callbacks_before = list(gc.callbacks)
    seen: dict[str, Any] = {}

    async def serve(self: uvicorn.Server, sockets: Any = None) -> None:
        seen.update(callbacks=len(gc.callbacks) - len(callbacks_before))
        before = sum(generation["collections"] for generation in gc.get_stats())
        await asyncio.sleep(5 * _cli._CollectionTimer.INTERVAL)  # an idle server
        after = sum(generation["collections"] for generation in gc.get_stats())
        seen.update(collections=after - before)

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    with socket.socket() as sock:
        _cli.serve(MockServer(), sock, "warning")
    assert seen["callbacks"] == 2  # the freeze after a full collection, and the timer's
    assert seen["collections"] >= 2
    assert gc.callbacks == callbacks_before


def test_what_a_reset_drops_is_freed_without_the_collector() -> None:
    """serve freezes what survives a full collection, which is then never collected as a
    cycle: so the server's long-lived data (its environments, items and journal entries)
    must be freed by reference counting alone when a reset drops it."""
    import asyncio
    import gc
    import weakref

    from helpers import asgi_client

    server = MockServer(seed=1)

    async def calls() -> str:
        async with asgi_client(server) as http:
            work = (await http.post("/mock/environments/env_gc/work")).json()
            await http.get("/v1/environments/env_gc/work/poll")
            await http.post(f"/v1/environments/env_gc/work/{work['id']}/ack")
            await http.post(f"/v1/environments/env_gc/work/{work['id']}/heartbeat")
            return str(work["id"])

    gc.disable()
    try:
        work_id = asyncio.run(calls())
        # The ack's, not built yet: it keeps the record the ack replaced (a heartbeat's keeps
        # only the state).
        pending = server.harness.journal._entries[-2]
        before = weakref.ref(pending.before)  # type: ignore[attr-defined]
        del pending
        # Reading the journal builds its entries and drops the requests' exchanges.
        assert [e["status"] for e in server.harness.entries()] == [200, 200, 200, 200]
        assert before() is None
        entry = weakref.ref(server.harness.journal._entries[-1])
        env = weakref.ref(server.environment("env_gc"))
        with server.lock:
            item = weakref.ref(server.environment("env_gc").get(work_id, server.now()))
        server.reset()
        assert env() is None
        assert item() is None
        assert entry() is None
    finally:
        gc.enable()


def test_a_client_watch_outside_uvicorn_asks_the_receive_channel() -> None:
    """In process (no uvicorn request cycle behind receive) the watch asks Starlette."""
    import asyncio

    from workstate.server._disconnect import ClientWatch

    messages = [{"type": "http.request", "body": b""}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def main() -> tuple[bool, bool]:
        watch = ClientWatch({"type": "http", "method": "GET", "headers": []}, receive)
        return await watch.gone(), await watch.gone()

    assert asyncio.run(main()) == (False, True)


def test_a_client_watch_behind_wrappers_reads_the_cycle_the_middleware_noted() -> None:
    """The handler's receive is a middleware's closure; the cycle noted in the scope answers,
    and the channel is never asked (asking it would consume a message)."""
    import asyncio

    from workstate.server._disconnect import CYCLE_KEY, ClientWatch, note_cycle

    class Cycle:
        disconnected = False

        async def receive(self) -> dict[str, Any]:
            raise AssertionError("the cycle's flag answers; nothing is received")

    cycle = Cycle()
    scope: dict[str, Any] = {"type": "http"}
    note_cycle(scope, cycle.receive)
    assert scope[CYCLE_KEY] is cycle

    async def wrapped() -> dict[str, Any]:
        raise AssertionError("the wrapper is not asked either")

    async def main() -> tuple[bool, bool]:
        watch = ClientWatch(scope, wrapped)
        first = await watch.gone()
        cycle.disconnected = True
        return first, await watch.gone()

    assert asyncio.run(main()) == (False, True)
    plain: dict[str, Any] = {}
    note_cycle(plain, wrapped)  # a closure has no cycle behind it: nothing is noted
    assert CYCLE_KEY not in plain


def test_a_request_leaves_no_reference_cycle_through_its_scope() -> None:
    """uvicorn's request cycle holds the scope; the middleware notes the cycle in the scope
    for the request's life, then drops it: otherwise each request's cycle, scope, headers and
    state could be freed only by the garbage collector."""
    import asyncio
    import gc
    import weakref

    from workstate.server._disconnect import CYCLE_KEY

    class Cycle:  # as uvicorn's RequestResponseCycle: it keeps its scope
        disconnected = False

        def __init__(self, scope: dict[str, Any]) -> None:
            self.scope = scope

        async def receive(self) -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

    server = MockServer()
    seen: list[bool] = []

    async def one() -> weakref.ref[Cycle]:
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "path": "/v1/environments/env_cycle/work/stats",
            "raw_path": b"/v1/environments/env_cycle/work/stats",
            "query_string": b"",
            "headers": [(b"host", b"mock")],
        }
        cycle = Cycle(scope)

        async def send(message: dict[str, Any]) -> None:
            seen.append(scope.get(CYCLE_KEY) is cycle)  # noted while the request runs

        await server.app(scope, cycle.receive, send)
        assert CYCLE_KEY not in scope
        return weakref.ref(cycle)

    gc.collect()
    gc.disable()
    try:
        gone = asyncio.run(one())
        assert gone() is None  # freed by its reference count alone, no collection ran
    finally:
        gc.enable()
    assert seen == [True, True]  # the answer's start and its body


def test_requests_over_http_leave_no_request_cycles_for_the_collector() -> None:
    """The same through uvicorn itself: with the collector off, 50 requests leave none of
    uvicorn's request cycles behind."""
    import gc

    import httpx2
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

    from workstate.server import serve_in_thread

    def cycles() -> int:
        return sum(isinstance(o, RequestResponseCycle) for o in gc.get_objects())

    with serve_in_thread(MockServer()) as base, httpx2.Client(base_url=base) as client:
        client.get("/v1/environments/env_cycle/work/stats")  # the connection is open
        gc.collect()
        gc.disable()
        try:
            before = cycles()
            for _ in range(50):
                assert client.get("/v1/environments/env_cycle/work/stats").status_code == 200
            left = cycles() - before
        finally:
            gc.enable()
    assert left <= 1  # (at most the connection's current one)


_ENVIRONMENTS = itertools.count()


def _every_kind_of_request(client: Any, base: str) -> None:
    """One of each: the work API's calls and their rejections, long polls that time out or
    are abandoned, fault rules, the harness's views, a body too large."""
    import httpx2

    def expect(status: int, response: Any) -> Any:
        assert response.status_code == status, response.text
        return response

    name = f"env_garbage_{next(_ENVIRONMENTS)}"  # a fresh queue: the long polls find nothing
    env = f"/v1/environments/{name}/work"
    item = expect(200, client.post(f"/mock/environments/{name}/work")).json()
    polled = expect(200, client.get(f"{env}/poll")).json()
    one = f"{env}/{polled['id']}"
    expect(200, client.post(f"{one}/ack"))
    expect(200, client.post(f"{one}/heartbeat"))
    stale = {"expected_last_heartbeat": "2020-01-01T00:00:00Z"}
    expect(412, client.post(f"{one}/heartbeat", params=stale))
    expect(404, client.get(f"{env}/work_absent"))
    expect(200, client.post(f"{one}/ack"))  # a retry that changes nothing
    assert expect(200, client.get(f"{env}/poll", params={"block_ms": 30})).json() is None
    with contextlib.suppress(httpx2.TimeoutException):  # a client that leaves mid-wait
        httpx2.get(f"{base}{env}/poll", params={"block_ms": 900}, timeout=0.05)
    expect(400, client.post(f"{one}/stop", json={"bogus": 1}))
    expect(204, client.post(f"{one}/stop", json={"force": True}))
    expect(200, client.get(f"/v1/sessions/{item['data']['id']}"))
    expect(200, client.get(f"{env}/stats"))
    expect(200, client.get(env))
    expect(404, client.get("/no/such/route"))
    expect(405, client.put(f"{env}/stats"))
    rule = {"match": {"operation": "heartbeat"}, "times": 1, "effect": {"status": 503}}
    expect(200, client.post("/mock/faults", json=rule))
    expect(503, client.post(f"{one}/heartbeat"))  # the rule answers
    rule = {"match": {"operation": "get"}, "times": 1, "effect": {"delay_ms": 5}}
    expect(200, client.post("/mock/faults", json=rule))
    expect(200, client.get(one))
    expect(200, client.get("/mock/journal", params={"since": 10**9}))
    expect(200, client.get("/mock/health"))
    expect(200, client.get("/mock/faults"))
    expect(413, client.post(f"{env}/work_absent/stop", content=b"x" * 70_000))


def _a_session_stream(client: Any) -> None:
    """A session's stream to its end, then its other calls and their rejections."""
    script = {"session": {"script": [{"terminate": {}}]}}
    session = client.post("/mock/environments/env_garbage_sessions/work", json=script).json()
    one = f"/v1/sessions/{session['data']['id']}"
    with client.stream("GET", f"{one}/events/stream") as stream:
        assert "event: session.status_terminated" in list(stream.iter_lines())
    message = {"events": [{"type": "user.message", "content": []}]}
    assert client.post(f"{one}/events", json=message).status_code == 409  # terminated
    assert client.post(f"{one}/events", json={"bogus": 1}).status_code == 400
    assert client.get(f"{one}/events", params={"limit": "x"}).status_code == 400
    assert client.get(f"{one}/events").status_code == 200
    assert client.get(f"/mock/sessions/{session['data']['id']}").status_code == 200


@pytest.mark.parametrize("served", ["in memory", "with a state file", "with an API key"])
def test_no_kind_of_request_leaves_garbage_for_the_collector(
    served: str, tmp_path: pathlib.Path
) -> None:
    """What survives a middle collection is frozen (``_cli._freeze_survivors``), so a
    reference cycle a request leaves behind would never be freed.  With the collector off,
    every kind of request leaves none (every long poll that waited once left its cancelled
    client watch in one)."""
    import gc
    import types

    import httpx2

    from workstate.server import serve_in_thread

    options: dict[str, Any] = {"retain_stopped": 1, "max_body_bytes": 65_536}
    headers = {}
    if served == "with a state file":
        options["state"] = tmp_path / "state.db"
    elif served == "with an API key":
        options["api_key"] = "sk-garbage"
        headers["x-api-key"] = "sk-garbage"  # (the abandoned polls go without: a 401 each)
    server = MockServer(**options)
    with (
        serve_in_thread(server) as base,
        httpx2.Client(base_url=base, headers=headers) as client,
    ):
        _every_kind_of_request(client, base)  # (first calls load and cache what they use)
        _a_session_stream(client)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(3):
                _every_kind_of_request(client, base)
            time.sleep(1)  # the abandoned polls end (after their 900 ms)
            _a_session_stream(client)
            gc.collect()
            ours = [
                o
                for o in gc.garbage
                if type(o).__module__.startswith(("workstate", "uvicorn", "starlette"))
                or (
                    isinstance(o, types.FrameType)
                    and any(p in o.f_code.co_filename for p in ("workstate", "uvicorn"))
                )
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    server.close()
    assert ours == []


_MAPPED_PROBE = """
import ctypes, sys

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info

def mapped(size):  # whether malloc maps a fresh block of this size (freeing it after)
    before = libc.mallinfo2().hblks
    block = bytes(size)
    now = libc.mallinfo2().hblks
    del block
    return now > before

from workstate.server import _cli

first = mapped(3 << 20)  # (if mapped, this raises the threshold to 3 MiB itself)
if "fix" in sys.argv:
    _cli._reads_from_the_heap()
print(first, mapped(7 << 19))  # 3.5 MiB: from the heap only with a threshold above it
"""


def test_serve_raises_glibcs_mapping_threshold_so_reads_come_from_the_heap() -> None:
    """A fresh process maps a 3.5 MiB block; after ``_reads_from_the_heap`` it does not, and
    neither would it a 256 KiB read buffer: glibc's threshold is then 4 MiB."""
    import ctypes
    import os
    import subprocess

    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name here
        libc = ""
    if not libc.startswith("glibc"):
        pytest.skip("glibc's malloc only")
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _MAPPED_PROBE, *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert run() == "True True"  # without it: mapped, both times
    assert run("fix") == "True False"
