"""The sandbox provider's behaviour, independent of the wire format.

Requests arrive as canonical dicts (the shapes of ``IssueRequest.to_dict()`` and friends); the
native and Nuonuo wires translate into them. Rules enforced are the ones real providers enforce
(apis.md §7, fapiao.md §1.2, §5.2, §6.2, §7, §8). Issuance is asynchronous: a request is
accepted as ``pending`` and becomes ``issued`` once its delay has passed; the transition happens
lazily on the next read, inside a write transaction, so it needs no background thread and
survives restarts.

Each seller (tax id) is its own account at the provider, as at a real one: its own monthly
credit (授信额度: a default limit for every seller, ``credit_limits`` or the admin endpoint per
seller) and its own tax-bureau login (expired for every seller, or for some).
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.engine.clock import BEIJING
from app.integrations.tax import base
from app.integrations.tax.base import IssueLine, IssueRequest, LineKind, RedLine, RedReason
from sandbox.tax import faults as faults_mod
from sandbox.tax.store import Store, bump, kv_get, kv_set

# GB/T 2260 province-level prefixes (计划单列市 codes are unpublished: fapiao.md §3.1).
PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 "
    "71 81 82".split()
)
TAX_TOLERANCE = Decimal("0.06")  # per line |amount×rate − tax| (fapiao.md §5.2)
INVOICE_TAX_TOLERANCE = Decimal("1.27")  # Σ(amount×rate − tax) per invoice
MAX_LINES = 2000
MAX_REMARK = 200  # 数电票 remark
MAX_RETRIES_PER_DAY = 20  # 开票重试 per serial and day (Nuonuo E9613, apis.md §7.2)
# Why a retry is refused, by the provider's status (Nuonuo's reInvoice prompts, where it has one).
NOT_RETRYABLE = {
    "pending": "开票中（重试中），请耐心等待开票结果",
    "issued": "发票已生成，无需再重试开票",
    "cancelled": "请求已撤销, 不能重试开票",
}


@dataclass(frozen=True)
class ErrorSpec:
    http_status: int
    nuonuo_code: str
    permanent: bool


# Native code -> HTTP status and the Nuonuo code the nuonuo wire answers with. Nuonuo codes from
# apis.md §7.2 where documented; E9160, E917x, E9429, E9614, E9701, E9997-E9999 are this sandbox's
# own choices (the sources give no code for them) and the Nuonuo adapter maps them explicitly.
ERRORS: dict[str, ErrorSpec] = {
    "MALFORMED": ErrorSpec(400, "E4000", True),
    "BAD_SIGNATURE": ErrorSpec(401, "E9997", True),
    "STALE_TIMESTAMP": ErrorSpec(401, "E9997", True),
    "REPLAYED_NONCE": ErrorSpec(401, "E9997", True),
    "TOKEN_INVALID": ErrorSpec(401, "E9998", False),
    "LOGIN_EXPIRED": ErrorSpec(403, "E9701", False),
    "NOT_FOUND": ErrorSpec(404, "E4000", True),
    "DUPLICATE_SERIAL": ErrorSpec(409, "E9106", True),
    "NOT_CANCELLABLE": ErrorSpec(409, "E4000", True),
    "NOT_RETRYABLE": ErrorSpec(409, "E9614", True),
    "RETRY_LIMIT": ErrorSpec(422, "E9613", True),
    "TAX_TOLERANCE": ErrorSpec(422, "E9131", True),
    "AMOUNT_MISMATCH": ErrorSpec(422, "E9130", True),
    "AMOUNTS_REQUIRED": ErrorSpec(422, "E9123", True),
    "DISCOUNT_ADJACENCY": ErrorSpec(422, "E9105", True),
    "DISCOUNT_MISMATCH": ErrorSpec(422, "E9108", True),
    "DISCOUNT_SIGN": ErrorSpec(422, "E9110", True),
    "DISCOUNT_TOO_LARGE": ErrorSpec(422, "E9111", True),
    "TAX_CODE_MISSING": ErrorSpec(422, "E9121", True),
    "TAX_CODE": ErrorSpec(422, "E9138", True),
    "INVOICE_TYPE": ErrorSpec(422, "E9101", True),
    "SPECIAL_BUYER": ErrorSpec(422, "E4000", True),
    "TOO_MANY_LINES": ErrorSpec(422, "E4000", True),
    "REMARK_TOO_LONG": ErrorSpec(422, "E4000", True),
    "SELLER_MISMATCH": ErrorSpec(422, "E9302", True),
    "CREDIT_EXCEEDED": ErrorSpec(422, "E9160", True),
    "RED_CONFIRM_REQUIRED": ErrorSpec(422, "E9170", True),
    "RED_EXCEEDS_BLUE": ErrorSpec(422, "E9171", True),
    "RED_LINE_INVALID": ErrorSpec(422, "E9172", True),
    "RED_NOT_ALLOWED": ErrorSpec(422, "E9173", True),
    "RATE_LIMITED": ErrorSpec(429, "E9429", False),
    "INTERNAL": ErrorSpec(503, "E9999", False),
}


class ProviderError(Exception):
    # Refusals are raised before any data write, so the store commits the counters they bumped.
    commit_transaction = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.spec = ERRORS[code]


@dataclass
class SandboxConfig:
    db_path: str
    wire: str = "native"  # native | nuonuo
    app_key: str = "sandbox-app"  # a fake provider's well-known test credentials
    app_secret: str = "sandbox-secret"
    seller_tax_id: str | None = None  # Nuonuo userTax the app may act for; None = any
    latency_ms: int = 0
    fail_rate: float = 0.0
    issue_delay_ms: int = 0
    confirm_delay_ms: int | None = None
    timeout_sleep_ms: int = 2000
    credit_limit: Decimal = Decimal("10000000.00")  # each seller's monthly credit, unless in credit_limits
    credit_limits: Mapping[str, Decimal] = field(default_factory=dict)  # seller tax id -> its own limit
    timestamp_window_s: int = 300
    channel_digit: str = "3"
    fallback_province: str = "33"
    token_ttl_s: int = 86400
    unknown_tax_codes: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SandboxConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown sandbox settings: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "credit_limit" in values:
            values["credit_limit"] = base.money(values["credit_limit"])
        if "credit_limits" in values:
            values["credit_limits"] = {str(k): base.money(v) for k, v in dict(values["credit_limits"]).items()}
        if "db_path" in values:
            values["db_path"] = str(values["db_path"])
        if "unknown_tax_codes" in values:
            values["unknown_tax_codes"] = tuple(values["unknown_tax_codes"])
        if values.get("wire", "native") not in ("native", "nuonuo"):
            raise ValueError("wire must be native or nuonuo")
        return cls(**values)


def to_fen(value: Decimal) -> int:
    return int((value * 100).to_integral_value())


def from_fen(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(base.CENT)


def province_of(tax_id: str, fallback: str) -> str:
    """Province digits of the seller: USCC chars 3–4 (registration division) or, for legacy
    15/18-digit ids, the first two digits."""
    if len(tax_id) == 18 and tax_id[2:4] in PROVINCES:
        return tax_id[2:4]
    if tax_id[:2] in PROVINCES:
        return tax_id[:2]
    return fallback


def iso_cn(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, BEIJING).isoformat(timespec="milliseconds")


def canonical_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# ------------------------------------------------------------------------------ validation rules


def _malformed(path: str, problem: str) -> ProviderError:
    return ProviderError("MALFORMED", f"请求数据格式错误: {path}: {problem}")


def _check_shape(payload: Any, where: str) -> None:
    """Structural checks naming the field at fault (``invoices[3].lines[0].tax_code``); the
    business rules (tax codes, tolerances, ...) are ``validate_blue``'s."""

    def at(name: str) -> str:
        return f"{where}.{name}" if where else name

    if not isinstance(payload, Mapping):
        raise _malformed(where or "body", "必须是JSON对象")
    serial = payload.get("serial_no")
    if not isinstance(serial, str) or not 1 <= len(serial) <= 64:
        raise _malformed(at("serial_no"), "必填, 1..64个字符")
    if payload.get("kind", "normal") not in {kind.value for kind in base.InvoiceKind}:
        raise _malformed(at("kind"), f"只能为normal或special: {payload.get('kind')!r}")
    for party in ("buyer", "seller"):
        value = payload.get(party)
        if not isinstance(value, Mapping):
            raise _malformed(at(party), "必须是JSON对象")
        if not isinstance(value.get("name"), str):
            raise _malformed(at(f"{party}.name"), "必填字符串")
    if not payload["seller"].get("tax_id"):
        raise _malformed(at("seller.tax_id"), "销方税号不能为空")
    lines = payload.get("lines")
    if not isinstance(lines, list) or not lines:
        raise _malformed(at("lines"), "发票明细不能为空")
    kinds = {kind.value for kind in LineKind}
    for index, line in enumerate(lines):
        here = at(f"lines[{index}]")
        if not isinstance(line, Mapping):
            raise _malformed(here, "必须是JSON对象")
        seq = line.get("seq")
        if isinstance(seq, bool) or not (isinstance(seq, int) or (isinstance(seq, str) and seq.isdigit())):
            raise _malformed(f"{here}.seq", "必填整数")
        if line.get("kind", "normal") not in kinds:
            raise _malformed(f"{here}.kind", f"只能为normal/discounted/discount: {line.get('kind')!r}")
        for name in ("name", "tax_code"):
            if not isinstance(line.get(name), str):
                raise _malformed(f"{here}.{name}", "必填字符串")
        for name in ("tax_rate", "amount", "tax", "gross", "quantity", "unit_price"):
            value = line.get(name)
            if value in (None, "") and name in ("quantity", "unit_price"):
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise _malformed(f"{here}.{name}", "必须是十进制数字字符串")
            try:
                Decimal(str(value))
            except ArithmeticError:
                raise _malformed(f"{here}.{name}", f"不是数字: {value!r}") from None


