"""Histories for the linearizability checker: from the model, and from concurrent runs.

Theory of operation
-------------------
:func:`model_histories` draws a history that is legal by construction: it runs a random
sequence of calls through one :class:`~workstate.Environment` at increasing server times, and
then gives each call a random interval of real time around its own instant, so calls overlap
the way concurrent clients' calls do, and the checker has to find the order again.  Some calls
lose their answer (``info``) and some ``info`` calls never happened at all; only calls whose
unseen effect the checker can place exactly lose their answer (see
:mod:`workstate._linearize`), so the property "every model history is ``ok``" is exact.

:func:`answer_mutations` turns one answer of a history into one the model can never give (a
state that contradicts the answer's timestamps, a flipped ``lease_extended``, a TTL outside
every range, an error type nobody uses, a metadata key nobody set): each such history must be
``illegal``.

:func:`client_programs` draws what concurrent clients do (create, poll, ack, heartbeat with a
good, missing or stale token, stop, get, update, list, stats), and :func:`run_programs` runs
them against any server over HTTP, one thread per client, through a
:class:`~workstate.testing.HistoryRecorder`, so a Hypothesis test can record a history of a
real concurrent run and check it.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx2
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from workstate._environment import Environment
from workstate._errors import WorkstateError
from workstate._history import History, HistoryCall, outcome_for_status
from workstate._profile import PROFILES, Profile, StopResponse
from workstate._time import UTC
from workstate._work import NO_HEARTBEAT
from workstate.testing._recorder import HistoryRecorder

__all__ = ["answer_mutations", "client_programs", "model_histories", "run_programs"]

_T0_US = 1_782_893_700 * 1_000_000  # 2026-07-01T08:15:00Z, in microseconds
_STEPS_US = (0, 1, 1_000, 250_000, 1_000_000, 3_000_000, 11_000_000, 130_000_000)
_EXACT_INFO = frozenset({"get", "list", "stats", "poll", "stop", "update"})
_OPS = ("create", "poll", "ack", "heartbeat", "stop", "get", "update", "list", "stats")


def _at(us: int) -> _dt.datetime:
    return _dt.datetime(1970, 1, 1, tzinfo=UTC) + _dt.timedelta(microseconds=us)


def _envelope(exc: WorkstateError) -> dict[str, Any]:
    return exc.to_json(request_id=None)


def _run(
    env: Environment, op: str, work_id: str | None, inputs: Mapping[str, Any], now: Any
) -> Any:
    """One call on the environment: its JSON answer (raises WorkstateError when refused)."""
    if op == "create":
        return env.create(
            now, metadata=inputs.get("metadata"), work_id=inputs.get("work_id")
        ).to_json()
    if op == "poll":
        work = env.poll(
            now,
            worker_id=inputs.get("worker_id"),
            reclaim_older_than_ms=inputs.get("reclaim_older_than_ms"),
        )
        return None if work is None else work.to_json(include_secret=True)
    if op == "list":
        return env.list(now, limit=inputs.get("limit", 20)).to_json()
    if op == "stats":
        return env.stats(now).to_json()
    assert work_id is not None
    if op == "ack":
        return env.ack(work_id, now, worker_id=inputs.get("worker_id")).to_json()
    if op == "heartbeat":
        return env.heartbeat(
            work_id,
            now,
            expected_last_heartbeat=inputs.get("expected_last_heartbeat"),
            desired_ttl_seconds=inputs.get("desired_ttl_seconds"),
        ).to_json()
    if op == "stop":
        stopped = env.stop(work_id, now, force=inputs.get("force", False))
        return None if env.profile.stop_response is StopResponse.NO_CONTENT else stopped.to_json()
    if op == "get":
        return env.get(work_id, now).to_json()
    return env.update_metadata(work_id, now, inputs.get("metadata", {})).to_json()


@st.composite
def model_histories(
    draw: st.DrawFn,
    *,
    profile: Profile | None = None,
    max_calls: int = 30,
    max_clients: int = 4,
    info: bool = True,
) -> History:
    """A legal history drawn from the model, its calls overlapping in real time.

    The history's clock is the wall clock and the server's is the same (no skew): every call's
    server time lies inside its interval.  ``info`` lets some calls lose their answers.
    """
    if profile is None:
        profile = draw(st.sampled_from(list(PROFILES.values())))
    env = Environment("env_model", profile=profile)
    clients = [f"c{i}" for i in range(draw(st.integers(1, max_clients)))]
    now_us = _T0_US
    ids: list[str] = []
    tokens: dict[str, str] = {}
    calls: list[HistoryCall] = []
    for ident in range(draw(st.integers(1, max_calls))):
        now_us += draw(st.sampled_from(_STEPS_US))
        op = "create" if not ids else draw(st.sampled_from(_OPS))
        client = draw(st.sampled_from(clients))
        work_id = None if op in ("create", "poll", "list", "stats") else draw(st.sampled_from(ids))
        inputs: dict[str, Any] = {}
        if op == "create":
            inputs = {"metadata": {"n": str(len(ids))}} if draw(st.booleans()) else {}
        elif op == "poll":
            inputs = {"worker_id": client}
            reclaim = draw(st.sampled_from([None, 1, 1000, 5000]))
            if reclaim is not None:
                inputs["reclaim_older_than_ms"] = reclaim
        elif op == "ack":
            inputs = {"worker_id": client}
        elif op == "heartbeat":
            assert work_id is not None
            kind = draw(st.sampled_from(["last", "last", "none", "stale", "omit"]))
            if kind == "last":
                inputs["expected_last_heartbeat"] = tokens.get(work_id, NO_HEARTBEAT)
            elif kind == "none":
                inputs["expected_last_heartbeat"] = NO_HEARTBEAT
            elif kind == "stale":
                inputs["expected_last_heartbeat"] = "2026-07-01T08:00:00.000000Z"
            ttl = draw(st.sampled_from([None, 10, 60, 900]))
            if ttl is not None:
                inputs["desired_ttl_seconds"] = ttl
        elif op == "stop":
            inputs = {"force": draw(st.booleans())}
        elif op == "update":
            inputs = {"metadata": {draw(st.sampled_from("ab")): draw(st.sampled_from(["1", None]))}}
        elif op == "list":
            inputs = {"limit": draw(st.sampled_from([1, 3, 20]))}
        phantom = info and draw(st.integers(0, 15)) == 0  # an info call that never happened
        status: int | None = 200
        body: Any = None
        error_type: str | None = None
        if not phantom:
            try:
                body = _run(env, op, work_id, inputs, _at(now_us))
            except WorkstateError as exc:
                status, body, error_type = exc.status, _envelope(exc), exc.error_type
            if op == "create" and status == 200:
                ids.append(body["id"])
            if op == "heartbeat" and status == 200:
                assert work_id is not None
                tokens[work_id] = body["last_heartbeat"]
        point = now_us / 1e6
        spread = draw(st.sampled_from([0.0, 0.0005, 0.4, 2.5]))
        invoke = point - draw(st.floats(0, spread))
        ret: float | None = point + draw(st.floats(0, spread))
        outcome = outcome_for_status(status)
        lost = phantom or (info and op in _EXACT_INFO and draw(st.integers(0, 7)) == 0)
        if lost:
            outcome, ret, body, status, error_type = "info", None, None, None, None
        calls.append(
            HistoryCall(
                id=ident,
                client=client,
                op=op,
                environment_id=env.environment_id,
                work_id=work_id,
                input=inputs,
                invoke=invoke,
                ret=ret,
                outcome=outcome,
                status=status,
                body=body,
                error_type=error_type,
            )
        )
    order = draw(st.permutations(range(len(calls))))  # the file's order says nothing
    return History(
        calls=tuple(calls[i] for i in order),
        clock="wall",
        server_clock="same",
        skew_seconds=0.0,
        profile=profile.name,
        source="model",
    )


def _mutate_work(work: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    states = ["queued", "starting", "active", "stopping", "stopped"]
    other = states[(states.index(work["state"]) + 1) % len(states)] if "state" in work else "x"
    meta = dict(work.get("metadata") or {})
    meta["mutated"] = "yes"
    return [
        (f"state {work.get('state')} → {other}", {**work, "state": other}),
        ("a metadata key nobody set", {**work, "metadata": meta}),
    ]


def answer_mutations(history: History) -> list[tuple[int, str, History]]:
    """Every single change of one checked answer into one the model can never give.

    Returns ``(call id, what changed, mutated history)`` triples.  Answers the checker does
    not judge (a ``null`` poll, stats, info calls, refusals it does not model) are left alone.
    """
    out: list[tuple[int, str, History]] = []
    calls = list(history.calls)
    for index, call in enumerate(calls):
        variants: list[tuple[str, HistoryCall]] = []
        body = call.body
        if call.outcome == "ok" and isinstance(body, Mapping):
            if call.op == "heartbeat":
                flipped = {**body, "lease_extended": not body.get("lease_extended")}
                variants.append(("lease_extended flipped", attrs.evolve(call, body=flipped)))
                variants.append(
                    ("ttl_seconds 7777", attrs.evolve(call, body={**body, "ttl_seconds": 7777}))
                )
            elif call.op == "list":
                data = body.get("data") or []
                for j, item in enumerate(data):
                    for what, new in _mutate_work(item):
                        page = [*data[:j], new, *data[j + 1 :]]
                        variants.append(
                            (
                                f"list entry {j}: {what}",
                                attrs.evolve(call, body={**body, "data": page}),
                            )
                        )
            elif call.op != "stats":
                for what, new in _mutate_work(body):
                    variants.append((what, attrs.evolve(call, body=new)))
        elif call.outcome == "fail" and call.status in (400, 404, 409, 412):
            variants.append(
                ("error type mutated_error", attrs.evolve(call, error_type="mutated_error"))
            )
        for what, new_call in variants:
            mutated = [*calls[:index], new_call, *calls[index + 1 :]]
            out.append((call.id, what, attrs.evolve(history, calls=tuple(mutated))))
    return out


# ------------------------------------------------------------------------------ concurrent runs
@attrs.frozen
class ProgramStep:
    """One step of a client program: an operation and how to fill it in."""

    op: str
    """The operation, one of the work API's or ``create``."""
    item: int = 0
    """Which item it names: an index into the items created so far (modulo their number)."""
    variant: int = 0
    """A choice within the operation (the token to send, force or not, a TTL, ...)."""


