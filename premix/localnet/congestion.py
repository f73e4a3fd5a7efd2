"""Congestion on localnet: what a transaction bids for compute units, the transactions a
congested leader holds back, and the prioritization fees recent slots report.

- `compute_unit_price(message)`: the micro-lamports per compute unit a transaction's
  ComputeBudget SetComputeUnitPrice instruction bids (none: 0), as the runtime reads it.
- `HeldTransactions`: transactions accepted by sendTransaction while the `congestion` fault is
  on and priced below its `min_micro_lamports`. Each slot a held one lands with the rule's
  `land_probability` (0: never) while its blockhash is valid; once the rule is off it lands at
  the next slot; once its blockhash expired it is dropped.
- `PrioritizationFees`: per slot, the lowest price of the transactions that landed in it and,
  per writable account, the lowest price of those writing it (agave's prioritization fee
  cache, `runtime/src/prioritization_fee.rs`), answering getRecentPrioritizationFees: for each
  of the last 150 slots the block's lowest price, raised to the highest of the given accounts'
  lowest prices. While congestion is on, every slot also reports the fee other senders paid
  to get in, between `reported_micro_lamports` and 1.5 times it (seeded by the slot).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

RECENT_FEE_SLOTS: Final = 150  # agave's MAX_NUM_RECENT_BLOCKS
MAX_FEE_ACCOUNTS: Final = 128  # agave's MAX_TX_ACCOUNT_LOCKS: accounts one query may name
_SET_COMPUTE_UNIT_PRICE: Final = 3  # ComputeBudgetInstruction discriminant


def compute_unit_price(message: Message | MessageV0 | MessageV1) -> int:
    """The micro-lamports per compute unit `message` bids (its last SetComputeUnitPrice; 0
    when it has none)."""
    keys = message.account_keys
    price = 0
    for instruction in message.instructions:
        if keys[instruction.program_id_index] != COMPUTE_BUDGET_PROGRAM_ID:
            continue
        data = bytes(instruction.data)
        if len(data) == 9 and data[0] == _SET_COMPUTE_UNIT_PRICE:
            price = int.from_bytes(data[1:], "little")
    return price


def writable_accounts(message: Message | MessageV0 | MessageV1) -> list[Pubkey]:
    """The accounts `message` write-locks (its static keys; lookups are not read here)."""
    header = message.header
    keys = list(message.account_keys)
    signers = header.num_required_signatures
    writable_signers = signers - header.num_readonly_signed_accounts
    writable_unsigned = len(keys) - header.num_readonly_unsigned_accounts
    return [
        key
        for index, key in enumerate(keys)
        if index < writable_signers or signers <= index < writable_unsigned
    ]


@dataclass(frozen=True)
class Congestion:
    """What a congested leader does to one sendTransaction: transactions bidding less than
    `min_micro_lamports` land only if `lands_now()` says so in a slot (`active()` false: the
    congestion is over, they land)."""

    min_micro_lamports: int
    lands_now: Callable[[], bool]
    active: Callable[[], bool]

    def holds(self, transaction: VersionedTransaction) -> bool:
        """True when `transaction` bids too little to land at once."""
        return compute_unit_price(transaction.message) < self.min_micro_lamports


@dataclass
class _Held:
    transaction: VersionedTransaction
    congestion: Congestion


class HeldTransactions:
    """Transactions accepted while congestion held them back, in arrival order."""

    def __init__(self) -> None:
        self._held: dict[Signature, _Held] = {}

    def __contains__(self, signature: Signature) -> bool:
        return signature in self._held

    def hold(self, transaction: VersionedTransaction, congestion: Congestion) -> None:
        self._held.setdefault(transaction.signatures[0], _Held(transaction, congestion))

    def release(self, signature: Signature) -> None:
        self._held.pop(signature, None)

    def due(self) -> list[VersionedTransaction]:
        """The held transactions that land in the slot being produced (taken out); the caller
        drops those whose blockhash expired."""
        landing = [
            signature
            for signature, held in self._held.items()
            if not held.congestion.active() or held.congestion.lands_now()
        ]
        return [self._held.pop(signature).transaction for signature in landing]

    def expired(self, is_valid: Callable[[VersionedTransaction], bool]) -> list[Signature]:
        """Take out and return the held transactions whose blockhash is no longer valid."""
        gone = [s for s, held in self._held.items() if not is_valid(held.transaction)]
        for signature in gone:
            del self._held[signature]
        return gone


@dataclass
class _SlotFees:
    lowest: int | None = None  # the lowest price that landed in the slot
    accounts: dict[Pubkey, int] = field(default_factory=dict)  # lowest price writing each


class PrioritizationFees:
    """The prioritization fees of the transactions that landed in recent slots."""

    def __init__(self) -> None:
        self._slots: deque[tuple[int, _SlotFees]] = deque(maxlen=RECENT_FEE_SLOTS + 1)

    def record(self, slot: int, price: int, accounts: Iterable[Pubkey]) -> None:
        """Note a transaction bidding `price` that landed in `slot` writing `accounts`."""
        if not self._slots or self._slots[-1][0] != slot:
            self._slots.append((slot, _SlotFees()))
        fees = self._slots[-1][1]
        fees.lowest = price if fees.lowest is None else min(fees.lowest, price)
        for account in accounts:
            fees.accounts[account] = min(fees.accounts.get(account, price), price)

    def recent(
        self, tip: int, accounts: Sequence[Pubkey], reported_micro_lamports: int | None
    ) -> list[dict[str, int]]:
        """getRecentPrioritizationFees' value for the slots up to `tip`, oldest first;
        `reported_micro_lamports` (congestion on) is the floor of what others paid."""
        landed = dict(self._slots)
        result = []
        for slot in range(max(0, tip - RECENT_FEE_SLOTS + 1), tip + 1):
            fees = landed.get(slot, _SlotFees())
            fee = fees.lowest or 0
            for account in accounts:
                fee = max(fee, fees.accounts.get(account, 0))
            if reported_micro_lamports is not None:
                spread = random.Random(slot).randint(0, reported_micro_lamports // 2)
                fee = max(fee, reported_micro_lamports + spread)
            result.append({"slot": slot, "prioritizationFee": fee})
        return result
