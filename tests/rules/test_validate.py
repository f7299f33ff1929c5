from __future__ import annotations

import pytest

from app.errors import ValidationFailed
from app.rules import decide, load_ruleset_file, rules_dir, validate_ruleset
from tests.rules.helpers import gen_order, rule, ruleset

ISSUE = [{"action": "issue"}]


def problems(doc: dict) -> list[tuple[str, str]]:
    return [(p.path, p.code) for p in validate_ruleset(doc)]


def one(doc: dict):
    found = validate_ruleset(doc)
    assert len(found) == 1, found
    return found[0]


def test_shipped_rule_sets_are_valid() -> None:
    files = sorted(rules_dir().glob("*.yaml"))
    assert files
    for path in files:
        assert validate_ruleset(load_ruleset_file(path)) == [], path


def test_unknown_action() -> None:
    p = one(ruleset(rule("a", 1, [{"action": "issue"}, {"action": "email_buyer"}])))
    assert (p.path, p.code) == ("rules[0].then[1].action", "unknown_action")
    assert "'email_buyer'" in p.message and "wait_for" in p.message


def test_unknown_fact_field_anywhere_in_the_tree() -> None:
    when = {"m": {"$and": [{"platform": "tmall"}, {"$or": [{"$gt": {"amount": 100}}, {"has_gift": True}]}]}}
    p = one(ruleset(rule("a", 1, ISSUE, when)))
    assert (p.path, p.code) == ("rules[0].when.m.$and[1].$or[0].$gt.amount", "unknown_field")
    assert "did you mean 'amount_fen'" in p.message


def test_line_fields_need_the_item_prefix() -> None:
    p = one(ruleset(rule("a", 1, ISSUE, {"m": {"$iany": {"lines": {"category": "书"}}}})))
    assert p.code == "unknown_field" and "$i.category" in p.message
    assert problems(ruleset(rule("a", 1, ISSUE, {"m": {"$iany": {"lines": {"$i.category": "书"}}}}))) == []
    p = one(ruleset(rule("a", 1, ISSUE, {"m": {"$i.category": "书"}})))
    assert p.code == "unknown_field" and "$iany" in p.message
    p = one(ruleset(rule("a", 1, ISSUE, {"m": {"$iany": {"lines": {"$i.colour": "red"}}}})))
    assert (p.path, p.code) == ("rules[0].when.m.$iany.lines.$i.colour", "unknown_field")


@pytest.mark.parametrize(
    ("then", "path", "code", "needle"),
    [
        ([{"action": "skip"}], "rules[0].then[0].reason", "missing_param", "needs 'reason'"),
        (
            [{"action": "wait_for", "event": "delivered"}],
            "rules[0].then[0].event",
            "bad_param",
            "received, shipped, paid",
        ),
        (
            [{"action": "wait_for", "event": "shipped", "delay": "7 days"}],
            "rules[0].then[0].delay",
            "bad_param",
            "P7D",
        ),
        (
            [{"action": "set_shipping", "code": "3040407", "rate": "0.06"}],
            "rules[0].then[0].code",
            "bad_param",
            "19-digit",
        ),
        (
            [{"action": "set_shipping", "code": "3040407010000000000", "rate": 0.06}],
            "rules[0].then[0].rate",
            "bad_param",
            "decimal strings",
        ),
        (
            [{"action": "set_shipping", "code": "3040407010000000000", "rate": "0.07"}],
            "rules[0].then[0].rate",
            "bad_param",
            "not a VAT rate",
        ),
        (
            [{"action": "set_shipping", "code": "3040407010000000000"}],
            "rules[0].then[0]",
            "missing_param",
            "code and rate",
        ),
        (
            [
                {
                    "action": "map_tax_code",
                    "match": {"color": "red"},
                    "code": "1060502990000000000",
                    "rate": "0.13",
                }
            ],
            "rules[0].then[0].match",
            "bad_param",
            "name_contains",
        ),
        (
            [{"action": "add_remark", "template": "单号 {order_no}"}],
            "rules[0].then[0].template",
            "bad_param",
            "{order_id}",
        ),
        (
            [{"action": "set_kind", "kind": "special", "title": "x"}],
            "rules[0].then[0].title",
            "unknown_param",
            "no parameter",
        ),
        ([{"action": "require", "field": "passport"}], "rules[0].then[0].field", "bad_param", "tax_id"),
        (
            [{"action": "route_seller", "entity": "上海 公司"}],
            "rules[0].then[0].entity",
            "bad_param",
            "seller code",
        ),
        ([], "rules[0].then", "no_actions", "non-empty"),
    ],
)
def test_bad_parameters(then: list, path: str, code: str, needle: str) -> None:
    p = one(ruleset(rule("a", 1, then)))
    assert (p.path, p.code) == (path, code)
    assert needle in p.message


