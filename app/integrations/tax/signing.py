"""Request signatures: our sandbox's native wire and Nuonuo's X-Nuonuo-Sign (apis.md §7.2).

Both sign the exact body bytes that travel; callers must serialize once and send those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

# Native wire headers.
H_APP_KEY = "X-Kp-App-Key"
H_TIMESTAMP = "X-Kp-Timestamp"
H_NONCE = "X-Kp-Nonce"
H_SIGNATURE = "X-Kp-Signature"


def dump_body(payload: Any) -> bytes:
    """Canonical JSON bytes for a request body (compact, UTF-8, keys in insertion order)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def native_string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return b"\n".join([method.upper().encode(), path.encode(), timestamp.encode(), nonce.encode(), body])


def native_sign(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Hex HMAC-SHA256 over ``METHOD\\npath\\ntimestamp\\nnonce\\nbody``."""
    message = native_string_to_sign(method, path, timestamp, nonce, body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def nuonuo_string_to_sign(path: str, app_key: str, senid: str, nonce: str, timestamp: str, body: str) -> str:
    pieces = path.split("/")
    if len(pieces) < 4:
        raise ValueError(f"Nuonuo path needs three segments: {path!r}")
    return (f"a={pieces[3]}&l={pieces[2]}&p={pieces[1]}&k={app_key}&i={senid}"
            f"&n={nonce}&t={timestamp}&f={body}")


def nuonuo_sign(app_secret: str, path: str, app_key: str, senid: str, nonce: str, timestamp: str,
                body: str) -> str:
    """base64(HMAC-SHA1(appSecret, "a=..&l=..&p=..&k=..&i=..&n=..&t=..&f=body"))."""
    message = nuonuo_string_to_sign(path, app_key, senid, nonce, timestamp, body)
    digest = hmac.new(app_secret.encode(), message.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
