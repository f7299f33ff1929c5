"""Commands for the job pipeline: worker, scheduler, order intake, outbox."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from app.engine.json_input import load_json
from app.errors import ValidationFailed
from app.jobs import queues


@click.command("worker")
@click.option("--queues", "queue_names", default=",".join(queues.QUEUE_NAMES), show_default=True,
              help="comma-separated, in priority order")
@click.option("--burst", is_flag=True, help="stop when the queues are empty")
@click.option("--with-scheduler/--without-scheduler", default=True, help="RQ's scheduler for delayed jobs")
@click.option("--max-jobs", type=int, default=None, help="recycle the worker after N jobs")
@click.option("--name", default=None)
@click.option("--fork", is_flag=True, help="run each job in a forked work-horse (isolation over speed)")
@with_appcontext
def worker(queue_names: str, burst: bool, with_scheduler: bool, max_jobs: int | None, name: str | None,
           fork: bool) -> None:
    """Run an RQ worker (several on several hosts share one PostgreSQL and one Redis)."""
    from app.jobs.worker import run_worker

    names = [n.strip() for n in queue_names.split(",") if n.strip()]
    unknown = [n for n in names if n not in queues.SPECS]
    if unknown:
        raise click.UsageError(f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(queues.QUEUE_NAMES)}")
    run_worker(current_app.config["KAIPIAO"], names, burst=burst, with_scheduler=with_scheduler,
               max_jobs=max_jobs, name=name, fork=fork)


@click.command("scheduler")
@with_appcontext
def scheduler() -> None:
    """Run RQ's cron scheduler for Kaipiao's periodic work (tick, ledger sealing, deadlines)."""
    from rq.cron import CronScheduler

    from app.jobs import tasks

    queues.configure(current_app.config["KAIPIAO"])
    cron = CronScheduler(queues.connection())
    for job, interval in tasks.PERIODIC:
        cron.register(getattr(tasks, job.value), job.queue.value, interval=interval,
                      job_timeout=queues.SPECS[job.queue].timeout, name=job.value)
    click.echo(f"scheduling {len(tasks.PERIODIC)} periodic jobs")
    cron.start()


@click.command("tick")
@with_appcontext
def tick() -> None:
    """Run the periodic tick once in this process (dispatch, retries, polls, recovery)."""
    from app.jobs import tasks

    queues.configure(current_app.config["KAIPIAO"])
    click.echo(json.dumps(tasks.tick()))


@click.group("orders")
def orders() -> None:
    """Order intake from files and the demo generator."""


@orders.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch", default=500, show_default=True, help="orders per transaction")
@with_appcontext
def import_orders(path: Path, batch: int) -> None:
    """Import orders from a JSON Lines file (one contract order per line). Bad lines are
    reported with their line number and errors; the others are accepted."""
    from app.services.intake import ingest
    from app.services.unit_of_work import unit_of_work

    queues.configure(current_app.config["KAIPIAO"])
    accepted = rejected = 0
    docs: list[tuple[int, object]] = []

    def flush() -> None:
        nonlocal accepted, rejected
        parsed = [(n, d) for n, d in docs if not isinstance(d, Exception)]
        with unit_of_work() as work:
            result = ingest(work, [d for _, d in parsed], source=f"import:{path.name}")
        for item in result.rejected:
            line_no = parsed[item["index"]][0]
            for err in item["errors"]:
                click.echo(f"{path.name}:{line_no}: {err['path'] or '(order)'}: {err['message']}", err=True)
        accepted += len(result.accepted)
        rejected += len(result.rejected)
        docs.clear()

    # Bad bytes become lone surrogates, which load_json names: the line is refused, not the file.
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                docs.append((line_no, load_json(line, "line")))
            except ValidationFailed as exc:
                for problem in exc.problems:
                    click.echo(f"{path.name}:{line_no}: {problem.path}: {problem.message}", err=True)
                rejected += 1
                continue
            if len(docs) >= batch:
                flush()
    if docs:
        flush()
    click.echo(f"accepted {accepted}, rejected {rejected}")
    if rejected:
        sys.exit(2)


@orders.command("generate")
@click.option("--rate", default=5.0, show_default=True, help="orders per second")
@click.option("--count", default=0, show_default=True, help="stop after N orders (0 = run until stopped)")
@click.option("--shop", "shops", multiple=True, help="platform:shop_code (default: every active shop)")
@click.option("--seed", default=None, type=int)
@with_appcontext
def generate_orders(rate: float, count: int, shops: tuple[str, ...], seed: int | None) -> None:
    """Feed realistic random orders into intake at a steady rate (demo and benchmarks)."""
    from sandbox.orders import run_generator

    queues.configure(current_app.config["KAIPIAO"])
    sent = run_generator(rate=rate, count=count, shops=list(shops), seed=seed, echo=click.echo)
    click.echo(f"generated {sent} orders")


@click.command("dispatch")
@with_appcontext
def dispatch() -> None:
    """Push undispatched outbox rows to Redis now."""
    from app.jobs import outbox

    queues.configure(current_app.config["KAIPIAO"])
    click.echo(f"dispatched {outbox.dispatch_pending()} jobs")


def register(group: click.Group) -> None:
    for command in (worker, scheduler, tick, orders, dispatch, status):
        group.add_command(command)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="the /readyz document instead of a table")
@with_appcontext
def status(as_json: bool) -> None:
    """Readiness of this deployment, as GET /readyz sees it: database and migrations, Redis,
    workers and scheduler alive, the tax provider, issuing not paused. Exit 1 when not ready."""
    from app.jobs.readiness import readiness

    report = readiness(current_app.config["KAIPIAO"])
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        for check in report.checks:
            click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<13} {check.ms:8.1f} ms  {check.detail}")
        click.echo("ready" if report.ok else "NOT READY")
    sys.exit(0 if report.ok else 1)
