"""Operations console: is the job pipeline healthy, and the few levers operations pull.

What the page shows comes from the database first (outbox backlog, mirrored job failures,
invoice and request states, the pause switch), because that survives a Redis flush or
outage. RQ's own view (queue depths, workers, failed registry) is added when Redis answers
and replaced by "Redis unreachable" when it does not: the page never fails because of Redis.

Every lever is a POST (global CSRFProtect), goes through the pipeline/lifecycle services,
writes the admin audit log in the same transaction, flashes the outcome and redirects back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis
from flask import flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_login import current_user
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from sqlalchemy import BigInteger, Integer, cast, extract, func, literal_column, select
from sqlalchemy.orm import Session

from app import db
from app.admin.base import SecureView, audit
from app.engine import lifecycle, pipeline
from app.engine.clock import BEIJING, utcnow
from app.engine.deadlines import open_alarms
from app.engine.states import ISSUED_INVOICE
from app.errors import KaipiaoError
from app.jobs import outbox, queues
from app.models import GatewayStatus, Invoice, InvoiceRequest, JobFailure, Order, OutboxMessage

LIST_LIMIT = 100
# Job functions that take a list of ids and can be re-created through the outbox.
ID_JOBS = ("decide_requests", "issue_invoices", "poll_invoices")
REDIS_ERRORS = (redis.RedisError, OSError)


class Refused(Exception):
    """A lever that cannot be pulled now; the message is shown to the person."""


# ------------------------------------------------------------------------------------ RQ side


@dataclass
class QueueRow:
    name: str
    queued: int
    started: int
    failed: int
    scheduled: int
    deferred: int


@dataclass
class WorkerRow:
    name: str
    state: str
    current_job: str | None
    queues: list[str]
    last_heartbeat: datetime | None
    successful: int
    failed: int
    host: str


@dataclass
class RQFailedJob:
    job_id: str
    queue: str
    func: str
    args: str
    ended_at: datetime | None
    reason: str


@dataclass
class RedisSnapshot:
    ok: bool
    error: str | None = None
    queues: list[QueueRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    failed_jobs: list[RQFailedJob] = field(default_factory=list)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def queue_rows(conn: redis.Redis) -> list[QueueRow]:
    rows = []
    for spec in queues.QUEUES:
        q = Queue(spec.name, connection=conn)
        # cleanup=False: a read-only page must not run RQ's abandoned-job handling, which
        # would fail jobs without our mirror_failure handler (no job_failure row).
        rows.append(QueueRow(
            name=spec.name, queued=q.count,
            started=q.started_job_registry.get_job_count(cleanup=False),
            failed=q.failed_job_registry.get_job_count(cleanup=False),
            scheduled=q.scheduled_job_registry.get_job_count(cleanup=False),
            deferred=q.deferred_job_registry.get_job_count(cleanup=False),
        ))
    return rows


def worker_rows(conn: redis.Redis) -> list[WorkerRow]:
    rows = []
    for worker in Worker.all(connection=conn):
        rows.append(WorkerRow(
            name=worker.name, state=worker.get_state(), current_job=worker.get_current_job_id(),
            queues=worker.queue_names(), last_heartbeat=_aware(worker.last_heartbeat),
            successful=worker.successful_job_count, failed=worker.failed_job_count,
            host=f"{worker.hostname or '?'}:{worker.pid or '?'}",
        ))
    return sorted(rows, key=lambda w: w.name)


def rq_failed_jobs(conn: redis.Redis, limit: int = 50) -> list[RQFailedJob]:
    """The newest entries of every queue's failed registry (RQ keeps them a year)."""
    found: list[RQFailedJob] = []
    for spec in queues.QUEUES:
        registry = Queue(spec.name, connection=conn).failed_job_registry
        ids = registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=conn), strict=True):
            if job is None:
                found.append(RQFailedJob(job_id, spec.name, "?", "", None, _("job data expired")))
                continue
            try:
                func_name, args = job.func_name or "?", repr(list(job.args))[:200]
            except Exception:  # an undeserialisable payload must not break the page
                func_name, args = "?", "?"
            try:
                result = job.latest_result()
                reason = _last_line(result.exc_string if result else None)
            except Exception:
                reason = ""
            found.append(RQFailedJob(job_id, spec.name, func_name, args, _aware(job.ended_at), reason))
    found.sort(key=lambda j: j.ended_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return found[:limit]


def redis_snapshot() -> RedisSnapshot:
    """RQ's view of the pipeline, or ``ok=False`` with the error when Redis does not answer."""
    try:
        conn = queues.connection()
        conn.ping()
        return RedisSnapshot(ok=True, queues=queue_rows(conn), workers=worker_rows(conn),
                             failed_jobs=rq_failed_jobs(conn))
    except REDIS_ERRORS as exc:
        return RedisSnapshot(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])


