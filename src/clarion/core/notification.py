"""A message body as the dialects give it, to and from the provider-neutral Notification.

Pure functions: the stored form of a notification is a plain JSON object, so a job can rebuild
exactly what was accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from clarion.providers.base import Notification, Priority

_PRIORITIES = {p.value: p for p in Priority}


def to_json(n: Notification) -> dict[str, Any]:
    """The stored form: only the fields that are set, in the dataclass's order.

    Written out field by field: it runs once per message accepted (a batch of 100,000 is as
    many calls), and a loop over the fields with ``getattr`` cost twice as much."""
    data: dict[str, Any] = {}
    if n.title is not None:
        data["title"] = n.title
    if n.title_loc_key is not None:
        data["title_loc_key"] = n.title_loc_key
    if n.title_loc_args:
        data["title_loc_args"] = list(n.title_loc_args)
    if n.body is not None:
        data["body"] = n.body
    if n.body_loc_key is not None:
        data["body_loc_key"] = n.body_loc_key
    if n.body_loc_args:
        data["body_loc_args"] = list(n.body_loc_args)
    if n.badge is not None:
        data["badge"] = n.badge
    if n.sound is not None:
        data["sound"] = n.sound
    if n.icon is not None:
        data["icon"] = n.icon
    if n.category is not None:
        data["category"] = n.category
    if n.collapse_key is not None:
        data["collapse_key"] = n.collapse_key
    if n.expires_at is not None:
        data["expires_at"] = n.expires_at.isoformat()
    data["priority"] = n.priority.value
    if n.silent:
        data["silent"] = True
    if n.extras:
        data["extras"] = dict(n.extras)
    if n.topic is not None:
        data["topic"] = n.topic
    if n.blob is not None:
        data["blob"] = n.blob
    if n.rewritable:
        data["rewritable"] = True
    return data


def from_json(data: Mapping[str, Any]) -> Notification:
    fields: dict[str, Any] = dict(data)
    if "title_loc_args" in fields:
        fields["title_loc_args"] = tuple(fields["title_loc_args"])
    if "body_loc_args" in fields:
        fields["body_loc_args"] = tuple(fields["body_loc_args"])
    if "expires_at" in fields:
        fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
    if "priority" in fields:
        fields["priority"] = _PRIORITIES[fields["priority"]]
    return Notification(**fields)
