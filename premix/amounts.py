"""SOL amounts as exact integer lamports: parsing user input and formatting for people."""

from decimal import Decimal, InvalidOperation

from premix.constants import LAMPORTS_PER_SOL

MAX_LAMPORTS = 2**64 - 1  # a lamport balance is a u64 on chain
_SOL_DECIMALS = 9


class AmountError(ValueError):
    """An amount that cannot be an exact, positive number of lamports."""


def parse_sol(value: object) -> Decimal:
    """Return `value` as an exact SOL `Decimal` with at most 9 decimals.

    Accepts int, float (by its shortest repr, which is what the caller typed), Decimal and
    numeric strings. Raises `AmountError` for bools, non-numbers, NaN, infinities, zero,
    negatives, more than 9 decimals, or more lamports than a u64 holds.
    """
    if isinstance(value, bool):
        raise AmountError("must be a number of SOL, not a boolean")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | float | str):
        try:
            amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except InvalidOperation as e:
            raise AmountError(f"must be a number of SOL, got {str(value)[:40]!r}") from e
    else:
        raise AmountError(f"must be a number of SOL, got {type(value).__name__}")
    if not amount.is_finite():
        raise AmountError("must be a finite number of SOL")
    if amount <= 0:
        raise AmountError("must be greater than 0 SOL")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -_SOL_DECIMALS:
        raise AmountError("has more than 9 decimals (1 lamport = 0.000000001 SOL)")
    if amount * LAMPORTS_PER_SOL > MAX_LAMPORTS:
        raise AmountError(f"is larger than the most a wallet can hold ({MAX_LAMPORTS} lamports)")
    return amount


def sol_to_lamports(value: object) -> int:
    """Return `value` (SOL) as integer lamports; raises `AmountError` as `parse_sol` does."""
    return int(parse_sol(value) * LAMPORTS_PER_SOL)


def lamports_to_sol(lamports: int) -> Decimal:
    """Return `lamports` as an exact SOL `Decimal`."""
    return Decimal(lamports) / LAMPORTS_PER_SOL


def format_sol(lamports: int) -> str:
    """Return `lamports` as a SOL string for people, without trailing zeros: '0.5 SOL'."""
    text = f"{lamports_to_sol(lamports):.9f}".rstrip("0").rstrip(".")
    return f"{text} SOL"
