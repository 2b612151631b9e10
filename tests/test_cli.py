"""The command line's own commands: demo, diagram, help."""

from __future__ import annotations

import json
import pathlib

import pytest

from workstate import mermaid, work_from_json
from workstate.__main__ import main


def test_demo_prints_a_life_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    steps = [line["step"] for line in lines]
    assert steps == ["create", "poll", "ack", "heartbeat", "heartbeat", "stop", "stop"]
    assert lines[1]["result"]["secret"] == "demo-secret"
    assert lines[-1]["result"]["state"] == "stopped"
    assert work_from_json(lines[-1]["result"]).stopped_at is not None


def test_demo_with_qoder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--profile", "qoder"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["result"]["created_at"] == "2026-07-01T08:15:00Z"


def test_diagram(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    assert main(["diagram"]) == 0
    assert capsys.readouterr().out == mermaid()
    doc = tmp_path / "x.md"
    doc.write_text("intro\n```mermaid\nold\n```\nend\n")
    assert main(["diagram", "--write", str(doc)]) == 0
    assert doc.read_text() == f"intro\n```mermaid\n{mermaid()}```\nend\n"


def test_help_and_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_serve_without_the_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "workstate.server._cli", None)  # as if not installable
    assert main(["serve"]) == 2
    assert "python -m workstate serve" in capsys.readouterr().err


def test_check_is_dispatched(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    from workstate import Work
    from workstate._time import parse_time

    w = Work.create(
        id="work_c", environment_id="env_c", session_id="s", now=parse_time("2026-07-01T08:15:00Z")
    )
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps(w.to_json()) + "\n")
    assert main(["check", str(trace)]) == 0
    assert capsys.readouterr().out


def test_serve_is_dispatched(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    assert "--clock" in capsys.readouterr().out