def client_programs(
    *, max_clients: int = 4, max_steps: int = 12
) -> SearchStrategy[list[list[ProgramStep]]]:
    """What each of several concurrent clients does, step by step."""
    step = st.builds(
        ProgramStep,
        op=st.sampled_from(_OPS),
        item=st.integers(0, 7),
        variant=st.integers(0, 5),
    )
    program = st.lists(step, min_size=1, max_size=max_steps)
    return st.lists(program, min_size=1, max_size=max_clients)


def run_programs(
    programs: Sequence[Sequence[ProgramStep]],
    base_url: str,
    recorder: HistoryRecorder,
    *,
    environment_id: str = "env_programs",
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> History:
    """Run each program in its own thread against the server at ``base_url``; the history.

    Every request goes through ``recorder``; a timeout or a broken connection is recorded as
    ``info`` and the client goes on with its next step.
    """
    ids: list[str] = []
    lock = threading.Lock()
    env = environment_id
    start = threading.Barrier(len(programs))

    def client(number: int, program: Sequence[ProgramStep]) -> None:
        name = f"client-{number}"
        tokens: dict[str, str] = {}
        with httpx2.Client(
            transport=recorder.transport(name),
            base_url=base_url,
            timeout=timeout,
            headers={"anthropic-worker-id": name, **(headers or {})},
        ) as http:
            start.wait()
            for step in program:
                try:
                    _send(http, env, step, ids, lock, tokens)
                except httpx2.HTTPError as exc:
                    if on_error is not None:
                        on_error(exc)

    threads = [
        threading.Thread(target=client, args=(n, p), name=f"client-{n}")
        for n, p in enumerate(programs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return recorder.history()


def _send(
    http: httpx2.Client,
    env: str,
    step: ProgramStep,
    ids: list[str],
    lock: threading.Lock,
    tokens: dict[str, str],
) -> None:
    base = f"/v1/environments/{env}/work"
    op, v = step.op, step.variant
    with lock:
        work_id = ids[step.item % len(ids)] if ids else None
    if op == "create" or (work_id is None and op not in ("poll", "list", "stats")):
        answer = http.post(f"/mock/environments/{env}/work", json={})
        if answer.status_code == 200:
            with lock:
                ids.append(answer.json()["id"])
        return
    if op == "poll" and v == 5:
        # A long poll on an environment nobody fills outlives the client's patience: the
        # client times out and the call becomes info.
        http.get(f"/v1/environments/{env}_idle/work/poll", params={"block_ms": 999}, timeout=0.2)
    elif op == "poll":
        http.get(f"{base}/poll", params={"reclaim_older_than_ms": [1, 1000, 5000][v % 3]})
    elif op == "list":
        http.get(base, params={"limit": [1, 5, 20][v % 3]})
    elif op == "stats":
        http.get(f"{base}/stats")
    elif op == "ack":
        http.post(f"{base}/{work_id}/ack")
    elif op == "heartbeat":
        assert work_id is not None
        token = [tokens.get(work_id, NO_HEARTBEAT), NO_HEARTBEAT, None][v % 3]
        params: dict[str, Any] = {"desired_ttl_seconds": [10, 60][v % 2]}
        if token is not None:
            params["expected_last_heartbeat"] = token
        answer = http.post(f"{base}/{work_id}/heartbeat", params=params)
        if answer.status_code == 200:
            tokens[work_id] = answer.json()["last_heartbeat"]
    elif op == "stop":
        http.post(f"{base}/{work_id}/stop", json={"force": v % 2 == 0})
    elif op == "get":
        http.get(f"{base}/{work_id}")
    else:
        http.post(f"{base}/{work_id}", content=json.dumps({"metadata": {"k": str(v)}}))
