"""Notification -> APNs request: the JSON payload and the ``apns-*`` headers. Pure functions."""

from __future__ import annotations

import json
from typing import Any

from clarion.providers.base import Notification, Priority

MAX_PAYLOAD_BYTES = 4096  # every push type we send (VoIP's 5120 does not apply)
MAX_COLLAPSE_ID_BYTES = 64
# What WalletConnect shows for an encrypted message the app's extension will decrypt and replace.
WALLETCONNECT_GENERIC_TITLE = "You have new notifications. Open to view"
# Built once: json.dumps with options builds an encoder per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _alert(n: Notification) -> dict[str, Any]:
    alert: dict[str, Any] = {}
    if n.title is not None:
        alert["title"] = n.title
    if n.title_loc_key is not None:
        alert["title-loc-key"] = n.title_loc_key
    if n.title_loc_args:
        alert["title-loc-args"] = list(n.title_loc_args)
    if n.body is not None:
        alert["body"] = n.body
    if n.body_loc_key is not None:
        alert["loc-key"] = n.body_loc_key
    if n.body_loc_args:
        alert["loc-args"] = list(n.body_loc_args)
    return alert


def build_payload(n: Notification) -> dict[str, Any]:
    """The APNs JSON: ``aps`` plus custom keys (extras, WalletConnect ``topic`` and ``blob``)."""
    aps: dict[str, Any] = {}
    if n.silent:
        # A background push carries no alert, sound or badge (Apple drops it otherwise).
        aps["content-available"] = 1
    else:
        alert = _alert(n)
        rewritable = n.rewritable or n.blob is not None
        if rewritable and not alert:
            alert = {"title": WALLETCONNECT_GENERIC_TITLE}
        if alert:
            aps["alert"] = alert
        if n.badge is not None:
            aps["badge"] = n.badge
        if n.sound is not None:
            aps["sound"] = n.sound
        if n.category is not None:
            aps["category"] = n.category
        if rewritable:
            # The app's notification service extension decrypts the blob and rewrites the alert.
            aps["mutable-content"] = 1
            aps["content-available"] = 1
    if n.collapse_key:  # an empty one is none: APNs refuses an empty apns-collapse-id
        aps["thread-id"] = n.collapse_key
    # Custom keys are siblings of ``aps``; an extra named "aps" cannot replace Apple's dictionary.
    payload: dict[str, Any] = {k: v for k, v in n.extras.items() if k != "aps"}
    if n.topic is not None:
        payload["topic"] = n.topic
    if n.blob is not None:
        payload["blob"] = n.blob
    return {"aps": aps, **payload}


def encode_payload(n: Notification) -> bytes:
    """The payload as compact UTF-8 JSON, the bytes whose size Apple limits."""
    return _ENCODE(build_payload(n)).encode()


def build_headers(n: Notification, *, topic: str) -> dict[str, str]:
    """The ``apns-*`` headers shared by every token (``apns-id`` and auth are per request)."""
    headers = {
        "apns-topic": topic,
        "apns-push-type": "background" if n.silent else "alert",
        # Apple: a background push must use priority 5.
        "apns-priority": "5" if n.silent or n.priority is Priority.NORMAL else "10",
    }
    if n.expires_at is not None:
        headers["apns-expiration"] = str(max(0, int(n.expires_at.timestamp())))
    if n.collapse_key:
        headers["apns-collapse-id"] = n.collapse_key
    return headers


def local_rejection(n: Notification, body: bytes) -> str | None:
    """Apple's reason for a request APNs would refuse whatever the token, or None if it may go."""
    if len(body) > MAX_PAYLOAD_BYTES:
        return "PayloadTooLarge"
    if n.collapse_key is not None and len(n.collapse_key.encode()) > MAX_COLLAPSE_ID_BYTES:
        return "BadCollapseId"
    return None
