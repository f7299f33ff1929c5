"""Structured logs (app/logging_setup.py): the line format, the context, the redaction, the
request id of a web request."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app import logging_setup
from app.settings import log_format, log_level

REQUIRED = {"level", "time_utc", "time_beijing", "logger", "message", "request_id", "job_id"}


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging_setup.configure("json", "DEBUG", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_one_json_object_per_line_with_the_context(captured):
    log = logging.getLogger("kaipiao.test")
    with logging_setup.context(request_id="req-12345678", job_id="job-1"):
        log.info("hello %s", "世界", extra={"invoice_id": 7})
    log.warning("outside")
    first, second = lines(captured)
    assert REQUIRED <= first.keys()
    assert first["message"] == "hello 世界" and first["level"] == "INFO" and first["logger"] == "kaipiao.test"
    assert (first["request_id"], first["job_id"], first["invoice_id"]) == ("req-12345678", "job-1", 7)
    assert first["time_utc"].endswith("Z") and first["time_beijing"].endswith("+08:00")
    assert second["request_id"] is None and second["job_id"] is None


def test_exceptions_are_one_string_on_the_same_line(captured):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("kaipiao.test").exception("failed")
    (line,) = lines(captured)
    assert "ValueError: boom" in line["exc"] and line["level"] == "ERROR"


@pytest.mark.parametrize("secret", [
    "buyer@example.com", "13912345678", "+86 139-1234-5678", "010-88886666", "91110000600037341L",
    "11010519491231002X",
])
def test_personal_data_is_masked_in_messages_and_tracebacks(captured, secret):
    log = logging.getLogger("kaipiao.test")
    log.info("order for %s", secret)
    try:
        raise RuntimeError(f"bad value {secret}")
    except RuntimeError:
        log.exception("failed")
    output = captured.getvalue()
    assert secret not in output and logging_setup.MASK in output
    assert len(lines(captured)) == 2


def test_sensitive_keys_and_secret_assignments_are_masked(captured):
    log = logging.getLogger("kaipiao.test")
    log.info("call", extra={"buyer_title": "某某科技有限公司", "payload": {"app_secret": "s3cr3t-value", "n": 1}})
    log.info("connect with password=hunter2hunter2 token: abcdefabcdef")
    output = captured.getvalue()
    for value in ("某某科技有限公司", "s3cr3t-value", "hunter2hunter2", "abcdefabcdef"):
        assert value not in output
    assert lines(captured)[0]["payload"]["n"] == 1


def test_database_details_quoting_rows_are_masked(captured):
    logging.getLogger("kaipiao.test").warning(
        'new row violates check constraint "ck"\nDETAIL:  Failing row contains (1, 蓝鲸测绘, x).\n[SQL: INSERT]')
    output = lines(captured)[0]["message"]
    assert "蓝鲸测绘" not in output and "violates check constraint" in output and "[SQL: INSERT]" in output


def test_a_20_digit_invoice_number_stays_readable(captured):
    logging.getLogger("kaipiao.test").info("issued %s", "24312000000012345678")
    assert "24312000000012345678" in captured.getvalue()


def test_text_format_for_development():
    stream = io.StringIO()
    handler = logging_setup.configure("text", "INFO", stream=stream)
    try:
        with logging_setup.context(request_id="req-abcdefgh"):
            logging.getLogger("kaipiao.test").info("plain")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "INFO" in stream.getvalue() and "plain" in stream.getvalue() and "request_id=req-abcdefgh" in stream.getvalue()


def test_settings_check_format_and_level():
    assert (log_format(None), log_level(None)) == ("json", "INFO")
    assert (log_format("TEXT"), log_level("debug")) == ("text", "DEBUG")
    with pytest.raises(ValueError):
        log_format("xml")
    with pytest.raises(ValueError):
        log_level("loud")


def test_a_request_gets_an_id_echoed_and_a_sane_incoming_one_is_kept(client):
    response = client.get("/login")
    generated = response.headers["X-Request-Id"]
    assert logging_setup.REQUEST_ID.fullmatch(generated)
    assert client.get("/login", headers={"X-Request-Id": "proxy-req-0001"}).headers["X-Request-Id"] == "proxy-req-0001"
    forged = client.get("/login", headers={"X-Request-Id": "x\" injected=1"}).headers["X-Request-Id"]
    assert forged != "x\" injected=1" and logging_setup.REQUEST_ID.fullmatch(forged)
    assert logging_setup.request_id() is None  # nothing left bound after the request
