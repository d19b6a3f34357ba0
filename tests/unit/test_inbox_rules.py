"""Pure inbox rules: message types, message ids, paging bounds, application lists, text limits."""

from __future__ import annotations

import uuid

import pytest

from clarion.api.powerauth.inbox_models import check_text
from clarion.core.inbox import (
    MAX_PAGE,
    MAX_PAGE_SIZE,
    MessageType,
    check_page,
    distinct_app_ids,
    parse_message_id,
    parse_type,
)
from clarion.errors import InvalidRequest


@pytest.mark.parametrize(
    ("given", "parsed"),
    [("text", MessageType.TEXT), ("HTML", MessageType.HTML), (" Text ", MessageType.TEXT)],
)
def test_message_type_is_text_or_html_in_any_case(given: str, parsed: MessageType) -> None:
    assert parse_type(given) is parsed


@pytest.mark.parametrize("given", ["", "markdown", "txt", "text/html"])
def test_other_message_types_are_refused(given: str) -> None:
    with pytest.raises(InvalidRequest, match="Use text or html"):
        parse_type(given)


def test_message_id_parses_any_uuid_spelling() -> None:
    value = uuid.uuid4()
    assert parse_message_id(str(value).upper()) == value
    assert parse_message_id(value.hex) == value


@pytest.mark.parametrize("given", ["", "42", "ae641389-d37a-4425-bd14", "x" * 36])
def test_non_uuid_message_id_is_invalid_not_unknown(given: str) -> None:
    with pytest.raises(InvalidRequest, match="UUID"):
        parse_message_id(given)


@pytest.mark.parametrize(("page", "size"), [(0, 1), (0, MAX_PAGE_SIZE), (MAX_PAGE, 1), (3, 100)])
def test_paging_within_bounds_is_accepted(page: int, size: int) -> None:
    check_page(page, size)


@pytest.mark.parametrize(
    ("page", "size", "message"),
    [
        (-1, 10, "Page must be"),
        (MAX_PAGE + 1, 10, "Page must be"),
        (0, 0, "Page size must be"),
        (0, MAX_PAGE_SIZE + 1, "Page size must be"),
    ],
)
def test_paging_out_of_range_is_refused(page: int, size: int, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_page(page, size)


def test_application_ids_are_deduplicated_in_first_seen_order() -> None:
    assert distinct_app_ids(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_more_than_a_hundred_distinct_applications_are_refused() -> None:
    assert len(distinct_app_ids(["same"] * 500)) == 1
    with pytest.raises(InvalidRequest, match="At most 100"):
        distinct_app_ids([f"app-{n}" for n in range(101)])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "Subject must not be null."),
        (3, "Subject must be a string."),
        (" \t\n", "Subject must not be empty."),
        ("x" * 11, "Subject must be at most 10 characters."),
        ("a\x00", "Subject must not contain NUL characters."),
        ("\ud800", "Subject must be valid Unicode text."),
    ],
)
def test_text_rules_name_the_field(value: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_text("Subject", 10, value)
    assert raised.value.message == message


def test_text_at_the_limit_is_kept_as_given() -> None:
    assert check_text("Subject", 10, " ž✓<b>x</b>"[:10]) == " ž✓<b>x</b>"[:10]
