"""JSON answers that can always be rendered.

Theory of operation
-------------------
Starlette's ``JSONResponse`` writes ``json.dumps(..., ensure_ascii=False)`` as UTF-8, which
raises on a string holding an unpaired surrogate.  The core refuses such strings on the way in
(:func:`workstate._records.check_text`), so none should ever reach an answer; but a renderer that
raises *after* the core applied a change turns a success into a 500 and leaves the change in
place, so this one cannot raise on any string: when UTF-8 fails it writes the same JSON with
every non-ASCII character escaped (``"\\ud800"`` is valid JSON text).  The common case costs
what Starlette's does.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSONResponse

__all__ = ["JSONResponse", "render_json"]


def render_json(content: Any) -> bytes:
    """``content`` as compact JSON bytes: UTF-8, or ASCII with escapes when UTF-8 cannot be."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


class JSONResponse(_StarletteJSONResponse):
    """Starlette's ``JSONResponse``, rendered by :func:`render_json`."""

    def render(self, content: Any) -> bytes:
        """The body: see :func:`render_json`."""
        return render_json(content)
