"""Operations console: is the job pipeline healthy, and the few levers operations pull.

What the page shows comes from the database first (app.services.operations_overview: outbox
backlog, job failures, invoice and request states, each seller entity's pause switch and
credit), because that survives a Redis flush or outage; RQ's own view (app.jobs.monitor) is
added when Redis answers and replaced by "Redis unreachable" when it does not: the page never
fails because of Redis.

Every lever is a POST (global CSRFProtect) that calls one service (app.services.operator_actions,
app.jobs.failures) in a unit of work, writes the admin audit log in the same transaction,
flashes the outcome and redirects back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_login import current_user

from app import db
from app.admin.base import SecureView, audit, local_time, refusal_text
from app.admin.charts import bar_chart
from app.engine.clock import utcnow
from app.errors import KaipiaoError, Refused
from app.jobs import failures
from app.jobs.monitor import REDIS_ERRORS, redis_snapshot
from app.models import Invoice, InvoiceRequest
from app.services import operator_actions
from app.services.deadlines import open_alarms
from app.services.issuing_control import DEFAULT_SCOPE, OUTAGE_THRESHOLD
from app.services.operations_overview import (
    age,
    credit_use,
    failed_invoices,
    held_requests,
    issuing_switches,
    open_job_failures,
    outbox_backlog,
    stale_outcomes,
    states_with_age,
    throughput,
)
from app.services.unit_of_work import UnitOfWork, unit_of_work


class OperationsView(SecureView):
    """Queues, workers, failures, stuck and held work, the sellers' pause switches, throughput,
    credit per seller entity."""

    roles = ("operations",)

    # ------------------------------------------------------------------------------- page

    @expose("/")
    def index(self) -> Any:
        now = utcnow()
        session = db.session()
        timing = current_app.config["KAIPIAO"].timing
        switches = issuing_switches(session)
        snapshot = redis_snapshot()
        failures_open = open_job_failures(session)
        rq_ids = {j.job_id for j in snapshot.failed_jobs}
        mirrored = {f.job_id for f in failures_open}
        per_minute = throughput(session, now, 60, 60)
        per_hour = throughput(session, now, 3600, 48)
        return self.render(
            "admin/ops/index.html",
            now=now,
            pauses=[s for s in switches if s.paused],
            streaks=[s for s in switches if not s.paused],
            outage_threshold=OUTAGE_THRESHOLD,
            redis=snapshot,
            outbox=outbox_backlog(session, now),
            failures=failures_open,
            rq_ids=rq_ids,
            rq_only=[j for j in snapshot.failed_jobs if j.job_id not in mirrored],
            invoice_states=states_with_age(session, Invoice, now),
            request_states=states_with_age(session, InvoiceRequest, now),
            stale=stale_outcomes(session, now, timing.stuck_issuing),
            stale_after=timing.stuck_issuing,
            held=held_requests(session),
            deadlines=open_alarms(session),
            failed=failed_invoices(session),
            minute_chart=bar_chart(per_minute, lambda t: local_time(t, "%H:%M"), tick_every=10),
            hour_chart=bar_chart(per_hour, lambda t: local_time(t, "%m-%d %H:00"), tick_every=6),
            credit=credit_use(session, now),
            local_time=local_time,
            age=lambda then: age(now, then),
        )

    # ---------------------------------------------------------------------------- levers

    def _act(self, action: str, target: str, lever: Callable[[UnitOfWork], str], anchor: str | None) -> Any:
        """Pull one lever in a unit of work: the change and its audit row commit together; a
        refused action or an unreachable Redis is flashed, never a 500."""
        try:
            with unit_of_work() as work:
                message = lever(work)
                audit(work.session, action, target, {"result": message})
        except Refused as exc:
            flash(_("%(target)s: %(message)s", target=target, message=refusal_text(exc)), "error")
        except KaipiaoError as exc:
            flash(_("%(target)s: %(message)s", target=target, message=str(exc)), "error")
        except REDIS_ERRORS as exc:
            flash(_("Redis unreachable: %(error)s", error=str(exc)[:200]), "error")
        else:
            flash(message, "success")
        return redirect(url_for(".index", _anchor=anchor))

    @staticmethod
    def _actor() -> str:
        return getattr(current_user, "username", "?")

    @staticmethod
    def _scope() -> int | None:
        # Operations are global today; should a merchant-scoped role get a lever, it still
        # reaches only its own merchant's invoices and requests.
        return current_user.merchant_scope()

    @expose("/resume", methods=("POST",))
    def resume(self) -> Any:
        """Resume one seller entity's issuing (form field ``scope``; none: the default scope)."""
        scope = (request.form.get("scope") or DEFAULT_SCOPE).strip()[:64]

        def lever(work: UnitOfWork) -> str:
            seller = operator_actions.resume_issuing(work, actor=self._actor(), scope=scope)
            if seller is None:
                return _("Issuing resumed; the backlog is queued in order.")
            return _("Issuing resumed for %(seller)s; its backlog is queued in order.", seller=str(seller))

        return self._act("ops.resume", f"GatewayStatus:{scope}", lever, None)

    @expose("/invoices/<int:invoice_id>/query", methods=("POST",))
    def query_invoice(self, invoice_id: int) -> Any:
        def lever(work: UnitOfWork) -> str:
            invoice = operator_actions.query_invoice(work, invoice_id, current_app.config["KAIPIAO"],
                                                     merchant_id=self._scope())
            return _("Query for invoice %(serial)s queued.", serial=invoice.serial_no)

        return self._act("ops.query_invoice", f"Invoice:{invoice_id}", lever, "stale")

    @expose("/invoices/<int:invoice_id>/retry", methods=("POST",))
    def retry_invoice(self, invoice_id: int) -> Any:
        def lever(work: UnitOfWork) -> str:
            invoice = operator_actions.retry_failed(work, invoice_id, actor=self._actor(),  # a job calls the provider
                                                    merchant_id=self._scope())
            return _("Retry of invoice %(serial)s queued.", serial=invoice.serial_no)

        return self._act("ops.retry_invoice", f"Invoice:{invoice_id}", lever, "failed-invoices")

    @expose("/requests/<int:request_id>/redecide", methods=("POST",))
    def redecide(self, request_id: int) -> Any:
        def lever(work: UnitOfWork) -> str:
            operator_actions.redecide(work, request_id, actor=self._actor(), merchant_id=self._scope())
            return _("Request %(id)s will be decided again.", id=request_id)

        return self._act("ops.redecide", f"InvoiceRequest:{request_id}", lever, "held")

    @expose("/requests/<int:request_id>/skip", methods=("POST",))
    def skip(self, request_id: int) -> Any:
        def lever(work: UnitOfWork) -> str:
            operator_actions.skip_held(work, request_id, actor=self._actor(), merchant_id=self._scope())
            return _("Request %(id)s skipped.", id=request_id)

        return self._act("ops.skip_request", f"InvoiceRequest:{request_id}", lever, "held")

    @expose("/failures/<int:failure_id>/retry", methods=("POST",))
    def retry_failure(self, failure_id: int) -> Any:
        def lever(work: UnitOfWork) -> str:
            how, job_id = failures.retry_failure(work, failure_id, self._actor())
            if how == "requeued":
                return _("Job %(job)s requeued.", job=job_id)
            return _("Job %(job)s no longer exists in RQ; its work was re-created through the outbox.", job=job_id)

        return self._act("ops.retry_job", f"JobFailure:{failure_id}", lever, "failures")

    @expose("/failures/<int:failure_id>/resolve", methods=("POST",))
    def resolve_failure(self, failure_id: int) -> Any:
        def lever(work: UnitOfWork) -> str:
            operator_actions.resolve_job_failure(work, failure_id, self._actor())
            return _("Job failure %(id)s marked resolved.", id=failure_id)

        return self._act("ops.resolve_job", f"JobFailure:{failure_id}", lever, "failures")

    @expose("/rq/requeue", methods=("POST",))
    def requeue_rq_job(self) -> Any:
        """A job in RQ's failed registry with no job_failure row (the DB was down when it failed)."""
        job_id = (request.form.get("job_id") or "").strip()

        def lever(work: UnitOfWork) -> str:
            failures.requeue_rq_job(work, job_id, self._actor())
            return _("Job %(job)s requeued.", job=job_id)

        return self._act("ops.requeue_job", f"rq:{job_id}"[:200], lever, "failures")
