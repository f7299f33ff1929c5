"""Demo data: a merchant with two seller entities, shops on four platforms, one login per role.

Idempotent: running it twice changes nothing (existing users keep their passwords).
The published demo passwords (``demo_logins``) are only for the demo (``kaipiao run``);
``kaipiao seed`` outside it gives the users passwords asked for or generated
(``generated_logins``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.models import Merchant, SellerEntity, Shop, User
from app.models.user import MERCHANT_ROLES, ROLES
from app.services import accounts

DEMO_MERCHANT = "杭州青禾电子商务有限公司"
DEMO_SHOPS = (
    ("tmall", "demo-tmall", "青禾天猫旗舰店"),
    ("jd", "demo-jd", "青禾京东自营店"),
    ("pdd", "demo-pdd", "青禾拼多多店"),
    ("douyin", "demo-douyin", "青禾抖音小店"),
    ("offline", "demo-offline", "青禾线下门店"),
)
# The demo prints these and the README's quick start relies on them: demo mode only.
DEMO_PASSWORD_SUFFIX = "-demo-2026"


@dataclass(frozen=True)
class DemoLogin:
    role: str
    username: str
    password: str


def demo_username(role: str) -> str:
    return f"demo_{role}"


def demo_logins() -> list[DemoLogin]:
    """The demo's published logins (printed by ``kaipiao run``; anyone can read them)."""
    return [DemoLogin(role, demo_username(role), published_password(role)) for role in ROLES]


def published_password(role: str) -> str:
    return f"{role}{DEMO_PASSWORD_SUFFIX}"


def _demo_users(session: Session) -> dict[str, User]:
    users = session.query(User).filter(User.username.in_([demo_username(r) for r in ROLES]))
    return {u.username: u for u in users}


def roles_needing_password(session: Session) -> list[str]:
    """The roles whose demo user does not exist yet or still has its published password
    (left by an earlier demo): outside the demo each gets a password of its own."""
    users = _demo_users(session)
    return [role for role in ROLES
            if (user := users.get(demo_username(role))) is None or user.check_password(published_password(role))]


def roles_with_published_password(session: Session) -> list[str]:
    """The roles whose demo user exists with the published password (what the demo may print)."""
    users = _demo_users(session)
    return [role for role in ROLES
            if (user := users.get(demo_username(role))) is not None and user.check_password(published_password(role))]


def generate_password() -> str:
    return secrets.token_urlsafe(12)  # 16 characters, 96 bits


def generated_logins(roles: Sequence[str]) -> list[DemoLogin]:
    return [DemoLogin(role, demo_username(role), generate_password()) for role in roles]


def seed_demo(session: Session, logins: Sequence[DemoLogin], tax_gateway_url: str | None = None) -> Merchant:
    """The demo merchant, its seller entities and shops, and a user for each of ``logins``
    that does not exist yet (with that login's password). A login with a password of its own
    also replaces the published password of an existing demo user; nothing else changes."""
    merchant = session.query(Merchant).filter_by(name=DEMO_MERCHANT).one_or_none()
    if merchant is None:
        merchant = Merchant(name=DEMO_MERCHANT)
        session.add(merchant)
        session.flush()
    main = _seller(session, merchant, "main", DEMO_MERCHANT, "91110000600037341L", default=True,
                   address="杭州市西湖区文三路 1 号", phone="0571-88888888", province="33")
    _seller(session, merchant, "books", "杭州青禾图书有限公司", "91330106MA2B3C4D5D", default=False,
            address="杭州市拱墅区 2 号", phone="0571-66666666", province="33")
    if tax_gateway_url:
        # The sandbox tax service's own defaults (not secrets); stored encrypted like real ones.
        creds = json.dumps({"provider": "sandbox", "url": tax_gateway_url, "app_key": "sandbox-app",
                            "app_secret": "sandbox-secret"})
        for seller in session.query(SellerEntity).filter_by(merchant_id=merchant.id):
            if not seller.tax_credentials:
                seller.tax_credentials = creds
    for platform, code, name in DEMO_SHOPS:
        shop = session.query(Shop).filter_by(platform=platform, shop_code=code).one_or_none()
        if shop is None:
            session.add(Shop(
                merchant_id=merchant.id, seller_entity_id=main.id, platform=platform, shop_code=code,
                name=name, options={"discount_mode": "discount_line", "gift_mode": "discount_line"},
                credentials=json.dumps({"app_key": f"sandbox-{platform}", "app_secret": f"sandbox-secret-{platform}"}),
            ))
    for login in logins:
        user = session.query(User).filter_by(username=login.username).one_or_none()
        if user is None:
            user = User(username=login.username, display_name=f"Demo {login.role}", roles=[login.role])
            user.set_password(login.password)
            session.add(user)
        elif login.password != published_password(login.role) and user.check_password(published_password(login.role)):
            # Whoever logged in with the published password is logged out with it.
            accounts.change_password(session, user, login.password)
        if login.role in MERCHANT_ROLES and user.merchant_id is None:
            user.merchant_id = merchant.id  # confined to the demo merchant (older demo data had none)
    session.flush()
    return merchant


def _seller(session: Session, merchant: Merchant, code: str, name: str, tax_id: str, *, default: bool,
            address: str, phone: str, province: str) -> SellerEntity:
    seller = session.query(SellerEntity).filter_by(merchant_id=merchant.id, code=code).one_or_none()
    if seller is None:
        seller = SellerEntity(merchant_id=merchant.id, code=code, name=name, tax_id=tax_id, is_default=default,
                              address=address, phone=phone, province_code=province)
        session.add(seller)
        session.flush()
    return seller
