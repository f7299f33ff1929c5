"""Who is confined to one merchant: the merchant role and customer service (cs_agent) are, and
every way of making such a user (service, CLI, demo seed) gives it a merchant."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.errors import ValidationFailed
from app.models import User
from app.models.user import NO_MERCHANT
from app.services.accounts import create_user
from app.services.demo_seed import demo_logins, seed_demo
from tests.factories import gen_merchant


@pytest.mark.parametrize(("roles", "merchant_id", "scope"), [
    (["merchant"], 7, 7),
    (["cs_agent"], 7, 7),
    (["cs_agent"], None, NO_MERCHANT),  # older accounts: confined to nothing, never to everything
    (["cs_agent", "operations"], None, None),
    (["admin"], None, None),
    (["tax_specialist"], 7, None),
    (["auditor"], None, None),
    ([], None, NO_MERCHANT),
])
def test_merchant_scope(roles, merchant_id, scope):
    assert User(username="u", roles=roles, merchant_id=merchant_id).merchant_scope() == scope


@pytest.mark.parametrize("role", ["merchant", "cs_agent"])
def test_scoped_roles_need_a_merchant(db_session, role):
    with pytest.raises(ValidationFailed) as missing:
        create_user(db_session, f"{role}-1", [role], "correct-horse-battery")
    assert missing.value.problems[0].path == "merchant_id"
    with pytest.raises(ValidationFailed) as unknown:
        create_user(db_session, f"{role}-2", [role], "correct-horse-battery", merchant_id=424242)
    assert unknown.value.problems[0].code == "not_found"
    merchant = gen_merchant(db_session)
    assert create_user(db_session, f"{role}-3", [role], "correct-horse-battery", merchant.id).merchant_id == merchant.id
    # With a global role beside it the user is global: no merchant needed.
    create_user(db_session, f"{role}-4", [role, "operations"], "correct-horse-battery")


def test_cli_users_create_needs_a_merchant_for_cs_agent(runner, db_session):
    from app.cli.core import users_group

    result = runner.invoke(users_group, ["create", "cs1", "--role", "cs_agent", "--password", "correct-horse-1"])
    assert result.exit_code != 0 and "--merchant-id" in result.output
    merchant = gen_merchant(db_session)
    db_session.commit()
    result = runner.invoke(users_group, ["create", "cs1", "--role", "cs_agent", "--password", "correct-horse-1",
                                         "--merchant-id", str(merchant.id)])
    assert result.exit_code == 0, result.output
    db_session.rollback()
    assert db_session.scalar(select(User.merchant_id).where(User.username == "cs1")) == merchant.id


def test_demo_scoped_logins_belong_to_the_demo_merchant(db_session):
    merchant = seed_demo(db_session, demo_logins())
    # Demo data made before cs_agent was confined: the next seed gives it the demo merchant.
    agent = db_session.scalar(select(User).where(User.username == "demo_cs_agent"))
    agent.merchant_id = None
    seed_demo(db_session, demo_logins())
    users = {u.username: u for u in db_session.scalars(select(User))}
    assert users["demo_merchant"].merchant_id == merchant.id
    assert users["demo_cs_agent"].merchant_id == merchant.id
    assert all(users[f"demo_{r}"].merchant_scope() is None
               for r in ("admin", "tax_specialist", "operations", "auditor"))
