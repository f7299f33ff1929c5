"""A request id for every web request: the incoming ``X-Request-Id`` when it is a sane token
(a proxy's), else a new one; bound to the logging context for the request (so every log line
and every job the request queues carries it, app/logging_setup.py) and echoed in the response."""

from __future__ import annotations

import uuid

from flask import Flask, Response, g, request

from app import logging_setup

HEADER = "X-Request-Id"


def incoming_or_new(value: str | None) -> str:
    if value and logging_setup.REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def init_app(app: Flask) -> None:
    @app.before_request
    def _bind_request_id() -> None:
        rid = incoming_or_new(request.headers.get(HEADER))
        g.kaipiao_request_id = rid
        g.kaipiao_log_token = logging_setup.bind(request_id=rid)

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        rid = g.get("kaipiao_request_id")
        if rid:
            response.headers[HEADER] = rid
        return response

    @app.teardown_request
    def _unbind_request_id(_exc: BaseException | None) -> None:
        token = g.pop("kaipiao_log_token", None)
        if token is not None:
            logging_setup.unbind(token)
