"""Login, CSRF and roles: every endpoint says who may use it; anything unsaid is denied."""

from __future__ import annotations

import re

import pytest

from app.auth import PUBLIC
from app.models.user import ROLES
from tests.factories import gen_merchant, gen_shop, gen_user


def test_every_endpoint_declares_its_roles(app):
    admin_blueprints = app.extensions["kaipiao_admin_blueprints"]
    undeclared = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else None
        if blueprint in admin_blueprints:
            continue
        view = app.view_functions[rule.endpoint]
        if getattr(view, "_kaipiao_roles", None) is None:
            undeclared.append(rule.rule)
    assert undeclared == []


def test_every_admin_view_declares_roles(app):
    from app.admin.base import SecureMixin

    admin = app.extensions["kaipiao_admin"]
    for view in admin._views:
        assert isinstance(view, SecureMixin), view


def test_undeclared_endpoint_is_denied(app, client, login):
    @app.route("/_undeclared")
    def _undeclared():
        return "should never be served"

    assert client.get("/_undeclared").status_code == 403
    login("operations")
    assert client.get("/_undeclared").status_code == 403


def test_login_with_csrf(app, db_session):
    app.config["WTF_CSRF_ENABLED"] = True
    gen_user(db_session, "operations", username="ops", password="s3cret-pass")
    db_session.commit()
    client = app.test_client()
    page = client.get("/login")
    assert page.status_code == 200
    # Without the token the form is refused.
    assert client.post("/login", data={"username": "ops", "password": "s3cret-pass"}).status_code == 400
    token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    bad = client.post("/login", data={"username": "ops", "password": "wrong", "csrf_token": token})
    assert bad.status_code == 200 and "ops" not in (bad.headers.get("Location") or "")
    ok = client.post("/login?next=/admin/", data={"username": "ops", "password": "s3cret-pass", "csrf_token": token})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/admin/")
    cookie = ok.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example/", "/\\/evil.example/", "https://evil.example/"])
def test_open_redirect_refused(app, db_session, target):
    gen_user(db_session, "operations", username="ops2", password="s3cret-pass")
    db_session.commit()
    client = app.test_client()
    r = client.post("/login", query_string={"next": target}, data={"username": "ops2", "password": "s3cret-pass"})
    assert r.status_code == 302 and "evil" not in r.headers["Location"]


def test_passwords_are_hashed(db_session):
    user = gen_user(db_session, "auditor", password="plain-text-pw")
    assert "plain-text-pw" not in user.password_hash and user.check_password("plain-text-pw")


def test_anonymous_is_sent_to_login(client):
    r = client.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert client.get("/admin/orders/").status_code == 302


@pytest.mark.parametrize("role", [r for r in ROLES if r != "admin"])
def test_each_role_reaches_only_its_views(app, client, login, role):
    login(role, merchant_id=None)
    expectations = {
        "/admin/users/": role == "admin",
        "/admin/job_failures/": role == "operations",
        "/admin/audit_log/": role == "auditor",
        "/admin/invoice_log/": role in ("auditor", "operations"),
        "/admin/orders/": role in ("operations", "cs_agent", "merchant", "auditor", "tax_specialist"),
    }
    for url, allowed in expectations.items():
        status = client.get(url).status_code
        assert (status == 200) == allowed, (role, url, status)


def test_merchant_sees_only_its_own_shops(app, client, login, db_session):
    mine = gen_merchant(db_session, "我的商户")
    other = gen_merchant(db_session, "别人的商户")
    gen_shop(db_session, mine, shop_code="mine-shop", name="我的店")
    gen_shop(db_session, other, shop_code="other-shop", name="别人的店")
    db_session.commit()
    login("merchant", merchant_id=mine.id)
    page = client.get("/admin/shops/").text
    assert "mine-shop" in page and "other-shop" not in page


def test_api_token_auth(app, db_session):
    from app.services.accounts import issue_api_token

    user = gen_user(db_session, "operations")
    token = issue_api_token(user)
    db_session.commit()
    client = app.test_client()
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer kp_wrong"}).status_code == 302


def test_public_marker_is_distinct():
    assert PUBLIC not in [(r,) for r in ROLES]