# ------------------------------------------------------------------------------------ DB side


@dataclass
class StateRow:
    status: str
    count: int
    oldest_age: timedelta | None


@dataclass
class Backlog:
    count: int
    oldest_age: timedelta | None


@dataclass
class Bar:
    start: datetime  # UTC start of the bucket
    count: int


@dataclass
class CreditUse:
    month: str  # YYYY-MM in Asia/Shanghai
    issued_total: Decimal
    issued_count: int
    credit_remaining: Decimal | None
    credit_checked_at: datetime | None


def _age(now: datetime, then: datetime | None) -> timedelta | None:
    return None if then is None else max(now - then, timedelta(0))


def outbox_backlog(session: Session, now: datetime) -> Backlog:
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.dispatched_at.is_(None))
    ).one()
    return Backlog(count=count, oldest_age=_age(now, oldest))


def states_with_age(session: Session, model: type, now: datetime) -> list[StateRow]:
    """Count per status and how long the oldest row has been sitting in it."""
    rows = session.execute(
        select(model.status, func.count(), func.min(model.updated_at)).group_by(model.status).order_by(model.status)
    ).all()
    return [StateRow(status, count, _age(now, oldest)) for status, count, oldest in rows]


def _bucket_expr(dialect: str, seconds: int) -> Any:
    """Whole buckets since the epoch, in SQL, so the grouping happens in the database.

    The divisor is a literal so SELECT and GROUP BY render the identical expression
    (PostgreSQL refuses two differently-numbered bound parameters)."""
    divisor = literal_column(str(int(seconds)), Integer)
    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", Invoice.issued_at) / divisor), BigInteger)
    # SQLite keeps UTCDateTime as naive UTC text; strftime('%s') reads it as UTC.
    # ``//`` is integer division (SQLAlchemy 2 makes ``/`` true division).
    return cast(func.strftime("%s", Invoice.issued_at), Integer) // divisor


def throughput(session: Session, now: datetime, seconds: int, buckets: int) -> list[Bar]:
    """Invoices issued per ``seconds``-long bucket, the last ``buckets`` of them (newest last,
    the current partial bucket included, empty buckets as zero)."""
    last = int(now.timestamp()) // seconds
    first = last - buckets + 1
    since = datetime.fromtimestamp(first * seconds, UTC)
    expr = _bucket_expr(session.get_bind().dialect.name, seconds)
    rows = session.execute(
        select(expr.label("bucket"), func.count()).where(Invoice.issued_at >= since).group_by(expr)
    ).all()
    counts = {int(bucket): count for bucket, count in rows}
    return [Bar(datetime.fromtimestamp(b * seconds, UTC), counts.get(b, 0)) for b in range(first, last + 1)]


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """This calendar month in Asia/Shanghai (the tax bureau's month), as UTC instants."""
    local = now.astimezone(BEIJING)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start.astimezone(UTC), end.astimezone(UTC)


def credit_use(session: Session, now: datetime) -> CreditUse:
    start, end = month_bounds(now)
    total, count = session.execute(
        select(func.sum(Invoice.total), func.count()).where(
            Invoice.color == "blue", Invoice.status.in_(ISSUED_INVOICE),
            Invoice.issued_at >= start, Invoice.issued_at < end)
    ).one()
    status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == pipeline.SCOPE))
    return CreditUse(
        month=start.astimezone(BEIJING).strftime("%Y-%m"), issued_total=total or Decimal("0.00"),
        issued_count=count, credit_remaining=status.credit_remaining if status else None,
        credit_checked_at=status.credit_checked_at if status else None,
    )


def stale_outcomes(session: Session, now: datetime) -> list[Invoice]:
    """Invoices whose outcome is not known for longer than the tick's stuck threshold."""
    return list(session.scalars(
        select(Invoice).where(Invoice.status.in_(("unknown", "issuing")),
                              Invoice.updated_at <= now - pipeline.TIMING.stuck_issuing)
        .order_by(Invoice.updated_at).limit(LIST_LIMIT)
    ))


