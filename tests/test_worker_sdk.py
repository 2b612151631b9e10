"""The keeper and the poll loop against the official SDK's own worker code (anthropic==2.10.0).

Both sides talk to one scripted server through an in-process ``httpx2.MockTransport`` (no
network).  The SDK side runs the SDK's ``_heartbeat_loop`` (then the force-stop decision of
``EnvironmentWorker._handle_item``) and ``iter_work``; its clock, sleeps and random source are
patched so a run takes milliseconds and the times it would have slept are recorded.  Our side
is a small worker loop driven by :class:`~workstate.worker.LeaseKeeper` /
:class:`~workstate.worker.PollLoop`.  Every script must yield the same requests (paths, tokens,
``force``), the same end reason, and — with the SDK's rules — the same sleeps and timeouts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anthropic
import anyio
import attrs
import httpx2
import pytest
from anthropic.lib import _retry as sdk_retry
from anthropic.lib.environments import _poller as sdk_poller
from anthropic.lib.environments import _worker as sdk_worker
from hypothesis import given, settings
from hypothesis import strategies as st

from workstate import NO_HEARTBEAT, Work, format_time, work_to_json
from workstate.worker import (
    DEFAULT_HEARTBEAT_RULES,
    POLL_BLOCK_MS,
    SDK_HEARTBEAT_RULES,
    EndReason,
    FinalAction,
    HeartbeatRules,
    LeaseKeeper,
    PollAction,
    PollLoop,
)


def examples(n: int) -> int:
    """``n`` examples in CI; more when a profile (``HYPOTHESIS_PROFILE=thorough``) asks for more."""
    default = settings.default
    return n if default is None else max(n, default.max_examples)


SDK_VERSION = "2.10.0"
BASE = "/v1/environments/env_1/work"
HEARTBEAT = f"{BASE}/work_1/heartbeat"
STOP = f"{BASE}/work_1/stop"


def test_the_sdk_version_is_pinned() -> None:
    # The comparison is only meaningful against the code it was written from.
    assert anthropic.__version__ == SDK_VERSION


# =================================================================== the scripted server
@attrs.frozen
class Ok:
    """A 200 heartbeat answer."""

    ttl: int = 120
    state: str = "active"
    extended: bool = True
    took: float = 0.05


@attrs.frozen
class Fail:
    """An HTTP error answer (a 412 carries the server's lease unless ``details`` is False)."""

    status: int
    details: bool = True
    took: float = 0.05


@attrs.frozen
class Timeout:
    """The request hangs until the caller's bound cuts it off."""


@attrs.frozen
class Down:
    """The connection fails at once."""

    took: float = 0.01


@attrs.frozen
class Finish:
    """The served work finishes during the pause after the previous answer."""


Step = Ok | Fail | Timeout | Down | Finish


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t


def _error(status: int, details: bool) -> dict[str, Any]:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": f"status {status}"}
    if status == 412 and details:
        code = "heartbeat_precondition_failed"
        error["details"] = {
            "error_code": code,
            "current_state": {
                "state": "queued",
                "last_heartbeat": None,
                "lease_extended": False,
                "ttl_seconds": 120,
            },
        }
        error["error_code"] = code
    return {"type": "error", "error": error, "request_id": "req_1"}


class Server:
    """Answers heartbeats from a script, and stops; records every request.

    Past the end of the script every heartbeat hangs (a dead server), so every run ends.
    """

    def __init__(self, script: list[Step]) -> None:
        self.script = list(script)
        self.clock = Clock()
        self.bound = 0.0  # the timeout of the request in flight, set by the caller
        self.log: list[tuple[str, Any]] = []
        self.beats = 0
        self.stop_status = 200

    def finish_now(self) -> bool:
        """Consume a Finish at the head of the script."""
        if self.script and isinstance(self.script[0], Finish):
            self.script.pop(0)
            return True
        return False

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == STOP:
            force = json.loads(request.content)["force"]
            self.log.append(("stop", force))
            if self.stop_status != 200:
                return httpx2.Response(self.stop_status, json=_error(self.stop_status, False))
            return httpx2.Response(200, json=_stopped_work())
        assert path == HEARTBEAT, path
        self.log.append(("heartbeat", request.url.params["expected_last_heartbeat"]))
        step = self.script.pop(0) if self.script else Timeout()
        assert not isinstance(step, Finish), "a Finish must follow an answer"
        if isinstance(step, Timeout):
            self.clock.t += self.bound
            raise httpx2.ReadTimeout("scripted timeout", request=request)
        self.clock.t += step.took
        if isinstance(step, Down):
            raise httpx2.ConnectError("scripted connection failure", request=request)
        if isinstance(step, Fail):
            return httpx2.Response(step.status, json=_error(step.status, step.details))
        self.beats += 1
        token = format_time(_at(self.beats))
        body = {
            "type": "work_heartbeat",
            "last_heartbeat": token,
            "lease_extended": step.extended,
            "state": step.state,
            "ttl_seconds": step.ttl,
        }
        return httpx2.Response(200, json=body)


def _at(seconds: float) -> Any:
    import datetime as dt

    return dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)


