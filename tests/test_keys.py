"""Keys: AES-256-GCM envelopes bound to the wallet, rotation, config parsing, secret import."""

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from solders.keypair import Keypair
from solders.signature import Signature

from premix.keys import (
    KeyConfigError,
    KeyDecryptionError,
    KeyRing,
    SecretKeyImportError,
    keypair_from_file,
    keypair_from_secret,
)
from premix.settings import Settings
from tests.fixtures.store import secret_forms


def key_entry(key_id: str) -> tuple[str, str]:
    """A fresh `id:base64` entry and its base64 part."""
    entry = KeyRing.generate_key(key_id)
    return entry, entry.partition(":")[2]


def assert_no_secret_material(message: str, *materials: str) -> None:
    for material in materials:
        assert material not in message


# --- envelopes ---


def test_secret_round_trips_through_an_envelope_bound_to_its_wallet(key_ring: KeyRing) -> None:
    wallet = Keypair()
    envelope = key_ring.encrypt(bytes(wallet), wallet.pubkey())
    assert Keypair.from_bytes(key_ring.decrypt(envelope, str(wallet.pubkey()))) == wallet


def test_envelope_is_versioned_names_its_key_and_holds_no_plaintext(key_ring: KeyRing) -> None:
    wallet = Keypair()
    envelope = key_ring.encrypt(bytes(wallet), wallet.pubkey())
    assert set(envelope) == {"v", "kid", "nonce", "ct"}
    assert (envelope["v"], envelope["kid"]) == (1, "test1")
    assert len(base64.b64decode(envelope["nonce"])) == 12
    assert len(base64.b64decode(envelope["ct"])) == 64 + 16  # secret + GCM tag
    assert_no_secret_material(json.dumps(envelope), *secret_forms(wallet))


def test_each_encryption_uses_a_fresh_nonce(key_ring: KeyRing) -> None:
    wallet = Keypair()
    first = key_ring.encrypt(bytes(wallet), wallet.pubkey())
    second = key_ring.encrypt(bytes(wallet), wallet.pubkey())
    assert first["nonce"] != second["nonce"]
    assert first["ct"] != second["ct"]


@given(secret=st.binary(max_size=200))
def test_any_secret_round_trips(secret: bytes) -> None:
    ring = KeyRing.parse("k1:" + base64.b64encode(bytes(range(32))).decode())
    public_key = Keypair.from_seed(bytes(32)).pubkey()
    assert ring.decrypt(ring.encrypt(secret, public_key), public_key) == secret


def test_tampered_ciphertext_fails_clearly_without_secret_material(key_ring: KeyRing) -> None:
    wallet = Keypair()
    envelope = key_ring.encrypt(bytes(wallet), wallet.pubkey())
    raw = bytearray(base64.b64decode(envelope["ct"]))
    raw[5] ^= 0x01
    tampered_ct = base64.b64encode(bytes(raw)).decode()
    tampered = {**envelope, "ct": tampered_ct}

    with pytest.raises(KeyDecryptionError) as caught:
        key_ring.decrypt(tampered, wallet.pubkey())

    message = str(caught.value)
    assert message == (
        f"Wallet key could not be decrypted: wallet {wallet.pubkey()}: authentication failed "
        "under key 'test1' (the ciphertext was altered, belongs to another wallet, or key "
        "'test1' is not the key it was encrypted with)"
    )
    assert_no_secret_material(message, envelope["ct"], tampered_ct, *secret_forms(wallet))


def test_tampered_nonce_fails(key_ring: KeyRing) -> None:
    wallet = Keypair()
    envelope = key_ring.encrypt(bytes(wallet), wallet.pubkey())
    tampered = {**envelope, "nonce": base64.b64encode(bytes(12)).decode()}
    with pytest.raises(KeyDecryptionError, match="authentication failed"):
        key_ring.decrypt(tampered, wallet.pubkey())


def test_wrong_key_with_the_same_id_fails_without_secret_material() -> None:
    wallet = Keypair()
    entry, key_b64 = key_entry("k1")
    other_entry, other_key_b64 = key_entry("k1")
    envelope = KeyRing.parse(entry).encrypt(bytes(wallet), wallet.pubkey())

    with pytest.raises(KeyDecryptionError) as caught:
        KeyRing.parse(other_entry).decrypt(envelope, wallet.pubkey())

    message = str(caught.value)
    assert f"wallet {wallet.pubkey()}: authentication failed under key 'k1'" in message
    assert_no_secret_material(
        message, key_b64, other_key_b64, envelope["ct"], *secret_forms(wallet)
    )


def test_envelope_relabelled_with_another_configured_key_id_fails() -> None:
    wallet = Keypair()
    ring = KeyRing.parse(f"{key_entry('k2')[0]},{key_entry('k1')[0]}")
    envelope = ring.encrypt(bytes(wallet), wallet.pubkey())
    with pytest.raises(KeyDecryptionError, match="authentication failed under key 'k1'"):
        ring.decrypt({**envelope, "kid": "k1"}, wallet.pubkey())


