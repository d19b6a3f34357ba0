"""Shared helpers for the FCM and HMS integration tests (imported explicitly, not a conftest)."""

from functools import cache

from clarion.emulators.fcm import make_service_account


@cache
def service_account(project_id: str = "clarion-it", variant: int = 0) -> dict[str, str]:
    """A cached test service account (RSA key generation is the slow part); copy before editing."""
    return make_service_account(project_id, client_email=f"sa{variant}@{project_id}.iam.test")


def fcm_token(n: int) -> str:
    """A registration token of FCM's shape (long, URL-safe characters and a colon)."""
    return f"dKq{n:05d}:APA91b" + "x" * 140
