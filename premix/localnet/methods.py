"""The JSON-RPC methods localnet speaks, with a validator's parameters, results and errors.

Each method takes the JSON `params` array and the `Node` answering it (how faults made it
differ from a healthy node), and returns the JSON `result`, or raises `RpcError` with the
validator's code and message. Shapes follow Agave's RPC (`rpc/src/rpc.rs`,
`rpc-client-api/src/custom_error.rs`): `{"context": {"slot", "apiVersion"}, "value": ...}` for
context-wrapped results, -32002 with an `RpcSimulateTransactionResult` as `data` for preflight
failures, -32003 for bad signatures, -32016 with `{"contextSlot"}` when the bank a call would
be served from is below its `minContextSlot`, -32602 for bad params (a transaction or message
over 1,232 bytes among them), -32601 for unknown methods.

A call reads the bank of its commitment (default finalized) on its node: `Chain.block(commitment,
behind=node.behind_slots)`, so its context slot, values and `minContextSlot` check agree.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import base58
from solders.account import Account
from solders.message import Message, MessageV0, from_bytes_versioned

from premix.localnet.chain import (
    RECENT_STATUS_SLOTS,
    SLOTS_PER_EPOCH,
    STATUS_CACHE_SLOTS,
    Block,
    Chain,
    Commitment,
    PreflightFailure,
    SignatureVerificationFailure,
    transaction_error_json,
)
from premix.localnet.congestion import MAX_FEE_ACCOUNTS, Congestion
from premix.localnet.errors import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    SEND_TRANSACTION_PREFLIGHT_FAILURE,
    TRANSACTION_SIGNATURE_VERIFICATION_FAILURE,
    RpcError,
    invalid_params,
    min_context_slot_not_reached,
)
from premix.localnet.params import (
    MESSAGE_TYPE,
    Params,
    decode_wire,
    parse_account_encoding,
    parse_commitment,
    parse_config,
    parse_hash,
    parse_max_retries,
    parse_min_context_slot,
    parse_pubkey,
    parse_signature,
    parse_transaction,
    required_param,
)

API_VERSION: Final = "2.2.0"  # the Agave RPC whose shapes localnet follows
FEATURE_SET: Final = 3_294_202_862
MAX_SIGNATURE_STATUSES: Final = 256
MAX_MULTIPLE_ACCOUNTS: Final = 100
MAX_BASE58_ACCOUNT_BYTES: Final = 128


@dataclass(frozen=True)
class Node:
    """The node answering one call, as faults made it (the default: a healthy node)."""

    behind_slots: int = 0  # stale_read: it has seen the chain only up to this many slots ago
    has_history: bool = True  # no_history: statuses only from its recent status cache
    drops_sends: bool = False  # drop_send: it accepts transactions and never forwards them
    congestion: Congestion | None = None  # congestion: its leader holds cheap transactions back
    congested_fee: int | None = None  # congestion: what others pay per compute unit to land


HEALTHY: Final = Node()

Method = Callable[[Params, Node], Any]


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
            "getRecentPrioritizationFees": self.get_recent_prioritization_fees,
            "getSignatureStatuses": self.get_signature_statuses,
            "getSlot": self.get_slot,
            "getTransactionCount": self.get_transaction_count,
            "getVersion": self.get_version,
            "isBlockhashValid": self.is_blockhash_valid,
            "requestAirdrop": self.request_airdrop,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
        }

    def call(self, method: str, params: Any, node: Node = HEALTHY) -> Any:
        """Run one call on `node`; returns its JSON result or raises `RpcError`."""
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise invalid_params("Invalid params: expected an array of parameters.")
        return handler(params, node)

    # -- helpers ------------------------------------------------------------------------------

    def _bank(
        self, config: dict[str, Any], node: Node, commitment: Commitment | None = None
    ) -> Block:
        """The block whose bank serves a call with `config` on `node` (its `commitment`, unless
        given); raises -32016 when that is below the call's `minContextSlot`."""
        if commitment is None:
            commitment = parse_commitment(config)
        bank = self.chain.block(commitment, behind=node.behind_slots)
        minimum = parse_min_context_slot(config)
        if minimum is not None and bank.slot < minimum:
            raise min_context_slot_not_reached(bank.slot)
        return bank

    @staticmethod
    def _with_context(value: Any, bank: Block) -> dict[str, Any]:
        return {"context": {"slot": bank.slot, "apiVersion": API_VERSION}, "value": value}

    # -- cluster ------------------------------------------------------------------------------

    def get_health(self, params: Params, node: Node) -> str:
        return "ok"

    def get_version(self, params: Params, node: Node) -> dict[str, Any]:
        return {"solana-core": API_VERSION, "feature-set": FEATURE_SET}

    def get_genesis_hash(self, params: Params, node: Node) -> str:
        return str(self.chain.genesis_hash)

    def get_slot(self, params: Params, node: Node) -> int:
        return self._bank(parse_config(params, 0), node).slot

    def get_block_height(self, params: Params, node: Node) -> int:
        return self._bank(parse_config(params, 0), node).height

    def get_transaction_count(self, params: Params, node: Node) -> int:
        return self.chain.transaction_count(self._bank(parse_config(params, 0), node))

    def get_epoch_info(self, params: Params, node: Node) -> dict[str, Any]:
        bank = self._bank(parse_config(params, 0), node)
        return {
            "absoluteSlot": bank.slot,
            "blockHeight": bank.height,
            "epoch": bank.slot // SLOTS_PER_EPOCH,
            "slotIndex": bank.slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": self.chain.transaction_count(bank),
        }

    def get_latest_blockhash(self, params: Params, node: Node) -> dict[str, Any]:
        bank = self._bank(parse_config(params, 0), node)
        value = {
            "blockhash": str(bank.blockhash),
            "lastValidBlockHeight": bank.last_valid_block_height,
        }
        return self._with_context(value, bank)

    def is_blockhash_valid(self, params: Params, node: Node) -> dict[str, Any]:
        blockhash = parse_hash(required_param(params, 0, "blockhash"))
        bank = self._bank(parse_config(params, 1), node)
        return self._with_context(self.chain.is_blockhash_valid(blockhash, bank), bank)

    def get_minimum_balance_for_rent_exemption(self, params: Params, node: Node) -> int:
        data_len = required_param(params, 0, "data length")
        if not isinstance(data_len, int) or isinstance(data_len, bool) or data_len < 0:
            raise invalid_params("Invalid params: data length must be a non-negative integer.")
        return self.chain.minimum_balance_for_rent_exemption(data_len)

    def get_fee_for_message(self, params: Params, node: Node) -> dict[str, Any]:
        raw = decode_wire(required_param(params, 0, "message"), "base64", MESSAGE_TYPE)
        try:
            message = from_bytes_versioned(raw)
        except Exception as error:
            raise invalid_params(f"failed to deserialize {MESSAGE_TYPE}: {error}") from error
        if not isinstance(message, Message | MessageV0):
            raise invalid_params("invalid transaction message: unsupported message version")
        bank = self._bank(parse_config(params, 1), node)
        return self._with_context(self.chain.fee_for_message(message, bank), bank)

    # -- accounts -----------------------------------------------------------------------------

    def get_balance(self, params: Params, node: Node) -> dict[str, Any]:
        pubkey = parse_pubkey(required_param(params, 0, "pubkey"))
        bank = self._bank(parse_config(params, 1), node)
        return self._with_context(self.chain.balance(pubkey, bank), bank)

    def get_account_info(self, params: Params, node: Node) -> dict[str, Any]:
        pubkey = parse_pubkey(required_param(params, 0, "pubkey"))
        config = parse_config(params, 1)
        encoding = parse_account_encoding(config)
        bank = self._bank(config, node)
        account = self.chain.account(pubkey, bank)
        value = None if account is None else _ui_account(account, encoding, config)
        return self._with_context(value, bank)

    def get_multiple_accounts(self, params: Params, node: Node) -> dict[str, Any]:
        keys = required_param(params, 0, "pubkeys")
        if not isinstance(keys, list):
            raise invalid_params("Invalid params: expected an array of pubkeys.")
        if len(keys) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys = [parse_pubkey(key) for key in keys]
        config = parse_config(params, 1)
        encoding = parse_account_encoding(config)
        bank = self._bank(config, node)
        accounts = [self.chain.account(pubkey, bank) for pubkey in pubkeys]
        value = [None if a is None else _ui_account(a, encoding, config) for a in accounts]
        return self._with_context(value, bank)

    def request_airdrop(self, params: Params, node: Node) -> str:
        pubkey = parse_pubkey(required_param(params, 0, "pubkey"))
        lamports = required_param(params, 1, "lamports")
        if not isinstance(lamports, int) or isinstance(lamports, bool) or lamports <= 0:
            raise invalid_params("Invalid params: lamports must be a positive integer.")
        return str(self.chain.airdrop(pubkey, lamports))

    # -- transactions -------------------------------------------------------------------------

    def send_transaction(self, params: Params, node: Node) -> str:
        config = parse_config(params, 1)
        transaction = parse_transaction(required_param(params, 0, "transaction"), config)
        # localnet lands or drops a transaction at once: it has nothing to retry, so `maxRetries`
        # is only checked; skipPreflight skips the simulation (and the refusal it can give)
        parse_max_retries(config)
        skip_preflight = bool(config.get("skipPreflight", False))
        # As agave: without preflight the call is served from the processed bank.
        preflight = (
            Commitment.PROCESSED
            if skip_preflight
            else parse_commitment({"commitment": config.get("preflightCommitment")})
        )
        bank = self._bank(config, node, preflight)
        try:
            signature = self.chain.send_transaction(
                transaction,
                skip_preflight=skip_preflight,
                preflight_bank=bank,
                drop=node.drops_sends,
                congestion=node.congestion,
            )
        except SignatureVerificationFailure as error:
            raise RpcError(TRANSACTION_SIGNATURE_VERIFICATION_FAILURE, str(error)) from error
        except PreflightFailure as error:
            raise RpcError(
                SEND_TRANSACTION_PREFLIGHT_FAILURE, str(error), error.simulation.to_rpc_json()
            ) from error
        return str(signature)

    def simulate_transaction(self, params: Params, node: Node) -> dict[str, Any]:
        config = parse_config(params, 1)
        transaction = parse_transaction(required_param(params, 0, "transaction"), config)
        bank = self._bank(config, node)
        sig_verify = bool(config.get("sigVerify", False))
        replace = bool(config.get("replaceRecentBlockhash", False))
        if sig_verify and replace:
            raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
        simulation, replacement = self.chain.simulate_transaction(
            transaction,
            sig_verify=sig_verify,
            replace_recent_blockhash=replace,
            bank=bank,
        )
        return self._with_context(simulation.to_rpc_json(replacement), bank)

    def get_recent_prioritization_fees(self, params: Params, node: Node) -> list[dict[str, int]]:
        # As agave: an optional list of at most 128 accounts; no config, no context.
        keys = params[0] if params and params[0] is not None else []
        if not isinstance(keys, list):
            raise invalid_params("Invalid params: expected an array of pubkeys.")
        if len(keys) > MAX_FEE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_FEE_ACCOUNTS}")
        accounts = [parse_pubkey(key) for key in keys]
        bank = self.chain.block(Commitment.PROCESSED, behind=node.behind_slots)
        return self.chain.recent_prioritization_fees(
            accounts, bank, congested_fee=node.congested_fee
        )

    def get_signature_statuses(self, params: Params, node: Node) -> dict[str, Any]:
        encoded = required_param(params, 0, "signatures")
        if not isinstance(encoded, list):
            raise invalid_params("Invalid params: expected an array of signatures.")
        if len(encoded) > MAX_SIGNATURE_STATUSES:
            raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        signatures = [parse_signature(value) for value in encoded]
        search = bool(parse_config(params, 1).get("searchTransactionHistory", False))
        # As agave: statuses come from the processed bank (no commitment, no minContextSlot).
        bank = self.chain.block(Commitment.PROCESSED, behind=node.behind_slots)
        statuses = self.chain.signature_statuses(
            signatures,
            search_transaction_history=search and node.has_history,
            bank=bank,
            status_cache_slots=STATUS_CACHE_SLOTS if node.has_history else RECENT_STATUS_SLOTS,
        )
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
        return self._with_context(value, bank)


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
