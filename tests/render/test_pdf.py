"""PDF face: the text must come back out of the PDF (no tofu), pages must flow."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading

import pytest
from pypdf import PdfReader

from app.render import CJKFontMissing, RefusedURL, check_cjk_font, make_url_fetcher, render_pdf
from app.render.face import STATIC_DIR

from .conftest import synthetic_draft


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def pdftotext(pdf: bytes) -> str:
    result = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return result.stdout.decode("utf-8")


@pytest.fixture(scope="module")
def worked_pdf() -> bytes:
    from .conftest import load_draft

    return render_pdf(load_draft("worked-draft-discount-line"))


def test_pdf_text_has_the_chinese_face(worked_pdf):
    assert worked_pdf.startswith(b"%PDF")
    texts = pages_text(worked_pdf)
    assert len(texts) == 1
    text = texts[0]
    for expected in (
        "电子发票（普通发票）",
        "个人",
        "杭州青禾电子商务有限公司",
        "91110000600037341L",
        "*工艺品*手工陶瓷杯",
        "*图书*Python编程",
        "¥221.17",
        "¥26.73",
        "247.90",
        "贰佰肆拾柒圆玖角整",
        "价税合计（大写）",
        "-13.58",
        "订单号:3141592653589793",
    ):
        assert expected in text, expected
    # The decision summary is for the HTML preview only.
    assert "买家已申请发票" not in text


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_poppler_reads_the_same_text(worked_pdf):
    text = pdftotext(worked_pdf)
    for expected in (
        "电子发票（普通发票）",
        "杭州青禾电子商务有限公司",
        "贰佰肆拾柒圆玖角整",
        "*工艺品*手工陶瓷杯",
        "¥247.90",
    ):
        assert expected in text, expected


def test_only_the_cjk_font_is_embedded_and_subset(worked_pdf):
    reader = PdfReader(io.BytesIO(worked_pdf))
    fonts = set()
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            fonts.add(str(font["/BaseFont"]))
            descendant = font["/DescendantFonts"][0].get_object()
            assert (
                "/FontFile3" in descendant["/FontDescriptor"] or "/FontFile2" in descendant["/FontDescriptor"]
            )
    assert fonts and all("Noto-Sans-CJK-SC" in name for name in fonts), fonts
    # One face file: each extra embedded CJK font costs ~40 ms of subsetting per render.
    assert len(fonts) == 1, fonts
    assert len(worked_pdf) < 1_000_000  # subset, not the 19 MB collection


def test_preview_watermark_and_issued_number(worked_draft):
    assert "PREVIEW" in pages_text(render_pdf(worked_draft))[0]
    worked_draft["invoices"][0].update(number="26331000000123456789", issued_at="2026-11-11T10:00:00+08:00")
    text = pages_text(render_pdf(worked_draft))[0]
    assert "PREVIEW" not in text
    assert "26331000000123456789" in text and "2026年11月11日" in text


def test_long_invoice_flows_over_pages_with_the_header_repeated():
    pdf = render_pdf(synthetic_draft(200))
    texts = pages_text(pdf)
    n = len(texts)
    assert n >= 4
    for number, text in enumerate(texts, start=1):
        assert "项目名称" in text and "税率/征收率" in text, f"page {number} lost the table header"
        assert f"第 {number} 页 / 共 {n} 页" in text
        assert "预览 PREVIEW" in text  # the watermark repeats on every page
    assert "手工陶瓷杯001号" in texts[0] and "手工陶瓷杯200号" in texts[-1]
    # Continuation pages carry a running title; totals only once, at the end.
    assert all("电子发票（普通发票）" in text for text in texts)
    assert ["价税合计（大写）" in text for text in texts] == [False] * (n - 1) + [True]
    # No line lost or duplicated across page breaks.
    joined = "\n".join(texts)
    assert all(joined.count(f"手工陶瓷杯{seq:03d}号") == 1 for seq in range(1, 201))


def test_red_invoice_pdf(red_draft):
    text = pages_text(render_pdf(red_draft))[0]
    assert "红字发票" in text
    assert "¥-247.90" in text and "负贰佰肆拾柒圆玖角整" in text and "-161.64" in text
    assert "被红冲蓝字数电发票号码：26331000000123456789" in text


def test_split_draft_is_one_pdf_with_each_face_counted_on_its_own():
    draft = synthetic_draft(3, invoices=2)
    texts = pages_text(render_pdf(draft))
    assert len(texts) == 2
    assert "第 1 张 / 共 2 张" in texts[0] and "第 2 张 / 共 2 张" in texts[1]
    assert all("第 1 页 / 共 1 页" in text for text in texts)
    only_second = pages_text(render_pdf(draft, invoice_index=1))
    assert len(only_second) == 1 and "第 2 张 / 共 2 张" in only_second[0]


def test_pdf_of_a_draft_without_invoices_is_refused(worked_draft):
    from app.errors import ValidationFailed

    worked_draft["invoices"] = []
    with pytest.raises(ValidationFailed):
        render_pdf(worked_draft)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "https://example.com/face.css",
        "http://169.254.169.254/latest/meta-data/",
        "data:text/css,body{color:red}",
        (STATIC_DIR / "face.css").as_uri().replace("/static/face.css", "/static/../pdf.py"),
        (STATIC_DIR / "missing.css").as_uri(),
        "file://evil.example/" + str(STATIC_DIR / "face.css"),
    ],
)
def test_url_fetcher_refuses_everything_outside_static(url):
    with pytest.raises(RefusedURL):
        make_url_fetcher().fetch(url)


def test_url_fetcher_serves_static_files():
    response = make_url_fetcher().fetch((STATIC_DIR / "face.css").as_uri())
    try:
        assert b".kp-face" in response.read()
        assert response.content_type == "text/css"
    finally:
        response.close()


def test_markup_cannot_pull_local_files_into_the_pdf(tmp_path):
    """Through WeasyPrint itself: an <img> of a local file outside static/ is asked for and refused."""
    from weasyprint import HTML

    from app.render.pdf import resources

    secret = tmp_path / "secret.svg"
    secret.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', encoding="utf-8")
    outcomes: list[tuple[str, str]] = []
    fetcher = make_url_fetcher()
    original = fetcher.fetch

    def spy(url, headers=None):
        try:
            response = original(url, headers)
        except RefusedURL:
            outcomes.append((url, "refused"))
            raise
        outcomes.append((url, "served"))
        return response

    fetcher.fetch = spy
    html = HTML(
        string=f'<meta charset="utf-8"><img src="{secret.as_uri()}"><p>发票</p>',
        base_url=resources().base_url,
        url_fetcher=fetcher,
    )
    assert html.write_pdf().startswith(b"%PDF")
    assert outcomes == [(secret.as_uri(), "refused")]


def test_first_render_fails_clearly_without_the_cjk_font(monkeypatch, worked_draft):
    from app.render import pdf as pdf_module

    monkeypatch.setattr(pdf_module, "_resources", None)
    monkeypatch.setattr(pdf_module, "CJK_FAMILY", "Kaipiao No Such Font 9")
    with pytest.raises(CJKFontMissing, match="fonts-noto-cjk"):
        render_pdf(worked_draft)


def test_cjk_font_check():
    assert "NotoSansCJK" in check_cjk_font()
    with pytest.raises(CJKFontMissing, match="fonts-noto-cjk"):
        check_cjk_font("Kaipiao No Such Font 9")


def test_concurrent_renders_share_one_font_configuration(worked_draft):
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work():
        try:
            results.append(render_pdf(worked_draft))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 4 and all("贰佰肆拾柒圆玖角整" in pages_text(pdf)[0] for pdf in results)
