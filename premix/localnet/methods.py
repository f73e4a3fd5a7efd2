"""The JSON-RPC methods localnet speaks, with a validator's parameters, results and errors.

Each method takes the JSON `params` array and returns the JSON `result`, or raises `RpcError`
with the validator's code and message. Shapes follow Agave's RPC: `{"context": {"slot",
"apiVersion"}, "value": ...}` for context-wrapped results, -32002 with an
`RpcSimulateTransactionResult` as `data` for preflight failures, -32003 for bad signatures,
-32602 for bad params, -32601 for unknown methods.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final

import base58
from solders.account import Account
from solders.hash import Hash
from solders.message import Message, MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from premix.localnet.chain import (
    SLOTS_PER_EPOCH,
    Chain,
    Commitment,
    PreflightFailure,
    SignatureVerificationFailure,
    transaction_error_json,
)

API_VERSION: Final = "2.2.0"  # the Agave RPC whose shapes localnet follows
FEATURE_SET: Final = 3_294_202_862
MAX_SIGNATURE_STATUSES: Final = 256
MAX_MULTIPLE_ACCOUNTS: Final = 100
MAX_BASE58_ACCOUNT_BYTES: Final = 128

# JSON-RPC 2.0 and Solana error codes
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SEND_TRANSACTION_PREFLIGHT_FAILURE: Final = -32002
TRANSACTION_SIGNATURE_VERIFICATION_FAILURE: Final = -32003

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


class RpcError(Exception):
    """A JSON-RPC error object: `{"code", "message", "data"?}`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


Params = list[Any]
Method = Callable[[Params], Any]


