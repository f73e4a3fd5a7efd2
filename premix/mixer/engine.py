"""What both transfer modes share: sign (write-ahead), send, settle, verify (private to the
mixer package: the face is `premix.mixer.Payout`).

A `Sender` holds one execution's view of a ledger run and talks to the chain through
`SolanaRpc`. Every signed attempt is saved in the ledger before its first send; every outcome is
saved once seen.
An attempt is settled as landed only at `confirmed`, and as expired only when the `finalized`
block height, read *before* a status lookup that searches history, is above its last valid
block height and the lookup does not find it - twice, the second time with the finalized slot
and a lookup answered by a node that has reached it (RPC endpoints are often several nodes).
Until then it may land, so it is only re-sent as the same bytes.
"""

import asyncio
import base64
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from solana.rpc.commitment import Finalized
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from premix.amounts import format_sol
from premix.errors import TransientError
from premix.ledger import (
    Attempt,
    AttemptState,
    Ledger,
    LedgerError,
    LedgerTransaction,
    RunRecord,
    RunStatus,
    utc_now,
)
from premix.mixer.fees import FeePricing, PriorityFees
from premix.mixer.packing import build_message, sign
from premix.mixer.polling import HeightStall, gather_all, poll_delays
from premix.mixer.result import MixerFailed, MixerProgress, MixResult
from premix.rpc import SendOutcome, SendResult, SignatureStatus, SolanaRpc

log = structlog.get_logger(__name__)

ProgressCallback = Callable[[MixerProgress], Awaitable[None]]

BALANCE_EVIDENCE: Final = "balances"  # how a landing unseen by any node was proven
EXPIRY_CHECK_ROUNDS: Final = 8  # poll rounds between block-height checks while a tx is unseen
REBROADCAST_ROUNDS: Final = 8  # poll rounds between re-sends of an unseen tx (same bytes)
BALANCE_CHECK_TRIES: Final = 5  # a node may serve balances a moment behind its statuses
# Expiries of one transaction one execution accepts before handing the job back to the queue
# (a node that drops everything); the re-run resumes from the ledger.
MAX_EXPIRIES_PER_EXECUTION: Final = 5


@dataclass(frozen=True)
class Refusal:
    """An attempt the node refused at its first send in this run (preflight failed)."""

    transaction: LedgerTransaction
    attempt: Attempt


