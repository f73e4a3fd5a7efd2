"""The 73-wallet distribution: how one premix amount is split over a user's buyer wallets.

Pure planning: integers in, integers out, no I/O, no randomness. The worker calls
`plan_distribution(amount_lamports, wallet_count)` in phase 3 and the transfer engine sends
exactly the amounts returned, one plain transfer per buyer wallet, in the wallets' stored order.

The tier table
--------------
Every buyer wallet position (1 = the first stored wallet) has a cap: the most that wallet is
given. Early positions hold less, later ones more. The default table (`DEFAULT_TIERS`):

    positions   wallets   cap per wallet   tier holds
    1 - 10        10         0.5 SOL          5 SOL
    11 - 30       20         0.7 SOL         14 SOL
    31 - 50       20         1 SOL           20 SOL
    51 - 73       23         2 SOL           46 SOL
    total         73                         85 SOL

Each funded wallet also gets at least the per-wallet minimum (default 0.01 SOL), which is never
below the rent-exempt minimum of an empty account, so every funded wallet exists on chain.
Settings override both: `PREMIX_TIER_CAPS_SOL` (one cap per position, in SOL) and
`PREMIX_MIN_WALLET_SOL`; see `TierTable.from_sol` (`Settings.tier_table()` calls it).

How a plan is made
------------------
1. Use the fewest wallets, in order, whose caps together hold the amount ("only the wallets
   needed"): n such that caps[0] + ... + caps[n-1] >= amount > caps[0] + ... + caps[n-2].
2. Spread the amount over those n wallets in proportion to their caps, in whole lamports: each
   gets the floor of its exact share, and the lamports left over go one each to the largest
   remainders (ties to the earlier position). No share exceeds its cap.
3. Any share below the minimum is raised to the minimum and the rest of the amount is spread
   again over the other wallets, in proportion to their caps; repeat until none is below.
   (With the default table this never happens: the smallest share is far above 0.01 SOL.)

The amounts always sum to exactly the requested lamports. An amount below the minimum, or above
what the available wallets can hold, raises `DistributionError` stating the limits.
"""

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import Final

from premix.amounts import AmountError, format_sol, lamports_to_sol, sol_to_lamports
from premix.constants import MAX_BUYER_WALLETS

# Balance an account with no data needs to be rent exempt (`getMinimumBalanceForRentExemption(0)`).
RENT_EXEMPT_MINIMUM_LAMPORTS: Final = 890_880
DEFAULT_MIN_WALLET_SOL: Final = Decimal("0.01")


class DistributionError(ValueError):
    """An amount the available buyer wallets cannot take; the message states the limits."""

    def __init__(
        self, message: str, *, amount_lamports: int, min_lamports: int, max_lamports: int
    ) -> None:
        super().__init__(message)
        self.amount_lamports = amount_lamports
        self.min_lamports = min_lamports
        self.max_lamports = max_lamports


@dataclass(frozen=True, slots=True)
class Tier:
    """Positions `first_position`..`last_position` (1-based, inclusive) share one cap."""

    first_position: int
    last_position: int
    cap_sol: Decimal


DEFAULT_TIERS: Final = (
    Tier(1, 10, Decimal("0.5")),
    Tier(11, 30, Decimal("0.7")),
    Tier(31, 50, Decimal("1")),
    Tier(51, 73, Decimal("2")),
)


def caps_from_tiers(tiers: Sequence[Tier]) -> tuple[int, ...]:
    """Return one cap in lamports per position, from tiers covering positions 1, 2, ... in order.

    Raises `ValueError` if the tiers leave a gap, overlap or are empty.
    """
    caps: list[int] = []
    for tier in tiers:
        if tier.first_position != len(caps) + 1 or tier.last_position < tier.first_position:
            raise ValueError(
                f"tier {tier.first_position}-{tier.last_position} does not continue at "
                f"position {len(caps) + 1}"
            )
        caps += [sol_to_lamports(tier.cap_sol)] * (tier.last_position - tier.first_position + 1)
    return tuple(caps)


DEFAULT_CAPS_LAMPORTS: Final = caps_from_tiers(DEFAULT_TIERS)


@dataclass(frozen=True, slots=True)
class TierTable:
    """Per-position caps and the per-wallet minimum, in lamports; validated on construction.

    Raises `ValueError` unless: 1 to 73 caps; the minimum is at least the rent-exempt minimum
    of an empty account; every cap is at least twice the minimum (which makes every amount from
    the minimum up to the table's capacity plannable).
    """

    caps_lamports: tuple[int, ...] = DEFAULT_CAPS_LAMPORTS
    min_lamports: int = sol_to_lamports(DEFAULT_MIN_WALLET_SOL)
    # caps_lamports[0] + ... + caps_lamports[i], for finding the wallets needed by bisection.
    cumulative_lamports: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        caps = tuple(self.caps_lamports)
        if not 1 <= len(caps) <= MAX_BUYER_WALLETS:
            raise ValueError(f"a tier table has 1 to {MAX_BUYER_WALLETS} caps, not {len(caps)}")
        if self.min_lamports < RENT_EXEMPT_MINIMUM_LAMPORTS:
            raise ValueError(
                f"per-wallet minimum {format_sol(self.min_lamports)} is below the rent-exempt "
                f"minimum of an empty account ({format_sol(RENT_EXEMPT_MINIMUM_LAMPORTS)})"
            )
        for position, cap in enumerate(caps, start=1):
            if cap < 2 * self.min_lamports:
                raise ValueError(
                    f"cap of position {position} ({format_sol(cap)}) is less than twice the "
                    f"per-wallet minimum ({format_sol(self.min_lamports)})"
                )
        object.__setattr__(self, "caps_lamports", caps)
        object.__setattr__(self, "cumulative_lamports", tuple(accumulate(caps)))

    @classmethod
    def from_sol(cls, caps_sol: Sequence[Decimal] | None, min_wallet_sol: Decimal) -> "TierTable":
        """Return the table of per-position caps `caps_sol` (None: the default caps) and the
        per-wallet minimum `min_wallet_sol`, as `PREMIX_TIER_CAPS_SOL` and
        `PREMIX_MIN_WALLET_SOL` give them.

        Raises `ValueError` naming the setting when a value is not a valid amount or the
        resulting table is invalid.
        """
        try:
            min_lamports = sol_to_lamports(min_wallet_sol)
        except AmountError as e:
            raise ValueError(f"PREMIX_MIN_WALLET_SOL {e}") from e
        caps = DEFAULT_CAPS_LAMPORTS
        if caps_sol is not None:
            try:
                caps = tuple(sol_to_lamports(cap) for cap in caps_sol)
            except AmountError as e:
                raise ValueError(f"PREMIX_TIER_CAPS_SOL: a cap {e}") from e
        try:
            return cls(caps_lamports=caps, min_lamports=min_lamports)
        except ValueError as e:
            raise ValueError(f"PREMIX_TIER_CAPS_SOL / PREMIX_MIN_WALLET_SOL: {e}") from e

    @property
    def capacity_lamports(self) -> int:
        """The most the whole table holds (85 SOL for the default table)."""
        return self.cumulative_lamports[-1]


DEFAULT_TABLE: Final = TierTable()


def max_distributable_lamports(wallet_count: int, table: TierTable = DEFAULT_TABLE) -> int:
    """Return the most `wallet_count` buyer wallets can hold (positions beyond the table: none).

    Raises `ValueError` for a negative or non-integer `wallet_count`.
    """
    usable = _usable_wallets(wallet_count, table)
    return table.cumulative_lamports[usable - 1] if usable else 0


def wallets_needed(
    total_lamports: int, wallet_count: int | None = None, table: TierTable = DEFAULT_TABLE
) -> int:
    """Return the fewest wallets, in order, whose caps hold `total_lamports`.

    `wallet_count` is how many buyer wallets are available (None: as many as the table has).
    Raises `DistributionError` when the amount is below the per-wallet minimum or above what the
    available wallets can hold.
    """
    available = len(table.caps_lamports) if wallet_count is None else wallet_count
    most = max_distributable_lamports(available, table)
    if isinstance(total_lamports, bool) or not isinstance(total_lamports, int):
        raise TypeError(f"total_lamports must be an int, not {type(total_lamports).__name__}")
    if total_lamports < table.min_lamports:
        raise DistributionError(
            f"Amount {format_sol(total_lamports)} is below the per-wallet minimum of "
            f"{format_sol(table.min_lamports)}",
            amount_lamports=total_lamports,
            min_lamports=table.min_lamports,
            max_lamports=most,
        )
    if total_lamports > most:
        usable = _usable_wallets(available, table)
        message = (
            f"Amount {format_sol(total_lamports)} is more than {_wallets(usable)} can hold"
            if usable
            else f"No buyer wallets are available for {format_sol(total_lamports)}"
        )
        raise DistributionError(
            f"{message} (at most {format_sol(most)})",
            amount_lamports=total_lamports,
            min_lamports=table.min_lamports,
            max_lamports=most,
        )
    return bisect_left(table.cumulative_lamports, total_lamports) + 1


