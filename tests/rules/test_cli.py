from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from app.cli.rules import rules_group
from tests.rules.helpers import WORKED


def test_validate_ok_and_problems(tmp_path: Path) -> None:
    runner = CliRunner()
    from app.rules import rules_dir

    result = runner.invoke(rules_group, ["validate", str(rules_dir() / "default.yaml")])
    assert result.exit_code == 0 and result.output.startswith("ok: default")

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nrules:\n  - {id: a, priority: 1, when: {m: {colour: red}}, then: [{action: explode}]}\n"
    )
    result = runner.invoke(rules_group, ["validate", str(bad)])
    assert result.exit_code == 2
    errors = {e["path"]: e["message"] for e in json.loads(result.output)["errors"]}
    assert errors["rules[0].when.m.colour"].startswith("unknown fact field 'colour'")
    assert errors["rules[0].then[0].action"].startswith("unknown action 'explode'")


def test_decide_prints_the_decision(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(rules_group, ["decide", str(WORKED), "--now", "2026-11-15T09:00:00+08:00"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["action"] == "issue" and out["rules_version"].startswith("default@")

    rules = tmp_path / "hold.json"
    rules.write_text(
        json.dumps(
            {
                "name": "cli-hold",
                "rules": [{"id": "h", "priority": 1, "then": [{"action": "hold", "reason": "check"}]}],
            }
        )
    )
    result = runner.invoke(rules_group, ["decide", str(WORKED), "--rules", str(rules)])
    assert result.exit_code == 0 and json.loads(result.output)["action"] == "hold"
