"""HTTP face of the sandbox: the native wire or Nuonuo's wire, plus unsigned admin endpoints.

Native wire (every call signed, see ``signing.native_sign``; JSON bodies, decimal strings)::

    POST /v1/invoices                 IssueRequest.to_dict()        -> 202 {serial_no, provider_serial,
                                                                          status, duplicate} (200 if dup)
    GET  /v1/invoices/<serial_no>                                   -> 200 result (status pending|issued|failed)
    POST /v1/invoices/batch           {"invoices": [IssueRequest.to_dict(), ...]} (1..50)
                                      -> 200 {"results": [{serial_no, provider_serial, status, duplicate}
                                                          | {serial_no, error: {code, message, permanent}}]}
    POST /v1/invoices/query           {"serial_nos": [...]} (1..50)
                                      -> 200 {"results": [result | {serial_no, error: {code: NOT_FOUND, ...}}]}
    POST /v1/invoices/<serial_no>/cancel                            -> 200 result
    POST /v1/invoices/<serial_no>/retry    {}                       -> 202 {serial_no, provider_serial,
                                                                          status: pending, duplicate: false}
                                      开票重试 of a failed invoice, same serial and provider serial;
                                      404 NOT_FOUND, 409 NOT_RETRYABLE (not failed), 422 RETRY_LIMIT
                                      (20 a day per serial), CREDIT_EXCEEDED
    POST /v1/red-confirms             {apply_id?, blue_number, reason, lines?} -> 200 confirm
    GET  /v1/red-confirms/<confirm_id>                              -> 200 confirm
    POST /v1/red-invoices             {serial_no, blue_number, reason, lines?, confirm_id?} -> 202
    GET  /v1/credit/<seller_tax_id>                                 -> {month, seller_tax_id, limit, used,
                                                                        remaining}: that seller's account
    GET  /v1/credit                                                 -> {month, limit, used, remaining,
                                                                        sellers}: every seller together
    errors: {"error": {"code", "message", "permanent"}} with 400/401/403/404/409/422/429/5xx

Batch calls answer one result per item, in order; an item is refused with the code the single
call would give (DUPLICATE_SERIAL, CREDIT_EXCEEDED, TAX_CODE, SPECIAL_BUYER, ...), each item
exactly as idempotent as the single call (a serial repeated inside a batch is a duplicate). The
whole call is refused (the single call's error shape) for a bad signature, a replayed nonce, a
malformed body or item (MALFORMED names it: ``invoices[3].lines[0].tax_code``), more than 50
items, and an expired tax-bureau login (of every seller, or of a seller an item is for). A batch is one call for fault injection (latency, 5xx,
429, timeout, unknown) except ``fail_later``, which is drawn per invoice; it is processed in one
store transaction.

Nuonuo wire: ``POST /accessToken`` and ``POST /open/v1/services`` exactly as apis.md §7, plus
开票重试 ``nuonuo.OpeMplatform.reInvoice`` with ``{"fpqqlsh": 流水号, "orderNo": ...}`` (either
one names the invoice; both must agree) -> ``{"invoiceSerialNum"}``: the body is our choice, to
verify against Nuonuo's document (see nuonuo_protocol.M_RETRY).

Each seller (tax id; the issue payload's seller, the invoice's seller for a retry or a red, the
``userTax`` header on the Nuonuo wire) has its own monthly credit and its own tax-bureau login.

Admin (no signature; the sandbox binds loopback only): ``GET|POST /admin/faults``,
``POST /admin/renew-login`` and ``POST /admin/expire-login`` {"seller_tax_id"?} (without one:
every seller), ``GET /admin/state``, ``POST /admin/red-confirms/<id>`` {"action":
"confirm"|"deny"}, ``GET /admin/credit[?seller_tax_id=]`` and ``POST /admin/credit``
{"limit"?, "used"?, "seller_tax_id"?} (without a seller: the default limit, every seller's use),
``POST /admin/revoke-tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from flask import Flask, Response, jsonify, request

from app.integrations.tax import nuonuo_protocol as nn
from app.integrations.tax import signing
from app.integrations.tax.base import LineKind, RedReason, dec_str
from sandbox.tax import faults as faults_mod
from sandbox.tax.service import (
    ProviderError,
    SandboxConfig,
    SandboxService,
    parse_issue_batch,
    parse_serial_batch,
    prepare_issue,
)

Handler = Callable[[bool], Response]


def _fresh(timestamp: str, window_s: int) -> bool:
    """A signed request's unix timestamp lies within the allowed window (replays age out)."""
    try:
        return abs(time.time() - int(timestamp)) <= window_s
    except ValueError:
        return False


