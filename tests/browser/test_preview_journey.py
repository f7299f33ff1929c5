"""A merchant pastes an order, sees the invoice face and downloads its PDF."""

from __future__ import annotations

import json

import pytest

from tests.factories import gen_order_doc

pytestmark = pytest.mark.browser


def test_merchant_previews_and_downloads_pdf(page, live_server, browser_login, tmp_path):
    browser_login("merchant")
    page.goto(f"{live_server}/preview")
    order = gen_order_doc("unknown-shop", "3141592653589793")
    page.fill("#order", json.dumps(order, ensure_ascii=False))
    page.click("summary")
    page.fill("#seller", json.dumps({"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"},
                                    ensure_ascii=False))
    page.click("#show-preview")
    result = page.locator("#preview-result")
    result.wait_for()
    text = result.inner_text()
    assert "电子发票" in text and "247.90" in text and "贰佰肆拾柒圆玖角整" in text
    with page.expect_download() as download_info:
        page.click("#download-pdf")
    path = tmp_path / "preview.pdf"
    download_info.value.save_as(path)
    assert path.read_bytes().startswith(b"%PDF")


def test_bad_order_shows_errors_with_paths(page, live_server, browser_login):
    browser_login("merchant")
    page.goto(f"{live_server}/preview")
    order = gen_order_doc("unknown-shop")
    order["lines"][0]["unit_price"] = "9.9.9"
    page.fill("#order", json.dumps(order))
    page.click("#show-preview")
    alert = page.locator("[role=alert]").first
    alert.wait_for()
    assert "order.lines[0].unit_price" in alert.inner_text()
