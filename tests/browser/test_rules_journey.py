"""A tax specialist edits the shipped rule set, saves a draft, reads the diff and publishes it."""

from __future__ import annotations

import pytest

from app.services.rule_versions import load_shipped_defaults

pytestmark = pytest.mark.browser


def test_tax_specialist_edits_diffs_and_publishes(page, live_server, browser_login, db_session):
    load_shipped_defaults(db_session)  # v1 draft, v2 published
    db_session.commit()
    browser_login("tax_specialist")
    page.goto(f"{live_server}/admin/rules/")
    page.click("a.h5:text('default')")
    assert page.inner_text("#live-number") == "v2"

    page.click("#tab-edit")
    document = page.input_value("#document")
    assert "订单号:{order_id}" in document
    page.fill("#document", document.replace("订单号:{order_id}", "订单号:{order_id} 店铺:{shop_name}"))
    page.fill("#comment", "remark shows the shop")
    page.click("#save-draft")
    page.wait_for_selector("#diff-summary")
    assert "invoice-face" in page.inner_text(".diff-changed")
    assert "店铺:{shop_name}" in page.inner_text("#udiff .add")
    assert page.inner_text("#live-number") == "v2"  # a draft is not live

    page.fill("#publish-comment", "shop name in the remark")
    page.click("#publish-button")
    page.wait_for_selector("#versions")
    assert page.inner_text("#live-number") == "v4"
    assert "default@v4" in page.inner_text(".alert-success")
    row = page.locator('tr.version-row[data-version="4"]').inner_text()
    assert "shop name in the remark" in row
