"""Priority fees: the compute-unit price each signed attempt carries (SPEC section 12).

`PREMIX_PRIORITY_FEE` is `auto` (the default) or a fixed price in micro-lamports per compute
unit (0: no ComputeBudget instructions at all). The compute-unit limit is exact either way
(`FeePolicy.compute_units`), and the fee of an attempt is fixed when it is signed: the ledger
records it (`Attempt.fee_lamports`, `compute_unit_price`, `priority_fee_lamports`) and every
report and balance check uses that number.

`auto`, per signing round (one getRecentPrioritizationFees call for the funding wallet and
every recipient not funded yet, at most 74 of the 128 accounts one call may name; a later round
within `READING_MAX_AGE_BLOCKS` blocks reuses it, so standard mode makes one call per ~10
transfers, not one per transfer):
- the market price is the `PREMIX_PRIORITY_FEE_PERCENTILE`-th percentile (nearest rank) of the
  per-slot fees reported, at least `PREMIX_PRIORITY_FEE_FLOOR_MICRO_LAMPORTS`;
- a transaction's first attempt bids the market price; each re-sign (its previous attempt
  expired without landing) bids at least `PREMIX_PRIORITY_FEE_RAISE_PERCENT` more than that
  attempt (100: doubles), or the market price if higher;
- never above `PREMIX_MAX_PRIORITY_FEE_LAMPORTS` per transaction: the price is at most
  cap x 10^6 / compute-unit limit (the runtime rounds the fee up, so it stays within the cap);
- a transaction whose attempt at the cap expired in this execution is not re-signed: the job
  is handed back (`TransientError`) with a message saying so; a later try bids the cap again.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from solders.pubkey import Pubkey

from premix.amounts import format_sol
from premix.errors import TransientError
from premix.ledger import LedgerTransaction, RunRecord
from premix.mixer.packing import (
    LAMPORTS_PER_SIGNATURE,
    MICRO_LAMPORTS_PER_LAMPORT,
    FeePolicy,
    max_transfers_per_transaction,
    pack,
)
from premix.rpc import SolanaRpc
from premix.settings import AUTO, Settings

log = structlog.get_logger(__name__)

READING_MAX_AGE_BLOCKS: Final = 10  # a fee reading this recent is reused by the next round
MAX_FEE_ACCOUNTS: Final = 128  # getRecentPrioritizationFees accepts at most this many


def percentile(values: Sequence[int], percent: int) -> int:
    """The nearest-rank `percent`-th percentile of `values` (0 for none)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = -(-percent * len(ordered) // 100)  # ceil
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class PriorityFees:
    """How premix prices its transactions (see the module docstring); no I/O."""

    fixed_micro_lamports: int | None = 0  # None: auto
    percentile: int = 75
    floor_micro_lamports: int = 10_000
    raise_percent: int = 100
    max_lamports: int = 100_000  # per transaction
    compute_unit_limit: int = 0  # 0: computed from the transfers

    @classmethod
    def from_settings(cls, settings: Settings) -> "PriorityFees":
        """The pricing the `PREMIX_PRIORITY_FEE*` settings configure."""
        fee = settings.priority_fee
        return cls(
            fixed_micro_lamports=None if fee == AUTO else int(fee),
            percentile=settings.priority_fee_percentile,
            floor_micro_lamports=settings.priority_fee_floor_micro_lamports,
            raise_percent=settings.priority_fee_raise_percent,
            max_lamports=settings.max_priority_fee_lamports,
            compute_unit_limit=settings.compute_unit_limit,
        )

    @property
    def auto(self) -> bool:
        return self.fixed_micro_lamports is None

    @property
    def packing(self) -> FeePolicy:
        """The policy transactions are packed by (auto: always priced, so its instructions
        fit whatever price is attached later)."""
        price = 1 if self.fixed_micro_lamports is None else self.fixed_micro_lamports
        return FeePolicy(price, self.compute_unit_limit)

    def at(self, price: int) -> FeePolicy:
        """The policy of one attempt bidding `price`."""
        return FeePolicy(price, self.compute_unit_limit)

    def cap_price(self, transfer_count: int) -> int:
        """The highest price a transaction of `transfer_count` transfers may bid."""
        units = self.packing.compute_units(transfer_count)
        return self.max_lamports * MICRO_LAMPORTS_PER_LAMPORT // units

    def price(self, transfer_count: int, market: int, previous: int | None) -> int:
        """The price of a new attempt: the market price (at least the floor), raised above
        `previous` (the expired attempt it replaces, if any), never above the cap."""
        if self.fixed_micro_lamports is not None:
            return self.fixed_micro_lamports
        price = max(market, self.floor_micro_lamports)
        if previous is not None:
            raised = previous * (100 + self.raise_percent) // 100
            price = max(price, raised, previous + 1)
        return min(price, self.cap_price(transfer_count))

    def max_fee_lamports(self, transfer_count: int) -> int:
        """The most a transaction of `transfer_count` transfers may pay (fixed: its fee)."""
        if self.fixed_micro_lamports is not None:
            return self.packing.fee_lamports(transfer_count)
        return self.at(self.cap_price(transfer_count)).fee_lamports(transfer_count)

    def estimate_fee_lamports(self, mode: str, transfer_count: int) -> int:
        """The most `transfer_count` transfers not signed yet may pay in fees in `mode`."""
        if mode == "standard":
            return transfer_count * self.max_fee_lamports(1)
        groups = pack(range(transfer_count), self.packing)
        return sum(self.max_fee_lamports(len(group)) for group in groups)

    def check(self) -> None:
        """Raise `ValueError` (naming the settings) for a configuration no transaction can
        satisfy: a compute-unit limit too small, or a price above the cap."""
        self.packing.check()
        largest = max_transfers_per_transaction(self.packing)
        cap = self.max_lamports
        if self.fixed_micro_lamports is not None:
            fee = self.packing.fee_lamports(largest) - LAMPORTS_PER_SIGNATURE
            if fee > cap:
                raise ValueError(
                    f"PREMIX_PRIORITY_FEE ({self.fixed_micro_lamports} micro-lamports per "
                    f"compute unit) makes a {largest}-transfer transaction pay {fee:,} lamports "
                    f"of priority fee, above PREMIX_MAX_PRIORITY_FEE_LAMPORTS ({cap:,})"
                )
        elif self.floor_micro_lamports > self.cap_price(largest):
            raise ValueError(
                f"PREMIX_PRIORITY_FEE_FLOOR_MICRO_LAMPORTS ({self.floor_micro_lamports}) is "
                f"above what PREMIX_MAX_PRIORITY_FEE_LAMPORTS ({cap:,}) allows a {largest}-"
                f"transfer transaction ({self.cap_price(largest)} micro-lamports per compute unit)"
            )


_UNPRICED: Final = FeePolicy(0)  # no ComputeBudget instructions


def _fits(fees: PriorityFees, positions: Sequence[int], logger: Any) -> bool:
    """True when a transaction of `positions` still fits the packet with the ComputeBudget
    instructions a price needs. One signed before without them (21 transfers, packed under a
    zero fee: the default before `auto`) keeps its group and is re-signed unpriced."""
    if not fees.packing.has_priority_fee:
        return True
    if len(positions) <= max_transfers_per_transaction(fees.packing):
        return True
    logger.warning(
        "priority_fee_left_out",
        transfers=len(positions),
        reason="the transaction was packed without a priority fee; with one it would not fit",
    )
    return False


class FeePricing:
    """One execution's pricing of its signing rounds (reads the fee market through `rpc`)."""

    def __init__(self, fees: PriorityFees, rpc: SolanaRpc, *, run_id: str) -> None:
        self.fees = fees
        self.rpc = rpc
        self.log = log.bind(run_id=run_id)  # one process may run several premixes at once
        # (last valid block height of the round that read it, the highest slot the client had
        # seen then (None: none), accounts, market price)
        self._reading: tuple[int, int | None, frozenset[Pubkey], int] | None = None

    async def policies(
        self,
        record: RunRecord,
        work: Sequence[tuple[LedgerTransaction | None, list[int]]],
        *,
        funding: Pubkey,
        valid_until: int,
        expired_here: Counter[int],
    ) -> list[FeePolicy]:
        """The fee policy of each new attempt of `work` (signed with a blockhash valid until
        `valid_until`). Raises `TransientError` when a transaction whose attempt at the cap
        expired in this execution (`expired_here`) would have to be re-signed."""
        fees = self.fees
        if not fees.auto:
            return [
                fees.packing if _fits(fees, positions, self.log) else _UNPRICED
                for _, positions in work
            ]
        market = await self._market(record, funding, valid_until)
        policies = []
        for tx, positions in work:
            if not _fits(fees, positions, self.log):
                policies.append(_UNPRICED)
                continue
            previous = tx.last_attempt if tx is not None else None
            previous_price = None if previous is None else previous.compute_unit_price
            cap = fees.cap_price(len(positions))
            at_cap = previous_price is not None and previous_price >= cap
            if tx is not None and at_cap and expired_here[tx.index]:
                self.log.warning(
                    "priority_fee_cap_reached",
                    transaction=tx.index,
                    compute_unit_price=previous_price,
                    max_priority_fee_lamports=fees.max_lamports,
                    setting="PREMIX_MAX_PRIORITY_FEE_LAMPORTS",
                )
                raise TransientError(
                    f"the network is congested: transaction {tx.index + 1} did not land "
                    "even at the highest priority fee allowed "
                    f"({format_sol(fees.max_lamports)} per transaction)"
                )
            policies.append(fees.at(fees.price(len(positions), market, previous_price)))
        return policies

    async def _market(self, record: RunRecord, funding: Pubkey, valid_until: int) -> int:
        """The market price for the run's writable accounts: one getRecentPrioritizationFees
        unless a reading of the last `READING_MAX_AGE_BLOCKS` blocks covers them."""
        funded = set(record.funded_positions())
        accounts = [funding] + [
            Pubkey.from_string(entry.watched)  # a sweep's writable accounts are its sources
            for entry in record.plan
            if entry.position not in funded
        ]
        accounts = accounts[:MAX_FEE_ACCOUNTS]
        reading = self._reading
        # A blockhash reused while young keeps `valid_until` still: the slots the client saw
        # age the reading too.
        seen = self.rpc.slots.highest("processed", "confirmed")
        if (
            reading is not None
            and valid_until - reading[0] <= READING_MAX_AGE_BLOCKS
            and (seen is None or reading[1] is None or seen - reading[1] <= READING_MAX_AGE_BLOCKS)
            and set(accounts) <= reading[2]
        ):
            return reading[3]
        fees = await self.rpc.recent_prioritization_fees(accounts)
        market = percentile(fees, self.fees.percentile)
        self._reading = (valid_until, seen, frozenset(accounts), market)
        self.log.info("priority_fee_market_read", market_micro_lamports=market, slots=len(fees))
        return market