def parse_issue(payload: Any, where: str = "") -> IssueRequest:
    """A canonical issue payload as an ``IssueRequest``; MALFORMED names the field (prefixed
    with ``where``, e.g. ``invoices[3]``, inside a batch)."""
    _check_shape(payload, where)
    try:
        request = IssueRequest(
            serial_no=str(payload["serial_no"]),
            kind=base.InvoiceKind(payload.get("kind", "normal")),
            buyer=base.Party.from_dict(payload["buyer"]),
            seller=base.Party.from_dict(payload["seller"]),
            lines=tuple(IssueLine.from_dict(line) for line in payload["lines"]),
            remark=str(payload.get("remark") or ""),
        )
    except ProviderError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise _malformed(where or "body", str(exc)) from exc
    return request


@dataclass(frozen=True)
class PreparedIssue:
    """An issue request parsed, canonicalised and hashed before any transaction starts."""

    request: IssueRequest
    canonical: dict[str, Any]
    digest: str
    payload_json: str


def prepare_issue(payload: Any, where: str = "") -> PreparedIssue:
    request = parse_issue(payload, where)
    canonical = request.to_dict()
    return PreparedIssue(request=request, canonical=canonical, digest=canonical_hash(canonical),
                         payload_json=json.dumps(canonical, ensure_ascii=False))


MAX_BATCH = 50  # invoices per batch issue, serials per batch query (Nuonuo's query limit)


def parse_issue_batch(data: Any) -> list[PreparedIssue]:
    """``{"invoices": [...]}`` with 1..50 issue payloads; any malformed item refuses the call."""
    invoices = data.get("invoices") if isinstance(data, Mapping) else None
    if not isinstance(invoices, list):
        raise _malformed("invoices", "必须是数组")
    if not 1 <= len(invoices) <= MAX_BATCH:
        raise _malformed("invoices", f"每次1..{MAX_BATCH}张, 收到{len(invoices)}张")
    return [prepare_issue(item, f"invoices[{index}]") for index, item in enumerate(invoices)]


def parse_serial_batch(data: Any) -> list[str]:
    """``{"serial_nos": [...]}`` with 1..50 serials."""
    serials = data.get("serial_nos") if isinstance(data, Mapping) else None
    if not isinstance(serials, list):
        raise _malformed("serial_nos", "必须是数组")
    if not 1 <= len(serials) <= MAX_BATCH:
        raise _malformed("serial_nos", f"每次1..{MAX_BATCH}个, 收到{len(serials)}个")
    for index, serial in enumerate(serials):
        if not isinstance(serial, str) or not 1 <= len(serial) <= 64:
            raise _malformed(f"serial_nos[{index}]", "必须是1..64个字符的字符串")
    return list(serials)


def check_tax_code(code: str, where: str, unknown: tuple[str, ...]) -> None:
    if not code:
        raise ProviderError("TAX_CODE_MISSING", f"{where}: 商品编码不能为空")
    if len(code) != 19 or not code.isdigit():
        raise ProviderError("TAX_CODE", f"{where}: 商品编码必须是19位数字: {code}")
    # Top-level 税收分类 categories are 1–6 (goods, services, ..., 不征税); anything else is unknown.
    if code[0] not in "123456" or code in unknown:
        raise ProviderError("TAX_CODE", f"{where}: 商品编码不存在: {code}")


def line_tax_residual(amount: Decimal, rate: Decimal, tax: Decimal) -> Decimal:
    return amount * rate - tax


