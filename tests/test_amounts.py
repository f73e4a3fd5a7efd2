"""SOL <-> lamports is exact: no float arithmetic, no silent rounding, u64 bounds."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from premix.amounts import (
    MAX_LAMPORTS,
    AmountError,
    format_sol,
    lamports_to_sol,
    parse_sol,
    sol_to_lamports,
)

TOO_MANY_DECIMALS = "has more than 9 decimals (1 lamport = 0.000000001 SOL)"
TOO_LARGE = "is larger than the most a wallet can hold (18446744073.709551615 SOL)"


@pytest.mark.parametrize(
    ("sol", "lamports"),
    [
        (1, 1_000_000_000),
        (0.1, 100_000_000),  # a float counts as what was typed, not its binary value
        (0.3, 300_000_000),
        (Decimal("0.1") + Decimal("0.2"), 300_000_000),
        ("1.000000001", 1_000_000_001),
        ("0.000000001", 1),
        ("0.0000000010", 1),  # trailing zeros below a lamport are harmless
        ("1.500000000000", 1_500_000_000),
        ("1E+5", 100_000_000_000_000),
        (Decimal("1.230E-7"), 123),
        ("18446744073.709551615", MAX_LAMPORTS),
        (18446744073, 18_446_744_073_000_000_000),
    ],
)
def test_sol_to_lamports_is_exact(sol: object, lamports: int) -> None:
    assert sol_to_lamports(sol) == lamports


@pytest.mark.parametrize(
    ("sol", "message"),
    [
        (0.1 + 0.2, TOO_MANY_DECIMALS),  # 0.30000000000000004: the float error is refused
        ("1.0000000001", TOO_MANY_DECIMALS),
        # 29 decimals: a 28-digit Decimal context would round this to exactly 1 SOL.
        ("1.00000000000000000000000000001", TOO_MANY_DECIMALS),
        ("1e-999999999", TOO_MANY_DECIMALS),
        ("18446744073.709551616", TOO_LARGE),  # one lamport over a u64
        (10**30, TOO_LARGE),
        ("1e999999", TOO_LARGE),  # would overflow a Decimal context
        (1e16, TOO_LARGE),
        (0, "must be greater than 0 SOL"),
        ("-0.5", "must be greater than 0 SOL"),
        ("0E-20", "must be greater than 0 SOL"),
        (float("nan"), "must be a finite number of SOL"),
        ("-Infinity", "must be a finite number of SOL"),
        (Decimal("sNaN"), "must be a finite number of SOL"),
        (True, "must be a number of SOL, not a boolean"),
        ("0x10", "must be a number of SOL, got '0x10'"),
        (b"1", "must be a number of SOL, got bytes"),
    ],
)
def test_inexact_or_impossible_amounts_are_refused(sol: object, message: str) -> None:
    with pytest.raises(AmountError) as refused:
        sol_to_lamports(sol)
    assert str(refused.value) == message


def test_amount_error_is_a_value_error() -> None:
    assert issubclass(AmountError, ValueError)


def test_parse_sol_returns_the_exact_decimal_without_trailing_zeros() -> None:
    assert parse_sol("0.500") == Decimal("0.5")
    assert str(parse_sol("0.500")) == "0.5"
    assert str(parse_sol(10)) == "10"
    assert parse_sol(0.1) == Decimal("0.1")


@given(st.integers(0, MAX_LAMPORTS))
def test_lamports_round_trip_through_sol(lamports: int) -> None:
    sol = lamports_to_sol(lamports)
    assert sol * 1_000_000_000 == lamports
    if lamports:
        assert sol_to_lamports(sol) == lamports
        assert sol_to_lamports(str(sol)) == lamports
        assert sol_to_lamports(format_sol(lamports).removesuffix(" SOL")) == lamports


@pytest.mark.parametrize(
    ("lamports", "text"),
    [
        (500_000_000, "0.5 SOL"),
        (1, "0.000000001 SOL"),
        (85_000_000_000, "85 SOL"),
        (10_000_000_000, "10 SOL"),
        (1_234_567_891, "1.234567891 SOL"),
        (890_880, "0.00089088 SOL"),
        (0, "0 SOL"),
        (MAX_LAMPORTS, "18446744073.709551615 SOL"),
    ],
)
def test_format_sol_reads_like_a_person_writes_it(lamports: int, text: str) -> None:
    assert format_sol(lamports) == text
