"""People's accounts: creating users, changing passwords, deactivating, API tokens. Signing
in is app/services/sign_in.py; login sessions app/services/user_sessions.py."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Problem, Refused, ValidationFailed
from app.models.merchant import Merchant
from app.models.user import MERCHANT_ROLES, ROLES, User, is_merchant_scoped
from app.services import user_sessions


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, username: str, roles: list[str], password: str,
                merchant_id: int | None = None) -> User:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValidationFailed(Problem("roles", "unknown_role", f"unknown roles {', '.join(unknown)}"))
    check_merchant(session, roles, merchant_id)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Refused("exists", f"user {username!r} exists", username=username)
    user = User(username=username, roles=list(roles), merchant_id=merchant_id)
    try:
        user.set_password(password)
    except ValueError as exc:
        raise ValidationFailed(Problem("password", "too_short", str(exc))) from None
    session.add(user)
    return user


def check_merchant(session: Session, roles: list[str], merchant_id: int | None) -> None:
    """A merchant-scoped user (merchant, cs_agent and no global role) needs an existing merchant:
    without one it could see nothing, and a wrong one would show it another merchant's data."""
    if merchant_id is None:
        if roles and is_merchant_scoped(roles):
            raise ValidationFailed(Problem(
                "merchant_id", "required",
                f"the roles {', '.join(r for r in roles if r in MERCHANT_ROLES)} need a merchant: they see and "
                "write only their own merchant's shops, orders and invoices"))
        return
    if session.get(Merchant, merchant_id) is None:
        raise ValidationFailed(Problem("merchant_id", "not_found", f"no merchant {merchant_id}"))


def change_password(session: Session, user: User, password: str) -> None:
    """Set ``user``'s password (ValueError if too short) and end its open sessions: whoever had
    a copy of a session cookie must log in again, with the new password. Not committed."""
    user.set_password(password)
    if user.id is not None:
        user_sessions.revoke_all(session, user.id, "password")


def deactivate(session: Session, user: User) -> None:
    """``user`` can no longer log in or use its sessions (ended here) or its API token. Not committed."""
    user.active = False
    if user.id is not None:
        user_sessions.revoke_all(session, user.id, "deactivated")


def issue_api_token(user: User) -> str:
    """A new API token for ``user`` (the old one stops working); only its hash is kept."""
    token = "kp_" + secrets.token_urlsafe(32)
    user.api_token_hash = hash_token(token)
    return token


def user_for_token(session: Session, token: str) -> User | None:
    user = session.scalar(select(User).where(User.api_token_hash == hash_token(token.strip())))
    return user if user is not None and user.active else None