class RpcMethods:
    """Dispatches JSON-RPC calls to a `Chain`."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._methods: dict[str, Method] = {
            "getAccountInfo": self.get_account_info,
            "getBalance": self.get_balance,
            "getBlockHeight": self.get_block_height,
            "getEpochInfo": self.get_epoch_info,
            "getFeeForMessage": self.get_fee_for_message,
            "getGenesisHash": self.get_genesis_hash,
            "getHealth": self.get_health,
            "getLatestBlockhash": self.get_latest_blockhash,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance_for_rent_exemption,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getSignatureStatuses": self.get_signature_statuses,
            "getSlot": self.get_slot,
            "getTransactionCount": self.get_transaction_count,
            "getVersion": self.get_version,
            "isBlockhashValid": self.is_blockhash_valid,
            "requestAirdrop": self.request_airdrop,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
        }

    def call(self, method: str, params: Any, *, drop_send: bool = False) -> Any:
        """Run one call; returns its JSON result or raises `RpcError`."""
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise invalid_params("Invalid params: expected an array of parameters.")
        if method == "sendTransaction":
            return self.send_transaction(params, drop=drop_send)
        return handler(params)

    # -- helpers ------------------------------------------------------------------------------

    def _context(self, commitment: Commitment = Commitment.PROCESSED) -> dict[str, Any]:
        return {"slot": self.chain.block(commitment).slot, "apiVersion": API_VERSION}

    def _with_context(self, value: Any, commitment: Commitment) -> dict[str, Any]:
        return {"context": self._context(commitment), "value": value}

    # -- cluster ------------------------------------------------------------------------------

    def get_health(self, params: Params) -> str:
        return "ok"

    def get_version(self, params: Params) -> dict[str, Any]:
        return {"solana-core": API_VERSION, "feature-set": FEATURE_SET}

    def get_genesis_hash(self, params: Params) -> str:
        return str(self.chain.genesis_hash)

    def get_slot(self, params: Params) -> int:
        return self.chain.block(_commitment(_config(params, 0))).slot

    def get_block_height(self, params: Params) -> int:
        return self.chain.block(_commitment(_config(params, 0))).height

    def get_transaction_count(self, params: Params) -> int:
        return self.chain.transaction_count()

    def get_epoch_info(self, params: Params) -> dict[str, Any]:
        block = self.chain.block(_commitment(_config(params, 0)))
        return {
            "absoluteSlot": block.slot,
            "blockHeight": block.height,
            "epoch": block.slot // SLOTS_PER_EPOCH,
            "slotIndex": block.slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": self.chain.transaction_count(),
        }

    def get_latest_blockhash(self, params: Params) -> dict[str, Any]:
        commitment = _commitment(_config(params, 0))
        block = self.chain.block(commitment)
        value = {
            "blockhash": str(block.blockhash),
            "lastValidBlockHeight": block.last_valid_block_height,
        }
        return self._with_context(value, commitment)

    def is_blockhash_valid(self, params: Params) -> dict[str, Any]:
        blockhash = _hash(_param(params, 0, "blockhash"))
        commitment = _commitment(_config(params, 1))
        return self._with_context(self.chain.is_blockhash_valid(blockhash, commitment), commitment)

    def get_minimum_balance_for_rent_exemption(self, params: Params) -> int:
        data_len = _param(params, 0, "data length")
        if not isinstance(data_len, int) or isinstance(data_len, bool) or data_len < 0:
            raise invalid_params("Invalid params: data length must be a non-negative integer.")
        return self.chain.minimum_balance_for_rent_exemption(data_len)

    def get_fee_for_message(self, params: Params) -> dict[str, Any]:
        encoded = _param(params, 0, "message")
        commitment = _commitment(_config(params, 1))
        raw = _decode(encoded, "base64")
        try:
            message = from_bytes_versioned(raw)
        except Exception as error:
            raise invalid_params(f"invalid message: {error}") from error
        if not isinstance(message, Message | MessageV0):
            raise invalid_params("invalid message: unsupported message version")
        return self._with_context(self.chain.fee_for_message(message), commitment)

    # -- accounts -----------------------------------------------------------------------------

    def get_balance(self, params: Params) -> dict[str, Any]:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        commitment = _commitment(_config(params, 1))
        return self._with_context(self.chain.balance(pubkey), commitment)

    def get_account_info(self, params: Params) -> dict[str, Any]:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        config = _config(params, 1)
        encoding = _encoding(config)
        account = self.chain.account(pubkey)
        value = None if account is None else _ui_account(account, encoding, config)
        return self._with_context(value, _commitment(config))

    def get_multiple_accounts(self, params: Params) -> dict[str, Any]:
        keys = _param(params, 0, "pubkeys")
        if not isinstance(keys, list):
            raise invalid_params("Invalid params: expected an array of pubkeys.")
        if len(keys) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys = [_pubkey(key) for key in keys]
        config = _config(params, 1)
        encoding = _encoding(config)
        accounts = [self.chain.account(pubkey) for pubkey in pubkeys]
        value = [None if a is None else _ui_account(a, encoding, config) for a in accounts]
        return self._with_context(value, _commitment(config))

    def request_airdrop(self, params: Params) -> str:
        pubkey = _pubkey(_param(params, 0, "pubkey"))
        lamports = _param(params, 1, "lamports")
        if not isinstance(lamports, int) or isinstance(lamports, bool) or lamports <= 0:
            raise invalid_params("Invalid params: lamports must be a positive integer.")
        return str(self.chain.airdrop(pubkey, lamports))

    # -- transactions -------------------------------------------------------------------------

    def send_transaction(self, params: Params, *, drop: bool = False) -> str:
        config = _config(params, 1)
        transaction = _transaction(_param(params, 0, "transaction"), config)
        preflight = config.get("preflightCommitment", config.get("commitment"))
        try:
            signature = self.chain.send_transaction(
                transaction,
                skip_preflight=bool(config.get("skipPreflight", False)),
                preflight_commitment=_commitment({"commitment": preflight}),
                drop=drop,
            )
        except SignatureVerificationFailure as error:
            raise RpcError(TRANSACTION_SIGNATURE_VERIFICATION_FAILURE, str(error)) from error
        except PreflightFailure as error:
            raise RpcError(
                SEND_TRANSACTION_PREFLIGHT_FAILURE, str(error), error.simulation.to_rpc_json()
            ) from error
        return str(signature)

    def simulate_transaction(self, params: Params) -> dict[str, Any]:
        config = _config(params, 1)
        transaction = _transaction(_param(params, 0, "transaction"), config)
        sig_verify = bool(config.get("sigVerify", False))
        replace = bool(config.get("replaceRecentBlockhash", False))
        if sig_verify and replace:
            raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
        commitment = _commitment(config)
        simulation, replacement = self.chain.simulate_transaction(
            transaction,
            sig_verify=sig_verify,
            replace_recent_blockhash=replace,
            commitment=commitment,
        )
        return self._with_context(simulation.to_rpc_json(replacement), commitment)

    def get_signature_statuses(self, params: Params) -> dict[str, Any]:
        encoded = _param(params, 0, "signatures")
        if not isinstance(encoded, list):
            raise invalid_params("Invalid params: expected an array of signatures.")
        if len(encoded) > MAX_SIGNATURE_STATUSES:
            raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        signatures = [_signature(value) for value in encoded]
        search = bool(_config(params, 1).get("searchTransactionHistory", False))
        statuses = self.chain.signature_statuses(signatures, search_transaction_history=search)
        value: list[dict[str, Any] | None] = []
        for status in statuses:
            if status is None:
                value.append(None)
                continue
            err = None if status.err is None else transaction_error_json(status.err)
            value.append(
                {
                    "slot": status.slot,
                    "confirmations": status.confirmations,
                    "err": err,
                    "status": {"Ok": None} if err is None else {"Err": err},
                    "confirmationStatus": status.commitment.value,
                }
            )
        return self._with_context(value, Commitment.PROCESSED)


# -- parameter parsing (module-level: pure) ---------------------------------------------------


def sent_signature(params: Any) -> Signature | None:
    """The first signature of the transaction a `sendTransaction` call's `params` carry, or
    None when they hold no decodable transaction (the call itself reports why)."""
    if not isinstance(params, list):
        return None
    try:
        transaction = _transaction(_param(params, 0, "transaction"), _config(params, 1))
    except RpcError:
        return None
    return transaction.signatures[0] if transaction.signatures else None


def _param(params: Params, index: int, name: str) -> Any:
    if len(params) <= index:
        raise invalid_params(f"Invalid params: missing {name}.")
    return params[index]


def _config(params: Params, index: int) -> dict[str, Any]:
    if len(params) <= index or params[index] is None:
        return {}
    config = params[index]
    if not isinstance(config, dict):
        raise invalid_params("Invalid params: configuration must be an object.")
    return config


def _commitment(config: dict[str, Any]) -> Commitment:
    name = config.get("commitment")
    if name is None:
        return Commitment.FINALIZED
    commitment = _COMMITMENT_ALIASES.get(name) if isinstance(name, str) else None
    if commitment is None:
        raise invalid_params(f"Invalid params: unknown commitment `{name}`.")
    return commitment


def _pubkey(value: Any) -> Pubkey:
    try:
        return Pubkey.from_string(value)
    except Exception as error:
        raise invalid_params("Invalid param: Invalid") from error


def _hash(value: Any) -> Hash:
    try:
        return Hash.from_string(value)
    except Exception as error:
        raise invalid_params("Invalid param: Invalid") from error


def _signature(value: Any) -> Signature:
    try:
        return Signature.from_string(value)
    except Exception as error:
        raise invalid_params(f"Invalid param: {error}") from error


def _decode(encoded: Any, encoding: str) -> bytes:
    if not isinstance(encoded, str):
        raise invalid_params("Invalid params: expected an encoded string.")
    try:
        if encoding == "base64":
            return base64.b64decode(encoded, validate=True)
        return base58.b58decode(encoded)
    except (binascii.Error, ValueError) as error:
        raise invalid_params(f"invalid {encoding} encoding: {error}") from error


def _transaction(encoded: Any, config: dict[str, Any]) -> VersionedTransaction:
    encoding = config.get("encoding", "base58")
    if encoding not in ("base58", "base64"):
        raise invalid_params(
            f"unsupported encoding: {encoding}. Supported encodings: base58, base64"
        )
    raw = _decode(encoded, encoding)
    try:
        transaction = VersionedTransaction.from_bytes(raw)
    except Exception as error:
        raise invalid_params(
            f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {error}"
        ) from error
    try:
        transaction.sanitize()
    except Exception as error:
        raise invalid_params(f"invalid transaction: {error}") from error
    return transaction


def _encoding(config: dict[str, Any]) -> str:
    encoding = config.get("encoding", "binary")
    if encoding not in ("binary", "base58", "base64", "jsonParsed"):
        raise invalid_params(f"Invalid params: unsupported encoding `{encoding}`.")
    return str(encoding)


def _ui_account(account: Account, encoding: str, config: dict[str, Any]) -> dict[str, Any]:
    data = account.data
    data_slice = config.get("dataSlice")
    if isinstance(data_slice, dict):
        offset = int(data_slice.get("offset", 0))
        data = data[offset : offset + int(data_slice.get("length", 0))]
    encoded: Any
    if encoding in ("binary", "base58"):
        if len(data) > MAX_BASE58_ACCOUNT_BYTES:
            raise RpcError(
                INVALID_REQUEST,
                "Encoded binary (base 58) data should be less than 128 bytes, "
                "please use Base64 encoding.",
            )
        text = base58.b58encode(data).decode()
        encoded = text if encoding == "binary" else [text, "base58"]
    else:  # base64, and jsonParsed for the accounts premix reads (no parser: base64 fallback)
        encoded = [base64.b64encode(data).decode(), "base64"]
    return {
        "data": encoded,
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }
