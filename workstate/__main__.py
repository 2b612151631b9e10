"""The command line: ``python -m workstate {serve,check,demo,diagram}``.

``serve`` and ``check`` live in their own modules (the mock server and the trace checker); this
module only dispatches, so that ``demo`` and ``diagram`` work with no extra installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import sys
from collections.abc import Sequence

from workstate._engine import mermaid
from workstate._profile import PROFILES
from workstate._work import NO_HEARTBEAT, Work

_USAGE = """usage: python -m workstate COMMAND [ARGS]

commands:
  serve     run the mock work API server (needs the 'server' extra)
  check     check a recorded trace (JSON Lines) against the model;
            check --history FILE: check a concurrent history for linearizability
  demo      print a work item's life as JSON, step by step
  diagram   print the lifecycle diagram (Mermaid), or --write it into docs/lifecycle.md
"""


def demo(argv: Sequence[str]) -> int:
    """Print one work item's life, one JSON object per step."""
    parser = argparse.ArgumentParser(prog="python -m workstate demo")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="anthropic")
    args = parser.parse_args(argv)
    t0 = dt.datetime(2026, 7, 1, 8, 15, tzinfo=dt.UTC)

    def at(seconds: float) -> dt.datetime:
        return t0 + dt.timedelta(seconds=seconds)

    def show(step: str, payload: object) -> None:
        print(json.dumps({"step": step, "result": payload}))

    w = Work.create(
        id="work_demo",
        environment_id="env_demo",
        session_id="sesn_demo",
        secret="demo-secret",
        now=t0,
        profile=PROFILES[args.profile],
    )
    show("create", w.to_json())
    w = w.deliver(at(0.5), worker_id="worker-1")
    show("poll", w.to_json(include_secret=True))
    w = w.ack(at(1), worker_id="worker-1")
    show("ack", w.to_json())
    w, beat = w.heartbeat(at(1.25), expected_last_heartbeat=NO_HEARTBEAT)
    show("heartbeat", beat.to_json())
    w, beat = w.heartbeat(at(31.5), expected_last_heartbeat=beat.last_heartbeat)
    show("heartbeat", beat.to_json())
    w = w.stop(at(40))
    show("stop", w.to_json())
    w = w.stop(at(42))
    show("stop", w.to_json())
    return 0


def diagram(argv: Sequence[str]) -> int:
    """Print the Mermaid diagram, or rewrite it inside docs/lifecycle.md."""
    parser = argparse.ArgumentParser(prog="python -m workstate diagram")
    parser.add_argument("--write", metavar="FILE", nargs="?", const="docs/lifecycle.md")
    args = parser.parse_args(argv)
    text = mermaid()
    if args.write is None:
        print(text, end="")
        return 0
    path = pathlib.Path(args.write)
    doc = path.read_text()
    start = doc.index("```mermaid\n") + len("```mermaid\n")
    end = doc.index("```", start)
    path.write_text(doc[:start] + text + doc[end:])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        return demo(rest)
    if command == "diagram":
        return diagram(rest)
    if command == "check":
        if any(a == "--history" or a.startswith("--history=") for a in rest):
            from workstate._history_cli import main as history_main  # needs no Hypothesis

            return history_main(rest)
        from workstate._trace import main as check_main  # needs no Hypothesis

        return check_main(rest)
    if command == "serve":
        try:
            from workstate.server._cli import main as serve_main
        except ImportError as exc:  # the 'server' extra is missing: say which one
            print(f"python -m workstate serve: {exc}", file=sys.stderr)
            return 2
        return serve_main(rest)
    print(f"unknown command {command!r}\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
