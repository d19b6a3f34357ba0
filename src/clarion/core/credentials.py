"""Validation of uploaded provider credentials, before anything is stored.

Each function returns the normalised secret to encrypt, or raises InvalidRequest naming the
problem. Messages never quote the secret itself.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clarion import jsontext
from clarion.errors import InvalidRequest

SERVICE_ACCOUNT_FIELDS = ("type", "project_id", "client_email", "private_key", "token_uri")
_B64_ALPHABET = re.compile(rb"^[A-Za-z0-9+/=_\-\s]+$")


# What goes into a provider's request line or headers must be plain: a control character
# there made every later push fail (pyreqwest refuses the header), and a '/' in a project id
# would change the URL's path.
_APNS_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,254}")  # a bundle id, with a suffix
_KEY_PART = re.compile(r"[A-Za-z0-9]{1,64}")  # Apple's key and team ids: 10 of these
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_\-]{0,127}")  # Google's, Huawei's


def apns_topic(value: str, field: str) -> str:
    """An APNs topic: the app's bundle id (Apple allows letters, digits, '.' and '-')."""
    if not _APNS_TOPIC.fullmatch(value):
        raise InvalidRequest(f"{field} must be an app bundle id: letters, digits, '.', '-' or '_'.")
    return value


def apns_key_part(value: str, field: str) -> str:
    """An APNs key id or team id (Apple's are 10 letters and digits)."""
    if not _KEY_PART.fullmatch(value):
        raise InvalidRequest(f"{field} must be letters and digits only (Apple's are 10 long).")
    return value


def project_id(value: str, field: str) -> str:
    """A Google Cloud or Huawei project id, which goes into the send URL's path."""
    if not _PROJECT_ID.fullmatch(value):
        raise InvalidRequest(
            f"{field} must be a project id: letters, digits, '-', '.', ':' or '_'."
        )
    return value


def decode_base64(value: str, field: str) -> bytes:
    """Standard or URL-safe base64, with or without padding and line breaks."""
    raw = value.encode()
    if not _B64_ALPHABET.match(raw):
        raise InvalidRequest(f"{field} is not valid base64.")
    compact = b"".join(raw.split())
    compact += b"=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field} is not valid base64.") from None


def apns_private_key(pem: bytes) -> bytes:
    """An APNs ``.p8`` key: a PEM PKCS#8 EC private key on the P-256 curve."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidRequest(
            "Private key is not a valid PEM private key (expected the .p8 file from Apple)."
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidRequest("Private key must be an EC P-256 key (an APNs .p8 key).")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fcm_service_account(document: bytes) -> dict[str, Any]:
    """A Google service account JSON with its required fields and a parseable RSA key.

    Its ``project_id`` may differ from the FCM project: a service account of one Google Cloud
    project can be granted FCM rights in another, so the uploaded ``projectId`` decides.
    """
    try:
        account = jsontext.loads(document)
    except ValueError:
        raise InvalidRequest("Not a valid service account JSON document.") from None
    if not isinstance(account, dict):
        raise InvalidRequest("A service account must be a JSON object.")
    missing = [name for name in SERVICE_ACCOUNT_FIELDS if not account.get(name)]
    if missing:
        raise InvalidRequest(
            "Service account JSON is missing required fields: " + ", ".join(missing) + "."
        )
    if any(not isinstance(account[name], str) for name in SERVICE_ACCOUNT_FIELDS):
        raise InvalidRequest("Service account JSON fields must be strings.")
    if account["type"] != "service_account":
        raise InvalidRequest("Service account JSON must have type service_account.")
    if not account["token_uri"].startswith(("https://", "http://")):
        raise InvalidRequest("Service account token_uri must be an http(s) URL.")
    try:
        key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise InvalidRequest(
            "Service account private_key is not a valid PEM private key."
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidRequest("Service account private_key must be an RSA key.")
    return account
