"""Money never passes through float; times are aware; secrets are encrypted at rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.engine.money import from_fen, to_fen
from app.models import Invoice, InvoiceLine, SellerEntity
from app.models.types import ExactDecimal
from tests.factories import gen_merchant


@given(st.integers(min_value=-(10**17), max_value=10**17))
def test_fen_round_trip(fen):
    assert to_fen(from_fen(fen)) == fen


def test_money_refuses_float_and_sub_fen():
    with pytest.raises(TypeError):
        to_fen(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more than 2 decimals"):
        to_fen(Decimal("1.005"))


def test_exact_decimal_refuses_more_places():
    with pytest.raises(ValueError):
        ExactDecimal(8).process_bind_param(Decimal("1.123456789"), None)


def _invoice(**kw) -> Invoice:
    base = dict(serial_no=f"S{datetime.now(UTC).timestamp()}", buyer={"name": "个人"}, seller={"name": "s"},
                total_amount=Decimal("0.00"), total_tax=Decimal("0.00"), total=Decimal("0.00"))
    base.update(kw)
    return Invoice(**base)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fen=st.integers(min_value=-(10**17), max_value=10**17),
       price=st.decimals(min_value=Decimal("0"), max_value=Decimal("99999999999"), places=8, allow_nan=False))
def test_large_amounts_and_prices_survive_the_database(db_session, fen, price):
    money = from_fen(fen)
    inv = _invoice(total=money)
    inv.lines.append(InvoiceLine(seq=1, kind="normal", name="x", tax_code="1" * 19, amount=money,
                                 tax_rate=Decimal("0.13"), tax=Decimal("0.00"), gross=money, unit_price=price,
                                 quantity=Decimal("3.00000001")))
    db_session.add(inv)
    db_session.commit()
    db_session.expire_all()
    got = db_session.get(Invoice, inv.id)
    assert got.total == money and isinstance(got.total, Decimal)
    assert got.lines[0].unit_price == price
    assert got.lines[0].quantity == Decimal("3.00000001")
    raw = db_session.execute(text("SELECT total FROM invoice WHERE id = :i"), {"i": inv.id}).scalar()
    assert raw == fen and isinstance(raw, int)  # integer fen in the database
    db_session.delete(got)
    db_session.commit()


def test_the_classic_float_failure_is_absent(db_session):
    inv = _invoice(total=Decimal("12345678901234567.89"))
    db_session.add(inv)
    db_session.commit()
    db_session.expire_all()
    assert db_session.get(Invoice, inv.id).total == Decimal("12345678901234567.89")


def test_datetimes_are_aware_utc(db_session):
    shanghai = timezone(timedelta(hours=8))
    inv = _invoice(issued_at=datetime(2026, 11, 11, 0, 1, 2, tzinfo=shanghai))
    db_session.add(inv)
    db_session.commit()
    db_session.expire_all()
    got = db_session.get(Invoice, inv.id).issued_at
    assert got.tzinfo is not None and got == datetime(2026, 11, 10, 16, 1, 2, tzinfo=UTC)
    with pytest.raises(Exception, match="naive"):
        db_session.add(_invoice(serial_no="naive", issued_at=datetime(2026, 1, 1)))
        db_session.flush()
    db_session.rollback()


def test_credentials_encrypted_at_rest(db_session):
    merchant = gen_merchant(db_session)
    seller = SellerEntity(merchant_id=merchant.id, code="c", name="n", tax_id="91110000600037341L",
                          tax_credentials='{"app_secret": "SDDED2523BED4643"}')
    db_session.add(seller)
    db_session.commit()
    raw = db_session.execute(text("SELECT tax_credentials FROM seller_entity")).scalar()
    assert "SDDED2523BED4643" not in raw
    db_session.expire_all()
    assert "SDDED2523BED4643" in db_session.get(SellerEntity, seller.id).tax_credentials


def test_iso_datetimes_in_every_case_the_contract_allows():
    from datetime import UTC, datetime, timedelta

    from app.engine.clock import parse_iso_datetime

    assert parse_iso_datetime("2026-11-10t16:01:02z") == datetime(2026, 11, 10, 16, 1, 2, tzinfo=UTC)
    assert parse_iso_datetime("2026-11-10T16:01:02.5Z") == datetime(2026, 11, 10, 16, 1, 2, 500000, tzinfo=UTC)
    assert parse_iso_datetime("2026-11-11T00:01:02+08:00").utcoffset() == timedelta(hours=8)
    assert parse_iso_datetime("2026-11-11 00:01:02").tzinfo is None
    assert parse_iso_datetime("2026-11-11T00:01:02+08:00") == datetime(2026, 11, 11, tzinfo=UTC) + timedelta(
        minutes=1, seconds=2) - timedelta(hours=8)
    for bad in ("2026-02-30T00:00:00Z", "yesterday", "2026-11-11X00:00:00Z"):
        try:
            parse_iso_datetime(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
