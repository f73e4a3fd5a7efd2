"""Wallet private keys at rest: the key ring, AES-256-GCM envelopes, and secret-key import.

An envelope is a small versioned dict stored next to the wallet's public key:

    {"v": 1, "kid": "k2", "nonce": "<base64 12 bytes>", "ct": "<base64 ciphertext + GCM tag>"}

The associated data binds the ciphertext to the envelope version, the key id and the wallet's
public key, so a ciphertext copied into another wallet's document fails to decrypt.

No message raised from here ever contains a key, a ciphertext or a plaintext secret.
"""

import base64
import binascii
import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TypedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.errors import OperatorError, PremixError
from premix.settings import Settings

ENVELOPE_VERSION: Final = 1
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
SECRET_KEY_BYTES: Final = 64
KEY_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
ENV_NAME: Final = "PREMIX_ENCRYPTION_KEYS"


class KeyConfigError(OperatorError):
    """`PREMIX_ENCRYPTION_KEYS` is missing or malformed. The message names key ids, never keys."""

    title = "Encryption keys misconfigured"


class KeyDecryptionError(OperatorError):
    """An envelope could not be decrypted: altered, moved to another wallet, or key not configured.

    The message names the wallet's public key (and, from the store, its owner), never a secret.
    """

    title = "Wallet key could not be decrypted"


class SecretKeyImportError(PremixError):
    """A secret key to import is neither base58 of 64 bytes nor a 64-integer JSON array.

    The message never repeats the input.
    """

    title = "Invalid secret key"


class Envelope(TypedDict):
    v: int
    kid: str
    nonce: str
    ct: str


