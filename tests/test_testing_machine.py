"""The oracle machine: silent against the core, loud against broken servers."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from helpers import ACK_LEASE
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from workstate import (
    ANTHROPIC,
    QODER,
    IllegalMoveError,
    PreconditionFailedError,
    Profile,
    State,
    Work,
    format_time,
)
from workstate.testing import CoreAdapter, Reply, WorkAdapter, WorkOracle

_THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def run_settings(
    n: int, *, steps: int = 30, shrink: bool = False, derandomize: bool = False
) -> settings:
    """``n`` runs in CI (ten times more under the thorough profile); no shrinking in CI."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if shrink or _THOROUGH:
        phases.append(Phase.shrink)
    return settings(
        max_examples=n * 10 if _THOROUGH else n,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        phases=phases,
        derandomize=derandomize,
    )


def oracle(adapter: type[CoreAdapter], profile: Profile = ANTHROPIC, **tuning: Any) -> type:
    """A WorkOracle subclass testing ``adapter`` under ``profile``."""

    def make_adapter(self: WorkOracle) -> WorkAdapter:
        return adapter(profile=profile)

    attributes = {"profile": profile, "make_adapter": make_adapter, **tuning}
    return type(f"Test{adapter.__name__}", (WorkOracle,), attributes)


def diverges(machine: type) -> str:
    """Run until the first divergence.  Derandomized, so the run is the same every time; the
    budget is generous (the run stops at the first failure, typically within 10-200 runs)."""
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(machine, settings=run_settings(1000, derandomize=True))
    message = str(info.value)
    assert message.startswith("The system under test diverged from the workstate model")
    assert "History (each step" in message
    return message


# ------------------------------------------------------------------------------ the core
@pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=["anthropic", "qoder"])
def test_the_core_passes_its_own_oracle(profile: Profile) -> None:
    run_state_machine_as_test(oracle(CoreAdapter, profile), settings=run_settings(40))


class TickingAdapter(CoreAdapter):
    """A server whose clock moves on every read: requests have real time windows."""

    def now(self) -> dt.datetime:
        return self.clock.advance(0.0007)


class OtherTokens(CoreAdapter):
    """A server that writes heartbeat tokens its own (consistent) way and has other ids."""

    def create(self, *, data: Mapping[str, str], metadata: Mapping[str, str]) -> Reply:
        self._created += 7
        return super().create(data=data, metadata=metadata)

    def heartbeat(
        self, work_id: str, *, expected_last_heartbeat: str | None, desired_ttl_seconds: int | None
    ) -> Reply:
        sent = expected_last_heartbeat
        if sent is not None and sent.endswith("+00:00"):
            sent = sent.removesuffix("+00:00") + "Z"
        reply = super().heartbeat(
            work_id, expected_last_heartbeat=sent, desired_ttl_seconds=desired_ttl_seconds
        )
        body = reply.body
        if reply.is_success and body["last_heartbeat"]:
            body = {**body, "last_heartbeat": body["last_heartbeat"][:-1] + "+00:00"}
        elif reply.status == 412:
            current = body["error"]["details"]["current_state"]
            if current["last_heartbeat"]:
                current["last_heartbeat"] = current["last_heartbeat"][:-1] + "+00:00"
        return Reply(status=reply.status, body=body)


@pytest.mark.parametrize("adapter", [TickingAdapter, OtherTokens])
def test_values_the_server_chooses_are_adopted(adapter: type[CoreAdapter]) -> None:
    run_state_machine_as_test(oracle(adapter), settings=run_settings(30))
    run_state_machine_as_test(oracle(adapter, QODER), settings=run_settings(15))


class LateSweeper(CoreAdapter):
    """A server that notices a lapsed lease up to 2 s late."""

    def current(self, work_id: str) -> Work:
        work = self.items.get(work_id)
        late = self.clock.now() - dt.timedelta(seconds=2)
        if work is not None and work.lease_expires_at is not None and late <= work.lease_expires_at:
            return work
        return super().current(work_id)


def test_expiry_grace_tolerates_a_late_sweeper() -> None:
    run_state_machine_as_test(
        oracle(LateSweeper, ACK_LEASE, expiry_grace_seconds=5.0),
        settings=run_settings(40, steps=40),
    )
    for grace in (0.0, 5.0):
        machine = drive(LateSweeper, ACK_LEASE)
        machine.expiry_grace_seconds = grace
        machine.create(kind="session", session="1", metadata={})
        machine.ack(pick=0)
        machine.advance(seconds=121.0)  # one second past the deadline: the sweeper is late
        if grace:
            machine.get(pick=0)
            assert machine.items[0].work.state is State.STARTING
        else:
            with pytest.raises(AssertionError, match="the model expired the item first"):
                machine.get(pick=0)