def plan_distribution(
    total_lamports: int, wallet_count: int, table: TierTable = DEFAULT_TABLE
) -> list[int]:
    """Return the lamports for each wallet used, in wallet order; they sum to `total_lamports`.

    Uses `wallets_needed` wallets (at most `wallet_count`); each amount is between the table's
    minimum and its position's cap. Raises `DistributionError` as `wallets_needed` does.
    """
    count = wallets_needed(total_lamports, wallet_count, table)
    return _spread(total_lamports, table.caps_lamports[:count], table.min_lamports)


def format_plan(
    amounts: Sequence[int],
    public_keys: Sequence[object] | None = None,
    table: TierTable = DEFAULT_TABLE,
) -> str:
    """Return `amounts` (a plan) as a printable table: position, tier cap, amount, wallet, total.

    Raises `ValueError` when the plan is longer than the table or `public_keys` has another
    length than `amounts`.
    """
    if len(amounts) > len(table.caps_lamports):
        raise ValueError(f"a plan of {len(amounts)} wallets is longer than the tier table")
    if public_keys is not None and len(public_keys) != len(amounts):
        raise ValueError(f"{len(public_keys)} public keys for a plan of {len(amounts)} wallets")
    caps = [_sol_column(cap) for cap in table.caps_lamports[: len(amounts)]]
    sols = [_sol_column(amount) for amount in amounts]
    wallet_total, sol_total = _wallets(len(amounts)), _sol_column(sum(amounts))
    cap_width = max(len("cap (SOL)"), len(wallet_total), *map(len, caps))
    sol_width = max(len("amount (SOL)"), len(sol_total), *map(len, sols))

    def row(position: object, cap: str, sol: str, wallet: object) -> str:
        line = f"{position:>5}  {cap:>{cap_width}}  {sol:>{sol_width}}"
        return line if public_keys is None else f"{line}  {wallet}"

    rows = [row("#", "cap (SOL)", "amount (SOL)", "wallet")]
    for position, (cap, sol) in enumerate(zip(caps, sols, strict=True)):
        rows.append(row(position + 1, cap, sol, public_keys[position] if public_keys else ""))
    rows.append(row("total", wallet_total, sol_total, "").rstrip())
    return "\n".join(rows)


def _usable_wallets(wallet_count: int, table: TierTable) -> int:
    if isinstance(wallet_count, bool) or not isinstance(wallet_count, int) or wallet_count < 0:
        raise ValueError(f"wallet_count must be a whole number >= 0, not {wallet_count!r}")
    return min(wallet_count, len(table.caps_lamports))


def _spread(total: int, caps: Sequence[int], minimum: int) -> list[int]:
    # Callers guarantee len(caps) * minimum <= total <= sum(caps) (see TierTable's rules).
    amounts = [0] * len(caps)
    free = list(range(len(caps)))  # positions still shared out in proportion to their caps
    remaining = total
    while True:
        shares = _apportion(remaining, [caps[i] for i in free])
        below = {i for i, share in zip(free, shares, strict=True) if share < minimum}
        if not below:
            for i, share in zip(free, shares, strict=True):
                amounts[i] = share
            return amounts
        # Raising the smallest shares only lowers the others' ratio: fix them and spread again.
        for i in below:
            amounts[i] = minimum
        remaining -= minimum * len(below)
        free = [i for i in free if i not in below]


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights` exactly (largest remainder, ties to the first)."""
    weight_sum = sum(weights)
    quotients = [divmod(total * weight, weight_sum) for weight in weights]
    shares = [share for share, _ in quotients]
    leftover = total - sum(shares)  # fewer than len(weights) lamports
    by_remainder = sorted(range(len(weights)), key=lambda i: (-quotients[i][1], i))
    for i in by_remainder[:leftover]:
        shares[i] += 1
    return shares


def _sol_column(lamports: int) -> str:
    return f"{lamports_to_sol(lamports):.9f}"


def _wallets(count: int) -> str:
    return f"{count} buyer wallet" + ("" if count == 1 else "s")
