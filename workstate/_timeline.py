"""The HTML timeline of a history and its verdict: one self-contained file for a browser.

Theory of operation
-------------------
Each client is a lane; each call is a bar from its invocation to its return (an ``info`` call,
which never returned, fades out to the right edge).  Bars are coloured by outcome; the calls of
an illegal verdict's smallest unorderable set are outlined in red and labelled, and the
longest order the checker found is numbered on its bars, so the point where the order breaks
is visible.  Hovering a bar shows the call (its inputs and answer).  The page is one HTML
string with inline SVG and CSS and no scripts or external resources; :func:`render_timeline`
is pure and the command line writes it with ``--html``.
"""

from __future__ import annotations

import html
import json

from workstate._history import History, HistoryCall
from workstate._linearize import HistoryReport

__all__ = ["render_timeline"]

_LANE = 28
_LEFT = 140
_WIDTH = 1200
_COLOURS = {"ok": "#4c9f70", "fail": "#d9a441", "info": "#8a8fa3"}


def render_timeline(history: History, report: HistoryReport | None = None) -> str:
    """The timeline as an HTML document (a string).

    >>> from workstate._history import History
    >>> "<svg" in render_timeline(History(calls=()))
    True
    """
    calls = history.calls
    clients = sorted({c.client for c in calls})
    lane = {name: i for i, name in enumerate(clients)}
    start = min((c.invoke for c in calls), default=0.0)
    end = max((c.ret if c.ret is not None else c.invoke for c in calls), default=1.0)
    span = max(end - start, 1e-9)
    scale = (_WIDTH - _LEFT - 20) / span
    bad: set[int] = set(report.illegal_calls) if report is not None else set()
    order: dict[int, int] = {}
    if report is not None:
        for problem in report.problems:
            for position, ident in enumerate(problem.linearized, start=1):
                order.setdefault(ident, position)
    height = _LANE * (len(clients) + 2)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="11">'
    ]
    for name, i in lane.items():
        y = _LANE * (i + 1)
        parts.append(
            f'<text x="4" y="{y + 14}">{html.escape(name)}</text>'
            f'<line x1="{_LEFT}" y1="{y + _LANE - 2}" x2="{_WIDTH - 10}" '
            f'y2="{y + _LANE - 2}" stroke="#eee"/>'
        )
    for call in calls:
        parts.append(_bar(call, lane[call.client], start, scale, end, bad, order))
    parts.append(
        f'<text x="{_LEFT}" y="14">0 s</text>'
        f'<text x="{_WIDTH - 80}" y="14">{span:.3f} s</text></svg>'
    )
    verdict = "no verdict" if report is None else report.verdict
    summary = "" if report is None else html.escape(report.format())
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>workstate history: "
        f"{html.escape(verdict)}</title><style>body{{font-family:sans-serif;margin:1em}}"
        ".ok{color:#4c9f70}.illegal{color:#c0392b}.unknown{color:#8a8fa3}"
        "pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}</style></head><body>"
        f"<h1 class='{html.escape(verdict)}'>{len(calls)} calls, {len(clients)} clients: "
        f"{html.escape(verdict)}</h1>"
        "<p>Lanes are clients; bars run from a call's invocation to its return (green ok, "
        "amber refused, grey info: no answer, may have happened any time after). Red "
        "outlines: calls whose answers cannot all be true. Numbers: the longest order the "
        "checker found.</p>" + "".join(parts) + f"<pre>{summary}</pre></body></html>\n"
    )


def _bar(
    call: HistoryCall,
    row: int,
    start: float,
    scale: float,
    end: float,
    bad: set[int],
    order: dict[int, int],
) -> str:
    x = _LEFT + (call.invoke - start) * scale
    finish = call.ret if call.ret is not None else end
    w = max((finish - call.invoke) * scale, 2.0)
    y = _LANE * (row + 1) + 4
    colour = _COLOURS.get(call.outcome, "#999")
    stroke = ' stroke="#c0392b" stroke-width="3"' if call.id in bad else ""
    opacity = ' fill-opacity="0.4"' if call.outcome == "info" else ""
    detail = json.dumps(call.to_json(), indent=1, default=str)
    label = call.op + (f" #{order[call.id]}" if call.id in order else "")
    if call.id in bad:
        label = "✗ " + label
    return (
        f"<g><title>{html.escape(call.describe())}\n{html.escape(detail)}</title>"
        f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_LANE - 10}" rx="3" '
        f'fill="{colour}"{opacity}{stroke}/>'
        f'<text x="{x + 2:.1f}" y="{y + 12}" fill="#fff">{html.escape(label)}</text></g>'
    )