def create_sandbox_app(config: SandboxConfig | Mapping[str, Any]) -> Flask:
    """The sandbox provider as a Flask app (its own store; no Kaipiao app context needed)."""
    if not isinstance(config, SandboxConfig):
        config = SandboxConfig.from_mapping(config)
    service = SandboxService(config)
    app = Flask("kaipiao_sandbox_tax")
    app.config["SANDBOX"] = service
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _admin_routes(app, service)
    if config.wire == "native":
        _native_routes(app, service)
    else:
        _nuonuo_routes(app, service)

    @app.get("/files/<number>.pdf")
    def pdf(number: str) -> Response:
        # A placeholder document: the sandbox has no renderer; the URL only has to work.
        body = f"%PDF-1.4\n% Kaipiao sandbox invoice {number}\n%%EOF\n".encode()
        return Response(body, mimetype="application/pdf")

    return app


def _with_faults(service: SandboxService, kind: str, handler: Handler,
                 error: Callable[[ProviderError], Response], *, admit: Callable[[], None] | None = None,
                 batch: bool = False) -> Response:
    """Admit the call (nonce, token: ``admit``), decide its injected fault and run the handler.

    Admission, the fault decision and the operation share one store transaction (one commit per
    call) unless latency is injected: then admission and the decision commit first, so the
    write lock is not held while the call sleeps, and the operation runs after the sleep."""
    response: Response | None = None
    failure: Exception | None = None
    with service.store.tx():
        if admit is not None:
            try:
                admit()
            except ProviderError as exc:
                return error(exc)  # commits what admission recorded (nonce, refusal counters)
        decision = service.decide_fault(kind, batch=batch)
        inline = not decision.latency_ms and decision.mode not in ("error_5xx", "rate_limit")
        if inline:
            response, failure = _run(handler, decision, error)
    if decision.latency_ms:
        time.sleep(decision.latency_ms / 1000)
    if decision.mode == "error_5xx":
        return error(ProviderError("INTERNAL", "服务暂时不可用(沙箱注入)"))
    if decision.mode == "rate_limit":
        response = error(ProviderError("RATE_LIMITED", "请求过于频繁(沙箱注入)"))
        response.headers["Retry-After"] = "1"
        return response
    if not inline:
        response, failure = _run(handler, decision, error)
    if failure is not None:
        raise failure  # a bug, not a refusal: its own writes were undone, admission kept
    assert response is not None
    if decision.mode == "timeout":
        # Processed, but the answer comes after the caller gave up: the outcome is unknown to it.
        time.sleep(decision.timeout_sleep_ms / 1000)
        return response
    if decision.mode == "unknown":
        return error(ProviderError("INTERNAL", "系统异常(沙箱注入: 已处理但返回失败)"))
    return response


def _run(handler: Handler, decision: faults_mod.FaultDecision,
         error: Callable[[ProviderError], Response]) -> tuple[Response | None, Exception | None]:
    try:
        return handler(decision.mode == "fail_later"), None
    except ProviderError as exc:
        return error(exc), None
    except Exception as exc:  # re-raised by the caller once the transaction is done
        return None, exc


T = TypeVar("T")


def _prepare(parse: Callable[[], T]) -> Callable[[], T]:
    """Parse a request body before the store transaction (no lock held for the CPU work); a
    refusal is raised where the handler runs, so it keeps its place after admission."""
    try:
        value = parse()
    except ProviderError as exc:
        refusal = exc

        def refuse() -> T:
            raise refusal

        return refuse
    return lambda: value


# -------------------------------------------------------------------------------------- native


def _native_error(exc: ProviderError) -> Response:
    response = jsonify({"error": {"code": exc.code, "message": exc.message, "permanent": exc.spec.permanent}})
    response.status_code = exc.spec.http_status
    return response


