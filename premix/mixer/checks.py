"""The balance checks of a `Sender` (a mixin, private to the mixer package): every recipient
it funded holds at least its balance before plus its amount (a sweep: every source holds at
most its balance before minus its amount), read from a node that has reached the slot the
transfer landed in."""

from collections.abc import Sequence
from typing import Final

import structlog
from solders.pubkey import Pubkey

from premix.amounts import format_sol
from premix.ledger import AttemptState, RunRecord
from premix.rpc import SolanaRpc

BALANCE_CHECK_TRIES: Final = 5  # a node may serve balances a moment behind its statuses


class BalanceChecks:
    """What `Sender` checks on chain; the attributes are the sender's."""

    record: RunRecord
    rpc: SolanaRpc
    poll_seconds: float
    verified: dict[int, int]  # plan position -> its balance, checked on chain
    spent_since: dict[int, int]  # funded earlier, now holding less than received
    log: structlog.typing.FilteringBoundLogger

    async def fail(self, reason: str) -> None:
        raise NotImplementedError

    async def verify_balances(self, positions: Sequence[int], *, strict: bool = True) -> None:
        """Check each recipient at `positions` holds at least its balance before plus its
        amount, read from a node that has reached the slot the transfers landed in (a lagging
        node waits rather than show an older balance), a few times; remembers what it read in
        `verified`.

        `strict` (transfers this execution just confirmed): a node that keeps showing less
        raises `MixerFailed` and the run is marked failed. Otherwise (transfers an earlier
        execution confirmed) the transfer is proven by its signature and a lower balance only
        means the wallet was spent since: it is noted in `spent_since`, not a failure.
        """
        plan = self.record.plan
        expected = {p: plan[p].expected_balance for p in positions}
        landed = self.landed_slot(positions)  # a node behind it would show an older balance
        short: dict[int, int] = {}
        for read in range(BALANCE_CHECK_TRIES):
            keys = list(expected)
            if len(keys) == 1:
                wallet = self.watched_wallet(keys[0])
                balances = [await self.rpc.balance(wallet, min_context_slot=landed)]
            else:
                wallets = [self.watched_wallet(p) for p in keys]
                balances = await self.rpc.balances(wallets, min_context_slot=landed)
            self.verified.update(zip(keys, balances, strict=True))
            short = {
                p: b for p, b in zip(keys, balances, strict=True) if not plan[p].shows_transfer(b)
            }
            if not short:
                return
            if read + 1 < BALANCE_CHECK_TRIES:
                await self.rpc.sleep(self.poll_seconds)
        if not strict:
            self.spent_since.update(short)
            self.log.warning("recipients_spent_since_funded", positions=sorted(short))
            return
        position, balance = next(iter(short.items()))
        bound = "at most" if plan[position].source is not None else "at least"
        await self.fail(
            f"wallet {plan[position].watched} holds {format_sol(balance)} after its "
            f"confirmed transfer, expected {bound} {format_sol(expected[position])}"
        )

    def landed_slot(self, positions: Sequence[int]) -> int | None:
        """The latest slot in which the transactions paying `positions` landed (None if the
        ledger holds no slot for any of them)."""
        slots = [
            attempt.slot
            for p in positions
            if (tx := self.record.transaction_of(p)) is not None
            for attempt in tx.attempts
            if attempt.state is AttemptState.LANDED_OK and attempt.slot is not None
        ]
        return max(slots, default=None)

    def expected_balance(self, position: int) -> int:
        """What the watched wallet of `position` holds once its transfer landed (at least: a
        premix's recipient; at most: a sweep's source)."""
        return self.record.plan[position].expected_balance

    def watched_wallet(self, position: int) -> Pubkey:
        """The wallet whose balance shows the transfer at `position` landed (`PlanEntry`)."""
        return Pubkey.from_string(self.record.plan[position].watched)

    def _recipient(self, position: int) -> Pubkey:
        return Pubkey.from_string(self.record.plan[position].recipient)
