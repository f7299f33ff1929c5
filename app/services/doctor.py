"""``kaipiao doctor``: what a production host gets wrong, each finding with its fix.

Every check returns a ``Finding`` (ok / warn / fail / skip, a message, a fix). The checks read
the world through ``Probes`` (fonts, the database role, Redis' persistence settings, the
migration revision, the provider's clock), so tests inject each probe's answer. Redis is probed
by the caller (services do not import the queue library): the CLI passes ``redis_config``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from app.settings import Settings

CLOCK_WARN_SECONDS = 5.0
CLOCK_FAIL_SECONDS = 60.0


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # could not be checked here (the note says why); not a failure


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


@dataclass(frozen=True)
class RoleFacts:
    """The PostgreSQL role the application connects as."""

    user: str
    superuser: bool
    owned_tables: tuple[str, ...]


class Unreachable(Exception):
    """A probe could not reach what it checks (the message says what and why)."""


def _cjk_font() -> str:
    from app.render import check_cjk_font

    return check_cjk_font()


def _role_facts(url: str) -> RoleFacts:
    from sqlalchemy import text

    from app.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            user, superuser = conn.execute(text(
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")).one()
            owned = conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tableowner = current_user ORDER BY tablename")).scalars().all()
    finally:
        engine.dispose()
    return RoleFacts(user, bool(superuser), tuple(owned))


def _revisions(url: str) -> tuple[str | None, list[str]]:
    from app.migrate import current, heads

    return current(url), heads()


def _provider_date(url: str) -> datetime:
    """The provider's clock: the ``Date`` header of any answer from its base URL."""
    import requests

    try:
        response = requests.head(url, timeout=(3, 5), allow_redirects=False)
    except requests.RequestException as exc:
        raise Unreachable(f"{url}: {exc.__class__.__name__}") from exc
    header = response.headers.get("Date")
    if not header:
        raise Unreachable(f"{url} answered without a Date header")
    when = parsedate_to_datetime(header)
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # "-0000": UTC (RFC 2822)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Probes:
    cjk_font: Callable[[], str] = _cjk_font
    role_facts: Callable[[str], RoleFacts] = _role_facts
    revisions: Callable[[str], tuple[str | None, list[str]]] = _revisions
    # CONFIG GET save / appendonly; None: Redis not probed (the caller could not).
    redis_config: Callable[[], Mapping[str, str]] | None = None
    provider_date: Callable[[str], datetime] = _provider_date
    now: Callable[[], datetime] = _now


# --------------------------------------------------------------------------------- the checks


def check_fonts(probes: Probes) -> Finding:
    try:
        path = probes.cjk_font()
    except Exception as exc:
        return Finding("fonts", Status.FAIL, f"PDFs would print Chinese as empty boxes: {exc}",
                       "apt-get install fonts-noto-cjk (then `fc-list :lang=zh` lists Noto Sans CJK SC)")
    return Finding("fonts", Status.OK, f"CJK font for PDFs: {path}")


def check_database_role(settings: Settings, probes: Probes) -> Finding:
    if settings.is_sqlite:
        return Finding("database_role", Status.WARN,
                       "SQLite, the embedded default: one file, one role, no protection of the ledgers "
                       "from whoever can write the file",
                       "use PostgreSQL with two roles: KAIPIAO_MIGRATION_DATABASE_URL as the owner, "
                       "KAIPIAO_DATABASE_URL as a role that owns nothing (README: PostgreSQL and Redis)")
    try:
        facts = probes.role_facts(settings.database_url)
    except Exception as exc:
        return Finding("database_role", Status.FAIL, f"cannot connect as the application: {exc}",
                       "check KAIPIAO_DATABASE_URL and that the database server is up")
    if facts.superuser:
        return Finding("database_role", Status.FAIL,
                       f"the application connects as {facts.user!r}, a superuser: it can disable the "
                       "ledgers' triggers",
                       "create a role that owns nothing (`./dev pg-roles` makes kaipiao_app), point "
                       "KAIPIAO_DATABASE_URL at it and run `kaipiao db upgrade` as the owner to grant it")
    if facts.owned_tables:
        shown = ", ".join(facts.owned_tables[:5]) + (" …" if len(facts.owned_tables) > 5 else "")
        return Finding("database_role", Status.FAIL,
                       f"the application's role {facts.user!r} owns {len(facts.owned_tables)} tables "
                       f"({shown}): it can ALTER, DISABLE or DROP the ledgers' triggers",
                       "keep the owner for migrations only (KAIPIAO_MIGRATION_DATABASE_URL) and connect "
                       "the application as a role that owns nothing (KAIPIAO_DATABASE_URL); "
                       "`kaipiao db upgrade` grants it its rights")
    return Finding("database_role", Status.OK,
                   f"the application connects as {facts.user!r}: no superuser, owns no table")


