"""Encryption-key rotation: the newest key encrypts, every configured key decrypts, and
``kaipiao keys rotate`` re-encrypts every encrypted column so the old key can go."""

from __future__ import annotations

import dataclasses
import json

import click
import pytest
from sqlalchemy import Text, select, type_coerce

from app import crypto
from app.models import AdminAuditLog, SellerEntity, Shop
from app.services import key_rotation
from app.settings import Settings, encryption_keys
from tests.factories import gen_merchant, gen_seller, gen_shop

OLD, NEW = "old-key-material-0123456789", "new-key-material-9876543210"


def _commands() -> click.Group:
    from app.cli.keys import register

    @click.group()
    def kaipiao() -> None:
        pass

    register(kaipiao)
    return kaipiao


def _raw(session, model, column: str, row_id: int) -> str:
    col = getattr(model, column)
    return session.execute(select(type_coerce(col, Text)).where(model.id == row_id)).scalar_one()


def _secrets(session, n_shops: int = 5) -> tuple[list[int], int]:
    """Shops and a seller entity with credentials, encrypted with OLD."""
    crypto.configure(OLD)
    merchant = gen_merchant(session)
    seller = gen_seller(session, merchant, tax_credentials=json.dumps({"app_secret": "税务-secret"}))
    shops = [gen_shop(session, merchant, seller=seller, credentials=json.dumps({"app_key": f"k{i}"}))
             for i in range(n_shops)]
    gen_shop(session, merchant, seller=seller)  # no credentials: nothing to rotate
    session.commit()
    return [s.id for s in shops], seller.id


def _read(session, shop_ids: list[int], seller_id: int) -> list[str]:
    session.expire_all()
    return [session.get(Shop, i).credentials for i in shop_ids] + [session.get(SellerEntity, seller_id).tax_credentials]


def _rotate(app_settings: Settings, make_app, *args: str):
    app = make_app(app_settings)
    return app.test_cli_runner().invoke(cli=_commands(), args=["keys", "rotate", *args])


@pytest.fixture
def make_app(db_session):
    from app import create_app

    def make(settings: Settings):
        return create_app({"TESTING": True}, settings=settings)

    return make


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("keys, key, ring", [
    (None, None, ()),
    (None, "single", ("single",)),
    ("new,old", None, ("new", "old")),
    (" new , ,old ", None, ("new", "old")),
    ("new", "old", ("new", "old")),  # KEYS=new beside the single key in use: rotation starts
    ("new,old", "old", ("new", "old")),
    ("new,old", "new", ("new", "old")),
])
def test_keys_from_the_environment(keys, key, ring):
    assert encryption_keys(keys, key) == ring


