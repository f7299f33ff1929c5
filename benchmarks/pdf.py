"""PDF face render time: cold first render, warm one-page (target ≤ 150 ms), warm 200-line.

Run: ``kaipiao bench pdf`` (or ``python benchmarks/pdf.py``) from the repository root.
Warm figures are medians after warm-up; CPU time is printed too because wall time on a
shared 2-core machine moves with whatever else runs.
"""

from __future__ import annotations

import copy
import io
import json
import statistics
import sys
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, report  # noqa: E402
from pypdf import PdfReader  # noqa: E402

WORKED = ROOT / "tests" / "render" / "data" / "worked-draft-discount-line.json"
CENT = Decimal("0.01")


def long_draft(worked: dict, n_lines: int) -> dict:
    """The worked draft with ``n_lines`` 13 % lines; totals add up."""
    draft = copy.deepcopy(worked)
    invoice = draft["invoices"][0]
    template = invoice["lines"][0]
    lines = []
    for seq in range(1, n_lines + 1):
        gross = Decimal("10.00") + seq
        amount = (gross / Decimal("1.13")).quantize(CENT, rounding=ROUND_HALF_UP)
        line = dict(template, seq=seq, kind="normal", quantity="1", unit_price=f"{amount}")
        line.update(name=f"手工陶瓷杯{seq:03d}号", display_name=f"*工艺品*手工陶瓷杯{seq:03d}号")
        line.update(amount=f"{amount}", tax=f"{gross - amount}", gross=f"{gross}", spec="350ml")
        lines.append(line)
    total_amount = sum(Decimal(line["amount"]) for line in lines)
    total_tax = sum(Decimal(line["tax"]) for line in lines)
    invoice.update(
        lines=lines,
        total_amount=f"{total_amount}",
        total_tax=f"{total_tax}",
        total=f"{total_amount + total_tax}",
    )
    return draft


def timed(fn, runs: int, warmup: int) -> tuple[float, float, float, object]:
    """Median wall, median CPU and fastest wall milliseconds of ``runs`` calls after warm-up."""
    result = None
    for _ in range(warmup):
        result = fn()
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus), min(walls), result


def main() -> None:
    header("pdf")
    worked = json.loads(WORKED.read_text(encoding="utf-8"))

    start = time.perf_counter()
    import weasyprint  # noqa: F401  (import cost is part of a worker's cold start)

    from app.render import render_html, render_pdf

    report("pdf_import_ms", (time.perf_counter() - start) * 1000, "ms")

    start = time.perf_counter()
    render_pdf(worked)  # font check, FontConfiguration, stylesheet parsing, first layout
    report("pdf_cold_first_render_ms", (time.perf_counter() - start) * 1000, "ms")

    wall, cpu, fastest, pdf = timed(lambda: render_pdf(worked), runs=30, warmup=5)
    report("pdf_one_page_warm_ms", wall, "ms")
    report("pdf_one_page_warm_cpu_ms", cpu, "ms")
    report("pdf_one_page_warm_min_ms", fastest, "ms")
    report("pdf_one_page_bytes", len(pdf), "bytes")

    big = long_draft(worked, 200)
    wall, cpu, _fastest, pdf = timed(lambda: render_pdf(big), runs=5, warmup=1)
    report("pdf_200_lines_warm_ms", wall, "ms")
    report("pdf_200_lines_warm_cpu_ms", cpu, "ms")
    report("pdf_200_lines_pages", len(PdfReader(io.BytesIO(pdf)).pages), "pages")

    wall, _cpu, _fastest, _html = timed(lambda: render_html(worked), runs=50, warmup=5)
    report("html_one_page_warm_ms", wall, "ms")


if __name__ == "__main__":
    main()
