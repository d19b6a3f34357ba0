"""The stored form of a notification: every field survives the round trip, and unset fields
are left out."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from clarion.core import notification as notification_json
from clarion.providers.base import Notification, Priority

EVERY_FIELD = Notification(
    title="t",
    title_loc_key="tk",
    title_loc_args=("a", "b"),
    body="b",
    body_loc_key="bk",
    body_loc_args=("c",),
    badge=0,
    sound="ding",
    icon="i",
    category="cat",
    collapse_key="ck",
    expires_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    priority=Priority.NORMAL,
    silent=True,
    extras={"k": [1, {"x": None}]},
    topic="tp",
    blob="bl",
    rewritable=True,
)


def test_every_field_set_is_stored_and_read_back() -> None:
    # Every field differs from its default here: a field the stored form forgets fails this.
    for field in dataclasses.fields(Notification):
        default = (
            field.default_factory()  # type: ignore[misc]
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        assert getattr(EVERY_FIELD, field.name) != default, field.name
    stored = notification_json.to_json(EVERY_FIELD)
    assert set(stored) == {f.name for f in dataclasses.fields(Notification)}
    # Through JSON text, as the database keeps it.
    assert notification_json.from_json(json.loads(json.dumps(stored))) == EVERY_FIELD


def test_unset_fields_are_left_out() -> None:
    assert notification_json.to_json(Notification()) == {"priority": "HIGH"}
    assert notification_json.to_json(Notification(title="", badge=0, extras={})) == {
        "title": "",
        "badge": 0,
        "priority": "HIGH",
    }
    assert notification_json.from_json({"priority": "HIGH"}) == Notification()
    assert notification_json.from_json({}) == Notification()


def test_the_stored_form_is_the_one_earlier_versions_wrote() -> None:
    # Rows written before are read by the same function: the keys and their order are fixed.
    assert list(notification_json.to_json(EVERY_FIELD)) == [
        f.name for f in dataclasses.fields(Notification)
    ]
    assert notification_json.to_json(EVERY_FIELD)["expires_at"] == "2030-01-02T03:04:05+00:00"
