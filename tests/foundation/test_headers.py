"""Security headers (app/web/headers.py) on every response, and pages that need no inline
script or style beyond what carries the request's nonce."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import flask_admin
import pytest

from app.render import render_html
from app.render.face import FRAME_ROWS, ROW_MM, static_text
from app.settings import frame_origins
from app.web.headers import frameable
from tests.factories import gen_order_doc

ROOT = Path(__file__).resolve().parents[2]
SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}


def csp(response) -> dict[str, str]:
    """The policy as {directive: sources}."""
    parts = (p.strip().split(" ", 1) for p in response.headers["Content-Security-Policy"].split(";"))
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


def assert_secure(response, *, personal: bool = True) -> None:
    policy = csp(response)
    assert policy["default-src"] == "'self'"
    for directive in ("script-src", "style-src"):
        sources = policy[directive].split()
        assert sources[0] == "'self'" and all(s.startswith("'nonce-") for s in sources[1:]), policy
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cache = response.headers.get("Cache-Control", "")
    assert (cache == "no-store") if personal else ("no-store" not in cache), cache


def assert_no_inline_code(html: str, nonce: str | None) -> None:
    """Inline script or style only with this response's nonce; no handler or style attribute
    and no javascript: URL of ours (what the browser test would report as violations)."""
    for tag, attrs in re.findall(r"<(script|style)\b([^>]*)>", html):
        if tag == "script" and "src=" in attrs:
            continue
        assert nonce and f'nonce="{nonce}"' in attrs, f"inline <{tag}{attrs}> without this response's nonce"
    assert re.findall(r"<[^>]*\son[a-z]+\s*=", html) == []
    assert re.findall(r"<[^>]*\sstyle\s*=", html) == []


def nonce_of(response) -> str | None:
    match = re.search(r"'nonce-([^']+)'", response.headers["Content-Security-Policy"])
    return match.group(1) if match else None


# ------------------------------------------------------------------------------ on every page


def test_anonymous_pages(client):
    for path, status in (("/login", 200), ("/", 302), ("/admin/", 302), ("/healthz", 200), ("/no-such-page", 404)):
        response = client.get(path)
        assert response.status_code == status, path
        assert_secure(response)


def test_api_answers(client):
    refused = client.post("/api/v1/orders", json=[])
    assert refused.status_code == 401
    assert_secure(refused)
    preview = client.post("/api/v1/preview", json={"order": gen_order_doc("unknown-shop"), "seller": SELLER})
    assert preview.status_code == 200
    assert_secure(preview)
    assert_secure(client.get("/api/v1/openapi.json"))


def test_signed_in_pages(client, login):
    login("admin")
    for path in ("/", "/admin/", "/admin/orders/", "/admin/users/new/", "/admin/rules/", "/admin/ops/",
                 "/admin/ledger_check/", "/preview"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_secure(response)
        assert_no_inline_code(response.text, nonce_of(response))


def test_preview_with_its_face_and_pdf(client, login):
    login("merchant")
    form = {"order": _json(gen_order_doc("unknown-shop")), "seller": _json(SELLER)}
    page = client.post("/preview", data=form)
    assert page.status_code == 200 and "kp-face" in page.text
    assert_secure(page)
    assert_no_inline_code(page.text, nonce_of(page))
    assert 'href="/render/face.css"' in page.text
    pdf = client.post("/preview/pdf", data=form)
    assert pdf.mimetype == "application/pdf"
    assert_secure(pdf)


def test_static_files_stay_cacheable(client):
    for path in ("/static/kaipiao.css", "/static/kaipiao-admin.js", "/admin/static/vendor/jquery.min.js",
                 "/render/face.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_secure(response, personal=False)
        assert response.headers.get("ETag"), path
        again = client.get(path, headers={"If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304, path


def test_nonce_is_per_response_and_matches_flask_admin_scripts(client, login):
    login("admin")
    first, second = client.get("/admin/orders/"), client.get("/admin/orders/")
    nonce = nonce_of(first)
    assert nonce and nonce != nonce_of(second) and len(nonce) >= 22
    # Flask-Admin puts the nonce on each of its script tags (an inline one, such as its map or
    # action scripts, would need it; ours are all files and carry none).
    admin_scripts = re.findall(r"<script\b([^>]*/admin/static/[^>]*)>", first.text)
    assert admin_scripts and all(f'nonce="{nonce}"' in attrs for attrs in admin_scripts)
    # A page without inline script gets no nonce at all: nothing inline is allowed there.
    assert nonce_of(client.get("/login")) is None


def test_flask_admin_layout_copy_matches_the_installed_one():
    """templates/admin/model/layout.html is Flask-Admin's, minus the inline onclick: when an
    upgrade changes the original, re-copy it (and drop the handler again)."""
    original = Path(flask_admin.__file__).parent / "templates/bootstrap4/admin/model/layout.html"
    ours = (ROOT / "app/templates/admin/model/layout.html").read_text(encoding="utf-8")
    body = ours.split("-#}\n", 1)[1]
    assert body == original.read_text(encoding="utf-8").replace(' onclick="return false;"', "")


# ------------------------------------------------------------------------------ framing


@pytest.fixture
def panel_app(settings, db_session):
    """The app with a helpdesk origin allowed to frame ``@frameable`` pages, and a test-only
    frameable route standing in for the customer-service panel."""
    from app import create_app
    from app.auth import public

    def make(origins: tuple[str, ...]):
        app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False},
                         settings=dataclasses.replace(settings, panel_frame_origins=origins))

        @app.route("/_test/panel")
        @public
        @frameable
        def _panel():
            return "<p>panel</p>"

        return app

    return make


def test_frameable_page_allows_only_the_configured_origins(panel_app):
    client = panel_app(("https://desk.example.com", "https://*.helpdesk.example.cn:8443")).test_client()
    panel = client.get("/_test/panel")
    assert csp(panel)["frame-ancestors"] == "https://desk.example.com https://*.helpdesk.example.cn:8443"
    assert "X-Frame-Options" not in panel.headers
    assert panel.headers["Cache-Control"] == "no-store"
    # Every other page stays unframeable.
    assert_secure(client.get("/login"))


def test_frameable_page_without_configured_origins_stays_unframeable(panel_app):
    client = panel_app(()).test_client()
    assert_secure(client.get("/_test/panel"))


@pytest.mark.parametrize("value, origins", [
    (None, ()),
    ("", ()),
    ("https://desk.example.com", ("https://desk.example.com",)),
    ("https://a.example.com/, http://127.0.0.1:8080  https://*.b.example.cn",
     ("https://a.example.com", "http://127.0.0.1:8080", "https://*.b.example.cn")),
])
def test_frame_origins_setting(value, origins):
    assert frame_origins(value) == origins


@pytest.mark.parametrize("value", ["*", "desk.example.com", "https://desk.example.com/panel", "'self'",
                                   "https://a.example.com;script-src", "javascript:alert(1)", "https://"])
def test_frame_origins_refuses_what_is_not_an_origin(value):
    with pytest.raises(ValueError, match="KAIPIAO_PANEL_FRAME_ORIGINS"):
        frame_origins(value)


# ------------------------------------------------------------------------------ the invoice face


def test_face_embeds_without_inline_style(db_session):
    from app.services.preview import preview_order

    draft = preview_order(gen_order_doc("unknown-shop"), SELLER, None, user=None)
    html = str(render_html(draft, standalone=False, inline_css=False))
    assert "kp-face" in html and "<style" not in html
    assert_no_inline_code(html, None)
    assert re.search(r'class="kp-filler kp-filler-\d"', html)


def test_face_css_has_the_band_of_every_short_invoice():
    css = static_text("face.css")
    for rows in range(1, FRAME_ROWS + 1):
        assert f".kp-filler-{rows} {{ height: {rows * ROW_MM:.1f}mm; }}" in css


def _json(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
