"""Priority fee settings and pricing (no I/O): `auto` or a fixed price, the percentile, the
floor, the raise on each re-sign and the cap per transaction, and their settings' messages."""

import pytest

from premix.mixer.fees import PriorityFees, percentile
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE, FeePolicy
from premix.settings import AUTO, Settings, SettingsInvalid, describe_settings_error

AUTO_FEES = PriorityFees(fixed_micro_lamports=None, floor_micro_lamports=1_000, max_lamports=10_000)


def refusal(**values: object) -> str:
    with pytest.raises(SettingsInvalid) as raised:
        Settings(**values)  # type: ignore[arg-type]
    return describe_settings_error(raised.value)


def test_priority_fee_defaults_to_auto_and_takes_a_fixed_price() -> None:
    assert Settings().priority_fee == AUTO
    assert PriorityFees.from_settings(Settings()).auto
    assert Settings(priority_fee=" Auto ").priority_fee == AUTO
    assert Settings(priority_fee="25000").priority_fee == 25_000
    fixed = PriorityFees.from_settings(Settings(priority_fee=0))
    assert (fixed.auto, fixed.packing) == (False, FeePolicy())


def test_priority_fee_settings_are_refused_with_a_message_naming_the_variable() -> None:
    expected = (
        "PREMIX_PRIORITY_FEE: must be auto or a whole number of micro-lamports per compute unit "
        "(0 or more)"
    )
    for bad in ("fast", "-1", "1.5", "", True):
        assert refusal(priority_fee=bad) == expected
    assert refusal(priority_fee_percentile=0) == (
        "PREMIX_PRIORITY_FEE_PERCENTILE: Input should be greater than or equal to 1"
    )
    assert refusal(priority_fee_percentile=101) == (
        "PREMIX_PRIORITY_FEE_PERCENTILE: Input should be less than or equal to 100"
    )
    assert refusal(priority_fee_floor_micro_lamports=0) == (
        "PREMIX_PRIORITY_FEE_FLOOR_MICRO_LAMPORTS: Input should be greater than or equal to 1"
    )
    assert refusal(max_priority_fee_lamports=0) == (
        "PREMIX_MAX_PRIORITY_FEE_LAMPORTS: Input should be greater than or equal to 1"
    )
    assert refusal(priority_fee_raise_percent=0) == (
        "PREMIX_PRIORITY_FEE_RAISE_PERCENT: Input should be greater than or equal to 1"
    )


def test_a_floor_or_a_fixed_price_above_the_cap_is_refused_naming_both_settings() -> None:
    with pytest.raises(ValueError) as floor:
        PriorityFees.from_settings(
            Settings(priority_fee_floor_micro_lamports=2_000_000, max_priority_fee_lamports=1_000)
        ).check()
    assert str(floor.value) == (
        "PREMIX_PRIORITY_FEE_FLOOR_MICRO_LAMPORTS (2000000) is above what "
        "PREMIX_MAX_PRIORITY_FEE_LAMPORTS (1,000) allows a 20-transfer transaction "
        "(151515 micro-lamports per compute unit)"
    )
    with pytest.raises(ValueError) as fixed:
        PriorityFees.from_settings(
            Settings(priority_fee=1_000_000, max_priority_fee_lamports=1_000)
        ).check()
    assert str(fixed.value) == (
        "PREMIX_PRIORITY_FEE (1000000 micro-lamports per compute unit) makes a 20-transfer "
        "transaction pay 6,600 lamports of priority fee, above PREMIX_MAX_PRIORITY_FEE_LAMPORTS "
        "(1,000)"
    )
    PriorityFees.from_settings(Settings()).check()  # the defaults are consistent
    PriorityFees.from_settings(Settings(priority_fee=0)).check()


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 75) == 0
    assert percentile([5], 75) == 5
    assert percentile(list(range(1, 101)), 75) == 75
    assert percentile([40, 10, 30, 20], 75) == 30
    assert percentile([40, 10, 30, 20], 100) == 40
    assert percentile([40, 10, 30, 20], 1) == 10


def test_auto_bids_the_market_at_least_the_floor_and_raises_on_each_re_sign() -> None:
    assert AUTO_FEES.price(1, market=0, previous=None) == 1_000  # quiet: the floor
    assert AUTO_FEES.price(1, market=5_000, previous=None) == 5_000
    assert AUTO_FEES.price(1, market=5_000, previous=5_000) == 10_000  # doubled
    assert AUTO_FEES.price(1, market=50_000, previous=5_000) == 50_000  # the market moved more
    half = PriorityFees(fixed_micro_lamports=None, floor_micro_lamports=1, raise_percent=50)
    assert half.price(1, market=0, previous=1) == 2  # always above the previous bid
    assert half.price(1, market=0, previous=1_000) == 1_500


def test_auto_never_bids_above_the_cap_per_transaction() -> None:
    for transfers in (1, 7, 20):
        cap_price = AUTO_FEES.cap_price(transfers)
        bid = AUTO_FEES.price(transfers, market=10**12, previous=None)
        assert bid == cap_price
        assert AUTO_FEES.at(bid).priority_fee_lamports(transfers) <= 10_000
        assert AUTO_FEES.at(bid + 1).priority_fee_lamports(transfers) > 10_000
        assert AUTO_FEES.max_fee_lamports(transfers) == (
            LAMPORTS_PER_SIGNATURE + AUTO_FEES.at(cap_price).priority_fee_lamports(transfers)
        )


def test_a_fixed_price_is_the_same_on_every_attempt() -> None:
    fixed = PriorityFees(fixed_micro_lamports=25_000)
    assert fixed.price(20, market=10**9, previous=25_000) == 25_000
    assert fixed.max_fee_lamports(20) == FeePolicy(25_000).fee_lamports(20)
    assert PriorityFees().max_fee_lamports(21) == LAMPORTS_PER_SIGNATURE  # 0: no instructions


def test_auto_packs_20_transfers_per_transaction_and_bounds_the_fees_by_the_cap() -> None:
    assert AUTO_FEES.estimate_fee_lamports("fast", 73) == (
        3 * AUTO_FEES.max_fee_lamports(20) + AUTO_FEES.max_fee_lamports(13)
    )
    assert AUTO_FEES.estimate_fee_lamports("standard", 3) == 3 * AUTO_FEES.max_fee_lamports(1)
    assert PriorityFees().estimate_fee_lamports("fast", 73) == 4 * LAMPORTS_PER_SIGNATURE