def test_tuning_switches() -> None:
    machine = oracle(CoreAdapter, check_invalid_inputs=False, get_after_each_step=False)
    run_state_machine_as_test(machine, settings=run_settings(20))


# ------------------------------------------------------------------------------ broken servers
class AckOnStopped(CoreAdapter):
    """Allows ack on a stopped item (answers it unchanged)."""

    def ack(self, work_id: str) -> Reply:
        work = self.current(work_id)
        if work.state is State.STOPPED:
            return Reply.ok(work.to_json())
        return super().ack(work_id)


class MovingStart(CoreAdapter):
    """Moves started_at to the time of every heartbeat."""

    def heartbeat(
        self, work_id: str, *, expected_last_heartbeat: str | None, desired_ttl_seconds: int | None
    ) -> Reply:
        reply = super().heartbeat(
            work_id,
            expected_last_heartbeat=expected_last_heartbeat,
            desired_ttl_seconds=desired_ttl_seconds,
        )
        if reply.is_success and reply.body["lease_extended"]:
            work = self.items[work_id]
            self.items[work_id] = attrs.evolve(work, started_at=self.clock.now())
        return reply


class KeepsLease(CoreAdapter):
    """Sends an expired item back to the queue but forgets to clear its lease."""

    def expire(self, work: Work, now: dt.datetime) -> Work:
        if work.state is State.STOPPING:
            return work.expire(now)
        return attrs.evolve(work, state=State.QUEUED, touched_at=now)


def test_ack_on_stopped_is_caught() -> None:
    message = diverges(oracle(AckOnStopped))
    assert "status: the model answered 409 (conflict_error), the SUT answered 200" in message
    assert "ack work_" in message


def test_moving_started_at_is_caught() -> None:
    message = diverges(oracle(MovingStart))
    assert "started_at: the model has" in message


def test_lease_kept_on_expiry_is_caught() -> None:
    message = diverges(oracle(KeepsLease))
    assert "the model expired the item first" in message
    assert "acknowledged_at is set in state queued" in message


def test_the_report_is_shrunk_to_the_point() -> None:
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(
            oracle(AckOnStopped),
            settings=run_settings(1000, steps=12, shrink=True, derandomize=True),
        )
    message = str(info.value).splitlines()
    assert message[1] == (
        "  - status: the model answered 409 (conflict_error), the SUT answered 200 (success)"
    )
    assert any("both:" in line and "stopped" in line for line in message)


# ------------------------------------------------------------------------------ step by step
class Driver(WorkOracle):
    """The oracle driven by hand, one rule at a time."""

    adapter_class: type[CoreAdapter] = CoreAdapter

    def make_adapter(self) -> WorkAdapter:
        return self.adapter_class(profile=self.profile)


def drive(adapter_class: type[CoreAdapter], profile: Profile = ANTHROPIC) -> Driver:
    machine = type("D", (Driver,), {"adapter_class": adapter_class, "profile": profile})()
    assert isinstance(machine, Driver)
    return machine


def test_history_lists_every_step() -> None:
    machine = drive(AckOnStopped)
    machine.create(kind="session", session="1", metadata={"a": "x"})
    machine.advance(seconds=1.0)
    machine.stop(pick=0, force=True)
    with pytest.raises(AssertionError) as info:
        machine.ack(pick=0)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(
        "The system under test diverged from the workstate model (profile anthropic) at step 6: "
        "ack work_"
    )
    text = "\n".join(lines)
    assert '1. create data={"type":"session","id":"sesn_1"} metadata={"a":"x"} @ [' in text
    assert "3. advance 1.0 s @ [2026-07-01T08:00:00.000000Z, 2026-07-01T08:00:01.000000Z]" in text
    assert "both:  200 work_" in text
    assert "        model: 409 conflict_error" in text
    assert '        SUT:   200 {"id":"work_' in text


class WrongClock(CoreAdapter):
    """Stamps acks an hour in the past."""

    def ack(self, work_id: str) -> Reply:
        reply = super().ack(work_id)
        if reply.is_success:
            self.items[work_id] = work = attrs.evolve(
                self.items[work_id],
                acknowledged_at=self.clock.now() + dt.timedelta(hours=1),
            )
            return Reply.ok(work.to_json())
        return reply


