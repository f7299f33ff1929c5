"""The demo's published passwords exist only in demo mode: `kaipiao seed` asks for the demo
users' passwords or generates them and prints them once."""

from __future__ import annotations

import re

import click
import pytest

from app.cli import core
from app.models import User
from app.models.user import ROLES
from app.services.demo_seed import (
    demo_logins,
    published_password,
    roles_needing_password,
    roles_with_published_password,
    seed_demo,
)


def _commands() -> click.Group:
    @click.group()
    def kaipiao() -> None:
        pass

    core.register(kaipiao)
    return kaipiao


def _printed_logins(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+\w+\s+(demo_\w+)\s+(\S+)$", output, re.M))


def _signs_in(session, username: str, password: str) -> bool:
    session.expire_all()
    user = session.query(User).filter_by(username=username).one_or_none()
    return user is not None and user.active and user.check_password(password)


def test_demo_mode_keeps_the_published_logins(db_session):
    """`kaipiao run` (./dev demo, the README's quick start) seeds with demo_logins()."""
    seed_demo(db_session, demo_logins())
    db_session.commit()
    assert roles_with_published_password(db_session) == list(ROLES)
    assert _signs_in(db_session, "demo_operations", "operations-demo-2026")
    # Outside the demo, `kaipiao seed` would give each of them a password of its own.
    assert roles_needing_password(db_session) == list(ROLES)
    seed_demo(db_session, demo_logins())  # idempotent
    assert db_session.query(User).filter(User.username.like("demo_%")).count() == len(ROLES)


def test_seed_without_a_terminal_generates_and_prints_once(app, runner, db_session):
    result = runner.invoke(cli=_commands(), args=["seed"])  # CliRunner's stdin is not a TTY
    assert result.exit_code == 0, result.output
    printed = _printed_logins(result.output)
    assert sorted(printed) == sorted(f"demo_{r}" for r in ROLES)
    assert len(set(printed.values())) == len(ROLES)
    for username, password in printed.items():
        role = username.removeprefix("demo_")
        assert password != published_password(role) and len(password) >= 16
        assert _signs_in(db_session, username, password)
        assert not _signs_in(db_session, username, published_password(role))
    assert roles_with_published_password(db_session) == []

    again = runner.invoke(cli=_commands(), args=["seed"])
    assert again.exit_code == 0 and _printed_logins(again.output) == {}
    assert "unchanged" in again.output
    assert _signs_in(db_session, "demo_admin", printed["demo_admin"])


def test_seed_generate_even_at_a_terminal(app, runner, db_session, monkeypatch):
    monkeypatch.setattr(core, "_interactive", lambda: True)
    monkeypatch.setattr(core.getpass, "getpass", lambda prompt="": pytest.fail("--generate must not prompt"))
    result = runner.invoke(cli=_commands(), args=["seed", "--generate"])
    assert result.exit_code == 0, result.output
    assert len(_printed_logins(result.output)) == len(ROLES)


def test_seed_at_a_terminal_asks_for_each_password(app, runner, db_session, monkeypatch):
    # Prompts follow ROLES: admin, tax_specialist, operations, auditor, merchant, cs_agent.
    answers = iter([
        "short", "admin-demo-2026", "admin-Passw0rd!", "admin-Passw0rd!",  # refused twice, then confirmed
        "",  # empty: one is generated and shown
        "ops-Passw0rd!", "ops-Passw0rd!",
        "auditor-one-1", "auditor-two-2", "auditor-one-1", "auditor-one-1",  # a mismatch, then confirmed
        "merchant-Passw0rd!", "merchant-Passw0rd!",
        "cs-agent-Passw0rd!", "cs-agent-Passw0rd!",
    ])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(core, "_interactive", lambda: True)
    monkeypatch.setattr(core.getpass, "getpass", fake_getpass)
    assert ROLES == ("admin", "tax_specialist", "operations", "auditor", "merchant", "cs_agent")
    result = runner.invoke(cli=_commands(), args=["seed"])
    assert result.exit_code == 0, result.output
    assert "at least 8 characters" in result.output and "published password" in result.output
    assert "differ" in result.output
    generated = re.search(r"demo_tax_specialist: (\S+)", result.output).group(1)
    assert _printed_logins(result.output) == {}  # typed passwords are not echoed
    assert _signs_in(db_session, "demo_admin", "admin-Passw0rd!")
    assert _signs_in(db_session, "demo_auditor", "auditor-one-1")
    assert _signs_in(db_session, "demo_tax_specialist", generated)
    assert _signs_in(db_session, "demo_cs_agent", "cs-agent-Passw0rd!")
    assert prompts[0].startswith("password for demo_admin")


def test_seed_replaces_published_passwords_left_by_a_demo(app, runner, db_session):
    seed_demo(db_session, demo_logins())
    db_session.commit()
    db_session.get(User, db_session.query(User.id).filter_by(username="demo_admin").scalar()).set_password(
        "chosen-by-the-admin")
    db_session.commit()
    result = runner.invoke(cli=_commands(), args=["seed"])
    assert result.exit_code == 0, result.output
    printed = _printed_logins(result.output)
    assert "demo_admin" not in printed  # its own password stays
    assert sorted(printed) == sorted(f"demo_{r}" for r in ROLES if r != "admin")
    assert _signs_in(db_session, "demo_admin", "chosen-by-the-admin")
    assert not _signs_in(db_session, "demo_operations", "operations-demo-2026")
    assert roles_with_published_password(db_session) == []
