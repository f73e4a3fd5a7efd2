"""How transfers become transactions: instructions, message, size limit and fee. No I/O.

Every transfer is a plain System Program transfer from the funding wallet to one recipient.
How many fit one legacy transaction is measured by serializing a worst-case transaction with
solders (distinct recipients, one signature), never guessed: 21 without a priority fee, 20 with
the two ComputeBudget instructions a priority fee needs.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from premix.constants import MAX_COMPUTE_UNIT_LIMIT

PACKET_DATA_SIZE = 1232  # bytes: the largest transaction a validator accepts (IPv6 MTU - headers)
LAMPORTS_PER_SIGNATURE = 5_000
MICRO_LAMPORTS_PER_LAMPORT = 1_000_000
# Measured runtime costs; the limit we request is twice that so a runtime change cannot starve us.
SYSTEM_TRANSFER_COMPUTE_UNITS = 150
COMPUTE_BUDGET_COMPUTE_UNITS = 150
COMPUTE_UNIT_MARGIN = 2
_MAX_U64 = 2**64 - 1


class PackingError(ValueError):
    """A transfer list that cannot become a valid transaction (too large, bad amount)."""


@dataclass(frozen=True)
class FeePolicy:
    """The priority fee one transaction carries (none when the price is 0); how premix picks
    the price of each attempt is `premix.mixer.fees.PriorityFees`."""

    # micro-lamports per compute unit; 0 = no ComputeBudget instructions at all
    compute_unit_price: int = 0
    # requested compute units per transaction; 0 = computed from the number of transfers
    compute_unit_limit: int = 0

    @property
    def has_priority_fee(self) -> bool:
        """True when transactions carry the ComputeBudget instructions."""
        return self.compute_unit_price > 0

    def compute_units(self, transfer_count: int) -> int:
        """Return the compute-unit limit requested by a transaction of `transfer_count`
        (exact: the same number every time; raises `PackingError` outside 1..1,400,000)."""
        if self.compute_unit_limit:
            units = self.compute_unit_limit
        else:
            used = transfer_count * SYSTEM_TRANSFER_COMPUTE_UNITS + 2 * COMPUTE_BUDGET_COMPUTE_UNITS
            units = used * COMPUTE_UNIT_MARGIN
        if not 1 <= units <= MAX_COMPUTE_UNIT_LIMIT:
            raise PackingError(f"a compute-unit limit of {units} is outside 1..1,400,000")
        return units

    def check(self) -> None:
        """Raise `ValueError` (naming the setting) when a configured compute-unit limit is too
        small for the largest transaction premix builds: every such transaction would fail."""
        if not (self.has_priority_fee and self.compute_unit_limit):
            return
        largest = max_transfers_per_transaction(self)
        needed = largest * SYSTEM_TRANSFER_COMPUTE_UNITS + 2 * COMPUTE_BUDGET_COMPUTE_UNITS
        if self.compute_unit_limit < needed:
            raise ValueError(
                f"PREMIX_COMPUTE_UNIT_LIMIT ({self.compute_unit_limit}) is below the "
                f"{needed:,} compute units the largest transaction premix builds ({largest} "
                "transfers) uses; leave it 0 to compute it"
            )

    def fee_lamports(self, transfer_count: int) -> int:
        """Return the exact fee of one transaction (one signature) of `transfer_count` transfers."""
        return LAMPORTS_PER_SIGNATURE + self.priority_fee_lamports(transfer_count)

    def priority_fee_lamports(self, transfer_count: int) -> int:
        """Return the priority part of `fee_lamports`: price x limit / 10^6, rounded up."""
        if not self.has_priority_fee:
            return 0
        micro = self.compute_unit_price * self.compute_units(transfer_count)
        return -(-micro // MICRO_LAMPORTS_PER_LAMPORT)  # the runtime rounds up


def budget_instructions(fees: FeePolicy, transfer_count: int) -> list[Instruction]:
    """The ComputeBudget instructions a transaction of `transfer_count` transfers starts with
    (its limit and price) when `fees` prices it; none otherwise."""
    if not fees.has_priority_fee:
        return []
    return [
        set_compute_unit_limit(fees.compute_units(transfer_count)),
        set_compute_unit_price(fees.compute_unit_price),
    ]


def transfer_instructions(
    funding: Pubkey, transfers: Sequence[tuple[Pubkey, int]], fees: FeePolicy
) -> list[Instruction]:
    """Return the instructions of one transaction: ComputeBudget (if priced), then transfers."""
    instructions = budget_instructions(fees, len(transfers))
    for recipient, lamports in transfers:
        if not 0 < lamports <= _MAX_U64:
            raise PackingError(f"transfer of {lamports} lamports to {recipient} is not a u64 > 0")
        instructions.append(
            transfer(TransferParams(from_pubkey=funding, to_pubkey=recipient, lamports=lamports))
        )
    return instructions


def build_message(
    funding: Pubkey, transfers: Sequence[tuple[Pubkey, int]], blockhash: Hash, fees: FeePolicy
) -> Message:
    """Return the legacy message paying `transfers` from `funding`; raises `PackingError` if it
    would not fit one packet."""
    if not transfers:
        raise PackingError("a transaction needs at least one transfer")
    message = Message.new_with_blockhash(
        transfer_instructions(funding, transfers, fees), funding, blockhash
    )
    size = serialized_size(message)
    if size > PACKET_DATA_SIZE:
        raise PackingError(
            f"{len(transfers)} transfers make a {size}-byte transaction "
            f"(limit {PACKET_DATA_SIZE} bytes)"
        )
    return message


def sign(message: Message, funding: Keypair) -> Transaction:
    """Return `message` signed by the funding wallet, its only signer."""
    return Transaction([funding], message, message.recent_blockhash)


def serialized_size(message: Message) -> int:
    """Return the wire size in bytes of `message` once signed (signatures have a fixed size)."""
    return len(bytes(Transaction.new_unsigned(message)))


@lru_cache(maxsize=16)
def max_transfers_per_transaction(fees: FeePolicy = FeePolicy()) -> int:
    """Return how many transfers to distinct recipients fit one legacy transaction."""
    funding = Pubkey.new_unique()
    count = 0
    while True:
        recipients = [(Pubkey.new_unique(), _MAX_U64) for _ in range(count + 1)]
        message = Message.new_with_blockhash(
            transfer_instructions(funding, recipients, fees), funding, Hash.default()
        )
        if serialized_size(message) > PACKET_DATA_SIZE:
            return count
        count += 1


def pack(positions: Sequence[int], fees: FeePolicy = FeePolicy()) -> list[list[int]]:
    """Split `positions` (in order) into the fewest transactions that fit: full ones first."""
    per_transaction = max_transfers_per_transaction(fees)
    return [
        list(positions[start : start + per_transaction])
        for start in range(0, len(positions), per_transaction)
    ]


def transaction_count(mode: str, transfer_count: int, fees: FeePolicy = FeePolicy()) -> int:
    """Return how many transactions `mode` ("standard" or "fast") uses for `transfer_count`."""
    if mode == "standard":
        return transfer_count
    per_transaction = max_transfers_per_transaction(fees)
    return -(-transfer_count // per_transaction)


def estimate_fee_lamports(mode: str, transfer_count: int, fees: FeePolicy = FeePolicy()) -> int:
    """Return the total fee of funding `transfer_count` wallets in `mode`, if nothing is retried."""
    if mode == "standard":
        return transfer_count * fees.fee_lamports(1)
    groups = pack(range(transfer_count), fees)
    return sum(fees.fee_lamports(len(group)) for group in groups)
