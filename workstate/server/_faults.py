"""Fault rules: which requests the mock server answers badly on purpose, and how.

Theory of operation
-------------------
A :class:`FaultRule` is plain data: a *match* (an operation name, an environment, a work item,
a worker: every key given must match), an *effect* (an error status in the API's envelope, a
delay, a dropped connection) and two limits: ``times`` (how often it may fire; absent: until
removed) and ``probability`` (the chance it fires on a matching request).  :func:`parse_rule`
turns the JSON of ``POST /mock/faults`` into a rule, or raises a 400
:class:`~workstate.InvalidInputError` naming the key to blame and what it accepts.

A :class:`FaultSet` holds the rules in the order they were added.  For each request the server
asks :meth:`FaultSet.pick` with the request's facts; the first rule that matches, has firings
left and wins its draw fires (its count goes up) and its effect is the answer.  The draws come
from the set's own :class:`random.Random`, seeded from the server's seed, so a run with the
same seed and the same requests in the same order fires the same faults.  A rule that does not
match draws nothing, so adding a rule for one item does not change the draws of another's.

Requests to ``/mock/`` controls have no operation and are never matched: a harness must stay
controllable while it makes the API misbehave.

Nothing here does I/O or reads a clock; the server applies the effects (see ``_harness.py``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from workstate._errors import InvalidInputError
from workstate._records import is_int
from workstate.server._journal import OPERATIONS

__all__ = [
    "FAULT_OPERATIONS",
    "FaultEffect",
    "FaultMatch",
    "FaultRule",
    "FaultSet",
    "error_type_for",
    "parse_rule",
]

# ``create`` queues work through a /mock/ control, which faults never touch.
FAULT_OPERATIONS: tuple[str, ...] = tuple(op for op in OPERATIONS if op != "create")
"""The operations a fault rule may name: every API call, and no ``/mock/`` control."""

# The API's error type for each status a fault may answer with; 409 is the profile's.
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_MATCH_KEYS = ("operation", "environment_id", "work_id", "worker_id")
_EFFECT_KEYS = ("status", "type", "message", "retry_after", "delay_ms", "drop")
_RULE_KEYS = ("match", "effect", "times", "probability")
_MAX_DELAY_MS = 600_000


def error_type_for(status: int, conflict_error_type: str = "conflict_error") -> str:
    """The API's error type for ``status`` (``api_error`` / ``invalid_request_error`` for a
    5xx / 4xx the API documents no type for)."""
    if status == 409:
        return conflict_error_type
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


@attrs.frozen(kw_only=True)
class FaultMatch:
    """Which requests a rule is about; a key left None matches anything."""

    operation: tuple[str, ...] | None = None
    """The operation names (see :data:`FAULT_OPERATIONS`), or None for every API call."""
    environment_id: str | None = None
    """The environment, or None for all."""
    work_id: str | None = None
    """The work item, or None for all (a poll names no item: it never matches a work id)."""
    worker_id: str | None = None
    """The ``anthropic-worker-id`` header, or None for any worker."""

    def matches(
        self,
        operation: str | None,
        environment_id: str | None,
        work_id: str | None,
        worker_id: str | None,
    ) -> bool:
        """Whether a request with these facts is one this rule is about."""
        if operation is None or operation not in FAULT_OPERATIONS:
            return False  # a /mock/ control or an unknown route
        return (
            (self.operation is None or operation in self.operation)
            and (self.environment_id is None or self.environment_id == environment_id)
            and (self.work_id is None or self.work_id == work_id)
            and (self.worker_id is None or self.worker_id == worker_id)
        )

    def to_json(self) -> dict[str, Any]:
        """The match as ``POST /mock/faults`` takes it (only the keys given)."""
        out: dict[str, Any] = {}
        if self.operation is not None:
            out["operation"] = self.operation[0] if len(self.operation) == 1 else [*self.operation]
        for key in ("environment_id", "work_id", "worker_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@attrs.frozen(kw_only=True)
class FaultEffect:
    """What happens to a request a rule fires on."""

    status: int | None = None
    """Answer with this error status in the API's envelope, without applying the call."""
    error_type: str | None = None
    """The envelope's error type (default: the API's type for ``status``)."""
    message: str | None = None
    """The envelope's message (default: one that says a fault rule answered)."""
    retry_after: float | None = None
    """Seconds for a ``retry-after`` header (the SDK honours up to 60)."""
    delay_ms: int = 0
    """Wait this long first (the wait counts against the client's timeout)."""
    drop: Literal["before", "after"] | None = None
    """Close the connection with no answer, before applying the call or after."""

    def to_json(self) -> dict[str, Any]:
        """The effect as ``POST /mock/faults`` takes it (only the keys given)."""
        out: dict[str, Any] = {}
        if self.status is not None:
            out["status"] = self.status
        if self.error_type is not None:
            out["type"] = self.error_type
        if self.message is not None:
            out["message"] = self.message
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.delay_ms:
            out["delay_ms"] = self.delay_ms
        if self.drop is not None:
            out["drop"] = self.drop
        return out


