"""The provider interface: send one notification to tokens, get one classified outcome per token.

Providers know nothing of the database or of an API dialect. Retries, back-pressure, concurrency
limits and metrics are applied once, around every provider, in ``clarion.delivery``.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


class Priority(enum.StrEnum):
    HIGH = "HIGH"
    NORMAL = "NORMAL"


@dataclass(frozen=True, slots=True)
class Notification:
    """One provider-neutral message. Each provider maps it to its own wire payload."""

    title: str | None = None
    title_loc_key: str | None = None
    title_loc_args: tuple[str, ...] = ()
    body: str | None = None
    body_loc_key: str | None = None
    body_loc_args: tuple[str, ...] = ()
    badge: int | None = None
    sound: str | None = None
    icon: str | None = None
    category: str | None = None
    collapse_key: str | None = None
    expires_at: datetime | None = None
    priority: Priority = Priority.HIGH
    silent: bool = False
    extras: Mapping[str, Any] = field(default_factory=dict)
    # WalletConnect: an opaque (usually encrypted) blob for a topic, passed through untouched.
    topic: str | None = None
    blob: str | None = None
    # WalletConnect: for the wallet's notification extension to open and rewrite (an opaque
    # blob, or the raw form's tag and message): APNs gets the generic title, mutable-content
    # and content-available.
    rewritable: bool = False


class OutcomeKind(enum.StrEnum):
    DELIVERED = "delivered"
    TOKEN_DEAD = "token_dead"  # noqa: S105 - forget this token
    RETRY = "retry"  # try again after ``retry_after`` seconds (None: the caller's backoff)
    CREDENTIALS_REJECTED = "credentials_rejected"  # stop sending for this app, tell the operator
    FAILED = "failed"  # permanent for this message; ``reason`` says why


@dataclass(frozen=True, slots=True)
class Outcome:
    token: str
    kind: OutcomeKind
    reason: str | None = None
    retry_after: float | None = None
    status: int | None = None  # the provider's HTTP status, when there was one
    # TOKEN_DEAD with a time (APNs 410's ``timestamp``, epoch seconds): the token has been
    # invalid since then, so only a registration made before it is removed; one made later
    # (the app registered the token again) stays.
    invalid_since: float | None = None


@dataclass(frozen=True, slots=True)
class ApnsCredentials:
    """APNs token auth (``private_key_pem`` set) or certificate auth (``certificate_pem`` set)."""

    bundle: str
    sandbox: bool
    key_id: str | None = None
    team_id: str | None = None
    private_key_pem: bytes | None = field(default=None, repr=False)
    certificate_pem: bytes | None = field(default=None, repr=False)  # cert + key, PEM


@dataclass(frozen=True, slots=True)
class FcmCredentials:
    project_id: str
    service_account: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class HmsCredentials:
    project_id: str
    client_id: str
    client_secret: str = field(repr=False)


Part = tuple[Notification, Sequence[str]]  # one notification and the tokens it goes to


class Provider(ABC):
    """A connection to one push service for one application, platform and environment."""

    name: ClassVar[str]

    @abstractmethod
    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[Outcome]:
        """Send ``notification`` to every token; return exactly one outcome per token, in order."""

    async def send_many(self, parts: Sequence[Part]) -> list[Outcome]:
        """Send each part's notification to its tokens; one outcome per token, the parts'
        tokens one after the other, in order.

        By default one ``send`` per part, all at once. A provider overrides it when it can do
        better than that (APNs: one request per token whatever the notification).
        """
        if len(parts) == 1:
            return await self.send(*parts[0])
        answers = await asyncio.gather(*(self.send(n, tokens) for n, tokens in parts))
        return [outcome for part in answers for outcome in part]

    async def close(self) -> None:  # noqa: B027 - optional hook, most providers own a pool
        """Release connections. Called when credentials change or on shutdown."""
