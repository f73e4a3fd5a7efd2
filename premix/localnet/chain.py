"""The chain behind localnet: LiteSVM state, the block clock, the blockhash window, and the log.

LiteSVM executes transactions with the real runtime (signatures, fees, rent, System Program) but
has no notion of blocks: it accepts only its newest blockhash and never advances on its own.
`Chain` adds what a validator has around the runtime:

- blocks: each `advance()` produces one block (slot + 1, block height + 1, a new blockhash);
- a blockhash window: a blockhash is valid while the block height is at most its block height
  + 150 (`MAX_PROCESSING_AGE`), the rule a validator applies; LiteSVM's own check is off.
  Simulation and sendTransaction's preflight run in the bank of their commitment (default
  finalized) and allow 144 blocks of age, as a validator's do: a blockhash newer than that bank
  or older than 144 blocks is "Blockhash not found" there;
- commitments: a transaction is processed in the slot it lands, confirmed one slot later and
  finalized 32 slots later; a read at `confirmed`/`finalized` sees the bank of the block 1 / 32
  slots back (its slot, block height, blockhash, accounts, statuses), as a validator's confirmed
  and rooted banks do, and a lagging node's read (`behind=`) a bank further back still. Account
  states of earlier slots come from `AccountHistory` (history.py), an undo log of the last 200
  slots. Simulation (and preflight) runs on the newest accounts: only its blockhash window
  follows its bank;
- a transaction log: every transaction received, the slot it was received and landed in (None
  when it never landed), its on-chain error, or why it was rejected or dropped.

Every public method takes one lock, so concurrent RPC calls and the slot clock are safe.
"""

from __future__ import annotations

import contextlib
import enum
import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import MAX_TRANSACTION_FORWARDING_DELAY
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
    TransactionErrorType,
)

from premix.localnet.congestion import (
    Congestion,
    HeldTransactions,
    PrioritizationFees,
    compute_unit_price,
    writable_accounts,
)
from premix.localnet.history import AccountHistory

MAX_PROCESSING_AGE: Final = 150  # blocks a blockhash stays valid after its own block
# Simulation (and so preflight) allows less age, leaving time to forward the transaction.
MAX_SIMULATION_AGE: Final = MAX_PROCESSING_AGE - MAX_TRANSACTION_FORWARDING_DELAY
CONFIRMED_DEPTH: Final = 1  # slots from landing to `confirmed`
FINALIZED_DEPTH: Final = 32  # slots from landing to `finalized`
STATUS_CACHE_SLOTS: Final = 300  # statuses found without searchTransactionHistory
RECENT_STATUS_SLOTS: Final = 150  # all a node without transaction history can answer from
MAX_RECENT_BLOCKHASHES: Final = 300  # a bank's blockhash queue: getFeeForMessage prices these
MAX_LAG_SLOTS: Final = MAX_PROCESSING_AGE  # the furthest behind a lagging node's reads can be
# Account states kept for reads back to a lagging node's finalized bank, with a margin.
ACCOUNT_HISTORY_SLOTS: Final = 200
# Blocks kept: the blockhash queue of the oldest bank a read can see.
_RETAINED_BLOCKS: Final = MAX_RECENT_BLOCKHASHES + FINALIZED_DEPTH + MAX_LAG_SLOTS + 2
LAMPORTS_PER_SIGNATURE: Final = 5_000
SLOTS_PER_EPOCH: Final = 432_000
TRANSACTION_HISTORY_CAPACITY: Final = 1_000_000

# Failures found before execution: a validator never puts these transactions in a block.
_NOT_COMMITTED: Final = frozenset(
    {
        "AccountInUse",
        "AccountLoadedTwice",
        "AccountNotFound",
        "AlreadyProcessed",
        "BlockhashNotFound",
        "InsufficientFundsForFee",
        "InvalidAccountForFee",
        "SignatureFailure",
        "SanitizeFailure",
        "MissingSignatureForFee",
        "InvalidAccountIndex",
        "TooManyAccountLocks",
        "ResanitizationNeeded",
        "WouldExceedMaxBlockCostLimit",
        "WouldExceedMaxAccountCostLimit",
        "WouldExceedAccountDataBlockLimit",
        "UnsupportedVersion",
    }
)


