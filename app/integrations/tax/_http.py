"""Transport helpers shared by the HTTP adapters: one place decides what a network failure means.

The rule: if the request may have reached the provider and it changes state (issue, red), the
outcome is unknown; otherwise the call can simply be retried.
"""

from __future__ import annotations

from typing import Any, TypeVar

import requests
from urllib3.exceptions import NewConnectionError

from app.integrations.tax.base import OutcomeUnknown, TaxGatewayError, TransientGatewayError

E = TypeVar("E", bound=TaxGatewayError)


def send(session: requests.Session, method: str, url: str, *, data: bytes | None, headers: dict[str, str],
         timeout: tuple[float, float], writes: bool, serial_no: str | None, params: dict[str, str] | None = None,
         ) -> requests.Response:
    """Send one request, translating transport failures into the gateway's error contract."""
    try:
        return session.request(method, url, data=data, headers=headers, timeout=timeout, params=params,
                               allow_redirects=False)
    except requests.ConnectTimeout as exc:
        # No connection was made: nothing was sent.
        raise TransientGatewayError(f"connect timeout to {_host(url)}", code="CONNECT_TIMEOUT") from exc
    except requests.ReadTimeout as exc:
        if writes:
            raise OutcomeUnknown(f"read timeout from {_host(url)} after sending", serial_no=serial_no or "",
                                 code="READ_TIMEOUT") from exc
        raise TransientGatewayError(f"read timeout from {_host(url)}", code="READ_TIMEOUT") from exc
    except requests.ConnectionError as exc:
        if _never_connected(exc) or not writes:
            raise TransientGatewayError(f"cannot reach {_host(url)}", code="CONNECTION") from exc
        # Connection dropped after the request went out (reset, remote closed): may be processed.
        raise OutcomeUnknown(f"connection to {_host(url)} lost after sending", serial_no=serial_no or "",
                             code="CONNECTION_LOST") from exc


def _never_connected(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NewConnectionError | ConnectionRefusedError):
            return True
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException) and _never_connected_leaf(arg):
                return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and _never_connected_leaf(reason):
            return True
        current = current.__cause__ or current.__context__
    return False


def _never_connected_leaf(exc: BaseException) -> bool:
    return isinstance(exc, NewConnectionError | ConnectionRefusedError)


def _host(url: str) -> str:
    # Error messages carry the host only, never query strings (tokens, signatures).
    return url.split("?", 1)[0]


def retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def per_item(exc: E, serial_no: str) -> E:
    """A whole batch call's failure as the answer for one of its items: a copy of the same class
    and fields (``OutcomeUnknown`` names that item's serial), so no two items share one object."""
    clone = type(exc).__new__(type(exc))
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    clone.__cause__ = exc.__cause__
    clone.call_error = exc  # type: ignore[attr-defined]  # shared by every item of the call: callers count failed calls, not items
    if isinstance(clone, OutcomeUnknown):
        clone.serial_no = serial_no
    return clone
