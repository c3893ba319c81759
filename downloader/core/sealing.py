"""The shared OAuth token at rest: sealed, and bound to the credentials that fetched it. Pure.

The fleet's token lives in a record of the state store: in DIR/state.sqlite, which people copy and
share with the output folder, or in a shared PostgreSQL. Every worker has the client secret, so a
key derived from it protects the token there: HKDF-SHA256 over the secret, salted with the API base
and the client id, gives an AES-256-GCM key and, under another label, the record's name.

- A reader of the state file or database gets a name and a sealed blob, nothing usable.
- Other credentials (another client id, a rotated or mistyped secret) derive another name and
  another key: they never find, let alone reuse, this token; their run fetches its own and learns
  at once whether the token endpoint accepts them.
- The record's name is authenticated with the token (AES-GCM's associated data): a blob copied
  into another record does not open.

A static `--token` or `sk-` key is never written anywhere: it has no record.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_CONTEXT = b"patent-images shared oauth token v1"
_NONCE = 12


class TokenSeal:
    """Seals and opens the token of one set of client credentials; `record` names its shared record."""

    def __init__(self, api_base: str, client_id: str, secret: str) -> None:
        salt = f"{api_base.rstrip('/')}\x1f{client_id}".encode()
        self._aead = AESGCM(_derive(secret, salt, b"key", 32))
        self.record = "oauth-token:" + _derive(secret, salt, b"record", 12).hex()
        self._bound = self.record.encode()

    def seal(self, token: str) -> str:
        """The token encrypted under these credentials' key (a fresh nonce each time), as text."""
        nonce = secrets.token_bytes(_NONCE)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, token.encode(), self._bound)).decode()

    def open(self, sealed: object) -> str | None:
        """The token sealed by these credentials, or None (nothing there, other credentials, tampered)."""
        if not isinstance(sealed, str):
            return None
        try:
            raw = base64.b64decode(sealed, validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._bound).decode()
        except (binascii.Error, ValueError, InvalidTag):
            return None

    def __repr__(self) -> str:
        return f"TokenSeal({self.record})"  # never the key


def _derive(secret: str, salt: bytes, label: bytes, length: int) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=_CONTEXT + b"/" + label)
    return hkdf.derive(secret.encode())
