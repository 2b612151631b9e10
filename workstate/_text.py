"""Text from outside: the one check for strings the core stores, and safe echoes of bad input.

Theory of operation
-------------------
Every string the core accepts is later written to the wire: as JSON in an answer, in an error
message, in a header.  JSON text is UTF-8, and a Python ``str`` can hold what UTF-8 cannot
encode: an unpaired surrogate (``"\\ud800"``, which a JSON body may spell as an escape).  Such a
string, once stored, makes every later rendering of the record fail.  So the core checks
strings on the way *in*, in one place (:func:`workstate._records.check_text`, built on
:func:`unrenderable_at` here, which the id rule, metadata, secrets, worker ids and heartbeat
tokens all call), and refuses them with a 400 naming the key.

Error messages echo what was wrong, and what was wrong may be hostile: megabytes long, or
itself unrenderable.  :func:`excerpt` is the one way a message quotes a value: its ``repr``
(which escapes surrogates and control characters, so the result is always printable ASCII-safe
text), cut to a bounded length with the full length noted.  :func:`bounded` does the same for
the ``got`` field of an error, so no error object holds a huge input either.
"""

from __future__ import annotations

__all__ = ["MAX_ECHO", "bounded", "counted", "excerpt", "safe_message", "unrenderable_at"]

MAX_ECHO = 64
"""How many characters of a bad value an error message or ``got`` field quotes at most."""


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (the nouns here take an ``s``).

    >>> counted(1, "work item"), counted(0, "record"), counted(3, "call")
    ('1 work item', '0 records', '3 calls')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def unrenderable_at(text: str) -> int | None:
    """The index of the first character UTF-8 cannot encode (an unpaired surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def excerpt(value: object, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` for an error message: escaped, and cut to about ``limit`` characters.

    >>> excerpt("work_1")
    "'work_1'"
    >>> excerpt("\\ud800")
    "'\\\\ud800'"
    >>> excerpt("x" * 1000)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (1000 characters)"
    """
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}... ({len(value)} {unit})"
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300-digit conversion limit
        return f"<{type(value).__name__} too large to print>"
    if len(text) > 4 * limit:  # a container of many small parts
        return text[: 4 * limit] + "..."
    return text


def bounded(value: object, limit: int = MAX_ECHO * 4) -> object:
    """``value`` for an error's ``got`` field: long strings and bytes are cut to ``limit``."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        return value[:limit]
    return value


def safe_message(message: str, limit: int = 2000) -> str:
    """``message`` made renderable (surrogates escaped) and cut to ``limit`` characters.

    The last line of defence for an error message that quoted a value without :func:`excerpt`.
    """
    if unrenderable_at(message) is not None:
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(message) > limit:
        message = message[:limit] + f"... ({len(message)} characters)"
    return message
