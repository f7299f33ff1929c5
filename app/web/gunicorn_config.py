"""Gunicorn settings shared by ``kaipiao run`` (which embeds gunicorn) and ``gunicorn wsgi:app``
(through ``gunicorn.conf.py`` at the repository root), so both use the same process model.

Environment (each also a ``kaipiao run`` option):
  KAIPIAO_WEB_BIND      address to listen on, ``host:port`` (default 127.0.0.1:5000)
  KAIPIAO_WEB_WORKERS   web processes (default: twice the machine's cores)
  KAIPIAO_WEB_THREADS   threads per process (default 2; gthread workers)
  KAIPIAO_WEB_TIMEOUT   seconds a request may take before its worker is replaced (default 30)
  KAIPIAO_WEB_GRACEFUL_TIMEOUT  seconds in-flight requests get on restart / stop (default 30)

SIGHUP reloads: new workers start, old ones finish their requests (gunicorn's graceful restart);
SIGTERM stops gracefully, SIGINT / SIGQUIT at once.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

DEFAULT_BIND = "127.0.0.1:5000"


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def default_workers() -> int:
    # Twice the cores: one process's GIL is held through its requests' Python work, so a second
    # process per core computes while the first waits on the database (kaipiao bench web: 4×2
    # against 2×4 on 2 cores gave 1.2× the preview rate and 1.5× the intake rate).
    return max(1, 2 * (os.cpu_count() or 1))


def post_fork(_server: Any, _worker: Any) -> None:
    """A forked web worker must not reuse connections the parent opened (migrations, demo seed)."""
    from app import db

    try:
        db.get_engine().dispose(close=False)
    except RuntimeError:  # no engine configured yet (the app is loaded after the fork)
        pass


class JsonLogger(Logger):
    """gunicorn's error and access lines through Kaipiao's one log handler (JSON, redacted,
    app/logging_setup.py) instead of gunicorn's own stream handlers."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True  # to the root logger, where configure() put our handler
        from app import logging_setup
        from app.settings import log_format, log_level

        logging_setup.configure(log_format(os.environ.get("KAIPIAO_LOG_FORMAT")),
                                log_level(os.environ.get("KAIPIAO_LOG_LEVEL")))


# The access line without the query string (%(U)s is the path alone): queries may carry tokens
# and search terms (buyer titles, tax ids).
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'


def settings(*, bind: str | None = None, workers: int | None = None, threads: int | None = None,
             timeout: int | None = None, graceful_timeout: int | None = None) -> dict[str, Any]:
    """Gunicorn settings: explicit values first, then KAIPIAO_WEB_* from the environment."""
    threads = threads or _int("KAIPIAO_WEB_THREADS", 2)
    return {
        "bind": [bind or os.environ.get("KAIPIAO_WEB_BIND") or DEFAULT_BIND],
        "workers": workers or _int("KAIPIAO_WEB_WORKERS", default_workers()),
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": timeout or _int("KAIPIAO_WEB_TIMEOUT", 30),
        "graceful_timeout": graceful_timeout or _int("KAIPIAO_WEB_GRACEFUL_TIMEOUT", 30),
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "logger_class": JsonLogger,
        "access_log_format": ACCESS_LOG_FORMAT,
        "proc_name": "kaipiao-web",
        "post_fork": post_fork,
        # gunicorn's shared control socket ($HOME/.gunicorn/gunicorn.ctl) would be one file for
        # every instance on the host; signals (HUP, TERM) are the interface here.
        "control_socket_disable": True,
    }
