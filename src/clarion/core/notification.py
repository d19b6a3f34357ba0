"""A message body as the dialects give it, to and from the provider-neutral Notification.

Pure functions: the stored form of a notification is a plain JSON object, so a job can rebuild
exactly what was accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from clarion.providers.base import Notification, Priority

_TUPLES = ("title_loc_args", "body_loc_args")


def to_json(notification: Notification) -> dict[str, Any]:
    """The stored form: only the fields that are set."""
    data: dict[str, Any] = {}
    for name in Notification.__dataclass_fields__:
        value = getattr(notification, name)
        if value is None or value == () or (name == "extras" and not value):
            continue
        if name in ("silent", "rewritable") and not value:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Priority):
            value = value.value
        elif name == "extras":
            value = dict(value)
        data[name] = value
    return data


def from_json(data: Mapping[str, Any]) -> Notification:
    fields: dict[str, Any] = dict(data)
    for name in _TUPLES:
        if name in fields:
            fields[name] = tuple(fields[name])
    if "expires_at" in fields:
        fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
    if "priority" in fields:
        fields["priority"] = Priority(fields["priority"])
    return Notification(**fields)
