"""APNs provider tokens: ES256 JWTs, signed with ``cryptography``, reused for 20 to 60 minutes.

Apple rejects a token older than an hour (``ExpiredProviderToken``) and throttles a connection
whose token changes more often than every 20 minutes (``TooManyProviderTokenUpdates``), so one
token per (team, key) is shared by every connection in the process and renewed about every 50
minutes. Signing happens once per renewal, so its speed does not matter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

MIN_TOKEN_AGE = 20 * 60  # Apple: do not renew more often than this
MAX_TOKEN_AGE = 60 * 60  # Apple: a token older than this is rejected
DEFAULT_RENEW_AFTER = 50 * 60


class InvalidSigningKey(ValueError):
    """The key is not a PEM EC P-256 private key (the ``.p8`` file Apple issues)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_signing_key(private_key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an APNs ``.p8`` key; the message never includes key material."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidSigningKey("not a readable PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidSigningKey("APNs keys must be EC P-256 (ES256)")
    return key


def sign_provider_token(
    key: ec.EllipticCurvePrivateKey, *, key_id: str, team_id: str, issued_at: int
) -> str:
    """One APNs provider token: header ``{alg: ES256, kid}``, claims ``{iss, iat}``."""
    header = _b64url(json.dumps({"alg": "ES256", "kid": key_id}, separators=(",", ":")).encode())
    claims = _b64url(json.dumps({"iss": team_id, "iat": issued_at}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode("ascii")
    der = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    # JOSE wants the raw 64-byte r||s form, not the DER that cryptography returns.
    r, s = decode_dss_signature(der)
    return f"{header}.{claims}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class ProviderTokenSigner:
    """Hands out the current provider token for one (team, key), renewing it when it ages."""

    def __init__(
        self,
        *,
        key_id: str,
        team_id: str,
        private_key_pem: bytes,
        renew_after: float = DEFAULT_RENEW_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not MIN_TOKEN_AGE <= renew_after < MAX_TOKEN_AGE:
            raise ValueError("renew_after must be between 20 and 60 minutes")
        self.key_id = key_id
        self.team_id = team_id
        self._key = load_signing_key(private_key_pem)
        self._renew_after = renew_after
        self._clock = clock
        self._token = ""
        self._issued_at = 0
        self._forced_at: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProviderTokenSigner(team_id={self.team_id!r}, key_id={self.key_id!r})"

    @property
    def issued_at(self) -> int:
        """The ``iat`` of the current token (0 before the first one)."""
        return self._issued_at

    def token(self) -> str:
        """The current token, signing a new one only when the cached one is due for renewal."""
        if self._token and self._clock() - self._issued_at < self._renew_after:
            return self._token
        with self._lock:
            if not self._token or self._clock() - self._issued_at >= self._renew_after:
                self._sign()
            return self._token

    def renew_expired(self, rejected: str) -> str | None:
        """The token to retry with after APNs answered ``ExpiredProviderToken`` to ``rejected``.

        Concurrent requests rejected with the same token share one replacement. A token is
        forced out at most once per 20 minutes: if a fresh one is called expired too, the clock
        is wrong and renewing again would only earn ``TooManyProviderTokenUpdates``; then None.
        """
        with self._lock:
            if rejected != self._token:
                return self._token
            now = self._clock()
            if self._forced_at is not None and now - self._forced_at < MIN_TOKEN_AGE:
                return None
            self._forced_at = now
            self._sign()
            return self._token

    def _sign(self) -> None:
        issued_at = int(self._clock())
        self._token = sign_provider_token(
            self._key, key_id=self.key_id, team_id=self.team_id, issued_at=issued_at
        )
        self._issued_at = issued_at


_shared: dict[tuple[str, str, bytes], ProviderTokenSigner] = {}
_shared_lock = threading.Lock()


def shared_signer(*, key_id: str, team_id: str, private_key_pem: bytes) -> ProviderTokenSigner:
    """The process-wide signer for this (team, key): every connection sends the same token."""
    fingerprint = hashlib.sha256(private_key_pem).digest()
    with _shared_lock:
        signer = _shared.get((team_id, key_id, fingerprint))
        if signer is None:
            signer = ProviderTokenSigner(
                key_id=key_id, team_id=team_id, private_key_pem=private_key_pem
            )
            _shared[(team_id, key_id, fingerprint)] = signer
        return signer
