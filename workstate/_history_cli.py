"""``python -m workstate check --history FILE``: the linearizability checker's command line.

The only part of the history checker that does I/O: it reads the file, reads the clock for
``--timeout``, prints the report and writes the ``--html`` timeline.  Exit status: 0 ok,
1 illegal, 2 unreadable, 3 unknown (a budget ran out, or the search was not exact).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Sequence

from workstate._history import HistoryFormatError, read_history
from workstate._linearize import check_history
from workstate._profile import PROFILES
from workstate._timeline import render_timeline

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """Check a history file; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m workstate check --history",
        description="Check that some order of a recorded history's calls, consistent with "
        "real time, explains every answer under the model (JSON Lines, see "
        "docs/testing-guide.md).",
    )
    parser.add_argument("--history", metavar="FILE", required=True, help="- for stdin")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="the provider behaviour to check against (default: the history's, else anthropic)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="give up after S seconds"
    )
    parser.add_argument("--html", metavar="OUT", default=None, help="write the timeline here")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help or a usage error: argparse has printed it
        return exc.code if isinstance(exc.code, int) else 2
    name = "<stdin>" if args.history == "-" else args.history
    try:
        if args.history == "-":
            history = read_history(sys.stdin)
        else:
            history = read_history(pathlib.Path(args.history).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, HistoryFormatError) as exc:
        print(f"workstate check: {name}: cannot read: {exc}", file=sys.stderr)
        return 2
    profile = None if args.profile is None else PROFILES[args.profile]
    report = check_history(history, profile=profile, timeout=args.timeout, clock=time.monotonic)
    print(report.format(source=name))
    if args.html is not None:
        try:
            pathlib.Path(args.html).write_text(render_timeline(history, report), encoding="utf-8")
        except OSError as exc:
            print(f"workstate check: cannot write {args.html}: {exc}", file=sys.stderr)
            return 2
    return report.exit_status
