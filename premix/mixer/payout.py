"""`Payout`: the transfer engine's one face, for one ledger run.

    payout = await Payout.resume(ledger, run, rpc=rpc, settings=settings)  # settles, once
    payout.need(buffer_lamports)   # what the funding wallet must still hold (pure)
    await payout.pay(funding, on_progress=callback)   # standard or fast, as the run's mode
    balances = await payout.verify()   # every recipient checked on chain (once an execution)
    result = await payout.complete()   # the ledger run completed; the per-wallet report

`resume` settles every attempt an earlier execution left open (landed, expired, or still able
to land) before anything else reads or sends; `pay` resumes whatever is left by the ledger's
rule (SPEC section 5): a transaction gets a new signature only once its earlier one can never
land. Every transfer goes straight from the funding wallet to its buyer wallet.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID

from premix.amounts import format_sol
from premix.errors import InvalidParameters
from premix.ledger import Ledger, LedgerError, RunRecord, RunStatus, TransactionState
from premix.mixer.engine import ProgressCallback, Sender, StopCheck
from premix.mixer.fast import send_fast
from premix.mixer.fees import PriorityFees
from premix.mixer.packing import transaction_count
from premix.mixer.result import MixerFailed, MixResult
from premix.mixer.standard import send_standard
from premix.rpc import AccountInfo, SolanaRpc
from premix.settings import Settings

MODES: Final = ("standard", "fast")


@dataclass(frozen=True)
class BalanceNeed:
    """What the funding wallet must hold for the transfers of a run that are not done yet."""

    transfer_lamports: int  # still to send
    wallets: int  # still to fund
    fee_lamports: int  # fees of the transactions still to land (auto: the most they may pay)
    transactions: int
    buffer_lamports: int  # settings.fee_buffer_sol
    already_sent_lamports: int  # landed in an earlier execution of the run: not needed again
    fees_at_most: bool = False  # auto priority fees: `fee_lamports` is their cap, not a price

    @property
    def total_lamports(self) -> int:
        """Lamports needed in the funding wallet (0 when nothing is left to send)."""
        if self.wallets == 0:
            return 0
        return self.transfer_lamports + self.fee_lamports + self.buffer_lamports

    def describe(self) -> str:
        """'0.5 SOL to 1 wallet(s) + 0.000005 SOL fees for 1 transaction(s) + 0.01 SOL buffer'."""
        fees = (
            f"up to {format_sol(self.fee_lamports)}"
            if self.fees_at_most
            else (format_sol(self.fee_lamports))
        )
        text = (
            f"{format_sol(self.transfer_lamports)} to {self.wallets} wallet(s) + "
            f"{fees} fees for {self.transactions} transaction(s) + "
            f"{format_sol(self.buffer_lamports)} buffer"
        )
        if self.already_sent_lamports:
            text += f"; {format_sol(self.already_sent_lamports)} already sent"
        return text


def balance_needed(
    run: RunRecord,
    mode: str,
    fees: PriorityFees,
    buffer_lamports: int,
    *,
    landed_ok: Collection[str] = (),
) -> BalanceNeed:
    """Return what the funding wallet must still hold to finish `run` (its plan recorded).

    Transfers whose transaction landed (in the ledger, or an open attempt whose signature is in
    `landed_ok`, found on chain) are already paid and not needed again. An open attempt needs
    the fee attached to it; a transaction to be re-signed, and transfers never signed (packed
    as `mode` packs them), the most a new attempt may pay (auto: at the cap).
    """
    done = set(run.funded_positions())
    fee_lamports = transactions = 0
    for tx in run.transactions:
        if tx.state is TransactionState.LANDED_OK:
            continue
        attempt = tx.open_attempt
        if attempt is not None and attempt.signature in landed_ok:
            done.update(tx.transfers)
            continue
        if attempt is not None:
            fee_lamports += attempt.fee_lamports
        else:
            fee_lamports += fees.max_fee_lamports(len(tx.transfers))
        transactions += 1
    uncovered = len(run.uncovered_positions())
    if uncovered:
        fee_lamports += fees.estimate_fee_lamports(mode, uncovered)
        transactions += transaction_count(mode, uncovered, fees.packing)
    outstanding = [entry.lamports for entry in run.plan if entry.position not in done]
    return BalanceNeed(
        transfer_lamports=sum(outstanding),
        wallets=len(outstanding),
        fee_lamports=fee_lamports,
        transactions=transactions,
        buffer_lamports=buffer_lamports,
        already_sent_lamports=sum(e.lamports for e in run.plan if e.position in done),
        fees_at_most=fees.auto,
    )


def check_recipients(funding: Pubkey, recipients: Sequence[str]) -> None:
    """Refuse a plan paying the funding wallet itself or a wallet twice (`InvalidParameters`,
    naming the wallet and its 1-based positions); check it before the plan is recorded."""
    seen: dict[str, int] = {}
    for position, recipient in enumerate(recipients, start=1):
        if recipient == str(funding):
            raise InvalidParameters(
                f"the funding wallet {recipient} cannot also be a buyer wallet "
                f"(position {position})"
            )
        if recipient in seen:
            raise InvalidParameters(
                f"buyer wallet {recipient} appears twice in the plan (positions "
                f"{seen[recipient]} and {position})"
            )
        seen[recipient] = position


def check_recipient_accounts(
    recipients: Sequence[str], accounts: Sequence[AccountInfo | None]
) -> None:
    """Refuse a plan paying an account that is not a plain wallet (`InvalidParameters`, naming
    it and its 1-based position): premix pays only accounts that do not exist yet or that the
    System Program owns and that are not executable."""
    for position, (recipient, account) in enumerate(zip(recipients, accounts, strict=True), 1):
        if account is None:
            continue
        if account.executable:
            raise InvalidParameters(
                f"buyer wallet {recipient} (position {position}) is an executable program "
                "account, not a wallet; nothing was sent"
            )
        if account.owner != SYSTEM_PROGRAM_ID:
            raise InvalidParameters(
                f"buyer wallet {recipient} (position {position}) is owned by program "
                f"{account.owner}, not the System Program: premix pays plain wallets only; "
                "nothing was sent"
            )


class Payout:
    """One execution's payout of one ledger run (see the module docstring); build it with
    `resume`."""

    def __init__(self, sender: Sender, seen_landing: frozenset[str]) -> None:
        self._sender = sender
        self._seen_landing = seen_landing  # open attempts the chain shows without error

    @classmethod
    async def resume(
        cls, ledger: Ledger, run: RunRecord, *, rpc: SolanaRpc, settings: Settings
    ) -> "Payout":
        """The payout of `run` (as just read or written) with every attempt an earlier
        execution left open settled. Raises `TransientError` when the RPC or another worker
        stands in the way (a re-run resumes)."""
        sender = Sender(
            record=run,
            rpc=rpc,
            ledger=ledger,
            fees=PriorityFees.from_settings(settings),
            poll_seconds=settings.confirm_poll_seconds,
            slot_seconds=settings.slot_seconds,
        )
        return cls(sender, await sender.settle_recorded())

    @property
    def record(self) -> RunRecord:
        """The run as this execution last saved or read it."""
        return self._sender.record

    def report(self) -> MixResult:
        """The per-wallet report as the ledger stands."""
        return MixResult.from_record(self.record)

    @property
    def landed_slot(self) -> int | None:
        """The latest slot any of the run's transactions landed in (None: none known): a read
        of the funding balance from a node behind it would not show what already went out."""
        slots = [a.slot for tx in self.record.transactions for a in tx.attempts if a.landed]
        return max((slot for slot in slots if slot is not None), default=None)

    def need(self, buffer_lamports: int) -> BalanceNeed:
        """What the funding wallet must still hold to finish the run (no I/O)."""
        return balance_needed(
            self.record,
            self.record.mode,
            self._sender.fees,
            buffer_lamports,
            landed_ok=self._seen_landing,
        )

    async def pay(
        self,
        funding: Keypair,
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> None:
        """Send every transfer not funded yet from `funding`, in the run's mode, and check the
        balance of each recipient it funded; `on_progress` is awaited per confirmed transaction.
        `should_stop` is awaited before each new attempt is signed (standard: per transfer,
        fast: per round): once True, `pay` raises `Cancelled` as soon as every attempt signed
        so far has landed or expired (standard: the transfer in flight; fast: the round).

        Raises `MixerFailed` (with the per-wallet report, recorded in the ledger) when a
        transfer fails on chain or is refused, `TransientError` when the RPC or another worker
        stands in the way, `InvalidParameters` for an unknown mode or the funding wallet among
        the recipients, `LedgerError` when the run has no plan.
        """
        record = self.record
        if record.mode not in MODES:
            raise InvalidParameters(f"mode must be one of {', '.join(MODES)}, not {record.mode!r}")
        if not record.plan:
            raise LedgerError(f"run {record.run_id} has no plan")
        funding_key = str(funding.pubkey())
        check_recipients(funding.pubkey(), [entry.recipient for entry in record.plan])
        if record.funding is not None and record.funding != funding_key:
            raise MixerFailed.from_result(
                f"the funding wallet changed since run {record.run_id} started", self.report()
            )
        if record.status is RunStatus.COMPLETED:
            return
        self._sender.funding = funding
        self._sender.on_progress = on_progress
        self._sender.should_stop = should_stop
        if record.mode == "fast":
            await send_fast(self._sender)
        else:
            await send_standard(self._sender)

    async def settle_open(self) -> None:
        """Wait until every attempt of the run that may still land has landed or expired
        (re-sending the same bytes, never signing), recording each outcome. For a run that
        stops early (a cancel) with attempts an earlier execution left open."""
        open_attempts = [attempt for _, attempt in self.record.open_attempts()]
        if open_attempts:
            await self._sender.await_outcomes(open_attempts, backoff=True)

    async def verify(self) -> list[int]:
        """Return every planned recipient's balance on chain, in plan order, reading only those
        this execution has not checked yet (those an earlier execution funded). A lower balance
        there is no failure (the transfer landed: the wallet was spent since); see
        `spent_since`."""
        verified = self._sender.verified
        unchecked = [e.position for e in self.record.plan if e.position not in verified]
        if unchecked:  # funded by an earlier execution: proven by their signatures
            await self._sender.verify_balances(unchecked, strict=False)
        return [verified[entry.position] for entry in self.record.plan]

    @property
    def spent_since(self) -> list[tuple[str, int]]:
        """(wallet, balance) of recipients an earlier execution funded that `verify` found
        holding less than they received: spent since they were funded."""
        spent = self._sender.spent_since
        return [(self.record.plan[p].recipient, balance) for p, balance in sorted(spent.items())]

    async def complete(self) -> MixResult:
        """Mark the run completed in the ledger (once) and return its report. Raises
        `LedgerError` unless every transfer landed."""
        return await self._sender.complete()