class Sender:
    """One execution's sending of a ledger run: the record in memory, saved after every change.
    `funding` (the signer) and `on_progress` are set before anything is signed."""

    def __init__(
        self,
        *,
        record: RunRecord,
        rpc: SolanaRpc,
        ledger: Ledger,
        fees: PriorityFees,
        poll_seconds: float,
        first_poll_seconds: float = 0.0,
    ) -> None:
        self.record = record
        self.funding: Keypair | None = None
        self.rpc = rpc
        self.ledger = ledger
        self.fees = fees
        self.pricing = FeePricing(fees, rpc)
        self.poll_seconds = poll_seconds
        self.first_poll_seconds = first_poll_seconds  # fast mode's wait before its first poll
        self.on_progress: ProgressCallback | None = None
        self.funded_here: list[int] = []  # plan positions funded by this execution
        self.verified: dict[int, int] = {}  # plan position -> its balance, checked on chain
        self.spent_since: dict[int, int] = {}  # funded earlier, now holding less than received
        self.expiry_check_due = False  # a send saw "blockhash not found": check the height now
        self.expiries: Counter[int] = Counter()  # transaction index -> expired in this execution
        self.log = log.bind(run_id=record.run_id)

    # --- ledger ---

    async def save(self) -> None:
        """Persist the record (compare-and-swap on its revision)."""
        self.record = await self.ledger.save(self.record)

    # --- sign and send ---

    async def sign_attempts(
        self, work: Sequence[tuple[LedgerTransaction | None, list[int]]]
    ) -> list[tuple[LedgerTransaction, Attempt]]:
        """Sign one new attempt per (transaction or None for a new one, positions) with one
        fresh blockhash and its priority fee (`FeePricing`: one fee reading per round at
        most), and save them all in one ledger write before anything is sent."""
        record = self.record
        funding = self.funding
        if funding is None:
            raise LedgerError(f"run {record.run_id}: no funding wallet to sign with")
        missing = [
            p for _, positions in work for p in positions if record.plan[p].balance_before is None
        ]
        if missing:
            balances = await self.rpc.balances([self._recipient(p) for p in missing])
            for position, lamports in zip(missing, balances, strict=True):
                record.record_balance_before(position, lamports)
        latest = await self.rpc.latest_blockhash()
        policies = await self.pricing.policies(
            record,
            work,
            funding=funding.pubkey(),
            valid_until=latest.last_valid_block_height,
            expired_here=self.expiries,
        )
        known = {a.signature for tx in record.transactions for a in tx.attempts}
        now = utc_now()
        signed: list[tuple[LedgerTransaction, Attempt]] = []
        for (tx, positions), fees in zip(work, policies, strict=True):
            transfers = [(self._recipient(p), record.plan[p].lamports) for p in positions]
            message = build_message(funding.pubkey(), transfers, latest.blockhash, fees)
            transaction = sign(message, funding)
            attempt = Attempt(
                signature=str(transaction.signatures[0]),
                blockhash=str(latest.blockhash),
                last_valid_block_height=latest.last_valid_block_height,
                wire=base64.b64encode(bytes(transaction)).decode("ascii"),
                signed_at=now,
                fee_lamports=fees.fee_lamports(len(positions)),
                compute_unit_price=fees.compute_unit_price if fees.has_priority_fee else 0,
                priority_fee_lamports=fees.priority_fee_lamports(len(positions)),
            )
            if attempt.signature in known:  # a node serving a blockhash we already used
                raise TransientError("the RPC node returned a stale blockhash; retrying later")
            if tx is None:
                tx = record.add_transaction(positions, attempt)
            else:
                record.add_attempt(tx.index, attempt)
            signed.append((tx, attempt))
        record.funding = str(funding.pubkey())
        await self.save()
        for tx, attempt in signed:
            self.log.info(
                "transaction_signed",
                transaction=tx.index,
                transfers=len(tx.transfers),
                signature=attempt.signature,
                last_valid_block_height=attempt.last_valid_block_height,
                compute_unit_price=attempt.compute_unit_price,
                fee_lamports=attempt.fee_lamports,
            )
        return signed

    async def send(self, sends: Sequence[tuple[LedgerTransaction, Attempt]]) -> list[Refusal]:
        """Send each attempt's stored bytes concurrently; record and return the refused ones."""
        results = await self.send_wires([attempt for _, attempt in sends])
        refusals: list[Refusal] = []
        now = utc_now()
        changed = False
        for (tx, attempt), result in zip(sends, results, strict=True):
            if result.outcome is SendOutcome.REJECTED:
                refusals.append(Refusal(tx, attempt))
                if attempt.state is not AttemptState.REJECTED or attempt.error != result.error:
                    if attempt.state is AttemptState.REJECTED:
                        attempt.error = result.error
                    else:
                        attempt.move_to(AttemptState.REJECTED, now=now, error=result.error)
                    changed = True
                self.log.warning("transaction_refused", transaction=tx.index, reason=result.error)
            elif attempt.state is AttemptState.REJECTED and result.outcome is SendOutcome.ACCEPTED:
                attempt.move_to(AttemptState.SIGNED, now=now)  # accepted on a later send
                attempt.error = None
                changed = True
        if changed:
            await self.save()
        return refusals

    async def send_wires(self, attempts: Sequence[Attempt]) -> list[SendResult]:
        """Send each attempt's stored bytes concurrently (never re-signed); return the results."""
        results: list[SendResult] = await gather_all(
            [self.rpc.send_raw(base64.b64decode(attempt.wire)) for attempt in attempts]
        )
        if any(r.outcome is SendOutcome.BLOCKHASH_NOT_FOUND for r in results):
            self.expiry_check_due = True
        return results

    # --- settle ---

    async def settle_recorded(self) -> frozenset[str]:
        """Settle every attempt a previous execution left open: landed, expired or still open.
        Returns the signatures of those still open that the chain already shows without error
        (processed, not yet confirmed: as good as gone from the funding wallet).

        The block height is read first, then the statuses (searching history): a signature
        missing from that lookup cannot land later once the height is past its validity.
        """
        open_attempts = [a for _, a in self.record.open_attempts()]
        if not open_attempts:
            return frozenset()
        height = await self.rpc.block_height(Finalized)
        statuses = await self.rpc.signature_statuses(
            [Signature.from_string(a.signature) for a in open_attempts], search_history=True
        )
        await self._apply(open_attempts, statuses, height)
        self.log.info(
            "recorded_attempts_settled",
            attempts=len(open_attempts),
            still_open=len(self.record.open_attempts()),
        )
        return frozenset(
            attempt.signature
            for attempt, status in zip(open_attempts, statuses, strict=True)
            if attempt.is_open and status is not None and status.error is None
        )

    async def await_outcomes(
        self, attempts: Sequence[Attempt], *, backoff: bool, first_wait_seconds: float = 0.0
    ) -> None:
        """Poll until every attempt has landed (at `confirmed`) or expired; the first poll comes
        after `first_wait_seconds` (at least the poll interval).

        Unseen attempts are re-sent (same bytes) every few rounds; the block height is read
        only every few rounds, or at once after a send saw "blockhash not found".
        """
        pending = [a for a in attempts if a.is_open]
        rounds = 0
        delays = poll_delays(self.poll_seconds, backoff=backoff, first_seconds=first_wait_seconds)
        stall = HeightStall()
        while pending:
            await asyncio.sleep(next(delays))
            rounds += 1
            height = None
            if self.expiry_check_due or rounds % EXPIRY_CHECK_ROUNDS == 0:
                self.expiry_check_due = False
                height = await self.rpc.block_height(Finalized)
                stall.observe(height)
            statuses = await self.rpc.signature_statuses(
                [Signature.from_string(a.signature) for a in pending],
                search_history=height is not None,
            )
            await self._apply(pending, statuses, height)
            unseen = [a for a, s in zip(pending, statuses, strict=True) if s is None and a.is_open]
            pending = [a for a in pending if a.is_open]
            if unseen and rounds % REBROADCAST_ROUNDS == 0:
                # a refusal here proves nothing (an earlier copy may land): keep polling
                await self.send_wires(unseen)

    async def _apply(
        self,
        attempts: Sequence[Attempt],
        statuses: Sequence[SignatureStatus | None],
        height: int | None,
    ) -> None:
        """Record what `statuses` (read after `height`, if given) prove; save once."""
        now = utc_now()
        landed_ok: list[LedgerTransaction] = []
        unseen_past_validity: list[Attempt] = []
        changed = False
        done_before = len(self.record.funded_positions())
        sent_before = self.record.totals.sent_lamports
        for attempt, status in zip(attempts, statuses, strict=True):
            tx, _ = self.record.find_attempt(attempt.signature)
            if status is not None and status.is_confirmed:
                state = (
                    AttemptState.LANDED_OK if status.error is None else AttemptState.LANDED_FAILED
                )
                self.record.settle(
                    attempt.signature,
                    state,
                    now=now,
                    error=status.error,
                    fee_lamports=attempt.fee_lamports,
                    slot=status.slot,
                )
                changed = True
                if state is AttemptState.LANDED_OK:
                    landed_ok.append(tx)
                self.log.info(
                    "transaction_landed",
                    transaction=tx.index,
                    signature=attempt.signature,
                    ok=status.error is None,
                    error=status.error,
                )
            elif status is None and height is not None and height > attempt.last_valid_block_height:
                unseen_past_validity.append(attempt)
        expired, arrived, finalized_slot = await self._never_landing(unseen_past_validity)
        for attempt in expired:
            tx, _ = self.record.find_attempt(attempt.signature)
            self.record.settle(attempt.signature, AttemptState.EXPIRED, now=now)
            changed = True
            self.expiries[tx.index] += 1
            self.log.info("transaction_expired", transaction=tx.index, signature=attempt.signature)
        for attempt in arrived:  # no node knew the signature, but the balances show it landed
            tx, _ = self.record.find_attempt(attempt.signature)
            self.record.settle(
                attempt.signature,
                AttemptState.LANDED_OK,
                now=now,
                fee_lamports=attempt.fee_lamports,
                evidence=BALANCE_EVIDENCE,
            )
            changed = True
            landed_ok.append(tx)
            self.log.warning(
                "transaction_landed_by_balances",
                transaction=tx.index,
                signature=attempt.signature,
                finalized_slot=finalized_slot,
            )
        if changed:
            await self.save()
        if any(count >= MAX_EXPIRIES_PER_EXECUTION for count in self.expiries.values()):
            raise TransientError(
                f"transactions keep expiring without landing ({max(self.expiries.values())} "
                "times); the RPC node may be dropping them"
            )
        # one report per confirmed transaction, counting up even when several landed together
        for tx in landed_ok:
            self.funded_here.extend(tx.transfers)
            done_before += len(tx.transfers)
            sent_before += sum(self.record.plan[p].lamports for p in tx.transfers)
            await self.report_progress(
                done_before, sent_before, f"transaction {tx.index + 1} confirmed"
            )

    async def _never_landing(
        self, candidates: Sequence[Attempt]
    ) -> tuple[list[Attempt], list[Attempt], int]:
        """Of the `candidates` (unseen by a lookup read after a height above their last valid
        block height): those a second look proves can never land, those the recipients'
        balances prove landed all the same, and the finalized slot of the decision.

        The second look reads the finalized slot and height together, then a history search
        answered by a node that has reached that slot (behind a load balancer the height and
        the lookup may come from different nodes). A node without transaction history finds
        no old signature at all: before a transaction counts as expired, and may be signed
        anew, its recipients' balances are read at or past that finalized slot. If every
        recipient holds its balance before plus its amount, it landed; if only some do, the run
        stops for review (`fail`), sending nothing more."""
        if not candidates:
            return [], [], 0
        finalized = await self.rpc.chain_point(Finalized)
        seen_at, statuses = await self.rpc.signature_statuses_seen_at(
            [Signature.from_string(a.signature) for a in candidates], search_history=True
        )
        if seen_at < finalized.slot:
            self.log.warning("status_node_behind", node_slot=seen_at, finalized_slot=finalized.slot)
            return [], [], finalized.slot
        unseen = [
            attempt
            for attempt, status in zip(candidates, statuses, strict=True)
            if status is None and finalized.block_height > attempt.last_valid_block_height
        ]
        if not unseen:
            return [], [], finalized.slot
        arrived = await self._arrived(unseen, finalized.slot)
        return [a for a in unseen if a not in arrived], arrived, finalized.slot

    async def _arrived(self, attempts: Sequence[Attempt], slot: int) -> list[Attempt]:
        """The `attempts` whose every recipient holds its balance before plus its amount, read
        at a context slot at or past `slot`; raises `MixerFailed` (the run needs review) for
        an attempt only some of whose recipients do."""
        transactions = {a.signature: self.record.find_attempt(a.signature)[0] for a in attempts}
        positions = sorted({p for tx in transactions.values() for p in tx.transfers})
        recipients = [self._recipient(p) for p in positions]
        read = await self.rpc.balances(recipients, min_context_slot=slot)
        balances = dict(zip(positions, read, strict=True))
        arrived: list[Attempt] = []
        for attempt in attempts:
            tx = transactions[attempt.signature]
            holding = [p for p in tx.transfers if balances[p] >= self.expected_balance(p)]
            if len(holding) == len(tx.transfers):
                arrived.append(attempt)
            elif holding:
                missing = [self.record.plan[p].recipient for p in tx.transfers if p not in holding]
                await self.fail(
                    f"needs review: transaction {tx.index + 1} is not found on chain and its "
                    "blockhash expired, yet only some of its recipients hold their amount (not: "
                    f"{', '.join(missing)}); nothing more was sent"
                )
        return arrived

    # --- checks and reports ---

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
        expected = {p: self.expected_balance(p) for p in positions}
        landed = self.landed_slot(positions)  # a node behind it would show an older balance
        short: dict[int, int] = {}
        for read in range(BALANCE_CHECK_TRIES):
            keys = list(expected)
            if len(keys) == 1:
                recipient = self._recipient(keys[0])
                balances = [await self.rpc.balance(recipient, min_context_slot=landed)]
            else:
                recipients = [self._recipient(p) for p in keys]
                balances = await self.rpc.balances(recipients, min_context_slot=landed)
            self.verified.update(zip(keys, balances, strict=True))
            short = {p: b for p, b in zip(keys, balances, strict=True) if b < expected[p]}
            if not short:
                return
            if read + 1 < BALANCE_CHECK_TRIES:
                await asyncio.sleep(self.poll_seconds)
        if not strict:
            self.spent_since.update(short)
            self.log.warning("recipients_spent_since_funded", positions=sorted(short))
            return
        position, balance = next(iter(short.items()))
        await self.fail(
            f"wallet {self.record.plan[position].recipient} holds {format_sol(balance)} after its "
            f"confirmed transfer, expected at least {format_sol(expected[position])}"
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
        """What the recipient at `position` holds at least once its transfer landed."""
        entry = self.record.plan[position]
        return (entry.balance_before or 0) + entry.lamports

    async def report_progress(self, done_wallets: int, sent_lamports: int, message: str) -> None:
        """Await the progress callback, if any."""
        if self.on_progress is not None:
            await self.on_progress(
                MixerProgress(done_wallets, len(self.record.plan), sent_lamports, message)
            )

    async def complete(self) -> MixResult:
        """Mark the run completed (once) and return its result."""
        if self.record.status is not RunStatus.COMPLETED:
            self.record.finish(RunStatus.COMPLETED, now=utc_now())
            await self.save()
        result = MixResult.from_record(self.record)
        self.log.info(
            "mixer_completed",
            transactions=result.transactions,
            sent_lamports=result.sent_lamports,
            fee_lamports=result.fee_lamports,
        )
        return result

    async def fail(self, reason: str) -> None:
        """Mark the run failed with `reason` and raise `MixerFailed` with the per-wallet report."""
        self.record.finish(RunStatus.FAILED, now=utc_now(), error=reason)
        await self.save()
        result = MixResult.from_record(self.record)
        self.log.warning("mixer_failed", reason=reason, funded=len(result.funded))
        raise MixerFailed.from_result(reason, result)

    async def fail_for(self, refusals: Sequence[Refusal]) -> None:
        """Fail the run for the first refusal of this execution that never landed. Call it
        only once every refused attempt is settled: a refusal proves nothing while an earlier
        copy of the same bytes (forwarded by another node) may still land."""
        unlanded = [r for r in refusals if r.attempt.state is not AttemptState.LANDED_OK]
        if not unlanded:
            return
        refusal = unlanded[0]
        await self.fail(
            f"transaction {refusal.transaction.index + 1} was refused by the RPC node: "
            f"{refusal.attempt.error}"
        )

    def _recipient(self, position: int) -> Pubkey:
        return Pubkey.from_string(self.record.plan[position].recipient)
