"""Small data builders for tests (``gen_*``): each returns a flushed object or a dict."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from app.models import (
    Invoice,
    InvoiceRequest,
    Merchant,
    Order,
    SellerEntity,
    Shop,
    SkuTaxMapping,
    TaxCode,
    User,
)

_seq = itertools.count(1)


def gen_user(session: Session, *roles: str, merchant_id: int | None = None, username: str | None = None,
             password: str = "correct-horse-battery") -> User:
    user = User(username=username or f"user{next(_seq)}", roles=list(roles), merchant_id=merchant_id)
    user.set_password(password)
    session.add(user)
    session.flush()
    return user


def gen_merchant(session: Session, name: str | None = None) -> Merchant:
    merchant = Merchant(name=name or f"测试商户{next(_seq)}有限公司")
    session.add(merchant)
    session.flush()
    return merchant


def gen_seller(session: Session, merchant: Merchant, **kw: Any) -> SellerEntity:
    seller = SellerEntity(merchant_id=merchant.id, code=kw.pop("code", f"s{next(_seq)}"),
                          name=kw.pop("name", merchant.name), tax_id=kw.pop("tax_id", "91110000600037341L"),
                          is_default=kw.pop("is_default", True), province_code=kw.pop("province_code", "33"), **kw)
    session.add(seller)
    session.flush()
    return seller


def gen_shop(session: Session, merchant: Merchant | None = None, platform: str = "tmall", **kw: Any) -> Shop:
    merchant = merchant or gen_merchant(session)
    seller = kw.pop("seller", None) or gen_seller(session, merchant)
    shop = Shop(merchant_id=merchant.id, seller_entity_id=seller.id, platform=platform,
                shop_code=kw.pop("shop_code", f"shop-{next(_seq)}"), name=kw.pop("name", "测试店铺"),
                options=kw.pop("options", {}), **kw)
    session.add(shop)
    session.flush()
    return shop


def gen_order_doc(shop_code: str = "demo-tmall", order_id: str | None = None, platform: str = "tmall",
                  **overrides: Any) -> dict[str, Any]:
    """A valid contract order (two goods lines, shipping, a shop coupon, personal title)."""
    doc: dict[str, Any] = {
        "platform": platform,
        "shop_id": shop_code,
        "order_id": order_id or f"T{next(_seq):012d}",
        "status": "received",
        "paid_at": "2026-11-11T00:01:02+08:00",
        "received_at": "2026-11-14T10:20:00+08:00",
        "buyer": {"nick": "tb_buyer_01", "email": "buyer@example.com"},
        "invoice_request": {"kind": "normal", "title_type": "personal", "title": "个人", "email": "buyer@example.com"},
        "lines": [
            {"line_id": "1", "sku": "CUP-CERAMIC", "name": "手工陶瓷杯", "unit": "个", "quantity": "2",
             "unit_price": "99.00", "tax_code": "1060502990000000000", "tax_rate": "0.13"},
            {"line_id": "2", "sku": "BOOK-PY", "name": "Python编程", "unit": "本", "quantity": "1",
             "unit_price": "59.90", "tax_code": "1060201010000000000", "tax_rate": "0.09"},
        ],
        "shipping_fee": "10.00",
        "order_discount": "20.00",
        "paid_amount": "247.90",
    }
    doc.update(overrides)
    return doc


def gen_merchant_rows(session: Session, name: str | None = None) -> dict[str, int]:
    """A merchant with one row in each table a merchant-scoped user may see (seller entity, shop,
    SKU mapping, order, invoice request, invoice); returns their ids by admin endpoint."""
    merchant = gen_merchant(session, name)
    seller = gen_seller(session, merchant, name=f"{merchant.name}销售方")
    shop = gen_shop(session, merchant, seller=seller, name=f"{merchant.name}的店")
    if session.get(TaxCode, "1060502990000000000") is None:
        session.add(TaxCode(code="1060502990000000000", name="其他工艺品", short_name="工艺品", rates=["0.13"]))
        session.flush()  # before the mapping that refers to it (no relationship orders the inserts)
    mapping = SkuTaxMapping(merchant_id=merchant.id, match_kind="sku", match_value=f"SKU-{next(_seq)}",
                            tax_code="1060502990000000000", tax_rate=Decimal("0.13"))
    doc = gen_order_doc(shop_code=shop.shop_code)
    order = Order(platform=shop.platform, shop_code=shop.shop_code, order_no=doc["order_id"], shop_id=shop.id,
                  status="received", document=doc, document_hash=f"hash-{next(_seq)}")
    session.add_all([mapping, order])
    session.flush()
    request = InvoiceRequest(order_pk=order.id, title_type="enterprise", title=f"{merchant.name}的买家",
                             status="held", status_reason="held for a test")
    session.add(request)
    session.flush()
    invoice = Invoice(request_id=request.id, order_pk=order.id, status="failed", serial_no=f"KP{next(_seq):018d}",
                      buyer={"title_type": "personal", "name": "个人"},
                      seller={"name": merchant.name, "tax_id": "91110000600037341L"},
                      total_amount=Decimal("100.00"), total_tax=Decimal("13.00"), total=Decimal("113.00"))
    session.add(invoice)
    session.flush()
    return {"merchants": merchant.id, "sellers": seller.id, "shops": shop.id, "sku_mappings": mapping.id,
            "orders": order.id, "requests": request.id, "invoices": invoice.id}
