from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from app.cli.invoicing import register
from app.services.preview import preview_order

from .helpers import LOCAL_EXAMPLES, SELLER, example


def group() -> click.Group:
    @click.group()
    def kaipiao() -> None:
        pass

    register(kaipiao)
    return kaipiao


def test_preview_prints_the_draft() -> None:
    result = CliRunner().invoke(group(), ["preview", str(LOCAL_EXAMPLES / "worked-order.json"),
                                          "--seller", str(LOCAL_EXAMPLES / "seller.json")])
    assert result.exit_code == 0, result.output
    draft = json.loads(result.output)
    assert draft["invoices"][0]["total"] == "247.90"
    assert "贰佰肆拾柒圆玖角整" in result.output  # ensure_ascii=False


def test_preview_errors_exit_2(tmp_path: Path) -> None:
    order = str(LOCAL_EXAMPLES / "worked-order.json")
    result = CliRunner().invoke(group(), ["preview", order])
    assert result.exit_code == 2
    assert json.loads(result.output) == {
        "errors": [{"path": "seller", "code": "required", "message": "required when the order's shop is not configured in Kaipiao"}]}
    bad = tmp_path / "bad.json"
    bad.write_text('{"platform": "tmall"', encoding="utf-8")
    result = CliRunner().invoke(group(), ["preview", str(bad), "--seller", str(LOCAL_EXAMPLES / "seller.json")])
    assert result.exit_code == 2 and json.loads(result.output)["errors"][0]["code"] == "invalid_json"
    options = tmp_path / "options.json"
    options.write_text('{"discount_mode": "half"}', encoding="utf-8")
    result = CliRunner().invoke(group(), ["preview", order, "--seller", str(LOCAL_EXAMPLES / "seller.json"),
                                          "--options", str(options)])
    assert result.exit_code == 2 and json.loads(result.output)["errors"][0]["path"] == "options.discount_mode"


def test_taxcodes_check() -> None:
    from app.engine.taxcodes import DEFAULT_CATALOGUE_PATH

    result = CliRunner().invoke(group(), ["taxcodes", "check", str(DEFAULT_CATALOGUE_PATH)])
    assert result.exit_code == 0 and json.loads(result.output)["codes"] >= 20


def test_preview_function_is_the_same_engine() -> None:
    draft = preview_order(example("worked-order.json"), SELLER, {"discount_mode": "net_price"}, use_database=False)
    assert draft["invoices"][0]["total_amount"] == "221.18"
