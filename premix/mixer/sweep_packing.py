"""How a sweep's transfers become transactions: buyer wallet -> funding wallet. No I/O.

Each transfer is a plain System Program transfer from one buyer wallet straight back to the
funding wallet. The funding wallet pays the fee (so a buyer wallet can be emptied to exactly 0),
and every buyer wallet signs its own transfer: a transaction of k transfers carries 1 + k
signatures (64 bytes each) and k more account keys (32 bytes each) than a premix's. How many fit
one legacy transaction is measured by serializing it with solders, never guessed: 9 without a
priority fee (a 9-transfer sweep is 1,183 bytes, a 10-transfer one 1,296), 8 with the two
ComputeBudget instructions a priority fee needs.
"""

from collections.abc import Sequence

from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from premix.mixer.packing import (
    LAMPORTS_PER_SIGNATURE,
    PACKET_DATA_SIZE,
    FeePolicy,
    PackingError,
    budget_instructions,
    serialized_size,
)

_MAX_U64 = 2**64 - 1
NO_PRIORITY_FEE = FeePolicy()


def sweep_instructions(
    funding: Pubkey, transfers: Sequence[tuple[Pubkey, int]], fees: FeePolicy
) -> list[Instruction]:
    """The instructions of one sweep transaction: ComputeBudget (if priced), then one transfer
    per (buyer wallet, lamports) to `funding`."""
    instructions = budget_instructions(fees, len(transfers))
    for source, lamports in transfers:
        if not 0 < lamports <= _MAX_U64:
            raise PackingError(f"sweep of {lamports} lamports from {source} is not a u64 > 0")
        if source == funding:
            raise PackingError(f"the funding wallet {source} cannot sweep to itself")
        instructions.append(
            transfer(TransferParams(from_pubkey=source, to_pubkey=funding, lamports=lamports))
        )
    return instructions


def build_sweep_message(
    funding: Pubkey, transfers: Sequence[tuple[Pubkey, int]], blockhash: Hash, fees: FeePolicy
) -> Message:
    """The legacy message sweeping `transfers` into `funding` (its fee payer); raises
    `PackingError` for no transfers, a wallet twice, or more bytes than one packet holds."""
    if not transfers:
        raise PackingError("a sweep transaction needs at least one transfer")
    if len({source for source, _ in transfers}) != len(transfers):
        raise PackingError("a sweep transaction moves each wallet's SOL once")
    message = Message.new_with_blockhash(
        sweep_instructions(funding, transfers, fees), funding, blockhash
    )
    size = serialized_size(message)
    if size > PACKET_DATA_SIZE:
        raise PackingError(
            f"{len(transfers)} sweep transfers make a {size}-byte transaction "
            f"(limit {PACKET_DATA_SIZE} bytes)"
        )
    return message


def sign_sweep(message: Message, funding: Keypair, sources: Sequence[Keypair]) -> Transaction:
    """`message` signed by the funding wallet (fee payer) and every buyer wallet it moves from."""
    return Transaction([funding, *sources], message, message.recent_blockhash)


def sweep_size(funding: Pubkey, transfers: Sequence[tuple[Pubkey, int]], fees: FeePolicy) -> int:
    """The wire size in bytes of the signed sweep transaction of `transfers`."""
    message = Message.new_with_blockhash(
        sweep_instructions(funding, transfers, fees), funding, Hash.default()
    )
    return serialized_size(message)


def pack_sweep(
    funding: Pubkey, transfers: Sequence[tuple[Pubkey, int]], fees: FeePolicy = NO_PRIORITY_FEE
) -> list[list[int]]:
    """Split the indexes of `transfers` (in order) into the fewest transactions that fit one
    packet, each measured as serialized (every signer counted): full ones first."""
    groups: list[list[int]] = []
    current: list[int] = []
    for index in range(len(transfers)):
        candidate = [*current, index]
        if sweep_size(funding, [transfers[i] for i in candidate], fees) <= PACKET_DATA_SIZE:
            current = candidate
            continue
        if not current:
            raise PackingError(f"sweep transfer {index} does not fit a transaction alone")
        groups.append(current)
        current = [index]
    if current:
        groups.append(current)
    return groups


def max_sweeps_per_transaction(fees: FeePolicy = NO_PRIORITY_FEE) -> int:
    """How many buyer wallets one sweep transaction can move from (distinct wallets)."""
    funding = Pubkey.new_unique()
    count = 0
    while True:
        transfers = [(Pubkey.new_unique(), _MAX_U64) for _ in range(count + 1)]
        if sweep_size(funding, transfers, fees) > PACKET_DATA_SIZE:
            return count
        count += 1


def sweep_fee_lamports(transfer_count: int, fees: FeePolicy = NO_PRIORITY_FEE) -> int:
    """The exact fee of one sweep transaction: 5,000 lamports per signature (the funding wallet
    and each of the `transfer_count` buyer wallets) plus its priority fee."""
    signatures = 1 + transfer_count
    return LAMPORTS_PER_SIGNATURE * signatures + fees.priority_fee_lamports(transfer_count)
