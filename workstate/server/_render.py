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

A work item's answer (:func:`render_work`) is most of what an ack, a get or a poll renders,
and most of it never changes: the id, the environment, the data, ``created_at`` and the
metadata belong to the item's :class:`~workstate.WorkBody`, which every record of the item
shares until its metadata changes.  So the first answer for a body is rendered whole and
those parts of it are kept (for the latest few thousand bodies); each later answer renders only
the state and the five times of its record between them: the same bytes as
``render_json(work.to_json())`` (``tests/test_render.py`` checks it for generated items, with
both renderers), in 1.5 µs instead of 4.0 (orjson) or 7.5 (the standard library's json).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse as _StarletteJSONResponse

from workstate._profile import Precision
from workstate._time import format_time

if TYPE_CHECKING:
    from workstate._work import Work, WorkBody

__all__ = [
    "JSONResponse",
    "json_headers",
    "orjson_in_use",
    "render_json",
    "render_work",
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


# What render_work keeps of each body: the body itself (so that its id is not reused while
# kept), and the rendered text before the state, between the state and the first record time,
# and after the last one.
_Parts = tuple["WorkBody", bytes, bytes, bytes]
_BODY_PARTS: dict[int, _Parts] = {}
_BODY_PARTS_KEPT = 4096  # bodies; the dict is emptied when full (a worker's items are recent)
_MICRO = Precision.MICROSECONDS


def _keep_parts(body: WorkBody, whole: bytes) -> None:
    """Keep the parts of ``whole``, a record of ``body`` rendered whole, that every record of
    ``body`` shares.  Each is found by its key: a key's quotes cannot occur unescaped inside a
    JSON string, the values before ``metadata`` are ids and times, and ``secret`` is the last
    key."""
    state = whole.index(b',"state":"') + len(b',"state":"')
    middle = whole.index(b'","created_at":', state)
    first = whole.index(b',"acknowledged_at":', middle) + len(b',"acknowledged_at":')
    tail = whole.index(b',"metadata":', first)
    secret = whole.rindex(b',"secret":') + len(b',"secret":')  # (the last key: see above)
    if len(_BODY_PARTS) >= _BODY_PARTS_KEPT:
        _BODY_PARTS.clear()
    _BODY_PARTS[id(body)] = (body, whole[:state], whole[middle:first], whole[tail:secret])


# The body's head, the state, the body's middle, the five times of the record (the first one
# after the middle's key), the body's tail and the secret.
_WORK = (
    b'%b%b%b%b,"started_at":%b,"latest_heartbeat_at":%b,"stop_requested_at":%b,"stopped_at":%b%b%b}'
)


def _time(value: _dt.datetime | None, precision: Precision) -> bytes:
    return b"null" if value is None else b'"%b"' % format_time(value, precision).encode()


def render_work(work: Work, secret: str | None = None) -> bytes:
    """``render_json(work.to_json())``, with ``secret`` as the ``secret`` (None: null), built
    from the parts of the item that never change rendered once (see the module)."""
    body = work.body
    parts = _BODY_PARTS.get(id(body))
    if parts is None or parts[0] is not body:  # the body's first answer: rendered whole
        content = work.to_json()
        content["secret"] = secret
        whole = render_json(content)
        _keep_parts(body, whole)
        return whole
    lc = body.profile.lifecycle_precision
    return _WORK % (
        parts[1],
        work.state._value_.encode(),
        parts[2],
        _time(work.acknowledged_at, lc),
        _time(work.started_at, lc),
        _time(work.latest_heartbeat_at, _MICRO),
        _time(work.stop_requested_at, lc),
        _time(work.stopped_at, lc),
        parts[3],
        b"null" if secret is None else render_json(secret),
    )


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
