"""The API key: refuse at start-up a key that no request could ever carry.

Theory of operation
-------------------
A client sends the key in a header (``x-api-key``, or ``Authorization: Bearer``).  HTTP header
values are bytes that servers read as Latin-1, and parsers strip the whitespace around a value;
a header cannot hold a control character at all.  So a key with surrounding whitespace, a
control character, or a character outside Latin-1 can never match any request, and a server
started with one would refuse everything with a 401 that no client could fix.  An empty key
would match an empty header, which is no protection.  :func:`check_api_key` refuses all of
these when the server is built (``MockServer(api_key=...)``, ``serve --api-key``), saying why.

A request is allowed (:func:`allowed`) when it carries the key, compared in constant time, or
a sessions token that the server minted for the item the request is about.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from starlette.datastructures import Headers

from workstate._errors import InvalidInputError
from workstate._text import excerpt

__all__ = ["allowed", "check_api_key"]

_ACCEPTED = "a non-empty key of printable Latin-1 characters with no leading or trailing whitespace"


def check_api_key(key: object) -> str | None:
    """``key`` if a request could carry it in a header (or None: no key), else a 400."""
    if key is None:
        return None
    problem = None
    if not isinstance(key, str):
        problem = f"must be a string, got {type(key).__name__}"
    elif not key:
        problem = "is empty, which would match an empty header"
    elif key != key.strip():
        problem = (
            "has leading or trailing whitespace, which HTTP strips from header values, so no "
            "request could match it"
        )
    else:
        for index, char in enumerate(key):
            if ord(char) > 0xFF:
                problem = (
                    f"holds {char!r} (U+{ord(char):04X}) at index {index}, outside Latin-1: "
                    "no HTTP header can carry it"
                )
                break
            if not char.isprintable() and char != " ":  # tabs, control characters
                problem = (
                    f"holds the control character U+{ord(char):04X} at index {index}, which "
                    "no HTTP header can carry"
                )
                break
    if problem is None:
        return key  # type: ignore[return-value]
    raise InvalidInputError(
        f"the API key {problem}; use {_ACCEPTED} (got {excerpt(key, 8)})",
        key="api_key",
        expected=_ACCEPTED,
    )


def _carries_key(raw_headers: Sequence[tuple[bytes, bytes]], key: str) -> bool:
    # The first x-api-key and authorization headers, as Starlette's Headers.get reads them,
    # from one scan of the raw list: building Headers for every request cost more than the
    # comparison (benchmarks/app_layers.py).
    api_key = authorization = None
    for name, value in raw_headers:
        if name == b"x-api-key":
            if api_key is None:
                api_key = value
        elif name == b"authorization" and authorization is None:
            authorization = value
    expected = key.encode()
    if api_key is not None and hmac.compare_digest(api_key.decode("latin-1").encode(), expected):
        return True
    if authorization is None:
        return False
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


def allowed(
    raw_headers: Sequence[tuple[bytes, bytes]],
    key: str,
    path: str,
    token_allows: Callable[[Headers, str], bool],
) -> bool:
    """Whether a request to ``path`` with these headers carries ``key``, or a sessions token
    that ``token_allows`` for ``path``."""
    return _carries_key(raw_headers, key) or token_allows(Headers(raw=list(raw_headers)), path)