@pytest.mark.parametrize(
    ("when", "path", "code", "needle"),
    [
        ({"m": {"platform": "tmal"}}, "rules[0].when.m.platform", "bad_value", "taobao, tmall"),
        ({"m": {"$gt": {"amount_fen": 100.5}}}, "rules[0].when.m.$gt.amount_fen", "bad_value", "integer fen"),
        ({"m": {"$gt": {"amount_fen": "100"}}}, "rules[0].when.m.$gt.amount_fen", "bad_value", "integer"),
        ({"m": {"has_gift": "yes"}}, "rules[0].when.m.has_gift", "bad_value", "true or false"),
        ({"m": {"$gt": {"platform": 3}}}, "rules[0].when.m.$gt.platform", "bad_value", "compares numbers"),
        ({"m": {"$like": {"platform": "t%"}}}, "rules[0].when.m.$like", "unknown_operator", "$iany"),
        ({"m": {"platform": "tmall", "status": "paid"}}, "rules[0].when.m", "bad_condition", "$and"),
        (
            {"all": [{"m": {"platform": "tmall"}}, {"m": {"status": "paid"}}]},
            "rules[0].when.all",
            "bad_condition",
            "exactly one",
        ),
        ({"m": {"$nex": {"paid_fen": True}}}, "rules[0].when.m.$nex.paid_fen", "bad_value", "takes 1"),
        ({"m": {"lines": 2}}, "rules[0].when.m.lines", "bad_condition", "$iany"),
        ({"if": {"platform": "tmall"}}, "rules[0].when", "bad_condition", '"m"'),
    ],
)
def test_bad_conditions(when: dict, path: str, code: str, needle: str) -> None:
    p = one(ruleset(rule("a", 1, ISSUE, when)))
    assert (p.path, p.code) == (path, code)
    assert needle in p.message


@pytest.mark.parametrize("pattern", ["a[%d", "%q", "a**", "%b()", "%-"])
def test_regex_the_engine_rejects_is_mapped_to_its_path(pattern: str) -> None:
    doc = ruleset(
        rule("fine", 1, ISSUE, {"m": {"$mt": {"shop": "shop-%d+"}}}),
        rule("bad", 2, ISSUE, {"m": {"$and": [{"platform": "jd"}, {"$mt": {"shop": pattern}}]}}),
    )
    p = one(doc)
    assert (p.path, p.code) == ("rules[1].when.m.$and[1].$mt.shop", "bad_regex")
    assert "Lua-like" in p.message and "durable-rules error" in p.message


def test_pcre_backslash_refused_although_the_engine_accepts_it() -> None:
    p = one(ruleset(rule("a", 1, ISSUE, {"m": {"$mt": {"shop": "\\d+"}}})))
    assert (p.path, p.code) == ("rules[0].when.m.$mt.shop", "bad_regex")
    assert "%d" in p.message


def test_bad_regex_inside_lines() -> None:
    p = one(ruleset(rule("a", 1, ISSUE, {"m": {"$iany": {"lines": {"$imt": {"$i.name": "[x"}}}}})))
    assert (p.path, p.code) == ("rules[0].when.m.$iany.lines.$imt.$i.name", "bad_regex")


def test_duplicate_ids_and_document_keys() -> None:
    doc = ruleset(rule("a", 1, ISSUE), rule("a", 2, ISSUE), rules_version=3)
    assert set(problems(doc)) == {("rules[1].id", "duplicate_id"), ("rules_version", "unknown_key")}
    assert ("name", "bad_name") in problems({"name": "x$state", "rules": [rule("a", 1, ISSUE)]})
    assert ("rules", "no_rules") in problems({"name": "x", "rules": []})
    assert ("rules[0].priority", "bad_priority") in problems(
        ruleset({"id": "a", "priority": True, "then": ISSUE})
    )
    assert ("rules[0].colour", "unknown_key") in problems(ruleset(rule("a", 1, ISSUE, colour="red")))


def test_deadlines_and_default() -> None:
    assert problems(ruleset(rule("a", 1, ISSUE), deadlines={"tmall": "3 days"})) == [
        ("deadlines.tmall", "bad_duration")
    ]
    assert problems(ruleset(rule("a", 1, ISSUE), deadlines={"amazon": 72})) == [
        ("deadlines.amazon", "unknown_platform")
    ]
    assert problems(ruleset(rule("a", 1, ISSUE), default={"action": "set_kind", "kind": "normal"})) == [
        ("default.action", "bad_default")
    ]


def test_decide_refuses_an_invalid_rule_set() -> None:
    with pytest.raises(ValidationFailed) as err:
        decide(gen_order(), ruleset=ruleset(rule("a", 1, [{"action": "explode"}])))
    assert err.value.problems[0].code == "unknown_action"


def test_validation_does_not_leak_engine_registrations() -> None:
    from app.rules.engine import get_evaluator

    names = set(get_evaluator()._host._ruleset_directory)
    for _ in range(50):
        validate_ruleset(ruleset(rule("a", 1, ISSUE, {"m": {"$mt": {"shop": "[bad"}}})))
        validate_ruleset(ruleset(rule("a", 1, ISSUE, {"m": {"$mt": {"shop": "good%d"}}})))
    assert set(get_evaluator()._host._ruleset_directory) == names
