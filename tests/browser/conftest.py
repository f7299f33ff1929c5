"""Browser tests: Debian's chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def live_server(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app):
    app.config["WTF_CSRF_ENABLED"] = True  # the real forms, with their CSRF tokens
    context = browser.new_context(locale="zh-CN", accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def browser_login(page, live_server, db_session):
    from tests.factories import gen_user

    def _login(*roles: str, merchant_id: int | None = None):
        user = gen_user(db_session, *roles, merchant_id=merchant_id, password="correct-horse-battery")
        db_session.commit()
        page.goto(f"{live_server}/login")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", "correct-horse-battery")
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return user

    return _login
