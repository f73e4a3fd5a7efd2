"""A sweep's transfer engine: every buyer wallet's planned lamports straight back to the
funding wallet, packed into as few transactions as fit (`sweep_packing`), through the same
write-ahead ledger and resume rule as a premix (`engine.Sender`).

    payout = await SweepPayout.resume(ledger, run, rpc=rpc, settings=settings)  # settles, once
    payout.sweep_need(buffer_lamports)   # the fees the funding wallet (fee payer) must hold
    await payout.pay(funding, sources=buyer_keypairs, on_progress=callback)
    balances = await payout.verify()   # every swept wallet's balance on chain
    result = await payout.complete()

Each round signs, with one blockhash, every transaction that needs a new attempt (one ledger
write before any send), sends those and every still-open attempt, and polls them until each
has landed or expired; expired ones get the next round. A transaction that landed failed (a
wallet no longer held its planned amount) is never signed again: the run fails and reports it.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from premix.errors import InvalidParameters
from premix.ledger import (
    AttemptState,
    Ledger,
    LedgerError,
    LedgerTransaction,
    RunRecord,
    RunStatus,
    TransactionState,
)
from premix.mixer.engine import ProgressCallback, Sender, StopCheck
from premix.mixer.fees import PriorityFees
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE, FeePolicy
from premix.mixer.payout import Payout
from premix.mixer.result import MixerFailed
from premix.mixer.sweep_packing import (
    build_sweep_message,
    pack_sweep,
    sign_sweep,
    sweep_fee_lamports,
)
from premix.rpc import SolanaRpc
from premix.settings import Settings

SWEEP: str = "sweep"  # `RunRecord.kind` and `mode` of a sweep run


@dataclass(frozen=True)
class SweepNeed:
    """What the funding wallet (every sweep transaction's fee payer) must hold to finish."""

    wallets: int  # still to sweep
    transactions: int
    fee_lamports: int  # auto priority fees: the most they may pay
    buffer_lamports: int
    fees_at_most: bool = False

    @property
    def total_lamports(self) -> int:
        """Lamports needed in the funding wallet (0 when nothing is left to sweep)."""
        return self.fee_lamports + self.buffer_lamports if self.wallets else 0


class SweepSender(Sender):
    """A `Sender` whose transactions move from buyer wallets (each one a signer) to the funding
    wallet; `sources` holds the buyer wallets' keypairs by public key."""

    sources: dict[str, Keypair]

    def signed_transaction(
        self, funding: Keypair, positions: Sequence[int], blockhash: Hash, fees: FeePolicy
    ) -> tuple[Transaction, int]:
        """The sweep of plan `positions` into `funding`, signed by it and each source, and its
        exact fee (5,000 lamports per signature plus the priority fee)."""
        plan = self.record.plan
        signers: list[Keypair] = []
        transfers: list[tuple[Pubkey, int]] = []
        for p in positions:
            source = plan[p].source
            keypair = self.sources.get(source) if source is not None else None
            if keypair is None:
                raise LedgerError(f"run {self.record.run_id}: no keypair of source {source}")
            signers.append(keypair)
            transfers.append((keypair.pubkey(), plan[p].lamports))
        message = build_sweep_message(funding.pubkey(), transfers, blockhash, fees)
        return sign_sweep(message, funding, signers), sweep_fee_lamports(len(positions), fees)


def sweep_groups(record: RunRecord, positions: Sequence[int], fees: FeePolicy) -> list[list[int]]:
    """Plan `positions` of a sweep packed into the fewest transactions that fit."""
    funding = Pubkey.from_string(record.plan[positions[0]].recipient) if positions else None
    if funding is None:
        return []
    transfers = [
        (Pubkey.from_string(record.plan[p].watched), record.plan[p].lamports) for p in positions
    ]
    return [[positions[i] for i in group] for group in pack_sweep(funding, transfers, fees)]


async def send_sweep(sender: SweepSender) -> None:
    """Sweep every plan position not swept yet; raises `MixerFailed` after the round in which a
    transaction failed on chain or was refused (the others of that round are settled), and at
    once for a transaction an earlier execution saw fail on chain (it is not signed again).
    The sources swept here have their balances checked once every transaction landed."""
    packing = sender.fees.packing
    while True:
        record = sender.record
        failed_before = [tx for tx in record.transactions if tx.state is TransactionState.FAILED]
        if failed_before:
            await _fail_on_chain(sender, failed_before[0])
        reopen = list(record.open_attempts())
        work: list[tuple[LedgerTransaction | None, list[int]]] = [
            (tx, tx.transfers) for tx in record.transactions if tx.may_sign_new_attempt
        ]
        work += [(None, g) for g in sweep_groups(record, record.uncovered_positions(), packing)]
        if not reopen and not work:
            break
        if work and await sender.stop_requested():
            work = []  # a cancel: sign nothing more; what is open is settled first
            if not reopen:
                await sender.verify_balances(sender.funded_here)
                sender.stop()
        fresh = await sender.sign_attempts(work) if work else []
        sends = reopen + fresh
        refusals = await sender.send(sends)
        # refused attempts are awaited too: another node may have forwarded an earlier copy
        await sender.await_outcomes([a for _, a in sends], backoff=True)
        failed = [tx for tx, a in sends if a.state is AttemptState.LANDED_FAILED]
        if failed:
            await _fail_on_chain(sender, failed[0])
        await sender.fail_for(refusals)  # those refused that expired without landing
    await sender.verify_balances(sender.funded_here)


async def _fail_on_chain(sender: Sender, tx: LedgerTransaction) -> None:
    attempt = tx.last_attempt
    error = attempt.error if attempt is not None else None
    await sender.fail(
        f"sweep transaction {tx.index + 1} failed on chain: {error} (a wallet no longer held "
        "its planned amount; the fee was paid, nothing moved)"
    )


class SweepPayout(Payout):
    """One execution's sweep of one ledger run (see the module docstring); build it with
    `resume`."""

    @classmethod
    async def resume(
        cls, ledger: Ledger, run: RunRecord, *, rpc: SolanaRpc, settings: Settings
    ) -> "SweepPayout":
        """The sweep of `run` with every attempt an earlier execution left open settled.
        Raises `TransientError` when the RPC or another worker stands in the way."""
        sender = SweepSender(
            record=run,
            rpc=rpc,
            ledger=ledger,
            fees=PriorityFees.from_settings(settings),
            poll_seconds=settings.confirm_poll_seconds,
            slot_seconds=settings.slot_seconds,
        )
        sender.sources = {}
        return cls(sender, await sender.settle_recorded())

    def sweep_need(self, buffer_lamports: int) -> SweepNeed:
        """The fees the funding wallet must still hold to finish the sweep (no I/O): an open
        attempt its attached fee, a transaction to re-sign and the transfers never signed the
        most a new attempt may pay."""
        record = self.record
        fees = self._sender.fees
        fee_lamports = transactions = wallets = 0
        for tx in record.transactions:
            attempt = tx.open_attempt
            if tx.state is TransactionState.LANDED_OK:
                continue
            if attempt is not None and attempt.signature in self._seen_landing:
                continue
            fee_lamports += (
                attempt.fee_lamports if attempt is not None else _max_fee(fees, len(tx.transfers))
            )
            transactions += 1
            wallets += len(tx.transfers)
        uncovered = record.uncovered_positions()
        for group in sweep_groups(record, uncovered, fees.packing):
            fee_lamports += _max_fee(fees, len(group))
            transactions += 1
        wallets += len(uncovered)
        return SweepNeed(wallets, transactions, fee_lamports, buffer_lamports, fees.auto)

    async def pay(
        self,
        funding: Keypair,
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        sources: Sequence[Keypair] = (),
    ) -> None:
        """Sweep every planned wallet not swept yet into `funding`, signing with `sources` (the
        buyer wallets' keypairs), and check each swept wallet's balance. Raises `MixerFailed`
        (the per-wallet report, in the ledger) when a transfer fails on chain or is refused,
        `TransientError` when the RPC or another worker stands in the way, `Cancelled` once
        `should_stop` says so (asked before each round is signed; what is in flight settles
        first), `InvalidParameters` when the run is not a sweep into `funding`."""
        record = self.record
        funding_key = str(funding.pubkey())
        if record.kind != SWEEP or not record.plan:
            raise LedgerError(f"run {record.run_id} is not a planned sweep")
        if any(entry.recipient != funding_key for entry in record.plan):
            raise MixerFailed.from_result(
                f"the funding wallet changed since sweep {record.run_id} was planned",
                self.report(),
            )
        keypairs = {str(k.pubkey()): k for k in sources}
        missing = [e.source for e in record.plan if e.source not in keypairs]
        if missing:
            raise InvalidParameters(
                f"buyer wallet {missing[0]} of the sweep's plan is no longer a buyer wallet "
                "of this user; nothing more was sent"
            )
        if record.status is RunStatus.COMPLETED:
            return
        sender = self._sender
        assert isinstance(sender, SweepSender)
        sender.funding = funding
        sender.sources = keypairs
        sender.on_progress = on_progress
        sender.should_stop = should_stop
        await send_sweep(sender)


def _max_fee(fees: PriorityFees, transfer_count: int) -> int:
    if fees.auto:  # the price is read when signed: at most the cap per transaction
        return LAMPORTS_PER_SIGNATURE * (1 + transfer_count) + fees.max_lamports
    return sweep_fee_lamports(transfer_count, fees.packing)
