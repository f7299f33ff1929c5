"""Server-side sessions: logout, a password change or deactivation end a login everywhere (a
copied cookie stops working); bearer tokens work whatever cookie comes with them and never
open a session; migration 0006 goes up and down."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from app import db as kdb
from app.engine.clock import utcnow
from app.models import User, UserSession
from app.services import accounts, user_sessions
from app.services.accounts import issue_api_token
from tests.factories import gen_user

PASSWORD = "correct-horse-battery"


def _copy_cookie(app, client):
    """Another browser holding a copy of ``client``'s session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def _sessions(db_session) -> list[UserSession]:
    db_session.expire_all()
    return list(db_session.scalars(select(UserSession).order_by(UserSession.id)))


def test_login_opens_a_server_session(client, login, db_session):
    user = login("operations")
    [row] = _sessions(db_session)
    assert row.user_id == user.id and row.revoked_at is None and row.ip == "127.0.0.1"
    assert row.expires_at - row.created_at == timedelta(hours=12)
    # Only the token's hash is stored; the cookie carries the token.
    assert client.get_cookie("session").value not in row.token_hash


def test_a_copied_cookie_stops_working_at_logout(app, client, login, db_session):
    login("operations")
    thief = _copy_cookie(app, client)
    assert thief.get("/").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/").status_code == 302
    r = thief.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    [row] = _sessions(db_session)
    assert row.revoked_at is not None and row.revoked_reason == "logout"


def test_logging_in_again_does_not_revive_an_old_cookie(app, client, login, db_session):
    user = login("operations")
    old = _copy_cookie(app, client)
    client.post("/logout")
    client.post("/login", data={"username": user.username, "password": PASSWORD})
    assert client.get("/").status_code == 200
    assert old.get("/").status_code == 302


def test_a_password_change_ends_every_session(app, client, login, db_session):
    user = login("operations")
    other = app.test_client()
    other.post("/login", data={"username": user.username, "password": PASSWORD})
    accounts.change_password(db_session, db_session.get(User, user.id), "a-new-password-1")
    db_session.commit()
    assert client.get("/").status_code == 302 and other.get("/").status_code == 302
    assert {r.revoked_reason for r in _sessions(db_session)} == {"password"}


@pytest.mark.parametrize("change", ["password", "deactivate"])
def test_the_user_admin_ends_sessions(app, client, login, db_session, change):
    victim = gen_user(db_session, "operations", username="victim", password=PASSWORD)
    db_session.commit()
    theirs = app.test_client()
    theirs.post("/login", data={"username": "victim", "password": PASSWORD})
    assert theirs.get("/").status_code == 200
    login("admin")
    form = {"username": "victim", "roles": ["operations"], "active": "y", "new_password": ""}
    if change == "password":
        form["new_password"] = "another-password-2"
    else:
        del form["active"]
    r = client.post(f"/admin/users/edit/?id={victim.id}", data=form)
    assert r.status_code == 302, r.text
    assert theirs.get("/").status_code == 302
    revoked = [s for s in _sessions(db_session) if s.user_id == victim.id]
    assert [s.revoked_reason for s in revoked] == ["password" if change == "password" else "deactivated"]
    assert client.get("/").status_code == 200  # the admin's own session is untouched


def test_idle_and_absolute_expiry(app, client, login, db_session, monkeypatch):
    login("operations")
    start = utcnow()

    def at(delta: timedelta) -> None:
        monkeypatch.setattr(user_sessions, "utcnow", lambda: start + delta)

    # Used every 100 minutes (idle timeout 2 h): alive, and last_seen_at moves along.
    for minutes in (100, 200, 300):
        at(timedelta(minutes=minutes))
        assert client.get("/").status_code == 200
    [row] = _sessions(db_session)
    assert row.last_seen_at >= start + timedelta(minutes=299)
    at(timedelta(hours=12, seconds=1))  # the absolute lifetime is over, however busy
    assert client.get("/").status_code == 302


def test_an_idle_session_ends(client, login, monkeypatch):
    login("operations")
    later = utcnow() + timedelta(hours=2, seconds=1)
    monkeypatch.setattr(user_sessions, "utcnow", lambda: later)
    assert client.get("/").status_code == 302


