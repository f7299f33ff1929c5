"""The main pages under the real Content-Security-Policy, in Chromium, as admin: not one
violation (inline script, inline style, handler attribute, javascript: URL), and the pages
still work: menus open, filters apply, the dry-run runs, the operations levers act."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from app.engine.clock import utcnow
from app.models import Invoice, InvoiceRequest, Order, RuleSet
from app.services.rule_versions import load_shipped_defaults
from tests.factories import gen_order_doc, gen_shop

pytestmark = pytest.mark.browser

# Runs before any page script: a violation after the page has loaded still lands here.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber} ${e.sample}`));
"""


class Violations:
    def __init__(self, page) -> None:
        self.page = page
        self.seen: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        # The console also reports what happened just before a navigation.
        page.on("console", lambda m: self.seen.append(m.text) if "Content Security Policy" in m.text else None)

    def check(self, where: str) -> None:
        self.page.wait_for_load_state("load")
        self.page.wait_for_timeout(150)  # violation events are queued tasks
        events = self.page.evaluate("window.__csp || []")
        found = [*self.seen, *events]
        self.seen.clear()
        assert found == [], f"CSP violations on {where}: {found}"


def _order(session, shop, status: str) -> tuple[Order, InvoiceRequest]:
    doc = gen_order_doc(shop_code=shop.shop_code)
    order = Order(platform=shop.platform, shop_code=shop.shop_code, order_no=doc["order_id"], shop_id=shop.id,
                  status="received", document=doc, document_hash=f"hash-{doc['order_id']}")
    session.add(order)
    session.flush()
    request = InvoiceRequest(order_pk=order.id, title_type="personal", title="个人", status=status,
                             status_reason="抬头可疑" if status == "held" else None, updated_at=utcnow())
    session.add(request)
    session.flush()
    return order, request


def _data(session) -> dict[str, int]:
    load_shipped_defaults(session)
    shop = gen_shop(session, shop_code="demo-tmall")
    _order(session, shop, "received")
    _, held = _order(session, shop, "held")
    order, failed_request = _order(session, shop, "failed")
    invoice = Invoice(request_id=failed_request.id, order_pk=order.id, color="blue", kind="normal", status="failed",
                      serial_no="KP000000000000000777", buyer={"title_type": "personal", "name": "个人"},
                      seller={"name": "测试商户有限公司", "tax_id": "91110000600037341L"},
                      total_amount=Decimal("100.00"), total_tax=Decimal("13.00"), total=Decimal("113.00"),
                      failure_reason="E1001: 购方税号不存在", updated_at=utcnow())
    session.add(invoice)
    session.flush()
    default = session.query(RuleSet).filter_by(name="default").one()
    session.commit()
    return {"held": held.id, "invoice": invoice.id, "rule_set": default.id}


def test_main_pages_have_no_csp_violation_and_still_work(page, live_server, browser_login, db_session):
    ids = _data(db_session)
    csp = Violations(page)
    browser_login("admin")
    csp.check("login and home")
    assert page.url == f"{live_server}/"

    page.goto(f"{live_server}/login")
    csp.check("the login page")

    page.goto(f"{live_server}/admin/")
    csp.check("the admin index")
    # Bootstrap's dropdowns (scripts from static files) open the menus.
    page.click("a.dropdown-toggle:has-text('订单与发票')")
    page.wait_for_selector(".dropdown-menu.show")
    page.click(".dropdown-menu.show a:has-text('订单')")
    csp.check("the order list")
    assert page.locator("table.model-list tbody tr").count() == 3
    # Flask-Admin's filters (its own scripts, with their nonce) still apply.
    page.click("a.nav-link:has(+ .field-filters)")
    page.click("a.filter:has-text('状态')")
    page.wait_for_selector(".filter-val")
    csp.check("the order list's filter")

    page.goto(f"{live_server}/admin/rules/{ids['rule_set']}/edit")
    csp.check("the rules editor")
    assert page.locator("#document").input_value().strip()

    page.goto(f"{live_server}/admin/rules/{ids['rule_set']}/v/2/dry-run")
    csp.check("the dry-run page")
    page.check("#source-paste")
    page.fill("#order_json", json.dumps(gen_order_doc("demo-tmall"), ensure_ascii=False))
    page.click("#run-dry-run")
    page.wait_for_selector("#dry-run-result")
    csp.check("the dry-run result")
    assert page.locator("#dry-run-result .kp-face").count() >= 1
    # The face's stylesheet (a linked file now) applied: the frame has its border.
    assert page.locator(".kp-frame").first.evaluate("e => getComputedStyle(e).borderTopStyle") != "none"

    page.goto(f"{live_server}/admin/ops/")
    csp.check("the operations page")
    page.click(f'tr.held-row[data-id="{ids["held"]}"] button:has-text("跳过")')
    csp.check("the operations page after skipping")
    assert page.locator(".ops-flash .alert").count() >= 1
    page.click(f'tr.failed-invoice-row[data-id="{ids["invoice"]}"] button:has-text("重试")')
    csp.check("the operations page after a retry")
    assert "KP000000000000000777" in page.locator(".ops-flash").inner_text()

    # The other back-office pages: lists, details, forms, ledgers, the rule-set pages.
    rules = f"/admin/rules/{ids['rule_set']}"
    for path in ("/admin/invoices/", f"/admin/invoices/details/?id={ids['invoice']}", "/admin/requests/",
                 "/admin/invoice_log/", "/admin/audit_log/", "/admin/ledger_check/", "/admin/job_failures/",
                 "/admin/shops/new/", "/admin/tax_codes/", "/admin/users/new/", "/admin/rules/", f"{rules}/",
                 f"{rules}/diff", f"{rules}/v/2/", f"{rules}/v/2/replay"):
        page.goto(f"{live_server}{path}")
        csp.check(path)

    page.goto(f"{live_server}/preview")
    csp.check("the preview page")
    page.fill("#order", json.dumps(gen_order_doc("unknown-shop"), ensure_ascii=False))
    page.click("summary")
    page.fill("#seller", json.dumps({"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"},
                                    ensure_ascii=False))
    page.click("#show-preview")
    page.wait_for_selector("#preview-result .kp-face")
    csp.check("the preview result")
    # Stylesheets came from static files: the page is styled, not bare HTML.
    assert page.locator(".topbar").evaluate("e => getComputedStyle(e).display") == "flex"
    assert page.locator(".kp-frame").first.evaluate("e => getComputedStyle(e).borderTopStyle") != "none"
