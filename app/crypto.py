"""Encryption of secrets at rest. The key comes from settings (``KAIPIAO_ENCRYPTION_KEY``
or a generated file in the instance folder), never from the repository."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

_fernet: Fernet | None = None


def configure(key_material: str) -> None:
    global _fernet
    digest = hashlib.sha256(key_material.encode()).digest()
    _fernet = Fernet(base64.urlsafe_b64encode(digest))


def _get() -> Fernet:
    if _fernet is None:
        raise RuntimeError("encryption key not configured (create_app configures it)")
    return _fernet


def encrypt(plain: str) -> str:
    return _get().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _get().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("secret cannot be decrypted with the configured KAIPIAO_ENCRYPTION_KEY") from exc
