"""Parsing a JSON-RPC call's `params` as agave does (pure): positional parameters, the config
object, commitments, keys, signatures, and transactions and messages, which must fit in one
packet (agave's `decode_and_deserialize` in `rpc/src/rpc.rs`: 1,232 bytes, and the encoded text
1,644 base64 / 1,683 base58 characters) or are -32602 with agave's messages."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import base58
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from premix.localnet.chain import Commitment
from premix.localnet.errors import RpcError, invalid_params

PACKET_DATA_SIZE: Final = 1_232  # bytes: the largest transaction (or message) a node decodes
MAX_BASE58_SIZE: Final = 1_683  # characters: base58 of PACKET_DATA_SIZE bytes (agave's golden)
MAX_BASE64_SIZE: Final = 1_644  # characters: base64 of PACKET_DATA_SIZE bytes
# Rust `type_name`s agave's size and decoding errors print.
TRANSACTION_TYPE: Final = "solana_transaction::versioned::VersionedTransaction"
MESSAGE_TYPE: Final = "solana_message::versions::VersionedMessage"

_COMMITMENT_ALIASES: Final = {
    "processed": Commitment.PROCESSED,
    "recent": Commitment.PROCESSED,
    "confirmed": Commitment.CONFIRMED,
    "single": Commitment.CONFIRMED,
    "singleGossip": Commitment.CONFIRMED,
    "finalized": Commitment.FINALIZED,
    "max": Commitment.FINALIZED,
    "root": Commitment.FINALIZED,
}

Params = list[Any]


def sent_signature(params: Any) -> Signature | None:
    """The first signature of the transaction a `sendTransaction` call's `params` carry, or
    None when they hold no decodable transaction (the call itself reports why)."""
    if not isinstance(params, list):
        return None
    try:
        encoded = required_param(params, 0, "transaction")
        transaction = parse_transaction(encoded, parse_config(params, 1))
    except RpcError:
        return None
    return transaction.signatures[0] if transaction.signatures else None


def required_param(params: Params, index: int, name: str) -> Any:
    if len(params) <= index:
        raise invalid_params(f"Invalid params: missing {name}.")
    return params[index]


def parse_config(params: Params, index: int) -> dict[str, Any]:
    if len(params) <= index or params[index] is None:
        return {}
    config = params[index]
    if not isinstance(config, dict):
        raise invalid_params("Invalid params: configuration must be an object.")
    return config


def parse_commitment(config: dict[str, Any]) -> Commitment:
    name = config.get("commitment")
    if name is None:
        return Commitment.FINALIZED
    commitment = _COMMITMENT_ALIASES.get(name) if isinstance(name, str) else None
    if commitment is None:
        raise invalid_params(f"Invalid params: unknown commitment `{name}`.")
    return commitment


def parse_pubkey(value: Any) -> Pubkey:
    try:
        return Pubkey.from_string(value)
    except Exception as error:
        raise invalid_params("Invalid param: Invalid") from error


def parse_hash(value: Any) -> Hash:
    try:
        return Hash.from_string(value)
    except Exception as error:
        raise invalid_params("Invalid param: Invalid") from error


def parse_signature(value: Any) -> Signature:
    try:
        return Signature.from_string(value)
    except Exception as error:
        raise invalid_params(f"Invalid param: {error}") from error


def parse_min_context_slot(config: dict[str, Any]) -> int | None:
    minimum = config.get("minContextSlot")
    if minimum is None:
        return None
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise invalid_params("Invalid params: minContextSlot must be a non-negative integer.")
    return minimum


def parse_max_retries(config: dict[str, Any]) -> int | None:
    """sendTransaction's `maxRetries` (agave: a usize; None: the node's own retry policy)."""
    retries = config.get("maxRetries")
    if retries is None:
        return None
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise invalid_params("Invalid params: maxRetries must be a non-negative integer.")
    return retries


def decode_wire(encoded: Any, encoding: str, type_name: str) -> bytes:
    """Decode a transaction or message as agave's `decode_and_deserialize` does: the encoded
    text, then the bytes, must fit in one packet (1,232 bytes), or -32602 with its message."""
    if not isinstance(encoded, str):
        raise invalid_params("Invalid params: expected an encoded string.")
    limit = MAX_BASE64_SIZE if encoding == "base64" else MAX_BASE58_SIZE
    if len(encoded) > limit:
        raise invalid_params(
            f"{encoding} encoded {type_name} too large: {len(encoded)} bytes "
            f"(max: encoded/raw {limit}/{PACKET_DATA_SIZE})"
        )
    try:
        if encoding == "base64":
            raw = base64.b64decode(encoded, validate=True)
        else:
            raw = base58.b58decode(encoded)
    except (binascii.Error, ValueError) as error:
        raise invalid_params(f"invalid {encoding} encoding: {error}") from error
    if len(raw) > PACKET_DATA_SIZE:
        raise invalid_params(
            f"decoded {type_name} too large: {len(raw)} bytes (max: {PACKET_DATA_SIZE} bytes)"
        )
    return raw


def parse_transaction(encoded: Any, config: dict[str, Any]) -> VersionedTransaction:
    encoding = config.get("encoding", "base58")
    if encoding not in ("base58", "base64"):
        raise invalid_params(
            f"unsupported encoding: {encoding}. Supported encodings: base58, base64"
        )
    raw = decode_wire(encoded, encoding, TRANSACTION_TYPE)
    try:
        transaction = VersionedTransaction.from_bytes(raw)
    except Exception as error:
        raise invalid_params(f"failed to deserialize {TRANSACTION_TYPE}: {error}") from error
    try:
        transaction.sanitize()
    except Exception as error:
        raise invalid_params(f"invalid transaction: {error}") from error
    return transaction


def parse_account_encoding(config: dict[str, Any]) -> str:
    encoding = config.get("encoding", "binary")
    if encoding not in ("binary", "base58", "base64", "jsonParsed"):
        raise invalid_params(f"Invalid params: unsupported encoding `{encoding}`.")
    return str(encoding)
