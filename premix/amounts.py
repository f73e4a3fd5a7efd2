"""SOL amounts as exact integer lamports: parsing user input and formatting for people.

Every conversion works on the decimal digits themselves (never on a float, and never through a
rounding `Decimal` context), so an amount is either exactly a whole number of lamports or refused.
"""

from decimal import Decimal, InvalidOperation

from premix.constants import LAMPORTS_PER_SOL

MAX_LAMPORTS = 2**64 - 1  # a lamport balance is a u64 on chain
_SOL_DECIMALS = 9
# 10^11 SOL is already above MAX_LAMPORTS; bigger exponents are refused before any arithmetic.
_MAX_SOL_ADJUSTED_EXPONENT = 10


class AmountError(ValueError):
    """An amount that cannot be an exact, positive number of lamports."""


def _to_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise AmountError("must be a number of SOL, not a boolean")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | float | str):
        try:
            # A float is taken by its shortest repr, which is what the caller typed.
            return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except InvalidOperation as e:
            raise AmountError(f"must be a number of SOL, got {str(value)[:40]!r}") from e
    raise AmountError(f"must be a number of SOL, got {type(value).__name__}")


def sol_to_lamports(value: object, *, allow_zero: bool = False) -> int:
    """Return `value` (SOL) as exact integer lamports.

    Accepts int, float (by its shortest repr), Decimal and numeric strings. Raises `AmountError`
    for bools, non-numbers, NaN, infinities, zero (unless `allow_zero`: an amount to keep),
    negatives, more than 9 decimals, or more lamports than a u64 holds.
    """
    amount = _to_decimal(value)
    if not amount.is_finite():
        raise AmountError("must be a finite number of SOL")
    if allow_zero and amount == 0:
        return 0
    if amount <= 0:
        raise AmountError("must be 0 SOL or more" if allow_zero else "must be greater than 0 SOL")
    if amount.adjusted() > _MAX_SOL_ADJUSTED_EXPONENT:
        raise _too_large()
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    coefficient = "".join(map(str, digits))
    shift = exponent + _SOL_DECIMALS  # decimal places from the coefficient to lamports
    if shift >= 0:
        lamports = int(coefficient + "0" * shift)
    else:
        whole, below_one_lamport = coefficient[:shift], coefficient[shift:]
        if len(below_one_lamport) < -shift or below_one_lamport.strip("0"):
            raise AmountError("has more than 9 decimals (1 lamport = 0.000000001 SOL)")
        lamports = int(whole or "0")
    if lamports > MAX_LAMPORTS:
        raise _too_large()
    return lamports


def _too_large() -> AmountError:
    return AmountError(f"is larger than the most a wallet can hold ({format_sol(MAX_LAMPORTS)})")


def parse_sol(value: object) -> Decimal:
    """Return `value` as an exact SOL `Decimal` (at most 9 decimals, no trailing zeros).

    Raises `AmountError` as `sol_to_lamports` does.
    """
    return lamports_to_sol(sol_to_lamports(value))


def lamports_to_sol(lamports: int) -> Decimal:
    """Return `lamports` as an exact SOL `Decimal`."""
    # Exact: at most 20 digits, well inside the default 28-digit context.
    return Decimal(lamports) / LAMPORTS_PER_SOL


def sol_text(lamports: int) -> str:
    """Return `lamports` as exact SOL digits for JSON, without a unit: '0.5', '12'."""
    return f"{lamports_to_sol(lamports):f}"


def format_sol(lamports: int) -> str:
    """Return `lamports` as a SOL string for people, without trailing zeros: '0.5 SOL'."""
    text = f"{lamports_to_sol(lamports):.9f}".rstrip("0").rstrip(".")
    return f"{text} SOL"