def held_requests(session: Session) -> list[tuple[InvoiceRequest, str | None]]:
    rows = session.execute(
        select(InvoiceRequest, Order.order_no).join(Order, Order.id == InvoiceRequest.order_pk)
        .where(InvoiceRequest.status == "held").order_by(InvoiceRequest.updated_at).limit(LIST_LIMIT)
    ).all()
    return [(r, order_no) for r, order_no in rows]


def failed_invoices(session: Session) -> list[Invoice]:
    return list(session.scalars(
        select(Invoice).where(Invoice.status == "failed").order_by(Invoice.updated_at).limit(LIST_LIMIT)
    ))


def open_job_failures(session: Session) -> list[JobFailure]:
    return list(session.scalars(
        select(JobFailure).where(JobFailure.resolved_at.is_(None)).order_by(JobFailure.id.desc()).limit(LIST_LIMIT)
    ))


# -------------------------------------------------------------------------------- chart geometry


@dataclass
class ChartBar:
    x: float
    y: float
    width: float
    height: float
    count: int
    title: str


@dataclass
class Chart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    max_count: int
    total: int
    bars: list[ChartBar]
    ticks: list[tuple[float, str]]  # x, label
    grid: list[tuple[float, str]]  # y, label


def bar_chart(bars: list[Bar], label: Callable[[datetime], str], tick_every: int,
              width: int = 640, height: int = 170) -> Chart:
    """Geometry of an SVG bar chart; the template draws it (no JavaScript, no CDN)."""
    left, right, top, bottom = 36, 8, 10, height - 22
    max_count = max((b.count for b in bars), default=0)
    scale_max = max(max_count, 1)
    slot = (width - left - right) / max(len(bars), 1)
    chart_bars, ticks = [], []
    for i, bar in enumerate(bars):
        h = (bottom - top) * bar.count / scale_max
        x = left + i * slot
        chart_bars.append(ChartBar(x=round(x + slot * 0.1, 2), y=round(bottom - h, 2),
                                   width=round(max(slot * 0.8, 1), 2), height=round(h, 2), count=bar.count,
                                   title=f"{label(bar.start)}: {bar.count}"))
        if i % tick_every == 0:
            ticks.append((round(x + slot / 2, 2), label(bar.start)))
    grid = [(float(bottom), "0")] + ([(float(top), str(max_count))] if max_count else [])
    return Chart(width=width, height=height, plot_top=top, plot_bottom=bottom, plot_left=left,
                 max_count=max_count, total=sum(b.count for b in bars), bars=chart_bars, ticks=ticks, grid=grid)


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "" if value is None else _aware(value).astimezone(BEIJING).strftime(fmt)


# ---------------------------------------------------------------------------------- the view


def _short_func(func_name: str) -> str:
    return func_name.rsplit(".", 1)[-1]


def _ids_of(args: Iterable[Any]) -> list[int | str]:
    """JobFailure.args is the job's first argument: a list of ids for the batch jobs."""
    first = list(args or [])[:1]
    if not first:
        return []
    value = first[0]
    return list(value) if isinstance(value, list | tuple) else [value]


