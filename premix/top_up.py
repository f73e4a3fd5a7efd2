"""Top-ups (option `topUp`, issue 14): a premix that sends each wallet only what it lacks of
its planned amount, so that repeating it leaves the wallets "ready" instead of paying the whole
plan again.

The distribution is planned as for any premix (`plan_distribution`); each wallet's balance is
read once, after every earlier run of the user is settled, at a context slot past every transfer
they landed. The ledger run keeps both figures per wallet (`RunRecord.top_up`: planned and
held) and, as its plan, only what the wallets lacked: the engine pays that plan as any other,
straight from the funding wallet to each wallet. A re-run keeps the first plan (it never plans
again from balances its own transfers raised). When every wallet holds its planned amount the
plan is empty: nothing is sent, and the run completes with nothing sent.

Here: planning (`record_top_up_plan`), each wallet's planned and sent figures for the result
and the receipt (`top_up_wallets`), and the sentences the user reads.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from solders.pubkey import Pubkey

from premix.amounts import format_sol
from premix.ledger import Ledger, RunRecord, TopUpEntry
from premix.mixer import MixResult, WalletOutcome, WalletStatus, check_recipient_accounts
from premix.rpc import SolanaRpc

NOT_NEEDED: Final = "not_needed"  # a wallet's status when it already held its planned amount


async def record_top_up_plan(
    ledger: Ledger,
    rpc: SolanaRpc,
    *,
    run_id: str,
    user_id: str,
    recipients: Sequence[str],
    planned: Sequence[int],
) -> RunRecord:
    """Read every recipient's account once, at a context slot past every transfer the user's
    runs landed (their open attempts must be settled before), and record the top-up: each
    wallet's planned and held lamports, the plan only what each lacks. Returns the run (the
    first plan wins). Raises `InvalidParameters` for a recipient that is not a plain wallet."""
    landed = latest_landed_slot(await ledger.runs_of(user_id))
    keys = [Pubkey.from_string(recipient) for recipient in recipients]
    accounts = await rpc.accounts(keys, min_context_slot=landed)
    check_recipient_accounts(recipients, accounts)
    entries = [
        TopUpEntry(position, recipient, lamports, 0 if account is None else account.lamports)
        for position, (recipient, lamports, account) in enumerate(
            zip(recipients, planned, accounts, strict=True)
        )
    ]
    return await ledger.record_top_up(run_id, entries)


def latest_landed_slot(runs: Sequence[RunRecord]) -> int | None:
    """The newest slot any attempt of `runs` landed in (None: none known). Pure."""
    slots = [
        attempt.slot
        for run in runs
        for tx in run.transactions
        for attempt in tx.attempts
        if attempt.landed and attempt.slot is not None
    ]
    return max(slots, default=None)


@dataclass(frozen=True)
class TopUpWallet:
    """One wallet of a top-up: its planned and held lamports and its transfer's outcome."""

    entry: TopUpEntry
    outcome: WalletOutcome | None  # None: it lacked nothing, so the plan holds no transfer to it

    @property
    def status(self) -> str:
        """The outcome's status (`WalletStatus`), or `NOT_NEEDED`."""
        return NOT_NEEDED if self.outcome is None else self.outcome.status.value

    @property
    def sent_lamports(self) -> int:
        """What landed in the wallet from this run (0 unless its transfer landed)."""
        funded = self.outcome is not None and self.outcome.status is WalletStatus.FUNDED
        return self.entry.missing_lamports if funded else 0


def top_up_wallets(entries: Sequence[TopUpEntry], mix: MixResult | None) -> list[TopUpWallet]:
    """Every wallet of a top-up (`entries`: `RunRecord.top_up`) in position order, with the
    outcome of its transfer (`mix`: the run's report, one outcome per plan entry). Pure."""
    outcomes = {outcome.public_key: outcome for outcome in (mix.wallets if mix else ())}
    return [TopUpWallet(entry, outcomes.get(entry.recipient)) for entry in entries]


def _figures(run: RunRecord) -> tuple[int, int, int]:
    """(lamports missing, wallets lacking some, wallets) of the top-up `run`."""
    entries = run.top_up or []
    lacking = [e.missing_lamports for e in entries if e.missing_lamports]
    return sum(lacking), len(lacking), len(entries)


def _all_held(wallets: int) -> str:
    return f"all {wallets} wallets already hold their planned amounts"


def planning_description(run: RunRecord) -> str:
    """'Planning a top-up of 2.5 SOL: 1.2 SOL missing across 7 of 12 wallets'."""
    missing, lacking, wallets = _figures(run)
    head = f"Planning a top-up of {format_sol(run.amount_lamports)}"
    if not lacking:
        return f"{head}: {_all_held(wallets)}"
    return f"{head}: {format_sol(missing)} missing across {lacking} of {wallets} wallets"


def balance_description(run: RunRecord) -> str:
    """What phase 4 checks for a top-up: only what the wallets lack, plus fees."""
    missing, lacking, wallets = _figures(run)
    if not lacking:
        return f"Nothing to send: {_all_held(wallets)}"
    return (
        f"Checking the funding wallet holds the {format_sol(missing)} missing (top-up of "
        f"{format_sol(run.amount_lamports)}) plus fees"
    )


def completion_message(run: RunRecord, mix: MixResult, mode: str) -> str:
    """'Top-up of 2.5 SOL: all 12 wallets already hold their planned amounts; nothing was
    sent', or what was sent to how many of the wallets, and the fees."""
    amount = format_sol(run.amount_lamports)
    _, lacking, wallets = _figures(run)
    if not lacking:
        return f"Top-up of {amount}: {_all_held(wallets)}; nothing was sent"
    message = (
        f"Top-up of {amount} complete: sent {format_sol(mix.sent_lamports)} to "
        f"{len(mix.funded)} of {wallets} wallet(s) in {mix.transactions} transaction(s) "
        f"({mode} mode), fees {format_sol(mix.fee_lamports)}"
    )
    if mix.priority_fee_lamports:
        message += f" (of which priority fees {format_sol(mix.priority_fee_lamports)})"
    if held := wallets - lacking:
        message += f"; {held} wallet(s) already held their planned amounts"
    return message
