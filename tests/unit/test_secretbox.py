"""Encryption at rest of provider secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion.core.secretbox import (
    SecretBox,
    SecretKeyError,
    load_or_create_key_file,
    secret_box_for,
)


def test_sealed_secret_round_trips_and_is_not_plaintext() -> None:
    box = SecretBox(b"0123456789abcdef-key")
    sealed = box.seal(b"-----BEGIN PRIVATE KEY-----")
    assert b"PRIVATE" not in sealed
    assert box.open(sealed) == b"-----BEGIN PRIVATE KEY-----"


def test_another_key_cannot_open_and_says_why() -> None:
    sealed = SecretBox(b"first-key-0123456789").seal(b"secret")
    with pytest.raises(SecretKeyError, match="not the key"):
        SecretBox(b"other-key-0123456789").open(sealed)


def test_short_key_is_refused() -> None:
    with pytest.raises(SecretKeyError, match="16"):
        SecretBox(b"short")


def test_key_file_is_created_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "clarion.db.key"
    first = load_or_create_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key_file(path) == first
    sealed = secret_box_for(None, path).seal(b"x")
    assert secret_box_for(None, path).open(sealed) == b"x"


def test_no_key_and_no_key_file_is_refused() -> None:
    with pytest.raises(SecretKeyError, match="CLARION_SECRET_KEY"):
        secret_box_for(None, None)


def test_repr_hides_the_key() -> None:
    assert "abcdef" not in repr(SecretBox(b"0123456789abcdef-key"))
