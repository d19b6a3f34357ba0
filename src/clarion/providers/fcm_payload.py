"""A provider-neutral notification as FCM HTTP v1 ``message`` JSON: pure functions only.

Everything visible goes in ``android.notification`` (title, body, their localisation keys and
arguments, sound, icon, and the category as ``tag``), except a WalletConnect cleartext push's
title and body, which go in the message's own ``notification`` (the spec's mapping: FCM shows it
on iOS too); extras and a WalletConnect topic and blob go in ``data`` with string values. A
silent notification, or one with nothing to show, is a data-only message, so the app's
messaging service receives it even in the background.

WalletConnect's Android SDK decrypts a push whose data holds ``topic``, ``blob`` and ``flags``
(or ``topic``, ``tag`` and ``message`` for raw clients), so the caller passes ``flags`` (or
``tag`` and ``message``) in ``extras`` and, for an encrypted blob, no title or body (or
``silent=True``): a notification block would be shown by Android without waking the SDK.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clarion.providers.base import Notification

FCM_MAX_TTL = 2_419_200  # 28 days, FCM's ceiling
# Data keys FCM refuses with INVALID_ARGUMENT ("The key should not be a reserved word").
RESERVED_DATA_KEYS = frozenset({"from", "message_type"})
RESERVED_DATA_PREFIXES = ("google", "gcm")


def reserved_data_key(data: Mapping[str, str]) -> str | None:
    """The first key of ``data`` FCM would refuse as reserved, or None."""
    for key in data:
        if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
            return key
    return None


def local_rejection(message: Mapping[str, Any]) -> str | None:
    """FCM's answer to a message it would refuse whatever the token, or None if it may go:
    sent anyway, each token's request would come back INVALID_ARGUMENT."""
    key = reserved_data_key(message.get("data") or {})
    if key is not None:
        return f"INVALID_ARGUMENT: data key {key!r} is reserved by FCM"
    return None


def ttl_seconds(expires_at: datetime | None, now: datetime, ceiling: int) -> int | None:
    """Whole seconds until ``expires_at`` (0 if past), at most ``ceiling``; None if no expiry."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    remaining = (expires_at - now).total_seconds()
    return min(ceiling, max(0, math.ceil(remaining)))


def string_data(notification: Notification) -> dict[str, str]:
    """Extras plus the WalletConnect topic and blob, every value a string."""
    data = {key: _as_string(value) for key, value in notification.extras.items()}
    if notification.topic is not None:
        data["topic"] = notification.topic
    if notification.blob is not None:
        data["blob"] = notification.blob
    return data


def _as_string(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    )


def has_visible_content(notification: Notification) -> bool:
    """True if the notification shows something: a title, a body or a localisation key."""
    if notification.silent:
        return False
    return any(
        (
            notification.title,
            notification.body,
            notification.title_loc_key,
            notification.body_loc_key,
        )
    )


def visible_fields(notification: Notification) -> dict[str, Any]:
    """The display fields shared by FCM's and HMS's ``android.notification`` (badge ignored)."""
    fields: dict[str, Any] = {}
    for key, value in (
        ("title", notification.title),
        ("body", notification.body),
        ("title_loc_key", notification.title_loc_key),
        ("body_loc_key", notification.body_loc_key),
        ("icon", notification.icon),
        ("tag", notification.category),
    ):
        if value is not None:
            fields[key] = value
    if notification.title_loc_args:
        fields["title_loc_args"] = list(notification.title_loc_args)
    if notification.body_loc_args:
        fields["body_loc_args"] = list(notification.body_loc_args)
    return fields


def fcm_message(notification: Notification, *, now: datetime | None = None) -> dict[str, Any]:
    """The v1 ``message`` object for ``notification``, without its ``token``."""
    android: dict[str, Any] = {"priority": notification.priority.value}
    ttl = ttl_seconds(notification.expires_at, now or datetime.now(UTC), FCM_MAX_TTL)
    if ttl is not None:
        android["ttl"] = f"{ttl}s"
    if notification.collapse_key:  # an empty one is none, as on APNs
        android["collapse_key"] = notification.collapse_key
    message: dict[str, Any] = {"android": android}
    if notification.topic is not None and has_visible_content(notification):
        # WalletConnect cleartext: the message's own notification block, which FCM also shows
        # on the iOS apps it serves (a wallet's FCM token may be an iPhone's).
        message["notification"] = {
            k: v for k, v in (("title", notification.title), ("body", notification.body)) if v
        }
    elif has_visible_content(notification):
        shown = visible_fields(notification)
        if notification.sound is not None:
            shown["sound"] = notification.sound
        android["notification"] = shown
    data = string_data(notification)
    if data:
        message["data"] = data
    return message


def fcm_request_body(message: Mapping[str, Any], token: str) -> bytes:
    """The ``messages:send`` request body for one token."""
    return json.dumps(
        {"message": {**message, "token": token}}, separators=(",", ":"), ensure_ascii=False
    ).encode()