def _stopped_work() -> dict[str, Any]:
    work = Work.create(id="work_1", environment_id="env_1", session_id="sesn_1", now=_at(0))
    return work_to_json(work.stop(_at(1), force=True))


@attrs.frozen
class Run:
    requests: list[tuple[str, Any]]
    reason: str
    sleeps: list[float]
    timeouts: list[float]


# =================================================================== the SDK's side
def run_sdk(script: list[Step], *, stop_status: int = 200) -> Run:
    """The SDK's heartbeat loop, then ``_handle_item``'s stop-unless-lost, on a fake clock."""
    server = Server(script)
    server.stop_status = stop_status
    sleeps: list[float] = []
    timeouts: list[float] = []
    lease_box: list[Any] = []

    def fail_after(delay: float) -> Any:
        timeouts.append(delay)
        server.bound = delay
        return anyio.fail_after(None)  # the server script decides when a request times out

    def move_on_after(delay: float) -> Any:
        sleeps.append(delay)
        server.clock.t += delay
        if server.finish_now():
            lease_box[0].finish(sdk_worker._LeaseEndReason.RUNNER_DONE)
        return anyio.move_on_after(0)  # return at once: the time has been advanced

    fake_anyio = SimpleNamespace(
        Event=anyio.Event, fail_after=fail_after, move_on_after=move_on_after
    )

    async def main() -> str:
        lease = sdk_worker._Lease()
        lease_box.append(lease)
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(server.handle)) as http:
            # max_retries=0: one scripted answer per call, as the heartbeat loop sees them.
            client = anthropic.AsyncAnthropic(
                api_key="k", base_url="http://test", max_retries=0, http_client=http
            )
            work = client.beta.environments.work
            await sdk_worker._heartbeat_loop(
                work, work_id="work_1", environment_id="env_1", lease=lease
            )
            # The ``finally`` of EnvironmentWorker._handle_item, verbatim in substance.
            if not lease.lost:
                try:
                    await work.stop("work_1", environment_id="env_1", force=True)
                except Exception as e:
                    if not sdk_poller._is_status(e, 409):
                        raise
        reason = lease._end_reason
        assert reason is not None
        return str(reason.value)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sdk_worker, "time", SimpleNamespace(monotonic=server.clock.monotonic))
        mp.setattr(sdk_worker, "anyio", fake_anyio)
        reason = anyio.run(main)
    return Run(server.log, reason, sleeps, timeouts)


# =================================================================== our side
def run_keeper(
    script: list[Step], *, rules: HeartbeatRules = SDK_HEARTBEAT_RULES, stop_status: int = 200
) -> tuple[Run, LeaseKeeper]:
    """A worker built on LeaseKeeper, as the worker guide describes, on the same fake clock."""
    server = Server(script)
    server.stop_status = stop_status
    clock = server.clock
    sleeps: list[float] = []
    timeouts: list[float] = []
    http = httpx2.Client(transport=httpx2.MockTransport(server.handle), base_url="http://test")
    keeper = LeaseKeeper(work_id="work_1", rules=rules).acked(now=clock.t)
    answered = False
    while keeper.should_keep_serving:
        wait = keeper.seconds_until_heartbeat(clock.t)
        assert wait is not None
        if answered:  # the SDK sleeps after every answer, even a zero wait
            sleeps.append(wait)
            clock.t += wait
            if server.finish_now():
                keeper = keeper.finished(now=clock.t)
                break
        timeout = keeper.request_timeout
        assert timeout is not None
        timeouts.append(timeout)
        server.bound = timeout
        try:
            response = http.post(HEARTBEAT, params={"expected_last_heartbeat": keeper.next_token})
        except httpx2.TransportError:  # timeouts and connection errors
            keeper = keeper.failed(now=clock.t)
        else:
            if response.status_code == 200:
                keeper = keeper.answered(response.content, now=clock.t)
            else:
                details = response.json()["error"].get("details") or {}
                keeper = keeper.refused(
                    response.status_code,
                    now=clock.t,
                    current_state=details.get("current_state"),
                )
        answered = True
    if keeper.should_drain:
        keeper = keeper.finished(now=clock.t)  # the SDK does not drain: it cancels at once
    if keeper.final_action is FinalAction.FORCE_STOP:
        response = http.post(STOP, json={"force": True})
        assert response.status_code in (200, 409)  # 409: already stopped
    assert keeper.end_reason is not None
    return Run(server.log, keeper.end_reason.sdk_reason, sleeps, timeouts), keeper


