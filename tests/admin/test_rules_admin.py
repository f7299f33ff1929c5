"""The rule-set admin (/admin/rules/): roles, drafts, diff, publish / rollback, dry-run, replay."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.models import AdminAuditLog, InvoiceRequest, Order, OutboxMessage
from app.models.rules import RuleSet, RuleSetVersion
from app.rules import document, reference
from app.rules.actions import ACTIONS
from app.rules.facts import FACT_FIELDS, LINE_FIELDS
from app.services import rule_replay, rule_versions
from app.services.intake import ingest
from app.services.rule_versions import current_version, load_shipped_defaults, save_draft
from app.services.unit_of_work import UnitOfWork
from tests.factories import gen_order_doc, gen_shop

URL = "/admin/rules/"


# ----------------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def english(client):
    """Assertions read the English msgids: pages keep them once the Chinese catalog is written."""
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"


@pytest.fixture
def shipped(db_session) -> RuleSet:
    """The shipped default loaded into the database: v1 draft, v2 published."""
    load_shipped_defaults(db_session)
    db_session.commit()
    return db_session.scalars(select(RuleSet).where(RuleSet.merchant_id.is_(None))).one()


def versions_of(session, rule_set_id: int) -> list[RuleSetVersion]:
    session.rollback()  # see what the request committed
    return list(session.scalars(select(RuleSetVersion).where(RuleSetVersion.rule_set_id == rule_set_id)
                                .order_by(RuleSetVersion.number)))


def audit_actions(session) -> list[str]:
    session.rollback()
    return [a.action for a in session.scalars(select(AdminAuditLog).order_by(AdminAuditLog.id))]


def live_document(session, rule_set: RuleSet) -> dict:
    return copy.deepcopy(current_version(session, rule_set).document)


def with_rule(doc: dict, rule: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["rules"].insert(0, rule)
    return doc


HOLD_BIG = {"id": "hold-big-orders", "priority": 5, "when": {"m": {"$gt": {"amount_fen": 100000}}},
            "then": [{"action": "hold", "code": "big_order", "reason": "orders above ¥1000 are checked by hand"}]}


def text_of(response) -> str:
    return response.get_data(as_text=True)


def counts(session) -> tuple[int, int, int, int]:
    session.rollback()
    return (session.scalar(select(func.count()).select_from(InvoiceRequest)),
            session.scalar(select(func.count()).select_from(OutboxMessage)),
            session.scalar(select(func.count()).select_from(RuleSetVersion)),
            session.scalar(select(func.count()).select_from(AdminAuditLog)))


def seed_orders(session, shop, amounts: list[str]) -> list[int]:
    """Stored orders through the intake service, one per unit price of the first line."""
    docs = []
    for i, price in enumerate(amounts):
        doc = gen_order_doc(shop.shop_code, f"R{shop.id:03d}{i:06d}", platform=shop.platform)
        doc["lines"][0]["unit_price"] = price
        doc.pop("paid_amount")  # the price changes what was paid; the contract checks it when given
        docs.append(doc)
    result = ingest(UnitOfWork(session), docs)
    assert not result.rejected, result.rejected
    session.commit()
    return [a["order_pk"] for a in result.accepted]


# ----------------------------------------------------------------------------------- roles


@pytest.mark.parametrize("role,status", [
    ("tax_specialist", 200), ("admin", 200), ("auditor", 200),
    ("operations", 403), ("cs_agent", 403), ("merchant", 403),
])
def test_who_may_open_the_list(client, login, shipped, role, status):
    login(role)
    assert client.get(URL).status_code == status
    assert client.get(f"{URL}{shipped.id}/").status_code == status


def test_anonymous_is_sent_to_login(client, shipped):
    response = client.get(f"{URL}{shipped.id}/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_auditor_reads_but_changes_nothing(client, login, shipped, db_session):
    login("auditor")
    assert client.get(f"{URL}{shipped.id}/diff?a=1&b=2").status_code == 200
    page = client.get(f"{URL}{shipped.id}/v/2/")
    assert page.status_code == 200 and "skip-cancelled" in text_of(page)
    assert "publish-form" not in text_of(client.get(f"{URL}{shipped.id}/"))  # no buttons shown
    before = counts(db_session)
    assert client.get(f"{URL}{shipped.id}/edit").status_code == 403
    for path, data in [
        (f"{shipped.id}/edit", {"document": json.dumps(live_document(db_session, shipped))}),
        (f"{shipped.id}/publish", {"version": "1", "comment": "x"}),
        (f"{shipped.id}/rollback", {"version": "1", "comment": "x"}),
        ("create", {"scope": "merchant:1", "name": "x"}),
        (f"{shipped.id}/v/2/dry-run", {"source": "paste", "order_json": json.dumps(gen_order_doc())}),
        (f"{shipped.id}/v/2/replay", {"n": "10"}),
    ]:
        assert client.post(URL + path, data=data).status_code == 403, path
    assert counts(db_session) == before


@pytest.mark.parametrize("role", ["operations", "cs_agent", "merchant"])
def test_other_roles_cannot_post(client, login, shipped, db_session, role):
    login(role)
    before = counts(db_session)
    assert client.post(f"{URL}{shipped.id}/publish", data={"version": "1", "comment": "x"}).status_code == 403
    assert client.post(f"{URL}{shipped.id}/edit", data={"document": "name: x"}).status_code == 403
    assert counts(db_session) == before


# ----------------------------------------------------------------------------------- list


def test_list_shows_scopes_versions_live_and_shops(client, login, shipped, db_session):
    shop = gen_shop(db_session, name="青禾天猫旗舰店")
    other = gen_shop(db_session, merchant=shop.merchant, platform="jd", name="青禾京东店")
    override = rule_versions.get_or_create_rule_set(db_session, "jd-only", merchant_id=other.merchant_id,
                                                  shop_id=other.id)
    draft = save_draft(db_session, override, live_document(db_session, shipped), "someone", "jd copy")
    rule_versions.publish(db_session, override, draft.number, "someone", "go")
    db_session.commit()
    login("tax_specialist")
    html = text_of(client.get(URL))
    assert "Shipped default (all merchants)" in html and "Per-shop overrides" in html
    # the shipped default decides the tmall shop, the override the jd shop
    cards = re.findall(r'data-rule-set="(\d+)".*?</table>', html, re.S)
    assert cards == [str(shipped.id), str(override.id)]
    shipped_card = html[html.index(f'data-rule-set="{shipped.id}"'):html.index(f'data-rule-set="{override.id}"')]
    assert "青禾天猫旗舰店" in shipped_card and "青禾京东店" not in shipped_card
    assert "shipped default.yaml" in shipped_card and "kaipiao" in shipped_card
    override_card = html[html.index(f'data-rule-set="{override.id}"'):]
    assert "青禾京东店" in override_card and "jd copy" in override_card
    detail = text_of(client.get(f"{URL}{override.id}/"))
    assert 'id="live-number">v2<' in detail
    rows = dict(re.findall(r'data-version="(\d+)">(.*?)</tr>', detail, re.S))
    assert "publish-form" not in rows["2"] and "rollback-form" not in rows["2"]  # live: nothing to do
    assert "same document as the live version" in rows["1"]  # the draft it copies


# ----------------------------------------------------------------------------------- editor


def test_editor_shows_the_document_and_the_generated_reference(client, login, shipped):
    login("tax_specialist")
    html = text_of(client.get(f"{URL}{shipped.id}/edit"))
    assert "skip-cancelled" in html and 'id="reference"' in html
    for name in FACT_FIELDS:
        assert f'data-field="{name}"' in html
    for name in LINE_FIELDS:
        assert f"$i.{name}" in html
    for name, params in ACTIONS.items():
        row = html[html.index(f'data-action="{name}"'):]
        row = row[:row.index("</tr>")]
        for param in params:
            assert f"<code>{param}</code>" in row, (name, param)
    assert "discount_line / allocate / omit" in html  # set_gift_mode's values, read from the check
    assert "&#34;0.13&#34;" in html  # the rates, escaped in the page


def test_every_action_check_describes_itself():
    """A new kind of parameter check must be taught to describe_check, or the reference lies."""
    for name, params in ACTIONS.items():
        for param, (_required, check) in params.items():
            assert reference.describe_check(check), (name, param)


def test_save_draft_from_yaml_appends_an_unpublished_version(client, login, shipped, db_session):
    login("tax_specialist")
    doc = live_document(db_session, shipped)
    doc["rules"][-1]["then"][-1]["template"] = "订单:{order_id} 店铺:{shop_name}"
    response = client.post(f"{URL}{shipped.id}/edit", data={"document": document.as_yaml(doc),
                                                           "comment": "shop name in the remark", "base": "2"})
    assert response.status_code == 302 and "/diff" in response.headers["Location"]
    versions = versions_of(db_session, shipped.id)
    assert [(v.number, v.action, v.published) for v in versions][-1] == (3, "draft", False)
    assert versions[-1].document == doc and versions[-1].comment == "shop name in the remark"
    assert current_version(db_session, shipped).number == 2  # a draft is not live
    assert audit_actions(db_session)[-1] == "rules.save_draft"


def test_save_draft_accepts_json(client, login, shipped, db_session):
    login("tax_specialist")
    doc = with_rule(live_document(db_session, shipped), HOLD_BIG)
    response = client.post(f"{URL}{shipped.id}/edit", data={"document": json.dumps(doc, ensure_ascii=False)})
    assert response.status_code == 302
    assert versions_of(db_session, shipped.id)[-1].document == doc


def test_refused_document_shows_every_problem_with_its_path_and_writes_nothing(client, login, shipped, db_session):
    login("tax_specialist")
    doc = live_document(db_session, shipped)
    doc["rules"][2]["then"][0] = {"action": "map_tax_code", "match": {"sku": "A"}, "code": "1060502990000000000",
                                  "rate": "0.17"}
    doc["rules"][0]["when"] = {"m": {"status": "canceled"}}
    before = counts(db_session)
    response = client.post(f"{URL}{shipped.id}/edit", data={"document": json.dumps(doc, ensure_ascii=False)})
    assert response.status_code == 422
    html = text_of(response)
    assert 'data-path="rules[2].then[0].rate"' in html and "0.17" in html
    assert 'data-path="rules[0].when.m.status"' in html
    assert "canceled" in html  # the refused document stays in the editor
    assert counts(db_session) == before


@pytest.mark.parametrize("text,path,code", [
    ("name: x\nrules: [\n", "document", "bad_yaml"),
    ('{"name": "x",', "document", "invalid_json"),
    ("- just\n- a list\n", "document", "not_object"),
    ("name: x\ndescription: 2026-11-11\nrules: []\n", "description", "not_json"),
    ("name: x\nrules:\n  - id: a\n    when: {m: {has_gift: true}}\n    then: [{action: issue}]\n    yes: 1\n",
     "rules[0].True", "bad_key"),
])
def test_parse_document_problems(text, path, code):
    doc, problems = document.parse_document(text)
    assert doc is None and [(p.path, p.code) for p in problems] == [(path, code)]


def test_parse_document_reads_yaml_and_json_alike():
    doc = {"name": "x", "rules": [{"id": "a", "then": [{"action": "set_shipping", "code": "1" * 19,
                                                          "rate": "0.13"}]}]}
    assert document.parse_document(document.as_yaml(doc)) == (doc, [])
    assert document.parse_document(document.as_json(doc)) == (doc, [])


def test_yaml_date_is_refused_with_its_path_in_the_page(client, login, shipped, db_session):
    login("tax_specialist")
    before = counts(db_session)
    doc = live_document(db_session, shipped) | {"description": "DATE"}
    text = document.as_yaml(doc).replace("description: DATE", "description: 2026-11-11", 1)
    response = client.post(f"{URL}{shipped.id}/edit", data={"document": text})
    assert response.status_code == 422 and 'data-path="description"' in text_of(response)
    assert counts(db_session) == before


def test_create_rule_set_for_a_shop_copies_the_shipped_default(client, login, shipped, db_session):
    shop = gen_shop(db_session)
    db_session.commit()
    login("tax_specialist")
    response = client.post(f"{URL}create", data={"scope": f"shop:{shop.id}", "name": "tmall-override"})
    assert response.status_code == 302
    db_session.rollback()
    created = db_session.scalars(select(RuleSet).where(RuleSet.name == "tmall-override")).one()
    assert (created.merchant_id, created.shop_id) == (shop.merchant_id, shop.id)
    (version,) = versions_of(db_session, created.id)
    expected = live_document(db_session, shipped) | {"name": "tmall-override"}
    assert version.action == "draft" and version.document == expected
    assert current_version(db_session, created) is None  # nothing changes until it is published
    assert audit_actions(db_session)[-1] == "rules.create"
    again = client.post(f"{URL}create", data={"scope": f"shop:{shop.id}", "name": "tmall-override"})
    assert again.status_code == 302 and len(versions_of(db_session, created.id)) == 1


# ----------------------------------------------------------------------------------- publish / rollback


def test_publish_needs_a_comment_then_appends_a_version_and_audits(client, login, shipped, db_session):
    draft = save_draft(db_session, shipped, with_rule(live_document(db_session, shipped), HOLD_BIG), "someone")
    db_session.commit()
    login("tax_specialist")
    client.post(f"{URL}{shipped.id}/publish", data={"version": str(draft.number), "comment": "  "})
    assert len(versions_of(db_session, shipped.id)) == 3
    response = client.post(f"{URL}{shipped.id}/publish", data={"version": str(draft.number), "comment": "big orders"},
                           follow_redirects=True)
    assert "default@v4 is live now: it decides new orders from now on" in text_of(response)
    versions = versions_of(db_session, shipped.id)
    assert [(v.number, v.action, v.published, v.based_on) for v in versions][-1] == (4, "publish", True, 3)
    assert versions[-1].author.startswith("user") and versions[-1].comment == "big orders"
    assert current_version(db_session, shipped).number == 4
    entry = db_session.scalars(select(AdminAuditLog).order_by(AdminAuditLog.id.desc())).first()
    assert entry.action == "rules.publish" and entry.target == f"RuleSet:{shipped.id}"
    assert entry.details["from_version"] == 3 and entry.details["version"] == 4


def test_rollback_appends_a_copy_of_an_earlier_published_version(client, login, shipped, db_session):
    draft = save_draft(db_session, shipped, with_rule(live_document(db_session, shipped), HOLD_BIG), "someone")
    rule_versions.publish(db_session, shipped, draft.number, "someone", "go")
    db_session.commit()
    login("tax_specialist")
    response = client.post(f"{URL}{shipped.id}/rollback", data={"version": "2", "comment": "too many holds"})
    assert response.status_code == 302
    versions = versions_of(db_session, shipped.id)
    assert [(v.number, v.action, v.based_on) for v in versions][-1] == (5, "rollback", 2)
    assert versions[-1].document == versions[1].document
    assert audit_actions(db_session)[-1] == "rules.rollback"
    # rolling back to a draft is refused, shown, and writes nothing
    refused = client.post(f"{URL}{shipped.id}/rollback", data={"version": "3", "comment": "x"}, follow_redirects=True)
    assert "never published" in text_of(refused)
    assert len(versions_of(db_session, shipped.id)) == 5 and audit_actions(db_session)[-1] == "rules.rollback"


def test_publishing_leaves_decided_requests_alone(client, login, shipped, db_session):
    shop = gen_shop(db_session)
    seed_orders(db_session, shop, ["99.00", "2000.00"])
    snapshot = [(r.id, r.status, r.rules_version, r.updated_at)
                for r in db_session.scalars(select(InvoiceRequest).order_by(InvoiceRequest.id))]
    draft = save_draft(db_session, shipped, with_rule(live_document(db_session, shipped), HOLD_BIG), "someone")
    db_session.commit()
    login("tax_specialist")
    client.post(f"{URL}{shipped.id}/publish", data={"version": str(draft.number), "comment": "go"})
    db_session.rollback()
    assert snapshot and snapshot == [(r.id, r.status, r.rules_version, r.updated_at)
                                     for r in db_session.scalars(select(InvoiceRequest).order_by(InvoiceRequest.id))]


# ----------------------------------------------------------------------------------- diff


def test_diff_shows_the_changed_rule(client, login, shipped, db_session):
    doc = live_document(db_session, shipped)
    doc["rules"][-1]["then"][-1]["template"] = "订单:{order_id}"
    draft = save_draft(db_session, shipped, with_rule(doc, HOLD_BIG), "someone")
    db_session.commit()
    login("auditor")
    html = text_of(client.get(f"{URL}{shipped.id}/diff?a=2&b={draft.number}"))
    changed = re.findall(r'class="diff-changed">.*?<code>(.*?)</code>: (.*?)</li>', html)
    assert changed == [("invoice-face", "then")]
    assert re.findall(r'class="diff-added">.*?<code>(.*?)</code>', html) == ["hold-big-orders"]
    assert re.search(r'<div class="add">\+ +&#34;template&#34;: &#34;订单:\{order_id\}&#34;</div>', html)
    assert re.search(r'<div class="del">- +&#34;template&#34;: &#34;订单号:\{order_id\}&#34;</div>', html)
    same = text_of(client.get(f"{URL}{shipped.id}/diff?a=2&b=2"))
    assert 'id="no-difference"' in same


# ----------------------------------------------------------------------------------- dry-run


def test_dry_run_pasted_order_shows_decision_options_and_face(client, login, shipped, db_session):
    shop = gen_shop(db_session, name="青禾天猫旗舰店")
    db_session.commit()
    login("tax_specialist")
    order = gen_order_doc(shop.shop_code, "DRY000000001")
    response = client.post(f"{URL}{shipped.id}/v/2/dry-run", data={
        "source": "paste", "order_json": json.dumps(order, ensure_ascii=False), "now": "2026-11-20T10:00"})
    assert response.status_code == 200, text_of(response)
    html = text_of(response)
    assert 'id="decision-action"><span class="badge verdict verdict-issue' in html
    assert "<code>invoice-requested</code>" in html and "<code>wait_over</code>" in html
    assert "default@v2" in html and "&#34;remark_template&#34;: &#34;订单号:{order_id}&#34;" in html
    assert "电子发票" in html and "247.90" in html and "贰佰肆拾柒圆玖角整" in html
    assert "订单号:DRY000000001" in html


def test_dry_run_draft_on_stored_order_and_errors_with_paths(client, login, shipped, db_session):
    shop = gen_shop(db_session)
    (big,) = seed_orders(db_session, shop, ["2000.00"])
    draft = save_draft(db_session, shipped, with_rule(live_document(db_session, shipped), HOLD_BIG), "someone")
    db_session.commit()
    login("tax_specialist")
    url = f"{URL}{shipped.id}/v/{draft.number}/dry-run"
    assert f'value="{big}"' in text_of(client.get(url))  # offered among the recent orders
    html = text_of(client.post(url, data={"source": "stored", "recent": str(big)}))
    assert "verdict-hold" in html and "<code>big_order</code>" in html and "hold-big-orders" in html
    key = db_session.get(Order, big).key
    assert "verdict-hold" in text_of(client.post(url, data={"source": "stored", "stored": key}))
    bad = gen_order_doc(shop.shop_code)
    bad["lines"][0]["unit_price"] = "9.9.9"
    response = client.post(url, data={"source": "paste", "order_json": json.dumps(bad)})
    assert response.status_code == 422 and 'data-path="order.lines[0].unit_price"' in text_of(response)
    assert client.post(url, data={"source": "paste", "order_json": "{nope"}).status_code == 422
    assert client.post(url, data={"source": "stored", "stored": "999999"}).status_code == 422
    assert client.post(url, data={"source": "paste", "order_json": "[]"}).status_code == 422


# ----------------------------------------------------------------------------------- replay


def test_replay_shows_what_a_hold_rule_would_change_and_writes_nothing(client, login, shipped, db_session):
    shop = gen_shop(db_session)
    seed_orders(db_session, shop, ["99.00", "99.00", "99.00", "2000.00", "3000.00"])
    draft = save_draft(db_session, shipped, with_rule(live_document(db_session, shipped), HOLD_BIG), "someone")
    db_session.commit()
    login("tax_specialist")
    before = counts(db_session)
    response = client.post(f"{URL}{shipped.id}/v/{draft.number}/replay", data={"n": "200"})
    assert response.status_code == 200, text_of(response)
    html = text_of(response)
    assert counts(db_session) == before
    assert "2 of 5 orders would change" in html
    assert re.search(r'data-before="issue" data-after="hold">2<', html)
    assert re.search(r'data-before="issue" data-after="issue">3<', html)
    assert len(re.findall(r'class="replay-row"', html)) == 2
    assert "+hold-big-orders" in html and "<code>big_order</code>" in html


def test_replay_totals_and_scope(db_session, shipped):
    shop = gen_shop(db_session)
    overridden = gen_shop(db_session, merchant=shop.merchant, platform="jd")
    seed_orders(db_session, shop, ["99.00", "2000.00"])
    seed_orders(db_session, overridden, ["2000.00"])
    own = rule_versions.get_or_create_rule_set(db_session, "jd", merchant_id=overridden.merchant_id,
                                             shop_id=overridden.id)
    rule_versions.publish(db_session, own, save_draft(db_session, own, live_document(db_session, shipped), "x").number, "x")
    draft = save_draft(db_session, shipped, with_rule(live_document(db_session, shipped), HOLD_BIG), "someone")
    db_session.commit()
    result = rule_replay.replay(db_session, draft, 200)
    assert (result.orders, result.changed, result.unaffected) == (3, 1, 1)
    assert result.matrix == {("issue", "issue"): 2, ("issue", "hold"): 1}
    small = Decimal("99.00") * 2 + Decimal("59.90") + Decimal("10.00") - Decimal("20.00")
    big = Decimal("2000.00") * 2 + Decimal("59.90") + Decimal("10.00") - Decimal("20.00")
    assert result.before.total == small + 2 * big and result.after.total == small + big
    assert result.before.tax > result.after.tax > 0 and isinstance(result.after.tax, Decimal)
    assert result.before.amount + result.before.tax == result.before.total
    (row,) = result.rows
    assert (row.before.action, row.after.action, row.after.total) == ("issue", "hold", big)
    assert row.fired_added == ["hold-big-orders"]
    assert rule_replay.replay(db_session, draft, 1).orders == 1  # the newest order only
    assert rule_replay.replay(db_session, draft, 10**9).requested == rule_replay.REPLAY_CAP
    assert rule_replay.replay(db_session, draft, 200, rows_shown=0).capped


def test_replay_of_a_merchant_rule_set_covers_only_its_merchant(db_session, shipped):
    mine = gen_shop(db_session)
    theirs = gen_shop(db_session)
    seed_orders(db_session, mine, ["2000.00"])
    seed_orders(db_session, theirs, ["2000.00", "2000.00"])
    merchant_set = rule_versions.get_or_create_rule_set(db_session, "m", merchant_id=mine.merchant_id)
    draft = save_draft(db_session, merchant_set, with_rule(live_document(db_session, shipped), HOLD_BIG), "x")
    db_session.commit()
    result = rule_replay.replay(db_session, draft, 200)
    assert (result.orders, result.changed) == (1, 1)
    assert dict(result.before_labels) == {"default@v2": 1}


def test_replay_reports_a_stored_document_it_cannot_read_instead_of_failing(db_session, shipped):
    shop = gen_shop(db_session)
    seed_orders(db_session, shop, ["99.00"])
    broken = gen_order_doc(shop.shop_code, "BROKEN000001")
    del broken["lines"]
    db_session.add(Order(platform=shop.platform, shop_code=shop.shop_code, order_no="BROKEN000001", shop_id=shop.id,
                         status="received", document=broken, document_hash="x"))
    draft = save_draft(db_session, shipped, with_rule(live_document(db_session, shipped), HOLD_BIG), "someone")
    db_session.commit()
    result = rule_replay.replay(db_session, draft, 200)
    assert result.matrix == {("issue", "issue"): 1, ("error", "error"): 1}
    assert result.before.count == result.after.count == 1