def _native_routes(app: Flask, service: SandboxService) -> None:
    config = service.config

    def authenticate() -> str:
        """Key, timestamp and signature (no store access unless refused): the nonce to admit."""
        headers = request.headers
        app_key = headers.get(signing.H_APP_KEY, "")
        timestamp = headers.get(signing.H_TIMESTAMP, "")
        nonce = headers.get(signing.H_NONCE, "")
        signature = headers.get(signing.H_SIGNATURE, "")
        if app_key != config.app_key or not nonce or not signature:
            service.count("signature_rejected")
            raise ProviderError("BAD_SIGNATURE", "appKey或签名缺失/无效")
        if not _fresh(timestamp, config.timestamp_window_s):
            service.count("signature_rejected")
            raise ProviderError("STALE_TIMESTAMP", "时间戳超出允许范围")
        expected = signing.native_sign(config.app_secret, request.method, request.path, timestamp, nonce,
                                       request.get_data())
        if not signing.constant_time_equal(expected, signature):
            service.count("signature_rejected")
            raise ProviderError("BAD_SIGNATURE", "签名校验失败")
        return nonce

    def signed(kind: str, handler: Handler, *, batch: bool = False) -> Response:
        try:
            nonce = authenticate()
        except ProviderError as exc:
            return _native_error(exc)
        return _with_faults(service, kind, handler, _native_error, batch=batch,
                            admit=lambda: service.check_nonce(config.app_key, nonce, config.timestamp_window_s))

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ProviderError("MALFORMED", "请求体必须是JSON对象")
        return data

    def accepted_body(result: dict[str, Any], duplicate: bool) -> dict[str, Any]:
        return {"serial_no": result["serial_no"], "provider_serial": result["provider_serial"],
                "status": result["status"], "duplicate": duplicate}

    def accepted(result: dict[str, Any], duplicate: bool) -> Response:
        response = jsonify(accepted_body(result, duplicate))
        response.status_code = 200 if duplicate else 202
        return response

    def refused(serial_no: str, exc: ProviderError) -> dict[str, Any]:
        return {"serial_no": serial_no,
                "error": {"code": exc.code, "message": exc.message, "permanent": exc.spec.permanent}}

    def with_pdf(result: dict[str, Any]) -> dict[str, Any]:
        if result.get("number"):
            result["pdf_url"] = f"{request.host_url}files/{result['number']}.pdf"
        return result

    @app.post("/v1/invoices")
    def issue() -> Response:
        prepared = _prepare(lambda: prepare_issue(body()))
        return signed("issue", lambda fail_later: accepted(*service.issue(prepared(), fail_later=fail_later)))

    @app.post("/v1/invoices/batch")
    def issue_batch() -> Response:
        prepared = _prepare(lambda: parse_issue_batch(body()))

        def handler(_f: bool) -> Response:
            items = prepared()
            answers = service.issue_many(items)
            return jsonify({"results": [
                refused(item.request.serial_no, answer) if isinstance(answer, ProviderError)
                else accepted_body(*answer) for item, answer in zip(items, answers, strict=True)]})

        return signed("issue", handler, batch=True)

    @app.post("/v1/invoices/query")
    def query_batch() -> Response:
        prepared = _prepare(lambda: parse_serial_batch(body()))

        def handler(_f: bool) -> Response:
            serial_nos = prepared()
            answers = service.query_many(serial_nos)
            return jsonify({"results": [
                refused(serial_no, answer) if isinstance(answer, ProviderError) else with_pdf(answer)
                for serial_no, answer in zip(serial_nos, answers, strict=True)]})

        return signed("query", handler, batch=True)

    @app.get("/v1/invoices/<serial_no>")
    def query(serial_no: str) -> Response:
        return signed("query", lambda _f: jsonify(with_pdf(service.query(serial_no))))

    @app.post("/v1/invoices/<serial_no>/cancel")
    def cancel(serial_no: str) -> Response:
        return signed("cancel", lambda _f: jsonify(service.cancel(serial_no)))

    @app.post("/v1/invoices/<serial_no>/retry")
    def retry(serial_no: str) -> Response:
        return signed("retry", lambda fail_later: accepted(service.retry(serial_no, fail_later=fail_later), False))

    @app.post("/v1/red-confirms")
    def apply_confirm() -> Response:
        return signed("red_confirm", lambda _f: jsonify(service.apply_red_confirm(body())))

    @app.get("/v1/red-confirms/<confirm_id>")
    def query_confirm(confirm_id: str) -> Response:
        return signed("red_confirm", lambda _f: jsonify(service.query_red_confirm(confirm_id)))

    @app.post("/v1/red-invoices")
    def red() -> Response:
        return signed("red", lambda fail_later: accepted(*service.red_letter(body(), fail_later=fail_later)))

    @app.get("/v1/credit")
    def credit() -> Response:
        return signed("credit", lambda _f: jsonify(service.credit()))

    @app.get("/v1/credit/<seller_tax_id>")
    def seller_credit(seller_tax_id: str) -> Response:
        return signed("credit", lambda _f: jsonify(service.credit(seller_tax_id)))


