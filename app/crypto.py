"""Encryption of secrets at rest. The keys come from settings (``KAIPIAO_ENCRYPTION_KEYS``,
newest first; or ``KAIPIAO_ENCRYPTION_KEY``; or a generated file in the instance folder),
never from the repository.

The newest key encrypts; every configured key decrypts (``MultiFernet``), so a new key can be
added first and the old one removed once ``kaipiao keys rotate`` has re-encrypted everything.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class UndecryptableSecret(ValueError):
    """A stored secret that none of the configured keys opens."""


# (all keys, the newest key, how many): set once by configure().
_keys: tuple[MultiFernet, Fernet, int] | None = None


def _fernet(key_material: str) -> Fernet:
    # Any string is a key: Fernet's 32 bytes are its SHA-256 (as since the first release).
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_material.encode()).digest()))


def configure(keys: str | Sequence[str]) -> None:
    """The keys, newest first (one string: a single key)."""
    global _keys
    materials = [keys] if isinstance(keys, str) else list(keys)
    if not materials or not all(materials):
        raise ValueError("an encryption key is empty (KAIPIAO_ENCRYPTION_KEYS / KAIPIAO_ENCRYPTION_KEY)")
    fernets = [_fernet(k) for k in materials]
    _keys = (MultiFernet(fernets), fernets[0], len(fernets))


def _get() -> tuple[MultiFernet, Fernet, int]:
    if _keys is None:
        raise RuntimeError("encryption key not configured (create_app configures it)")
    return _keys


def _refused() -> UndecryptableSecret:
    return UndecryptableSecret(
        f"secret cannot be decrypted with any of the {_get()[2]} configured encryption key(s) "
        "(KAIPIAO_ENCRYPTION_KEYS, newest first, or KAIPIAO_ENCRYPTION_KEY): the key it was "
        "encrypted with is missing or wrong")


def encrypt(plain: str) -> str:
    return _get()[0].encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _get()[0].decrypt(token.encode()).decode()
    except InvalidToken:
        raise _refused() from None


def is_current(token: str) -> bool:
    """Whether ``token`` is encrypted with the newest key (rotating it would change nothing)."""
    try:
        _get()[1].decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def rotate(token: str) -> str:
    """``token`` re-encrypted with the newest key (decrypted with whichever key opens it)."""
    try:
        return _get()[0].rotate(token.encode()).decode()
    except InvalidToken:
        raise _refused() from None
