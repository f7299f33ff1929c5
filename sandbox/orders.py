"""Realistic random orders for the demo and the benchmarks (contract documents), and the demo
feed that sends them through intake (``kaipiao orders generate``)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from stdnum.cn import uscc

PRODUCTS = (
    # sku, name, unit, price, tax code, rate
    ("CUP-CERAMIC", "手工陶瓷杯", "个", "99.00", "1060502990000000000", "0.13"),
    ("BOOK-PY", "Python编程", "本", "59.90", "1060201010000000000", "0.09"),
    ("PHONE-M16", "魅族16 8+128GB", "台", "2698.00", "1090505000000000000", "0.13"),
    ("RICE-5KG", "五常大米 5kg", "袋", "69.90", "1030102010100000000", "0.09"),
    ("TEA-LJ", "西湖龙井 250g", "盒", "328.00", "1010116010000000000", "0.09"),
    ("CAKE-BOX", "手工糕点礼盒", "盒", "128.00", "1030201010000000000", "0.13"),
    ("PEN-FOUNT", "钢笔", "支", "45.50", "1060402010100000000", "0.13"),
    ("CHAIR-OAK", "橡木餐椅", "把", "899.00", "1050201010000000000", "0.13"),
)
COMPANIES = ("上海某科技有限公司", "北京示例贸易有限公司", "杭州测试网络有限公司", "深圳样例电子有限公司")
STATUSES = ("paid", "shipped", "received", "received", "received", "completed")


def valid_uscc(rng: random.Random) -> str:
    body = "91" + f"{rng.randint(110000, 659000):06d}" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY")
                                                                  for _ in range(9))
    return body + uscc.calc_check_digit(body)


def random_order(rng: random.Random, platform: str, shop_code: str, order_id: str,
                 now: datetime | None = None, max_lines: int = 5) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    paid = now - timedelta(days=rng.randint(1, 6), minutes=rng.randint(0, 600))
    status = rng.choice(STATUSES)
    doc: dict[str, Any] = {"platform": platform, "shop_id": shop_code, "order_id": order_id, "status": status,
                           "paid_at": paid.isoformat(timespec="seconds")}
    latest = now - timedelta(minutes=1)  # nothing happens in the future
    shipped = min(paid + timedelta(hours=rng.randint(2, 30)), latest)
    received = min(shipped + timedelta(days=1, hours=rng.randint(0, 20)), latest)
    if status in ("shipped", "received", "completed"):
        doc["shipped_at"] = shipped.isoformat(timespec="seconds")
    if status in ("received", "completed"):
        doc["received_at"] = received.isoformat(timespec="seconds")
    lines = []
    for index, (sku, name, unit, price, code, rate) in enumerate(rng.sample(PRODUCTS, rng.randint(1, max_lines)), 1):
        line: dict[str, Any] = {"line_id": str(index), "sku": sku, "name": name, "unit": unit,
                "quantity": str(rng.choice((1, 1, 1, 2, 3))), "unit_price": price, "tax_code": code, "tax_rate": rate}
        if rng.random() < 0.2:
            line["discount"] = str((Decimal(price) * Decimal("0.1")).quantize(Decimal("0.01")))
        lines.append(line)
    if rng.random() < 0.15:
        sku, name, unit, price, code, rate = rng.choice(PRODUCTS)
        lines.append({"line_id": "gift", "sku": sku, "name": name, "unit": unit, "quantity": "1",
                      "unit_price": price, "is_gift": True, "tax_code": code, "tax_rate": rate})
    doc["lines"] = lines
    if rng.random() < 0.5:
        doc["shipping_fee"] = rng.choice(("6.00", "8.00", "10.00", "12.00"))
    goods = sum(Decimal(li["unit_price"]) * Decimal(li["quantity"]) - Decimal(li.get("discount", "0"))
                for li in lines if not li.get("is_gift"))
    if rng.random() < 0.3 and goods > 50:
        doc["order_discount"] = rng.choice(("5.00", "10.00", "20.00"))
    roll = rng.random()
    if roll < 0.6:
        doc["invoice_request"] = {"kind": "normal", "title_type": "personal", "title": "个人",
                                  "email": "buyer@example.com"}
    elif roll < 0.85:
        doc["invoice_request"] = {"kind": "special" if rng.random() < 0.3 else "normal",
                                  "title_type": "enterprise", "title": rng.choice(COMPANIES),
                                  "tax_id": valid_uscc(rng), "email": "finance@example.com"}
    doc["buyer"] = {"nick": f"buyer{rng.randint(1, 99999)}", "email": "buyer@example.com"}
    return doc


def run_generator(*, rate: float, count: int, shops: list[str], seed: int | None,
                  echo: Callable[[str], None] = print) -> int:
    """Feed orders into intake at ``rate`` per second (batched per 100 ms)."""
    from sqlalchemy import select

    from app import db
    from app.models import Shop
    from app.services.intake import ingest
    from app.services.unit_of_work import unit_of_work

    rng = random.Random(seed)
    with db.transaction() as session:
        rows = session.execute(select(Shop.platform, Shop.shop_code).where(Shop.active.is_(True))).all()
    targets = [tuple(s.split(":", 1)) for s in shops] or [(r.platform, r.shop_code) for r in rows]
    if not targets:
        raise RuntimeError("no active shops to generate orders for")
    sent = 0
    start = time.monotonic()
    prefix = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    while count == 0 or sent < count:
        due = int((time.monotonic() - start) * rate) + 1
        batch = min(due - sent, (count - sent) if count else due - sent)
        if batch <= 0:
            time.sleep(0.02)
            continue
        docs = []
        for _ in range(batch):
            platform, shop_code = rng.choice(targets)
            sent += 1
            docs.append(random_order(rng, platform, shop_code, f"G{prefix}{sent:07d}"))
        with unit_of_work() as work:
            result = ingest(work, docs, source="generator")
        for item in result.rejected:
            echo(f"rejected {item['key']}: {item['errors']}")
    return sent
