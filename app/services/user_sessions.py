"""Server-side login sessions (app/models/user_session.py): opened at login, checked on every
request that carries a session cookie, revoked at logout and when the user's password changes
or it is deactivated. The web layer keeps only the token in its signed cookie.

State: a ``user_session`` row goes open → revoked (``revoked_at`` set once) or simply expires
(``expires_at`` passed, or unused for the idle timeout); rows a week past their end are pruned.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app import db
from app.engine.clock import utcnow
from app.models.user import User
from app.models.user_session import UserSession
from app.settings import LoginPolicy

# last_seen_at is written at most this often per session: not one write per page view.
TOUCH_EVERY = timedelta(minutes=1)
KEEP_ENDED = timedelta(days=7)  # ended rows stay this long for whoever looks into a login


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, user: User, policy: LoginPolicy, *, ip: str | None = None,
                 user_agent: str | None = None, now: datetime | None = None) -> str:
    """A new session row for ``user`` (in ``session``, not committed); returns its token, which
    only the client keeps. Sessions ended long ago are pruned on the way."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(UserSession(token_hash=_hash(token), user_id=user.id, created_at=now, last_seen_at=now,
                            expires_at=now + policy.session_lifetime, ip=ip,
                            user_agent=(user_agent or "").replace("\x00", "\ufffd")[:200] or None))
    session.execute(delete(UserSession).where(UserSession.expires_at < now - KEEP_ENDED))
    return token


def user_for_session(session: Session, token: str, user_id: int, policy: LoginPolicy,
                     now: datetime | None = None) -> User | None:
    """The active user whose live (not revoked, not expired, not idle) session ``token`` is,
    if it is user ``user_id``'s; else None. Records that the session was used (own transaction)."""
    now = now or utcnow()
    row = session.scalar(select(UserSession).where(UserSession.token_hash == _hash(token)))
    if row is None or row.user_id != user_id or not _alive(row, policy, now):
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        # In its own short transaction: the request's session may hold the view's changes.
        with db.transaction() as touch:
            touch.execute(update(UserSession).where(UserSession.id == row.id).values(last_seen_at=now))
    return user


def _alive(row: UserSession, policy: LoginPolicy, now: datetime) -> bool:
    return (row.revoked_at is None and now < row.expires_at
            and now < row.last_seen_at + policy.session_idle_timeout)


def revoke(session: Session, token: str, reason: str = "logout", now: datetime | None = None) -> bool:
    """End the session ``token`` (logout); False if it was not open. Not committed."""
    result = session.execute(
        update(UserSession).where(UserSession.token_hash == _hash(token), UserSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow(), revoked_reason=reason))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_all(session: Session, user_id: int, reason: str, now: datetime | None = None) -> int:
    """End every open session of user ``user_id`` (password changed, deactivated); how many.
    Not committed."""
    result = session.execute(
        update(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow(), revoked_reason=reason))
    return int(result.rowcount)  # type: ignore[attr-defined]
