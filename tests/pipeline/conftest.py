"""Fixtures for pipeline tests: a sandbox tax service in a thread and a configured shop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from app import db
from app.jobs import queues
from app.models import Merchant, SellerEntity, Shop


@dataclass
class Sandbox:
    url: str
    db_path: str

    def faults(self, **patch) -> None:
        requests.post(f"{self.url}/admin/faults", json=patch, timeout=5).raise_for_status()

    def post(self, path: str, body: dict | None = None) -> dict:
        response = requests.post(f"{self.url}{path}", json=body or {}, timeout=5)
        response.raise_for_status()
        return response.json()

    def invoices(self) -> list[tuple]:
        import sqlite3

        conn = sqlite3.connect(self.db_path)
        try:
            return conn.execute("SELECT serial_no, status, number FROM invoices").fetchall()
        finally:
            conn.close()


@pytest.fixture
def sandbox(tmp_path) -> Iterator[Sandbox]:
    from sandbox.tax.runner import run_sandbox_in_thread
    from sandbox.tax.service import SandboxConfig

    path = str(tmp_path / "sandbox.sqlite3")
    url, stop = run_sandbox_in_thread(SandboxConfig(db_path=path, timeout_sleep_ms=1500))
    yield Sandbox(url, path)
    stop()


@pytest.fixture
def shop(db_session, settings, sandbox) -> Shop:
    """A merchant whose seller entity issues through the sandbox."""
    from app import crypto
    from app.services import context as gateways

    crypto.configure(settings.encryption_key)
    queues.configure(settings)
    gateways.use_gateway(None)
    with db.transaction() as session:
        merchant = Merchant(name="流水线测试商户")
        session.add(merchant)
        session.flush()
        seller = SellerEntity(
            merchant_id=merchant.id, code="main", name="流水线测试商户有限公司", tax_id="91110000600037341L",
            is_default=True, tax_credentials=json.dumps({
                "provider": "sandbox", "url": sandbox.url, "app_key": "sandbox-app", "app_secret": "sandbox-secret",
                "read_timeout": 1.0}))
        session.add(seller)
        session.flush()
        shop = Shop(merchant_id=merchant.id, seller_entity_id=seller.id, platform="tmall", shop_code="pipe-shop",
                    name="流水线旗舰店", options={})
        session.add(shop)
    return shop
