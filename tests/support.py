"""Real key material and request helpers for tests."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def envelope(**request_object: Any) -> dict[str, Any]:
    """A PowerAuth request body."""
    return {"requestObject": request_object}


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def apns_p8(curve: ec.EllipticCurve | None = None) -> bytes:
    """A fresh APNs-style .p8 key (PEM PKCS#8, EC P-256 unless another curve is asked)."""
    return pem(ec.generate_private_key(curve or ec.SECP256R1()))


def rsa_pem(bits: int = 2048) -> bytes:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def service_account(project_id: str = "demo-project", **changes: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "0123456789abcdef",
        "private_key": rsa_pem().decode(),
        "client_email": f"push@{project_id}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    account.update(changes)
    return {k: v for k, v in account.items() if v is not None}


def b64(data: bytes | str | dict[str, Any]) -> str:
    if isinstance(data, dict):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def key_fragments(private_pem: bytes) -> list[str]:
    """Distinctive pieces of a private key as they could leak: PEM body lines and base64."""
    lines = [ln for ln in private_pem.decode().splitlines() if ln and not ln.startswith("-----")]
    return [*lines, b64(private_pem)[10:60]]


def assert_ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    assert data["status"] == "OK", data
    return data


def assert_error(response: Any, code: str, status: int = 400, *, contains: str = "") -> str:
    assert response.status_code == status, response.text
    data = response.json()
    assert data["status"] == "ERROR", data
    assert data["responseObject"]["code"] == code, data
    message: str = data["responseObject"]["message"]
    assert contains in message, message
    return message