def test_ciphertext_moved_to_another_wallet_fails(key_ring: KeyRing) -> None:
    wallet, other = Keypair(), Keypair()
    envelope = key_ring.encrypt(bytes(wallet), wallet.pubkey())

    with pytest.raises(KeyDecryptionError) as caught:
        key_ring.decrypt(envelope, other.pubkey())

    message = str(caught.value)
    assert f"wallet {other.pubkey()}: authentication failed" in message
    assert_no_secret_material(message, envelope["ct"], *secret_forms(wallet))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "unsupported version; this premix reads version 1"),
        ({"v": True}, "unsupported version; this premix reads version 1"),
        ({"kid": None}, "missing or invalid 'kid'"),
        ({"ct": None}, "missing 'ct'"),
        ({"ct": "not base64!"}, "'ct' is not base64"),
        ({"nonce": base64.b64encode(bytes(8)).decode()}, "'nonce' is not 12 bytes"),
    ],
)
def test_malformed_envelope_is_named(
    key_ring: KeyRing, change: dict[str, object], reason: str
) -> None:
    wallet = Keypair()
    envelope = {**key_ring.encrypt(bytes(wallet), wallet.pubkey()), **change}
    with pytest.raises(KeyDecryptionError) as caught:
        key_ring.decrypt(envelope, wallet.pubkey())
    assert str(caught.value) == (
        f"Wallet key could not be decrypted: wallet {wallet.pubkey()}: "
        f"encrypted key envelope is malformed ({reason})"
    )


def test_public_key_argument_must_be_a_public_key(key_ring: KeyRing) -> None:
    wallet = Keypair()
    with pytest.raises(ValueError) as caught:
        key_ring.encrypt(bytes(wallet), str(wallet))  # the secret by mistake: not echoed
    assert str(caught.value) == "public_key is not a base58 Solana public key"


# --- rotation ---


def test_rotation_reencrypts_under_the_newest_key_and_old_envelopes_still_decrypt() -> None:
    wallet = Keypair()
    old_entry, _ = key_entry("k1")
    new_entry, _ = key_entry("k2")
    old_ring = KeyRing.parse(old_entry)
    rotated_ring = KeyRing.parse(f"{new_entry},{old_entry}")
    old_envelope = old_ring.encrypt(bytes(wallet), wallet.pubkey())

    assert rotated_ring.primary_key_id == "k2"
    assert rotated_ring.key_ids == ("k2", "k1")
    assert rotated_ring.needs_rotation(old_envelope)
    assert rotated_ring.decrypt(old_envelope, wallet.pubkey()) == bytes(wallet)

    new_envelope = rotated_ring.reencrypt(old_envelope, wallet.pubkey())
    assert new_envelope["kid"] == "k2"
    assert not rotated_ring.needs_rotation(new_envelope)
    assert KeyRing.parse(new_entry).decrypt(new_envelope, wallet.pubkey()) == bytes(wallet)


def test_old_envelope_fails_clearly_once_its_key_is_removed() -> None:
    wallet = Keypair()
    old_entry, old_key_b64 = key_entry("k1")
    new_entry, new_key_b64 = key_entry("k2")
    envelope = KeyRing.parse(old_entry).encrypt(bytes(wallet), wallet.pubkey())

    with pytest.raises(KeyDecryptionError) as caught:
        KeyRing.parse(new_entry).decrypt(envelope, wallet.pubkey())

    message = str(caught.value)
    assert message == (
        f"Wallet key could not be decrypted: wallet {wallet.pubkey()} is encrypted with key "
        "'k1', which is not configured in PREMIX_ENCRYPTION_KEYS (configured: k2)"
    )
    assert_no_secret_material(message, old_key_b64, new_key_b64, envelope["ct"])
    # that detail is the operator's (the log); the user hears only that premix is misconfigured
    assert caught.value.user_message == (
        "Wallet key could not be decrypted: premix is misconfigured; nothing was sent"
    )


# --- configuration ---


def test_key_ring_reads_settings_first_key_encrypts() -> None:
    entries = [key_entry(key_id)[0] for key_id in ("new", "old", "older")]
    settings = Settings(encryption_keys=SecretStr(" , ".join(entries) + " ,"))
    ring = KeyRing.from_settings(settings)
    assert ring.key_ids == ("new", "old", "older")
    wallet = Keypair()
    assert ring.encrypt(bytes(wallet), wallet.pubkey())["kid"] == "new"


def test_key_ring_repr_shows_key_ids_only() -> None:
    entry, key_b64 = key_entry("k1")
    assert repr(KeyRing.parse(entry)) == "KeyRing(key_ids=('k1',))"
    assert key_b64 not in repr(KeyRing.parse(entry))


def test_generated_keys_are_fresh_32_byte_entries() -> None:
    first, second = KeyRing.generate_key(), KeyRing.generate_key()
    assert first != second
    for entry in (first, second):
        key_id, _, key_b64 = entry.partition(":")
        assert key_id.startswith("k")
        assert len(base64.b64decode(key_b64, validate=True)) == 32
        assert KeyRing.parse(entry).key_ids == (key_id,)


