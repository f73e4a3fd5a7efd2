"""The 73-wallet distribution (SPEC section 4): exact, capped, fewest wallets, deterministic."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from premix.amounts import sol_to_lamports
from premix.distribution import (
    DEFAULT_CAPS_LAMPORTS,
    DEFAULT_TABLE,
    RENT_EXEMPT_MINIMUM_LAMPORTS,
    DistributionError,
    Tier,
    TierTable,
    caps_from_tiers,
    format_plan,
    max_distributable_lamports,
    plan_distribution,
    wallets_needed,
)
from premix.settings import Settings

SOL = 1_000_000_000
MIN = 10_000_000  # default per-wallet minimum, 0.01 SOL
CAPACITY = 85 * SOL


@st.composite
def tables(draw: st.DrawFn) -> TierTable:
    """Any valid table: 1..73 caps, each at least twice a minimum at or above rent exemption."""
    minimum = draw(st.integers(RENT_EXEMPT_MINIMUM_LAMPORTS, SOL // 10))
    caps = draw(st.lists(st.integers(2 * minimum, 5 * SOL), min_size=1, max_size=73))
    return TierTable(caps_lamports=tuple(caps), min_lamports=minimum)


@st.composite
def requests(
    draw: st.DrawFn, table_strategy: st.SearchStrategy[TierTable] | None = None
) -> tuple[TierTable, int, int]:
    """A table, an available wallet count, and an amount those wallets can take."""
    table = draw(table_strategy if table_strategy is not None else tables())
    wallet_count = draw(st.integers(1, 80))
    total = draw(st.integers(table.min_lamports, max_distributable_lamports(wallet_count, table)))
    return table, wallet_count, total


default_requests = requests(st.just(DEFAULT_TABLE))


# --- the default tier table -------------------------------------------------------------


def test_default_table_holds_85_sol_over_73_wallets() -> None:
    assert len(DEFAULT_TABLE.caps_lamports) == 73
    assert sum(DEFAULT_TABLE.caps_lamports) == DEFAULT_TABLE.capacity_lamports == CAPACITY
    assert DEFAULT_TABLE.min_lamports == MIN
    assert max_distributable_lamports(73) == CAPACITY


def test_default_tiers_give_early_positions_smaller_caps_than_later_ones() -> None:
    caps = DEFAULT_CAPS_LAMPORTS
    assert list(caps) == sorted(caps)
    assert caps[0] < caps[-1]
    # The documented tiers: 1-10 at 0.5 SOL, 11-30 at 0.7, 31-50 at 1, 51-73 at 2.
    assert set(caps[:10]) == {SOL // 2}
    assert set(caps[10:30]) == {7 * SOL // 10}
    assert set(caps[30:50]) == {SOL}
    assert set(caps[50:73]) == {2 * SOL}


def test_default_table_is_what_default_settings_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREMIX_TIER_CAPS_SOL", raising=False)
    monkeypatch.delenv("PREMIX_MIN_WALLET_SOL", raising=False)
    assert Settings().tier_table() == DEFAULT_TABLE


def test_tiers_must_cover_positions_in_order_without_gaps() -> None:
    assert caps_from_tiers([Tier(1, 2, Decimal("1")), Tier(3, 3, Decimal("2"))]) == (
        SOL,
        SOL,
        2 * SOL,
    )
    with pytest.raises(ValueError, match="does not continue at position 3"):
        caps_from_tiers([Tier(1, 2, Decimal("1")), Tier(4, 5, Decimal("2"))])


# --- every plan is exact, within its limits, and uses the fewest wallets -----------------


@given(requests())
def test_plan_sums_exactly_and_every_amount_is_between_minimum_and_its_cap(
    request: tuple[TierTable, int, int],
) -> None:
    table, wallet_count, total = request
    plan = plan_distribution(total, wallet_count, table)
    assert sum(plan) == total
    for amount, cap in zip(plan, table.caps_lamports, strict=False):
        assert table.min_lamports <= amount <= cap


@given(requests())
def test_plan_uses_the_fewest_wallets_whose_caps_hold_the_amount(
    request: tuple[TierTable, int, int],
) -> None:
    table, wallet_count, total = request
    plan = plan_distribution(total, wallet_count, table)
    used = len(plan)
    assert used == wallets_needed(total, wallet_count, table)
    assert sum(table.caps_lamports[:used]) >= total
    assert sum(table.caps_lamports[: used - 1]) < total  # one wallet fewer cannot hold it


@given(requests())
def test_plan_never_uses_more_wallets_than_max_wallets_allows(
    request: tuple[TierTable, int, int],
) -> None:
    table, wallet_count, total = request
    assert len(plan_distribution(total, wallet_count, table)) <= wallet_count


@given(requests())
def test_same_request_gives_the_same_plan(request: tuple[TierTable, int, int]) -> None:
    table, wallet_count, total = request
    assert plan_distribution(total, wallet_count, table) == plan_distribution(
        total, wallet_count, table
    )


@given(default_requests)
def test_default_plan_is_proportional_to_caps_to_the_lamport(
    request: tuple[TierTable, int, int],
) -> None:
    table, wallet_count, total = request
    plan = plan_distribution(total, wallet_count, table)
    caps = table.caps_lamports[: len(plan)]
    for amount, cap in zip(plan, caps, strict=True):
        # amount is the exact share total * cap / sum(caps), rounded down or up.
        assert abs(amount * sum(caps) - total * cap) < sum(caps)


@given(st.integers(MIN, CAPACITY), st.integers(1, 73))
def test_a_smaller_max_wallets_changes_nothing_when_the_amount_still_fits(
    total: int, wallet_count: int
) -> None:
    if total <= max_distributable_lamports(wallet_count):
        assert plan_distribution(total, wallet_count) == plan_distribution(total, 73)


def test_examples_of_default_plans() -> None:
    assert plan_distribution(SOL, 73) == [SOL // 2, SOL // 2]
    assert plan_distribution(MIN, 73) == [MIN]
    assert plan_distribution(CAPACITY, 73) == list(DEFAULT_CAPS_LAMPORTS)
    # 5 SOL + 1 lamport spills into position 11 (cap 0.7 SOL); shares follow the caps.
    eleven = plan_distribution(5 * SOL + 1, 73)
    assert eleven == [438_596_492] * 3 + [438_596_491] * 7 + [614_035_088]


@given(
    st.integers(1, 72),
    st.integers(RENT_EXEMPT_MINIMUM_LAMPORTS, SOL // 10),
    st.integers(0, 10 * SOL),
    st.data(),
)
def test_small_caps_next_to_a_huge_one_still_get_the_minimum(
    small_count: int, minimum: int, extra: int, data: st.DataObject
) -> None:
    # Proportional shares of the small caps fall below the minimum: the clamping path.
    caps = (2 * minimum,) * small_count + (1_000 * SOL,)
    table = TierTable(caps_lamports=caps, min_lamports=minimum)
    total = sum(caps[:-1]) + 1 + data.draw(st.integers(0, extra))
    plan = plan_distribution(total, 73, table)
    assert len(plan) == small_count + 1
    assert sum(plan) == total
    assert all(minimum <= amount <= cap for amount, cap in zip(plan, caps, strict=True))


def test_shares_below_the_minimum_are_raised_to_it_and_the_rest_spread_again() -> None:
    table = TierTable(caps_lamports=(2 * MIN, 1_000 * MIN), min_lamports=MIN)
    # Proportionally wallet 1 would get 0.00006 SOL: it gets the minimum, wallet 2 the rest.
    assert plan_distribution(3 * MIN, 2, table) == [MIN, 2 * MIN]


# --- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("wallet_count", range(1, 74))
def test_exactly_capacity_succeeds_and_one_lamport_more_fails(wallet_count: int) -> None:
    capacity = sum(DEFAULT_CAPS_LAMPORTS[:wallet_count])
    assert max_distributable_lamports(wallet_count) == capacity
    assert plan_distribution(capacity, wallet_count) == list(DEFAULT_CAPS_LAMPORTS[:wallet_count])
    with pytest.raises(DistributionError) as refused:
        plan_distribution(capacity + 1, wallet_count)
    assert refused.value.max_lamports == capacity


def test_too_large_names_the_wallets_and_their_capacity() -> None:
    with pytest.raises(DistributionError) as refused:
        plan_distribution(90 * SOL, 73)
    assert str(refused.value) == (
        "Amount 90 SOL is more than 73 buyer wallets can hold (at most 85 SOL)"
    )
    assert (refused.value.amount_lamports, refused.value.max_lamports) == (90 * SOL, CAPACITY)


def test_too_large_for_max_wallets_names_the_lower_limit() -> None:
    with pytest.raises(
        DistributionError,
        match=r"^Amount 6 SOL is more than 10 buyer wallets "
        r"can hold \(at most 5 SOL\)$",
    ):
        plan_distribution(6 * SOL, 10)
    with pytest.raises(DistributionError, match=r"more than 1 buyer wallet can hold"):
        plan_distribution(SOL, 1)


def test_too_small_names_the_per_wallet_minimum() -> None:
    with pytest.raises(DistributionError) as refused:
        plan_distribution(5_000_000, 73)
    assert str(refused.value) == "Amount 0.005 SOL is below the per-wallet minimum of 0.01 SOL"
    assert refused.value.min_lamports == MIN
    with pytest.raises(DistributionError, match="below the per-wallet minimum"):
        plan_distribution(MIN - 1, 73)
    with pytest.raises(DistributionError, match=r"^Amount 0 SOL is below"):
        wallets_needed(0)


def test_no_wallets_available_is_refused_with_the_limit() -> None:
    assert max_distributable_lamports(0) == 0
    with pytest.raises(DistributionError) as refused:
        plan_distribution(SOL, 0)
    assert str(refused.value) == "No buyer wallets are available for 1 SOL (at most 0 SOL)"


def test_more_wallets_than_the_table_holds_are_capped_at_73() -> None:
    assert max_distributable_lamports(500) == CAPACITY
    with pytest.raises(
        DistributionError, match=r"more than 73 buyer wallets can hold \(at most 85 SOL\)$"
    ):
        plan_distribution(CAPACITY + 1, 500)


def test_wallets_needed_counts_tiers() -> None:
    assert wallets_needed(MIN) == 1
    assert wallets_needed(SOL // 2) == 1
    assert wallets_needed(SOL // 2 + 1) == 2
    assert wallets_needed(5 * SOL) == 10
    assert wallets_needed(19 * SOL) == 30  # 10 x 0.5 + 20 x 0.7
    assert wallets_needed(CAPACITY) == 73


@pytest.mark.parametrize("wallet_count", [-1, 2.5, True, "3"])
def test_wallet_count_must_be_a_whole_number(wallet_count: object) -> None:
    with pytest.raises(ValueError, match="wallet_count must be a whole number"):
        max_distributable_lamports(wallet_count)  # type: ignore[arg-type]


@pytest.mark.parametrize("total", [Decimal("1"), 1.0, True, "1000000000"])
def test_amount_must_be_integer_lamports(total: object) -> None:
    with pytest.raises(TypeError, match="total_lamports must be an int"):
        plan_distribution(total, 73)  # type: ignore[arg-type]


# --- tables from settings ------------------------------------------------------------------


def test_settings_override_the_tier_caps_and_minimum() -> None:
    settings = Settings(
        tier_caps_sol=(Decimal("1"), Decimal("2"), Decimal("3")), min_wallet_sol=Decimal("0.1")
    )
    table = settings.tier_table()
    assert table.caps_lamports == (SOL, 2 * SOL, 3 * SOL)
    assert table.min_lamports == SOL // 10
    assert max_distributable_lamports(73, table) == 6 * SOL
    assert plan_distribution(2 * SOL, 73, table) == [666_666_667, 1_333_333_333]
    with pytest.raises(
        DistributionError, match=r"more than 3 buyer wallets can hold \(at most 6 SOL\)$"
    ):
        plan_distribution(6 * SOL + 1, 73, table)
    with pytest.raises(DistributionError, match=r"below the per-wallet minimum of 0\.1 SOL$"):
        plan_distribution(SOL // 20, 73, table)


def test_caps_from_the_environment_are_read_as_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREMIX_TIER_CAPS_SOL", "0.25, 0.5,1")
    monkeypatch.setenv("PREMIX_MIN_WALLET_SOL", "0.02")
    table = Settings().tier_table()
    assert table == TierTable(caps_lamports=(SOL // 4, SOL // 2, SOL), min_lamports=2 * MIN)


def test_settings_with_too_many_decimals_are_refused_naming_the_setting() -> None:
    # Settings() itself now refuses this at load; build it unchecked to reach from_settings.
    settings = Settings.model_construct(tier_caps_sol=(Decimal("1.0000000001"),))
    with pytest.raises(ValueError, match=r"^PREMIX_TIER_CAPS_SOL: a cap has more than 9 decimals"):
        settings.tier_table()


def test_minimum_below_rent_exemption_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        TierTable(min_lamports=RENT_EXEMPT_MINIMUM_LAMPORTS - 1)
    assert str(refused.value) == (
        "per-wallet minimum 0.000890879 SOL is below the rent-exempt minimum of an empty "
        "account (0.00089088 SOL)"
    )
    assert TierTable(min_lamports=RENT_EXEMPT_MINIMUM_LAMPORTS).min_lamports == 890_880
    with pytest.raises(ValueError, match="below the rent-exempt minimum"):
        Settings(min_wallet_sol=Decimal("0.0005")).tier_table()


def test_caps_below_twice_the_minimum_are_refused() -> None:
    with pytest.raises(ValueError, match=r"cap of position 2 \(0.015 SOL\) is less than twice"):
        TierTable(caps_lamports=(SOL, 15_000_000), min_lamports=MIN)


@pytest.mark.parametrize("count", [0, 74])
def test_a_table_has_1_to_73_caps(count: int) -> None:
    with pytest.raises(ValueError, match=f"1 to 73 caps, not {count}"):
        TierTable(caps_lamports=(SOL,) * count)


# --- printing a plan -----------------------------------------------------------------------


def test_format_plan_prints_position_cap_amount_wallet_and_total() -> None:
    plan = plan_distribution(1_234_567_891, 73)
    text = format_plan(plan, ["Wallet1", "Wallet2", "Wallet3"])
    assert text.splitlines() == [
        "    #        cap (SOL)  amount (SOL)  wallet",
        "    1      0.500000000   0.411522631  Wallet1",
        "    2      0.500000000   0.411522630  Wallet2",
        "    3      0.500000000   0.411522630  Wallet3",
        "total  3 buyer wallets   1.234567891",
    ]


def test_format_plan_without_keys_lists_every_wallet_used() -> None:
    lines = format_plan(plan_distribution(CAPACITY, 73)).splitlines()
    assert len(lines) == 1 + 73 + 1
    assert lines[-2] == "   73       2.000000000   2.000000000"
    assert lines[-1] == "total  73 buyer wallets  85.000000000"


def test_format_plan_refuses_keys_that_do_not_match_the_plan() -> None:
    with pytest.raises(ValueError, match="2 public keys for a plan of 1 wallets"):
        format_plan([MIN], ["a", "b"])


def test_sol_amounts_in_settings_are_exact_lamports() -> None:
    # The table is built through Decimal: 0.7 SOL is exactly 700,000,000 lamports.
    assert sol_to_lamports(Decimal("0.7")) == DEFAULT_CAPS_LAMPORTS[10] == 700_000_000