def test_a_session_cookie_without_a_server_session_is_anonymous(app, client, login, db_session):
    """A cookie signed with the key but naming no session (forged, or from before 0006)."""
    user = login("operations")
    with client.session_transaction() as sess:
        sess["_kaipiao_session"] = "made-up"
    assert client.get("/").status_code == 302
    with client.session_transaction() as sess:
        sess.pop("_kaipiao_session")
        sess["_user_id"] = str(user.id)
    assert client.get("/").status_code == 302


def test_a_remember_cookie_alone_does_not_log_in(app, db_session):
    from flask_login.utils import encode_cookie

    user = gen_user(db_session, "operations")
    db_session.commit()
    client = app.test_client()
    with app.test_request_context():
        client.set_cookie("remember_token", encode_cookie(str(user.id)))
    assert client.get("/").status_code == 302


# ------------------------------------------------------------------------------- bearer tokens


@pytest.fixture
def token(db_session) -> str:
    user = gen_user(db_session, "operations")
    value = issue_api_token(user)
    db_session.commit()
    return value


def test_bearer_token_with_an_anonymous_session_cookie(app, token):
    client = app.test_client()
    client.get("/login?lang=en")  # the browser has an anonymous session (its language)
    assert client.get_cookie("session") is not None
    r = client.get("/", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_bearer_token_after_a_logout_cookie(app, client, login, token):
    login("auditor")
    client.post("/logout")  # the cookie still holds Flask-Login's "_remember: clear"
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_bearer_api_write_with_an_anonymous_cookie_needs_no_csrf(app, token):
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    client.get("/login")  # anonymous session with a CSRF token in it
    r = client.post("/api/v1/orders", json={"orders": []}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_a_wrong_token_is_anonymous_even_with_a_login_cookie(app, client, login):
    login("operations")
    assert client.get("/", headers={"Authorization": "Bearer kp_wrong"}).status_code == 302
    r = client.post("/api/v1/orders", json={"orders": []}, headers={"Authorization": "Bearer kp_wrong"})
    assert r.status_code == 401
    assert client.get("/").status_code == 200  # the cookie's login itself is untouched


def test_token_requests_open_no_session_and_set_no_cookie(app, db_session, token):
    client = app.test_client()
    client.get("/login?lang=en")
    for _ in range(2):
        assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with client.session_transaction() as sess:  # a page may add a CSRF token, never a login
            assert not {"_user_id", "_kaipiao_session"} & set(sess)
    r = client.post("/api/v1/orders", json={"orders": []}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and "Set-Cookie" not in r.headers
    assert db_session.scalar(select(func.count()).select_from(UserSession)) == 0


# ----------------------------------------------------------------------------------- migration


def _tables(url: str) -> set[str]:
    from sqlalchemy import inspect

    engine = kdb.make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migration_0006_up_and_down(db_url, owner_url):
    from app.migrate import current, downgrade, upgrade

    app_user = kdb.make_url_safe(db_url).username
    role = app_user if app_user != kdb.make_url_safe(owner_url).username else None
    assert {"login_failure", "user_session"} <= _tables(owner_url)
    downgrade(owner_url, "0005", app_role=role)
    assert current(owner_url) == "0005"
    assert not {"login_failure", "user_session"} & _tables(owner_url)
    upgrade(owner_url, app_role=role)
    assert {"login_failure", "user_session"} <= _tables(owner_url)
    if role is not None:  # PostgreSQL: the app role may use the new tables, and no more
        engine = kdb.make_engine(owner_url)
        with engine.connect() as conn:
            for table in ("login_failure", "user_session"):
                for privilege, granted in (("SELECT", True), ("INSERT", True), ("UPDATE", True), ("DELETE", True),
                                           ("TRUNCATE", False)):
                    assert conn.execute(text("SELECT has_table_privilege(:r, :t, :p)"),
                                        {"r": role, "t": table, "p": privilege}).scalar() is granted, (table, privilege)
        engine.dispose()


def test_an_odd_user_agent_is_stored_harmlessly(app, db_session):
    gen_user(db_session, "operations", username="ua", password=PASSWORD)
    db_session.commit()
    client = app.test_client()
    r = client.post("/login", data={"username": "ua", "password": PASSWORD},
                    headers={"User-Agent": "bot\x00" + "x" * 300})
    assert r.status_code == 302
    [row] = _sessions(db_session)
    assert row.user_agent.startswith("bot\ufffdx") and len(row.user_agent) == 200
