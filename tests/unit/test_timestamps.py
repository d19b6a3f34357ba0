"""The PowerAuth dialect's timestamps: ISO 8601 in UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from clarion.api.powerauth.status import iso

OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 2),  # no offset pushes a year below 1000 or above 9999
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(st.just(UTC), OFFSETS),
    )
)
def test_iso_is_isoformat_in_utc_with_milliseconds(moment: datetime) -> None:
    assert iso(moment) == moment.astimezone(UTC).isoformat(timespec="milliseconds")


def test_iso_examples() -> None:
    assert iso(datetime(2026, 11, 30, 8, 5, 3, 999_999, tzinfo=UTC)) == (
        "2026-11-30T08:05:03.999+00:00"
    )
    plus_two = timezone(timedelta(hours=2))
    assert iso(datetime(2026, 1, 1, 1, 0, 0, 1_000, tzinfo=plus_two)) == (
        "2025-12-31T23:00:00.001+00:00"
    )
