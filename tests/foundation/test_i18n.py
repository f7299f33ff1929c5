"""The UI speaks Chinese first: every message has a zh_CN translation, the compiled catalog is
current, and pages come out in Chinese unless English is asked for."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "app/translations/zh_Hans_CN/LC_MESSAGES/messages.po"


def test_every_message_is_translated(tmp_path):
    pot = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run([str(pybabel), "-q", "extract", "-F", "babel.cfg", "-k", "_l", "-k", "lazy_gettext",
                    "--no-location", "-o", str(pot), "."], cwd=ROOT, check=True, capture_output=True)
    wanted = {m.id for m in read_po(pot.open("rb")) if m.id}
    catalog = read_po(PO.open("rb"))
    translated = {m.id for m in catalog if m.id and m.string}
    assert sorted(wanted - translated) == [], "run ./dev i18n and translate the new messages"


def test_compiled_catalog_is_current():
    buffer = io.BytesIO()
    write_mo(buffer, read_po(PO.open("rb")))
    assert PO.with_suffix(".mo").read_bytes() == buffer.getvalue(), "run ./dev i18n to compile"


def test_pages_speak_chinese_first(client):
    assert "登录" in client.get("/login").text
    assert "Log in" in client.get("/login?lang=en").text
    assert "Log in" in client.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"}).text
