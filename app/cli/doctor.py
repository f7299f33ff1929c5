"""``kaipiao doctor``: check this host's production setup (app/services/doctor.py)."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

EXIT_FAILED = 1
MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _redis_config(settings):
    """CONFIG GET save / appendonly on the configured Redis (the embedded one is not started)."""
    from app.redis_conn import probe_client

    def probe() -> dict[str, str]:
        client = probe_client(settings)
        config = {**client.config_get("save"), **client.config_get("appendonly")}
        return {_text(k): _text(v) for k, v in config.items()}

    return probe


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="one JSON object: {ok, checks: [{check, status, message, fix}]}")
@with_appcontext
def doctor(as_json: bool) -> None:
    """Check what a production host gets wrong (fonts, database role, Redis persistence, secrets,
    cookies, migrations, clock); print each finding with its fix; exit 1 on any failure."""
    from app.services.doctor import Probes, diagnose, healthy

    settings = current_app.config["KAIPIAO"]
    findings = diagnose(settings, Probes(redis_config=_redis_config(settings)))
    ok = healthy(findings)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [f.as_dict() for f in findings]}, ensure_ascii=False, indent=2))
    else:
        for finding in findings:
            click.echo(f"[{MARKS[finding.status.value]}] {finding.check}: {finding.message}")
            if finding.fix and finding.status.value != "ok":
                click.echo(f"       fix: {finding.fix}")
        click.echo("no failures" if ok else "some checks failed")
    if not ok:
        sys.exit(EXIT_FAILED)


def register(group: click.Group) -> None:
    group.add_command(doctor)