def check_redis(settings: Settings, probes: Probes) -> Finding:
    if probes.redis_config is None:
        return Finding("redis_persistence", Status.SKIP, "Redis was not probed")
    try:
        config = probes.redis_config()
    except Exception as exc:
        if settings.redis_url is None:
            return Finding("redis_persistence", Status.WARN,
                           f"embedded Redis (instance folder) is not running ({exc}); it starts with "
                           "appendonly yes, but only on this host",
                           "for several hosts, run a Redis server with appendonly yes and set KAIPIAO_REDIS_URL")
        return Finding("redis_persistence", Status.FAIL, f"cannot read Redis' persistence settings: {exc}",
                       "check KAIPIAO_REDIS_URL; on a managed Redis that refuses CONFIG, make sure "
                       "RDB snapshots or AOF are enabled in its console")
    appendonly = str(config.get("appendonly", "")).lower() == "yes"
    save = str(config.get("save", "")).strip()
    if not appendonly and not save:
        return Finding("redis_persistence", Status.FAIL,
                       "Redis keeps nothing on disk (appendonly no, save \"\"): a restart loses the "
                       "queued jobs and the scheduler's delayed ones",
                       "set `appendonly yes` (and `appendfsync everysec`) in redis.conf, or "
                       "`redis-cli CONFIG SET appendonly yes && redis-cli CONFIG REWRITE`")
    where = "embedded Redis in the instance folder" if settings.redis_url is None else "Redis"
    how = "AOF" if appendonly else f"RDB snapshots (save {save})"
    if not appendonly:
        return Finding("redis_persistence", Status.WARN,
                       f"{where} persists with {how} only: jobs queued since the last snapshot are lost "
                       "on a crash (the periodic tick re-pushes undispatched outbox rows)",
                       "set `appendonly yes` in redis.conf for jobs that survive a crash")
    return Finding("redis_persistence", Status.OK, f"{where} persists with {how}")


def check_secrets(settings: Settings) -> list[Finding]:
    env = settings.extra
    out = []
    if "SECRET_KEY" in env:
        out.append(Finding("secret_key", Status.OK, "KAIPIAO_SECRET_KEY is set in the environment"))
    else:
        out.append(Finding("secret_key", Status.FAIL,
                           f"the session key is the generated one in {settings.instance_path / 'secret_key'}",
                           "set KAIPIAO_SECRET_KEY (e.g. `openssl rand -base64 48`) in the environment file "
                           "of every process"))
    if "ENCRYPTION_KEYS" in env or "ENCRYPTION_KEY" in env:
        out.append(Finding("encryption_key", Status.OK, "the encryption keys come from the environment"))
    else:
        out.append(Finding("encryption_key", Status.FAIL,
                           "the encryption key is the generated one in "
                           f"{settings.instance_path / 'encryption_key'}, beside the data it protects",
                           "set KAIPIAO_ENCRYPTION_KEYS=\"$(openssl rand -base64 32),$(cat "
                           "instance/encryption_key)\" and run `kaipiao keys rotate`, then remove the "
                           "file (README: Rotating the encryption key)"))
    if settings.ledger_hmac_key:
        out.append(Finding("ledger_hmac_key", Status.OK, "ledger checkpoints are signed"))
    else:
        out.append(Finding("ledger_hmac_key", Status.WARN,
                           "KAIPIAO_LEDGER_HMAC_KEY is not set: ledger checkpoints are unsigned",
                           "set KAIPIAO_LEDGER_HMAC_KEY (kept out of the database) in every process"))
    return out


def check_cookies(settings: Settings) -> Finding:
    if settings.cookie_secure:
        return Finding("cookie_secure", Status.OK, "session cookies are marked Secure")
    return Finding("cookie_secure", Status.FAIL,
                   "session cookies are not marked Secure: a browser sends them over plain http",
                   "serve over TLS and set KAIPIAO_COOKIE_SECURE=1 (or remove KAIPIAO_COOKIE_SECURE=0)")


def check_migrations(settings: Settings, probes: Probes) -> Finding:
    try:
        current, heads = probes.revisions(settings.migration_url)
    except Exception as exc:
        return Finding("migrations", Status.FAIL, f"cannot read the schema revision: {exc}",
                       "check KAIPIAO_MIGRATION_DATABASE_URL / KAIPIAO_DATABASE_URL")
    if current in heads:
        return Finding("migrations", Status.OK, f"schema at head ({current})")
    return Finding("migrations", Status.FAIL,
                   f"schema at {current or '(empty)'}, the code expects {', '.join(heads)}",
                   "run `kaipiao db upgrade` (as the owner) before starting the new version")


def check_clock(settings: Settings, probes: Probes) -> Finding:
    url = settings.tax_gateway_url
    try:
        theirs = probes.provider_date(url)
    except Exception as exc:
        return Finding("clock_skew", Status.SKIP, f"provider not reachable, clock not compared ({exc})")
    ours = probes.now()
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=UTC)
    skew = (ours - theirs).total_seconds()
    said = f"this host is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} {url}"
    fix = "enable time synchronisation (`timedatectl set-ntp true`, chrony or systemd-timesyncd)"
    if abs(skew) >= CLOCK_FAIL_SECONDS:
        return Finding("clock_skew", Status.FAIL, f"{said}: signed requests and deadlines go wrong", fix)
    if abs(skew) >= CLOCK_WARN_SECONDS:
        return Finding("clock_skew", Status.WARN, said, fix)
    return Finding("clock_skew", Status.OK, f"clock within {CLOCK_WARN_SECONDS:.0f} s of {url}")


def diagnose(settings: Settings, probes: Probes | None = None) -> list[Finding]:
    probes = probes or Probes()
    findings = [
        check_fonts(probes),
        check_database_role(settings, probes),
        check_redis(settings, probes),
        *check_secrets(settings),
        check_cookies(settings),
        check_migrations(settings, probes),
        check_clock(settings, probes),
    ]
    return findings


def healthy(findings: list[Finding]) -> bool:
    return not any(f.status is Status.FAIL for f in findings)