def assert_same(sdk: Run, ours: Run, *, times: bool = True) -> None:
    assert ours.requests == sdk.requests
    assert ours.reason == sdk.reason
    if times:
        assert ours.sleeps == pytest.approx(sdk.sleeps, abs=1e-9)
        assert ours.timeouts == pytest.approx(sdk.timeouts, abs=1e-9)


def beats(run: Run) -> list[tuple[str, Any]]:
    return [r for r in run.requests if r[0] == "heartbeat"]


# =================================================================== scenarios
T = [format_time(_at(n)) for n in range(8)]
SCENARIOS: dict[str, tuple[list[Step], str, list[tuple[str, Any]]]] = {
    "finish": (
        [Ok(ttl=20), Ok(ttl=20), Finish()],
        "runner_done",
        [("heartbeat", NO_HEARTBEAT), ("heartbeat", T[1]), ("stop", True)],
    ),
    "stopping": (
        [Ok(), Ok(state="stopping", extended=False)],
        "heartbeat_stop",
        [("heartbeat", NO_HEARTBEAT), ("heartbeat", T[1]), ("stop", True)],
    ),
    "stopped": (
        [Ok(ttl=10), Ok(ttl=10, state="stopped", extended=False)],
        "heartbeat_stop",
        [("heartbeat", NO_HEARTBEAT), ("heartbeat", T[1]), ("stop", True)],
    ),
    "not extended": (
        [Ok(extended=False)],
        "heartbeat_stop",
        [("heartbeat", NO_HEARTBEAT), ("stop", True)],
    ),
    "412 lost": (
        [Ok(ttl=60), Down(), Fail(412)],
        "lease_lost",
        [("heartbeat", NO_HEARTBEAT), ("heartbeat", T[1]), ("heartbeat", T[1])],
    ),
    "412 on the first beat, no details": (
        [Fail(412, details=False)],
        "lease_lost",
        [("heartbeat", NO_HEARTBEAT)],
    ),
    "403 rejected": (
        [Ok(), Fail(403)],
        "heartbeat_rejected",
        [("heartbeat", NO_HEARTBEAT), ("heartbeat", T[1]), ("stop", True)],
    ),
    "transient then ok": (
        [Ok(ttl=600), Fail(503), Fail(429), Fail(409), Fail(408), Down(), Ok(ttl=2), Finish()],
        "runner_done",
        [("heartbeat", NO_HEARTBEAT)] + [("heartbeat", T[1])] * 6 + [("stop", True)],
    ),
    "assumed lost after timeouts": (
        [Ok(ttl=90), Timeout(), Timeout()],
        "assumed_lost",
        [("heartbeat", NO_HEARTBEAT)] + [("heartbeat", T[1])] * 2,
    ),
    "assumed lost after fast failures": (
        [Ok(ttl=20), Fail(500), Fail(502), Fail(503), Fail(504)],
        "assumed_lost",
        [("heartbeat", NO_HEARTBEAT)] + [("heartbeat", T[1])] * 2,
    ),
    "assumed lost before any answer": (
        [Timeout(), Timeout(), Timeout()],
        "assumed_lost",
        [("heartbeat", NO_HEARTBEAT)] * 3,
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_matches_the_sdk_exactly_with_sdk_rules(name: str) -> None:
    script, reason, requests = SCENARIOS[name]
    sdk = run_sdk(script)
    ours, _ = run_keeper(script)
    assert sdk.requests == requests
    assert sdk.reason == reason
    assert_same(sdk, ours)


def test_recorded_sdk_times_for_a_lease_assumed_lost() -> None:
    # Success at 0.05 (TTL 90 → interval 30); then timeouts of 30 s each, 30 s apart.
    sdk = run_sdk([Ok(ttl=90), Timeout(), Timeout()])
    assert sdk.timeouts == [30.0, 30.0, 30.0]
    assert sdk.sleeps == [30.0, 30.0]
    # The first timeout ends at 60.05 (60 s since the success: retry); the second at 120.05,
    # 120 s > 90 s: assumed lost.  The lease lapsed at ~90 s, so the SDK served on without a
    # lease for ~30 s; see the worker guide.
    ours, keeper = run_keeper([Ok(ttl=90), Timeout(), Timeout()])
    assert_same(sdk, ours)
    assert keeper.ended_at == pytest.approx(120.05)
    assert keeper.lease_deadline is None
    assert keeper.final_action is FinalAction.RELEASE


def test_a_409_on_the_final_stop_is_ignored_by_both() -> None:
    script: list[Step] = [Ok(state="stopped", extended=False)]
    sdk = run_sdk(script, stop_status=409)
    ours, _ = run_keeper(script, stop_status=409)
    assert_same(sdk, ours)
    assert sdk.requests[-1] == ("stop", True)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_with_default_rules(name: str) -> None:
    script, _, _ = SCENARIOS[name]
    sdk = run_sdk(script)
    ours, keeper = run_keeper(script, rules=DEFAULT_HEARTBEAT_RULES)
    if sdk.reason != "assumed_lost":
        assert_same(sdk, ours, times=False)
        # Never later than the SDK: a retry comes at most one interval after a failure.
        assert all(a <= b + 1e-9 for a, b in zip(ours.sleeps, sdk.sleeps, strict=True))
    else:
        # We retry sooner, so we try at least as often before giving the lease up.
        assert beats(ours)[: len(beats(sdk))] == beats(sdk)
        assert len(beats(ours)) >= len(beats(sdk))
        assert keeper.end_reason is EndReason.LEASE_ASSUMED_LOST


def test_default_rules_retry_inside_the_lease_where_the_sdk_waits_past_it() -> None:
    script: list[Step] = [Ok(ttl=20, took=0.0), Fail(500, took=0.0), Ok(ttl=20, took=0.0)]
    sdk = run_sdk([*script, Finish()])
    # SDK: success at 0, failure at 10, next try at 20 = the lease's end.
    assert sdk.sleeps == [10.0, 10.0, 10.0]
    ours, _ = run_keeper([*script, Finish()], rules=DEFAULT_HEARTBEAT_RULES)
    # Ours: failure at 10 with 10 s left, retry after 5 s, at 15, inside the lease.
    assert ours.sleeps == [10.0, 5.0, 10.0]
    assert_same(sdk, ours, times=False)


# =================================================================== random scripts
# Durations are binary fractions so that the fake clock's sums are exact: with 0.05 a failure
# landing exactly one TTL after the renewal came out 60.00000000000001 s late on one path and
# 60.0 on the other, and "strictly more than the TTL" then told the two rules apart by rounding.
TOOK = st.sampled_from([0.0, 0.0625, 0.5])
ok_steps = st.builds(
    Ok,
    ttl=st.sampled_from([1, 2, 3, 10, 20, 45, 60, 90, 120, 600]),
    state=st.sampled_from(["active", "active", "active", "starting", "stopping", "stopped"]),
    extended=st.sampled_from([True, True, True, False]),
    took=TOOK,
)
fail_steps = st.builds(
    Fail,
    status=st.sampled_from([400, 401, 403, 404, 408, 409, 412, 422, 429, 500, 502, 503, 529]),
    details=st.booleans(),
    took=TOOK,
)
answer_steps = st.one_of(
    ok_steps,
    fail_steps,
    st.just(Timeout()),
    st.builds(Down, took=st.sampled_from([0.0, 0.015625])),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[Step]:
    script: list[Step] = []
    for step in draw(st.lists(answer_steps, min_size=1, max_size=12)):
        script.append(step)
        if draw(st.integers(0, 9)) == 0:
            script.append(Finish())
    return script


@settings(max_examples=examples(40))
@given(scripts())
def test_random_scripts_match_the_sdk_with_sdk_rules(script: list[Step]) -> None:
    assert_same(run_sdk(script), run_keeper(script)[0])


@settings(max_examples=examples(40))
@given(scripts())
def test_random_scripts_with_default_rules(script: list[Step]) -> None:
    sdk = run_sdk(script)
    ours, _ = run_keeper(script, rules=DEFAULT_HEARTBEAT_RULES)
    if sdk.reason == "assumed_lost":
        assert beats(ours)[: len(beats(sdk))] == beats(sdk)
    else:
        assert_same(sdk, ours, times=False)


def test_a_failure_exactly_one_ttl_after_the_renewal_retries_under_both_rules() -> None:
    # Found by Hypothesis (with 0.05 s steps, whose sums rounded differently on the two paths).
    script: list[Step] = [Ok(ttl=10, took=0.0), Fail(408, details=False, took=0.0625),
                          Ok(ttl=60, took=0.0)]  # fmt: skip
    sdk = run_sdk(script)
    ours, _ = run_keeper(script, rules=DEFAULT_HEARTBEAT_RULES)
    assert sdk.reason == ours.reason == "assumed_lost"
    assert beats(ours) == beats(sdk)  # the same five heartbeats, ours sent sooner
    assert ours.sleeps == [5.0, 2.46875, 30.0, 1.0]


# =================================================================== the poll loop
@attrs.frozen
class Empty:
    """The poll answers ``null``."""


@attrs.frozen
class Item:
    """The poll delivers an item."""


@attrs.frozen
class PollFails:
    status: int | None  # None: connection error


@attrs.frozen
class AckOk:
    pass


@attrs.frozen
class AckFails:
    status: int | None


PollStep = Empty | Item | PollFails | AckOk | AckFails


class PollServer:
    """Answers polls and acks from two scripts; a final 401 poll ends every run."""

    def __init__(self, polls: list[PollStep], acks: list[PollStep]) -> None:
        self.polls = list(polls)
        self.acks = list(acks)
        self.log: list[tuple[Any, ...]] = []
        self.items = 0

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == f"{BASE}/poll":
            self.log.append(("poll", int(request.url.params["block_ms"])))
            step = self.polls.pop(0) if self.polls else PollFails(401)
            if isinstance(step, Empty):
                return httpx2.Response(
                    200, content=b"null", headers={"content-type": "application/json"}
                )
            if isinstance(step, Item):
                self.items += 1
                work = Work.create(
                    id=f"work_{self.items}", environment_id="env_1", session_id="sesn_1", now=_at(0)
                )
                return httpx2.Response(200, json=work_to_json(work, include_secret=False))
            assert isinstance(step, PollFails)
            return _failure(request, step.status)
        work_id = path.split("/")[-2]
        if path.endswith("/ack"):
            self.log.append(("ack", work_id))
            step = self.acks.pop(0) if self.acks else AckOk()
            if isinstance(step, AckOk):
                return httpx2.Response(200, json={})
            assert isinstance(step, AckFails)
            return _failure(request, step.status)
        assert path.endswith("/stop"), path
        self.log.append(("stop", work_id, json.loads(request.content)["force"]))
        return httpx2.Response(409, json=_error(409, False))  # already stopped: ignored


def _failure(request: httpx2.Request, status: int | None) -> httpx2.Response:
    if status is None:
        raise httpx2.ConnectError("scripted", request=request)
    return httpx2.Response(status, json=_error(status, False))


def run_sdk_poller(polls: list[PollStep], acks: list[PollStep], *, seed: int, drain: bool) -> Any:
    server = PollServer(polls, acks)
    sleeps: list[float] = []
    served: list[str] = []
    http = httpx2.Client(transport=httpx2.MockTransport(server.handle))
    client = anthropic.Anthropic(
        api_key="k", base_url="http://test", max_retries=0, http_client=http
    )
    outcome = "done"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sdk_poller, "time", SimpleNamespace(sleep=sleeps.append, monotonic=lambda: 0.0))
        mp.setattr(sdk_retry, "random", random.Random(seed))
        items: Iterator[Any] = sdk_poller.iter_work(
            client.beta.environments.work,
            environment_id="env_1",
            worker_id="worker_1",
            drain=drain,
            auto_stop=False,
        )
        try:
            for item in items:
                served.append(item.id)
        except anthropic.APIStatusError:
            outcome = "give_up"
    return server.log, sleeps, served, outcome


def run_poll_loop(polls: list[PollStep], acks: list[PollStep], *, seed: int, drain: bool) -> Any:
    server = PollServer(polls, acks)
    sleeps: list[float] = []
    served: list[str] = []
    rng = random.Random(seed)
    http = httpx2.Client(transport=httpx2.MockTransport(server.handle), base_url="http://test")
    loop = PollLoop(drain=drain)
    item_id = ""
    while not loop.is_over:
        if loop.delay:
            sleeps.append(loop.delay)
        action = loop.next_action
        try:
            if action is PollAction.POLL:
                response = http.get(f"{BASE}/poll", params={"block_ms": loop.block_ms})
                if response.status_code != 200:
                    loop = loop.poll_failed(status=response.status_code, random=rng)
                elif response.json() is None:
                    loop = loop.empty(random=rng)
                else:
                    item_id = response.json()["id"]
                    loop = loop.delivered()
            elif action is PollAction.ACK:
                response = http.post(f"{BASE}/{item_id}/ack")
                if response.status_code == 200:
                    loop = loop.acked()
                else:
                    loop = loop.ack_failed(status=response.status_code, random=rng)
            elif action is PollAction.SERVE:
                served.append(item_id)
                loop = loop.served()
            else:
                assert action is PollAction.FORCE_STOP
                http.post(f"{BASE}/{item_id}/stop", json={"force": True})  # 409 is fine
                loop = loop.force_stopped()
        except httpx2.TransportError:
            if action is PollAction.POLL:
                loop = loop.poll_failed(random=rng)
            else:
                loop = loop.ack_failed(random=rng)
    return server.log, sleeps, served, loop.next_action.value


POLL_SCRIPTS: dict[str, tuple[list[PollStep], list[PollStep]]] = {
    "empty polls then work": ([Empty(), Empty(), Item(), Empty(), Item()], []),
    "poll failures back off": (
        [PollFails(503), PollFails(None), PollFails(429), *[PollFails(500)] * 6, Item()],
        [],
    ),
    "ack failures have their own counter": (
        [PollFails(500), Item(), PollFails(500), Item(), Item(), Item()],
        [AckFails(503), AckFails(None), AckFails(404), AckOk()],
    ),
    "ack 409 is retried": ([Item(), Item()], [AckFails(409), AckOk()]),
    "drain": ([Item(), PollFails(502), Empty(), Item()], []),
}


@pytest.mark.parametrize("name", list(POLL_SCRIPTS))
@pytest.mark.parametrize("drain", [False, True])
def test_poll_loop_matches_the_sdk_poller(name: str, drain: bool) -> None:
    polls, acks = POLL_SCRIPTS[name]
    sdk = run_sdk_poller(polls, acks, seed=7, drain=drain)
    ours = run_poll_loop(polls, acks, seed=7, drain=drain)
    # Same requests, the same sleeps to the last bit (same formula, same draws), same items.
    assert ours == sdk
    assert all(entry[1] == POLL_BLOCK_MS for entry in sdk[0] if entry[0] == "poll")


def test_recorded_sdk_poll_backoff() -> None:
    polls: list[PollStep] = [PollFails(500)] * 7
    _, sleeps, _, outcome = run_sdk_poller(polls, [], seed=1, drain=False)
    rng = random.Random(1)
    assert sleeps == [min(60.0, 2.0**n) + rng.uniform(0.0, 1.0) for n in range(1, 8)]
    assert outcome == "give_up"  # the final scripted 401


poll_steps = st.one_of(
    st.just(Empty()),
    st.just(Item()),
    st.builds(PollFails, st.sampled_from([None, 400, 401, 404, 408, 409, 429, 500, 503])),
)
ack_steps = st.one_of(
    st.just(AckOk()),
    st.builds(AckFails, st.sampled_from([None, 400, 403, 404, 408, 409, 429, 500])),
)


@settings(max_examples=examples(40))
@given(
    st.lists(poll_steps, max_size=15),
    st.lists(ack_steps, max_size=8),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_random_poll_scripts_match_the_sdk_poller(
    polls: list[PollStep], acks: list[PollStep], seed: int, drain: bool
) -> None:
    assert run_poll_loop(polls, acks, seed=seed, drain=drain) == run_sdk_poller(
        polls, acks, seed=seed, drain=drain
    )
