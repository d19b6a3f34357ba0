"""The noop provider delivers everything and remembers a bounded history."""

from clarion.providers.base import Notification, OutcomeKind
from clarion.providers.noop import NoopProvider


async def test_every_token_is_delivered_in_order() -> None:
    provider = NoopProvider()
    outcomes = await provider.send(Notification(title="hi"), ["a", "b"])
    assert [(o.token, o.kind) for o in outcomes] == [
        ("a", OutcomeKind.DELIVERED),
        ("b", OutcomeKind.DELIVERED),
    ]
    assert provider.name == "noop"


async def test_history_keeps_only_the_latest_pushes() -> None:
    provider = NoopProvider(keep=3)
    first, second = Notification(title="1"), Notification(title="2")
    await provider.send(first, ["a", "b"])
    await provider.send(second, ["c", "d"])
    assert provider.received == [(first, "b"), (second, "c"), (second, "d")]
