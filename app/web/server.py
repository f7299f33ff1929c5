"""The production web server: gunicorn embedded (its ``BaseApplication``), so ``kaipiao run``
has the same arbiter, workers, timeouts and HUP restarts as ``gunicorn wsgi:app``."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class KaipiaoServer(BaseApplication):
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self) -> Flask:
        return self.application


def serve(app: Flask, **options: Any) -> None:
    """Serve ``app`` through gunicorn until it is stopped (returns; SystemExit on a signal stop)."""
    from app.web.gunicorn_config import settings

    KaipiaoServer(app, settings(**options)).run()