def test_a_timestamp_outside_the_request_window_is_caught() -> None:
    machine = drive(WrongClock)
    machine.create(kind="session", session="1", metadata={})
    with pytest.raises(AssertionError, match="outside the request's time window"):
        machine.ack(pick=0)


class Backwards(CoreAdapter):
    """Stamps a graceful stop before the item's ack."""

    def stop(self, work_id: str, *, force: bool) -> Reply:
        reply = super().stop(work_id, force=force)
        work = self.items[work_id]
        if reply.is_success and work.stop_requested_at is not None:
            work = attrs.evolve(work, stop_requested_at=work.created_at - dt.timedelta(seconds=5))
            return Reply.ok(work.to_json())
        return reply


def test_a_timestamp_moving_backwards_is_caught() -> None:
    machine = drive(Backwards)
    machine.create(kind="session", session="1", metadata={})
    machine.advance(seconds=1.0)
    machine.ack(pick=0)
    with pytest.raises(AssertionError, match="time moved backwards"):
        machine.stop(pick=0, force=False)


class Broken(CoreAdapter):
    """Answers chosen per test."""

    answer: Reply | None = None

    def create(self, *, data: Mapping[str, str], metadata: Mapping[str, str]) -> Reply:
        real = super().create(data=data, metadata=metadata)
        return self.answer or real


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (Reply.error(500, "api_error"), "the model creates the item (200), the SUT answered 500"),
        (Reply.ok({"id": "work_1"}), "the SUT answered a malformed work object"),
    ],
)
def test_a_failed_create_is_caught(answer: Reply, complaint: str) -> None:
    machine = drive(type("B", (Broken,), {"answer": answer}))
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        machine.create(kind="session", session="1", metadata={})


class SameId(CoreAdapter):
    def create(self, *, data: Mapping[str, str], metadata: Mapping[str, str]) -> Reply:
        self._created = 0
        return super().create(data=data, metadata=metadata)


def test_a_reused_id_is_caught() -> None:
    machine = drive(SameId)
    machine.create(kind="session", session="1", metadata={})
    with pytest.raises(AssertionError, match="the id 'work_9e3779b1' of another one"):
        machine.create(kind="session", session="2", metadata={})


class Bare412(CoreAdapter):
    """412s without details, 409s of the wrong type, heartbeats of the wrong shape."""

    def heartbeat(
        self, work_id: str, *, expected_last_heartbeat: str | None, desired_ttl_seconds: int | None
    ) -> Reply:
        reply = super().heartbeat(
            work_id,
            expected_last_heartbeat=expected_last_heartbeat,
            desired_ttl_seconds=desired_ttl_seconds,
        )
        if reply.status == 412:
            return Reply.error(412, "invalid_request_error")
        if reply.status == 409:
            return Reply.error(409, "invalid_request_error")
        if expected_last_heartbeat == "omit-shape":  # pragma: no cover - not sent
            return reply
        if desired_ttl_seconds == 42:
            return Reply.ok({"type": "work_heartbeat"})
        if desired_ttl_seconds == 43:
            return Reply.ok({**reply.body, "ttl_seconds": 44})
        return reply


def test_error_details_and_types_are_compared() -> None:
    machine = drive(Bare412)
    machine.create(kind="session", session="1", metadata={})
    with pytest.raises(AssertionError, match="error type: the model answered 409 conflict_error"):
        machine.heartbeat(pick=0, token="fresh", ttl=None)

    machine = drive(Bare412)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    with pytest.raises(
        AssertionError, match=re.escape("a 412 must carry error.details.current_state")
    ):
        machine.heartbeat(pick=0, token="foreign", ttl=None)


def test_heartbeat_answers_are_compared() -> None:
    machine = drive(Bare412)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    with pytest.raises(AssertionError, match="malformed heartbeat object"):
        machine.heartbeat(pick=0, token="echo", ttl=42)

    machine = drive(Bare412)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    with pytest.raises(AssertionError, match="ttl_seconds: the model has 43, the SUT has 44"):
        machine.heartbeat(pick=0, token="echo", ttl=43)


