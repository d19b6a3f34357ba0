"""Helpers for the APNs integration tests: a team key, credentials, device tokens."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.providers.base import ApnsCredentials

TEAM_ID = "TEAM000001"
KEY_ID = "KEY0000001"
BUNDLE = "com.example.wallet"


@dataclass(frozen=True)
class TeamKey:
    private_pem: bytes
    public_key: ec.EllipticCurvePublicKey


def make_team_key() -> TeamKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return TeamKey(pem, key.public_key())


def token_credentials(key: TeamKey) -> ApnsCredentials:
    return ApnsCredentials(
        bundle=BUNDLE,
        sandbox=False,
        key_id=KEY_ID,
        team_id=TEAM_ID,
        private_key_pem=key.private_pem,
    )


def device(i: int) -> str:
    return f"{i:064x}"