# -------------------------------------------------------------------------------------- nuonuo


def _nn_envelope(code: str, describe: str, result: Any = None, status: int = 200) -> Response:
    response = jsonify({"code": code, "describe": describe, "result": result})
    response.status_code = status
    return response


def _nn_error(exc: ProviderError) -> Response:
    # Transport-level refusals keep their HTTP status; business errors are 200 + code (Nuonuo style).
    status = exc.spec.http_status if exc.spec.http_status in (401, 429, 500, 502, 503) else 200
    return _nn_envelope(exc.spec.nuonuo_code, exc.message, None, status)


def _nn_decimal(value: Any, name: str) -> str:
    if value is None or value == "":
        raise ProviderError("AMOUNTS_REQUIRED", f"{name}不能为空: 请传入不含税金额、税额、含税金额")
    try:
        return dec_str(Decimal(str(value))) or ""
    except InvalidOperation as exc:
        raise ProviderError("MALFORMED", f"{name}不是数字: {value}") from exc


def nuonuo_order_to_canonical(order: Mapping[str, Any], user_tax: str) -> dict[str, Any]:
    """requestBillingNew ``order`` -> canonical issue payload (the sandbox's internal shape)."""
    invoice_type = str(order.get("invoiceType", ""))
    if invoice_type not in ("1", "2"):
        raise ProviderError("INVOICE_TYPE", "开票类型只能为1或2")
    if invoice_type == "2":
        raise ProviderError("MALFORMED", "数电红票请使用 fastInvoiceRed / saveInvoiceRedConfirm")
    line = str(order.get("invoiceLine") or "p")
    if line not in nn.INVOICE_LINE_KIND:
        raise ProviderError("MALFORMED", f"沙箱仅支持数电电票 pc/bs, 收到 {line}")
    order_no = str(order.get("orderNo") or "")
    if not order_no or len(order_no) > nn.MAX_ORDER_NO:
        raise ProviderError("MALFORMED", "orderNo必填且不超过20位")
    seller_tax = str(order.get("salerTaxNum") or "")
    if not seller_tax or (user_tax and seller_tax != user_tax):
        raise ProviderError("SELLER_MISMATCH", "userTax与销方税号salerTaxNum不一致")
    for required in ("buyerName", "clerk", "invoiceDate"):
        if not order.get(required):
            raise ProviderError("MALFORMED", f"{required}不能为空")
    details = order.get("invoiceDetail")
    if not isinstance(details, list) or not details:
        raise ProviderError("MALFORMED", "invoiceDetail不能为空")
    lines = []
    for index, detail in enumerate(details):
        where = f"第{index + 1}行"
        prop = str(detail.get("invoiceLineProperty", "0"))
        if prop not in nn.LINE_PROPERTY_KIND:
            raise ProviderError("MALFORMED", f"{where}: invoiceLineProperty只能为0/1/2")
        rate = _nn_decimal(detail.get("taxRate"), f"{where} taxRate")
        item: dict[str, Any] = {
            "seq": index + 1,
            "kind": nn.LINE_PROPERTY_KIND[prop].value,
            "name": str(detail.get("goodsName") or ""),
            "tax_code": str(detail.get("goodsCode") or ""),
            "tax_rate": rate,
            "amount": _nn_decimal(detail.get("taxExcludedAmount"), f"{where} taxExcludedAmount"),
            "tax": _nn_decimal(detail.get("tax"), f"{where} tax"),
            "gross": _nn_decimal(detail.get("taxIncludedAmount"), f"{where} taxIncludedAmount"),
        }
        price, num = detail.get("price"), detail.get("num")
        if bool(price) != bool(num):
            raise ProviderError("MALFORMED", f"{where}: 单价和数量须同时为空或同时填写")
        if price and num:
            unit_price = Decimal(str(price))
            if str(detail.get("withTaxFlag")) == "1":
                unit_price = unit_price / (1 + Decimal(rate))
            item["quantity"] = _nn_decimal(num, f"{where} num")
            item["unit_price"] = dec_str(unit_price.quantize(Decimal("0.00000001")))
        if detail.get("unit"):
            item["unit"] = detail["unit"]
        if detail.get("specType"):
            item["spec"] = detail["specType"]
        lines.append(item)
    natural = str(order.get("naturalPersonFlag", "0")) == "1"
    buyer: dict[str, Any] = {"name": order["buyerName"]}
    if order.get("buyerTaxNum"):
        buyer["tax_id"] = order["buyerTaxNum"]
    if natural:
        buyer["natural_person"] = True
        buyer["title_type"] = "personal"
    for ours, theirs in (("address", "buyerAddress"), ("phone", "buyerTel"), ("account", "buyerAccount")):
        if order.get(theirs):
            buyer[ours] = order[theirs]
    return {
        "serial_no": order_no,
        "kind": nn.INVOICE_LINE_KIND[line].value,
        "buyer": buyer,
        "seller": {"name": str(order.get("salerName") or "销方"), "tax_id": seller_tax},
        "lines": lines,
        "remark": str(order.get("remark") or ""),
    }


