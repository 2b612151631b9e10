"""The checker against the real mock under concurrent load, and on histories from the model.

* 32 clients run Hypothesis-drawn programs against the mock over HTTP through the recorder;
  long polls on an empty queue outlive the clients' patience and become ``info``.  The history
  (thousands of calls) must be ``ok``.
* Histories drawn from the model, their calls overlapping at random in real time, are ``ok``;
  every single mutation of a checked answer into one the model never gives is ``illegal``, and
  the mutated call is among those named.
"""

from __future__ import annotations

import random

from hypothesis import given, settings

from workstate import History, check_history, history_from_journal
from workstate.server import MockServer, serve_in_thread
from workstate.testing import (
    HistoryRecorder,
    ProgramStep,
    answer_mutations,
    client_programs,
    model_histories,
    run_programs,
)

_OPS = ("create", "poll", "ack", "heartbeat", "stop", "get", "update", "list", "stats")


def test_the_mock_under_32_concurrent_clients_is_linearizable() -> None:
    rnd = random.Random(13)
    weights = (3, 3, 3, 5, 1, 2, 1, 1, 1)
    programs = [
        [
            ProgramStep(rnd.choices(_OPS, weights)[0], rnd.randrange(64), rnd.randrange(6))
            for _ in range(70)
        ]
        for _ in range(32)
    ]
    recorder = HistoryRecorder()
    with serve_in_thread(MockServer()) as url:
        history = run_programs(programs, url, recorder, timeout=10.0)
    assert len(history.calls) == 32 * 70
    report = check_history(history)
    assert report.verdict == "ok", report.format()
    assert report.items > 50
    assert any(c.outcome == "info" for c in history.calls)  # timed-out long polls


@settings(max_examples=5, deadline=None)
@given(client_programs(max_clients=4, max_steps=8))
def test_drawn_concurrent_programs_against_the_mock_are_linearizable(
    programs: list[list[ProgramStep]],
) -> None:
    with serve_in_thread(MockServer()) as url:
        history = run_programs(programs, url, HistoryRecorder())
    assert check_history(history).verdict == "ok"


@given(model_histories())
def test_model_histories_are_linearizable(history: History) -> None:
    report = check_history(history)
    assert report.verdict == "ok", report.format()


@settings(max_examples=15)
@given(model_histories(max_calls=12))
def test_each_mutated_answer_is_illegal(history: History) -> None:
    for ident, what, mutated in answer_mutations(history):
        report = check_history(mutated)
        assert report.verdict == "illegal", f"{what} on #{ident}:\n{report.format()}"
        assert ident in report.illegal_calls, f"{what} on #{ident}:\n{report.format()}"


def test_the_mocks_own_journal_of_a_concurrent_run_is_linearizable() -> None:
    server = MockServer()
    programs = [[ProgramStep(op, i % 4, i % 5) for i, op in enumerate(_OPS * 3)] for _ in range(4)]
    with serve_in_thread(server) as url:
        run_programs(programs, url, HistoryRecorder())
    entries = [e.to_json() for e in server.harness.journal.entries()]
    history = history_from_journal(entries)
    assert len(history.calls) > 50
    assert history.clock == "monotonic"
    assert check_history(history).verdict == "ok"
