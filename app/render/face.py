"""Draft → printable face: the view model and the Jinja2 environment.

The templates only print what ``face_model`` prepared, so every number rule lives here in
Python (and in ``format``) where it is tested, not in template expressions.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from app.errors import Problem, ValidationFailed
from app.render import format as fmt

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

TITLES = {"normal": "电子发票（普通发票）", "special": "电子发票（增值税专用发票）"}
PREVIEW_MARK = "预览 PREVIEW — 未开具"

# A real face is a fixed frame; short invoices get an empty band so the frame keeps its
# proportions (the detail area of a 210×140 mm face holds about this many rows). The band is
# a class, kp-filler-<empty rows> in face.css (n × ROW_MM high), not a style attribute: web
# pages embed the face under a Content-Security-Policy that allows no inline style.
FRAME_ROWS = 9
ROW_MM = 5.2

# Labels around the face (the face itself is always Chinese, as the tax platform prints it).
CHROME = {
    "zh": {
        "decision": "开票决策",
        "actions": {"issue": "开具", "wait": "等待", "hold": "待人工处理", "skip": "不开票"},
        "issue_after": "最早开具时间",
        "rules_fired": "命中规则",
        "warnings": "提示",
        "no_invoice": "此订单没有要开具的发票。",
        "order": "订单",
    },
    "en": {
        "decision": "Decision",
        "actions": {"issue": "issue", "wait": "wait", "hold": "hold for review", "skip": "skip"},
        "issue_after": "Issue after",
        "rules_fired": "Rules fired",
        "warnings": "Warnings",
        "no_invoice": "Nothing to invoice for this order.",
        "order": "Order",
    },
}

_env: Environment | None = None
_env_lock = threading.Lock()
_css_cache: dict[str, str] = {}


def environment() -> Environment:
    """One autoescaping environment per process, independent of any Flask app."""
    global _env
    if _env is None:
        with _env_lock:
            if _env is None:
                _env = Environment(
                    loader=FileSystemLoader(str(TEMPLATES_DIR)),
                    autoescape=select_autoescape(["html"], default_for_string=True),
                    undefined=StrictUndefined,
                    trim_blocks=True,
                    lstrip_blocks=True,
                )
    return _env


def static_text(name: str) -> str:
    """A stylesheet from ``static/`` (read once; the files ship with the package)."""
    text = _css_cache.get(name)
    if text is None:
        text = (STATIC_DIR / name).read_text(encoding="utf-8")
        _css_cache[name] = text
    return text


def chrome_for(locale: str) -> dict[str, Any]:
    # Any zh_* (zh_CN, zh_Hans_CN...) and unknown locales get Chinese; en_* gets English.
    return CHROME["en"] if locale.lower().startswith("en") else CHROME["zh"]


def select_invoices(draft: dict, invoice_index: int | None) -> list[tuple[int, dict]]:
    """(0-based position, invoice) pairs to render; position feeds the 第 i 张 / 共 n 张 label."""
    invoices = draft.get("invoices") or []
    if invoice_index is None:
        return list(enumerate(invoices))
    if not 0 <= invoice_index < len(invoices):
        raise ValidationFailed(
            Problem(
                "invoice_index",
                "out_of_range",
                f"invoice_index {invoice_index} is outside the draft's {len(invoices)} invoice(s)",
            )
        )
    return [(invoice_index, invoices[invoice_index])]


def _party(party: dict) -> dict[str, str]:
    return {"name": party.get("name", ""), "tax_id": party.get("tax_id", "")}


def _bank_remarks(buyer: dict, seller: dict) -> list[str]:
    """Address/phone/bank details go to 备注 on a 数电票 face (the frame has no rows for them)."""
    out = []
    for prefix, party in (("购方", buyer), ("销方", seller)):
        parts = []
        if party.get("address") or party.get("phone"):
            parts.append(f"{prefix}地址、电话：{party.get('address', '')} {party.get('phone', '')}".rstrip())
        if party.get("bank") or party.get("account"):
            parts.append(f"{prefix}开户银行：{party.get('bank', '')}；银行账号：{party.get('account', '')}")
        out.extend(parts)
    return out


def _line(line: dict, red: bool) -> dict[str, Any]:
    # A red invoice prints every amount negative; drafts may carry either sign, the face
    # must not depend on it (fapiao.md §8.1: red lines are negative, 正常行 only).
    def flip(value: str | None) -> bool:
        return red and value not in (None, "") and not fmt.is_negative(value)

    amount, tax = line["amount"], line["tax"]
    quantity = line.get("quantity")
    return {
        "seq": line.get("seq"),
        "name": line.get("display_name") or line["name"],
        "spec": line.get("spec", ""),
        "unit": line.get("unit", ""),
        "quantity": fmt.trimmed(quantity, negate=flip(quantity)),
        # Unit prices keep what the draft gives (up to 8 dp) minus trailing zeros, but read as money.
        "unit_price": fmt.trimmed(line.get("unit_price"), min_places=2),
        "amount": fmt.money(amount, negate=flip(amount)),
        "rate": fmt.rate_text(line),
        "tax": fmt.money(tax, negate=flip(tax)),
        "discount": line.get("kind") == "discount",
    }


def face_model(draft: dict, position: int, invoice: dict, count: int) -> dict[str, Any]:
    """Everything one face prints, already formatted."""
    red = invoice.get("color") == "red"

    def total(key: str) -> str:
        value = invoice[key]
        return fmt.yuan(value, negate=red and not fmt.is_negative(value))

    words = invoice["total_in_words"]
    if red and not words.startswith("负"):
        words = "负" + words  # fapiao.md §9.2: red faces print the words with a 负 prefix
    number = invoice.get("number") or ""
    lines = [_line(line, red) for line in invoice["lines"]]
    remark = [invoice["remark"]] if invoice.get("remark") else []
    buyer, seller = invoice["buyer"], invoice["seller"]
    remark += _bank_remarks(buyer, seller)
    kind = invoice.get("kind", "normal")
    filler_rows = max(0, FRAME_ROWS - len(lines))
    return {
        "position": position + 1,
        "count": count,
        "title": TITLES.get(kind, TITLES["normal"]),
        "special": kind == "special",
        "red": red,
        "preview": not number,
        "preview_mark": PREVIEW_MARK,
        "number": number,
        "issued_on": fmt.face_date(invoice.get("issued_at")),
        "buyer": _party(buyer),
        "seller": _party(seller),
        "lines": lines,
        "filler_rows": filler_rows,
        "total_amount": total("total_amount"),
        "total_tax": total("total_tax"),
        "total": total("total"),
        "total_in_words": words,
        "remark": remark,
        "drawer": invoice.get("drawer", ""),
        "order_id": draft.get("order_id", ""),
    }


def _note(item: dict) -> dict[str, str]:
    return {"code": item.get("code", ""), "message": item.get("message", ""), "rule": item.get("rule", "")}


def decision_model(draft: dict, chrome: dict[str, Any]) -> dict[str, Any] | None:
    decision = draft.get("decision")
    if not decision:
        return None
    action = decision.get("action", "")
    return {
        "action": action,
        "action_text": chrome["actions"].get(action, action),
        "reasons": [_note(reason) for reason in decision.get("reasons") or []],
        "rules_fired": decision.get("rules_fired") or [],
        "issue_after": decision.get("issue_after", ""),
        "warnings": [_note(warning) for warning in draft.get("warnings") or []],
    }


def render_faces(
    draft: dict,
    *,
    invoice_index: int | None,
    standalone: bool,
    locale: str,
    with_decision: bool,
    inline_css: bool,
) -> Markup:
    """The HTML for the selected invoices of ``draft`` (see ``app.render.render_html``)."""
    chrome = chrome_for(locale)
    selected = select_invoices(draft, invoice_index)
    count = len(draft.get("invoices") or [])
    faces = [face_model(draft, position, invoice, count) for position, invoice in selected]
    template = environment().get_template("document.html" if standalone else "faces.html")
    html = template.render(
        faces=faces,
        decision=decision_model(draft, chrome) if with_decision else None,
        chrome=chrome,
        lang="en" if chrome is CHROME["en"] else "zh-CN",
        order_id=draft.get("order_id", ""),
        face_css=Markup(static_text("face.css")) if inline_css else None,
    )
    return Markup(html)