SHORT_KEY = base64.b64encode(bytes(range(16))).decode()
VALID_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "PREMIX_ENCRYPTION_KEYS is empty; configure at least one key"),
        (" , ", "PREMIX_ENCRYPTION_KEYS is empty; configure at least one key"),
        (VALID_KEY, "PREMIX_ENCRYPTION_KEYS: entry 1 is not 'key_id:base64'"),
        (f"k1:{VALID_KEY},:{VALID_KEY}", "PREMIX_ENCRYPTION_KEYS: entry 2 is not 'key_id:base64'"),
        (
            f"k1:{VALID_KEY},k2:{SHORT_KEY}",
            "PREMIX_ENCRYPTION_KEYS: key 'k2' is not 32 bytes of base64",
        ),
        (f"k2:{VALID_KEY[:-4]}!!!!", "PREMIX_ENCRYPTION_KEYS: key 'k2' is not 32 bytes of base64"),
        (f"k1:{VALID_KEY},k1:{VALID_KEY}", "PREMIX_ENCRYPTION_KEYS: key id 'k1' appears twice"),
        (
            f"bad id:{VALID_KEY}",
            "PREMIX_ENCRYPTION_KEYS: key ids are 1-32 characters of letters, digits, '_', '.', '-'",
        ),
    ],
)
def test_malformed_key_config_is_refused_without_echoing_keys(text: str, message: str) -> None:
    with pytest.raises(KeyConfigError) as caught:
        KeyRing.parse(text)
    assert str(caught.value) == f"Encryption keys misconfigured: {message}"
    assert_no_secret_material(str(caught.value), SHORT_KEY, VALID_KEY, VALID_KEY[:-4])


# --- importing secrets ---


def test_import_from_base58_secret_key() -> None:
    wallet = Keypair()
    assert keypair_from_secret(str(wallet)) == wallet
    assert keypair_from_secret(f"  {wallet}\n") == wallet


def test_import_from_solana_cli_json_array() -> None:
    wallet = Keypair()
    assert keypair_from_secret(json.dumps(list(bytes(wallet)))) == wallet


def test_import_from_keypair_file(tmp_path: Path) -> None:
    wallet = Keypair()
    path = tmp_path / "id.json"
    path.write_text(json.dumps(list(bytes(wallet))) + "\n")
    assert keypair_from_file(path) == wallet


def mismatched_halves() -> bytes:
    return bytes(Keypair())[:32] + bytes(Keypair().pubkey())


FORMS = "expected base58 of a 64-byte secret key or a JSON array of 64 integers 0-255"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", f"the secret key is empty; {FORMS}"),
        ("   \n", f"the secret key is empty; {FORMS}"),
        (
            "0OIl" * 22,
            f"the secret key is not valid base58 of 64 bytes (or its halves do not match); {FORMS}",
        ),
        (
            str(Keypair())[:-6],
            f"the secret key is not valid base58 of 64 bytes (or its halves do not match); {FORMS}",
        ),
        (str(Keypair().pubkey()), f"that is a public key, not a secret key; {FORMS}"),
        ("[1, 2, 3", f"the secret key is not valid JSON; {FORMS}"),
        (json.dumps(list(range(63))), f"the JSON array does not hold 64 items; {FORMS}"),
        (json.dumps([*range(63), 256]), f"the JSON array holds a non-byte value; {FORMS}"),
        (json.dumps([*range(63), True]), f"the JSON array holds a non-byte value; {FORMS}"),
        (json.dumps([*range(63), 1.0]), f"the JSON array holds a non-byte value; {FORMS}"),
        (
            json.dumps(list(mismatched_halves())),
            "the JSON array's public half does not match its secret half",
        ),
    ],
)
def test_bad_secret_is_refused_without_echoing_it(text: str, message: str) -> None:
    with pytest.raises(SecretKeyImportError) as caught:
        keypair_from_secret(text)
    assert str(caught.value) == f"Invalid secret key: {message}"
    if text.strip():
        assert text.strip() not in str(caught.value)


def test_base58_with_mismatched_halves_is_refused_without_echoing_it() -> None:
    secret = mismatched_halves()
    text = str(Signature(secret))  # solders' base58 of 64 arbitrary bytes
    with pytest.raises(SecretKeyImportError) as caught:
        keypair_from_secret(text)
    assert str(caught.value) == (
        "Invalid secret key: the secret key is not valid base58 of 64 bytes (or its halves do "
        f"not match); {FORMS}"
    )
    assert_no_secret_material(str(caught.value), text, secret.hex())


def test_unreadable_keypair_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(SecretKeyImportError) as caught:
        keypair_from_file(missing)
    assert str(caught.value) == (
        f"Invalid secret key: cannot read keypair file {missing}: No such file or directory"
    )


def test_bad_keypair_file_names_the_path_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    content = json.dumps(list(mismatched_halves()))
    path.write_text(content)
    with pytest.raises(SecretKeyImportError) as caught:
        keypair_from_file(path)
    assert str(caught.value) == (
        f"Invalid secret key: keypair file {path}: "
        "the JSON array's public half does not match its secret half"
    )
    assert content not in str(caught.value)
