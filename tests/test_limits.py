"""Limits premix refuses up front, with a message naming the setting or the wallet, instead of
failing mid-run or reporting money wrongly (SPEC section 12)."""

from decimal import Decimal

import pytest
from pydantic import ValidationError
from solders.pubkey import Pubkey

from premix.errors import InvalidParameters
from premix.mixer import FeePolicy, check_recipients
from premix.rpc import describe_transaction_error
from premix.settings import Settings, describe_settings_error


@pytest.mark.parametrize("limit", [1_400_001, 2_000_000])
def test_a_compute_unit_limit_above_the_runtime_maximum_is_refused(limit: int) -> None:
    # The runtime charges for at most 1,400,000 units: the recorded fee would be wrong.
    with pytest.raises(ValidationError) as refused:
        Settings(compute_unit_limit=limit)

    assert describe_settings_error(refused.value) == (
        "PREMIX_COMPUTE_UNIT_LIMIT: Input should be less than or equal to 1400000"
    )


def test_the_runtime_maximum_compute_unit_limit_is_accepted() -> None:
    assert Settings(compute_unit_limit=1_400_000).compute_unit_limit == 1_400_000


def test_a_compute_unit_limit_too_small_for_the_largest_transaction_is_refused() -> None:
    fees = FeePolicy(compute_unit_price=1_000, compute_unit_limit=100)

    with pytest.raises(ValueError) as refused:
        fees.check()

    assert str(refused.value) == (
        "PREMIX_COMPUTE_UNIT_LIMIT (100) is below the 3,300 compute units the largest "
        "transaction premix builds (20 transfers) uses; leave it 0 to compute it"
    )
    FeePolicy(compute_unit_price=1_000, compute_unit_limit=3_300).check()  # enough
    FeePolicy().check()  # no priority fee: no limit is requested at all


def test_a_fee_buffer_below_the_funding_wallets_rent_exempt_minimum_is_refused() -> None:
    # The funding wallet must keep enough to stay rent exempt, or its last transfer is refused.
    with pytest.raises(ValidationError) as refused:
        Settings(fee_buffer_sol=Decimal("0.00089087"))

    assert describe_settings_error(refused.value) == (
        "PREMIX_FEE_BUFFER_SOL: must be at least the rent-exempt minimum of the funding wallet "
        "(0.00089088 SOL), so that it stays rent exempt after the premix"
    )
    assert Settings(fee_buffer_sol=Decimal("0.00089088")).fee_buffer_lamports == 890_880


def test_a_refusal_for_rent_is_a_sentence_not_a_raw_error() -> None:
    reason = describe_transaction_error({"InsufficientFundsForRent": {"account_index": 0}})

    assert reason == "account 0 (the funding wallet) would be left below the rent-exempt minimum"


def test_duplicate_and_funding_wallet_recipients_are_refused_naming_them() -> None:
    funding, twice, once = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()

    with pytest.raises(InvalidParameters) as duplicate:
        check_recipients(funding, [str(twice), str(once), str(twice)])
    with pytest.raises(InvalidParameters) as itself:
        check_recipients(funding, [str(once), str(funding)])

    assert str(duplicate.value) == (
        f"Invalid parameters: buyer wallet {twice} appears twice in the plan (positions 1 and 3)"
    )
    assert str(itself.value) == (
        f"Invalid parameters: the funding wallet {funding} cannot also be a buyer wallet "
        "(position 2)"
    )