class Commitment(enum.Enum):
    """How settled the state a read sees is (the validator's three banks)."""

    PROCESSED = "processed"  # the newest block
    CONFIRMED = "confirmed"  # voted on by a supermajority: one slot back here
    FINALIZED = "finalized"  # rooted: 32 slots back here

    @property
    def depth(self) -> int:
        """Slots between the newest block and the block this commitment reads."""
        return {"processed": 0, "confirmed": CONFIRMED_DEPTH, "finalized": FINALIZED_DEPTH}[
            self.value
        ]


@dataclass(frozen=True)
class Block:
    """One produced block: its slot, block height and blockhash."""

    slot: int
    height: int
    blockhash: Hash

    @property
    def last_valid_block_height(self) -> int:
        """The highest block height at which a transaction using this blockhash can land."""
        return self.height + MAX_PROCESSING_AGE


class TransactionOutcome(enum.Enum):
    """What became of a transaction the node received."""

    LANDED = "landed"  # in a block (err says whether it succeeded); fee charged
    DROPPED = "dropped"  # accepted by sendTransaction, never landed (fault or expired blockhash)
    HELD = "held"  # accepted while congestion holds it back: it may land in a later slot
    REJECTED = "rejected"  # refused by preflight; the caller got an RPC error


@dataclass(frozen=True)
class TransactionRecord:
    """One entry of the transaction log."""

    signature: Signature
    received_slot: int
    landed_slot: int | None
    outcome: TransactionOutcome
    err: TransactionErrorType | None  # on-chain error (landed) or rejection/drop cause
    reason: str  # human-readable: "ok", the error message, or why it was dropped
    fee_lamports: int

    @property
    def landed(self) -> bool:
        return self.outcome is TransactionOutcome.LANDED


@dataclass(frozen=True)
class SignatureStatus:
    """What getSignatureStatuses reports for one landed transaction."""

    slot: int
    confirmations: int | None  # None once finalized
    err: TransactionErrorType | None
    commitment: Commitment


@dataclass(frozen=True)
class Simulation:
    """The outcome of running a transaction without committing it."""

    err: TransactionErrorType | None
    logs: list[str]
    units_consumed: int
    fee_lamports: int

    def to_rpc_json(self, replacement: Block | None = None) -> dict[str, Any]:
        """The `RpcSimulateTransactionResult` JSON object a validator returns."""
        result = RpcSimulateTransactionResult(
            err=self.err,
            logs=self.logs,
            accounts=None,
            units_consumed=self.units_consumed,
            return_data=None,
        )
        value: dict[str, Any] = json.loads(result.to_json())
        if replacement is not None:
            value["replacementBlockhash"] = {
                "blockhash": str(replacement.blockhash),
                "lastValidBlockHeight": replacement.last_valid_block_height,
            }
        return value


class PreflightFailure(Exception):
    """sendTransaction's preflight refused a transaction (JSON-RPC error -32002)."""

    def __init__(self, simulation: Simulation) -> None:
        assert simulation.err is not None
        self.simulation = simulation
        super().__init__(
            f"Transaction simulation failed: {describe_transaction_error(simulation.err)}"
        )


class SignatureVerificationFailure(Exception):
    """A signature does not verify (JSON-RPC error -32003)."""

    def __init__(self) -> None:
        super().__init__("Transaction signature verification failure")


def transaction_error_json(err: TransactionErrorType) -> Any:
    """The JSON form of a transaction error, as in `err` fields: "AlreadyProcessed" or {...}."""
    return json.loads(RpcSimulateTransactionResult(err=err).to_json())["err"]


def transaction_error_name(err: TransactionErrorType) -> str:
    """The variant name of a transaction error: "BlockhashNotFound", "InstructionError", ..."""
    encoded = transaction_error_json(err)
    return encoded if isinstance(encoded, str) else next(iter(encoded))


_TRANSACTION_ERROR_TEXT: Final = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
}

_INSTRUCTION_ERROR_TEXT: Final = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "ComputationalBudgetExceeded": "Computational budget exceeded",
}


def describe_transaction_error(err: TransactionErrorType) -> str:
    """The validator's sentence for a transaction error (Rust `Display` of `TransactionError`)."""
    if isinstance(err, TransactionErrorInsufficientFundsForRent):
        return (
            f"Transaction results in an account ({err.account_index}) "
            "with insufficient funds for rent"
        )
    if isinstance(err, TransactionErrorInstructionError):
        inner = err.err
        if isinstance(inner, InstructionErrorCustom):
            text = f"custom program error: {inner.code:#x}"
        else:
            name = (
                str(inner).rsplit(".", 1)[-1]
                if isinstance(inner, InstructionErrorFieldless)
                else ""
            )
            text = _INSTRUCTION_ERROR_TEXT.get(name, name or str(inner))
        return f"Error processing Instruction {err.index}: {text}"
    name = transaction_error_name(err)
    return _TRANSACTION_ERROR_TEXT.get(name, name)


def _fieldless(name: str) -> TransactionErrorFieldless:
    error: TransactionErrorFieldless = getattr(TransactionErrorFieldless, name)
    return error


BLOCKHASH_NOT_FOUND: Final = _fieldless("BlockhashNotFound")
ALREADY_PROCESSED: Final = _fieldless("AlreadyProcessed")


class Chain:
    """LiteSVM plus blocks, blockhash expiry, commitments and a transaction log (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._svm = (
            LiteSVM()
            .with_blockhash_check(False)
            .with_sigverify(True)
            .with_transaction_history(TRANSACTION_HISTORY_CAPACITY)
        )
        genesis = Block(slot=0, height=0, blockhash=self._svm.latest_blockhash())
        self._svm.warp_to_slot(genesis.slot)
        self._genesis = genesis
        # Blocks still needed: for commitment reads and blockhash validity.
        self._blocks: deque[Block] = deque([genesis], maxlen=_RETAINED_BLOCKS)
        self._block_by_hash: dict[Hash, Block] = {genesis.blockhash: genesis}
        self._history = AccountHistory(ACCOUNT_HISTORY_SLOTS)
        self._log: dict[Signature, TransactionRecord] = {}
        self._held = HeldTransactions()  # accepted, waiting behind higher bids (congestion)
        self._fees = PrioritizationFees()

    # -- time ---------------------------------------------------------------------------------

    @property
    def genesis_hash(self) -> Hash:
        return self._genesis.blockhash

    @property
    def slot(self) -> int:
        """The newest (processed) slot."""
        with self._lock:
            return self._blocks[-1].slot

    @property
    def block_height(self) -> int:
        """The newest (processed) block height."""
        with self._lock:
            return self._blocks[-1].height

    def block(self, commitment: Commitment = Commitment.PROCESSED, *, behind: int = 0) -> Block:
        """The block whose bank a read at `commitment` sees, on a node `behind` slots behind the
        newest block (clamped to genesis early on). Pass it as `bank` to the reads below."""
        if not 0 <= behind <= MAX_LAG_SLOTS:
            raise ValueError(f"behind must be between 0 and {MAX_LAG_SLOTS}")
        with self._lock:
            depth = min(commitment.depth + behind, len(self._blocks) - 1)
            return self._blocks[-1 - depth]

    def advance(self, slots: int = 1) -> Block:
        """Produce `slots` new blocks; returns the newest."""
        if slots < 0:
            raise ValueError("slots must be >= 0")
        with self._lock:
            for _ in range(slots):
                tip = self._blocks[-1]
                self._svm.expire_blockhash()
                block = Block(
                    slot=tip.slot + 1, height=tip.height + 1, blockhash=self._svm.latest_blockhash()
                )
                self._svm.warp_to_slot(block.slot)
                if len(self._blocks) == self._blocks.maxlen:
                    self._block_by_hash.pop(self._blocks[0].blockhash, None)
                self._blocks.append(block)
                self._block_by_hash[block.blockhash] = block
                self._history.advance_to(block.slot)
                self._land_held()
            self._history.advance_to(self._blocks[-1].slot)
            return self._blocks[-1]

    def expire_blockhashes(self) -> Block:
        """Advance past the last valid block height of every blockhash handed out so far."""
        return self.advance(MAX_PROCESSING_AGE + 1)

    def is_blockhash_valid(
        self, blockhash: Hash, bank: Block | None = None, *, max_age: int = MAX_PROCESSING_AGE
    ) -> bool:
        """Whether a transaction using `blockhash` could run in `bank` (None: the newest)."""
        with self._lock:
            return self._in_queue(blockhash, self._or_newest(bank), max_age)

    # -- accounts -----------------------------------------------------------------------------

    def account(self, pubkey: Pubkey, bank: Block | None = None) -> Account | None:
        """The account at `pubkey` in `bank` (None: the newest state), or None when it holds
        no lamports. Raises ValueError for a bank older than the account history."""
        with self._lock:
            account = self._state(pubkey, bank)
        if account is None or account.lamports == 0:
            return None
        return account

    def balance(self, pubkey: Pubkey, bank: Block | None = None) -> int:
        """Lamports held by `pubkey` in `bank` (None: now; 0 for an account that does not
        exist)."""
        account = self.account(pubkey, bank)
        return 0 if account is None else account.lamports

    def minimum_balance_for_rent_exemption(self, data_len: int) -> int:
        with self._lock:
            return self._svm.minimum_balance_for_rent_exemption(data_len)

    def airdrop(self, pubkey: Pubkey, lamports: int) -> Signature:
        """Credit `pubkey` from the faucet in the current slot; returns the airdrop signature."""
        if lamports <= 0:
            raise ValueError("lamports must be > 0")
        with self._lock, self._recording([pubkey, self._svm.airdrop_pubkey()]):
            result = self._svm.airdrop(pubkey, lamports)
            if isinstance(result, FailedTransactionMetadata):
                raise RuntimeError(f"airdrop failed: {describe_transaction_error(result.err())}")
            signature = result.signature()
            self._record(signature, self.slot, None, result.fee(), landed=True)
            return signature

    def set_account(self, pubkey: Pubkey, account: Account) -> None:
        """Put `account` at `pubkey` in the current slot, as a deploy or another program would
        (tests use it for program-owned and executable accounts)."""
        with self._lock, self._recording([pubkey]):
            self._svm.set_account(pubkey, account)

    # -- transactions -------------------------------------------------------------------------

    def send_transaction(
        self,
        transaction: VersionedTransaction,
        *,
        skip_preflight: bool = False,
        preflight_bank: Block | None = None,
        drop: bool = False,
        congestion: Congestion | None = None,
    ) -> Signature:
        """Receive a transaction as sendTransaction does; returns its signature.

        Preflight runs in `preflight_bank` (None: the finalized one) and raises
        `SignatureVerificationFailure` or `PreflightFailure` (expired or unknown blockhash,
        already processed, or a failing simulation). Without preflight
        the signature is always returned; a transaction that cannot land is dropped, one that
        fails in execution lands with its error and pays its fee. `drop=True` (a fault) accepts
        the transaction and never lands it. `congestion` (a fault) holds a transaction bidding
        below its price back: accepted, it lands in a later slot by the fault's odds, or never.
        """
        signature = transaction.signatures[0]
        blockhash = transaction.message.recent_blockhash
        with self._lock:
            slot = self.slot
            signatures_ok = all(transaction.verify_with_results())
            if not skip_preflight:
                if not signatures_ok:
                    raise SignatureVerificationFailure()
                simulation = self._preflight(transaction, preflight_bank)
                if simulation.err is not None:
                    self._record_rejected(signature, slot, simulation.err)
                    raise PreflightFailure(simulation)
            if self._landed(signature):
                return signature  # a duplicate: the runtime's status cache ignores it
            if drop:
                self._record(signature, slot, None, 0, landed=False, reason="dropped by fault")
                return signature
            if not signatures_ok:
                self._record(signature, slot, _fieldless("SignatureFailure"), 0, landed=False)
                return signature
            if not self.is_blockhash_valid(blockhash):
                self._record(signature, slot, BLOCKHASH_NOT_FOUND, 0, landed=False)
                return signature
            if congestion is not None and congestion.holds(transaction):
                if signature not in self._held:
                    self._held.hold(transaction, congestion)
                    self._record(signature, slot, None, 0, landed=False, held=True)
                return signature
            self._held.release(signature)
            self._execute(transaction, slot)
            return signature

    def _execute(self, transaction: VersionedTransaction, slot: int) -> None:
        """Run `transaction` in the newest block and log what became of it."""
        signature = transaction.signatures[0]
        with self._recording(self._writable_keys(transaction.message)):
            result = self._svm.send_transaction(transaction)
        if isinstance(result, FailedTransactionMetadata):
            err = result.err()
            landed = transaction_error_name(err) not in _NOT_COMMITTED
            fee = result.meta().fee() if landed else 0
            self._record(signature, slot, err, fee, landed=landed)
        else:
            landed = True
            self._record(signature, slot, None, result.fee(), landed=True)
        if landed:
            message = transaction.message
            self._fees.record(self.slot, compute_unit_price(message), writable_accounts(message))

    def _land_held(self) -> None:
        """Drop the held transactions whose blockhash expired; land those due in the newest
        block (called as each block is produced)."""
        expired = self._held.expired(
            lambda transaction: self.is_blockhash_valid(transaction.message.recent_blockhash)
        )
        for signature in expired:
            received = self._log[signature].received_slot
            reason = "blockhash expired while congestion held it back"
            self._record(signature, received, BLOCKHASH_NOT_FOUND, 0, landed=False, reason=reason)
        for transaction in self._held.due():
            received = self._log[transaction.signatures[0]].received_slot
            self._execute(transaction, received)

    def simulate_transaction(
        self,
        transaction: VersionedTransaction,
        *,
        sig_verify: bool = False,
        replace_recent_blockhash: bool = False,
        bank: Block | None = None,
    ) -> tuple[Simulation, Block | None]:
        """Run a transaction without committing it (simulateTransaction) in `bank` (None: the
        finalized one): its blockhash must be in that bank's window; the accounts are the
        newest ones.

        Returns the simulation and, with `replace_recent_blockhash`, the block whose blockhash
        replaced the transaction's.
        """
        with self._lock:
            bank = bank if bank is not None else self.block(Commitment.FINALIZED)
            if self._landed(transaction.signatures[0]):
                return Simulation(ALREADY_PROCESSED, [], 0, 0), None
            if replace_recent_blockhash:
                return self._simulate(transaction, sig_verify=False), bank
            blockhash = transaction.message.recent_blockhash
            if not self._in_queue(blockhash, bank, MAX_SIMULATION_AGE):
                return Simulation(BLOCKHASH_NOT_FOUND, [], 0, 0), None
            return self._simulate(transaction, sig_verify=sig_verify), None

    def fee_for_message(
        self, message: Message | MessageV0, bank: Block | None = None
    ) -> int | None:
        """The fee the runtime charges for `message` in `bank` (None: the newest), or None when
        its blockhash is not in that bank's blockhash queue (newer than the bank, or more than
        300 blocks older: the queue, not the 150-block validity, decides, as in a validator)."""
        with self._lock:
            bank = self._or_newest(bank)
            if not self._in_queue(message.recent_blockhash, bank, MAX_RECENT_BLOCKHASHES):
                return None
            unsigned = VersionedTransaction.populate(
                message, [Signature.default()] * message.header.num_required_signatures
            )
            return self._simulate(unsigned, sig_verify=False).fee_lamports

    def signature_statuses(
        self,
        signatures: Sequence[Signature],
        *,
        search_transaction_history: bool = False,
        bank: Block | None = None,
        status_cache_slots: int = STATUS_CACHE_SLOTS,
    ) -> list[SignatureStatus | None]:
        """Status of each signature as `bank` (None: the newest) knows it, or None when it has
        not landed by then (or is older than `status_cache_slots` and history is not
        searched). Confirmations and commitment count from the bank's slot."""
        with self._lock:
            tip = self._or_newest(bank).slot
            statuses: list[SignatureStatus | None] = []
            for signature in signatures:
                record = self._log.get(signature)
                if record is None or record.landed_slot is None or record.landed_slot > tip:
                    statuses.append(None)
                    continue
                age = tip - record.landed_slot
                if age > status_cache_slots and not search_transaction_history:
                    statuses.append(None)
                    continue
                if age >= FINALIZED_DEPTH:
                    commitment, confirmations = Commitment.FINALIZED, None
                else:
                    commitment = (
                        Commitment.CONFIRMED if age >= CONFIRMED_DEPTH else Commitment.PROCESSED
                    )
                    confirmations = age
                statuses.append(
                    SignatureStatus(record.landed_slot, confirmations, record.err, commitment)
                )
            return statuses

    def recent_prioritization_fees(
        self, accounts: Sequence[Pubkey], bank: Block | None = None, *, congested_fee: int | None
    ) -> list[dict[str, int]]:
        """getRecentPrioritizationFees up to `bank` (None: the newest): per slot, the lowest
        price that landed, raised to the highest lowest price writing one of `accounts`, and
        to `congested_fee` (or up to 1.5 times it) while congestion is on."""
        with self._lock:
            return self._fees.recent(self._or_newest(bank).slot, accounts, congested_fee)

    @property
    def transaction_log(self) -> Mapping[Signature, TransactionRecord]:
        """A snapshot of the log: every transaction received, in arrival order."""
        with self._lock:
            return dict(self._log)

    def transaction_count(self, bank: Block | None = None) -> int:
        """Transactions that landed by `bank` (None: the newest), failed ones included
        (getTransactionCount)."""
        with self._lock:
            slot = self._or_newest(bank).slot
            return sum(
                1
                for record in self._log.values()
                if record.landed_slot is not None and record.landed_slot <= slot
            )

    @property
    def remembered_account_states(self) -> int:
        """Account states the history holds for reads of earlier banks (its memory, bounded)."""
        with self._lock:
            return len(self._history)

    # -- internals ----------------------------------------------------------------------------

    def _preflight(self, transaction: VersionedTransaction, bank: Block | None) -> Simulation:
        simulation, _ = self.simulate_transaction(transaction, sig_verify=True, bank=bank)
        return simulation

    def _or_newest(self, bank: Block | None) -> Block:
        return bank if bank is not None else self._blocks[-1]

    def _in_queue(self, blockhash: Hash, bank: Block, max_age: int) -> bool:
        """Whether `blockhash` is at most `max_age` blocks older than `bank`'s block (and not
        newer: a bank has not seen later blocks)."""
        block = self._block_by_hash.get(blockhash)
        return block is not None and block.height <= bank.height <= block.height + max_age

    def _state(self, pubkey: Pubkey, bank: Block | None) -> Account | None:
        newest = self._svm.get_account(pubkey)
        return newest if bank is None else self._history.state_at(pubkey, bank.slot, newest)

    @contextlib.contextmanager
    def _recording(self, keys: Iterable[Pubkey]) -> Iterator[None]:
        """Remember in the history the earlier state of each of `keys` the block changes."""
        before = {key: self._svm.get_account(key) for key in keys}
        yield
        changed = {key: old for key, old in before.items() if self._svm.get_account(key) != old}
        self._history.record(self.slot, changed)

    def _writable_keys(self, message: Message | MessageV0 | MessageV1) -> list[Pubkey]:
        """Every account `message` may change: its own keys and the writable addresses its
        lookup tables load (a table that does not load leaves the transaction failing)."""
        keys = list(message.account_keys)
        if isinstance(message, MessageV0):
            for lookup in message.address_table_lookups:
                table = self._svm.get_account(lookup.account_key)
                if table is None:
                    continue
                with contextlib.suppress(Exception):
                    addresses = AddressLookupTable.deserialize(bytes(table.data)).addresses
                    keys.extend(addresses[index] for index in bytes(lookup.writable_indexes))
        return keys

    def _landed(self, signature: Signature) -> bool:
        record = self._log.get(signature)
        return record is not None and record.landed

    def _simulate(self, transaction: VersionedTransaction, *, sig_verify: bool) -> Simulation:
        if not sig_verify:
            self._svm.with_sigverify(False)
        try:
            result = self._svm.simulate_transaction(transaction)
        finally:
            if not sig_verify:
                self._svm.with_sigverify(True)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            return Simulation(result.err(), meta.logs(), meta.compute_units_consumed(), meta.fee())
        info: TransactionMetadata = result.meta()
        return Simulation(None, info.logs(), info.compute_units_consumed(), info.fee())

    def _record_rejected(self, signature: Signature, slot: int, err: TransactionErrorType) -> None:
        if self._landed(signature):
            return  # never hide that it landed
        self._log[signature] = TransactionRecord(
            signature=signature,
            received_slot=slot,
            landed_slot=None,
            outcome=TransactionOutcome.REJECTED,
            err=err,
            reason=describe_transaction_error(err),
            fee_lamports=0,
        )

    def _record(
        self,
        signature: Signature,
        slot: int,
        err: TransactionErrorType | None,
        fee_lamports: int,
        *,
        landed: bool,
        reason: str | None = None,
        held: bool = False,
    ) -> None:
        if reason is None and held:
            reason = "held back by congestion"
        elif reason is None:
            reason = "ok" if err is None else describe_transaction_error(err)
        outcome = TransactionOutcome.LANDED if landed else TransactionOutcome.DROPPED
        self._log[signature] = TransactionRecord(
            signature=signature,
            received_slot=slot,
            landed_slot=self.slot if landed else None,
            outcome=TransactionOutcome.HELD if held else outcome,
            err=err,
            reason=reason,
            fee_lamports=fee_lamports,
        )
