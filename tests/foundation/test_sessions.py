"""Server-side sessions: bearer tokens work whatever cookie comes with them; migration 0006
goes up and down."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app import db as kdb
from app.services.accounts import issue_api_token
from tests.factories import gen_user

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
