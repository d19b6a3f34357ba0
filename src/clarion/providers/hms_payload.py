"""A provider-neutral notification as HMS Push Kit (v1/v2) ``message`` JSON: pure functions only.

HMS differs from FCM where it matters: ``data`` is one JSON string, ``collapse_key`` is an
integer group (-1 to 100), ``urgency`` replaces ``priority``, a notification must say what a tap
does (``click_action``; we open the app), and the message carries up to 1000 tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from clarion.providers.base import Notification
from clarion.providers.fcm_payload import has_visible_content, ttl_seconds, visible_fields

HMS_MAX_TTL = 1_296_000  # 15 days, Push Kit's ceiling
HMS_MAX_TOKENS = 1000
OPEN_APP = {"type": 3}


def hms_data(notification: Notification) -> str | None:
    """Extras plus the WalletConnect topic and blob as one JSON object string; None if empty."""
    data: dict[str, Any] = dict(notification.extras)
    if notification.topic is not None:
        data["topic"] = notification.topic
    if notification.blob is not None:
        data["blob"] = notification.blob
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False) if data else None


def hms_collapse_key(collapse_key: str | None) -> int | None:
    """Push Kit groups by an integer from -1 to 100; other collapse keys cannot be expressed."""
    if collapse_key is None:
        return None
    try:
        value = int(collapse_key)
    except ValueError:
        return None
    return value if -1 <= value <= 100 else None


def hms_message(notification: Notification, *, now: datetime | None = None) -> dict[str, Any]:
    """The v1/v2 ``message`` object for ``notification``, without its ``token`` list."""
    android: dict[str, Any] = {"urgency": notification.priority.value}
    ttl = ttl_seconds(notification.expires_at, now or datetime.now(UTC), HMS_MAX_TTL)
    if ttl is not None:
        android["ttl"] = f"{ttl}s"
    collapse_key = hms_collapse_key(notification.collapse_key)
    if collapse_key is not None:
        android["collapse_key"] = collapse_key
    if has_visible_content(notification):
        shown = visible_fields(notification)
        if notification.sound == "default":
            shown["default_sound"] = True
        elif notification.sound is not None:
            shown["sound"] = notification.sound
            shown["default_sound"] = False
        shown["click_action"] = dict(OPEN_APP)
        android["notification"] = shown
    message: dict[str, Any] = {"android": android}
    data = hms_data(notification)
    if data is not None:
        message["data"] = data
    return message


def hms_request_body(message: Mapping[str, Any], tokens: Sequence[str]) -> bytes:
    """The ``messages:send`` request body for up to 1000 tokens."""
    payload = {"validate_only": False, "message": {**message, "token": list(tokens)}}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
