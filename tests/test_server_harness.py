"""The harness over HTTP: every fault effect, every control endpoint, every journal field."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from helpers import T0, asgi_client, create_work, record_serve, served_http

from workstate import (
    ANTHROPIC,
    NO_HEARTBEAT,
    ManualClock,
    check_trace,
    profile_from_mapping,
    profile_to_mapping,
)
from workstate.__main__ import main as workstate_main
from workstate._trace import journal_trace_records
from workstate.server import ConnectionDropped, MockServer, _cli

ENV = "env_harness"
W = f"/v1/environments/{ENV}/work"
REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")


@pytest.fixture(scope="module")
def mock() -> MockServer:  # (conftest's ``url`` serves it)
    return MockServer(clock=ManualClock(T0), seed=11)


@pytest.fixture
def http(url: str, mock: MockServer) -> Iterator[httpx2.Client]:
    mock.reset()
    with httpx2.Client(base_url=url, timeout=10) as client:
        yield client


def queue(http: httpx2.Client, **body: Any) -> str:
    return str(create_work(http, ENV, **body)["id"])


def claim(http: httpx2.Client) -> tuple[str, str]:
    work_id = queue(http)
    assert http.get(W + "/poll").json()["id"] == work_id
    assert http.post(f"{W}/{work_id}/ack").status_code == 200
    beat = http.post(
        f"{W}/{work_id}/heartbeat", params={"expected_last_heartbeat": NO_HEARTBEAT}
    ).json()
    return work_id, beat["last_heartbeat"]


def fault(http: httpx2.Client, rule: dict[str, Any]) -> dict[str, Any]:
    r = http.post("/mock/faults", json=rule)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def journal(http: httpx2.Client, **filters: Any) -> list[dict[str, Any]]:
    r = http.get("/mock/journal", params=filters)
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def state(http: httpx2.Client, work_id: str) -> str:
    return str(http.get(f"{W}/{work_id}").json()["state"])


# ------------------------------------------------------------------------------ effects
@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (503, "api_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
        (429, "rate_limit_error"),
        (408, "timeout_error"),
        (409, "conflict_error"),
        (401, "authentication_error"),
    ],
)
def test_a_status_fault_answers_the_envelope_without_applying_the_call(
    http: httpx2.Client, status: int, error_type: str
) -> None:
    work_id = queue(http)
    http.get(W + "/poll")
    rule = fault(
        http,
        {
            "match": {"operation": "ack", "work_id": work_id},
            "times": 1,
            "effect": {"status": status},
        },
    )
    r = http.post(f"{W}/{work_id}/ack")
    assert r.status_code == status
    body = r.json()
    assert list(body) == ["type", "error", "request_id"]
    assert body["error"]["type"] == error_type
    assert f"fault rule {rule['id']} answered {status}" in body["error"]["message"]
    assert body["request_id"] == r.headers["request-id"]
    assert "retry-after" not in r.headers
    assert state(http, work_id) == "queued"  # not applied
    entry = journal(http, operation="ack")[0]
    assert entry["fault"] == {"id": rule["id"], "effect": {"status": status}}
    assert entry["status"] == status
    assert entry["response"] == body
    assert entry["error"] == {
        "status": status,
        "type": error_type,
        "message": body["error"]["message"],
        "error_code": None,
    }
    assert (entry["applied"], entry["move"], entry["server_time"], entry["core_seq"]) == (
        False,
        None,
        None,
        None,
    )
    # times: 1, so the retry goes through.
    assert http.post(f"{W}/{work_id}/ack").status_code == 200


def test_a_429_carries_retry_after_and_the_rules_own_type_and_message(http: httpx2.Client) -> None:
    fault(
        http,
        {
            "match": {"operation": "poll"},
            "effect": {"status": 429, "retry_after": 2, "type": "x_error", "message": "later"},
        },
    )
    r = http.get(W + "/poll")
    assert (r.status_code, r.headers["retry-after"]) == (429, "2")
    assert r.json()["error"] == {"type": "x_error", "message": "later"}


def test_a_delay_counts_against_the_clients_timeout_and_the_call_still_applies(
    http: httpx2.Client, url: str
) -> None:
    work_id = queue(http)
    http.get(W + "/poll")
    fault(http, {"match": {"operation": "ack"}, "times": 1, "effect": {"delay_ms": 400}})
    with httpx2.Client(base_url=url, timeout=0.05) as impatient, pytest.raises(httpx2.ReadTimeout):
        impatient.post(f"{W}/{work_id}/ack")
    # The server applies the call once the delay is over, whether or not anyone listens.
    for _ in range(200):
        entries = journal(http, operation="ack")
        if entries:
            break
        asyncio.run(asyncio.sleep(0.01))
    (entry,) = entries
    assert entry["applied"] is True
    assert entry["move"] == {"from": "queued", "to": "starting"}
    assert entry["finished_mono"] - entry["started_mono"] >= 0.4
    assert state(http, work_id) == "starting"


def test_a_drop_before_closes_the_connection_and_applies_nothing(http: httpx2.Client) -> None:
    work_id = queue(http)
    http.get(W + "/poll")
    rule = fault(http, {"match": {"operation": "stop"}, "times": 1, "effect": {"drop": "before"}})
    with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
        http.post(f"{W}/{work_id}/stop", json={"force": True})
    assert state(http, work_id) == "queued"
    entry = journal(http, operation="stop")[0]
    assert entry["body"] == {"force": True}  # read off the wire even though nothing ran
    assert (entry["status"], entry["response"], entry["applied"], entry["withheld"]) == (
        None,
        None,
        False,
        None,
    )
    assert entry["fault"] == {"id": rule["id"], "effect": {"drop": "before"}}


def test_a_drop_after_applies_the_call_then_closes_the_connection(http: httpx2.Client) -> None:
    work_id, token = claim(http)
    fault(http, {"match": {"operation": "heartbeat"}, "times": 1, "effect": {"drop": "after"}})
    with pytest.raises(httpx2.RemoteProtocolError):
        http.post(f"{W}/{work_id}/heartbeat", params={"expected_last_heartbeat": token})
    entry = journal(http, operation="heartbeat")[-1]
    assert (entry["status"], entry["response"], entry["applied"]) == (None, None, True)
    new_token = entry["withheld"]["response"]["last_heartbeat"]
    assert entry["withheld"]["status"] == 200
    assert new_token != token  # the clock stood still, and still the token moved on
    # The worker retries with the token it holds, which the server already replaced: 412.
    r = http.post(f"{W}/{work_id}/heartbeat", params={"expected_last_heartbeat": token})
    assert r.status_code == 412
    assert r.json()["error"]["details"]["current_state"]["last_heartbeat"] == new_token


def test_in_process_a_drop_raises_out_of_the_app() -> None:
    server = MockServer(clock=ManualClock(T0), seed=3)
    server.create_work(ENV, work_id="work_1")
    server.harness.add_fault({"match": {"operation": "poll"}, "effect": {"drop": "before"}})
    server.harness.add_fault({"match": {"operation": "ack"}, "effect": {"drop": "after"}})

    async def run() -> None:
        async with asgi_client(server) as client:
            with pytest.raises(ConnectionDropped, match="flt_1 dropped the connection"):
                await client.get(W + "/poll")
            with pytest.raises(ConnectionDropped, match="flt_2"):
                await client.post(f"{W}/work_1/ack")

    asyncio.run(run())
    poll, ack = server.harness.entries()
    assert (poll["client"], poll["applied"], ack["applied"]) == ("asgi", False, True)
    assert server.environment(ENV).get("work_1", T0).state.value == "starting"


def test_faults_never_apply_to_mock_controls(http: httpx2.Client) -> None:
    fault(http, {"effect": {"status": 503}})  # every API call
    assert http.get(W + "/poll").status_code == 503
    assert http.post(f"/mock/environments/{ENV}/work").status_code == 200
    assert http.get("/mock/clock").status_code == 200
    assert http.get("/mock/health").status_code == 200
    assert http.get("/mock/faults").status_code == 200
    assert http.get(f"/mock/environments/{ENV}").status_code == 200
    assert http.get("/mock/journal").status_code == 200
    assert http.delete("/mock/faults").json() == {"deleted": 1}
    assert http.get(W + "/poll").status_code == 200


# ------------------------------------------------------------------------------ controls
def test_fault_rules_are_added_listed_and_removed(http: httpx2.Client) -> None:
    first = fault(http, {"match": {"operation": "poll"}, "times": 2, "effect": {"status": 503}})
    second = fault(http, {"match": {"operation": "ack"}, "effect": {"delay_ms": 1}})
    assert (first["id"], second["id"]) == ("flt_1", "flt_2")
    http.get(W + "/poll")
    listed = http.get("/mock/faults").json()["data"]
    assert [(r["id"], r["fired"], r["remaining"]) for r in listed] == [
        ("flt_1", 1, 1),
        ("flt_2", 0, None),
    ]
    assert http.delete("/mock/faults/flt_1").json() == {"deleted": 1, "id": "flt_1"}
    r = http.delete("/mock/faults/flt_1")
    assert (r.status_code, r.json()["error"]["type"]) == (404, "not_found_error")
    assert "flt_1" in r.json()["error"]["message"]
    assert http.delete("/mock/faults").json() == {"deleted": 1}
    assert http.get("/mock/faults").json() == {"data": []}


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b'{"effect": {"drop": "sideways"}}', "effect.drop"),
        (b'{"match": {"operation": "create"}, "effect": {"status": 503}}', "match.operation"),
        (b'{"times": -1, "effect": {"status": 503}}', "times"),
    ],
)
def test_a_bad_rule_over_http_is_400_naming_the_key(
    http: httpx2.Client, body: bytes, key: str
) -> None:
    r = http.post("/mock/faults", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert key in error["message"], error
    assert http.get("/mock/faults").json() == {"data": []}


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"colour": "red"}, "colour"),
        ({"since": "x"}, "since"),
        ({"operation": "frob"}, "operation"),
    ],
)
def test_a_bad_journal_filter_is_400_naming_it(
    http: httpx2.Client, params: dict[str, str], key: str
) -> None:
    r = http.get("/mock/journal", params=params)
    assert r.status_code == 400
    assert key in r.json()["error"]["message"]


def test_the_journal_filters_and_clears(http: httpx2.Client) -> None:
    a = queue(http)
    b = queue(http)
    http.get(W + "/poll")
    http.post(f"{W}/{a}/ack")
    http.get("/v1/environments/env_other/work/stats")
    assert [e["operation"] for e in journal(http, work_id=a)] == ["create", "poll", "ack"]
    assert [e["work_id"] for e in journal(http, operation="create")] == [a, b]
    assert [e["operation"] for e in journal(http, environment_id="env_other")] == ["stats"]
    since = journal(http)[2]["seq"]
    assert [e["operation"] for e in journal(http, since=since)][:2] == ["ack", "stats"]
    deleted = http.delete("/mock/journal").json()["deleted"]
    assert deleted >= 5
    remaining = journal(http)
    assert [e["path"] for e in remaining] == ["/mock/journal"]  # only the request after
    assert remaining[0]["seq"] > since


def test_the_journal_listing_carries_the_servers_profile(
    http: httpx2.Client, mock: MockServer
) -> None:
    queue(http)
    listing = http.get("/mock/journal").json()
    assert listing["profile"] == profile_to_mapping(mock.profile)
    assert profile_from_mapping(listing["profile"]) == mock.profile  # what a checker needs
    records = journal_trace_records(listing["data"])
    assert check_trace(records, profile=profile_from_mapping(listing["profile"])).ok


def test_reset_forgets_items_faults_and_journal_and_puts_the_clock_back(
    http: httpx2.Client, mock: MockServer
) -> None:
    queue(http)
    fault(http, {"effect": {"status": 503}})
    http.post("/mock/clock", json={"advance_seconds": 30})
    health = http.post("/mock/reset").json()
    assert (health["items"], health["faults"], health["now"]) == (
        0,
        0,
        "2026-07-01T08:15:00.000000Z",
    )
    assert http.get("/mock/clock").json()["now"] == "2026-07-01T08:15:00.000000Z"
    assert http.get(W).json()["data"] == []
    # The reset's own request belongs to the run it ended: the journal starts after it.
    assert [(e["seq"], e["path"]) for e in journal(http)] == [(1, "/mock/clock"), (2, W)]


def test_a_reset_server_repeats_its_ids_and_request_ids(http: httpx2.Client) -> None:
    def run() -> tuple[list[str], list[str]]:
        http.post("/mock/reset")
        ids = [queue(http) for _ in range(2)]
        http.get(W + "/poll")
        return ids, [e["request_id"] for e in journal(http)]

    assert run() == run()


def test_inspection_shows_every_item_with_the_private_lease_fields(http: httpx2.Client) -> None:
    work_id, token = claim(http)
    other = queue(http, secret="s3")
    body = http.get(f"/mock/environments/{ENV}").json()
    assert (body["environment_id"], body["profile"], body["now"]) == (
        ENV,
        "anthropic",
        "2026-07-01T08:15:00.000000Z",
    )
    assert body["stats"]["depth"] == 1
    leased, queued = body["data"]
    assert leased["id"] == work_id
    assert leased["lease"] == {
        "last_heartbeat": token,
        "ttl_seconds": 120,
        "lease_expires_at": "2026-07-01T08:17:00.000000Z",
        "delivered_at": None,
        "delivered_to": None,
        "attempt": 1,
        "version": 4,
        "touched_at": "2026-07-01T08:15:00.000000Z",
    }
    assert (queued["id"], queued["secret"], queued["lease"]["attempt"]) == (other, "s3", 0)
    r = http.get("/mock/environments/nope")
    assert r.status_code == 404


def test_health_says_what_the_server_holds(http: httpx2.Client) -> None:
    queue(http)
    health = http.get("/mock/health").json()
    assert health == {
        "status": "ok",
        "profile": "anthropic",
        "clock": "manual",
        "now": "2026-07-01T08:15:00.000000Z",
        "seed": 11,
        "environments": 1,
        "items": 1,
        "faults": 0,
        "journal_entries": 1,
    }


# ------------------------------------------------------------------------------ the journal
def test_every_journal_field_of_a_whole_life(http: httpx2.Client) -> None:
    work_id = queue(http, metadata={"team": "a"})
    http.get(W + "/poll", params={"block_ms": 5}, headers={"anthropic-worker-id": "w1"})
    http.post(f"{W}/{work_id}/ack")
    beat = http.post(f"{W}/{work_id}/heartbeat", params={"expected_last_heartbeat": NO_HEARTBEAT})
    http.post(f"{W}/{work_id}/ack")  # a safe retry: nothing applied
    http.post(f"{W}/{work_id}/stop", content=b"not json")  # 400
    http.post(f"{W}/{work_id}/stop", json={"force": False})
    http.post(f"{W}/{work_id}/heartbeat", params={"expected_last_heartbeat": "NO_HEARTBEAT"})
    entries = journal(http)
    ops = [e["operation"] for e in entries]
    assert ops == ["create", "poll", "ack", "heartbeat", "ack", "stop", "stop", "heartbeat"]
    assert [e["seq"] for e in entries] == list(range(1, 9))
    # The bad body is refused before the core is called: no core_seq, no server_time.
    assert [e["core_seq"] for e in entries] == [1, 2, 3, 4, 5, None, 6, 7]
    for e in entries:
        assert REQUEST_ID.fullmatch(e["request_id"])
        assert re.fullmatch(r"127\.0\.0\.1:\d+", e["client"])
        assert e["environment_id"] == ENV
        assert e["work_id"] == work_id
        assert e["started_mono"] <= e["finished_mono"]
        assert e["server_time"] == (
            None if e["core_seq"] is None else "2026-07-01T08:15:00.000000Z"
        )
        assert e["fault"] is None
        assert e["withheld"] is None
    create, poll, ack, heartbeat, retry, bad_stop, stop, late_beat = entries
    assert (create["method"], create["path"], create["body"]) == (
        "POST",
        f"/mock/environments/{ENV}/work",
        {"metadata": {"team": "a"}},
    )
    assert create["move"] == {"from": None, "to": "queued"}
    assert create["applied"]
    assert (poll["worker_id"], poll["query"], poll["body"]) == ("w1", {"block_ms": "5"}, None)
    assert poll["move"] == {"from": "queued", "to": "queued"}
    assert poll["response"]["id"] == work_id
    assert ack["move"] == {"from": "queued", "to": "starting"}
    assert heartbeat["query"] == {"expected_last_heartbeat": NO_HEARTBEAT}
    assert heartbeat["response"] == beat.json()
    assert heartbeat["request_id"] == beat.headers["request-id"]
    assert heartbeat["move"] == {"from": "starting", "to": "active"}
    assert (retry["status"], retry["applied"], retry["move"]) == (200, False, None)
    assert bad_stop["body"] == "not json"
    assert bad_stop["error"]["status"] == 400
    assert bad_stop["error"]["type"] == "invalid_request_error"
    assert (bad_stop["server_time"], bad_stop["applied"]) == (None, False)
    assert stop["move"] == {"from": "active", "to": "stopping"}
    assert (late_beat["status"], late_beat["applied"]) == (200, False)  # stopping: no change
    assert all(e["error"] is None for e in entries if e is not bad_stop)


def test_a_heartbeats_entry_says_what_it_did_from_the_state_before_it(
    http: httpx2.Client,
) -> None:
    # (The journal keeps a heartbeat's state before the call, not its record.)
    work_id = queue(http)
    http.get(W + "/poll")
    http.post(f"{W}/{work_id}/ack")
    first = http.post(f"{W}/{work_id}/heartbeat").json()
    http.post(f"{W}/{work_id}/heartbeat")
    stale = {"expected_last_heartbeat": NO_HEARTBEAT}
    refused = http.post(f"{W}/{work_id}/heartbeat", params=stale)
    assert refused.status_code == 412
    http.post("/v1/environments/env_other/work/work_none/heartbeat")  # 404: nothing before
    beats = journal(http, operation="heartbeat")
    assert [(e["applied"], e["move"]) for e in beats] == [
        (True, {"from": "starting", "to": "active"}),
        (True, {"from": "active", "to": "active"}),
        (False, None),
        (False, None),
    ]
    assert [e["error"] and e["error"]["status"] for e in beats] == [None, None, 412, 404]
    assert beats[1]["query"] == {}
    assert first["lease_extended"] is True


def test_a_refusal_names_the_rule_in_the_error(http: httpx2.Client) -> None:
    work_id = queue(http)
    r = http.post(f"{W}/{work_id}/heartbeat", params={"expected_last_heartbeat": NO_HEARTBEAT})
    assert r.status_code == 409
    entry = journal(http, operation="heartbeat")[0]
    assert entry["error"] == {
        "status": 409,
        "type": "conflict_error",
        "message": r.json()["error"]["message"],
        "error_code": None,
    }
    assert "it is queued" in entry["error"]["message"]
    assert (entry["applied"], entry["move"]) == (False, None)


def test_unknown_routes_are_journaled_with_no_operation(http: httpx2.Client) -> None:
    http.get("/nowhere")
    (entry,) = journal(http)[:1]
    assert (entry["operation"], entry["status"], entry["server_time"]) == (None, 404, None)


def test_the_journal_checks_clean_with_the_trace_checker(
    http: httpx2.Client, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        work_id, token = claim(http)
        for _ in range(3):  # the clock stands still: each token still moves on
            token = http.post(
                f"{W}/{work_id}/heartbeat", params={"expected_last_heartbeat": token}
            ).json()["last_heartbeat"]
        http.post(f"{W}/{work_id}/stop")
        http.post(f"{W}/{work_id}/stop")
    http.get(W)
    path = tmp_path / "journal.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in journal(http)))
    assert workstate_main(["check", "--complete", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 work items" in out
    assert "explained" in out


def test_check_and_check_history_take_the_ttl_overrides_the_server_was_started_with(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = MockServer(clock=ManualClock(T0), seed=3, profile_overrides={"default_ttl_seconds": 2})
    with served_http(short) as client:
        claim(client)
        entries = journal(client)
    assert [e["response"]["ttl_seconds"] for e in entries if e["operation"] == "heartbeat"] == [2]
    path = tmp_path / "journal.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    # Checked against the shipped profile, a 2 s lease is outside its 10-600 s range...
    assert workstate_main(["check", "--complete", str(path)]) == 1
    out = capsys.readouterr().out
    assert "ttl_seconds 2 is outside the profile's range 10-600" in out
    assert "check with the same options" in out  # the way out, named
    # ...and with the flags serve took, the journal is explained.
    assert workstate_main(["check", "--complete", "--default-ttl", "2", str(path)]) == 0
    assert "explained" in capsys.readouterr().out
    # A range the overrides contradict is a usage error naming the flags, as serve's is.
    assert workstate_main(["check", "--default-ttl", "2", "--min-ttl", "5", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--default-ttl 2, --min-ttl 5:" in err
    assert "min_ttl_seconds" in err
    # check --history reads the journal itself, under the same options.
    assert workstate_main(["check", "--history", str(path)]) == 1
    assert "illegal" in capsys.readouterr().out
    assert workstate_main(["check", "--history", str(path), "--default-ttl", "2"]) == 0
    assert ": ok" in capsys.readouterr().out
    assert workstate_main(["check", "--history", str(path), "--profile", "qoder"]) == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n")
    assert workstate_main(["check", "--history", str(path), "--profile-file", str(bad)]) == 2
    assert "--profile-file: unknown profile key 'colour'" in capsys.readouterr().err
    # A journal line that is not JSON is named by its number, as in a history file.
    broken = tmp_path / "broken.jsonl"
    broken.write_text(path.read_text() + "\n{not json\n")
    assert workstate_main(["check", "--history", str(broken)]) == 2
    lines = len(path.read_text().splitlines())
    assert f"line {lines + 2}: invalid JSON" in capsys.readouterr().err


def test_a_stop_answered_204_keeps_the_item_it_left_in_the_journal(http: httpx2.Client) -> None:
    work_id, _ = claim(http)
    r = http.post(f"{W}/{work_id}/stop")
    assert (r.status_code, r.content) == (204, b"")  # anthropic: no body
    (entry,) = journal(http, operation="stop", work_id=work_id)
    assert (entry["status"], entry["response"], entry["applied"]) == (204, None, True)
    assert entry["move"] == {"from": "active", "to": "stopping"}
    assert entry["item"]["state"] == "stopping"
    assert entry["item"]["id"] == work_id
    assert journal_trace_records([entry]) == [entry["item"]]
    # A drop after the call: the withheld answer is the 204, and the entry still keeps the item.
    fault(http, {"match": {"operation": "stop"}, "times": 1, "effect": {"drop": "after"}})
    with pytest.raises(httpx2.RemoteProtocolError):
        http.post(f"{W}/{work_id}/stop", json={"force": True})
    last = journal(http, operation="stop", work_id=work_id)[-1]
    assert (last["status"], last["withheld"], last["applied"]) == (
        None,
        {"status": 204, "response": None},
        True,
    )
    assert last["item"]["state"] == "stopped"
    assert journal_trace_records([last]) == [last["item"]]
    # Other answers keep no item: the answer shows it.
    assert all(e["item"] is None for e in journal(http, operation="poll"))


# ------------------------------------------------------------------------------ seeds, CLI
def test_the_same_seed_gives_the_same_ids_and_request_ids() -> None:
    def run(seed: int) -> tuple[list[str], list[str]]:
        server = MockServer(clock=ManualClock(T0), seed=seed)
        ids = [server.create_work(ENV).id for _ in range(2)]
        ids += [server.create_work("env_b").id]

        async def go() -> None:
            async with asgi_client(server) as client:
                await client.get(W + "/poll")
                await client.post(f"/mock/environments/{ENV}/work")

        asyncio.run(go())
        return ids, [e["request_id"] for e in server.harness.entries()]

    assert run(5) == run(5)
    assert run(5)[0] != run(6)[0]
    assert run(5)[1] != run(6)[1]
    assert MockServer().seed != MockServer().seed


def test_serve_takes_a_seed_faults_and_a_journal_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def then(server: MockServer) -> None:
        server.create_work(ENV)
        with served_http(server) as client:
            assert client.get(W + "/poll").status_code == 503
            assert client.get(W + "/poll").status_code == 200

    seen = record_serve(monkeypatch, then)
    path = tmp_path / "journal.jsonl"
    rule = '{"match": {"operation": "poll"}, "times": 1, "effect": {"status": 503}}'
    argv = ["--port", "0", "--seed", "42", "--journal", str(path), "--fault", rule]
    assert _cli.main([*argv, "--clock", "manual"]) == 0
    assert "seed 42" in capsys.readouterr().out
    server = seen["server"]
    assert server.seed == 42
    header, *lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert header == {"type": "journal", "version": 1, "profile": profile_to_mapping(ANTHROPIC)}
    assert [(e["operation"], e["status"]) for e in lines] == [("poll", 503), ("poll", 200)]
    assert lines[0]["fault"]["id"] == "flt_1"
    assert workstate_main(["check", str(path)]) == 0


@pytest.fixture(params=[["check"], ["check", "--history"]], ids=["check", "check --history"])
def check(request: pytest.FixtureRequest) -> list[str]:
    """Each of the two checkers that read a journal: the trace's and the history's."""
    return list(request.param)


@pytest.fixture
def short_lease_journal(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    """The journal of ``serve --default-ttl 4``: an item created, polled, acked, heartbeated
    (its answer's ttl_seconds 4 is outside the shipped profile's 10-600)."""

    def then(server: MockServer) -> None:
        server.create_work(ENV)
        with served_http(server) as client:
            work = client.get(W + "/poll").json()
            assert client.post(f"{W}/{work['id']}/ack").status_code == 200
            beat = client.post(f"{W}/{work['id']}/heartbeat").json()
            assert beat["ttl_seconds"] == 4

    record_serve(monkeypatch, then)
    path = tmp_path / "journal.jsonl"
    assert _cli.main(["--port", "0", "--default-ttl", "4", "--journal", str(path)]) == 0
    return path


def test_a_journal_is_checked_under_the_profile_it_was_served_with(
    short_lease_journal: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    check: list[str],
) -> None:
    path = str(short_lease_journal)
    header = json.loads(short_lease_journal.read_text().splitlines()[0])
    assert header["profile"]["default_ttl_seconds"] == 4
    assert workstate_main([*check, path]) == 0  # no options: the header's profile
    assert workstate_main([*check, path, "--default-ttl", "4"]) == 0  # the same, repeated
    capsys.readouterr()
    # Naming a profile overrides the header: the shipped one refuses a 4 s lease.
    assert workstate_main([*check, path, "--profile", "anthropic"]) == 1
    assert "ttl_seconds" in capsys.readouterr().out  # (the heartbeat answer it refuses)
    # Without its header (an older journal) the same file needs the options again.
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(short_lease_journal.read_text().splitlines()[1:]) + "\n")
    assert workstate_main([*check, str(bare)]) == 1
    assert workstate_main([*check, str(bare), "--default-ttl", "4"]) == 0


def test_a_journal_on_standard_input_is_checked_under_its_header_too(
    short_lease_journal: pathlib.Path, monkeypatch: pytest.MonkeyPatch, check: list[str]
) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(short_lease_journal.read_text()))
    assert workstate_main([*check, "-"]) == 0


def test_ttl_flags_apply_over_the_journals_profile(
    short_lease_journal: pathlib.Path, capsys: pytest.CaptureFixture[str], check: list[str]
) -> None:
    path = str(short_lease_journal)
    # --max-ttl over the recorded profile (default 4, min 4): still a valid profile, still ok,
    # and --max-ttl 5, which over the shipped default of 120 s would be no profile at all.
    assert workstate_main([*check, path, "--max-ttl", "300"]) == 0
    assert workstate_main([*check, path, "--max-ttl", "5"]) == 0
    capsys.readouterr()
    # --min-ttl 10 over it leaves a default of 4 under the minimum: refused as an option.
    assert workstate_main([*check, path, "--min-ttl", "10"]) == 2
    assert "--min-ttl 10" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (
            {"type": "journal", "version": 2, "profile": {}},
            "has version 2; this workstate reads version 1",
        ),
        ({"type": "journal", "version": 1}, "records no valid profile: a profile must be a table"),
        (
            {"type": "journal", "version": 1, "profile": {"min_ttl_seconds": 900}},
            "records no valid profile",
        ),
        (
            {"type": "journal", "version": 1, "profile": {"no_such_knob": 1}},
            "unknown profile key 'no_such_knob'",
        ),
    ],
)
def test_a_journal_header_that_names_no_profile_is_refused(
    short_lease_journal: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    check: list[str],
    header: dict[str, Any],
    words: str,
) -> None:
    entries = short_lease_journal.read_text().splitlines()[1:]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([json.dumps(header), *entries]) + "\n")
    assert workstate_main([*check, str(bad)]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "bad.jsonl:1" in err or "line 1" in err


def test_a_journal_of_no_requests_is_its_header_and_checks(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    check: list[str],
) -> None:
    record_serve(monkeypatch)
    path = tmp_path / "journal.jsonl"
    assert _cli.main(["--port", "0", "--journal", str(path)]) == 0
    assert len(path.read_text().splitlines()) == 1
    assert workstate_main([*check, str(path)]) == 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--fault", "{nope"], "not JSON"),
        (["--fault", '{"effect": {"drop": "x"}}'], "effect.drop"),
    ],
)
def test_serve_rejects_a_bad_fault(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_serve_reports_a_journal_it_cannot_write(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli.main(["--port", "0", "--journal", str(tmp_path / "no" / "such.jsonl")]) == 1
    assert "cannot write the journal" in capsys.readouterr().err


def test_a_journal_file_is_closed_when_the_port_is_taken(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "j.jsonl"
        assert _cli.main(["--port", str(port), "--journal", str(path)]) == 1
    assert path.read_text() == ""
    assert "cannot listen" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the middleware
def drive(
    server: MockServer, app: Any, incoming: list[dict[str, Any]], method: str = "POST"
) -> list[dict[str, Any]]:
    """Run the harness middleware around ``app`` with scripted ``receive`` messages."""
    from workstate.server._harness import HarnessMiddleware

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": f"{W}/work_1/stop",
        "query_string": b"",
        "headers": [],
        "client": ("10.0.0.1", 5),
    }
    asyncio.run(HarnessMiddleware(app, harness=server.harness)(scope, receive, send))
    return sent


def test_the_journal_keeps_no_connection_alive() -> None:
    """An entry holds what the request carried, not the server's channels: once a request is
    answered, its connection (here, the object whose bound methods were receive and send)
    can be freed while the entry stays readable."""
    import gc
    import weakref

    class Connection:
        async def receive(self) -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(self, message: Any) -> None:
            pass

    server = MockServer(seed=1, clock=ManualClock(T0))
    connection = Connection()
    gone = weakref.ref(connection)
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"{W}/stats",
        "query_string": b"",
        "headers": [],
        "client": ("10.0.0.1", 5),
    }
    asyncio.run(server.app(scope, connection.receive, connection.send))
    del connection, scope
    gc.collect()
    assert gone() is None
    (entry,) = server.harness.entries()
    assert (entry["operation"], entry["status"]) == ("stats", 200)


def test_bodies_in_several_parts_are_journaled_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from workstate.server import _harness

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"a":', "more_body": True})
        await send({"type": "http.response.body", "body": b" 1}"})

    server = MockServer(seed=1)
    parts = [
        {"type": "http.request", "body": b'{"force":', "more_body": True},
        {"type": "http.request", "body": b" true}"},
    ]
    sent = drive(server, app, list(parts))
    assert [m.get("body") for m in sent[1:]] == [b'{"a":', b" 1}"]
    (entry,) = server.harness.entries()
    assert (entry["body"], entry["response"], entry["client"]) == (
        {"force": True},
        {"a": 1},
        "asgi",
    )
    # A fault that answers at once still reads the whole body, and stops at a disconnect.
    server.harness.add_fault({"effect": {"status": 503}})
    drive(server, app, list(parts))
    drive(server, app, [{"type": "http.request", "body": b"x", "more_body": True}])
    assert [e["body"] for e in server.harness.entries()[1:]] == [{"force": True}, "x"]
    # The journal keeps at most _BODY_CAP bytes of a body.
    monkeypatch.setattr(_harness, "_BODY_CAP", 4)
    server.harness.clear_faults()
    drive(server, app, list(parts))
    assert server.harness.entries()[-1]["body"] == '{"fo'


def test_an_app_that_fails_before_answering_answers_a_500_envelope_and_journals_it() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    server = MockServer(seed=1)
    sent = drive(server, app, [{"type": "http.request", "body": b""}])
    assert sent[0]["status"] == 500
    (entry,) = server.harness.entries()
    assert dict(sent[0]["headers"])[b"request-id"] == entry["request_id"].encode()
    envelope = json.loads(sent[1]["body"])
    assert envelope["error"]["message"] == "the mock server failed unexpectedly; see its log"
    assert envelope["request_id"] == entry["request_id"]
    assert (entry["status"], entry["response"], entry["withheld"]) == (500, envelope, None)


def test_an_app_that_fails_after_answering_began_is_journaled_with_what_was_sent() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-answer")

    server = MockServer(seed=1)
    with pytest.raises(RuntimeError, match="mid-answer"):
        drive(server, app, [{"type": "http.request", "body": b""}])
    (entry,) = server.harness.entries()
    assert (entry["status"], entry["response"]) == (200, None)


def test_inspection_pages_through_a_large_environment() -> None:
    server = MockServer(clock=ManualClock(T0), seed=1)
    for _ in range(1001):
        server.create_work(ENV)
    assert len(server.harness.inspect(ENV)["data"]) == 1001


def test_the_journals_own_listings_are_not_kept_as_answers(http: httpx2.Client) -> None:
    queue(http)
    journal(http)
    journal(http)
    listing = journal(http, since=1)
    assert [(e["path"], e["status"], e["response"]) for e in listing] == [
        ("/mock/journal", 200, None),
        ("/mock/journal", 200, None),
    ]


def test_an_unshown_item_outside_a_request_is_ignored() -> None:
    server = MockServer(clock=ManualClock(T0))
    work = server.create_work(ENV)
    server.harness.note_unshown_item(work)  # a test thread, not a request: nothing to note
    assert server.harness.entries() == []


def test_the_journal_notes_an_item_whose_lapsed_lease_no_slice_has_applied_yet_as_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Lapsed leases are applied a slice per request; one beyond the slices is still stored as
    # live when its request arrives, and the journal's note of the item before the call (the
    # ground of ``move``) must show it as every answer does: expired, back in the queue.
    from workstate.server import _app

    monkeypatch.setattr(_app, "EXPIRY_SLICE", 1)
    server = MockServer(
        seed=1, clock=ManualClock(T0), profile_overrides={"default_ttl_seconds": 10}
    )
    env = server.environment(ENV)
    ids = []
    for _ in range(4):
        server.create_work(ENV)
        work = env.poll(server.now())
        assert work is not None
        env.ack(work.id, server.now())
        env.heartbeat(work.id, server.now())  # (the anthropic profile's ack starts no lease)
        ids.append(work.id)
    server.advance(60)  # four leases lapse; the move applies one of them
    with served_http(server) as http:
        stop = http.post(f"/v1/environments/{ENV}/work/{ids[3]}/stop", json={})
    assert stop.status_code == 204, stop.text
    (entry,) = server.harness.entries(operation="stop")
    assert entry["applied"]
    assert entry["move"] == {"from": "queued", "to": entry["item"]["state"]}


def test_the_journal_keeps_a_one_chunk_body_without_copying_and_caps_a_long_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workstate.server import _harness

    chunk = b'{"a": 1}'
    assert _harness._kept(b"", chunk) is chunk
    assert _harness._kept(chunk, b"!") == b'{"a": 1}!'
    monkeypatch.setattr(_harness, "_BODY_CAP", 5)
    assert _harness._kept(b"", chunk) == b'{"a":'
    assert _harness._kept(b"{", chunk) == b'{{"a"'
    assert _harness._kept(bytearray(b"{"), memoryview(chunk)) == b'{{"a"'  # type: ignore[arg-type]
