"""Platforms and activation states, with the spellings both PowerAuth generations use."""

from __future__ import annotations

import enum

from clarion.errors import InvalidRequest


class Platform(enum.StrEnum):
    APNS = "apns"
    FCM = "fcm"
    HMS = "hms"

    @property
    def seed_name(self) -> str:
        """The seed's name for the platform: ios, android, huawei."""
        return _SEED_NAMES[self]


_SEED_NAMES = {Platform.APNS: "ios", Platform.FCM: "android", Platform.HMS: "huawei"}
_ALIASES = {
    "ios": Platform.APNS,
    "apns": Platform.APNS,
    "android": Platform.FCM,
    "fcm": Platform.FCM,
    "huawei": Platform.HMS,
    "hms": Platform.HMS,
}


def parse_platform(value: str) -> Platform:
    try:
        return _ALIASES[value.strip().lower()]
    except KeyError:
        raise InvalidRequest(
            f"Unknown platform: {value[:40]!r}. Use ios, android or huawei."
        ) from None


class ApnsEnvironment(enum.StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


def parse_environment(value: str) -> ApnsEnvironment:
    try:
        return ApnsEnvironment(value.strip().lower())
    except ValueError:
        raise InvalidRequest(
            f"Unknown environment: {value[:40]!r}. Use development or production."
        ) from None


class ActivationStatus(enum.StrEnum):
    CREATED = "CREATED"
    PENDING_COMMIT = "PENDING_COMMIT"
    ACTIVE = "ACTIVE"
    BLOCKED = "BLOCKED"
    REMOVED = "REMOVED"


def parse_activation_status(value: str) -> ActivationStatus:
    try:
        return ActivationStatus(value.strip().upper())
    except ValueError:
        raise InvalidRequest(
            f"Unknown activation status: {value[:40]!r}. Use CREATED, PENDING_COMMIT, ACTIVE, "
            "BLOCKED or REMOVED."
        ) from None
