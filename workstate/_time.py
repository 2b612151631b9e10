"""Time: the only module that imports ``pendulum`` (on first use, not at import).

Theory of operation
-------------------
The core never reads a clock: every operation takes ``now``.  This module checks that such a
value is a timezone-aware :class:`datetime.datetime`, normalises it to UTC, and parses and
formats RFC 3339 text.

The hot path stays on the standard library.  Measured on this project's machines,
``pendulum.parse`` costs about 17 µs per call against 0.4 µs for ``datetime.fromisoformat``
behind a strict RFC 3339 pattern, and ``pendulum.instance`` about 9 µs per conversion, so the
records hold plain ``datetime`` values in UTC (a ``pendulum.DateTime`` is accepted anywhere a
``datetime`` is, being a subclass).  ``pendulum`` serves :func:`to_pendulum`, where its
convenience is worth its cost, and is imported there, on first use: importing it (and the
``dateutil`` it pulls in) costs about 30 ms, which every ``import workstate`` paid before.  The
clocks do not need it: :class:`SystemClock` reads ``datetime.now(UTC)``, the very value
``pendulum.now(UTC)`` wraps, and :class:`ManualClock` only adds ``timedelta`` values.

:func:`format_time` writes the fields with one ``%`` format: about twice as fast as
``replace(tzinfo=None).isoformat(timespec=...)`` (``replace`` and keyword parsing dominate),
with the same text for every year 1-9999.  It matters because every heartbeat formats its token.

The edges of time.  A ``datetime`` spans 0001-01-01 to 9999-12-31T23:59:59.999999 and raises
``OverflowError`` past either end; the core raises only its own errors, so every sum of a time
and a duration follows one of two rules:

* a time the caller will *see* (a lease deadline, and the expiry instant one microsecond after
  it) must exist: a lease that would end at or past :data:`LATEST` is refused with a 400 on
  ``now`` (the operation that asked for it changes nothing), so ``deadline + 1 µs`` always
  exists too;
* a time the core only *compares* (the end of a redelivery window, the start of the 30 s
  window of polling workers) saturates at the edge (:func:`saturating_add`): a window past the
  year 9999 never ends by time, and a window reaching back before the year 1 starts there.

Clocks and parsers stay inside the range the same way: :meth:`ManualClock.advance` refuses to
pass the year 9999, and a parsed time with an offset that leaves the range is a 400.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from typing import TYPE_CHECKING

from workstate._errors import InvalidInputError
from workstate._profile import Precision
from workstate._text import excerpt

if TYPE_CHECKING:
    import pendulum

__all__ = [
    "EARLIEST",
    "LATEST",
    "UTC",
    "ManualClock",
    "SystemClock",
    "ensure_utc",
    "format_time",
    "parse_time",
    "saturating_add",
    "to_pendulum",
    "truncate",
]

UTC = _dt.UTC
_datetime = _dt.datetime
EARLIEST = _datetime.min.replace(tzinfo=UTC)
"""The earliest time the core can hold: 0001-01-01T00:00:00Z."""
LATEST = _datetime.max.replace(tzinfo=UTC)
"""The latest time the core can hold: 9999-12-31T23:59:59.999999Z."""
_ZERO = _dt.timedelta(0)
# Module constants: reading a member off an enum class costs a metaclass lookup.
_SECONDS, _MICROSECONDS = Precision.SECONDS, Precision.MICROSECONDS
_FORMAT_US = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"
_FORMAT_S = "%04d-%02d-%02dT%02d:%02d:%02dZ"


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """RFC 3339 section 5.6 date-time (full-date "T" full-time, with a mandatory offset), and
    the same without the offset (to name that mistake).  Compiled on the first parse, not at
    import: most programs (``serve`` among them) start without parsing a time."""
    return (
        re.compile(
            r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})",
            re.ASCII,
        ),
        re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?", re.ASCII),
    )


_ACCEPTED = "an RFC 3339 timestamp with an offset, e.g. 2026-07-01T08:15:06.120394Z"


def ensure_utc(value: object, *, name: str = "now") -> _dt.datetime:
    """Return ``value`` as a ``datetime`` in UTC, or raise :class:`InvalidInputError`.

    A naive ``datetime`` (no ``tzinfo``) is rejected: the library cannot know what it meant.
    """
    if type(value) is _datetime and value.tzinfo is UTC:
        return value  # the common case, kept cheap
    if not isinstance(value, _datetime):
        raise InvalidInputError(
            f"{name} must be a timezone-aware datetime, got {type(value).__name__}",
            key=name,
            expected="a timezone-aware datetime",
            got=value,
        )
    offset = value.utcoffset()
    if offset is None:
        raise InvalidInputError(
            f"{name} must be timezone-aware, got the naive datetime {value.isoformat()}",
            key=name,
            expected="a timezone-aware datetime",
            got=value,
        )
    if offset != _ZERO:
        try:
            value = value - offset
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 lies past year 9999 in UTC
            raise InvalidInputError(
                f"{name} lies outside the years 1-9999 once moved to UTC: {value.isoformat()}",
                key=name,
                expected="a time between 0001-01-01 and 9999-12-31 in UTC",
                got=value,
            ) from None
    return _datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=UTC,
    )


def saturating_add(
    value: _dt.datetime, delta: _dt.timedelta = _ZERO, *, milliseconds: int = 0
) -> _dt.datetime:
    """``value + delta + milliseconds``, held at :data:`EARLIEST` or :data:`LATEST` instead of
    overflowing (even when the duration itself is too large for a ``timedelta``).

    Only for times the core compares and never shows (see the edges of time above).

    >>> import datetime as dt
    >>> saturating_add(LATEST, dt.timedelta(seconds=5)) == LATEST
    True
    >>> saturating_add(EARLIEST, -dt.timedelta(seconds=30)) == EARLIEST
    True
    >>> saturating_add(EARLIEST, milliseconds=10**30) == LATEST
    True
    """
    if milliseconds:
        try:
            delta = delta + _dt.timedelta(milliseconds=milliseconds)
        except OverflowError:
            # Past what a timedelta holds, the milliseconds outweigh any delta: their sign
            # decides (a delta of the other sign cannot pull the sum back into range).
            return LATEST if milliseconds > 0 else EARLIEST
    try:
        return value + delta
    except OverflowError:
        return LATEST if delta > _ZERO else EARLIEST


def truncate(value: _dt.datetime, precision: Precision) -> _dt.datetime:
    """``value`` cut to ``precision`` (whole seconds drop the microseconds)."""
    if precision is _SECONDS and value.microsecond:
        return value.replace(microsecond=0)
    return value


def format_time(value: _dt.datetime, precision: Precision = Precision.MICROSECONDS) -> str:
    """RFC 3339 in UTC with a ``Z``: microseconds always written, or whole seconds.

    The same instant always gives the same string, so a ``last_heartbeat`` token round-trips.

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 7, 1, 8, 15, 6, 120394, tzinfo=dt.timezone.utc)
    >>> format_time(t)
    '2026-07-01T08:15:06.120394Z'
    >>> format_time(t, Precision.SECONDS)
    '2026-07-01T08:15:06Z'
    """
    if value.tzinfo is not UTC:
        value = ensure_utc(value, name="value")
    if precision is _MICROSECONDS:
        return _FORMAT_US % (
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
        )
    return _FORMAT_S % (value.year, value.month, value.day, value.hour, value.minute, value.second)


def parse_time(text: object, *, key: str = "timestamp") -> _dt.datetime:
    """Parse an RFC 3339 timestamp (any offset) into a UTC ``datetime``.

    Raises :class:`InvalidInputError` naming ``key`` for anything else, with a message that
    tells a missing offset apart from text that is not a timestamp at all.

    >>> parse_time("2026-07-01T10:15:06+02:00")
    datetime.datetime(2026, 7, 1, 8, 15, 6, tzinfo=datetime.timezone.utc)
    """
    if not isinstance(text, str):
        raise InvalidInputError(
            f"{key} must be a string holding {_ACCEPTED}, got {type(text).__name__}",
            key=key,
            expected=_ACCEPTED,
            got=text,
        )
    rfc3339, naive = _patterns()
    if rfc3339.fullmatch(text) is None:
        if naive.fullmatch(text) is not None:
            problem = f"{key} has no UTC offset: {excerpt(text)}"
        else:
            problem = f"{key} is not an RFC 3339 timestamp: {excerpt(text)}"
        raise InvalidInputError(
            f"{problem}; expected {_ACCEPTED}", key=key, expected=_ACCEPTED, got=text
        )
    try:
        value = _datetime.fromisoformat(text.upper())
    except ValueError as exc:  # e.g. month 13, second 60
        raise InvalidInputError(
            f"{key} is not a valid timestamp: {excerpt(text)} ({exc}); expected {_ACCEPTED}",
            key=key,
            expected=_ACCEPTED,
            got=text,
        ) from None
    return ensure_utc(value, name=key)


def to_pendulum(value: _dt.datetime) -> pendulum.DateTime:
    """A ``pendulum.DateTime`` view of a record's timestamp, for callers who prefer pendulum."""
    import pendulum  # on first use: see the theory of operation

    return pendulum.instance(ensure_utc(value, name="value"))


