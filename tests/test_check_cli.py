"""``python -m workstate check FILE``: exit 0 when explained, 1 when not, 2 when unreadable."""

from __future__ import annotations

import datetime as dt
import io
import json
import pathlib
import subprocess
import sys

import pytest

from workstate import NO_HEARTBEAT, QODER, Work
from workstate._trace import heartbeat_record, main

T0 = dt.datetime(2026, 7, 1, 8, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def life(profile: object = None) -> list[dict[str, object]]:
    """A short, legal life: created, acked, one heartbeat (answer and snapshot), stopped."""
    kwargs = {} if profile is None else {"profile": profile}
    w0 = Work.create(id="work_1", environment_id="env_1", session_id="sesn_1", now=T0, **kwargs)
    w1 = w0.ack(at(1.25))
    w2, beat = w1.heartbeat(at(2.5), expected_last_heartbeat=NO_HEARTBEAT)
    w3 = w2.stop(at(3.75), force=True)
    return [
        w0.to_json(),
        w1.to_json(),
        heartbeat_record("work_1", beat),
        w2.to_json(),
        w3.to_json(),
    ]


def write(tmp_path: pathlib.Path, lines: list[str]) -> str:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_an_explained_trace_exits_0(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, [json.dumps(r) for r in life()])
    assert main([path]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{path}: 5 records, 1 work item (profile anthropic)\n"
        f"{path}: explained: some sequence of legal operations explains it\n"
    )


def test_an_unexplained_trace_exits_1_naming_lines(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = life()
    lines = [json.dumps(r) for r in [records[0], records[4], records[1]]]
    path = write(tmp_path, ["", lines[0], "   ", lines[1], lines[2]])  # blank lines are skipped
    assert main([path]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}: 3 records, 1 work item (profile anthropic)",
        "  line 5 (work_1): illegal-state-change: illegal state change stopped → starting: no "
        "sequence of legal operations leads from stopped to starting",
        f"{path}: not explained: 1 violation",
    ]


def test_the_profile_option(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, [json.dumps(r) for r in life(QODER)])
    assert main(["--profile", "qoder", path]) == 0
    assert "(profile qoder)" in capsys.readouterr().out
    micro = write(tmp_path, [json.dumps(r) for r in life()])  # microsecond lifecycle times
    assert main(["--profile", "qoder", micro]) == 1
    assert "invariant" in capsys.readouterr().out


def test_the_complete_option(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = life()
    path = write(tmp_path, [json.dumps(r) for r in [records[0], records[3]]])
    assert main([path]) == 0
    assert main(["--complete", path]) == 1
    out = capsys.readouterr().out
    assert "(profile anthropic, complete)" in out
    assert "missing-step" in out


def test_stdin_is_read_with_a_dash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "".join(json.dumps(r) + "\n" for r in life())
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["-"]) == 0
    assert capsys.readouterr().out.startswith("<stdin>: 5 records")


def test_a_missing_file_exits_2(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.jsonl")
    assert main([missing]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"workstate check: {missing}: cannot read: ")


def test_an_invalid_json_line_exits_2_with_its_number(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, [json.dumps(life()[0]), "", '{"type": "work",'])
    assert main([path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"workstate check: {path}:3: invalid JSON: ")


def test_undecodable_bytes_exit_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\xff\xfe{}\n")
    assert main([str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_an_empty_trace_is_explained(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([write(tmp_path, [])]) == 0
    assert "0 records, 0 work items" in capsys.readouterr().out


def test_usage_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["--profile", "nobody", "x"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "usage: python -m workstate check" in capsys.readouterr().out


def test_the_dispatcher_runs_this_command(tmp_path: pathlib.Path) -> None:
    from workstate.__main__ import main as dispatch

    assert dispatch(["check", write(tmp_path, [json.dumps(r) for r in life()])]) == 0


def test_the_command_runs_without_hypothesis(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, [json.dumps(r) for r in life()])
    script = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "from workstate._trace import main\n"
        "try:\n"
        "    import workstate.testing\n"
        "except ImportError as exc:\n"
        "    print('no testing:', exc)\n"
        f"sys.exit(main([{path!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "no testing: workstate.testing needs Hypothesis" in done.stdout
    assert "pip install 'sandbox-workstate[testing]'" in done.stdout
    assert "explained" in done.stdout
