"""Web writes while workers write at full speed: no request may fail with a 500.

A web request reads first (the user, the rule set) and writes last (last_login_at, the new
version and its audit row). On SQLite its deferred transaction used to fail at that first
write with "database is locked" whenever a worker wrote meanwhile: SQLITE_BUSY at once while
the worker held the lock (busy_timeout does not apply to that upgrade), SQLITE_BUSY_SNAPSHOT
once it had committed. Real concurrency: worker processes ingest and decide orders into the
same database while a threaded HTTP server answers logins and rule publishes from several
client threads. PostgreSQL runs it too.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from app import db
from app.models import Order
from app.models.rules import RuleSet, RuleSetVersion
from app.services.decide import decide_requests
from app.services.intake import ingest
from app.services.rule_versions import current_version, load_shipped_defaults, save_draft
from app.services.unit_of_work import unit_of_work
from app.settings import Settings
from tests.factories import gen_order_doc, gen_shop, gen_user

PASSWORD = "correct-horse-battery"
LOGINS, LOGIN_THREADS, PUBLISHES, WRITERS = 50, 10, 10, 2


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return f"{type(exc).__name__} {getattr(orig, 'sqlite_errorname', '')}: {orig}".strip()


@pytest.fixture
def live_server(app) -> Iterator[tuple[str, list[str]]]:
    """The app on a threaded HTTP server; the list collects every exception a request raised."""
    raised: list[str] = []
    inner = app.wsgi_app

    def recording(environ, start_response):
        try:
            return inner(environ, start_response)
        except Exception as exc:
            raised.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}: {_describe(exc)}")
            raise

    app.wsgi_app = recording
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", raised
    server.shutdown()
    thread.join(5)


def _writer(settings: Settings, shop_code: str, worker: int, stop, done, errors) -> None:
    """A worker process at full speed: batches of new orders through intake, then their decisions."""
    from app import crypto
    from app.jobs import queues

    crypto.configure(settings.encryption_key)
    queues.configure(settings)
    db.configure(settings.database_url)
    try:
        for batch in itertools.count():
            if stop.is_set():
                return
            docs = [gen_order_doc(shop_code, f"W{worker}-{batch:05d}-{i:02d}") for i in range(10)]
            with unit_of_work() as work:
                result = ingest(work, docs, source="test")
            assert not result.rejected, result.rejected
            decide_requests([a["request_id"] for a in result.accepted], settings, issue_now=False)
            with done.get_lock():
                done[worker] += 1
    except Exception as exc:
        errors.put(f"writer {worker}: {_describe(exc)}")


@pytest.mark.slow
def test_logins_and_rule_publishes_while_workers_write(app, live_server, db_session, settings):
    url, raised = live_server
    load_shipped_defaults(db_session)
    shop = gen_shop(db_session)
    rule_set = db_session.scalars(select(RuleSet).where(RuleSet.merchant_id.is_(None))).one()
    draft = save_draft(db_session, rule_set, current_version(db_session, rule_set).document, "someone")
    specialist = gen_user(db_session, "tax_specialist", password=PASSWORD)
    users = [gen_user(db_session, "operations", password=PASSWORD) for _ in range(LOGIN_THREADS)]
    db_session.commit()
    versions_before = db_session.scalar(select(func.count()).select_from(RuleSetVersion))

    # (what, status, where it redirects to): a login goes home, a publish to the rule set
    answers: list[tuple[str, int, str]] = []

    def log_in(http: requests.Session, username: str) -> tuple[str, int, str]:
        response = http.post(f"{url}/login", data={"username": username, "password": PASSWORD},
                             allow_redirects=False, timeout=60)
        return "login", response.status_code, response.headers.get("Location", "")

    def logins(username: str) -> None:
        with requests.Session() as http:
            for _ in range(LOGINS // LOGIN_THREADS):
                answers.append(log_in(http, username))

    publisher = requests.Session()
    assert log_in(publisher, specialist.username) == ("login", 302, "/")

    def publishes() -> None:
        for n in range(PUBLISHES):
            response = publisher.post(f"{url}/admin/rules/{rule_set.id}/publish",
                                      data={"version": str(draft.number), "comment": f"publish {n}"},
                                      allow_redirects=False, timeout=60)
            answers.append(("publish", response.status_code, response.headers.get("Location", "")))

    spawn = multiprocessing.get_context("spawn")
    stop, done, writer_errors = spawn.Event(), spawn.Array("i", WRITERS), spawn.Queue()
    writers = [spawn.Process(target=_writer, args=(settings, shop.shop_code, w, stop, done, writer_errors))
               for w in range(WRITERS)]
    clients = [threading.Thread(target=logins, args=(u.username,)) for u in users]
    clients.append(threading.Thread(target=publishes))
    try:
        for process in writers:
            process.start()
        while min(done) == 0 and writer_errors.empty():  # the workers are under way
            time.sleep(0.01)
        before = sum(done)
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
        during = sum(done) - before
    finally:
        stop.set()
        for process in writers:
            process.join(30)
            if process.is_alive():
                process.terminate()
    publisher.close()

    assert raised == []
    assert [writer_errors.get() for _ in range(writer_errors.qsize())] == []  # workers never waited too long
    assert [p.exitcode for p in writers] == [0] * WRITERS
    publish_done = ("publish", 302, f"/admin/rules/{rule_set.id}/")
    assert sorted(answers) == [("login", 302, "/")] * LOGINS + [publish_done] * PUBLISHES
    db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(RuleSetVersion)) == versions_before + PUBLISHES
    assert during > 0 and db_session.scalar(select(func.count()).select_from(Order)) > 0  # they really raced
