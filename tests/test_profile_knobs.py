"""The profile knobs the field disagrees on: each in both shipped profiles, custom profiles from
Python and TOML (with the exact error for every bad file), the command lines that take them,
the official client against both stop answers, and fresh ids on re-hand-out."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import anthropic
import attrs
import httpx2
import pytest
from helpers import T0, asgi_client, at, record_serve

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    PROFILES,
    QODER,
    AckLease,
    Environment,
    InvalidInputError,
    NotFoundError,
    Profile,
    State,
    StopResponse,
    Work,
    load_profile,
    profile_from_mapping,
)
from workstate._trace import check_trace
from workstate._trace import main as check_main
from workstate.server import MockServer, _cli


def new(profile: Profile) -> Work:
    return Work.create(
        id="work_1", environment_id="env_1", session_id="sesn_1", now=T0, profile=profile
    )


# ------------------------------------------------------------------------------ the values
def test_the_shipped_values_of_every_new_knob() -> None:
    assert (ANTHROPIC.ack_lease, QODER.ack_lease) == (AckLease.NONE, AckLease.DEFAULT_TTL)
    assert (ANTHROPIC.stop_starting_is_immediate, QODER.stop_starting_is_immediate) == (
        False,
        False,
    )
    assert (ANTHROPIC.stop_response, QODER.stop_response) == (
        StopResponse.NO_CONTENT,
        StopResponse.ITEM,
    )
    assert (ANTHROPIC.fresh_id_on_redelivery, QODER.fresh_id_on_redelivery) == (False, False)
    assert (ANTHROPIC.metadata_error_code, QODER.metadata_error_code) == (
        "invalid_metadata",
        None,
    )
    assert (
        ANTHROPIC.environment_not_found_error_code,
        QODER.environment_not_found_error_code,
    ) == ("environment_not_found", None)


# ------------------------------------------------------------------------------ the ack lease
@pytest.mark.parametrize(
    ("profile", "deadline", "ttl"),
    [
        (ANTHROPIC, None, None),
        (QODER, at(1 + 60), 60),
        (attrs.evolve(ANTHROPIC, ack_lease=AckLease.STARTUP, startup_lease_seconds=30), at(31), 30),
        (attrs.evolve(ANTHROPIC, ack_lease=AckLease.DEFAULT_TTL), at(121), 120),
    ],
    ids=["anthropic-none", "qoder-default", "startup-30", "default-120"],
)
def test_the_lease_an_ack_starts(profile: Profile, deadline: Any, ttl: int | None) -> None:
    w = new(profile).ack(at(1))
    assert (w.state, w.lease_expires_at, w.ttl_seconds, w.attempt) == (
        State.STARTING,
        deadline,
        ttl,
        1,
    )
    env = Environment("env_1", profile=profile)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.ack("work_1", at(1))
    late = env.get("work_1", at(10_000))
    if deadline is None:  # stays starting until stopped (python SDK issue #1746)
        assert late.state is State.STARTING
        assert env.expire_due(at(20_000)) == []
    else:
        assert late.state is State.QUEUED
        assert late.acknowledged_at is None


def test_without_an_ack_lease_the_first_heartbeat_starts_one() -> None:
    w = new(ANTHROPIC).ack(at(1))
    w, beat = w.heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT)
    assert (w.lease_expires_at, beat.ttl_seconds) == (at(122), 120)
    stopped = new(ANTHROPIC).ack(at(1)).stop(at(2))
    _, quiet = stopped.heartbeat(at(3))  # stopping, never heartbeated: reports the default
    assert (quiet.state, quiet.ttl_seconds, quiet.lease_extended) == (State.STOPPING, 120, False)


def test_a_startup_lease_must_fit_the_ttl_range() -> None:
    with pytest.raises(ValueError, match="startup_lease_seconds must lie within"):
        attrs.evolve(ANTHROPIC, ack_lease=AckLease.STARTUP, startup_lease_seconds=5)
    with pytest.raises(ValueError, match="startup_lease_seconds must lie within"):
        attrs.evolve(ANTHROPIC, ack_lease=AckLease.STARTUP)  # 0 s


# ------------------------------------------------------------------------------ stop of starting
@pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=["anthropic", "qoder"])
def test_graceful_stop_of_a_starting_item_drains_in_both_shipped_profiles(profile: Profile) -> None:
    w = new(profile).ack(at(1)).stop(at(2))
    assert w.state is State.STOPPING
    assert w.stop_requested_at is not None
    assert w.stopped_at is None


def test_graceful_stop_of_a_starting_item_can_be_immediate() -> None:
    profile = attrs.evolve(ANTHROPIC, name="immediate", stop_starting_is_immediate=True)
    w = new(profile).ack(at(1)).stop(at(2))
    assert (w.state, w.stopped_at, w.stop_requested_at, w.lease_expires_at) == (
        State.STOPPED,
        at(2),
        None,
        None,
    )
    active, _ = new(profile).ack(at(1)).heartbeat(at(2), expected_last_heartbeat=NO_HEARTBEAT)
    assert active.stop(at(3)).state is State.STOPPING  # someone holds it: it drains


# ------------------------------------------------------------------------------ stop's answer
@pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=["anthropic", "qoder"])
def test_the_official_client_accepts_the_stop_answer_of_both_profiles(profile: Profile) -> None:
    server = MockServer(profile=profile)
    item = server.create_work("env_1")
    transport = httpx2.MockTransport(_asgi_bridge(server))
    client = anthropic.Anthropic(
        api_key="k", base_url="http://mock", http_client=httpx2.Client(transport=transport)
    )
    work = client.beta.environments.work
    polled = work.poll("env_1")
    assert polled is not None
    work.ack(item.id, environment_id="env_1")
    raw = work.with_raw_response.stop(item.id, environment_id="env_1", force=True)
    answer = raw.parse()
    if profile.stop_response is StopResponse.NO_CONTENT:
        assert (raw.status_code, raw.http_response.content, answer) == (204, b"", "")
    else:
        assert raw.status_code == 200
        assert answer.state == "stopped"  # type: ignore[union-attr]
    assert work.retrieve(item.id, environment_id="env_1").state == "stopped"


def _asgi_bridge(server: MockServer) -> Any:
    """A synchronous MockTransport handler that runs the request through the ASGI app."""
    import asyncio

    def handle(request: httpx2.Request) -> httpx2.Response:
        async def go() -> httpx2.Response:
            async with asgi_client(server) as http:
                r = await http.request(
                    request.method,
                    str(request.url),
                    headers=request.headers,
                    content=request.read(),
                )
                return httpx2.Response(r.status_code, headers=r.headers, content=r.content)

        return asyncio.run(go())

    return handle


# ------------------------------------------------------------------------------ error codes
@pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=["anthropic", "qoder"])
def test_metadata_errors_carry_the_profiles_code(profile: Profile) -> None:
    w = new(profile)
    with pytest.raises(InvalidInputError) as info:
        w.update_metadata(at(1), {"k": "x" * 513})
    error = info.value.to_json()["error"]
    if profile.metadata_error_code is None:
        assert "details" not in error
        assert "error_code" not in error
    else:
        assert error["details"] == {"error_code": "invalid_metadata"}
        assert error["error_code"] == "invalid_metadata"
    assert info.value.key == "metadata.k"


def test_the_sdk_maps_an_invalid_metadata_answer_to_its_own_class() -> None:
    server = MockServer(profile=ANTHROPIC)
    item = server.create_work("env_1")
    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://mock",
        http_client=httpx2.Client(transport=httpx2.MockTransport(_asgi_bridge(server))),
        max_retries=0,
    )
    with pytest.raises(anthropic.BadRequestError) as info:
        client.beta.environments.work.update(
            item.id, environment_id="env_1", metadata={"k": "x" * 513}
        )
    assert type(info.value).__name__ == "BetaInvalidMetadataError"
    assert info.value.error_code == "invalid_metadata"


@pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=["anthropic", "qoder"])
def test_an_unknown_environment_carries_the_profiles_code(profile: Profile) -> None:
    server = MockServer(profile=profile)
    with pytest.raises(NotFoundError) as info:
        server.environment("nope")
    assert info.value.error_code == profile.environment_not_found_error_code
    assert server.environment_ids() == []


# ------------------------------------------------------------------------------ fresh ids
FRESH = attrs.evolve(ANTHROPIC, name="fresh", fresh_id_on_redelivery=True)


@pytest.mark.parametrize("profile", [ANTHROPIC, QODER], ids=["anthropic", "qoder"])
def test_shipped_profiles_keep_the_id_on_redelivery(profile: Profile) -> None:
    env = Environment("env_1", profile=profile)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0)
    again = env.poll(at(5))
    assert again is not None
    assert again.id == "work_1"


def test_a_reclaimed_delivery_gets_a_fresh_id_and_the_old_one_is_404() -> None:
    env = Environment("env_1", profile=FRESH)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    first = env.poll(T0)
    assert first is not None
    assert first.id == "work_1"
    again = env.poll(at(5))
    assert again is not None
    assert again.id != "work_1"
    assert again.id.startswith("work_")
    assert (again.created_at, again.data, again.delivered_at) == (T0, first.data, at(5))
    with pytest.raises(NotFoundError):
        env.ack("work_1", at(5))  # the stale worker's ack touches nothing
    assert "work_1" not in env
    assert env.ack(again.id, at(5)).state is State.STARTING
    assert [w.id for w in env.list(at(5)).data] == [again.id]
    assert len(env) == 1


def test_an_expired_lease_hands_the_item_out_under_a_fresh_id() -> None:
    env = Environment("env_1", profile=FRESH)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    env.poll(T0)
    env.ack("work_1", T0)
    beat = env.heartbeat("work_1", at(1), expected_last_heartbeat=NO_HEARTBEAT)
    assert beat.ttl_seconds == 120
    assert env.get("work_1", at(200)).state is State.QUEUED  # same id until handed out again
    again = env.poll(at(200))
    assert again is not None
    assert (again.id != "work_1", again.attempt) == (True, 1)
    with pytest.raises(NotFoundError):
        env.heartbeat("work_1", at(200), expected_last_heartbeat=beat.last_heartbeat)


# ------------------------------------------------------------------------------ custom profiles
def test_a_custom_profile_from_the_knobs_alone() -> None:
    p = profile_from_mapping(
        {
            "base": "qoder",
            "name": "mine",
            "ack_lease": "startup",
            "startup_lease_seconds": 30,
            "stop_starting_is_immediate": True,
            "stop_response": "no_content",
            "fresh_id_on_redelivery": True,
            "metadata_error_code": "invalid_metadata",
            "environment_not_found_error_code": "",
            "lifecycle_precision": "microseconds",
            "default_ttl_seconds": 90,
        }
    )
    assert p == attrs.evolve(
        QODER,
        name="mine",
        ack_lease=AckLease.STARTUP,
        startup_lease_seconds=30,
        stop_starting_is_immediate=True,
        stop_response=StopResponse.NO_CONTENT,
        fresh_id_on_redelivery=True,
        metadata_error_code="invalid_metadata",
        environment_not_found_error_code=None,
        lifecycle_precision=ANTHROPIC.lifecycle_precision,
        default_ttl_seconds=90,
    )
    assert profile_from_mapping({}) == ANTHROPIC
    assert profile_from_mapping({}, base=QODER) == QODER


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ({"colour": "red"}, "colour", "one of base, ack_binds_worker"),
        ({"base": "acme"}, "base", "one of 'anthropic', 'qoder'"),
        ({"base": 3}, "base", "one of 'anthropic', 'qoder'"),
        ({"ack_lease": "forever"}, "ack_lease", "one of 'default_ttl', 'startup', 'none'"),
        ({"stop_response": 204}, "stop_response", "one of 'item', 'no_content'"),
        ({"fresh_id_on_redelivery": "yes"}, "fresh_id_on_redelivery", "true or false"),
        ({"default_ttl_seconds": "60"}, "default_ttl_seconds", "an integer"),
        ({"default_ttl_seconds": True}, "default_ttl_seconds", "an integer"),
        ({"name": ""}, "name", "a non-empty string"),
        ({"metadata_error_code": None}, "metadata_error_code", 'a string ("" for none)'),
        ({"default_ttl_seconds": 5}, "default_ttl_seconds", "values that satisfy"),
        ({"ack_lease": "startup"}, "ack_lease", "values that satisfy"),
    ],
)
def test_every_bad_profile_key_is_named(data: dict[str, Any], key: str, expected: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        profile_from_mapping(data)
    assert info.value.key == key
    assert info.value.expected.startswith(expected)
    assert info.value.status == 400


def test_a_profile_must_be_a_table() -> None:
    with pytest.raises(InvalidInputError) as info:
        profile_from_mapping([1, 2])  # type: ignore[arg-type]
    assert info.value.key == "profile"


def write(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return str(path)


def test_a_profile_file(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, 'base = "qoder"\nname = "file"\nstop_response = "no_content"\n')
    p = load_profile(path)
    assert (p.name, p.stop_response, p.default_ttl_seconds) == (
        "file",
        StopResponse.NO_CONTENT,
        60,
    )
    # An override over the loaded profile composes (what --default-ttl does).
    assert attrs.evolve(p, default_ttl_seconds=30).stop_response is StopResponse.NO_CONTENT
    for bad in ("stop_response = ", "name = 'x'\nname = 'y'\n"):
        with pytest.raises(InvalidInputError) as info:
            load_profile(write(tmp_path, bad))
        assert info.value.key == "profile_file"
    with pytest.raises(InvalidInputError) as info:
        load_profile(tmp_path / "missing.toml")
    assert info.value.key == "profile_file"


def test_serve_takes_a_profile_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = record_serve(monkeypatch)
    path = write(tmp_path, 'name = "mine"\nstop_response = "item"\n')
    assert _cli.main(["--port", "0", "--profile", "qoder", "--profile-file", path]) == 0
    assert seen["server"].profile == attrs.evolve(QODER, name="mine")
    assert "profile mine" in capsys.readouterr().out
    bad = write(tmp_path, "colour = 1\n")
    with pytest.raises(SystemExit) as info:
        _cli.main(["--port", "0", "--profile-file", bad])
    assert info.value.code == 2
    assert "--profile-file: unknown profile key 'colour' (key colour)" in capsys.readouterr().err


def test_check_takes_a_profile_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = new(QODER)
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps(w.to_json()) + "\n")
    path = write(tmp_path, 'base = "qoder"\nname = "mine"\n')
    assert check_main(["--profile-file", path, str(trace)]) == 0
    assert "(profile mine)" in capsys.readouterr().out
    bad = write(tmp_path, "ack_lease = 'x'\n")
    assert check_main(["--profile-file", bad, str(trace)]) == 2
    assert "(key ack_lease)" in capsys.readouterr().err


def test_every_shipped_profile_round_trips_through_its_fields() -> None:
    for profile in PROFILES.values():
        data: dict[str, Any] = {}
        for field in attrs.fields(Profile):
            value = getattr(profile, field.name)
            data[field.name] = "" if value is None else getattr(value, "value", value)
        assert profile_from_mapping(data) == profile


# ------------------------------------------------------------------------------ the trace follows
def test_the_trace_checker_follows_a_fresh_id_and_flags_the_retired_one() -> None:
    env = Environment("env_1", profile=FRESH)
    env.create(T0, session_id="sesn_1", work_id="work_1")
    first = env.poll(T0)
    assert first is not None
    again = env.poll(at(5))
    assert again is not None
    acked = env.ack(again.id, at(6))
    records = [first.to_json(), again.to_json(), acked.to_json()]
    assert check_trace(records, profile=FRESH).ok
    stale = dict(first.to_json(), metadata={"late": "x"})
    report = check_trace([*records, stale], profile=FRESH)
    [v] = report.violations
    assert (v.index, v.work_id, v.rule, v.key) == (3, "work_1", "retired-id", "id")
    assert f"handed out again as {again.id}" in v.message
    beat = {"type": "work_heartbeat", "work_id": "work_1", "last_heartbeat": "",
            "lease_extended": False, "state": "queued", "ttl_seconds": 120}  # fmt: skip
    [v] = check_trace([*records, beat], profile=FRESH).violations
    assert v.rule == "retired-id"
    # Under a profile that keeps ids, two items with the same data are just two items.
    assert check_trace([first.to_json(), dict(again.to_json()), stale]).ok


def test_an_error_code_must_be_a_non_empty_string_or_none() -> None:
    for bad in ("", 5):
        with pytest.raises(ValueError, match="metadata_error_code must be a non-empty string"):
            attrs.evolve(ANTHROPIC, metadata_error_code=bad)