class OperationsView(SecureView):
    """Queues, workers, failures, stuck and held work, the pause switch, throughput, credit."""

    roles = ("operations",)

    # ------------------------------------------------------------------------------- page

    @expose("/")
    def index(self) -> Any:
        now = utcnow()
        session = db.session()
        status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == pipeline.SCOPE))
        snapshot = redis_snapshot()
        failures = open_job_failures(session)
        rq_ids = {j.job_id for j in snapshot.failed_jobs}
        mirrored = {f.job_id for f in failures}
        per_minute = throughput(session, now, 60, 60)
        per_hour = throughput(session, now, 3600, 48)
        return self.render(
            "admin/ops/index.html",
            now=now,
            pause=status if status is not None and status.paused else None,
            failure_streak=status.failure_streak if status is not None else 0,
            outage_threshold=pipeline.OUTAGE_THRESHOLD,
            redis=snapshot,
            outbox=outbox_backlog(session, now),
            failures=failures,
            rq_ids=rq_ids,
            rq_only=[j for j in snapshot.failed_jobs if j.job_id not in mirrored],
            invoice_states=states_with_age(session, Invoice, now),
            request_states=states_with_age(session, InvoiceRequest, now),
            stale=stale_outcomes(session, now),
            stale_after=pipeline.TIMING.stuck_issuing,
            held=held_requests(session),
            deadlines=open_alarms(session),
            failed=failed_invoices(session),
            minute_chart=bar_chart(per_minute, lambda t: local_time(t, "%H:%M"), tick_every=10),
            hour_chart=bar_chart(per_hour, lambda t: local_time(t, "%m-%d %H:00"), tick_every=6),
            credit=credit_use(session, now),
            local_time=local_time,
            age=lambda then: _age(now, _aware(then)),
        )

    # ---------------------------------------------------------------------------- levers

    def _act(self, action: str, target: str, work: Callable[[Session], str | None], anchor: str | None) -> Any:
        """Run one lever in the request's session: the change and its audit row commit
        together; a refused transition or an unreachable Redis is flashed, never a 500."""
        session = db.session()
        try:
            message = work(session)
            audit(action, target, {"result": message or "ok"})
            session.commit()
        except KaipiaoError as exc:
            session.rollback()
            flash(_("%(target)s: %(message)s", target=target, message=str(exc)), "error")
        except Refused as exc:
            session.rollback()
            flash(_("%(target)s: %(message)s", target=target, message=str(exc)), "error")
        except REDIS_ERRORS as exc:
            session.rollback()
            flash(_("Redis unreachable: %(error)s", error=str(exc)[:200]), "error")
        else:
            flash(message or _("Done."), "success")
        return redirect(url_for(".index", _anchor=anchor))

    @staticmethod
    def _actor() -> str:
        return getattr(current_user, "username", "?")

    @expose("/resume", methods=("POST",))
    def resume(self) -> Any:
        def work(session: Session) -> str:
            if not pipeline.resume(session, actor=self._actor()):
                raise Refused(_("issuing is not paused"))
            return _("Issuing resumed; the backlog is queued in order.")

        return self._act("ops.resume", f"GatewayStatus:{pipeline.SCOPE}", work, None)

    @expose("/invoices/<int:invoice_id>/query", methods=("POST",))
    def query_invoice(self, invoice_id: int) -> Any:
        def work(session: Session) -> str:
            invoice = _get(session, Invoice, invoice_id)
            stuck = invoice.status == "issuing" and invoice.updated_at <= utcnow() - pipeline.TIMING.stuck_issuing
            # A fresh "issuing" invoice may be mid-call in a worker: only ask once it is stuck.
            if invoice.status not in ("unknown", "pending") and not stuck:
                raise Refused(_("invoice %(id)s is %(status)s; only unknown, pending or stuck issuing "
                                    "invoices are queried", id=invoice_id, status=invoice.status))
            pipeline.queue_poll(session, invoice_id)
            return _("Query for invoice %(serial)s queued.", serial=invoice.serial_no)

        return self._act("ops.query_invoice", f"Invoice:{invoice_id}", work, "stale")

    @expose("/invoices/<int:invoice_id>/retry", methods=("POST",))
    def retry_invoice(self, invoice_id: int) -> Any:
        def work(session: Session) -> str:
            invoice = _get(session, Invoice, invoice_id)
            if invoice.status != "failed":
                raise Refused(_("invoice %(id)s is %(status)s; only failed invoices are retried",
                                id=invoice_id, status=invoice.status))
            pipeline.retry_failed(session, invoice_id, actor=self._actor())  # the job calls the provider
            return _("Retry of invoice %(serial)s queued.", serial=invoice.serial_no)

        return self._act("ops.retry_invoice", f"Invoice:{invoice_id}", work, "failed-invoices")

    @expose("/requests/<int:request_id>/redecide", methods=("POST",))
    def redecide(self, request_id: int) -> Any:
        def work(session: Session) -> str:
            _get(session, InvoiceRequest, request_id)
            pipeline.redecide(session, request_id, actor=self._actor())
            return _("Request %(id)s will be decided again.", id=request_id)

        return self._act("ops.redecide", f"InvoiceRequest:{request_id}", work, "held")

    @expose("/requests/<int:request_id>/skip", methods=("POST",))
    def skip(self, request_id: int) -> Any:
        actor = self._actor()

        def work(session: Session) -> str:
            held = _get(session, InvoiceRequest, request_id)
            if held.status != "held":
                raise Refused(_("request %(id)s is %(status)s; only held requests are skipped here",
                                id=request_id, status=held.status))
            lifecycle.move_request(session, request_id, "skipped", expect="held", actor=actor,
                                   reason=f"skipped by {actor}")
            return _("Request %(id)s skipped.", id=request_id)

        return self._act("ops.skip_request", f"InvoiceRequest:{request_id}", work, "held")

    @expose("/failures/<int:failure_id>/retry", methods=("POST",))
    def retry_failure(self, failure_id: int) -> Any:
        def work(session: Session) -> str:
            failure = _get(session, JobFailure, failure_id)
            if failure.resolved_at is not None:
                raise Refused(_("job failure %(id)s is already resolved", id=failure_id))
            how = _requeue_or_recreate(session, failure)
            _resolve(session, failure.job_id, how, self._actor())
            if how == "requeued":
                return _("Job %(job)s requeued.", job=failure.job_id)
            return _("Job %(job)s no longer exists in RQ; its work was re-created through the outbox.",
                     job=failure.job_id)

        return self._act("ops.retry_job", f"JobFailure:{failure_id}", work, "failures")

    @expose("/failures/<int:failure_id>/resolve", methods=("POST",))
    def resolve_failure(self, failure_id: int) -> Any:
        def work(session: Session) -> str:
            failure = _get(session, JobFailure, failure_id)
            if failure.resolved_at is not None:
                raise Refused(_("job failure %(id)s is already resolved", id=failure_id))
            failure.resolved_at, failure.resolved_by, failure.resolution = utcnow(), self._actor(), "resolved"
            return _("Job failure %(id)s marked resolved.", id=failure_id)

        return self._act("ops.resolve_job", f"JobFailure:{failure_id}", work, "failures")

    @expose("/rq/requeue", methods=("POST",))
    def requeue_rq_job(self) -> Any:
        """A job in RQ's failed registry with no job_failure row (the DB was down when it failed)."""
        job_id = (request.form.get("job_id") or "").strip()

        def work(session: Session) -> str:
            if not job_id:
                raise Refused(_("no job id given"))
            try:
                Job.fetch(job_id, connection=queues.connection()).requeue()
            except (NoSuchJobError, InvalidJobOperation):
                raise Refused(_("job %(job)s is not in RQ's failed registry", job=job_id)) from None
            _resolve(session, job_id, "requeued", self._actor())
            return _("Job %(job)s requeued.", job=job_id)

        return self._act("ops.requeue_job", f"rq:{job_id}"[:200], work, "failures")