def validate_blue(request: IssueRequest, config: SandboxConfig) -> None:
    """Provider-side checks of a blue invoice, in the order a provider reports them."""
    if len(request.lines) > MAX_LINES:
        raise ProviderError("TOO_MANY_LINES", f"明细行数{len(request.lines)}超过{MAX_LINES}行(含折扣行)")
    if len(request.remark) > MAX_REMARK:
        raise ProviderError("REMARK_TOO_LONG", f"备注长度{len(request.remark)}超过{MAX_REMARK}字符")
    if request.kind == base.InvoiceKind.SPECIAL:
        # No 专票 to consumers (增值税暂行条例 第二十一条); 专票 needs the buyer tax id.
        if request.buyer.title_type == "personal" or request.buyer.natural_person:
            raise ProviderError("SPECIAL_BUYER", "购买方为自然人/个人的, 不得开具增值税专用发票")
        if not request.buyer.tax_id:
            raise ProviderError("SPECIAL_BUYER", "数电专票购方税号必填")
    invoice_residual = Decimal("0")
    lines = request.lines
    for index, line in enumerate(lines):
        where = f"第{index + 1}行"
        check_tax_code(line.tax_code, where, config.unknown_tax_codes)
        if line.amount + line.tax != line.gross:
            raise ProviderError("AMOUNT_MISMATCH", f"{where}: 不含税金额+税额≠含税金额")
        residual = line_tax_residual(line.amount, line.tax_rate, line.tax)
        if abs(residual) > TAX_TOLERANCE:
            raise ProviderError("TAX_TOLERANCE", f"{where}: 金额×税率−税额={residual:.4f}, 误差超过0.06")
        invoice_residual += residual
        if line.kind == LineKind.DISCOUNT:
            previous = lines[index - 1] if index > 0 else None
            if previous is None or previous.kind != LineKind.DISCOUNTED:
                raise ProviderError("DISCOUNT_ADJACENCY", f"{where}: 折扣行必须紧邻被折扣行之后")
            if (line.name, line.tax_code, line.tax_rate) != (previous.name, previous.tax_code,
                                                             previous.tax_rate):
                raise ProviderError("DISCOUNT_MISMATCH", f"{where}: 折扣行商品名称、编码、税率须与被折扣行一致")
            if line.gross >= 0 or line.amount > 0:
                raise ProviderError("DISCOUNT_SIGN", f"{where}: 折扣行金额必须为负数")
            if -line.gross > previous.gross:
                raise ProviderError("DISCOUNT_TOO_LARGE", f"{where}: 折扣金额不能大于被折扣行金额")
        elif line.kind == LineKind.DISCOUNTED:
            following = lines[index + 1] if index + 1 < len(lines) else None
            if following is None or following.kind != LineKind.DISCOUNT:
                raise ProviderError("DISCOUNT_ADJACENCY", f"{where}: 被折扣行之后必须紧跟折扣行")
        elif line.gross < 0 or line.amount < 0:
            raise ProviderError("DISCOUNT_SIGN", f"{where}: 正常行金额不能为负数")
    if abs(invoice_residual) > INVOICE_TAX_TOLERANCE:
        raise ProviderError("TAX_TOLERANCE", f"整张发票税额累计误差{invoice_residual:.4f}超过1.27")


def full_red_lines(blue_lines: list[dict[str, Any]]) -> list[RedLine]:
    """The red lines reversing a whole blue invoice: discounted pairs are netted into one normal
    line (红票只有正常行), quantities negated."""
    parsed = [IssueLine.from_dict(line) for line in blue_lines]
    out: list[RedLine] = []
    index = 0
    while index < len(parsed):
        line = parsed[index]
        amount, tax = line.amount, line.tax
        if line.kind == LineKind.DISCOUNTED and index + 1 < len(parsed):
            amount += parsed[index + 1].amount
            tax += parsed[index + 1].tax
            index += 1
        out.append(RedLine(
            blue_seq=line.seq, name=line.name, tax_code=line.tax_code, tax_rate=line.tax_rate,
            amount=-amount, tax=-tax,
            quantity=-line.quantity if line.quantity is not None else None,
        ))
        index += 1
    return out


def parse_red_lines(raw: Any) -> list[RedLine] | None:
    if raw is None:
        return None
    try:
        lines = [RedLine.from_dict(line) for line in raw]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderError("MALFORMED", f"红字明细格式错误: {exc}") from exc
    if not lines:
        raise ProviderError("MALFORMED", "红字明细不能为空 (全额冲红请不传明细)")
    return lines


def red_lines_json(lines: list[RedLine]) -> list[dict[str, Any]]:
    return [line.to_dict() for line in lines]


# ------------------------------------------------------------------------------------- credit

_LIMIT_PREFIX = "credit_limit_fen:"  # kv key of one seller's own monthly limit (fen)


def _limit_key(seller_tax_id: str | None) -> str:
    return f"{_LIMIT_PREFIX}{seller_tax_id}"


def _figures(limit_fen: int, used_fen: int) -> dict[str, str]:
    return {"limit": str(from_fen(limit_fen)), "used": str(from_fen(used_fen)),
            "remaining": str(from_fen(max(limit_fen - used_fen, 0)))}


