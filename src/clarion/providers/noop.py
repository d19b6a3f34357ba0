"""The ``noop`` provider: every token is delivered, nothing leaves the process.

For development and the WalletConnect ``noop`` push type; it keeps the latest pushes it accepted
so a developer (or a test) can see what would have been sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import ClassVar

from clarion.providers.base import Notification, Outcome, OutcomeKind, Provider


class NoopProvider(Provider):
    """Accepts every token as delivered and remembers the last ``keep`` (notification, token)."""

    name: ClassVar[str] = "noop"

    def __init__(self, *, keep: int = 1000) -> None:
        self._received: deque[tuple[Notification, str]] = deque(maxlen=keep)

    @property
    def received(self) -> list[tuple[Notification, str]]:
        """The most recent pushes, oldest first."""
        return list(self._received)

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[Outcome]:
        self._received.extend((notification, token) for token in tokens)
        return [Outcome(token=token, kind=OutcomeKind.DELIVERED) for token in tokens]
