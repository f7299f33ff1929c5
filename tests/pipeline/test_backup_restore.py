"""Backup and restore (README: Backup and restore): a dump of a run, restored into a fresh
database with the instance folder's checkpoint file, passes ``kaipiao verify-log`` and issues on
without a duplicate.

PostgreSQL: ``pg_dump -Fc`` as the owner, ``pg_restore`` into a new database, ``kaipiao db
upgrade`` (grants the app role). SQLite: the same through the sqlite3 online-backup API.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app import db
from app.jobs import queues
from app.migrate import upgrade
from app.models import Invoice, InvoiceRequest
from app.services import decide, issue, ledger_sealing
from app.services.intake import ingest
from app.services.unit_of_work import unit_of_work
from tests.conftest import TEST_APP_ROLE
from tests.factories import gen_order_doc

KAIPIAO = str(Path(sys.executable).parent / "kaipiao")


def _issue_orders(settings, order_ids: list[str]) -> None:
    docs = []
    for order_id in order_ids:
        doc = gen_order_doc("pipe-shop", order_id)
        docs.append({k: v for k, v in doc.items() if v is not None})
    with unit_of_work() as work:
        result = ingest(work, docs)
    assert not result.rejected, result.rejected
    request_ids = [a["request_id"] for a in result.accepted]
    decide.decide_requests(request_ids, settings, issue_now=False)
    with db.transaction() as session:
        ids = session.scalars(select(Invoice.id).where(Invoice.request_id.in_(request_ids))).all()
    issue.issue_invoices(list(ids), settings)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def restored(settings, tmp_path) -> Iterator[tuple[str, str | None]]:
    """A function that backs up the test database and restores it into a fresh one; yields the
    restored database's (application URL, owner URL) after the call."""
    made: list[str] = []

    def backup_and_restore() -> tuple[str, str | None]:
        if settings.is_sqlite:
            source = make_url(settings.database_url).database
            target = tmp_path / "restored.sqlite3"
            src, dst = sqlite3.connect(source), sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
            return f"sqlite:///{target}", None
        owner = settings.migration_url
        dump = tmp_path / "kaipiao.dump"
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), _libpq(owner)], check=True)
        name = make_url(owner).database + "_restored"
        admin = db.make_engine(owner, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        made.append(name)
        new_owner = make_url(owner).set(database=name).render_as_string(hide_password=False)
        subprocess.run(["pg_restore", "--exit-on-error", "-d", _libpq(new_owner), str(dump)], check=True)
        upgrade(new_owner, app_role=TEST_APP_ROLE)  # `kaipiao db upgrade`: at head, rights granted
        new_app = make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
        return new_app, new_owner

    yield backup_and_restore  # type: ignore[misc]
    db.session.remove()
    if made:
        db.configure(settings.database_url)  # let go of the restored database
        admin = db.make_engine(settings.migration_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _verify_log(database_url: str, instance: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIPIAO_")}
    env.update(KAIPIAO_DATABASE_URL=database_url, KAIPIAO_INSTANCE_PATH=str(instance),
               KAIPIAO_SECRET_KEY="restore-test", KAIPIAO_ENCRYPTION_KEYS="restore-test")
    return subprocess.run([KAIPIAO, "verify-log"], env=env, capture_output=True, text=True, timeout=120)


def test_a_restored_dump_verifies_and_issues_on_without_duplicates(shop, sandbox, settings, restored, tmp_path):
    _issue_orders(settings, ["B1", "B2", "B3"])
    ledger_sealing.seal_backlog(settings=settings)
    assert (settings.instance_path / "ledger-checkpoints.jsonl").exists()
    db.session.remove()

    # The backup: the database dump and, with it, the instance folder's checkpoint file.
    app_url, owner_url = restored()
    instance = tmp_path / "restored-instance"
    instance.mkdir()
    shutil.copy2(settings.instance_path / "ledger-checkpoints.jsonl", instance)

    check = _verify_log(app_url, instance)
    assert check.returncode == 0, check.stdout + check.stderr
    without_file = _verify_log(app_url, tmp_path / "empty-instance")  # why the file is part of the backup
    assert without_file.returncode == 1 and "no checkpoint file" in without_file.stdout

    # The application now runs on the restored database: issuing resumes.
    resumed = replace(settings, database_url=app_url, migration_database_url=owner_url, instance_path=instance)
    db.configure(app_url)
    queues.configure(resumed)
    _issue_orders(resumed, ["B4", "B5"])
    with db.transaction() as session:
        invoices = session.execute(select(Invoice.request_id, Invoice.serial_no, Invoice.status, Invoice.number)).all()
        requests_ = session.scalar(select(func.count()).select_from(InvoiceRequest))
    assert requests_ == 5
    assert len(invoices) == 5 and {i.status for i in invoices} == {"issued"}
    assert len({i.request_id for i in invoices}) == 5  # one invoice per request
    assert len({i.serial_no for i in invoices}) == 5
    assert len({i.number for i in invoices}) == 5
    at_provider = sandbox.invoices()
    assert len(at_provider) == 5 and len({serial for serial, _, _ in at_provider}) == 5

    ledger_sealing.seal_backlog(settings=resumed)
    db.session.remove()
    check = _verify_log(app_url, instance)
    assert check.returncode == 0, check.stdout + check.stderr


def test_restoring_an_older_backup_issues_no_duplicate(shop, sandbox, settings, restored, tmp_path):
    """Invoices issued after the backup exist at the provider but not in the restored database.
    The checkpoint file of that moment verifies the dump (today's names the lost rows), and the
    next requests reuse those ids, hence serials: the provider refuses them instead of issuing a
    second invoice or returning another order's one (README: Backup and restore, step 5)."""
    _issue_orders(settings, ["C1", "C2"])
    ledger_sealing.seal_backlog(settings=settings)
    instance = tmp_path / "restored-instance"
    instance.mkdir()
    shutil.copy2(settings.instance_path / "ledger-checkpoints.jsonl", instance)  # the file first, then the dump
    db.session.remove()
    app_url, owner_url = restored()
    db.configure(settings.database_url)
    _issue_orders(settings, ["C3", "C4"])  # after the backup: lost by the restore
    ledger_sealing.seal_backlog(settings=settings)
    db.session.remove()

    stale = _verify_log(app_url, settings.instance_path)  # today's checkpoint file against the old dump
    assert stale.returncode == 1 and "missing" in stale.stdout
    assert _verify_log(app_url, instance).returncode == 0

    resumed = replace(settings, database_url=app_url, migration_database_url=owner_url, instance_path=instance)
    db.configure(app_url)
    queues.configure(resumed)
    _issue_orders(resumed, ["C5", "C6"])
    with db.transaction() as session:
        invoices = session.execute(select(Invoice.serial_no, Invoice.status, Invoice.number)).all()
    at_provider = sandbox.invoices()
    assert len(at_provider) == 4 and len({serial for serial, _, _ in at_provider}) == 4  # nothing issued twice
    issued_numbers = [i.number for i in invoices if i.status == "issued"]
    assert len(issued_numbers) == 2 and len(set(issued_numbers)) == 2  # C1, C2: no number of C3/C4 taken over
    assert sorted(i.status for i in invoices) == ["failed", "failed", "issued", "issued"]
    with db.transaction() as session:
        reasons = [r for r in session.scalars(select(Invoice.failure_reason)) if r]
    assert len(reasons) == 2 and all("DUPLICATE_SERIAL" in r for r in reasons)
