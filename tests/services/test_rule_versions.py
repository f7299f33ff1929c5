"""DB-backed versions, on an in-memory SQLite schema built here (the migrations are elsewhere)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import app.models  # noqa: F401  (registers every mapper on Base.metadata)
from app.db import Base
from app.errors import InvalidTransition, ValidationFailed
from app.models import Merchant, RuleSetVersion, Shop
from app.rules import compile_ruleset, decide, load_ruleset_file, rules_dir
from app.rules.document import diff
from app.rules.engine import get_evaluator
from app.services.rule_versions import (
    current_version,
    get_or_create_rule_set,
    load_shipped_defaults,
    publish,
    published_version,
    rollback,
    save_draft,
)
from tests.rules.helpers import NOW, gen_order, rule, ruleset


@pytest.fixture()
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


@pytest.fixture()
def shop(session: Session) -> Shop:
    merchant = Merchant(name="陶瓷小店")
    session.add(merchant)
    session.flush()
    shop = Shop(merchant_id=merchant.id, platform="tmall", shop_code="demo-tmall", name="天猫店")
    other = Shop(merchant_id=merchant.id, platform="jd", shop_code="demo-jd", name="京东店")
    session.add_all([shop, other])
    session.flush()
    return shop


def hold_doc(name: str = "merchant-rules") -> dict:
    return ruleset(rule("hold-all", 1, [{"action": "hold", "reason": "check"}]), name=name)


def issue_doc(name: str = "merchant-rules") -> dict:
    return ruleset(rule("issue-all", 1, [{"action": "issue"}]), name=name)


def test_save_draft_validates_and_is_not_live(session: Session, shop: Shop) -> None:
    rs = get_or_create_rule_set(session, "merchant-rules", merchant_id=shop.merchant_id)
    with pytest.raises(ValidationFailed) as err:
        save_draft(session, rs, ruleset(rule("a", 1, [{"action": "explode"}])), "alice")
    assert err.value.problems[0].code == "unknown_action"
    assert session.scalars(select(RuleSetVersion)).all() == []
    draft = save_draft(session, rs, hold_doc(), "alice", "first try")
    assert (draft.number, draft.action, draft.published, draft.author) == (1, "draft", False, "alice")
    assert len(draft.document_hash) == 64
    assert current_version(session, rs) is None
    assert published_version(session, shop.merchant_id, shop.id) is None


def test_publish_and_rollback_append_versions(session: Session, shop: Shop) -> None:
    rs = get_or_create_rule_set(session, "merchant-rules", merchant_id=shop.merchant_id)
    d1 = save_draft(session, rs, hold_doc(), "alice")
    p2 = publish(session, rs, d1.number, "bob", "go live")
    assert (p2.number, p2.action, p2.published, p2.based_on) == (2, "publish", True, 1)
    assert d1.published is False and d1.action == "draft"  # never edited
    d3 = save_draft(session, rs, issue_doc(), "alice")
    assert current_version(session, rs).number == 2  # a draft does not change what is live
    p4 = publish(session, rs, d3.number, "bob")
    assert current_version(session, rs).number == 4
    with pytest.raises(InvalidTransition, match="never published"):
        rollback(session, rs, 3, "bob")
    with pytest.raises(InvalidTransition, match="published now"):
        rollback(session, rs, 4, "bob")
    r5 = rollback(session, rs, 2, "carol", "issue-all was wrong")
    assert (r5.number, r5.action, r5.published, r5.based_on) == (5, "rollback", True, 2)
    assert r5.document == p2.document and r5.document_hash == p2.document_hash
    assert current_version(session, rs).id == r5.id
    assert [v.number for v in session.scalars(select(RuleSetVersion).order_by(RuleSetVersion.number))] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert p4.label == "merchant-rules@v4"
    with pytest.raises(ValidationFailed, match="no version 9"):
        publish(session, rs, 9, "bob")


def test_lookup_shop_beats_merchant_beats_shipped(session: Session, shop: Shop) -> None:
    assert load_shipped_defaults(session)  # shipped default in the DB, merchant-less
    shipped = published_version(session, shop.merchant_id, shop.id)
    assert shipped is not None and shipped.rule_set.name == "default" and shipped.rule_set.merchant_id is None

    merchant_rs = get_or_create_rule_set(session, "merchant-rules", merchant_id=shop.merchant_id)
    publish(session, merchant_rs, save_draft(session, merchant_rs, hold_doc(), "alice").number, "alice")
    assert published_version(session, shop.merchant_id, shop.id).rule_set.id == merchant_rs.id
    assert published_version(session, shop.merchant_id, None).rule_set.id == merchant_rs.id

    shop_rs = get_or_create_rule_set(session, "tmall-rules", merchant_id=shop.merchant_id, shop_id=shop.id)
    save_draft(session, shop_rs, issue_doc("tmall-rules"), "alice")
    assert published_version(session, shop.merchant_id, shop.id).rule_set.id == merchant_rs.id  # draft only
    publish(session, shop_rs, 1, "alice")
    assert published_version(session, shop.merchant_id, shop.id).rule_set.id == shop_rs.id
    other_shop_id = shop.id + 1
    assert published_version(session, shop.merchant_id, other_shop_id).rule_set.id == merchant_rs.id
    assert published_version(session, None, None).rule_set.name == "default"


def test_published_version_decides_and_new_versions_apply_at_once(session: Session, shop: Shop) -> None:
    rs = get_or_create_rule_set(session, "merchant-rules", merchant_id=shop.merchant_id)
    publish(session, rs, save_draft(session, rs, hold_doc(), "alice").number, "alice")

    def current_decision():
        version = published_version(session, shop.merchant_id, shop.id)
        return decide(gen_order(), ruleset=compile_ruleset(version.document, label=version.label), now=NOW)

    d = current_decision()
    assert (d.action, d.rules_version) == ("hold", "merchant-rules@v2")
    publish(session, rs, save_draft(session, rs, issue_doc(), "alice").number, "alice")
    d = current_decision()
    assert (d.action, d.rules_version) == ("issue", "merchant-rules@v4")
    rollback(session, rs, 2, "alice")
    assert current_decision().action == "hold"


def test_publish_refuses_a_document_the_engine_refuses(session: Session, shop: Shop, monkeypatch) -> None:
    rs = get_or_create_rule_set(session, "merchant-rules", merchant_id=shop.merchant_id)
    draft = save_draft(session, rs, hold_doc(), "alice")
    monkeypatch.setattr(get_evaluator(), "compile_error", lambda rules: "refused (durable-rules error 501)")
    with pytest.raises(ValidationFailed):
        publish(session, rs, draft.number, "bob")
    monkeypatch.undo()
    assert current_version(session, rs) is None


def test_load_shipped_defaults_is_idempotent(session: Session, tmp_path: Path) -> None:
    first = load_shipped_defaults(session)
    assert [v.action for v in first] == ["draft", "publish"] * len(list(rules_dir().glob("*.yaml")))
    assert load_shipped_defaults(session) == []
    # a changed shipped file publishes a new version of the same rule set
    doc = load_ruleset_file(rules_dir() / "default.yaml")
    doc["description"] = "changed in a release"
    (tmp_path / "default.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    again = load_shipped_defaults(session, tmp_path)
    assert [(v.action, v.number) for v in again] == [("draft", 3), ("publish", 4)]
    assert load_shipped_defaults(session, tmp_path) == []


def test_diff() -> None:
    a = load_ruleset_file(rules_dir() / "default.yaml")
    b = copy.deepcopy(a)
    b["deadlines"]["jd"] = "120h"
    b["rules"] = [r for r in b["rules"] if r["id"] != "skip-refunded"]
    b["rules"][0]["priority"] = 5
    b["rules"][0]["then"][0]["reason"] = "cancelled"
    b["rules"].append(rule("vip", 2, [{"action": "route_seller", "entity": "vip"}]))
    out = diff(a, b)
    assert out["added"] == ["vip"] and out["removed"] == ["skip-refunded"]
    assert [(c["id"], c["fields"]) for c in out["changed"]] == [("skip-cancelled", ["priority", "then"])]
    assert out["changed"][0]["before"]["priority"] == 10 and out["changed"][0]["after"]["priority"] == 5
    assert out["settings"] == ["deadlines"]
    assert diff(a, copy.deepcopy(a)) == {"added": [], "removed": [], "changed": [], "settings": []}
