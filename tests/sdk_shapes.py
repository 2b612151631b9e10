"""Strict validation of the mock's JSON against the official SDK's pydantic types.

The SDK's models accept unknown keys (``extra="allow"``), so a plain ``model_validate`` would
not notice an invented field; :func:`strictly` also walks the validated model and fails on any
key the SDK's types do not declare, at any depth.
"""

from __future__ import annotations

from typing import Any

import pydantic
from anthropic.types.beta import BetaManagedAgentsSession
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSendSessionEvents,
    BetaManagedAgentsSessionEvent,
    BetaManagedAgentsStreamSessionEvents,
)

_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(BetaManagedAgentsSessionEvent)
_STREAM_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    BetaManagedAgentsStreamSessionEvents
)


def _no_extras(value: object, where: str) -> None:
    if isinstance(value, pydantic.BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"{where}: keys the SDK does not declare: {sorted(extra)}"
        for name in type(value).model_fields:
            _no_extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _no_extras(item, f"{where}[{i}]")


def strictly(kind: str, value: Any) -> Any:
    """``value`` validated as the SDK's ``kind`` (session, event, stream_event, sent), no extras."""
    if kind == "session":
        model: Any = BetaManagedAgentsSession.model_validate(value)
    elif kind == "event":
        model = _EVENT.validate_python(value)
    elif kind == "stream_event":
        model = _STREAM_EVENT.validate_python(value)
    else:
        model = BetaManagedAgentsSendSessionEvents.model_validate(value)
    _no_extras(model, kind)
    return model
