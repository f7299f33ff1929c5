"""Server-side sessions: bearer tokens work whatever cookie comes with them."""

from __future__ import annotations

import pytest

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