class WrongState412(CoreAdapter):
    def heartbeat(
        self, work_id: str, *, expected_last_heartbeat: str | None, desired_ttl_seconds: int | None
    ) -> Reply:
        reply = super().heartbeat(
            work_id,
            expected_last_heartbeat=expected_last_heartbeat,
            desired_ttl_seconds=desired_ttl_seconds,
        )
        if reply.status == 412:
            reply.body["error"]["details"]["current_state"]["state"] = "active"
        return reply


def test_the_state_in_a_412_is_compared() -> None:
    machine = drive(WrongState412)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    with pytest.raises(
        AssertionError, match=re.escape("current_state.state: the model has 'starting'")
    ):
        machine.heartbeat(pick=0, token="foreign", ttl=None)


class ForgetsToken(CoreAdapter):
    """Answers a heartbeat on a stopping item with a token it never handed out."""

    def heartbeat(
        self, work_id: str, *, expected_last_heartbeat: str | None, desired_ttl_seconds: int | None
    ) -> Reply:
        reply = super().heartbeat(
            work_id,
            expected_last_heartbeat=expected_last_heartbeat,
            desired_ttl_seconds=desired_ttl_seconds,
        )
        if reply.is_success and not reply.body["lease_extended"]:
            return Reply.ok({**reply.body, "last_heartbeat": "2001-01-01T00:00:00.000000Z"})
        if reply.is_success and desired_ttl_seconds == 99:
            later = format_time(self.clock.now() + dt.timedelta(microseconds=1))
            return Reply.ok({**reply.body, "last_heartbeat": later})
        return reply


def test_heartbeat_tokens_are_compared() -> None:
    machine = drive(ForgetsToken)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    machine.heartbeat(pick=0, token="echo", ttl=None)
    machine.stop(pick=0, force=False)
    with pytest.raises(AssertionError, match="not the token it handed out"):
        machine.heartbeat(pick=0, token="echo", ttl=None)

    machine = drive(ForgetsToken)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    with pytest.raises(AssertionError, match="outside the request's time window"):
        machine.heartbeat(pick=0, token="echo", ttl=99)


def test_tokens_are_echoed_mapped_and_replayed() -> None:
    machine = drive(OtherTokens, QODER)
    machine.create(kind="healthcheck", session="1", metadata={})
    machine.ack(pick=0)
    for token in ("echo", "echo", "stale", "omit", "fresh", "garbage", "foreign"):
        machine.advance(seconds=1.0)
        machine.heartbeat(pick=0, token=token, ttl=30)
    machine.stop(pick=0, force=False)
    machine.heartbeat(pick=0, token="echo", ttl=None)
    machine.advance(seconds=601.0)
    machine.get(pick=0)  # the stopping item's lease lapsed: stopped, at a time adopted
    assert machine.items[0].work.state is State.STOPPED
    assert machine.items[0].uncertain == {}
    machine.update_metadata(pick=0, patch={"a": "1"}, bad=None)
    machine.update_metadata(pick=0, patch={}, bad=3)
    assert machine.items[0].work.metadata == {"a": "1"}


def test_expiry_inside_the_window_is_judged_both_ways() -> None:
    machine = drive(TickingAdapter, ACK_LEASE)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    deadline = machine.items[0].work.lease_expires_at
    assert deadline is not None
    # Bring the clock to just before the deadline: the next request's window straddles it.
    adapter = machine.adapter
    assert isinstance(adapter, TickingAdapter)
    adapter.clock.set(deadline - dt.timedelta(microseconds=1000))
    machine.get(pick=0)  # read at 0.3 ms before the deadline, answered 0.4 ms after it
    assert machine.items[0].work.state is State.STARTING
    machine.get(pick=0)  # now surely past it
    assert machine.items[0].work.state is State.QUEUED


def test_make_adapter_must_be_overridden() -> None:
    with pytest.raises(NotImplementedError, match="must override make_adapter"):
        WorkOracle()


def test_adapter_answers_must_be_replies() -> None:
    class NotReply(CoreAdapter):
        def get(self, work_id: str) -> Any:
            return {"id": work_id}

    machine = drive(NotReply)
    machine.get_after_each_step = False
    machine.create(kind="session", session="1", metadata={})
    with pytest.raises(TypeError, match="must return a Reply"):
        machine.get(pick=0)


def test_a_clock_going_backwards_is_reported() -> None:
    class Rewinding(CoreAdapter):
        reads = 0

        def now(self) -> dt.datetime:
            self.reads += 1
            return self.clock.now() - dt.timedelta(seconds=self.reads)

    machine = drive(Rewinding)
    with pytest.raises(AssertionError, match="clock went backwards"):
        machine.create(kind="session", session="1", metadata={})


