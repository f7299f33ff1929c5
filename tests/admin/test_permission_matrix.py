"""The permission matrix: every route of the app (``app.url_map``, Flask-Admin's included) × every
method it accepts × every role and anonymous, against the table below.

- allowed: anything but 401, 403 or a redirect to the login page (a 302 elsewhere, a 404 for a
  missing row, a 422 for an empty form are the view's own answers);
- denied: 401 for an anonymous API call, a redirect to the login page for an anonymous page,
  403 for a logged-in role;
- never a 5xx.

A route (or a method) that is not in the table fails ``test_the_table_names_every_route``: a new
page must be classified here when it is added. HEAD and OPTIONS are Flask's own, derived from GET.

tests/admin/test_permissions.py checks what the refused writes leave behind; this file checks
who gets through the door. One app, one database, one login per role, reused for every request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from werkzeug.routing import Rule

from app.models import AdminAuditLog, InvoiceEvent, JobFailure
from app.models.user import ROLES
from app.services.rule_versions import load_shipped_defaults
from app.services.unit_of_work import unit_of_work
from tests.factories import gen_merchant_rows, gen_user

ANONYMOUS = "anonymous"
WHO = (*ROLES, ANONYMOUS)
EVERYONE = frozenset(WHO)
LOGGED_IN = frozenset(ROLES)
NOBODY: frozenset[str] = frozenset()  # not even admin


def only(*roles: str) -> frozenset[str]:
    """These roles and admin."""
    return frozenset(("admin", *roles))


PREVIEW = only("merchant", "tax_specialist", "cs_agent", "operations")
RULES_READ = only("tax_specialist", "auditor")
RULES_EDIT = only("tax_specialist")
OPS = only("operations")

# Routes outside the Flask-Admin model views: (rule, method) -> who may.
ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("/", "GET"): LOGGED_IN,
    ("/login", "GET"): EVERYONE,
    ("/login", "POST"): EVERYONE,
    ("/logout", "POST"): EVERYONE,
    ("/healthz", "GET"): EVERYONE,
    ("/readyz", "GET"): EVERYONE,
    ("/metrics", "GET"): EVERYONE,  # no role: its own bearer token (404 without one configured)
    ("/static/<path:filename>", "GET"): EVERYONE,
    ("/render/face.css", "GET"): EVERYONE,
    ("/preview", "GET"): PREVIEW,
    ("/preview", "POST"): PREVIEW,
    ("/preview/pdf", "POST"): PREVIEW,
    ("/api/v1/openapi.json", "GET"): EVERYONE,
    ("/api/v1/schemas/<name>.json", "GET"): EVERYONE,
    ("/api/v1/preview", "POST"): EVERYONE,
    ("/api/v1/orders", "POST"): only("operations", "cs_agent"),
    ("/admin/", "GET"): LOGGED_IN,
    ("/admin/static/<path:filename>", "GET"): EVERYONE,
    ("/admin/ledger_check/", "GET"): only("auditor"),
    ("/admin/ledger_check/run", "POST"): only("auditor"),
    ("/admin/ops/", "GET"): OPS,
    ("/admin/ops/resume", "POST"): OPS,
    ("/admin/ops/invoices/<int:invoice_id>/query", "POST"): OPS,
    ("/admin/ops/invoices/<int:invoice_id>/retry", "POST"): OPS,
    ("/admin/ops/requests/<int:request_id>/redecide", "POST"): OPS,
    ("/admin/ops/requests/<int:request_id>/skip", "POST"): OPS,
    ("/admin/ops/failures/<int:failure_id>/retry", "POST"): OPS,
    ("/admin/ops/failures/<int:failure_id>/resolve", "POST"): OPS,
    ("/admin/ops/rq/requeue", "POST"): OPS,
    ("/admin/rules/", "GET"): RULES_READ,
    ("/admin/rules/<int:set_id>/", "GET"): RULES_READ,
    ("/admin/rules/<int:set_id>/diff", "GET"): RULES_READ,
    ("/admin/rules/<int:set_id>/v/<int:number>/", "GET"): RULES_READ,
    ("/admin/rules/create", "POST"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/edit", "GET"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/edit", "POST"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/publish", "POST"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/rollback", "POST"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/v/<int:number>/dry-run", "GET"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/v/<int:number>/dry-run", "POST"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/v/<int:number>/replay", "GET"): RULES_EDIT,
    ("/admin/rules/<int:set_id>/v/<int:number>/replay", "POST"): RULES_EDIT,
}

# Flask-Admin model views: endpoint -> who may (read, create, edit, delete, export).
MERCHANT_DATA = only("merchant", "tax_specialist", "operations", "auditor")
PIPELINE_DATA = only("operations", "cs_agent", "merchant", "auditor", "tax_specialist")
MODEL_VIEWS: dict[str, tuple[frozenset[str], ...]] = {
    "merchants": (MERCHANT_DATA, only(), only(), NOBODY, NOBODY),
    "sellers": (MERCHANT_DATA, only(), only(), NOBODY, NOBODY),
    "shops": (MERCHANT_DATA, only(), only(), NOBODY, NOBODY),
    "tax_codes": (LOGGED_IN, only("tax_specialist"), only("tax_specialist"), NOBODY, NOBODY),
    "sku_mappings": (only("tax_specialist", "merchant", "auditor"), only("tax_specialist"), only("tax_specialist"),
                     NOBODY, NOBODY),
    "orders": (PIPELINE_DATA, NOBODY, NOBODY, NOBODY, NOBODY),
    "requests": (PIPELINE_DATA, NOBODY, NOBODY, NOBODY, NOBODY),
    "invoices": (PIPELINE_DATA, NOBODY, NOBODY, NOBODY, NOBODY),
    "job_failures": (OPS, NOBODY, NOBODY, NOBODY, NOBODY),
    # The ledgers: read and export only, for every role.
    "invoice_log": (only("auditor", "operations"), NOBODY, NOBODY, NOBODY, only("auditor", "operations")),
    "audit_log": (only("auditor"), NOBODY, NOBODY, NOBODY, only("auditor")),
    "users": (only(), only(), only(), NOBODY, NOBODY),
}
# Routes whose own answer, when allowed, is a redirect to the login page.
TO_LOGIN_BY_DESIGN = {("/logout", "POST")}
READ, CREATE, EDIT, DELETE, EXPORT = range(5)
# Each Flask-Admin model-view route, by its path under the view, and the permission it needs.
MODEL_ROUTES: dict[tuple[str, str], Any] = {
    ("/", "GET"): READ,
    ("/details/", "GET"): READ,
    ("/new/", "GET"): CREATE,
    ("/new/", "POST"): CREATE,
    ("/edit/", "GET"): EDIT,
    ("/edit/", "POST"): EDIT,
    ("/ajax/update/", "POST"): EDIT,
    ("/ajax/lookup/", "GET"): (CREATE, EDIT),  # it feeds the create and edit forms
    ("/delete/", "POST"): DELETE,
    ("/action/", "POST"): DELETE,  # delete is the only action
    ("/export/<export_type>/", "GET"): EXPORT,
}


def expected_table() -> dict[tuple[str, str], frozenset[str]]:
    table = dict(ROUTES)
    for view, may in MODEL_VIEWS.items():
        for (path, method), need in MODEL_ROUTES.items():
            table[(f"/admin/{view}{path}", method)] = (may[need[0]] | may[need[1]] if isinstance(need, tuple)
                                                       else may[need])
    return table


def app_routes(app) -> set[tuple[str, str]]:
    return {(rule.rule, method) for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def test_the_table_names_every_route(app):
    table, routes = expected_table(), app_routes(app)
    assert sorted(routes - set(table)) == [], "classify the new routes in ROUTES or MODEL_VIEWS"
    assert sorted(set(table) - routes) == [], "routes in the table that the app no longer has"


def test_an_unclassified_route_is_noticed(app):
    app.add_url_rule("/_new_page", "new_page", lambda: "new", methods=["GET", "POST"])
    assert app_routes(app) - set(expected_table()) == {("/_new_page", "GET"), ("/_new_page", "POST")}


# ------------------------------------------------------------------------------ the requests


def _fixtures(db_session) -> dict[str, Any]:
    """One row for each view to show, so details pages render rather than redirect."""
    ids = gen_merchant_rows(db_session, "矩阵商户有限公司")
    gen_merchant_rows(db_session)  # another merchant's rows beside them
    failure = JobFailure(job_id="job-1", queue="decide", func="app.jobs.tasks.decide", args=[[1]],
                         exc_type="RuntimeError", message="boom")
    audit = AdminAuditLog(username="someone", action="edit", target="Shop:1", details={})
    db_session.add_all([failure, audit])
    version = load_shipped_defaults(db_session)[0]
    db_session.commit()
    with unit_of_work() as work:
        work.record("order_received", order_pk=ids["orders"], actor="test", data={})
    ids.update(job_failures=failure.id, audit_log=audit.id, invoice_log=db_session.scalar(select(InvoiceEvent.id)),
               set_id=version.rule_set_id, number=version.number)
    return ids


def _requests(app, ids: dict[str, Any]) -> Iterator[tuple[tuple[str, str], str, dict[str, Any]]]:
    """(table key, URL, request arguments) for every route and method; logout last (it ends the session)."""
    values = {"invoice_id": ids["invoices"], "request_id": ids["requests"], "failure_id": ids["job_failures"],
              "set_id": ids["set_id"], "number": ids["number"], "export_type": "csv", "name": "order",
              "filename": "kaipiao.css"}
    files = {"/admin/static/<path:filename>": "admin/css/bootstrap4/admin.css"}  # Flask-Admin's own
    routes = sorted(app_routes(app), key=lambda r: (r == ("/logout", "POST"), r))
    rules: dict[str, Rule] = {rule.rule: rule for rule in app.url_map.iter_rules()}
    for rule_text, method in routes:
        rule = rules[rule_text]
        url = rule.build({k: files.get(rule_text, values[k]) for k in rule.arguments}, append_unknown=False)[1]
        view = rule_text.split("/")[2] if rule_text.startswith("/admin/") else ""
        kwargs: dict[str, Any] = {}
        if rule_text.endswith(("/details/", "/edit/")) and method == "GET":
            url += f"?id={ids.get(view, 999999)}"
        elif rule_text.endswith("/edit/"):
            url += "?id=999999"  # a POST that could pass validation changes nothing
        elif rule_text.endswith("/delete/"):
            kwargs["data"] = {"id": str(ids.get(view, 999999))}
        elif rule_text.endswith("/action/"):
            kwargs["data"] = {"action": "delete", "rowid": str(ids.get(view, 999999))}
        elif rule_text.endswith("/ajax/update/"):
            kwargs["data"] = {"list_form_pk": "999999"}
        elif rule_text.endswith("/ajax/lookup/"):
            url += "?name=merchant&query=a"
        yield (rule_text, method), url, kwargs


# Readiness answers 503 while it is not ready (here: no worker runs): its answer, not a failure.
UNAVAILABLE_BY_DESIGN = {("/readyz", "GET")}


def _verdict(key: tuple[str, str], who: str, may: bool, url: str, status: int, location: str) -> str | None:
    to_login = status in (301, 302, 303) and "/login" in location and key not in TO_LOGIN_BY_DESIGN
    if status >= 500 and not (key in UNAVAILABLE_BY_DESIGN and status == 503):
        return "a server error"
    if may:
        return None if status not in (401, 403) and not to_login else "refused"
    if who != ANONYMOUS:
        return None if status == 403 else "not refused with 403"
    if url.startswith("/api/"):
        return None if status == 401 else "not refused with 401"
    return None if to_login else "not sent to the login page"


def test_permission_matrix(app, db_session):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a server error is one more line of the report, not the end
    ids = _fixtures(db_session)
    clients = {}
    for role in ROLES:
        user = gen_user(db_session, role, merchant_id=ids["merchants"] if role in ("merchant", "cs_agent") else None)
        db_session.commit()
        clients[role] = app.test_client()
        response = clients[role].post("/login", data={"username": user.username, "password": "correct-horse-battery"})
        assert response.status_code == 302, response.text
    clients[ANONYMOUS] = app.test_client()
    table = expected_table()
    wrong = []
    seen: dict[int, int] = {}
    for key, url, kwargs in _requests(app, ids):
        for who in WHO:
            response = clients[who].open(url, method=key[1], **kwargs)
            response.close()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            problem = _verdict(key, who, who in table[key], url, response.status_code,
                               response.headers.get("Location", ""))
            if problem:
                wrong.append(f"{key[1]} {url} as {who}: {response.status_code} {problem}")
    assert wrong == [], "\n".join(wrong)
    assert seen.get(200, 0) > 150, seen  # the allowed pages did render (not all redirects)