def _migrate_credit(conn: sqlite3.Connection) -> None:
    """A store from before credit was per seller kept one ``credit`` row per month: what each
    seller used is what its accepted blue invoices hold (pending or issued; failed and
    cancelled ones gave theirs back)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'credit'").fetchone() is None:
        return
    conn.execute(
        "INSERT OR IGNORE INTO seller_credit(seller_tax_id, month, used_fen)"
        " SELECT seller_tax_id, credit_month, SUM(gross_fen) FROM invoices"
        " WHERE color = 'blue' AND status IN ('pending', 'issued') GROUP BY seller_tax_id, credit_month")
    conn.execute("DROP TABLE credit")


# ------------------------------------------------------------------------------------- service


class SandboxService:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.store = Store(config.db_path)
        self.rng = random.Random(config.seed)
        with self.store.tx() as conn:
            previous = kv_get(conn, faults_mod.KEY)
            defaults = faults_mod.default_faults(
                latency_ms=config.latency_ms, fail_rate=config.fail_rate,
                issue_delay_ms=config.issue_delay_ms, confirm_delay_ms=config.confirm_delay_ms,
                timeout_sleep_ms=config.timeout_sleep_ms)
            # A restart resets injected faults to the flags, but an expired tax-bureau login stays
            # expired: restarting the provider does not log anyone back in.
            if previous is not None:
                for key in faults_mod.LOGIN_KEYS:
                    defaults[key] = json.loads(previous).get(key, defaults[key])
            faults_mod.save(conn, defaults)
            if kv_get(conn, "credit_limit_fen") is None:
                kv_set(conn, "credit_limit_fen", str(to_fen(config.credit_limit)))
            for seller_tax_id, limit in config.credit_limits.items():
                if kv_get(conn, _limit_key(seller_tax_id)) is None:
                    kv_set(conn, _limit_key(seller_tax_id), str(to_fen(limit)))
            _migrate_credit(conn)
        # The constructing thread usually serves no requests: do not keep its connection open.
        self.store.close()

    # ------------------------------------------------------------------ helpers

    def now(self) -> float:
        return time.time()

    def month_of(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, BEIJING).strftime("%Y-%m")

    def _faults(self, conn: sqlite3.Connection) -> dict[str, Any]:
        return faults_mod.load(conn)

    def decide_fault(self, kind: str, *, batch: bool = False) -> faults_mod.FaultDecision:
        """The injected fault of one call (for a batch call: of the whole call; per-invoice modes
        are drawn by ``issue_many``)."""
        with self.store.tx() as conn:
            decision = faults_mod.decide(conn, kind, self.rng, batch=batch)
            if decision.mode != "none":
                bump(conn, "faults_injected")
                bump(conn, f"faults_injected.{kind}.{decision.mode}")
            return decision

    def _check_login(self, conn: sqlite3.Connection, faults: dict[str, Any] | None = None, *,
                     sellers: Iterable[str] = ()) -> None:
        """Refuse the call if the tax-bureau login of every seller, or of one of ``sellers``
        (the tax ids the call acts for), has expired."""
        faults = faults or self._faults(conn)
        expired = set(faults.get("login_expired_sellers") or ())
        if faults["login_expired"] or expired.intersection(sellers):
            bump(conn, "login_expired_refusals")
            raise ProviderError("LOGIN_EXPIRED", "电子税务局登录已失效, 请开票员完成刷脸认证后重试")

    def _get(self, conn: sqlite3.Connection, serial_no: str) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM invoices WHERE serial_no = ?", (serial_no,)).fetchone()

    def _next(self, conn: sqlite3.Connection, name: str) -> int:
        bump(conn, name)
        return int(conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def _provider_serial(self, conn: sqlite3.Connection, at: float) -> str:
        stamp = datetime.fromtimestamp(at, BEIJING).strftime("%y%m%d%H%M%S")
        return f"{stamp}{self._next(conn, 'seq.provider_serial') % 10**8:08d}"

    def _number(self, conn: sqlite3.Connection, seller_tax_id: str, at: float) -> str:
        """20 digits: yy + province + channel + 15-digit sequence (fapiao.md §3.1)."""
        year = datetime.fromtimestamp(at, BEIJING).strftime("%y")
        province = province_of(seller_tax_id, self.config.fallback_province)
        seq = self._next(conn, "seq.number")
        return f"{year}{province}{self.config.channel_digit}{seq:015d}"

    def credit_limit_fen(self, conn: sqlite3.Connection, seller_tax_id: str | None = None) -> int:
        """A seller's monthly limit (its own, else the default); without a seller, the default."""
        own = kv_get(conn, _limit_key(seller_tax_id)) if seller_tax_id else None
        return int(own or kv_get(conn, "credit_limit_fen") or to_fen(self.config.credit_limit))

    def _used_fen(self, conn: sqlite3.Connection, month: str, seller_tax_id: str) -> int:
        row = conn.execute("SELECT used_fen FROM seller_credit WHERE seller_tax_id = ? AND month = ?",
                           (seller_tax_id, month)).fetchone()
        return 0 if row is None else int(row["used_fen"])

    def _add_used(self, conn: sqlite3.Connection, month: str, seller_tax_id: str, fen: int) -> None:
        conn.execute(
            "INSERT INTO seller_credit(seller_tax_id, month, used_fen) VALUES (?, ?, ?) "
            "ON CONFLICT(seller_tax_id, month) DO UPDATE SET used_fen = used_fen + excluded.used_fen",
            (seller_tax_id, month, fen),
        )

    def _take_credit(self, conn: sqlite3.Connection, month: str, seller_tax_id: str, fen: int,
                     counter: str) -> None:
        """Use ``fen`` of the seller's credit this month, or refuse (CREDIT_EXCEEDED)."""
        limit, used = self.credit_limit_fen(conn, seller_tax_id), self._used_fen(conn, month, seller_tax_id)
        if used + fen > limit:
            bump(conn, counter)
            raise ProviderError("CREDIT_EXCEEDED",
                                f"本月授信额度不足: 剩余{from_fen(max(limit - used, 0))}, 本次{from_fen(fen)}")
        self._add_used(conn, month, seller_tax_id, fen)

    def _settle(self, conn: sqlite3.Connection, row: sqlite3.Row) -> sqlite3.Row:
        """pending -> issued/failed once the row's delay has passed."""
        now = self.now()
        if row["status"] != "pending" or now < row["ready_at"]:
            return row
        if row["fail_code"]:
            conn.execute("UPDATE invoices SET status = 'failed' WHERE serial_no = ?", (row["serial_no"],))
            if row["color"] == "blue":
                self._add_used(conn, row["credit_month"], row["seller_tax_id"], -row["gross_fen"])
            bump(conn, "failed")
        else:
            # Issued when the delay ran out (as the tax bureau would have), not when asked.
            issued_at = row["ready_at"]
            number = self._number(conn, row["seller_tax_id"], issued_at)
            conn.execute("UPDATE invoices SET status = 'issued', number = ?, issued_at = ? WHERE serial_no = ?",
                         (number, issued_at, row["serial_no"]))
            bump(conn, "issued" if row["color"] == "blue" else "red_issued")
        return self._get(conn, row["serial_no"])

    def row_to_result(self, row: sqlite3.Row) -> dict[str, Any]:
        out: dict[str, Any] = {
            "serial_no": row["serial_no"],
            "provider_serial": row["provider_serial"],
            "color": row["color"],
            "kind": row["kind"],
            "status": "failed" if row["status"] == "cancelled" else row["status"],
            "number": row["number"],
            "issued_at": iso_cn(row["issued_at"]),
            "accepted_at": iso_cn(row["accepted_at"]),
            "total_amount": str(from_fen(row["amount_fen"])),
            "total_tax": str(from_fen(row["tax_fen"])),
            "total": str(from_fen(row["gross_fen"])),
            "blue_number": row["blue_number"],
            "confirm_id": row["confirm_id"],
        }
        if row["status"] == "cancelled":
            out["error"] = {"code": "CANCELLED", "message": "请求已撤销", "permanent": True}
        elif row["status"] == "failed":
            out["error"] = {"code": row["fail_code"], "message": row["fail_reason"], "permanent": False}
        return out

    # ---------------------------------------------------------------- operations

    def issue(self, payload: Mapping[str, Any] | PreparedIssue, *,
              fail_later: bool = False) -> tuple[dict[str, Any], bool]:
        """Accept a blue invoice. Returns (result, duplicate)."""
        prepared = payload if isinstance(payload, PreparedIssue) else prepare_issue(payload)
        with self.store.tx() as conn:
            faults = self._faults(conn)
            self._check_login(conn, faults, sellers=[prepared.request.seller.tax_id or ""])
            return self._issue_one(conn, prepared, fail_later=fail_later,
                                   delay_s=faults["issue_delay_ms"] / 1000)

    def issue_many(self, items: list[PreparedIssue]) -> list[tuple[dict[str, Any], bool] | ProviderError]:
        """Accept several blue invoices in one transaction; one answer per item, in order:
        (result, duplicate) or the item's refusal. An expired login (of every seller, or of a
        seller an item is for) refuses the whole call (raises). Each item is handled exactly like ``issue`` (so a serial repeated inside the
        batch is a duplicate, or DUPLICATE_SERIAL for different data); ``fail_later`` is drawn
        per item."""
        with self.store.tx() as conn:
            faults = self._faults(conn)
            self._check_login(conn, faults, sellers={item.request.seller.tax_id or "" for item in items})
            modes = faults_mod.draw_per_item(conn, "issue", self.rng, len(items))
            for mode in modes:
                if mode != "none":
                    bump(conn, "faults_injected")
                    bump(conn, f"faults_injected.issue.{mode}")
            delay_s = faults["issue_delay_ms"] / 1000
            answers: list[tuple[dict[str, Any], bool] | ProviderError] = []
            for item, mode in zip(items, modes, strict=True):
                try:
                    # Refusals are raised before any data write (only their counters), so the
                    # batch needs no savepoint per item.
                    answers.append(self._issue_one(conn, item, fail_later=mode == "fail_later", delay_s=delay_s))
                except ProviderError as exc:
                    answers.append(exc)
            bump(conn, "batch_calls.issue")
            bump(conn, "batch_items.issue", len(items))
            return answers

    def _issue_one(self, conn: sqlite3.Connection, prepared: PreparedIssue, *, fail_later: bool,
                   delay_s: float) -> tuple[dict[str, Any], bool]:
        request, digest = prepared.request, prepared.digest
        existing = self._get(conn, request.serial_no)
        if existing is not None:
            if existing["payload_hash"] == digest and existing["color"] == "blue":
                bump(conn, "duplicates_refused")
                return self.row_to_result(self._settle(conn, existing)), True
            bump(conn, "conflicts")
            raise ProviderError("DUPLICATE_SERIAL", f"订单编号或流水号不能重复: {request.serial_no}")
        try:
            validate_blue(request, self.config)
        except ProviderError:
            bump(conn, "rejected")
            raise
        now = self.now()
        month = self.month_of(now)
        gross_fen = to_fen(request.total)
        self._take_credit(conn, month, request.seller.tax_id or "", gross_fen, "rejected")
        conn.execute(
            "INSERT INTO invoices (serial_no, provider_serial, color, kind, payload_hash, payload,"
            " seller_tax_id, buyer_name, buyer_tax_id, buyer_enterprise, status, accepted_at, ready_at,"
            " amount_fen, tax_fen, gross_fen, credit_month, fail_code, fail_reason)"
            " VALUES (?, ?, 'blue', ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
            (request.serial_no, self._provider_serial(conn, now), request.kind.value, digest,
             prepared.payload_json, request.seller.tax_id, request.buyer.name, request.buyer.tax_id,
             int(request.buyer.is_enterprise or request.kind == base.InvoiceKind.SPECIAL),
             now, now + delay_s, to_fen(request.total_amount), to_fen(request.total_tax), gross_fen, month,
             "ISSUE_FAILED" if fail_later else None,
             "税局开具失败(沙箱注入)" if fail_later else None),
        )
        bump(conn, "accepted")
        # Always answer "accepted, pending" like real providers; the first query settles it.
        return self.row_to_result(self._get(conn, request.serial_no)), False

    def query(self, serial_no: str) -> dict[str, Any]:
        with self.store.read() as conn:
            row = self._get(conn, serial_no)
        if row is None:
            raise ProviderError("NOT_FOUND", f"流水号不存在: {serial_no}")
        if row["status"] == "pending" and self.now() >= row["ready_at"]:
            with self.store.tx() as conn:
                row = self._settle(conn, self._get(conn, serial_no))
        return self.row_to_result(row)

    def query_many(self, serial_nos: list[str]) -> list[dict[str, Any] | ProviderError]:
        """Results by serial in one transaction (settling the rows whose delay passed); an
        unknown serial answers NOT_FOUND in its place."""
        with self.store.tx() as conn:
            answers: list[dict[str, Any] | ProviderError] = []
            for serial_no in serial_nos:
                row = self._get(conn, serial_no)
                if row is None:
                    answers.append(ProviderError("NOT_FOUND", f"流水号不存在: {serial_no}"))
                else:
                    answers.append(self.row_to_result(self._settle(conn, row)))
            bump(conn, "batch_calls.query")
            bump(conn, "batch_items.query", len(serial_nos))
            return answers

    def find_by_provider_serial(self, provider_serial: str) -> str | None:
        with self.store.read() as conn:
            row = conn.execute("SELECT serial_no FROM invoices WHERE provider_serial = ?",
                               (provider_serial,)).fetchone()
        return None if row is None else row["serial_no"]

    def stored_payload(self, serial_no: str) -> dict[str, Any] | None:
        with self.store.read() as conn:
            row = self._get(conn, serial_no)
        return None if row is None else json.loads(row["payload"])

    def cancel(self, serial_no: str) -> dict[str, Any]:
        with self.store.tx() as conn:
            row = self._get(conn, serial_no)
            if row is None:
                raise ProviderError("NOT_FOUND", f"流水号不存在: {serial_no}")
            row = self._settle(conn, row)
            if row["status"] == "cancelled":
                return self.row_to_result(row)
            if row["status"] != "pending":
                raise ProviderError("NOT_CANCELLABLE", f"发票状态为{row['status']}, 只能撤销开具中的请求")
            conn.execute("UPDATE invoices SET status = 'cancelled' WHERE serial_no = ?", (serial_no,))
            if row["color"] == "blue":
                self._add_used(conn, row["credit_month"], row["seller_tax_id"], -row["gross_fen"])
            if row["confirm_id"]:  # the 确认单 can be used again
                conn.execute("UPDATE red_confirms SET red_serial = NULL WHERE confirm_id = ?", (row["confirm_id"],))
            bump(conn, "cancelled")
            return self.row_to_result(self._get(conn, serial_no))

    def retry(self, serial_no: str, *, fail_later: bool = False) -> dict[str, Any]:
        """开票重试 (Nuonuo reInvoice): a request held as failed goes back to pending under the
        same serial and provider serial, then becomes issued (or fails again: ``fail_later``).
        The row is the same one, so a serial never has more than one invoice. Refused with
        NOT_FOUND (never accepted), NOT_RETRYABLE (pending, issued or cancelled: nothing to
        retry), RETRY_LIMIT (more than 20 retries of the serial today), CREDIT_EXCEEDED (the
        failure gave its credit back; a retry takes it again) or LOGIN_EXPIRED."""
        with self.store.tx() as conn:
            faults = self._faults(conn)
            row = self._get(conn, serial_no)
            self._check_login(conn, faults, sellers=[row["seller_tax_id"]] if row is not None else [])
            if row is None:
                raise ProviderError("NOT_FOUND", f"流水号不存在: {serial_no}")
            row = self._settle(conn, row)
            if row["status"] != "failed":
                bump(conn, "retries_refused")
                raise ProviderError("NOT_RETRYABLE", f"{serial_no}: {NOT_RETRYABLE[row['status']]}")
            now = self.now()
            day = datetime.fromtimestamp(now, BEIJING).strftime("%Y-%m-%d")
            done = conn.execute("SELECT count FROM retries WHERE serial_no = ? AND day = ?", (serial_no, day)).fetchone()
            if done is not None and done["count"] >= MAX_RETRIES_PER_DAY:
                bump(conn, "retries_refused")
                raise ProviderError("RETRY_LIMIT", f"同一流水号每天最多重试{MAX_RETRIES_PER_DAY}次: {serial_no}")
            month = self.month_of(now)
            if row["color"] == "blue":
                self._take_credit(conn, month, row["seller_tax_id"], row["gross_fen"], "retries_refused")
            else:
                # What the red reverses is checked again: another red may have reversed the blue
                # meanwhile (a failed red holds none of it).
                payload = json.loads(row["payload"])
                self._check_red(conn, self._issued_blue(conn, row["blue_number"]),
                                parse_red_lines(payload["lines"]) or [], RedReason(row["red_reason"]),
                                include_open_confirms=False)
            conn.execute(
                "UPDATE invoices SET status = 'pending', ready_at = ?, credit_month = ?, fail_code = ?,"
                " fail_reason = ? WHERE serial_no = ?",
                (now + faults["issue_delay_ms"] / 1000, month, "ISSUE_FAILED" if fail_later else None,
                 "税局开具失败(沙箱注入)" if fail_later else None, serial_no))
            conn.execute("INSERT INTO retries(serial_no, day, count) VALUES (?, ?, 1) ON CONFLICT(serial_no, day)"
                         " DO UPDATE SET count = count + 1", (serial_no, day))
            bump(conn, "retried")
            return self.row_to_result(self._get(conn, serial_no))

    def credit(self, seller_tax_id: str | None = None) -> dict[str, Any]:
        """This month's credit of one seller (tax id): ``{month, seller_tax_id, limit, used,
        remaining}``. Without a seller, the whole sandbox: the default limit, what every seller
        used together, and ``sellers``, each seller's own figures (for a sandbox with one
        seller, its figures)."""
        month = self.month_of(self.now())
        with self.store.read() as conn:
            if seller_tax_id:
                limit, used = self.credit_limit_fen(conn, seller_tax_id), self._used_fen(conn, month, seller_tax_id)
                return {"month": month, "seller_tax_id": seller_tax_id, **_figures(limit, used)}
            limit = self.credit_limit_fen(conn)
            rows = conn.execute("SELECT seller_tax_id, used_fen FROM seller_credit WHERE month = ?"
                                " ORDER BY seller_tax_id", (month,)).fetchall()
            own = {row["key"][len(_LIMIT_PREFIX):] for row in conn.execute(
                "SELECT key FROM kv WHERE key LIKE ?", (_LIMIT_PREFIX + "%",))}
            used_by = {row["seller_tax_id"]: int(row["used_fen"]) for row in rows}
            sellers = {tax_id: _figures(self.credit_limit_fen(conn, tax_id), used_by.get(tax_id, 0))
                       for tax_id in sorted(set(used_by) | own)}
        return {"month": month, **_figures(limit, sum(used_by.values())), "sellers": sellers}

    # ---------------------------------------------------------------- red letter

    def _issued_blue(self, conn: sqlite3.Connection, blue_number: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM invoices WHERE number = ?", (blue_number,)).fetchone()
        if row is None or row["color"] != "blue":
            raise ProviderError("NOT_FOUND", f"蓝字发票不存在: {blue_number}")
        if row["status"] != "issued":
            raise ProviderError("RED_NOT_ALLOWED", f"蓝字发票状态为{row['status']}, 不能红冲")
        return row

    def _reversed_so_far(self, conn: sqlite3.Connection, blue_number: str, *,
                         include_open_confirms: bool) -> tuple[dict[int, int], int]:
        """Gross fen already reversed per blue line, and in total (as positive numbers)."""
        per_line: dict[int, int] = {}
        total = 0
        chunks: list[list[dict[str, Any]]] = []
        for row in conn.execute("SELECT payload FROM invoices WHERE blue_number = ? AND status IN "
                                "('pending', 'issued')", (blue_number,)):
            chunks.append(json.loads(row["payload"])["lines"])
        if include_open_confirms:
            for row in conn.execute("SELECT lines FROM red_confirms WHERE blue_number = ? AND red_serial IS NULL"
                                    " AND status IN ('01', '02', '03', '04', '10')", (blue_number,)):
                chunks.append(json.loads(row["lines"]))
        for lines in chunks:
            for line in lines:
                fen = -to_fen(Decimal(line["gross"]))
                per_line[int(line["blue_seq"])] = per_line.get(int(line["blue_seq"]), 0) + fen
                total += fen
        return per_line, total

    def _check_red(self, conn: sqlite3.Connection, blue: sqlite3.Row, lines: list[RedLine],
                   reason: RedReason, *, include_open_confirms: bool) -> None:
        blue_lines = json.loads(blue["payload"])["lines"]
        by_seq = {int(line["seq"]): (index, line) for index, line in enumerate(blue_lines)}
        full = {line.blue_seq: line for line in full_red_lines(blue_lines)}
        done_per_line, done_total = self._reversed_so_far(conn, blue["number"],
                                                          include_open_confirms=include_open_confirms)
        seen: set[int] = set()
        new_total = 0
        for line in lines:
            where = f"蓝票第{line.blue_seq}行"
            if line.blue_seq in seen:
                raise ProviderError("RED_LINE_INVALID", f"{where}: 重复的红字明细")
            seen.add(line.blue_seq)
            if line.blue_seq not in by_seq:
                raise ProviderError("RED_LINE_INVALID", f"{where}: 蓝票无此明细行")
            blue_line = by_seq[line.blue_seq][1]
            if blue_line["kind"] == LineKind.DISCOUNT.value:
                raise ProviderError("RED_LINE_INVALID", f"{where}: 红票只有正常行, 请按被折扣行序号冲红折扣后金额")
            if (line.tax_code, line.tax_rate) != (blue_line["tax_code"], Decimal(blue_line["tax_rate"])) \
                    or line.name != blue_line["name"]:
                raise ProviderError("RED_LINE_INVALID", f"{where}: 商品名称、编码、税率须与蓝票一致")
            if line.amount > 0 or line.tax > 0 or line.gross >= 0:
                raise ProviderError("RED_LINE_INVALID", f"{where}: 红字金额、税额必须为负数")
            residual = line_tax_residual(line.amount, line.tax_rate, line.tax)
            if abs(residual) > TAX_TOLERANCE:
                raise ProviderError("TAX_TOLERANCE", f"{where}: 金额×税率−税额误差超过0.06")
            available = -to_fen(full[line.blue_seq].gross) - done_per_line.get(line.blue_seq, 0)
            if -to_fen(line.gross) > available:
                raise ProviderError("RED_EXCEEDS_BLUE",
                                    f"{where}: 红冲金额{-line.gross}超过可冲红金额{from_fen(available)}")
            new_total += -to_fen(line.gross)
        if done_total + new_total > blue["gross_fen"]:
            raise ProviderError("RED_EXCEEDS_BLUE", "累计红冲金额超过蓝字发票金额")
        if reason == RedReason.WRONG and (done_total != 0 or new_total != blue["gross_fen"]):
            raise ProviderError("RED_LINE_INVALID", "冲红原因为开票有误时必须全额红冲")

    def _settle_confirm(self, conn: sqlite3.Connection, row: sqlite3.Row) -> sqlite3.Row:
        if row["status"] == "02" and row["confirm_at"] is not None and self.now() >= row["confirm_at"]:
            conn.execute("UPDATE red_confirms SET status = '04' WHERE confirm_id = ?", (row["confirm_id"],))
            return conn.execute("SELECT * FROM red_confirms WHERE confirm_id = ?", (row["confirm_id"],)).fetchone()
        return row

    @staticmethod
    def confirm_to_result(row: sqlite3.Row) -> dict[str, Any]:
        lines = json.loads(row["lines"])
        return {
            "confirm_id": row["confirm_id"], "bill_no": row["bill_no"], "bill_uuid": row["bill_uuid"],
            "status": row["status"], "blue_number": row["blue_number"], "reason": row["reason"],
            "lines": lines, "total_amount": str(from_fen(row["amount_fen"])),
            "total_tax": str(from_fen(row["tax_fen"])), "total": str(from_fen(row["gross_fen"])),
            "created_at": iso_cn(row["created_at"]), "red_serial": row["red_serial"],
        }

    def _find_confirm(self, conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM red_confirms WHERE confirm_id = ? OR bill_no = ? OR bill_uuid = ?",
                            (key, key, key)).fetchone()

    def apply_red_confirm(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        try:
            blue_number = str(payload["blue_number"])
            reason = RedReason(payload["reason"])
        except (KeyError, ValueError) as exc:
            raise ProviderError("MALFORMED", f"确认单申请格式错误: {exc}") from exc
        apply_id = payload.get("apply_id") or None
        lines = parse_red_lines(payload.get("lines"))
        with self.store.tx() as conn:
            if apply_id:
                existing = conn.execute("SELECT * FROM red_confirms WHERE confirm_id = ?", (apply_id,)).fetchone()
                if existing is not None:
                    return self.confirm_to_result(self._settle_confirm(conn, existing))
            blue = self._issued_blue(conn, blue_number)
            if lines is None:
                lines = full_red_lines(json.loads(blue["payload"])["lines"])
            self._check_red(conn, blue, lines, reason, include_open_confirms=True)
            now = self.now()
            needs_confirmation = bool(blue["buyer_enterprise"])
            delay = self._faults(conn)["confirm_delay_ms"]
            confirm_id = apply_id or f"RC{uuid.uuid4().hex[:18].upper()}"
            conn.execute(
                "INSERT INTO red_confirms (confirm_id, bill_no, bill_uuid, blue_number, reason, lines, gross_fen,"
                " amount_fen, tax_fen, status, created_at, confirm_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (confirm_id, f"{self._next(conn, 'seq.bill_no'):020d}", uuid.uuid4().hex, blue_number,
                 reason.value, json.dumps(red_lines_json(lines), ensure_ascii=False),
                 sum(to_fen(line.gross) for line in lines), sum(to_fen(line.amount) for line in lines),
                 sum(to_fen(line.tax) for line in lines), "02" if needs_confirmation else "01", now,
                 now + delay / 1000 if needs_confirmation and delay is not None else None),
            )
            bump(conn, "red_confirms")
            row = conn.execute("SELECT * FROM red_confirms WHERE confirm_id = ?", (confirm_id,)).fetchone()
            return self.confirm_to_result(self._settle_confirm(conn, row))

    def query_red_confirm(self, key: str) -> dict[str, Any]:
        with self.store.tx() as conn:
            row = self._find_confirm(conn, key)
            if row is None:
                raise ProviderError("NOT_FOUND", f"红字确认单不存在: {key}")
            return self.confirm_to_result(self._settle_confirm(conn, row))

    def decide_confirm(self, key: str, action: str) -> dict[str, Any]:
        """The buyer's answer (admin endpoint): confirm -> 04, deny -> 05."""
        if action not in ("confirm", "deny"):
            raise ProviderError("MALFORMED", "action must be confirm or deny")
        with self.store.tx() as conn:
            row = self._find_confirm(conn, key)
            if row is None:
                raise ProviderError("NOT_FOUND", f"红字确认单不存在: {key}")
            if row["status"] != "02":
                raise ProviderError("RED_NOT_ALLOWED", f"确认单状态为{row['status']}, 不待购方确认")
            conn.execute("UPDATE red_confirms SET status = ? WHERE confirm_id = ?",
                         ("04" if action == "confirm" else "05", row["confirm_id"]))
            return self.confirm_to_result(self._find_confirm(conn, key))

    def red_letter(self, payload: Mapping[str, Any], *, fail_later: bool = False) -> tuple[dict[str, Any], bool]:
        try:
            serial_no = str(payload["serial_no"])
            blue_number = str(payload["blue_number"])
            reason = RedReason(payload.get("reason") or RedReason.WRONG.value)
        except (KeyError, ValueError) as exc:
            raise ProviderError("MALFORMED", f"红字请求格式错误: {exc}") from exc
        if not serial_no or len(serial_no) > 64:
            raise ProviderError("MALFORMED", "serial_no must be 1..64 characters")
        confirm_key = payload.get("confirm_id") or None
        lines = parse_red_lines(payload.get("lines"))
        request_key = {"serial_no": serial_no, "blue_number": blue_number, "reason": reason.value,
                       "confirm_id": confirm_key,
                       "lines": None if lines is None else red_lines_json(lines)}
        digest = canonical_hash(request_key)
        with self.store.tx() as conn:
            blue_row = conn.execute("SELECT seller_tax_id FROM invoices WHERE number = ?", (blue_number,)).fetchone()
            self._check_login(conn, sellers=[blue_row["seller_tax_id"]] if blue_row is not None else [])
            existing = self._get(conn, serial_no)
            if existing is not None:
                if existing["payload_hash"] == digest and existing["color"] == "red":
                    bump(conn, "duplicates_refused")
                    return self.row_to_result(self._settle(conn, existing)), True
                bump(conn, "conflicts")
                raise ProviderError("DUPLICATE_SERIAL", f"订单编号或流水号不能重复: {serial_no}")
            blue = self._issued_blue(conn, blue_number)
            confirm_id = None
            if confirm_key:
                confirm = self._find_confirm(conn, confirm_key)
                if confirm is None:
                    raise ProviderError("NOT_FOUND", f"红字确认单不存在: {confirm_key}")
                confirm = self._settle_confirm(conn, confirm)
                if confirm["blue_number"] != blue_number:
                    raise ProviderError("RED_NOT_ALLOWED", "确认单与蓝字发票不符")
                if confirm["status"] not in ("01", "04"):
                    raise ProviderError("RED_NOT_ALLOWED", f"确认单状态为{confirm['status']}, 不能开具红票")
                if confirm["red_serial"]:
                    raise ProviderError("RED_NOT_ALLOWED", "确认单已开具红票")
                confirm_lines = parse_red_lines(json.loads(confirm["lines"])) or []
                if lines is not None and red_lines_json(lines) != red_lines_json(confirm_lines):
                    raise ProviderError("RED_LINE_INVALID", "红字明细与确认单不一致")
                lines, reason, confirm_id = confirm_lines, RedReason(confirm["reason"]), confirm["confirm_id"]
            else:
                if blue["buyer_enterprise"]:
                    raise ProviderError("RED_CONFIRM_REQUIRED", "购方为企业, 须先申请红字确认单并经购方确认")
                if lines is None:
                    lines = full_red_lines(json.loads(blue["payload"])["lines"])
            try:
                self._check_red(conn, blue, lines, reason, include_open_confirms=False)
            except ProviderError:
                bump(conn, "rejected")
                raise
            now = self.now()
            red_payload = {**request_key, "lines": red_lines_json(lines)}
            delay = self._faults(conn)["issue_delay_ms"] / 1000
            conn.execute(
                "INSERT INTO invoices (serial_no, provider_serial, color, kind, payload_hash, payload,"
                " seller_tax_id, buyer_name, buyer_tax_id, buyer_enterprise, status, accepted_at, ready_at,"
                " amount_fen, tax_fen, gross_fen, credit_month, blue_number, confirm_id, red_reason,"
                " fail_code, fail_reason)"
                " VALUES (?, ?, 'red', ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (serial_no, self._provider_serial(conn, now), blue["kind"], digest,
                 json.dumps(red_payload, ensure_ascii=False), blue["seller_tax_id"], blue["buyer_name"],
                 blue["buyer_tax_id"], blue["buyer_enterprise"], now, now + delay,
                 sum(to_fen(line.amount) for line in lines), sum(to_fen(line.tax) for line in lines),
                 sum(to_fen(line.gross) for line in lines), self.month_of(now), blue_number, confirm_id,
                 reason.value, "ISSUE_FAILED" if fail_later else None,
                 "税局开具失败(沙箱注入)" if fail_later else None),
            )
            if confirm_id:
                conn.execute("UPDATE red_confirms SET red_serial = ? WHERE confirm_id = ?", (serial_no, confirm_id))
            bump(conn, "red_accepted")
            return self.row_to_result(self._get(conn, serial_no)), False

    # ---------------------------------------------------------------- auth and admin

    def check_nonce(self, app_key: str, nonce: str, window_s: int) -> None:
        now = self.now()
        with self.store.tx() as conn:
            conn.execute("DELETE FROM nonces WHERE seen_at < ?", (now - 2 * window_s,))
            try:
                conn.execute("INSERT INTO nonces(app_key, nonce, seen_at) VALUES (?, ?, ?)", (app_key, nonce, now))
            except sqlite3.IntegrityError:
                bump(conn, "replays_rejected")
                raise ProviderError("REPLAYED_NONCE", "nonce已使用, 拒绝重放请求") from None

    def count(self, name: str) -> None:
        with self.store.tx() as conn:
            bump(conn, name)

    def new_token(self) -> tuple[str, int]:
        token = uuid.uuid4().hex
        with self.store.tx() as conn:
            conn.execute("INSERT INTO tokens(token, expires_at) VALUES (?, ?)",
                         (token, self.now() + self.config.token_ttl_s))
            bump(conn, "tokens_issued")
        return token, self.config.token_ttl_s

    def token_valid(self, token: str) -> bool:
        with self.store.read() as conn:
            row = conn.execute("SELECT expires_at FROM tokens WHERE token = ?", (token,)).fetchone()
        return row is not None and row["expires_at"] > self.now()

    def revoke_tokens(self) -> None:
        with self.store.tx() as conn:
            conn.execute("DELETE FROM tokens")

    def get_faults(self) -> dict[str, Any]:
        with self.store.read() as conn:
            return faults_mod.load(conn)

    def set_faults(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        with self.store.tx() as conn:
            if patch.get("reset"):
                current = faults_mod.default_faults(
                    latency_ms=self.config.latency_ms, fail_rate=self.config.fail_rate,
                    issue_delay_ms=self.config.issue_delay_ms, confirm_delay_ms=self.config.confirm_delay_ms,
                    timeout_sleep_ms=self.config.timeout_sleep_ms)
                patch = {k: v for k, v in patch.items() if k != "reset"}
            else:
                current = faults_mod.load(conn)
            updated = faults_mod.merge(current, dict(patch))
            faults_mod.save(conn, updated)
            return updated

    def login_state(self) -> dict[str, Any]:
        faults = self.get_faults()
        return {key: faults[key] for key in faults_mod.LOGIN_KEYS}

    def expire_login(self, seller_tax_id: str | None = None) -> dict[str, Any]:
        """The tax-bureau login of one seller (tax id) expires, or of every seller."""
        with self.store.tx() as conn:
            faults = faults_mod.load(conn)
            if seller_tax_id:
                faults["login_expired_sellers"] = sorted({*faults["login_expired_sellers"], seller_tax_id})
            else:
                faults["login_expired"] = True
            faults_mod.save(conn, faults)
        return self.login_state()

    def renew_login(self, seller_tax_id: str | None = None) -> dict[str, Any]:
        """A seller (tax id) renewed its login (face authentication); without one, every seller.
        One seller cannot renew while every seller's login is expired: renew them all."""
        with self.store.tx() as conn:
            faults = faults_mod.load(conn)
            if seller_tax_id and faults["login_expired"]:
                raise ValueError("every seller's login is expired: renew without seller_tax_id")
            if seller_tax_id:
                faults["login_expired_sellers"] = [t for t in faults["login_expired_sellers"] if t != seller_tax_id]
            else:
                faults["login_expired"], faults["login_expired_sellers"] = False, []
            faults_mod.save(conn, faults)
            bump(conn, "login_renewals")
        return self.login_state()

    def set_credit(self, limit: Any = None, used: Any = None, seller_tax_id: str | None = None) -> dict[str, Any]:
        """Set one seller's monthly limit and this month's use (临时调增, a reset). Without a
        seller: ``limit`` becomes every seller's (their own limits dropped), ``used`` this
        month's use of every seller that has used credit this month."""
        limit_fen = None if limit is None else to_fen(base.money(limit))
        used_fen = None if used is None else to_fen(base.money(used))
        month = self.month_of(self.now())
        with self.store.tx() as conn:
            if limit_fen is not None and seller_tax_id:
                kv_set(conn, _limit_key(seller_tax_id), str(limit_fen))
            elif limit_fen is not None:
                kv_set(conn, "credit_limit_fen", str(limit_fen))
                conn.execute("DELETE FROM kv WHERE key LIKE ?", (_LIMIT_PREFIX + "%",))
            if used_fen is not None and seller_tax_id:
                conn.execute("INSERT INTO seller_credit(seller_tax_id, month, used_fen) VALUES (?, ?, ?)"
                             " ON CONFLICT(seller_tax_id, month) DO UPDATE SET used_fen = excluded.used_fen",
                             (seller_tax_id, month, used_fen))
            elif used_fen is not None:
                conn.execute("UPDATE seller_credit SET used_fen = ? WHERE month = ?", (used_fen, month))
        return self.credit(seller_tax_id)

    def state(self) -> dict[str, Any]:
        with self.store.read() as conn:
            counters = {row["name"]: row["value"] for row in conn.execute("SELECT name, value FROM counters")
                        if not row["name"].startswith("seq.")}
            by_status: dict[str, int] = {}
            for row in conn.execute("SELECT color, status, COUNT(*) AS n FROM invoices GROUP BY color, status"):
                by_status[f"{row['color']}.{row['status']}"] = row["n"]
            confirms = {row["status"]: row["n"] for row in
                        conn.execute("SELECT status, COUNT(*) AS n FROM red_confirms GROUP BY status")}
            faults = faults_mod.load(conn)
        return {"counters": counters, "invoices": by_status, "red_confirms": confirms,
                "credit": self.credit(), "faults": faults, "wire": self.config.wire,
                "db_path": str(Path(self.config.db_path)), "now": datetime.now(UTC).isoformat()}