def test_settings_read_the_keys(monkeypatch, tmp_path):
    monkeypatch.delenv("KAIPIAO_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("KAIPIAO_ENCRYPTION_KEYS", raising=False)
    generated = Settings.from_env(tmp_path / "a")
    assert generated.encryption_keys == ((tmp_path / "a" / "encryption_key").read_text(),)
    assert Settings.from_env(tmp_path / "a").encryption_keys == generated.encryption_keys  # kept

    monkeypatch.setenv("KAIPIAO_ENCRYPTION_KEYS", f"{NEW},{OLD}")
    listed = Settings.from_env(tmp_path / "b")
    assert (listed.encryption_key, listed.old_encryption_keys) == (NEW, (OLD,))
    assert not (tmp_path / "b" / "encryption_key").exists()  # nothing generated beside them


# ------------------------------------------------------------------------------ the key ring


def test_newest_encrypts_all_decrypt_and_wrong_keys_say_so():
    crypto.configure(OLD)
    old_token = crypto.encrypt("秘密")
    crypto.configure([NEW, OLD])
    assert crypto.decrypt(old_token) == "秘密" and not crypto.is_current(old_token)
    new_token = crypto.encrypt("秘密")
    assert crypto.is_current(new_token)
    crypto.configure(NEW)
    assert crypto.decrypt(new_token) == "秘密"
    with pytest.raises(crypto.UndecryptableSecret, match=r"any of the 1 configured encryption key\(s\).*"
                                                         r"KAIPIAO_ENCRYPTION_KEYS"):
        crypto.decrypt(old_token)
    with pytest.raises(ValueError, match="empty"):
        crypto.configure([NEW, ""])


# ------------------------------------------------------------------------------ kaipiao keys rotate


def test_rotate_then_remove_the_old_key(db_session, settings, make_app):
    shop_ids, seller_id = _secrets(db_session)
    plain = _read(db_session, shop_ids, seller_id)
    old_tokens = [_raw(db_session, Shop, "credentials", i) for i in shop_ids]

    # The new key added first: everything still reads, and new writes use it.
    both = dataclasses.replace(settings, encryption_key=NEW, old_encryption_keys=(OLD,))
    make_app(both)
    assert _read(db_session, shop_ids, seller_id) == plain

    result = _rotate(both, make_app, "--batch-size", "2")  # several batches
    assert result.exit_code == 0, result.output
    assert "shop.credentials: 5 re-encrypted, 0 already" in result.output
    assert "seller_entity.tax_credentials: 1 re-encrypted" in result.output
    assert "the older keys can be removed" in result.output
    new_tokens = [_raw(db_session, Shop, "credentials", i) for i in shop_ids]
    assert all(crypto.is_current(t) for t in new_tokens) and set(new_tokens).isdisjoint(old_tokens)
    [audit] = db_session.scalars(select(AdminAuditLog).where(AdminAuditLog.action == "keys.rotate")).all()
    assert audit.details["shop.credentials"]["rotated"] == 5 and audit.username.startswith("cli:")

    again = _rotate(both, make_app)  # idempotent: nothing left to do
    assert again.exit_code == 0 and "shop.credentials: 0 re-encrypted, 5 already with the newest key" in again.output
    assert [_raw(db_session, Shop, "credentials", i) for i in shop_ids] == new_tokens

    # The old key removed: everything still reads.
    make_app(dataclasses.replace(settings, encryption_key=NEW, old_encryption_keys=()))
    assert _read(db_session, shop_ids, seller_id) == plain
    # Only the old key: a clear error, not garbage.
    crypto.configure(OLD)
    with pytest.raises(crypto.UndecryptableSecret, match="missing or wrong"):
        _read(db_session, shop_ids, seller_id)


def test_rotate_names_what_no_key_opens(db_session, settings, make_app):
    shop_ids, seller_id = _secrets(db_session, n_shops=2)
    # The old key was dropped before rotating: its rows are named, nothing is lost or changed.
    result = _rotate(dataclasses.replace(settings, encryption_key=NEW, old_encryption_keys=()), make_app)
    assert result.exit_code == 1
    assert f"shop.credentials of id {shop_ids[0]}, {shop_ids[1]} cannot be decrypted" in result.output
    assert f"seller_entity.tax_credentials of id {seller_id} cannot be decrypted" in result.output
    crypto.configure(OLD)
    assert _read(db_session, shop_ids, seller_id)[0] == json.dumps({"app_key": "k0"})


def test_rotate_leaves_a_row_changed_meanwhile(db_session, monkeypatch):
    shop_ids, _ = _secrets(db_session, n_shops=2)
    crypto.configure([NEW, OLD])
    real_rotate = crypto.rotate

    def rotate_while_the_app_writes(token: str) -> str:
        if token == _raw(db_session, Shop, "credentials", shop_ids[0]):
            db_session.get(Shop, shop_ids[0]).credentials = "written by the app"
            db_session.flush()
        return real_rotate(token)

    monkeypatch.setattr(crypto, "rotate", rotate_while_the_app_writes)
    [shops] = [r for r in key_rotation.rotate_all(db_session, "test") if r.table == "shop"]
    assert (shops.rotated, shops.changed) == (1, 1)
    db_session.expire_all()
    assert db_session.get(Shop, shop_ids[0]).credentials == "written by the app"


def test_every_encrypted_column_is_found():
    assert sorted(f"{t.name}.{c.name}" for t, c in key_rotation.encrypted_columns()) == [
        "seller_entity.tax_credentials", "shop.credentials"]
