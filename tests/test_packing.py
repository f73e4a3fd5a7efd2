"""Packing transfers into legacy transactions: sizes measured by solders, never guessed."""

import pytest
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, decode_transfer

from premix.mixer.packing import (
    LAMPORTS_PER_SIGNATURE,
    PACKET_DATA_SIZE,
    FeePolicy,
    PackingError,
    build_message,
    estimate_fee_lamports,
    max_transfers_per_transaction,
    pack,
    sign,
    transaction_count,
)

PRIORITY = FeePolicy(compute_unit_price=10_000)
U64_MAX = 2**64 - 1


def transfers(count: int, lamports: int = U64_MAX) -> list[tuple[Pubkey, int]]:
    return [(Pubkey.new_unique(), lamports) for _ in range(count)]


def test_21_transfers_fit_a_legacy_transaction_without_priority_fee() -> None:
    assert max_transfers_per_transaction(FeePolicy()) == 21


def test_priority_fee_instructions_leave_room_for_20_transfers() -> None:
    assert max_transfers_per_transaction(PRIORITY) == 20


@pytest.mark.parametrize("fees", [FeePolicy(), PRIORITY], ids=["plain", "priority"])
def test_a_full_transaction_serializes_within_the_packet_limit_and_one_more_does_not(
    fees: FeePolicy,
) -> None:
    funding = Keypair()
    fit = max_transfers_per_transaction(fees)
    signed = sign(build_message(funding.pubkey(), transfers(fit), Hash.new_unique(), fees), funding)
    assert len(bytes(signed)) <= PACKET_DATA_SIZE
    with pytest.raises(PackingError, match=r"\d+-byte transaction \(limit 1232 bytes\)"):
        build_message(funding.pubkey(), transfers(fit + 1), Hash.new_unique(), fees)


@pytest.mark.parametrize(
    ("wallets", "expected"), [(1, [1]), (21, [21]), (22, [21, 1]), (73, [21, 21, 21, 10])]
)
def test_fast_mode_packs_wallets_into_the_fewest_transactions(
    wallets: int, expected: list[int]
) -> None:
    groups = pack(range(wallets))
    assert [len(group) for group in groups] == expected
    assert [p for group in groups for p in group] == list(range(wallets))
    assert transaction_count("fast", wallets) == len(expected)
    assert transaction_count("standard", wallets) == wallets


def test_73_wallets_with_a_priority_fee_still_take_4_transactions_of_at_most_20() -> None:
    groups = pack(range(73), PRIORITY)
    assert [len(group) for group in groups] == [20, 20, 20, 13]


def test_every_packed_transaction_of_73_wallets_fits_and_pays_each_recipient_exactly() -> None:
    funding = Keypair()
    plan = transfers(73, lamports=1_234_567)
    for fees in (FeePolicy(), PRIORITY):
        for group in pack(range(73), fees):
            message = build_message(
                funding.pubkey(), [plan[p] for p in group], Hash.new_unique(), fees
            )
            signed = sign(message, funding)
            assert len(bytes(signed)) <= PACKET_DATA_SIZE
            assert signed.verify() is None
            keys = signed.message.account_keys
            paid = [
                decode_transfer(
                    Instruction(
                        keys[ix.program_id_index],
                        ix.data,
                        [
                            AccountMeta(keys[i], is_signer=False, is_writable=True)
                            for i in ix.accounts
                        ],
                    )
                )
                for ix in signed.message.instructions
                if keys[ix.program_id_index] == SYSTEM_PROGRAM_ID
            ]
            assert paid == [
                TransferParams(
                    from_pubkey=funding.pubkey(), to_pubkey=plan[p][0], lamports=1_234_567
                )
                for p in group
            ]


def test_fees_are_5000_lamports_per_transaction_plus_the_rounded_up_priority_fee() -> None:
    assert FeePolicy().fee_lamports(21) == LAMPORTS_PER_SIGNATURE
    assert estimate_fee_lamports("fast", 73) == 4 * LAMPORTS_PER_SIGNATURE
    assert estimate_fee_lamports("standard", 73) == 73 * LAMPORTS_PER_SIGNATURE
    # 20 transfers: (20 * 150 + 2 * 150) CU x 2 margin = 6,600 CU at 10,000 micro-lamports
    assert PRIORITY.compute_units(20) == 6_600
    assert PRIORITY.fee_lamports(20) == LAMPORTS_PER_SIGNATURE + 66
    # 1 transfer: 900 CU x 1 micro-lamport = 0.0009 lamports, rounded up to 1
    assert FeePolicy(compute_unit_price=1).fee_lamports(1) == LAMPORTS_PER_SIGNATURE + 1
    assert FeePolicy(compute_unit_price=3, compute_unit_limit=1_000_000).fee_lamports(5) == 5_003


@pytest.mark.parametrize("lamports", [0, -1, U64_MAX + 1])
def test_a_transfer_amount_outside_u64_is_refused(lamports: int) -> None:
    with pytest.raises(PackingError, match="is not a u64 > 0"):
        build_message(Pubkey.new_unique(), transfers(1, lamports), Hash.new_unique(), FeePolicy())