def _nn_red_lines(detail: Any) -> list[dict[str, Any]] | None:
    if not detail:
        return None
    out = []
    for row in detail:
        item = {
            "blue_seq": row.get("blueDetailIndex"),
            "name": row.get("goodsName"),
            "tax_code": row.get("goodsCode"),
            "tax_rate": row.get("taxRate"),
            "amount": row.get("taxExcludedAmount"),
            "tax": row.get("taxAmount"),
        }
        if row.get("num"):
            item["quantity"] = row["num"]
        if row.get("taxExcludedPrice"):
            item["unit_price"] = row["taxExcludedPrice"]
        out.append(item)
    return out


def _nn_result_item(result: dict[str, Any], payload: dict[str, Any] | None, with_detail: bool) -> dict[str, Any]:
    status = {"pending": "20", "issued": nn.STATUS_ISSUED, "failed": "22"}[result["status"]]
    if (result.get("error") or {}).get("code") == "ISSUE_FAILED":
        status = "24"  # the injected bureau failure is retryable, like 开票成功签章失败
    status_msg = {"20": "开票中", "2": "开票完成（最终状态）", "22": "开票失败", "24": "开票成功签章失败"}[status]
    issued_ms = None
    if result.get("issued_at"):
        issued_ms = int(datetime.fromisoformat(result["issued_at"]).timestamp() * 1000)
    number = result.get("number") or ""
    item: dict[str, Any] = {
        "serialNo": result["provider_serial"],
        "orderNo": result["serial_no"],
        "status": status,
        "statusMsg": status_msg,
        "failCause": (result.get("error") or {}).get("message", ""),
        "invoiceTime": issued_ms,
        "invoiceCode": "",
        "invoiceNo": number,
        "allElectronicInvoiceNumbe": number,
        "exTaxAmount": result["total_amount"],
        "taxAmount": result["total_tax"],
        "orderAmount": result["total"],
        "pdfUrl": f"{request.host_url}files/{number}.pdf" if number else "",
        "ofdUrl": "",
        "invoiceKind": "电子发票(增值税专用发票)" if result["kind"] == "special" else "电子发票(普通发票)",
        "invoiceType": "1" if result["color"] == "blue" else "2",
        "oldEleInvoiceNumber": result.get("blue_number") or "",
    }
    if payload is not None and result["color"] == "blue":
        item["payerName"] = payload["buyer"]["name"]
        item["payerTaxNo"] = payload["buyer"].get("tax_id", "")
        item["salerTaxNum"] = payload["seller"]["tax_id"]
    if with_detail and payload is not None:
        items = []
        for line in payload["lines"]:
            items.append({
                "itemName": line["name"], "itemCode": line["tax_code"], "itemNum": line.get("quantity", ""),
                "itemPrice": line.get("unit_price", ""), "itemAmount": line["amount"],
                "itemTaxRate": line["tax_rate"], "itemTaxAmount": line["tax"], "isIncludeTax": "false",
                "invoiceLineProperty": nn.LINE_PROPERTY[LineKind(line.get("kind", "normal"))],
            })
        item["invoiceItems"] = items
    return item


