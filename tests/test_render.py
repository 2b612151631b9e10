"""render_work: a work item's answer from its body's parts rendered once, the same bytes as
rendering its JSON whole."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workstate import Work
from workstate.server import MockServer, _render
from workstate.server._render import render_json, render_work
from workstate.testing import Run, profiles, runs, works


@contextlib.contextmanager
def rendering(orjson: bool) -> Iterator[None]:
    """Render with orjson or the standard library's json, and the process's setting back."""
    before = _render.orjson_in_use()
    assert _render.use_orjson(orjson) is orjson
    try:
        yield
    finally:
        _render.use_orjson(before)


@pytest.fixture(params=[True, False], ids=["orjson", "json"])
def renderer(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test once with orjson and once with the standard library's json."""
    with rendering(request.param):
        yield


BOTH = pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "json"])


@BOTH
@given(data=st.data())
def test_an_item_renders_as_its_json_does(orjson: bool, data: st.DataObject) -> None:
    work = data.draw(profiles().flatmap(works))
    with rendering(orjson):
        assert render_work(work) == render_json(work.to_json())
        # (A second time from the parts kept for its body.)
        assert render_work(work) == render_json(work.to_json())


@BOTH
@given(run=st.one_of(runs(), profiles().flatmap(runs)))
def test_every_record_of_an_item_renders_as_its_json_does(orjson: bool, run: Run) -> None:
    # The first record is rendered whole and its body's parts kept; the later records of the
    # same body (other states, other times) are rendered from those parts.
    with rendering(orjson):
        for work in [run.start, *(step.work for step in run.replay())]:
            assert render_work(work) == render_json(work.to_json())


@BOTH
@given(data=st.data(), secret=st.text(max_size=40))
def test_a_secret_renders_in_its_place(orjson: bool, data: st.DataObject, secret: str) -> None:
    work = data.draw(works())
    with rendering(orjson):
        assert render_work(work, secret) == render_json({**work.to_json(), "secret": secret})
        assert json.loads(render_work(work, secret))["secret"] == secret


def test_a_poll_answer_carries_the_minted_secret_or_the_items_own(renderer: None) -> None:
    server = MockServer(seed=3)
    own = server.create_work("env_a", secret='s3cr"et')
    minted = server.create_work("env_a")
    env = server.environment("env_a")
    for expected in (own, minted):
        polled = env.poll(server.now())
        assert polled is not None
        assert polled.id == expected.id
        secret = server.sessions.delivery_secret(polled, "http://x")
        answer = json.loads(render_work(polled, secret))
        assert answer == {**polled.to_json(), "secret": secret}
        assert (secret == 's3cr"et') is (expected is own)


def test_a_changed_body_renders_its_own_parts(renderer: None) -> None:
    server = MockServer(seed=3)
    work = server.create_work("env_a", metadata={"k": "one"})
    env = server.environment("env_a")
    assert json.loads(render_work(work))["metadata"] == {"k": "one"}
    updated = env.update_metadata(work.id, server.now(), {"k": "twö"})
    assert updated.body is not work.body
    assert json.loads(render_work(updated))["metadata"] == {"k": "twö"}
    assert render_work(updated) == render_json(updated.to_json())
    assert json.loads(render_work(work))["metadata"] == {"k": "one"}  # the old record's own


def test_the_parts_are_kept_for_a_bounded_number_of_bodies(
    renderer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_render, "_BODY_PARTS", {})
    monkeypatch.setattr(_render, "_BODY_PARTS_KEPT", 8)
    server = MockServer(seed=3)
    items = [server.create_work("env_a") for _ in range(20)]
    for work in items:
        assert render_work(work) == render_json(work.to_json())
        assert 1 <= len(_render._BODY_PARTS) <= 8
    assert _render._BODY_PARTS[id(items[-1].body)][0] is items[-1].body


def test_parts_kept_under_the_id_of_another_body_are_not_used(
    renderer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parts are kept with their body, so its id cannot be reused while they are; and parts
    # found under an id are used only for the very body they were rendered from.
    server = MockServer(seed=3)
    work, other = server.create_work("env_a"), server.create_work("env_a")
    stale = (other.body, b"{never", b"used", b"}")
    monkeypatch.setattr(_render, "_BODY_PARTS", {id(work.body): stale})
    assert render_work(work) == render_json(work.to_json())
    assert _render._BODY_PARTS[id(work.body)][0] is work.body


def test_text_no_utf_8_holds_still_renders_as_valid_json(renderer: None) -> None:
    # The core refuses such metadata on the way in; a record built around it still renders,
    # escaped (render_json's fallback), and parses back to the same value.
    server = MockServer(seed=3)
    work: Work = server.create_work("env_a")
    odd = attrs.evolve(work, body=attrs.evolve(work.body, metadata={"k": "\ud800"}))
    assert json.loads(render_work(odd)) == odd.to_json()
    assert json.loads(render_work(odd)) == odd.to_json()  # (from the kept parts)
