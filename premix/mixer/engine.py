"""What both transfer modes share: sign (write-ahead), send, settle, verify (private to the
mixer package: the face is `premix.mixer.Payout`).

A `Sender` holds one execution's view of a ledger run and talks to the chain through
`SolanaRpc`. Every signed attempt is saved in the ledger before its first send; every outcome is
saved once seen.
An attempt is settled as landed only at `confirmed`, and as expired only when the `finalized`
block height, read *before* a status lookup that searches history, is above its last valid
block height and the lookup does not find it - twice, the second time with the finalized slot
and a lookup answered by a node that has reached it (RPC endpoints are often several nodes).
Until then it may land, so it is only re-sent as the same bytes: the first send with preflight,
then rebroadcasts every `REBROADCAST_SECONDS` without it. The first status poll comes right
after the slot of the send has passed, as the node's reported slots time it (`polling`).
"""

import base64
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

import structlog
from solana.rpc.commitment import Finalized
from solders.hash import Hash
from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import Transaction

from premix import metrics
from premix.errors import Cancelled, TransientError
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
from premix.mixer.blockhashes import RecentBlockhash
from premix.mixer.checks import BalanceChecks
from premix.mixer.fees import FeePricing, PriorityFees
from premix.mixer.packing import FeePolicy, build_message, sign
from premix.mixer.polling import HeightStall, first_poll_delay, gather_all, poll_delays
from premix.mixer.result import MixerFailed, MixerProgress, MixResult
from premix.rpc import SendOutcome, SendResult, SignatureStatus, SolanaRpc

log = structlog.get_logger(__name__)

ProgressCallback = Callable[[MixerProgress], Awaitable[None]]
StopCheck = Callable[[], Awaitable[bool]]  # True once the run is to stop (a cancel request)

BALANCE_EVIDENCE: Final = "balances"  # how a landing unseen by any node was proven
EXPIRY_CHECK_ROUNDS: Final = 8  # poll rounds between block-height checks while a tx is unseen
REBROADCAST_SECONDS: Final = 2.0  # between sends of the same bytes while they are unseen
# Expiries of one transaction one execution accepts before handing the job back to the queue
# (a node that drops everything); the re-run resumes from the ledger.
MAX_EXPIRIES_PER_EXECUTION: Final = 5


@dataclass(frozen=True)
class Refusal:
    """An attempt the node refused at its first send in this run (preflight failed)."""

    transaction: LedgerTransaction
    attempt: Attempt