def _nn_confirm_item(confirm: dict[str, Any]) -> dict[str, Any]:
    return {
        "billId": confirm["confirm_id"], "billNo": confirm["bill_no"], "billUuid": confirm["bill_uuid"],
        "billStatus": confirm["status"], "requestStatus": "1",
        "openStatus": "1" if confirm["red_serial"] else "0",
        "blueElecInvoiceNumber": confirm["blue_number"], "blueInvoiceNumber": confirm["blue_number"],
        "taxExcludedAmount": confirm["total_amount"], "taxAmount": confirm["total_tax"],
        "redReason": nn.RED_REASON[RedReason(confirm["reason"])],
    }


def _nuonuo_routes(app: Flask, service: SandboxService) -> None:
    config = service.config

    @app.post(nn.TOKEN_PATH)
    def token() -> Response:
        def handler(_f: bool) -> Response:
            form = request.form
            if form.get("grant_type") != "client_credentials":
                return _oauth_error("unsupported_grant_type", "only client_credentials is supported")
            if form.get("client_id") != config.app_key or not signing.constant_time_equal(
                    form.get("client_secret", ""), config.app_secret):
                return _oauth_error("invalid_client", "client_id or client_secret is wrong")
            access_token, ttl = service.new_token()
            return jsonify({"access_token": access_token, "expires_in": ttl})

        return _with_faults(service, "token", handler, _nn_error)

    def authenticate() -> tuple[str, str]:
        """appkey, timestamp and X-Nuonuo-Sign (no store access unless refused): the nonce key
        and the userTax header."""
        args, headers = request.args, request.headers
        app_key, senid = args.get("appkey", ""), args.get("senid", "")
        nonce, timestamp = args.get("nonce", ""), args.get("timestamp", "")
        if app_key != config.app_key or not senid or not nonce:
            service.count("signature_rejected")
            raise ProviderError("BAD_SIGNATURE", "appkey/senid/nonce缺失或无效")
        if not _fresh(timestamp, config.timestamp_window_s):
            service.count("signature_rejected")
            raise ProviderError("STALE_TIMESTAMP", "timestamp超出允许范围")
        body = request.get_data().decode("utf-8", errors="replace")
        expected = signing.nuonuo_sign(config.app_secret, request.path, app_key, senid, nonce, timestamp, body)
        if not signing.constant_time_equal(expected, headers.get("X-Nuonuo-Sign", "")):
            service.count("signature_rejected")
            raise ProviderError("BAD_SIGNATURE", "X-Nuonuo-Sign签名校验失败")
        return f"{senid}:{nonce}", headers.get("userTax", "")

    def admit(nonce: str, access_token: str, user_tax: str) -> None:
        service.check_nonce(config.app_key, nonce, config.timestamp_window_s)
        if not service.token_valid(access_token):
            raise ProviderError("TOKEN_INVALID", "accessToken无效或已过期")
        if config.seller_tax_id and user_tax and user_tax != config.seller_tax_id:
            raise ProviderError("SELLER_MISMATCH", "该应用未获得此税号授权")

    def content() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ProviderError("MALFORMED", "content必须是JSON对象")
        return data

    def check_seller(user_tax: str, seller: str) -> None:
        if user_tax and seller and seller != user_tax:
            raise ProviderError("SELLER_MISMATCH", "userTax与销方税号不一致")

    def issue(user_tax: str, fail_later: bool) -> Response:
        order = content().get("order")
        if not isinstance(order, dict):
            raise ProviderError("MALFORMED", "缺少order")
        result, duplicate = service.issue(nuonuo_order_to_canonical(order, user_tax), fail_later=fail_later)
        if duplicate:  # Nuonuo answers every repeated orderNo with E9106
            raise ProviderError("DUPLICATE_SERIAL", "订单编号或流水号不能重复")
        return _nn_envelope(nn.OK, "开票提交成功", {"invoiceSerialNum": result["provider_serial"]})

    def query(_user_tax: str, _f: bool) -> Response:
        data = content()
        serial_nos, order_nos = data.get("serialNos") or [], data.get("orderNos") or []
        if not isinstance(serial_nos, list) or not isinstance(order_nos, list):
            raise ProviderError("MALFORMED", "serialNos/orderNos必须是数组")
        if len(serial_nos) > nn.MAX_QUERY or len(order_nos) > nn.MAX_QUERY:
            raise ProviderError("MALFORMED", "一次最多查询50个")
        if serial_nos:  # serial wins
            keys = [k for k in (service.find_by_provider_serial(str(s)) for s in serial_nos) if k]
        else:
            keys = [str(k) for k in order_nos]
        with_detail = str(data.get("isOfferInvoiceDetail")) == "1"
        items = []
        for key, result in zip(keys, service.query_many(keys) if keys else [], strict=True):
            if isinstance(result, ProviderError):
                continue  # Nuonuo leaves unknown orders out of the array
            items.append(_nn_result_item(result, service.stored_payload(key), with_detail))
        return _nn_envelope(nn.OK, "获取成功", items)

    def save_confirm(user_tax: str, _f: bool) -> Response:
        data = content()
        check_seller(user_tax, str(data.get("sellerTaxNo") or ""))
        if str(data.get("applySource", "0")) != "0":
            raise ProviderError("MALFORMED", "沙箱仅支持销方申请 applySource=0")
        if data.get("blueInvoiceLine") not in nn.INVOICE_LINE_KIND:
            raise ProviderError("MALFORMED", "blueInvoiceLine必须为pc或bs")
        reason = nn.RED_REASON_KIND.get(str(data.get("redReason", "")))
        if reason is None:
            raise ProviderError("MALFORMED", "redReason只能为1-4")
        blue = data.get("blueElecInvoiceNumber") or data.get("blueInvoiceNumber")
        if not blue:
            raise ProviderError("MALFORMED", "blueElecInvoiceNumber不能为空")
        confirm = service.apply_red_confirm({"apply_id": data.get("billId") or None, "blue_number": blue,
                                             "reason": reason.value, "lines": _nn_red_lines(data.get("detail"))})
        return _nn_envelope(nn.OK, "成功", confirm["confirm_id"])

    def query_confirm(_user_tax: str, _f: bool) -> Response:
        data = content()
        key = data.get("billUuid") or data.get("billId") or data.get("billNo")
        if not key:
            raise ProviderError("MALFORMED", "billId/billNo/billUuid至少传一个")
        try:
            items = [_nn_confirm_item(service.query_red_confirm(str(key)))]
        except ProviderError as exc:
            if exc.code != "NOT_FOUND":
                raise
            items = []
        return _nn_envelope(nn.OK, "成功", {"total": len(items), "list": items})

    def fast_red(user_tax: str, fail_later: bool) -> Response:
        data = content()
        check_seller(user_tax, str(data.get("taxNum") or ""))
        order_no = str(data.get("orderNo") or "")
        if not order_no or len(order_no) > nn.MAX_ORDER_NO:
            raise ProviderError("MALFORMED", "orderNo必填且不超过20位")
        blue = data.get("elecInvoiceNumber")
        if not blue and data.get("invoiceId"):
            blue_serial = service.find_by_provider_serial(str(data["invoiceId"]))
            blue = service.query(blue_serial)["number"] if blue_serial else None
        if not blue:
            raise ProviderError("MALFORMED", "elecInvoiceNumber不能为空")
        result, duplicate = service.red_letter(
            {"serial_no": order_no, "blue_number": blue, "reason": "wrong",
             "confirm_id": data.get("billUuid") or data.get("billNo") or None}, fail_later=fail_later)
        if duplicate:
            raise ProviderError("DUPLICATE_SERIAL", "订单编号或流水号不能重复")
        return _nn_envelope(nn.OK, "冲红提交成功", {"invoiceSerialNum": result["provider_serial"]})

    def reinvoice(_user_tax: str, fail_later: bool) -> Response:
        data = content()
        provider_serial = str(data.get("fpqqlsh") or "")
        order_no = str(data.get("orderNo") or "")
        if not provider_serial and not order_no:
            raise ProviderError("MALFORMED", "fpqqlsh和orderNo至少传一个")
        serial_no = service.find_by_provider_serial(provider_serial) if provider_serial else order_no
        if serial_no is None:
            raise ProviderError("NOT_FOUND", f"流水号不存在: {provider_serial}")
        if order_no and serial_no != order_no:
            raise ProviderError("MALFORMED", "fpqqlsh与orderNo不是同一张发票")
        result = service.retry(serial_no, fail_later=fail_later)
        return _nn_envelope(nn.OK, "开票重试提交成功", {"invoiceSerialNum": result["provider_serial"]})

    def credit(user_tax: str, _f: bool) -> Response:
        data = content()
        if str(data.get("operateType", "1")) == "0":
            return _nn_envelope(nn.OK, "刷新请求成功", None)
        state = service.credit(user_tax or None)
        return _nn_envelope(nn.OK, "成功", {"month": state["month"], "totalCreditLine": state["limit"],
                                            "usedCreditLine": state["used"],
                                            "remainingCreditLine": state["remaining"]})

    methods: dict[str, tuple[str, Callable[[str, bool], Response]]] = {
        nn.M_ISSUE: ("issue", issue),
        nn.M_QUERY: ("query", query),
        nn.M_RED_CONFIRM_SAVE: ("red_confirm", save_confirm),
        nn.M_RED_CONFIRM_QUERY: ("red_confirm", query_confirm),
        nn.M_RED_FAST: ("red", fast_red),
        nn.M_RETRY: ("retry", reinvoice),
        nn.M_CREDIT: ("credit", credit),
    }

    @app.post(nn.SERVICES_PATH)
    def services() -> Response:
        try:
            nonce, user_tax = authenticate()
        except ProviderError as exc:
            return _nn_error(exc)
        access_token = request.headers.get("accessToken", "")
        method = request.headers.get("method", "")
        if method not in methods:
            try:
                with service.store.tx():
                    admit(nonce, access_token, user_tax)
            except ProviderError as exc:
                return _nn_error(exc)
            return _nn_envelope(nn.E_MISSING_PARAM, f"不支持的method: {method}")
        kind, handler = methods[method]
        return _with_faults(service, kind, lambda fail_later: handler(user_tax, fail_later), _nn_error,
                            admit=lambda: admit(nonce, access_token, user_tax))


