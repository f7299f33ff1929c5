"""Login throttling: per username and per client address, counted in the database (every web
process sees the same failures), the same answer and the same work for unknown users."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.engine.clock import utcnow
from app.models import AdminAuditLog, LoginFailure, User
from app.services import sign_in as sign_in_service
from app.services.sign_in import sign_in
from app.settings import LoginPolicy
from tests.factories import gen_user

PASSWORD = "correct-horse-battery"
POLICY = LoginPolicy(max_failures=5, max_failures_per_address=8, failure_window=timedelta(minutes=15),
                     lockout=timedelta(minutes=10))


@pytest.fixture
def ops(db_session) -> User:
    user = gen_user(db_session, "operations", username="ops", password=PASSWORD)
    db_session.commit()
    return user


def _fail(n: int, username: str = "ops", address: str = "10.0.0.1", at=None, step=timedelta(seconds=1)):
    at = at or utcnow()
    results = []
    for i in range(n):
        results.append(sign_in(username, "wrong-password", POLICY, address=address, now=at + i * step))
    return results


def test_a_username_is_locked_after_its_failures(ops):
    now = utcnow()
    results = _fail(5, at=now)
    assert [r.locked_until is not None for r in results] == [False] * 4 + [True]
    assert results[-1].locked_until == now + 4 * timedelta(seconds=1) + POLICY.lockout
    # Locked: even the right password is refused, from anywhere, and nothing more is counted.
    later = now + timedelta(minutes=5)
    result = sign_in("ops", PASSWORD, POLICY, address="10.9.9.9", now=later)
    assert not result.ok and result.locked_until == results[-1].locked_until
    assert result.retry_after == results[-1].locked_until - later


def test_the_lock_expires_and_success_clears_the_count(ops, db_session):
    now = utcnow()
    last = _fail(5, at=now)[-1]
    assert last.locked_until is not None
    assert sign_in("ops", PASSWORD, POLICY, now=last.locked_until - timedelta(seconds=1)).locked_until is not None
    ok = sign_in("ops", PASSWORD, POLICY, address="10.0.0.1", now=last.locked_until)
    assert ok.ok and ok.session_token
    assert db_session.scalar(select(func.count()).select_from(LoginFailure).where(LoginFailure.username == "ops")) == 0
    # A fresh count: four more failures do not lock.
    assert all(r.locked_until is None for r in _fail(4, at=last.locked_until + timedelta(seconds=1)))


def test_failures_spread_wider_than_the_window_do_not_lock(ops):
    results = _fail(6, step=timedelta(minutes=4))  # any 5 in a row span 16 minutes
    assert all(r.locked_until is None for r in results)
    assert sign_in("ops", PASSWORD, POLICY, address="10.0.0.1").ok


def test_an_address_is_locked_across_usernames(ops):
    now = utcnow()
    results = [sign_in(f"guess{i}", "x", POLICY, address="10.0.0.66", now=now + timedelta(seconds=i))
               for i in range(POLICY.max_failures_per_address)]
    assert results[-2].locked_until is None and results[-1].locked_until is not None
    soon = now + timedelta(minutes=1)
    # Even a real user with the right password, from that address; another address is fine.
    assert sign_in("ops", PASSWORD, POLICY, address="10.0.0.66", now=soon).locked_until is not None
    assert sign_in("ops", PASSWORD, POLICY, address="10.0.0.67", now=soon).ok


def test_a_success_does_not_reset_its_address(ops, db_session):
    gen_user(db_session, "auditor", username="mine", password=PASSWORD)
    db_session.commit()
    now = utcnow()
    for i in range(POLICY.max_failures_per_address - 1):
        sign_in(f"guess{i}", "x", POLICY, address="10.0.0.66", now=now + timedelta(seconds=i))
    assert sign_in("mine", PASSWORD, POLICY, address="10.0.0.66", now=now + timedelta(seconds=30)).ok
    assert sign_in("guess", "x", POLICY, address="10.0.0.66", now=now + timedelta(seconds=31)).locked_until


def test_unknown_usernames_are_throttled_alike(db_session):
    results = _fail(5, username="nobody")
    assert [r.locked_until is not None for r in results] == [False] * 4 + [True]


def test_a_limit_of_zero_turns_the_throttle_off(ops):
    policy = dataclasses.replace(POLICY, max_failures=0, max_failures_per_address=0)
    now = utcnow()
    assert all(sign_in("ops", "nope", policy, address="a", now=now).locked_until is None for _ in range(12))
    assert sign_in("ops", PASSWORD, policy, address="a", now=now).ok


def test_every_path_checks_a_password_hash(ops, db_session, monkeypatch):
    """Timing: an unknown user costs one hash check, like a known user's wrong password."""
    inactive = gen_user(db_session, "operations", username="gone", password=PASSWORD)
    inactive.active = False
    db_session.commit()
    checked: list[str] = []
    real = sign_in_service.check_password_hash

    def spy(stored: str, password: str) -> bool:
        checked.append(stored)
        return real(stored, password)

    monkeypatch.setattr(sign_in_service, "check_password_hash", spy)
    for username, password in (("nobody", "wrong-password"), ("ops", "wrong-password"), ("gone", PASSWORD)):
        checked.clear()
        result = sign_in(username, password, POLICY, address=f"10.1.0.{len(username)}")
        assert not result.ok and result.locked_until is None
        assert len(checked) == 1, username
    # The dummy hash is made like real ones (same method and cost).
    assert sign_in_service._dummy_hash().split("$")[0] == ops.password_hash.split("$")[0]


