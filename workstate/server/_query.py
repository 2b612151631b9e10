"""Query-string parameters of the mock server's routes, parsed the one way every route shares.

Theory of operation
-------------------
A query parameter is text; a route that wants an integer takes it through :func:`int_query`,
which refuses anything but an optional sign and up to 30 digits with a 400 naming the parameter
(the echoed value escaped and cut short, so an error can always be rendered).  Ranges are the
core's to check, not ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from workstate._errors import InvalidInputError
from workstate._text import excerpt

__all__ = ["Queried", "int_query"]

_INTEGER = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)  # the core checks the ranges


class Queried(Protocol):
    """A request with a scope and query parameters (Starlette's ``Request``, a ``Call``)."""

    @property
    def scope(self) -> Mapping[str, Any]:
        """The ASGI scope."""

    @property
    def query_params(self) -> Mapping[str, str]:
        """The query parameters."""


def int_query(request: Queried, name: str) -> int | None:
    """The query parameter ``name`` as an int, None when absent; 400 naming it otherwise."""
    if not request.scope.get("query_string"):
        return None  # most calls carry no query: skip parsing one (a few µs a request)
    text = request.query_params.get(name)
    if text is None:
        return None
    if _INTEGER.fullmatch(text) is None:
        raise InvalidInputError(
            f"query parameter {name} must be an integer, got {excerpt(text)}",
            key=name,
            expected="an integer",
            got=text,
        )
    return int(text)
