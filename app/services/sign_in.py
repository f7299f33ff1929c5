"""Signing in with a password, throttled per username and per client address.

- Every attempt is first recorded as a failure and committed (its own short transaction),
  then the password is checked: concurrent guesses from other web processes count at once,
  not after their hashes are computed. (On PostgreSQL attempts whose few-millisecond
  transactions overlap may both pass; on SQLite those transactions take turns.)
- A username, or an address, is locked when its last ``max_failures`` failures fall within
  ``failure_window``; the lock lasts ``lockout`` after the newest of them. While locked, no
  password is checked and nothing more is recorded (the lock does not grow).
- Unknown usernames are throttled, answered and timed like known ones: a password hash is
  checked in every path (a dummy one for unknown users), and the caller gets the same result.
- Success deletes the username's failures (not the address's: one good account must not
  reset an address spraying others), records the login and opens a server-side session.

State: ``login_failure`` rows inserted / deleted / pruned; ``user_session`` opened; each lock
reached is written to the admin audit log (action ``login_locked``, target ``user NAME`` or
``address IP``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from app import db
from app.engine.clock import utcnow
from app.models.audit import AdminAuditLog
from app.models.login_failure import LoginFailure
from app.models.user import User
from app.services import user_sessions
from app.settings import LoginPolicy


@dataclass(frozen=True)
class SignInResult:
    user_id: int | None = None  # signed in
    session_token: str | None = None  # the new server-side session's token, for the cookie
    locked_until: datetime | None = None  # too many failures: locked until then
    retry_after: timedelta | None = None  # ... which is this long from the attempt

    @property
    def ok(self) -> bool:
        return self.user_id is not None


@cache
def _dummy_hash() -> str:
    # Made like real ones (werkzeug's current default), so checking it costs what they cost;
    # made on first use, not at start-up, which every CLI command and test would pay for.
    return generate_password_hash(secrets.token_urlsafe(16))


def password_matches(stored_hash: str | None, password: str) -> bool:
    """The one password check of signing in; an unknown user (None) is checked against a dummy
    hash, so it takes as long as a known user's wrong password."""
    return check_password_hash(stored_hash or _dummy_hash(), password) and stored_hash is not None


def sign_in(username: str, password: str, policy: LoginPolicy, *, address: str | None = None,
            user_agent: str | None = None, now: datetime | None = None) -> SignInResult:
    """Check ``username``/``password`` from ``address``, throttled; works in its own transactions."""
    now = now or utcnow()
    name = _text(username.strip(), 80)
    address = address[:45] if address else None
    with db.transaction() as session:
        locked = locked_until(session, policy, name, address, now)
        if locked is not None:
            return _locked(locked, now)
        session.add(LoginFailure(at=now, username=name, address=address))
        found = session.execute(select(User.id, User.password_hash, User.active).where(User.username == name)).first()

    # Outside any transaction: on SQLite a write transaction holds the database's one write lock.
    stored_hash = found.password_hash if found is not None else None
    matches = password_matches(stored_hash, password)

    with db.transaction() as session:
        if found is not None and matches and found.active:
            user = session.get(User, found.id)
            if user is not None and user.active and user.password_hash == stored_hash:  # unchanged meanwhile
                session.execute(delete(LoginFailure).where(LoginFailure.username == name))
                user.last_login_at = now
                token = user_sessions.open_session(session, user, policy, ip=address, user_agent=user_agent,
                                                   now=now)
                return SignInResult(user_id=user.id, session_token=token)
        # Rows older than a window plus a lockout cannot lock anything any more.
        session.execute(delete(LoginFailure).where(LoginFailure.at < now - policy.failure_window - policy.lockout))
        locked = locked_until(session, policy, name, address, now)
        if locked is not None:
            _audit_lock(session, policy, name, address, now)
            return _locked(locked, now)
        return SignInResult()


def _text(value: str, size: int) -> str:
    # As typed, but storable: PostgreSQL text refuses NUL (no username has one).
    return value.replace("\x00", "\ufffd")[:size]


def _locked(until: datetime, now: datetime) -> SignInResult:
    return SignInResult(locked_until=until, retry_after=until - now)


def locked_until(session: Session, policy: LoginPolicy, username: str, address: str | None,
                 now: datetime) -> datetime | None:
    """When the lock on ``username`` or on ``address`` ends (the later), or None if neither is locked."""
    ends = [_lock_end(session, policy, LoginFailure.username == username, policy.max_failures, now)]
    if address is not None:
        ends.append(_lock_end(session, policy, LoginFailure.address == address, policy.max_failures_per_address,
                              now))
    return max((end for end in ends if end is not None), default=None)


def _lock_end(session: Session, policy: LoginPolicy, key: ColumnElement[bool], limit: int,
              now: datetime) -> datetime | None:
    if limit <= 0:
        return None  # this throttle is off
    recent = list(session.scalars(select(LoginFailure.at).where(key).order_by(LoginFailure.at.desc()).limit(limit)))
    if len(recent) < limit or recent[0] - recent[-1] > policy.failure_window:
        return None
    end = recent[0] + policy.lockout
    return end if now < end else None


def _audit_lock(session: Session, policy: LoginPolicy, username: str, address: str | None,
                now: datetime) -> None:
    # Neither key was locked before this attempt (it would have been refused unrecorded), so
    # a lock now is new: one row per lock. Unknown usernames alike (no difference in timing).
    scopes = [(f"user {username}", LoginFailure.username == username, policy.max_failures)]
    if address is not None:
        scopes.append((f"address {address}", LoginFailure.address == address, policy.max_failures_per_address))
    for target, key, limit in scopes:
        until = _lock_end(session, policy, key, limit, now)
        if until is not None:
            session.add(AdminAuditLog(at=now, username="anonymous", action="login_locked", target=target,
                                      details={"failures": limit, "until": until.isoformat()}, ip=address))