def test_teardown_closes_the_adapter() -> None:
    closed = []

    class Closing(CoreAdapter):
        def close(self) -> None:
            closed.append(True)

    drive(Closing).teardown()
    drive(CoreAdapter).teardown()
    assert closed == [True]


# ------------------------------------------------------------------------------ the pieces
def test_reply_helpers() -> None:
    error = Reply.error(409, "conflict_error", "no")
    assert error.error_type == "conflict_error"
    assert not error.is_success
    assert error.describe() == "409 conflict_error"
    assert error.body == {
        "type": "error",
        "error": {"type": "conflict_error", "message": "no"},
        "request_id": None,
    }
    exc = IllegalMoveError("nope", error_type="conflict_error")
    assert Reply.from_error(exc) == Reply(status=409, body=exc.to_json())
    current = PreconditionFailedError(
        "stale",
        current_state=Work.create(
            id="work_1",
            environment_id="env_1",
            session_id="s",
            now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        ).lease_state(),
    )
    assert Reply.from_error(current).body["error"]["details"]["current_state"]["state"] == "queued"
    ok = Reply.ok({"a": 1})
    assert ok.is_success
    assert ok.error_type is None
    assert ok.describe() == '200 {"a":1}'
    assert Reply(status=502, body="bad gateway").describe() == '502 "bad gateway"'


def test_core_adapter_answers_404_for_unknown_items() -> None:
    adapter = CoreAdapter()
    reply = adapter.get("work_missing")
    assert reply.status == 404
    assert reply.error_type == "not_found_error"
    assert (
        adapter.heartbeat(
            "work_missing", expected_last_heartbeat=None, desired_ttl_seconds=None
        ).status
        == 404
    )
    bad = adapter.create(data={"type": "nonsense", "id": "x"}, metadata={})
    assert bad.status == 400


class LateCreation(CoreAdapter):
    def create(self, *, data: Mapping[str, str], metadata: Mapping[str, str]) -> Reply:
        reply = super().create(data=data, metadata=metadata)
        later = format_time(self.clock.now() + dt.timedelta(minutes=5))
        return Reply.ok({**reply.body, "created_at": later})


def test_a_creation_time_outside_the_window_is_caught() -> None:
    with pytest.raises(AssertionError, match="the SUT set created_at to 2026-07-01T08:05:00"):
        drive(LateCreation).create(kind="session", session="1", metadata={})


class PlainTextAck(CoreAdapter):
    def ack(self, work_id: str) -> Reply:
        super().ack(work_id)
        return Reply.ok(["acknowledged"])


def test_an_answer_that_is_no_object_is_caught() -> None:
    machine = drive(PlainTextAck)
    machine.create(kind="session", session="1", metadata={})
    with pytest.raises(
        AssertionError, match="malformed work object: work must be a JSON object, got list"
    ):
        machine.ack(pick=0)


class EarlyStop(CoreAdapter):
    """Stops a stopping item whose lease lapsed, but dates the stop before the deadline."""

    def expire(self, work: Work, now: dt.datetime) -> Work:
        expired = work.expire(now)
        if expired.state is State.STOPPED:
            assert work.lease_expires_at is not None
            return attrs.evolve(expired, stopped_at=work.lease_expires_at - dt.timedelta(seconds=5))
        return expired


def test_a_lapse_dated_outside_its_window_is_caught() -> None:
    machine = drive(EarlyStop, ACK_LEASE)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    machine.stop(pick=0, force=False)
    machine.advance(seconds=300.0)
    with pytest.raises(AssertionError, match="stopped_at: the model has"):
        machine.get(pick=0)


class OtherTokensAckOnStopped(OtherTokens, AckOnStopped):
    pass


def test_answers_that_agree_in_substance_are_both_shown() -> None:
    machine = drive(OtherTokensAckOnStopped)
    machine.create(kind="session", session="1", metadata={})
    machine.ack(pick=0)
    machine.heartbeat(pick=0, token="echo", ttl=None)
    machine.stop(pick=0, force=True)
    with pytest.raises(AssertionError) as info:
        machine.ack(pick=0)
    text = str(info.value)
    assert 'model: 200 heartbeat state="active" lease_extended=true' in text
    assert 'last_heartbeat="2026-07-01T08:00:00.000000+00:00"' in text
