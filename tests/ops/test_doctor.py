"""``kaipiao doctor``: each check's failing and passing case, with its probe injected."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.services import doctor
from app.services.doctor import Probes, RoleFacts, Status, Unreachable
from app.settings import Settings

NOW = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
PG = "postgresql+psycopg://kaipiao_app@db/kaipiao"


def _settings(tmp_path: Path, **kw) -> Settings:
    base = Settings(instance_path=tmp_path, database_url=PG, redis_url="redis://r:6379/0", secret_key="s",
                    encryption_key="e", migration_database_url="postgresql+psycopg://kaipiao@db/kaipiao",
                    ledger_hmac_key="h", extra={"SECRET_KEY": "s", "ENCRYPTION_KEYS": "e"})
    return replace(base, **kw)


def _good_probes(**kw) -> Probes:
    base = Probes(cjk_font=lambda: "/fonts/NotoSansCJK.ttc",
                  role_facts=lambda url: RoleFacts("kaipiao_app", False, ()),
                  revisions=lambda url: ("0006", ["0006"]),
                  redis_config=lambda: {"save": "3600 1", "appendonly": "yes"},
                  provider_date=lambda url: NOW - timedelta(seconds=1),
                  now=lambda: NOW)
    return replace(base, **kw)


def _by_check(findings):
    return {f.check: f for f in findings}


def test_a_well_set_host_passes_every_check(tmp_path):
    findings = doctor.diagnose(_settings(tmp_path), _good_probes())
    assert {f.status for f in findings} == {Status.OK}, [f for f in findings if f.status is not Status.OK]
    assert doctor.healthy(findings)


def _missing_font():
    raise RuntimeError("font 'Noto Sans CJK SC' is not installed")


def _role_unreachable(url):
    raise OSError("connection refused")


def _revisions_raise(url):
    raise OSError("no database")


def _redis_down():
    raise ConnectionError("refused")


def _provider_down(url):
    raise Unreachable("http://tax: ConnectionError")


FAILURES = {
    "fonts": ({}, {"cjk_font": _missing_font}, Status.FAIL, "fonts-noto-cjk"),
    "superuser": ({}, {"role_facts": lambda url: RoleFacts("postgres", True, ())}, Status.FAIL, "owns nothing"),
    "owner": ({}, {"role_facts": lambda url: RoleFacts("kaipiao", False, ("invoice", "invoice_event"))},
              Status.FAIL, "KAIPIAO_MIGRATION_DATABASE_URL"),
    "db_unreachable": ({}, {"role_facts": _role_unreachable}, Status.FAIL, "KAIPIAO_DATABASE_URL"),
    "sqlite": ({"database_url": "sqlite:///x.sqlite3", "migration_database_url": None}, {}, Status.WARN,
               "PostgreSQL"),
    "redis_no_persistence": ({}, {"redis_config": lambda: {"save": "", "appendonly": "no"}}, Status.FAIL,
                             "appendonly yes"),
    "redis_rdb_only": ({}, {"redis_config": lambda: {"save": "3600 1", "appendonly": "no"}}, Status.WARN,
                       "appendonly yes"),
    "redis_unreachable": ({}, {"redis_config": _redis_down}, Status.FAIL, "KAIPIAO_REDIS_URL"),
    "redis_embedded_down": ({"redis_url": None}, {"redis_config": _redis_down}, Status.WARN, "KAIPIAO_REDIS_URL"),
    "generated_secret_key": ({"extra": {"ENCRYPTION_KEYS": "e"}}, {}, Status.FAIL, "KAIPIAO_SECRET_KEY"),
    "generated_encryption_key": ({"extra": {"SECRET_KEY": "s"}}, {}, Status.FAIL, "keys rotate"),
    "unsigned_checkpoints": ({"ledger_hmac_key": None}, {}, Status.WARN, "KAIPIAO_LEDGER_HMAC_KEY"),
    "cookies": ({"cookie_secure": False}, {}, Status.FAIL, "KAIPIAO_COOKIE_SECURE=1"),
    "behind": ({}, {"revisions": lambda url: ("0005", ["0006"])}, Status.FAIL, "kaipiao db upgrade"),
    "empty": ({}, {"revisions": lambda url: (None, ["0006"])}, Status.FAIL, "kaipiao db upgrade"),
    "no_schema_db": ({}, {"revisions": _revisions_raise}, Status.FAIL, "KAIPIAO_MIGRATION_DATABASE_URL"),
    "clock_far": ({}, {"provider_date": lambda url: NOW - timedelta(minutes=5)}, Status.FAIL, "set-ntp"),
    "clock_near": ({}, {"provider_date": lambda url: NOW + timedelta(seconds=10)}, Status.WARN, "set-ntp"),
    "clock_unreachable": ({}, {"provider_date": _provider_down}, Status.SKIP, ""),
}
CHECK_OF = {"fonts": "fonts", "superuser": "database_role", "owner": "database_role",
            "db_unreachable": "database_role", "sqlite": "database_role",
            "redis_no_persistence": "redis_persistence", "redis_rdb_only": "redis_persistence",
            "redis_unreachable": "redis_persistence", "redis_embedded_down": "redis_persistence",
            "generated_secret_key": "secret_key", "generated_encryption_key": "encryption_key",
            "unsigned_checkpoints": "ledger_hmac_key", "cookies": "cookie_secure", "behind": "migrations",
            "empty": "migrations", "no_schema_db": "migrations", "clock_far": "clock_skew",
            "clock_near": "clock_skew", "clock_unreachable": "clock_skew"}


@pytest.mark.parametrize("case", list(FAILURES))
def test_each_problem_is_named_with_its_fix(tmp_path, case):
    setting_kw, probe_kw, status, fix_words = FAILURES[case]
    findings = _by_check(doctor.diagnose(_settings(tmp_path, **setting_kw), _good_probes(**probe_kw)))
    finding = findings[CHECK_OF[case]]
    assert finding.status is status, finding
    assert fix_words in finding.fix
    others = [f for name, f in findings.items() if name != CHECK_OF[case] and f.status is not Status.OK]
    assert not others, others
    assert doctor.healthy(list(findings.values())) is (status is not Status.FAIL)


def test_the_clock_probe_reads_the_providers_date_header():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def date_time_string(self, timestamp=None):
            return "Tue, 08 Dec 2026 01:00:00 GMT"

        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert doctor._provider_date(f"http://127.0.0.1:{server.server_port}") == NOW
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(Unreachable):
        doctor._provider_date(f"http://127.0.0.1:{server.server_port}")


def test_the_role_probe_sees_owner_and_app_role(settings, owner_url, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("roles are PostgreSQL's")
    assert doctor._role_facts(db_url).owned_tables == ()
    owner = doctor._role_facts(owner_url)
    assert "invoice_event" in owner.owned_tables or owner.superuser


def test_the_migration_probe_reads_the_real_revision(settings):
    current, heads = doctor._revisions(settings.migration_url)
    assert current in heads


def test_the_command_prints_json_and_exits_1_on_a_failure(app, settings, monkeypatch):
    from app.cli import cli

    monkeypatch.setattr(doctor, "_provider_date", _provider_down)
    monkeypatch.setattr(Probes, "__init__", _patched_init(Probes.__init__), raising=True)
    result = app.test_cli_runner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert report["ok"] is False
    assert statuses["cookie_secure"] == "fail"  # the test settings turn Secure off
    assert statuses["migrations"] == "ok"
    assert statuses["redis_persistence"] in {"ok", "warn", "fail"}  # the real test Redis, as it is set up
    assert statuses["clock_skew"] == "skip"


def _patched_init(init, redis=None):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.provider_date = _provider_down
        if redis is not None:
            self.redis_config = redis

    return patched


def test_the_command_passes_when_everything_is_right(app, settings, monkeypatch):
    from app.cli import cli

    good = replace(settings, cookie_secure=True, ledger_hmac_key="h",
                   extra={"SECRET_KEY": "s", "ENCRYPTION_KEYS": "e"})
    app.config["KAIPIAO"] = good
    persistent = {"save": "3600 1", "appendonly": "yes"}
    monkeypatch.setattr(Probes, "__init__", _patched_init(Probes.__init__, lambda: persistent), raising=True)
    monkeypatch.setattr(doctor, "check_database_role",
                        lambda s, p: doctor.Finding("database_role", Status.OK, "stubbed"))
    result = app.test_cli_runner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "no failures" in result.output
