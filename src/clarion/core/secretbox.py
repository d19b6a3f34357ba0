"""Encryption at rest for provider secrets (private keys, client secrets).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key derived with HKDF from the
operator's ``CLARION_SECRET_KEY``, or from a random key generated once into a 0600 file beside
the embedded SQLite database.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarion.errors import ClarionError


class SecretKeyError(ClarionError):
    """No usable key, or stored secrets that this key cannot decrypt."""


def _derive(material: bytes) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"clarion secrets v1")
    return base64.urlsafe_b64encode(key.derive(material))


class SecretBox:
    """Encrypts and decrypts secrets. Its repr never shows the key."""

    def __init__(self, key_material: bytes) -> None:
        if len(key_material) < 16:
            raise SecretKeyError("the secret key must be at least 16 characters long")
        self._fernet = Fernet(_derive(key_material))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, sealed: bytes) -> bytes:
        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret cannot be decrypted: CLARION_SECRET_KEY (or the key file) "
                "is not the key it was encrypted with"
            ) from None


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key file, or create it with a random key, readable by its owner only."""
    if path.exists():
        data = path.read_bytes().strip()
        if not data:
            raise SecretKeyError(f"the key file {path} is empty")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key


def secret_box_for(secret_key: str | None, key_file: Path | None) -> SecretBox:
    """The box from the configured key, else from the key file; one of them is required."""
    if secret_key:
        return SecretBox(secret_key.encode())
    if key_file is None:
        raise SecretKeyError(
            "set CLARION_SECRET_KEY: provider secrets are encrypted at rest, and a key file "
            "is only generated automatically beside an embedded SQLite database"
        )
    return SecretBox(load_or_create_key_file(key_file))
