"""Rule-set versions in the database: drafts, publishing, rollback, lookup, shipped defaults, scopes.

Versions are append-only (app.models.rules): every service here *adds* a RuleSetVersion and never
edits one. The published version of a rule set is its newest version with ``published`` set.
Functions flush but never commit: the caller owns the transaction. Two concurrent writers on one
rule set collide on the (rule_set_id, number) unique key; the loser's transaction fails and can
be retried.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import InvalidTransition, Problem, ValidationFailed
from app.models.merchant import Shop
from app.models.rules import RuleSet, RuleSetVersion
from app.rules import ruleset as ruleset_module
from app.rules.ruleset import compile_ruleset, document_hash, load_ruleset_file, rules_dir
from app.rules.validate import validate_ruleset

SHIPPED_AUTHOR = "kaipiao"


def get_or_create_rule_set(
    session: Session, name: str, *, merchant_id: int | None = None, shop_id: int | None = None
) -> RuleSet:
    """The rule set named ``name`` at this scope (merchant None = shipped, shop set = per shop)."""
    query = select(RuleSet).where(
        RuleSet.name == name, _is(RuleSet.merchant_id, merchant_id), _is(RuleSet.shop_id, shop_id)
    )
    found = session.scalars(query).first()
    if found is None:
        found = RuleSet(name=name, merchant_id=merchant_id, shop_id=shop_id)
        session.add(found)
        session.flush()
    return found


def save_draft(
    session: Session, rule_set: RuleSet, document: dict[str, Any], author: str, comment: str | None = None
) -> RuleSetVersion:
    """Append a draft version (not live). Raises ValidationFailed, with every problem, for an
    invalid document: nothing is saved then."""
    problems = validate_ruleset(document)
    if problems:
        raise ValidationFailed(problems)
    return _append(session, rule_set, "draft", False, None, document, author, comment)


def publish(
    session: Session, rule_set: RuleSet, version_number: int, author: str, comment: str | None = None
) -> RuleSetVersion:
    """Make version ``version_number`` live: appends a ``publish`` version copying its document
    (draft → published). The document is validated and compiled again first, so a version that
    became invalid (or that the engine refuses) is never published."""
    source = _version(session, rule_set, version_number)
    problems = validate_ruleset(source.document)
    if problems:
        raise ValidationFailed(problems)
    compile_ruleset(source.document)  # registers it in this process now; other processes on first use
    return _append(session, rule_set, "publish", True, source.number, source.document, author, comment)


def rollback(
    session: Session, rule_set: RuleSet, to_version: int, author: str, comment: str | None = None
) -> RuleSetVersion:
    """Make a previously published version live again: appends a ``rollback`` version copying it.
    Raises InvalidTransition for a version that was never published or is already live."""
    target = _version(session, rule_set, to_version)
    if not target.published:
        raise InvalidTransition(
            Problem(
                "to_version",
                "never_published",
                f"version {to_version} was never published; publish it instead",
            )
        )
    live = current_version(session, rule_set)
    if live is not None and live.document_hash == target.document_hash:
        raise InvalidTransition(
            Problem("to_version", "already_live", f"version {to_version} is what is published now")
        )
    problems = validate_ruleset(target.document)
    if problems:
        raise ValidationFailed(problems)
    compile_ruleset(target.document)
    return _append(session, rule_set, "rollback", True, target.number, target.document, author, comment)


def current_version(session: Session, rule_set: RuleSet) -> RuleSetVersion | None:
    """The live version of one rule set (None: never published)."""
    query = (
        select(RuleSetVersion)
        .where(RuleSetVersion.rule_set_id == rule_set.id, RuleSetVersion.published.is_(True))
        .order_by(RuleSetVersion.number.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def published_version(
    session: Session, merchant_id: int | None, shop_id: int | None
) -> RuleSetVersion | None:
    """The version that decides a shop's orders: the shop's own override, else the merchant's,
    else the shipped default loaded into the database; None when none is published (callers then
    use the shipped file, app.rules.default_ruleset). With several rule sets at one scope, the
    most recently published one wins."""
    scopes: list[tuple[int | None, int | None]] = []
    if merchant_id is not None and shop_id is not None:
        scopes.append((merchant_id, shop_id))
    if merchant_id is not None:
        scopes.append((merchant_id, None))
    scopes.append((None, None))
    for scope_merchant, scope_shop in scopes:
        query = (
            select(RuleSetVersion)
            .join(RuleSet)
            .where(
                _is(RuleSet.merchant_id, scope_merchant),
                _is(RuleSet.shop_id, scope_shop),
                RuleSetVersion.published.is_(True),
            )
            .order_by(RuleSetVersion.id.desc())
        )
        for candidate in session.scalars(query):
            # newest published version of its rule set = that set's live version
            live = current_version(session, candidate.rule_set)
            if live is not None and live.id == candidate.id:
                return candidate
    return None


def load_shipped_defaults(session: Session, directory: Path | None = None) -> list[RuleSetVersion]:
    """Publish every rule set shipped in rules/ as a merchant-less rule set. Idempotent: a file
    whose document is already what is published adds nothing. Returns the versions added."""
    added: list[RuleSetVersion] = []
    for path in sorted((directory or rules_dir()).glob("*.yaml")) + sorted(
        (directory or rules_dir()).glob("*.json")
    ):
        doc = load_ruleset_file(path)
        problems = validate_ruleset(doc)
        if problems:
            raise ValidationFailed([Problem(f"{path.name}:{p.path}", p.code, p.message) for p in problems])
        rule_set = get_or_create_rule_set(session, doc["name"])
        live = current_version(session, rule_set)
        if live is not None and live.document_hash == document_hash(doc):
            continue
        draft = save_draft(session, rule_set, doc, SHIPPED_AUTHOR, f"shipped {path.name}")
        added += [draft, publish(session, rule_set, draft.number, SHIPPED_AUTHOR, f"shipped {path.name}")]
    return added


def shipped_default_document(session: Session) -> dict[str, Any]:
    """What a new rule set starts from: the live shipped default in the database, else the file."""
    version = published_version(session, None, None)
    if version is not None:
        return copy.deepcopy(version.document)
    return load_ruleset_file(rules_dir() / ruleset_module.DEFAULT_FILE)


def scope_level(rule_set: RuleSet) -> int:
    """How specific a rule set is: 2 per shop, 1 per merchant, 0 shipped (published_version's order)."""
    if rule_set.shop_id is not None:
        return 2
    return 1 if rule_set.merchant_id is not None else 0


def covers(rule_set: RuleSet, shop: Shop) -> bool:
    """Whether published_version would consider ``rule_set`` for ``shop`` at all."""
    level = scope_level(rule_set)
    if level == 2:
        return rule_set.shop_id == shop.id and rule_set.merchant_id == shop.merchant_id
    if level == 1:
        return rule_set.merchant_id == shop.merchant_id
    return True


def applies_to(session: Session, shops: Iterable[Shop]) -> dict[int, list[Shop]]:
    """rule_set.id -> the shops whose orders it decides now (its live version wins for them)."""
    out: dict[int, list[Shop]] = {}
    for shop in shops:
        version = published_version(session, shop.merchant_id, shop.id)
        if version is not None:
            out.setdefault(version.rule_set_id, []).append(shop)
    return out


def _append(
    session: Session,
    rule_set: RuleSet,
    action: str,
    published: bool,
    based_on: int | None,
    document: dict[str, Any],
    author: str,
    comment: str | None,
) -> RuleSetVersion:
    last = session.scalar(
        select(func.max(RuleSetVersion.number)).where(RuleSetVersion.rule_set_id == rule_set.id)
    )
    version = RuleSetVersion(
        rule_set=rule_set,
        number=(last or 0) + 1,
        action=action,
        published=published,
        based_on=based_on,
        document=copy.deepcopy(document),  # JSON columns don't track in-place changes: never share
        document_hash=document_hash(document),
        comment=comment,
        author=author,
    )
    session.add(version)
    session.flush()
    return version


def _version(session: Session, rule_set: RuleSet, number: int) -> RuleSetVersion:
    found = session.scalars(
        select(RuleSetVersion).where(
            RuleSetVersion.rule_set_id == rule_set.id, RuleSetVersion.number == number
        )
    ).first()
    if found is None:
        raise ValidationFailed(Problem("version", "not_found", f"{rule_set.name} has no version {number}"))
    return found


def _is(column, value):
    return column.is_(None) if value is None else column == value
