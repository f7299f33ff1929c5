"""``kaipiao sandbox-tax``: run the sandbox tax service in the foreground."""

from __future__ import annotations

import os
import signal
from decimal import Decimal

import click

from sandbox.tax.runner import serve_forever
from sandbox.tax.service import SandboxConfig


@click.command("sandbox-tax")
@click.option("--host", default="127.0.0.1", show_default=True, help="loopback address to bind")
@click.option("--port", default=8765, show_default=True, type=int, help="0 = any free port")
@click.option("--db", "db_path", default="instance/sandbox-tax.sqlite3", show_default=True,
              type=click.Path(dir_okay=False), help="SQLite file (kept across restarts)")
@click.option("--latency-ms", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--fail-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="fraction of calls answered 503")
@click.option("--wire", type=click.Choice(["native", "nuonuo"]), default="native", show_default=True)
@click.option("--issue-delay-ms", default=0, show_default=True, type=click.IntRange(min=0),
              help="how long an accepted invoice stays pending")
@click.option("--confirm-delay-ms", default=None, type=click.IntRange(min=0),
              help="simulated buyer confirms a 红字确认单 after this (default: only via admin)")
@click.option("--credit-limit", default="10000000.00", show_default=True, help="monthly 授信额度")
@click.option("--app-key", default=lambda: os.environ.get("KAIPIAO_SANDBOX_APP_KEY", "sandbox-app"),
              show_default="sandbox-app or $KAIPIAO_SANDBOX_APP_KEY")
@click.option("--app-secret", default=lambda: os.environ.get("KAIPIAO_SANDBOX_APP_SECRET", "sandbox-secret"),
              show_default="sandbox-secret or $KAIPIAO_SANDBOX_APP_SECRET")
@click.option("--seller-tax-id", default=None, help="nuonuo wire: the only userTax this app may act for")
@click.option("--seed", default=None, type=int, help="random seed for fault injection")
def sandbox_tax(host: str, port: int, db_path: str, latency_ms: int, fail_rate: float, wire: str,
                issue_delay_ms: int, confirm_delay_ms: int | None, credit_limit: str, app_key: str,
                app_secret: str, seller_tax_id: str | None, seed: int | None) -> None:
    """Run the sandbox tax service (a fake provider speaking the native or Nuonuo wire)."""
    config = SandboxConfig(
        db_path=db_path, wire=wire, app_key=app_key, app_secret=app_secret, seller_tax_id=seller_tax_id,
        latency_ms=latency_ms, fail_rate=fail_rate, issue_delay_ms=issue_delay_ms,
        confirm_delay_ms=confirm_delay_ms, credit_limit=Decimal(credit_limit), seed=seed,
    )
    # SIGTERM (subprocess stop) ends serve_forever cleanly like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    serve_forever(config, host, port)


def register(group: click.Group) -> None:
    """Add ``sandbox-tax`` to the kaipiao group. ``add_command`` (not FlaskGroup's decorator) keeps
    it free of an app context, so the sandbox starts without the Kaipiao database."""
    group.add_command(sandbox_tax)