def test_a_lock_is_written_to_the_audit_log_once(ops, db_session):
    now = utcnow()
    _fail(7, at=now)
    rows = db_session.scalars(select(AdminAuditLog).where(AdminAuditLog.action == "login_locked")).all()
    assert [(r.target, r.username, r.ip) for r in rows] == [("user ops", "anonymous", "10.0.0.1")]
    assert rows[0].details["failures"] == 5


def test_old_failures_are_pruned(ops, db_session):
    long_ago = utcnow() - timedelta(days=1)
    _fail(3, at=long_ago, username="someone")
    _fail(1)
    assert db_session.scalars(select(LoginFailure.username)).all() == ["ops"]


def test_policy_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAIPIAO_LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("KAIPIAO_LOGIN_MAX_FAILURES_PER_ADDRESS", "0")
    monkeypatch.setenv("KAIPIAO_LOGIN_FAILURE_WINDOW", "60")
    monkeypatch.setenv("KAIPIAO_LOGIN_LOCKOUT", "1800")
    monkeypatch.setenv("KAIPIAO_SESSION_LIFETIME", "3600")
    monkeypatch.setenv("KAIPIAO_SESSION_IDLE_TIMEOUT", "600.5")
    assert LoginPolicy.from_env() == LoginPolicy(
        max_failures=3, max_failures_per_address=0, failure_window=timedelta(minutes=1),
        lockout=timedelta(minutes=30), session_lifetime=timedelta(hours=1),
        session_idle_timeout=timedelta(seconds=600, milliseconds=500))


# ---------------------------------------------------------------------------------- the page


def _post(client, username: str, password: str, lang: str = ""):
    return client.post(f"/login{lang}", data={"username": username, "password": password})


def test_unknown_user_gets_the_same_page(app, client, ops):
    known = _post(client, "ops", "wrong-password")
    unknown = _post(client, "nobody", "wrong-password")
    assert known.status_code == unknown.status_code == 200
    assert "用户名或密码错误" in known.text
    assert known.text.replace("ops", "nobody") == unknown.text
    assert known.headers.get("Set-Cookie") == unknown.headers.get("Set-Cookie")


def test_locked_page_says_so_in_chinese_first_and_alike_for_unknown_users(app, client, ops):
    app.config["KAIPIAO"] = dataclasses.replace(app.config["KAIPIAO"], login=POLICY)
    for _ in range(4):
        assert _post(client, "ops", "wrong-password").status_code == 200
    known = _post(client, "ops", "wrong-password")
    assert known.status_code == 429 and "登录失败次数过多，请在 10 分钟后再试" in known.text
    assert 590 <= int(known.headers["Retry-After"]) <= 600
    for _ in range(4):
        _post(client, "nobody", "x", lang="?lang=en")
    unknown = _post(client, "nobody", "x", lang="?lang=en")
    assert unknown.status_code == 429
    assert "Too many failed logins. Try again in 10 minutes." in unknown.text
    # The right password does not get in while locked.
    assert _post(client, "ops", PASSWORD).status_code == 429


def test_failures_count_across_web_processes(app, settings, ops):
    """Two app instances (two web processes) share the count through the database."""
    from app import create_app

    other = create_app({"TESTING": True, "DATABASE_URL": settings.database_url, "WTF_CSRF_ENABLED": False},
                       settings=settings)
    for i in range(5):
        _post((app if i % 2 else other).test_client(), "ops", "wrong-password")
    assert _post(app.test_client(), "ops", PASSWORD).status_code == 429


def test_hostile_usernames_get_the_ordinary_answer(app, client, ops):
    """NUL (which PostgreSQL text refuses) and odd names are counted, never a 500."""
    for name in ("op\x00s", "x" * 80, "\ufffd\u202e", " ops "):
        r = _post(client, name, "wrong-password")
        assert r.status_code == 200 and "用户名或密码错误" in r.text, name
    assert _post(client, "x" * 500, "wrong-password").status_code == 200  # the form refuses it
