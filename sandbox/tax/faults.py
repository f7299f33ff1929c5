"""Runtime-switchable fault injection, kept in the store so every thread and process sees it.

Shape (``GET/POST /admin/faults``; POST merges, ``{"reset": true}`` restores the defaults)::

    {"login_expired": false,          # issue/red calls refused with LOGIN_EXPIRED until renew-login
     "login_expired_sellers": [],     # the same for these sellers (tax ids) only
     "issue_delay_ms": 0,             # accepted -> pending for this long -> issued
     "confirm_delay_ms": null,        # simulated buyer confirms a 确认单 after this; null = admin only
     "timeout_sleep_ms": 2000,        # how long a "timeout" response is held back
     "fail_rate": 0.0,                # fraction of all calls answered 503 (before processing)
     "latency_ms": {"default": 0, "issue": 0, ...},
     "calls": {"issue": {"mode": "timeout", "count": 1, "rate": 1.0}, ...}}

Modes per call kind: ``timeout`` (process, then answer too late), ``error_5xx`` (503, not
processed), ``rate_limit`` (429, not processed), ``unknown`` (process, answer 500),
``fail_later`` (issue/red/retry only: accepted, later fails with status failed / Nuonuo 24).
``count`` limits how many calls the fault hits (then it is removed); ``rate`` is a probability.

Batch calls (``POST /v1/invoices/batch``, ``/v1/invoices/query``) count as one call of their kind
(``issue``, ``query``) for every mode but ``fail_later``, which is drawn per invoice in the batch
(``count`` then counts invoices): latency, 5xx, 429, ``timeout`` and ``unknown`` hit the whole call.
"""

from __future__ import annotations

import copy
import json
import random
import sqlite3
from dataclasses import dataclass
from typing import Any

from sandbox.tax.store import kv_get, kv_set

CALL_KINDS = ("issue", "query", "red", "red_confirm", "cancel", "retry", "credit", "token")
FAIL_LATER_KINDS = ("issue", "red", "retry")  # the calls that start an issuance
MODES = ("none", "timeout", "error_5xx", "rate_limit", "unknown", "fail_later")
KEY = "faults"
LOGIN_KEYS = ("login_expired", "login_expired_sellers")  # the tax-bureau login: kept across restarts


def default_faults(*, latency_ms: int = 0, fail_rate: float = 0.0, issue_delay_ms: int = 0,
                   confirm_delay_ms: int | None = None, timeout_sleep_ms: int = 2000) -> dict[str, Any]:
    return {
        "login_expired": False,
        "login_expired_sellers": [],
        "issue_delay_ms": issue_delay_ms,
        "confirm_delay_ms": confirm_delay_ms,
        "timeout_sleep_ms": timeout_sleep_ms,
        "fail_rate": fail_rate,
        "latency_ms": {"default": latency_ms},
        "calls": {},
    }


def load(conn: sqlite3.Connection) -> dict[str, Any]:
    raw = kv_get(conn, KEY)
    if raw is None:
        raise RuntimeError("sandbox faults not initialised")
    return json.loads(raw)


def save(conn: sqlite3.Connection, faults: dict[str, Any]) -> None:
    kv_set(conn, KEY, json.dumps(faults, sort_keys=True))


def _check_number(value: Any, name: str, *, allow_none: bool = False, maximum: float | None = None) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}")


def merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Validate ``patch`` and return ``current`` updated with it (nested dicts merged)."""
    out = copy.deepcopy(current)
    for key, value in patch.items():
        if key == "login_expired":
            if not isinstance(value, bool):
                raise ValueError("login_expired must be a boolean")
            out[key] = value
        elif key == "login_expired_sellers":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError("login_expired_sellers must be a list of seller tax ids")
            out[key] = sorted(set(value))
        elif key in ("issue_delay_ms", "timeout_sleep_ms"):
            _check_number(value, key)
            out[key] = value
        elif key == "confirm_delay_ms":
            _check_number(value, key, allow_none=True)
            out[key] = value
        elif key == "fail_rate":
            _check_number(value, key, maximum=1)
            out[key] = value
        elif key == "latency_ms":
            if not isinstance(value, dict):
                raise ValueError("latency_ms must be an object {kind: ms}")
            for kind, ms in value.items():
                if kind != "default" and kind not in CALL_KINDS:
                    raise ValueError(f"unknown call kind {kind!r}; known: {', '.join(CALL_KINDS)}")
                _check_number(ms, f"latency_ms.{kind}")
                out["latency_ms"][kind] = ms
        elif key == "calls":
            if not isinstance(value, dict):
                raise ValueError("calls must be an object {kind: {mode, count?, rate?}}")
            for kind, spec in value.items():
                if kind not in CALL_KINDS:
                    raise ValueError(f"unknown call kind {kind!r}; known: {', '.join(CALL_KINDS)}")
                if spec is None or spec == {} or (isinstance(spec, dict) and spec.get("mode") == "none"):
                    out["calls"].pop(kind, None)
                    continue
                if not isinstance(spec, dict) or spec.get("mode") not in MODES:
                    raise ValueError(f"calls.{kind}.mode must be one of {', '.join(MODES)}")
                if spec["mode"] == "fail_later" and kind not in FAIL_LATER_KINDS:
                    raise ValueError("fail_later applies to issue, red and retry calls only")
                if "count" in spec and spec["count"] is not None:
                    _check_number(spec["count"], f"calls.{kind}.count")
                if "rate" in spec:
                    _check_number(spec["rate"], f"calls.{kind}.rate", maximum=1)
                out["calls"][kind] = {"mode": spec["mode"], "count": spec.get("count"),
                                      "rate": spec.get("rate", 1.0)}
        else:
            raise ValueError(f"unknown fault setting {key!r}")
    return out


@dataclass(frozen=True)
class FaultDecision:
    mode: str
    latency_ms: int
    timeout_sleep_ms: int


PER_ITEM_MODES = ("fail_later",)  # drawn per invoice in a batch call, not per call


def decide(conn: sqlite3.Connection, kind: str, rng: random.Random, *, batch: bool = False) -> FaultDecision:
    """Pick the fault for one call (inside the caller's write transaction: counts decrement).
    For a batch call the per-invoice modes are left to ``draw_per_item``."""
    faults = load(conn)
    latency = faults["latency_ms"].get(kind, faults["latency_ms"].get("default", 0))
    mode = "none"
    spec = faults["calls"].get(kind)
    if batch and spec and spec["mode"] in PER_ITEM_MODES:
        spec = None
    if spec and rng.random() < float(spec.get("rate", 1.0)):
        mode = spec["mode"]
        if spec.get("count") is not None:
            spec["count"] -= 1
            if spec["count"] <= 0:
                del faults["calls"][kind]
            save(conn, faults)
    elif faults.get("fail_rate") and rng.random() < float(faults["fail_rate"]):
        mode = "error_5xx"
    return FaultDecision(mode=mode, latency_ms=int(latency), timeout_sleep_ms=int(faults["timeout_sleep_ms"]))


def draw_per_item(conn: sqlite3.Connection, kind: str, rng: random.Random, items: int) -> list[str]:
    """The per-invoice fault mode (``fail_later`` or ``none``) for each of ``items`` invoices of a
    batch call: each one drawn with the configured rate, ``count`` decrementing per hit."""
    faults = load(conn)
    spec = faults["calls"].get(kind)
    if not spec or spec["mode"] not in PER_ITEM_MODES:
        return ["none"] * items
    counted = spec.get("count") is not None
    modes = []
    for _ in range(items):
        if spec is not None and rng.random() < float(spec.get("rate", 1.0)):
            modes.append(spec["mode"])
            if counted:
                spec["count"] -= 1
                if spec["count"] <= 0:
                    del faults["calls"][kind]
                    spec = None
        else:
            modes.append("none")
    if counted and any(mode != "none" for mode in modes):
        save(conn, faults)
    return modes
