"""JSON answers that can always be rendered.

Theory of operation
-------------------
Starlette's ``JSONResponse`` writes ``json.dumps(..., ensure_ascii=False)`` as UTF-8, which
raises on a string holding an unpaired surrogate.  The core refuses such strings on the way in
(:func:`workstate._records.check_text`), so none should ever reach an answer; but a renderer that
raises *after* the core applied a change turns a success into a 500 and leaves the change in
place, so this one cannot raise on any string: when UTF-8 fails it writes the same JSON with
every non-ASCII character escaped (``"\\ud800"`` is valid JSON text).

With ``orjson`` installed (the ``fast`` extra) answers are rendered by it: the same compact
UTF-8 text for every value the server answers, several times faster.  What orjson refuses (an
unpaired surrogate, an int beyond 64 bits, a key that is not a string) falls back to the
standard library path above, so the answer is the same as without orjson.  :func:`use_orjson`
switches it off (``serve --stack plain``).

orjson's bytes keep the whole buffer it wrote them in (4 KB, however short the text), and the
journal keeps each answer: a server's 100,000 entries held 400 MB more than their answers, and
that heap cost every request time (``docs/performance.md``).  So :func:`render_json` hands on
a copy of exactly the answer's size (~0.1 µs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSONResponse

__all__ = [
    "JSONResponse",
    "json_headers",
    "orjson_in_use",
    "render_json",
    "scope_request_id",
    "use_orjson",
]

_orjson_dumps: Callable[[Any], bytes] | None = None


def use_orjson(enabled: bool) -> bool:
    """Render with orjson (when it is installed) or with the standard library; returns whether
    orjson is now in use.  Process-wide."""
    global _orjson_dumps
    _orjson_dumps = None
    if enabled:
        try:
            import orjson
        except ImportError:
            return False
        _orjson_dumps = orjson.dumps
    return _orjson_dumps is not None


def orjson_in_use() -> bool:
    """Whether answers are rendered by orjson."""
    return _orjson_dumps is not None


# ``json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))``, built
# once: dumps builds an encoder per call with these options, a quarter of a small answer's
# rendering.  (No circular check: an answer is a tree of fresh dicts and lists.)
_encode = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, separators=(",", ":")
).encode
_encode_ascii = json.JSONEncoder(
    check_circular=False, allow_nan=False, separators=(",", ":")
).encode


def render_json(content: Any) -> bytes:
    """``content`` as compact JSON bytes: UTF-8, or ASCII with escapes when UTF-8 cannot be."""
    if _orjson_dumps is not None:
        try:
            return memoryview(_orjson_dumps(content)).tobytes()  # (right-sized: see above)
        except TypeError:  # orjson.JSONEncodeError: a surrogate, a huge int, a non-str key
            pass
    text = _encode(content)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _encode_ascii(content).encode("ascii")


_JSON = (b"content-type", b"application/json")


def json_headers(body: bytes | None) -> list[tuple[bytes, bytes]]:
    """The headers of an answer with the JSON ``body`` (None: an answer without a body), as
    Starlette's ``JSONResponse`` writes them."""
    return [] if body is None else [(b"content-length", b"%d" % len(body)), _JSON]


def scope_request_id(scope: Mapping[str, Any]) -> str | None:
    """The request id the harness noted in the scope's ``state``, for an error envelope."""
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, Mapping) else None


class JSONResponse(_StarletteJSONResponse):
    """Starlette's ``JSONResponse``, rendered by :func:`render_json`."""

    def render(self, content: Any) -> bytes:
        """The body: see :func:`render_json`."""
        return render_json(content)


use_orjson(True)