@attrs.define(kw_only=True)
class FaultRule:
    """One rule: a match, an effect, and how often it may fire."""

    id: str
    """The rule's id (``flt_1``, ``flt_2``, ... in the order added)."""
    match: FaultMatch
    """Which requests it is about."""
    effect: FaultEffect
    """What it does to them."""
    times: int | None = None
    """How many times it may fire; None: until removed."""
    probability: float | None = None
    """The chance it fires on a matching request (drawn from the seeded generator)."""
    fired: int = 0
    """How many times it fired."""

    @property
    def exhausted(self) -> bool:
        """Whether it has fired ``times`` times already."""
        return self.times is not None and self.fired >= self.times

    def to_json(self) -> dict[str, Any]:
        """The rule as ``GET /mock/faults`` lists it."""
        remaining = None if self.times is None else max(self.times - self.fired, 0)
        return {
            "id": self.id,
            "match": self.match.to_json(),
            "effect": self.effect.to_json(),
            "times": self.times,
            "probability": self.probability,
            "fired": self.fired,
            "remaining": remaining,
        }


def _bad(message: str, key: str, expected: str, got: object) -> InvalidInputError:
    return InvalidInputError(message, key=key, expected=expected, got=got)


def _object(value: object, key: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(
            f"{key} must be a JSON object, got {type(value).__name__}",
            key,
            f"an object with the keys {list(allowed)}",
            value,
        )
    for name in value:
        if name not in allowed:
            where = f"{key}.{name}" if key != "body" else name
            raise _bad(
                f"{key} has the unknown key {name!r}; the known keys are {list(allowed)}",
                where,
                f"only the keys {list(allowed)}",
                name,
            )
    return value


def _id(value: object, key: str, prefix: str) -> str:
    if not isinstance(value, str) or not value.startswith(prefix) or value == prefix:
        raise _bad(
            f"{key} must be a string starting with {prefix!r}, got {value!r}",
            key,
            f"an id starting with {prefix!r}",
            value,
        )
    return value


def _parse_match(value: object) -> FaultMatch:
    obj = _object(value, "match", _MATCH_KEYS)
    operation: tuple[str, ...] | None = None
    if "operation" in obj:
        raw = obj["operation"]
        names = [raw] if isinstance(raw, str) else raw
        expected = f"one of {list(FAULT_OPERATIONS)}, or a list of them"
        if not isinstance(names, list) or not names:
            raise _bad(
                f"match.operation must be an operation name or a non-empty list of them, "
                f"got {raw!r}",
                "match.operation",
                expected,
                raw,
            )
        for name in names:
            if name not in FAULT_OPERATIONS:
                extra = (
                    "; faults never apply to /mock/ controls"
                    if name == "create" or (isinstance(name, str) and name.startswith("mock"))
                    else ""
                )
                raise _bad(
                    f"match.operation {name!r} is not an operation of the API{extra}",
                    "match.operation",
                    expected,
                    name,
                )
        operation = tuple(dict.fromkeys(names))
    worker = obj.get("worker_id")
    if worker is not None and (not isinstance(worker, str) or not worker):
        raise _bad(
            f"match.worker_id must be a non-empty string, got {worker!r}",
            "match.worker_id",
            "a worker id string",
            worker,
        )
    return FaultMatch(
        operation=operation,
        environment_id=(
            None
            if obj.get("environment_id") is None
            else _id(obj["environment_id"], "match.environment_id", "env_")
        ),
        work_id=None
        if obj.get("work_id") is None
        else _id(obj["work_id"], "match.work_id", "work_"),
        worker_id=worker,
    )


def _parse_effect(value: object) -> FaultEffect:
    obj = _object(value, "effect", _EFFECT_KEYS)
    status = obj.get("status")
    drop = obj.get("drop")
    delay = obj.get("delay_ms", 0)
    if status is None and drop is None and "delay_ms" not in obj:
        raise _bad(
            "effect must say what happens: a status, a delay_ms or a drop",
            "effect",
            '{"status": 503}, {"delay_ms": 1500}, {"drop": "before"} or {"drop": "after"}',
            dict(obj),
        )
    if status is not None and (not is_int(status) or not 400 <= status <= 599):
        raise _bad(
            f"effect.status must be an error status from 400 to 599, got {status!r}",
            "effect.status",
            "an integer from 400 to 599, e.g. 503, 500, 529, 429, 408, 409 or 401",
            status,
        )
    if drop is not None and drop not in ("before", "after"):
        raise _bad(
            f"effect.drop must be 'before' or 'after', got {drop!r}",
            "effect.drop",
            "'before' (nothing applied) or 'after' (applied, then no answer)",
            drop,
        )
    if drop is not None and status is not None:
        raise _bad(
            "effect has both status and drop: a dropped connection answers nothing",
            "effect.drop",
            "either a status or a drop",
            dict(obj),
        )
    if not is_int(delay) or not 0 <= delay <= _MAX_DELAY_MS:
        raise _bad(
            f"effect.delay_ms must be an integer from 0 to {_MAX_DELAY_MS}, got {delay!r}",
            "effect.delay_ms",
            f"an integer from 0 to {_MAX_DELAY_MS} (milliseconds)",
            delay,
        )
    for key in ("type", "message", "retry_after"):
        if key in obj and status is None:
            raise _bad(
                f"effect.{key} needs effect.status: only an error answer carries it",
                f"effect.{key}",
                "a status with it, e.g. {'status': 429, 'retry_after': 2}",
                obj[key],
            )
    for key in ("type", "message"):
        text = obj.get(key)
        if key in obj and (not isinstance(text, str) or not text):
            raise _bad(
                f"effect.{key} must be a non-empty string, got {text!r}",
                f"effect.{key}",
                "a non-empty string",
                text,
            )
    retry = obj.get("retry_after")
    if "retry_after" in obj and (
        isinstance(retry, bool) or not isinstance(retry, (int, float)) or not 0 <= retry <= 3600
    ):
        raise _bad(
            f"effect.retry_after must be a number of seconds from 0 to 3600, got {retry!r}",
            "effect.retry_after",
            "a number of seconds from 0 to 3600",
            retry,
        )
    return FaultEffect(
        status=status,
        error_type=obj.get("type"),
        message=obj.get("message"),
        retry_after=retry,
        delay_ms=delay,
        drop=drop,
    )


def parse_rule(value: object, *, rule_id: str) -> FaultRule:
    """The rule described by the JSON ``value`` of ``POST /mock/faults``.

    Raises a 400 :class:`~workstate.InvalidInputError` naming the key at fault.

    >>> rule = parse_rule(
    ...     {"match": {"operation": "heartbeat"}, "times": 1, "effect": {"status": 503}},
    ...     rule_id="flt_1",
    ... )
    >>> rule.match.matches("heartbeat", "env_a", "work_1", None), rule.effect.status
    (True, 503)
    >>> parse_rule({"effect": {"drop": "later"}}, rule_id="flt_2")
    Traceback (most recent call last):
    ...
    workstate._errors.InvalidInputError: effect.drop must be 'before' or 'after', got 'later'
    """
    obj = _object(value, "body", _RULE_KEYS)
    if "effect" not in obj:
        raise _bad(
            "a fault rule needs an effect",
            "effect",
            '{"status": 503}, {"delay_ms": 1500} or {"drop": "before" | "after"}',
            None,
        )
    match = _parse_match(obj.get("match", {}))
    effect = _parse_effect(obj["effect"])
    times = obj.get("times")
    if times is not None and (not is_int(times) or times < 1):
        raise _bad(
            f"times must be a positive integer, got {times!r}",
            "times",
            "a positive integer, or omitted (until removed)",
            times,
        )
    probability = obj.get("probability")
    if probability is not None and (
        isinstance(probability, bool)
        or not isinstance(probability, (int, float))
        or not 0 < probability <= 1
    ):
        raise _bad(
            f"probability must be a number in (0, 1], got {probability!r}",
            "probability",
            "a number greater than 0 and at most 1, or omitted (always)",
            probability,
        )
    return FaultRule(
        id=rule_id,
        match=match,
        effect=effect,
        times=times,
        probability=None if probability is None else float(probability),
    )


class FaultSet:
    """The server's fault rules, in the order added, and the seeded draws they use.

    >>> faults = FaultSet(seed=7)
    >>> rule = faults.add({"match": {"operation": "poll"}, "times": 2, "effect": {"status": 429}})
    >>> [faults.pick("poll", "env_a", None, None) is rule for _ in range(3)]
    [True, True, False]
    >>> faults.pick("ack", "env_a", "work_1", None) is None
    True
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._random = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._counter = 0

    def add(self, value: object) -> FaultRule:
        """Add the rule ``value`` describes (see :func:`parse_rule`) and return it."""
        rule = parse_rule(value, rule_id=f"flt_{self._counter + 1}")
        self._counter += 1  # only an accepted rule uses an id
        self._rules.append(rule)
        return rule

    def rules(self) -> list[FaultRule]:
        """Every rule, exhausted ones included, in the order added."""
        return list(self._rules)

    def remove(self, rule_id: str) -> bool:
        """Remove one rule; whether it existed."""
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        """Remove every rule (ids keep counting up)."""
        self._rules = []

    def reset(self) -> None:
        """Remove every rule and start ids and draws afresh, as a new set with the same seed."""
        self._random = random.Random(self._seed)
        self._rules = []
        self._counter = 0

    def pick(
        self,
        operation: str | None,
        environment_id: str | None,
        work_id: str | None,
        worker_id: str | None,
    ) -> FaultRule | None:
        """The rule that fires on a request with these facts (counted), or None."""
        for rule in self._rules:
            if rule.exhausted or not rule.match.matches(
                operation, environment_id, work_id, worker_id
            ):
                continue
            if rule.probability is not None and self._random.random() >= rule.probability:
                continue
            rule.fired += 1
            return rule
        return None