def _oauth_error(error: str, description: str) -> Response:
    response = jsonify({"error": error, "error_description": description})
    response.status_code = 400
    return response


# --------------------------------------------------------------------------------------- admin


def _admin_routes(app: Flask, service: SandboxService) -> None:
    def admin_error(exc: Exception) -> Response:
        response = jsonify({"error": {"code": getattr(exc, "code", "BAD_REQUEST"), "message": str(exc)}})
        response.status_code = getattr(getattr(exc, "spec", None), "http_status", 400)
        return response

    @app.route("/admin/faults", methods=["GET", "POST"])
    def admin_faults() -> Response:
        if request.method == "GET":
            return jsonify(service.get_faults())
        patch = request.get_json(silent=True)
        if not isinstance(patch, dict):
            return admin_error(ValueError("body must be a JSON object"))
        try:
            return jsonify(service.set_faults(patch))
        except ValueError as exc:
            return admin_error(exc)

    def seller_tax_id(data: Any) -> str | None:
        value = data.get("seller_tax_id") if isinstance(data, dict) else None
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError("seller_tax_id must be a tax id")
        return value

    @app.post("/admin/renew-login")
    def renew_login() -> Response:
        try:
            return jsonify(service.renew_login(seller_tax_id(request.get_json(silent=True))))
        except ValueError as exc:
            return admin_error(exc)

    @app.post("/admin/expire-login")
    def expire_login() -> Response:
        try:
            return jsonify(service.expire_login(seller_tax_id(request.get_json(silent=True))))
        except ValueError as exc:
            return admin_error(exc)

    @app.get("/admin/state")
    def state() -> Response:
        return jsonify(service.state())

    @app.post("/admin/red-confirms/<key>")
    def decide_confirm(key: str) -> Response:
        data = request.get_json(silent=True) or {}
        try:
            return jsonify(service.decide_confirm(key, str(data.get("action", ""))))
        except ProviderError as exc:
            return admin_error(exc)

    @app.route("/admin/credit", methods=["GET", "POST"])
    def admin_credit() -> Response:
        if request.method == "GET":
            return jsonify(service.credit(request.args.get("seller_tax_id") or None))
        data = request.get_json(silent=True) or {}
        try:
            return jsonify(service.set_credit(data.get("limit"), data.get("used"), seller_tax_id(data)))
        except (TypeError, ValueError) as exc:
            return admin_error(exc)

    @app.post("/admin/revoke-tokens")
    def revoke_tokens() -> Response:
        service.revoke_tokens()
        return jsonify({"revoked": True})