class KeyRing:
    """The configured encryption keys, newest first: the first encrypts, every one decrypts.

    Holds only AES-GCM cipher objects keyed by key id; its repr shows key ids only.
    """

    __slots__ = ("_ciphers", "_primary_key_id")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        """Build from `{key_id: 32-byte key}` in priority order. Raises `KeyConfigError`."""
        if not keys:
            raise KeyConfigError(f"{ENV_NAME} is empty; configure at least one key")
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if len(key) != KEY_BYTES:
                raise KeyConfigError(f"{ENV_NAME}: key '{key_id}' is not 32 bytes of base64")
            ciphers[key_id] = AESGCM(key)
        self._ciphers = ciphers
        self._primary_key_id = next(iter(ciphers))

    @classmethod
    def parse(cls, text: str) -> "KeyRing":
        """Parse comma-separated `key_id:base64(32 bytes)` entries. Raises `KeyConfigError`."""
        keys: dict[str, bytes] = {}
        entries = [entry.strip() for entry in text.split(",") if entry.strip()]
        for number, entry in enumerate(entries, start=1):
            key_id, separator, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not separator or not key_id:
                raise KeyConfigError(f"{ENV_NAME}: entry {number} is not 'key_id:base64'")
            _check_key_id(key_id)
            if key_id in keys:
                raise KeyConfigError(f"{ENV_NAME}: key id '{key_id}' appears twice")
            try:
                keys[key_id] = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise KeyConfigError(
                    f"{ENV_NAME}: key '{key_id}' is not 32 bytes of base64"
                ) from None
        return cls(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        """The key ring configured by `PREMIX_ENCRYPTION_KEYS`. Raises `KeyConfigError`."""
        return cls.parse(settings.encryption_keys.get_secret_value())

    @staticmethod
    def generate_key(key_id: str | None = None) -> str:
        """A new random `key_id:base64` entry to put first in `PREMIX_ENCRYPTION_KEYS`."""
        key_id = key_id if key_id is not None else f"k{secrets.token_hex(4)}"
        _check_key_id(key_id)
        return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"

    @property
    def primary_key_id(self) -> str:
        """The id of the key that encrypts (the first configured)."""
        return self._primary_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every configured key id, in priority order."""
        return tuple(self._ciphers)

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={self.key_ids!r})"

    def encrypt(self, secret: bytes, public_key: str | Pubkey) -> Envelope:
        """Encrypt `secret` for the wallet `public_key` under the primary key."""
        key_id = self._primary_key_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = _associated_data(ENVELOPE_VERSION, key_id, _public_key_text(public_key))
        ciphertext = self._ciphers[key_id].encrypt(nonce, secret, aad)
        return {
            "v": ENVELOPE_VERSION,
            "kid": key_id,
            "nonce": base64.b64encode(nonce).decode(),
            "ct": base64.b64encode(ciphertext).decode(),
        }

    def decrypt(self, envelope: Mapping[str, object], public_key: str | Pubkey) -> bytes:
        """The secret in `envelope`, which must belong to `public_key`.

        Raises `KeyDecryptionError` if the envelope is malformed, its key is not configured, or
        authentication fails (altered, wrong key, or taken from another wallet's document).
        """
        owner = _public_key_text(public_key)
        version, key_id, nonce, ciphertext = _unpack(envelope, owner)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyDecryptionError(
                f"wallet {owner} is encrypted with key '{key_id}', which is not configured in "
                f"{ENV_NAME} (configured: {', '.join(self.key_ids)})"
            )
        try:
            return cipher.decrypt(nonce, ciphertext, _associated_data(version, key_id, owner))
        except InvalidTag:
            raise KeyDecryptionError(
                f"wallet {owner}: authentication failed under key '{key_id}' (the ciphertext "
                "was altered, belongs to another wallet, or key "
                f"'{key_id}' is not the key it was encrypted with)"
            ) from None

    def needs_rotation(self, envelope: Mapping[str, object]) -> bool:
        """True when `envelope` is not under the current version and primary key."""
        return envelope.get("v") != ENVELOPE_VERSION or envelope.get("kid") != self.primary_key_id

    def reencrypt(self, envelope: Mapping[str, object], public_key: str | Pubkey) -> Envelope:
        """`envelope`'s secret encrypted again under the primary key. Raises like `decrypt`."""
        return self.encrypt(self.decrypt(envelope, public_key), public_key)


def _check_key_id(key_id: str) -> None:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise KeyConfigError(
            f"{ENV_NAME}: key ids are 1-32 characters of letters, digits, '_', '.', '-'"
        )


def _public_key_text(public_key: str | Pubkey) -> str:
    if isinstance(public_key, Pubkey):
        return str(public_key)
    try:
        return str(Pubkey.from_string(public_key))
    except ValueError:
        raise ValueError("public_key is not a base58 Solana public key") from None


def _associated_data(version: int, key_id: str, public_key: str) -> bytes:
    # Neither key ids nor base58 contain ':', so the joined form is unambiguous.
    return f"premix-wallet-key:v{version}:{key_id}:{public_key}".encode()


def _unpack(envelope: Mapping[str, object], owner: str) -> tuple[int, str, bytes, bytes]:
    def malformed(reason: str) -> KeyDecryptionError:
        return KeyDecryptionError(f"wallet {owner}: encrypted key envelope is malformed ({reason})")

    if not isinstance(envelope, Mapping):
        raise malformed("not a document")
    version, key_id = envelope.get("v"), envelope.get("kid")
    if version != ENVELOPE_VERSION or isinstance(version, bool) or not isinstance(version, int):
        raise malformed(f"unsupported version; this premix reads version {ENVELOPE_VERSION}")
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
        raise malformed("missing or invalid 'kid'")
    decoded: list[bytes] = []
    for field in ("nonce", "ct"):
        value = envelope.get(field)
        if not isinstance(value, str):
            raise malformed(f"missing '{field}'")
        try:
            decoded.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise malformed(f"'{field}' is not base64") from None
    nonce, ciphertext = decoded
    if len(nonce) != NONCE_BYTES:
        raise malformed("'nonce' is not 12 bytes")
    return version, key_id, nonce, ciphertext


_IMPORT_FORMS = "expected base58 of a 64-byte secret key or a JSON array of 64 integers 0-255"


def keypair_from_secret(text: str) -> Keypair:
    """A keypair from base58 of its 64-byte secret key (the form bots store) or a Solana CLI
    keypair JSON array of 64 integers. Raises `SecretKeyImportError`, never echoing the input.
    """
    if not isinstance(text, str):
        raise TypeError("the secret key must be given as a str")
    stripped = text.strip()
    if not stripped:
        raise SecretKeyImportError(f"the secret key is empty; {_IMPORT_FORMS}")
    if stripped.startswith("["):
        return _keypair_from_json_array(stripped)
    if _is_public_key(stripped):
        raise SecretKeyImportError(f"that is a public key, not a secret key; {_IMPORT_FORMS}")
    try:
        return Keypair.from_base58_string(stripped)
    except ValueError:
        raise SecretKeyImportError(
            f"the secret key is not valid base58 of 64 bytes (or its halves do not match); "
            f"{_IMPORT_FORMS}"
        ) from None


def _is_public_key(text: str) -> bool:
    try:
        Pubkey.from_string(text)
    except ValueError:
        return False
    return True


def _keypair_from_json_array(text: str) -> Keypair:
    try:
        values = json.loads(text)
    except ValueError:
        raise SecretKeyImportError(f"the secret key is not valid JSON; {_IMPORT_FORMS}") from None
    if not isinstance(values, list) or len(values) != SECRET_KEY_BYTES:
        raise SecretKeyImportError(f"the JSON array does not hold 64 items; {_IMPORT_FORMS}")
    if not all(type(value) is int and 0 <= value <= 255 for value in values):
        raise SecretKeyImportError(f"the JSON array holds a non-byte value; {_IMPORT_FORMS}")
    try:
        return Keypair.from_bytes(bytes(values))
    except ValueError:
        raise SecretKeyImportError(
            "the JSON array's public half does not match its secret half"
        ) from None


def keypair_from_file(path: str | Path) -> Keypair:
    """A keypair from a file holding either import form (e.g. `solana-keygen` output).

    Raises `SecretKeyImportError` naming the path, never the file's content.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "unreadable"
        raise SecretKeyImportError(f"cannot read keypair file {path}: {reason}") from None
    try:
        return keypair_from_secret(text)
    except SecretKeyImportError as e:
        raise SecretKeyImportError(f"keypair file {path}: {e.detail}") from None