class Sender(BalanceChecks):
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
        slot_seconds: float = 0.0,
    ) -> None:
        self.record = record
        self.funding: Keypair | None = None
        self.rpc = rpc
        self.ledger = ledger
        self.fees = fees
        self.pricing = FeePricing(fees, rpc, run_id=record.run_id)
        self.poll_seconds = poll_seconds
        self.slot_seconds = slot_seconds  # the cluster's slot; 0: polls not timed by slots
        self.blockhash = RecentBlockhash(slot_seconds)
        self.sent_at: dict[str, float] = {}  # signature -> when its bytes were last sent
        self.last_sent_at: float | None = None
        self.on_progress: ProgressCallback | None = None
        self.should_stop: StopCheck | None = None  # asked before each new attempt is signed
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

    async def stop_requested(self) -> bool:
        """True once the run is to stop (`should_stop`): asked right before signing."""
        return self.should_stop is not None and await self.should_stop()

    def stop(self) -> NoReturn:
        """Raise `Cancelled`; call it only where every attempt signed so far is settled
        (landed or expired): nothing of the run can land unaccounted after it."""
        self.log.info("payout_stopped", funded_here=len(self.funded_here))
        raise Cancelled(self.record.run_id)

    async def sign_attempts(
        self, work: Sequence[tuple[LedgerTransaction | None, list[int]]]
    ) -> list[tuple[LedgerTransaction, Attempt]]:
        """Sign one new attempt per (transaction or None for a new one, positions) with one
        blockhash (reused while young) and its priority fee (`FeePricing`: one fee reading per
        round at most), and save them all in one ledger write before anything is sent. Balances
        before are read, in one call, for every position not signed yet."""
        record = self.record
        funding = self.funding
        if funding is None:
            raise LedgerError(f"run {record.run_id}: no funding wallet to sign with")
        unsigned = {p for _, positions in work for p in positions} | set(
            record.uncovered_positions()
        )
        missing = sorted(p for p in unsigned if record.plan[p].balance_before is None)
        if missing:
            balances = await self.rpc.balances([self._recipient(p) for p in missing])
            for position, lamports in zip(missing, balances, strict=True):
                record.record_balance_before(position, lamports)
        used = {a.blockhash for tx, _ in work if tx is not None for a in tx.attempts}
        latest = await self.blockhash.get(self.rpc, avoid=used)
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
            transaction, fee_lamports = self.signed_transaction(
                funding, positions, latest.blockhash, fees
            )
            attempt = Attempt(
                signature=str(transaction.signatures[0]),
                blockhash=str(latest.blockhash),
                last_valid_block_height=latest.last_valid_block_height,
                wire=base64.b64encode(bytes(transaction)).decode("ascii"),
                signed_at=now,
                fee_lamports=fee_lamports,
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

    def signed_transaction(
        self, funding: Keypair, positions: Sequence[int], blockhash: Hash, fees: FeePolicy
    ) -> tuple[Transaction, int]:
        """`positions` paid from `funding`, signed, and its fee (`sweeping` overrides it)."""
        transfers = [(self._recipient(p), self.record.plan[p].lamports) for p in positions]
        message = build_message(funding.pubkey(), transfers, blockhash, fees)
        return sign(message, funding), fees.fee_lamports(len(positions))

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

    async def send_wires(
        self, attempts: Sequence[Attempt], *, rebroadcast: bool = False
    ) -> list[SendResult]:
        """Send each attempt's stored bytes concurrently (never re-signed), the first time with
        preflight or as a `rebroadcast` without it; return the results."""
        send = self.rpc.rebroadcast_raw if rebroadcast else self.rpc.send_raw
        results: list[SendResult] = await gather_all(
            [send(base64.b64decode(attempt.wire)) for attempt in attempts]
        )
        self.last_sent_at = self.rpc.clock()
        self.sent_at.update((attempt.signature, self.last_sent_at) for attempt in attempts)
        if any(r.outcome is SendOutcome.BLOCKHASH_NOT_FOUND for r in results):
            self.expiry_check_due = True
            self.blockhash.forget()
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

    async def await_outcomes(self, attempts: Sequence[Attempt], *, backoff: bool) -> None:
        """Poll until every attempt has landed (at `confirmed`) or expired; the first poll comes
        right after the slot of the last send has passed, later ones at the poll interval.

        Unseen attempts are rebroadcast (same bytes) every `REBROADCAST_SECONDS`; the block
        height is read only every few rounds, or at once after a send saw "blockhash not found".
        """
        pending = [a for a in attempts if a.is_open]
        rounds = 0
        now = self.rpc.clock()
        wait = first_poll_delay(
            self.rpc.slots,
            sent_at=now if self.last_sent_at is None else self.last_sent_at,
            now=now,
            slot_seconds=self.slot_seconds,
            poll_seconds=self.poll_seconds,
        )
        delays = poll_delays(self.poll_seconds, backoff=backoff)
        for attempt in pending:  # the rebroadcast clock of one not sent here starts now
            self.sent_at.setdefault(attempt.signature, now)
        stall = HeightStall()
        while pending:
            await self.rpc.sleep(wait if rounds == 0 else next(delays))
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
            now = self.rpc.clock()
            due = [
                a
                for a, s in zip(pending, statuses, strict=True)
                if s is None
                and a.is_open
                and now - self.sent_at[a.signature] >= REBROADCAST_SECONDS
            ]
            pending = [a for a in pending if a.is_open]
            # a refusal here proves nothing (an earlier copy may land): keep polling. Bytes the
            # node refused go again with preflight: without it they could land failing, for a fee
            refused = [a for a in due if a.state is AttemptState.REJECTED]
            if refused:
                await self.send_wires(refused)
            if len(refused) < len(due):
                await self.send_wires([a for a in due if a not in refused], rebroadcast=True)

    async def _apply(
        self,
        attempts: Sequence[Attempt],
        statuses: Sequence[SignatureStatus | None],
        height: int | None,
    ) -> None:
        """Record what `statuses` (read after `height`, if given) prove; save once."""
        now = utc_now()
        landed_ok: list[LedgerTransaction] = []
        landed_now: list[tuple[LedgerTransaction, Attempt]] = []  # ok or failed: fee paid
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
                settled = self.record.settle(
                    attempt.signature,
                    state,
                    now=now,
                    error=status.error,
                    fee_lamports=attempt.fee_lamports,
                    slot=status.slot,
                )
                landed_now.append((tx, settled))
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
            self.blockhash.forget()
            changed = True
            self.expiries[tx.index] += 1
            self.log.info("transaction_expired", transaction=tx.index, signature=attempt.signature)
        for attempt in arrived:  # no node knew the signature, but the balances show it landed
            tx, _ = self.record.find_attempt(attempt.signature)
            settled = self.record.settle(
                attempt.signature,
                AttemptState.LANDED_OK,
                now=now,
                fee_lamports=attempt.fee_lamports,
                evidence=BALANCE_EVIDENCE,
            )
            landed_now.append((tx, settled))
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
            metrics.settled(self.record, landed_now, expired)
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
        wallets = [self.watched_wallet(p) for p in positions]  # a sweep: its sources
        read = await self.rpc.balances(wallets, min_context_slot=slot)
        balances = dict(zip(positions, read, strict=True))
        plan = self.record.plan
        arrived: list[Attempt] = []
        for attempt in attempts:
            tx = transactions[attempt.signature]
            holding = [p for p in tx.transfers if plan[p].shows_transfer(balances[p])]
            if len(holding) == len(tx.transfers):
                arrived.append(attempt)
            elif holding:
                missing = [plan[p].watched for p in tx.transfers if p not in holding]
                await self.fail(
                    f"needs review: transaction {tx.index + 1} is not found on chain and its "
                    "blockhash expired, yet only some of its recipients hold their amount (not: "
                    f"{', '.join(missing)}); nothing more was sent"
                )
        return arrived

    # --- reports ---

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
