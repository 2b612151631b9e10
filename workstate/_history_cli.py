"""``python -m workstate check --history FILE``: the linearizability checker's command line.

The only part of the history checker that does I/O: it reads the file, reads the clock for
``--timeout``, prints the report and writes the ``--html`` timeline.  Exit status: 0 ok,
1 illegal, 2 unreadable, 3 unknown (a budget ran out, or the search was not exact).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Sequence

from workstate._history import History, HistoryFormatError, history_from_journal, read_history
from workstate._linearize import check_history
from workstate._profile import PROFILES, Profile
from workstate._profile_cli import (
    TTL_FLAGS,
    ProfileOptionError,
    add_profile_options,
    is_journal_header,
    journal_profile,
    option_dest,
    profile_from_options,
)
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
    parser.add_argument(
        "--history",
        metavar="FILE",
        required=True,
        help="a history, or a mock server's request journal (serve --journal); - for stdin",
    )
    add_profile_options(parser)
    parser.set_defaults(profile=None)  # none given: the history's own, else anthropic
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
            history, recorded = _read(sys.stdin.read(), "the input")
        else:
            text = pathlib.Path(args.history).read_text(encoding="utf-8")
            history, recorded = _read(text, "the file")
    except (OSError, UnicodeDecodeError, HistoryFormatError) as exc:
        print(f"workstate check: {name}: cannot read: {exc}", file=sys.stderr)
        return 2
    try:
        profile = _profile(args, history, recorded)
    except ProfileOptionError as exc:
        print(exc, file=sys.stderr)
        return 2
    report = check_history(history, profile=profile, timeout=args.timeout, clock=time.monotonic)
    print(report.format(source=name))
    if args.html is not None:
        try:
            pathlib.Path(args.html).write_text(render_timeline(history, report), encoding="utf-8")
        except OSError as exc:
            print(f"workstate check: cannot write {args.html}: {exc}", file=sys.stderr)
            return 2
    return report.exit_status


_EXPECTED = (
    'expected a history (its header line {"type": "history", "version": 1, ...} first) '
    "or a mock server's request journal (one JSON entry a line, as serve --journal writes)"
)


def _read(text: str, what: str) -> tuple[History, Profile | None]:
    """A history file, or a request journal (its first line has ``seq`` and ``operation``, or
    is the header ``serve --journal`` writes); and the profile a journal's header records.

    ``what`` names the input in the message for one with no lines to read ("the file").
    """
    lines = text.splitlines()
    # The first line that is not blank, and its number.
    at, first = next(((n, line) for n, line in enumerate(lines, 1) if line.strip()), (0, None))
    if first is None:
        # Either kind could have been meant: read_history's "no header line" would be news
        # only to a history's author, and a journal with no entries has no calls to check.
        found = "is empty" if not text else "holds only blank lines"
        raise HistoryFormatError(f"{what} {found}; {_EXPECTED}")
    try:
        head = json.loads(first)
    except ValueError:
        head = None  # read_history names the line and the JSON error
    recorded = None
    if is_journal_header(head):
        assert isinstance(head, dict)
        try:
            recorded = journal_profile(head)
        except ProfileOptionError as exc:
            raise HistoryFormatError(str(exc), line=at) from None
    elif not (isinstance(head, dict) and "seq" in head and "operation" in head):
        return read_history(lines), None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (recorded is not None and number == at):
            continue
        try:
            entries.append(json.loads(line))
        except ValueError as exc:
            raise HistoryFormatError(f"invalid JSON: {exc}", line=number) from None
    return history_from_journal(entries), recorded


def _profile(
    args: argparse.Namespace, history: History, recorded: Profile | None
) -> Profile | None:
    """The profile the options name over the history's own (or the one a journal's header
    records); None when neither says: the history's named one."""
    flags = [args.profile_file, *(getattr(args, option_dest(f)) for f in TTL_FLAGS)]
    if args.profile is None and all(value is None for value in flags):
        return recorded
    if args.profile is None and recorded is None:
        known = history.profile in PROFILES
        args.profile = history.profile if known else "anthropic"
    return profile_from_options(args, recorded=recorded)
