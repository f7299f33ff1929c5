"""One settings object, read from the environment (prefix ``KAIPIAO_``).

Nothing here touches the network or the database; defaults are the embedded ones
(a SQLite file and an embedded Redis server in the instance folder).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field, fields
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

PREFIX = "KAIPIAO_"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(PREFIX + name)
    return value if value not in (None, "") else default


def _bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def default_instance_path() -> Path:
    return Path(_env("INSTANCE_PATH") or Path.cwd() / "instance").resolve()


def _persistent_secret(instance: Path, filename: str) -> str:
    """A random secret kept in the instance folder (mode 600) so restarts keep sessions
    and encrypted columns readable; production sets it through the environment."""
    path = instance / filename
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


# scheme://host[:port], the host possibly ``*.``-prefixed: what CSP frame-ancestors accepts
# as an origin, and nothing (no quote, semicolon or space) that could add a directive.
_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?")


def frame_origins(value: str | None) -> tuple[str, ...]:
    """``KAIPIAO_PANEL_FRAME_ORIGINS``: origins separated by spaces or commas."""
    origins = tuple(o.rstrip("/") for o in re.split(r"[\s,]+", value or "") if o)
    bad = [o for o in origins if not _ORIGIN.fullmatch(o)]
    if bad:
        raise ValueError(f"{PREFIX}PANEL_FRAME_ORIGINS: {', '.join(map(repr, bad))} is not an origin "
                         "(scheme://host[:port], e.g. https://desk.example.com)")
    return origins


def encryption_keys(keys: str | None, key: str | None) -> tuple[str, ...]:
    """``KAIPIAO_ENCRYPTION_KEYS`` (comma-separated, newest first), then
    ``KAIPIAO_ENCRYPTION_KEY`` as the oldest unless listed already: adding KEYS=new beside
    the single key in use is how a rotation starts. Empty: neither is set."""
    listed = [k.strip() for k in (keys or "").split(",") if k.strip()]
    if key:
        listed.append(key)  # verbatim, as it has always been used
    return tuple(dict.fromkeys(listed))  # without repeats, in order


def log_format(value: str | None) -> str:
    """``KAIPIAO_LOG_FORMAT``: json (default) or text."""
    fmt = (value or "json").strip().lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"{PREFIX}LOG_FORMAT: {value!r} is not json or text")
    return fmt


def log_level(value: str | None) -> str:
    """``KAIPIAO_LOG_LEVEL``: DEBUG, INFO (default), WARNING, ERROR or CRITICAL."""
    level = (value or "INFO").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"{PREFIX}LOG_LEVEL: {value!r} is not DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


@dataclass(frozen=True)
class Timing:
    """Knobs of retries and recovery; ``KAIPIAO_TIMING_<NAME>`` (seconds) overrides each, which
    the chaos test and the benchmarks use to shorten them."""

    stuck_issuing: timedelta = timedelta(seconds=120)  # issuing with no answer recorded: ask by serial
    stale_undecided: timedelta = timedelta(seconds=60)  # received and not decided: queue it again
    requeue_after: timedelta = timedelta(seconds=60)  # a job queued longer ago has run or was lost
    outbox_grace: timedelta = timedelta(seconds=2)  # the tick leaves younger outbox rows to the committer
    first_poll: timedelta = timedelta(milliseconds=500)  # accepted → first query
    max_backoff: timedelta = timedelta(seconds=300)

    @classmethod
    def from_env(cls) -> Timing:
        values = {}
        for f in fields(cls):
            value = _env(f"TIMING_{f.name.upper()}")
            if value:
                # Decimal, not float: exact milliseconds from what was written.
                values[f.name] = timedelta(milliseconds=int(Decimal(value) * 1000))
        return cls(**values)


def _seconds(name: str, default: timedelta) -> timedelta:
    value = _env(name)
    return default if value is None else timedelta(milliseconds=int(Decimal(value) * 1000))


@dataclass(frozen=True)
class LoginPolicy:
    """Login throttling and server-side session lifetimes (app/services/sign_in.py,
    app/services/user_sessions.py). A limit of 0 turns that throttle off."""

    max_failures: int = 5  # failed logins of one username within the window, then it is locked
    max_failures_per_address: int = 20  # of any usernames from one client address (offices share one)
    failure_window: timedelta = timedelta(minutes=15)  # how close together the failures must be
    lockout: timedelta = timedelta(minutes=15)  # how long a lock lasts after the last counted failure
    session_lifetime: timedelta = timedelta(hours=12)  # a login lasts at most this long
    session_idle_timeout: timedelta = timedelta(hours=2)  # ... and ends after this long unused

    @classmethod
    def from_env(cls) -> LoginPolicy:
        d = cls()
        return cls(
            max_failures=int(_env("LOGIN_MAX_FAILURES") or d.max_failures),
            max_failures_per_address=int(_env("LOGIN_MAX_FAILURES_PER_ADDRESS") or d.max_failures_per_address),
            failure_window=_seconds("LOGIN_FAILURE_WINDOW", d.failure_window),
            lockout=_seconds("LOGIN_LOCKOUT", d.lockout),
            session_lifetime=_seconds("SESSION_LIFETIME", d.session_lifetime),
            session_idle_timeout=_seconds("SESSION_IDLE_TIMEOUT", d.session_idle_timeout),
        )


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    redis_url: str | None  # None: embedded Redis in the instance folder
    secret_key: str
    encryption_key: str  # the newest key: it encrypts (app/crypto.py)
    cookie_secure: bool = True
    default_locale: str = "zh_CN"
    tax_gateway: str = "sandbox"
    tax_gateway_url: str = "http://127.0.0.1:8765"
    mail_url: str | None = None
    timing: Timing = field(default_factory=Timing)
    login: LoginPolicy = field(default_factory=LoginPolicy)
    sender_threads: int = 16  # per worker process: provider calls run beside the jobs (app/jobs/sender.py)
    # The largest request body (and form field) accepted: 1000 orders of a batch fit in 4 MB.
    max_request_bytes: int = 4 * 1024 * 1024
    # Migrations connect as the owner of the tables; the application (database_url) as a role
    # that owns nothing (app/guards.py grant_app_role). None: migrations use database_url.
    migration_database_url: str | None = None
    # The role migrations grant the application's rights to; None: the user of database_url
    # when migrations connect as another user (app.migrate.app_role).
    database_app_role: str | None = None
    # Signs each ledger checkpoint line (app/ledger.py); kept out of the database.
    ledger_hmac_key: str | None = None
    # Older keys, newest first: they only decrypt, until ``kaipiao keys rotate`` has re-encrypted
    # everything with encryption_key and they are removed.
    old_encryption_keys: tuple[str, ...] = ()
    # Origins that may frame a ``@frameable`` page (app/web/headers.py); none: nothing may.
    panel_frame_origins: tuple[str, ...] = ()
    # The bearer token ``GET /metrics`` asks for; None: the endpoint answers 404 (app/web/metrics.py).
    metrics_token: str | None = None
    # app/logging_setup.py: "json" (one object per line) or "text" (development); the level.
    log_format: str = "json"
    log_level: str = "INFO"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def encryption_keys(self) -> tuple[str, ...]:
        """Every key, newest first (what app.crypto.configure takes)."""
        return (self.encryption_key, *self.old_encryption_keys)

    @property
    def migration_url(self) -> str:
        return self.migration_database_url or self.database_url

    @staticmethod
    def database_url_from_env(instance_path: Path | None = None) -> str:
        """The database URL alone (no side effects: secrets are not generated)."""
        instance = instance_path or default_instance_path()
        return _env("DATABASE_URL") or f"sqlite:///{instance / 'kaipiao.sqlite3'}"

    @classmethod
    def from_env(cls, instance_path: Path | None = None) -> Settings:
        instance = instance_path or default_instance_path()
        database_url = cls.database_url_from_env(instance)
        secret = _env("SECRET_KEY") or _persistent_secret(instance, "secret_key")
        keys = encryption_keys(_env("ENCRYPTION_KEYS"), _env("ENCRYPTION_KEY"))
        if not keys:
            keys = (_persistent_secret(instance, "encryption_key"),)
        extra = {k[len(PREFIX):]: v for k, v in os.environ.items() if k.startswith(PREFIX)}
        return cls(
            instance_path=instance,
            database_url=database_url,
            redis_url=_env("REDIS_URL"),
            secret_key=secret,
            encryption_key=keys[0],
            old_encryption_keys=keys[1:],
            cookie_secure=_bool("COOKIE_SECURE", True),
            default_locale=_env("LOCALE", "zh_CN") or "zh_CN",
            tax_gateway=_env("TAX_GATEWAY", "sandbox") or "sandbox",
            tax_gateway_url=_env("TAX_GATEWAY_URL", "http://127.0.0.1:8765") or "",
            mail_url=_env("MAIL_URL"),
            timing=Timing.from_env(),
            login=LoginPolicy.from_env(),
            sender_threads=int(_env("SENDER_THREADS", "16") or 16),
            max_request_bytes=int(_env("MAX_REQUEST_BYTES", str(4 * 1024 * 1024)) or 4 * 1024 * 1024),
            migration_database_url=_env("MIGRATION_DATABASE_URL"),
            database_app_role=_env("DATABASE_APP_ROLE"),
            ledger_hmac_key=_env("LEDGER_HMAC_KEY"),
            panel_frame_origins=frame_origins(_env("PANEL_FRAME_ORIGINS")),
            metrics_token=_env("METRICS_TOKEN"),
            log_format=log_format(_env("LOG_FORMAT")),
            log_level=log_level(_env("LOG_LEVEL")),
            extra=extra,
        )