class SystemClock:
    """The real clock, for adapters such as the mock server.  The core never calls it."""

    def now(self) -> _dt.datetime:
        """The current time in UTC."""
        return _datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: for tests, simulations and ``--clock manual``."""

    def __init__(self, start: _dt.datetime) -> None:
        self._now = ensure_utc(start, name="start")

    def now(self) -> _dt.datetime:
        """The clock's current time."""
        return self._now

    def advance(self, seconds: float) -> _dt.datetime:
        """Move forward by ``seconds`` (never backwards) and return the new time."""
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not (seconds >= 0 and seconds != float("inf"))
        ):
            raise InvalidInputError(
                f"advance_seconds must be a finite number >= 0, got {seconds!r}",
                key="advance_seconds",
                expected="a finite number >= 0",
                got=seconds,
            )
        try:
            self._now = self._now + _dt.timedelta(seconds=seconds)
        except OverflowError:
            room = (_datetime.max.replace(tzinfo=UTC) - self._now).total_seconds()
            raise InvalidInputError(
                f"advance_seconds {seconds!r} would move the clock past the year 9999",
                key="advance_seconds",
                expected=f"at most {room:.0f}",
                got=seconds,
            ) from None
        return self._now

    def set(self, value: _dt.datetime) -> _dt.datetime:
        """Jump to ``value``, which must not be earlier than the current time."""
        value = ensure_utc(value, name="now")
        if value < self._now:
            raise InvalidInputError(
                f"the clock never moves backwards: {format_time(value)} is earlier than "
                f"{format_time(self._now)}",
                key="now",
                expected=f"a time at or after {format_time(self._now)}",
                got=format_time(value),
            )
        self._now = value
        return value


def resume_manual_clock(clock: ManualClock, value: _dt.datetime) -> None:
    """Put ``clock`` at ``value``, earlier or later: for a server resuming from its state file.

    The one way back in time, and only before the resumed server hands any time to the core:
    its clock continues from the last time it used.
    """
    clock._now = ensure_utc(value, name="clock")