def _get(session: Session, model: type, obj_id: int) -> Any:
    obj = session.get(model, obj_id)
    if obj is None:
        raise Refused(_("%(kind)s %(id)s does not exist", kind=model.__name__, id=obj_id))
    return obj


def _resolve(session: Session, job_id: str, resolution: str, actor: str) -> None:
    # A requeued job that failed again left another row with the same job id: close them all.
    now = utcnow()
    for failure in session.scalars(select(JobFailure).where(JobFailure.job_id == job_id,
                                                            JobFailure.resolved_at.is_(None))):
        failure.resolved_at, failure.resolved_by, failure.resolution = now, actor, resolution


def _requeue_or_recreate(session: Session, failure: JobFailure) -> str:
    """Requeue the RQ job while RQ still has it; otherwise (expired, flushed, Redis down)
    write the same work to the outbox, one row per id, which the dispatcher batches again."""
    try:
        conn = queues.connection()
        Job.fetch(failure.job_id, connection=conn).requeue()
        return "requeued"
    except (NoSuchJobError, InvalidJobOperation, *REDIS_ERRORS):
        pass
    func_name = _short_func(failure.func)
    ids = _ids_of(failure.args)
    if func_name not in ID_JOBS or not ids:
        raise Refused(_("%(func)s cannot be re-created from its arguments (periodic jobs run again on their "
                            "own schedule); mark it resolved instead", func=failure.func))
    if failure.queue not in queues.SPECS:
        raise Refused(_("unknown queue %(queue)s", queue=failure.queue))
    for item_id in ids:
        outbox.add(session, failure.queue, func_name, item_id)
    return "recreated"
