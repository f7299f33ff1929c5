"""Encryption keys: the newest key encrypts, every configured key decrypts."""

from __future__ import annotations

import pytest

from app import crypto
from app.settings import Settings, encryption_keys

OLD, NEW = "old-key-material-0123456789", "new-key-material-9876543210"


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
