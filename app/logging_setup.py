"""Logging for every process (web, ``kaipiao worker``, the scheduler, the commands), set up in
one place: ``configure(settings)``.

- ``KAIPIAO_LOG_FORMAT=json`` (default): one JSON object per line on stderr with ``level``,
  ``time_utc``, ``time_beijing``, ``logger``, ``message``, ``request_id``, ``job_id`` and, when
  known, ``order_id`` / ``invoice_id`` (and ``exc`` with the traceback as one string).
  ``text``: the same fields as a readable line, for development.
- ``KAIPIAO_LOG_LEVEL``: INFO by default.
- The request id and job id come from context variables (``bind`` / ``context``): the web app
  sets the request id per request (app/web/request_id.py), the worker sets both per job
  (app/jobs/worker.py), and a job queued while a request id is bound carries it along
  (app/services/unit_of_work.py, app/jobs/outbox.py).
- Personal data and secrets are not logged; ``Redactor`` is the safety net: values of known
  sensitive keys and anything shaped like an e-mail address, a mobile number or a tax id are
  masked in the message, the extras and the traceback.

Nothing here imports the web framework or the queue: services may read the context.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, TextIO

FORMATS = ("json", "text")
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
# The context keys every line carries (None when unknown).
CONTEXT_KEYS = ("request_id", "job_id", "order_id", "invoice_id")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("kaipiao_log_context", default=_EMPTY)

# A sane incoming X-Request-Id: a short token, nothing a log reader could be fooled by.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")


def current() -> Mapping[str, Any]:
    """What is bound now (request_id, job_id, ...)."""
    return _context.get()


def request_id() -> str | None:
    value = _context.get().get("request_id")
    return str(value) if value else None


@contextmanager
def context(**values: Any) -> Iterator[None]:
    """Bind ``values`` (request_id=, job_id=, order_id=, invoice_id=, ...) for the block."""
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**values: Any) -> contextvars.Token:
    """Bind ``values`` until ``unbind(token)`` (hooks that cannot wrap a block, e.g. Flask's)."""
    return _context.set({**_context.get(), **values})


def unbind(token: contextvars.Token) -> None:
    try:
        _context.reset(token)
    except ValueError:  # set in another context (a different thread's request hooks)
        _context.set(_EMPTY)


# ---------------------------------------------------------------------------------- redaction

# Keys whose values are never written, whatever their shape (extras, dicts in args).
SENSITIVE_KEYS = frozenset({
    "buyer_title", "buyer_name", "buyer_tax_id", "tax_id", "buyer_email", "email", "buyer_phone", "phone",
    "mobile", "buyer_address", "address", "buyer_bank", "bank_account", "password", "passwd", "secret",
    "app_secret", "app_key", "token", "api_token", "access_token", "authorization", "cookie", "session",
    "secret_key", "encryption_key", "tax_credentials", "credentials", "hmac_key", "id_card",
})
MASK = "[redacted]"
_PATTERNS = (
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"),  # e-mail
    re.compile(r"(?<![0-9])(?:\+?86[- ]?)?1[3-9][0-9](?:[- ]?[0-9]{4}){2}(?![0-9])"),  # mainland mobile
    re.compile(r"(?<![0-9])0[0-9]{2,3}-?[0-9]{7,8}(?![0-9])"),  # landline with area code
    # 统一社会信用代码 (18) and the older 15/20-character tax ids: letters and digits with >= 6 digits.
    re.compile(r"(?<![A-Za-z0-9])(?=(?:[A-Z]*[0-9]){6})[0-9A-Z]{15}(?:[0-9A-Z]{3}(?:[0-9A-Z]{2})?)?(?![A-Za-z0-9])"),
    # key=value / "key": "value" pairs naming a secret inside free text
    re.compile(r"(?i)\b(password|passwd|secret|token|app_secret|app_key|authorization|api[_-]?key)"
               r"(\"?\s*[:=]\s*\"?)([^\s\",;&]+)"),
)


def _mask_id(match: re.Match[str]) -> str:
    # A 20-digit invoice number (发票号码) is not personal data; a tax id or an ID-card number is.
    value = match.group(0)
    return value if len(value) == 20 and value.isdigit() else MASK


# PostgreSQL quotes rows and keys in an error's DETAIL ("Failing row contains (...)").
_DETAIL = re.compile(r"(?m)^(DETAIL:\s*).*$|Failing row contains \(.*?\)(?=\.?$)", re.MULTILINE)


def redact_text(text: str) -> str:
    text = _DETAIL.sub(lambda m: f"{m.group(1)}{MASK}" if m.group(1) else MASK, text)
    for pattern in _PATTERNS[:3]:
        text = pattern.sub(MASK, text)
    text = _PATTERNS[3].sub(_mask_id, text)
    return _PATTERNS[-1].sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def redact_value(value: Any, key: str | None = None) -> Any:
    if key is not None and key.lower() in SENSITIVE_KEYS and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


class Redactor(logging.Filter):
    """Masks personal data and secrets in a record before any handler formats it: the message
    is rendered and scrubbed, the traceback likewise (by the formatters, through
    ``redact_text``), the extras by key."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what was given
            message = str(record.msg)
        record.msg, record.args = redact_text(message), None
        for key in list(vars(record)):
            if key not in _STANDARD and key not in CONTEXT_KEYS:
                setattr(record, key, redact_value(getattr(record, key), key))
        return True


_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "", None, None))) | {"message", "asctime"}


# ---------------------------------------------------------------------------------- formats

def _fields(record: logging.LogRecord) -> dict[str, Any]:
    moment = datetime.fromtimestamp(record.created, UTC)
    bound = getattr(record, "_kaipiao_context", None)
    if bound is None:
        bound = _context.get()
    out: dict[str, Any] = {
        "level": record.levelname,
        "time_utc": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "time_beijing": moment.astimezone(BEIJING).isoformat(timespec="milliseconds"),
        "logger": record.name,
        "message": record.getMessage(),
    }
    for key in CONTEXT_KEYS:
        value = getattr(record, key, None)
        out[key] = value if value is not None else bound.get(key)
    for key, value in bound.items():
        out.setdefault(key, value)
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_") and key not in out:
            out[key] = redact_value(value, key)
    return out


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    text = None
    if record.exc_info:
        text = formatter.formatException(record.exc_info)
    elif record.exc_text:
        text = record.exc_text
    if record.stack_info:
        text = f"{text}\n{record.stack_info}" if text else record.stack_info
    return redact_text(text) if text else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = _fields(record)
        exc = _exception_text(self, record)
        if exc:
            out["exc"] = exc
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = _fields(record)
        head = (f"{out.pop('time_beijing')} {out.pop('level'):<7} {out.pop('logger')}: {out.pop('message')}")
        out.pop("time_utc")
        tail = " ".join(f"{k}={v}" for k, v in out.items() if v is not None)
        line = f"{head} [{tail}]" if tail else head
        exc = _exception_text(self, record)
        return f"{line}\n{exc}" if exc else line


class _ContextCapture(logging.Filter):
    """Records the bound context on the record when it is made (a handler running later or
    elsewhere still shows the ids of where it was logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "_kaipiao_context"):
            record._kaipiao_context = _context.get()
        return True


class KaipiaoHandler(logging.StreamHandler):
    """The one handler ``configure`` installs on the root logger (found and replaced again
    by the next ``configure``). Without a stream it writes to whatever ``sys.stderr`` is at
    the time (a test harness swaps it)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._fixed = stream
        super().__init__(stream)

    @property
    def stream(self) -> TextIO:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        self._fixed = value if value is not sys.stderr else self._fixed


def formatter_for(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"KAIPIAO_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def make_handler(fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    handler = KaipiaoHandler(stream)
    handler.setFormatter(formatter_for(fmt))
    handler.addFilter(_ContextCapture())
    handler.addFilter(Redactor())
    return handler


def configure(fmt: str = "json", level: str | int = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Install the Kaipiao handler on the root logger (replacing one installed before) and
    set the level. Idempotent: the app factory calls it for every app it makes."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, KaipiaoHandler)]:
        root.removeHandler(old)
    handler = make_handler(fmt, stream)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # Werkzeug's request lines carry query strings (tokens, search terms): warnings only.
    logging.getLogger("werkzeug").setLevel(max(root.level, logging.WARNING))
    # SQLAlchemy logs statements *with their values* at INFO: never, whatever the level.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO on every command: noise.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(root.level, logging.WARNING))
    return handler


def configure_from(settings: Any) -> logging.Handler:
    """``configure`` with ``settings.log_format`` and ``settings.log_level`` (app.settings)."""
    return configure(settings.log_format, settings.log_level)
