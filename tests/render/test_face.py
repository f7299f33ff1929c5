"""HTML face: what a person (and the preview page) sees."""

import copy
import re

import pytest
from markupsafe import Markup

from app.errors import ValidationFailed
from app.render import FACE_CSS, render_html

from .conftest import synthetic_draft


def test_worked_draft_shows_the_face_elements(worked_draft):
    html = render_html(worked_draft)
    assert '<meta charset="utf-8">' in html
    assert "电子发票（普通发票）" in html
    for label in ("购", "销", "名称：", "统一社会信用代码/纳税人识别号：", "价税合计（大写）", "开票人："):
        assert label in html
    for column in ("项目名称", "规格型号", "单位", "数量", "单价", "金额", "税率/征收率", "税额"):
        assert f">{column}</th>" in html
    assert "杭州青禾电子商务有限公司" in html and "91110000600037341L" in html
    assert ">个人<" in html
    assert "*工艺品*手工陶瓷杯" in html and "*图书*Python编程" in html
    assert ">87.61<" in html  # unit price "87.61000000" trimmed
    assert ">2<" in html  # quantity "2"
    assert ">13%<" in html and ">9%<" in html
    assert "¥221.17" in html and "¥26.73" in html
    assert "⊗贰佰肆拾柒圆玖角整" in html and "¥247.90" in html
    assert "订单号:3141592653589793" in html


def test_discount_lines_are_negative_rows_right_after_their_line(worked_draft):
    html = render_html(worked_draft)
    rows = re.findall(r'<tr class="kp-line( kp-line--discount)?">(.*?)</tr>', html, re.S)
    assert [bool(flag) for flag, _ in rows] == [False, True, False, True, False]
    assert ">-13.58<" in rows[1][1] and ">-1.77<" in rows[1][1]
    assert ">-4.27<" in rows[3][1]


def test_preview_has_watermark_and_no_number(worked_draft):
    html = render_html(worked_draft)
    assert "预览 PREVIEW — 未开具" in html
    assert 'class="kp-number"></dd>' in html


def test_issued_invoice_shows_number_and_date_without_watermark(worked_draft):
    invoice = worked_draft["invoices"][0]
    invoice.update(number="26331000000123456789", issued_at="2026-11-11T10:00:00+08:00", drawer="王芳")
    html = render_html(worked_draft)
    assert "26331000000123456789" in html
    assert "2026年11月11日" in html
    assert "王芳" in html
    assert "PREVIEW" not in html


def test_decision_summary_is_shown_above_the_face(worked_draft):
    html = render_html(worked_draft)
    assert "开票决策" in html and "买家已申请发票且已确认收货" in html and "buyer_requested" in html
    assert html.index("kp-decision") < html.index('class="kp-face')
    english = render_html(worked_draft, locale="en_US")
    assert "Decision" in english and "电子发票（普通发票）" in english


def test_untrusted_text_is_escaped(worked_draft):
    invoice = worked_draft["invoices"][0]
    invoice["buyer"]["name"] = "<script>alert('x')</script>有限公司"
    invoice["remark"] = '"><img src=x onerror=alert(1)>'
    worked_draft["decision"]["reasons"][0]["message"] = "<b>bold</b>"
    html = render_html(worked_draft)
    assert "<script>" not in html and "<img" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;有限公司" in html


def test_special_invoice_title(worked_draft):
    invoice = worked_draft["invoices"][0]
    invoice["kind"] = "special"
    invoice["buyer"] = {
        "name": "北京某某科技有限公司",
        "tax_id": "91110108MA01ABCD2X",
        "bank": "招商银行北京分行",
        "account": "110900000010101",
    }
    html = render_html(worked_draft)
    assert "电子发票（增值税专用发票）" in html and "电子发票（普通发票）" not in html
    assert "购方开户银行：招商银行北京分行；银行账号：110900000010101" in html


def test_exempt_and_not_taxable_lines_print_text_not_a_rate(worked_draft):
    lines = worked_draft["invoices"][0]["lines"]
    lines[2]["tax_treatment"] = "exempt"
    lines[4]["tax_treatment"] = "not_taxable"
    html = render_html(worked_draft)
    assert ">免税<" in html and ">不征税<" in html


def test_red_invoice_prints_negative_amounts_and_a_marker(red_draft):
    html = render_html(red_draft)
    assert "红字发票" in html
    assert "¥-247.90" in html and "¥-221.18" in html and "¥-26.72" in html
    assert "⊗负贰佰肆拾柒圆玖角整" in html
    assert ">-2<" in html and ">-161.64<" in html


def test_red_invoice_is_negative_whatever_sign_the_draft_carries(worked_draft):
    draft = copy.deepcopy(worked_draft)
    draft["invoices"][0]["color"] = "red"
    html = render_html(draft)  # positive figures in the draft
    assert "¥-247.90" in html and ">-175.22<" in html
    assert "⊗负贰佰肆拾柒圆玖角整" in html


def test_split_invoices_are_labelled(worked_draft):
    single = render_html(worked_draft)
    assert "共 1 张" not in single
    draft = synthetic_draft(3, invoices=3)
    html = render_html(draft)
    for i in (1, 2, 3):
        assert f"第 {i} 张 / 共 3 张" in html
    one = render_html(draft, invoice_index=1)
    assert "第 2 张 / 共 3 张" in one and "第 1 张" not in one and one.count('class="kp-face') == 1


def test_invoice_index_out_of_range_is_a_problem(worked_draft):
    with pytest.raises(ValidationFailed) as caught:
        render_html(worked_draft, invoice_index=1)
    assert caught.value.problems[0].path == "invoice_index"


def test_fragment_for_a_web_page(worked_draft):
    fragment = render_html(worked_draft, standalone=False)
    assert isinstance(fragment, Markup)  # a Flask template can print it as is
    assert "<html" not in fragment and "<body" not in fragment
    assert fragment.lstrip().startswith("<style>") and ".kp-face" in fragment
    assert ".kp-face" in FACE_CSS and "Noto Sans CJK SC" in FACE_CSS


def test_every_font_chain_names_the_cjk_font():
    from app.render.face import static_text

    for name in ("face.css", "pdf.css"):
        chains = re.findall(r"font-family:([^;]+);", static_text(name))
        assert chains
        assert all("Noto Sans CJK SC" in chain for chain in chains), name


def test_draft_with_nothing_to_invoice(worked_draft):
    worked_draft["decision"] = {"action": "skip", "reasons": [{"code": "zero", "message": "金额为零"}]}
    worked_draft["invoices"] = []
    html = render_html(worked_draft)
    assert "此订单没有要开具的发票" in html and "金额为零" in html
