"""Phases 2 to 4 of a premix (SPEC sections 3 and 4): the user's wallets loaded (phase 2), the
distribution of the job's amount over its buyer wallets, checked and recorded as the ledger
run's plan (the first plan wins: a re-run keeps it), the funding balance checked against what
is still to send (phase 4), and what phases 3 and 4 tell the user. A top-up (`premix.top_up`)
records only what each wallet lacks of its planned amount.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix import top_up as top_ups
from premix.amounts import format_sol
from premix.distribution import DistributionError, plan_distribution
from premix.errors import (
    FundingWalletNotFound,
    InsufficientBalance,
    InvalidParameters,
    NoBuyerWallets,
)
from premix.jobs import PremixFundsJob
from premix.ledger import Ledger, RunRecord
from premix.mixer import Payout, check_recipient_accounts, check_recipients
from premix.rpc import SolanaRpc
from premix.settings import Settings
from premix.store import Store


async def load_wallets(
    store: Store, settings: Settings, job: PremixFundsJob
) -> tuple[Keypair, list[Keypair]]:
    """Phase 2: the user's funding wallet and the buyer wallets the job may use, decrypted.
    Raises `FundingWalletNotFound` or `NoBuyerWallets`."""
    funding = await store.wallets.funding_wallet(job.user_id)
    if funding is None:
        raise FundingWalletNotFound(job.user_id)
    limit = settings.wallet_limit(job.max_wallets)
    buyers = await store.wallets.buyer_wallets(job.user_id, limit=limit)
    if not buyers:
        raise NoBuyerWallets(job.user_id)
    return funding, buyers


async def check_balances(
    rpc: SolanaRpc, settings: Settings, funding: Keypair, payout: Payout, log: Any
) -> None:
    """Phase 4: raise `InsufficientBalance` unless the funding wallet holds what is still to
    send, its fees and the buffer. A resumed run needs only what did not go out yet (what an
    earlier execution sent was settled when the payout resumed)."""
    need = payout.need(settings.fee_buffer_lamports)
    if need.total_lamports == 0:
        log.info("nothing_left_to_send")
        return
    available = await rpc.balance(funding.pubkey(), min_context_slot=payout.landed_slot)
    log.info(
        "funding_balance_checked",
        needed_lamports=need.total_lamports,
        available_lamports=available,
        already_sent_lamports=need.already_sent_lamports,
    )
    if available < need.total_lamports:
        raise InsufficientBalance(
            needed_lamports=need.total_lamports,
            available_lamports=available,
            breakdown=need.describe(),
        )


async def record_plan(
    ledger: Ledger,
    rpc: SolanaRpc,
    settings: Settings,
    job: PremixFundsJob,
    *,
    run_id: str,
    funding: Keypair,
    buyers: list[Keypair],
    settle_earlier_runs: Callable[[], Awaitable[None]],
) -> RunRecord:
    """Plan `job` over `buyers` and record the plan of run `run_id`; returns the run (whose
    plan may be an earlier one: the first wins). Every recipient's account is read once (a
    plain wallet, its balance before kept); a top-up first awaits `settle_earlier_runs`, so
    the balances it tops up to include all the user's earlier runs sent. Raises
    `InvalidParameters` for an amount the wallets cannot hold or a recipient premix must not
    pay."""
    amounts = plan_amounts(job, settings, len(buyers))
    recipients = [str(wallet.pubkey()) for wallet in buyers[: len(amounts)]]
    check_recipients(funding.pubkey(), recipients)
    if job.top_up:
        await settle_earlier_runs()
        return await top_ups.record_top_up_plan(
            ledger, rpc, run_id=run_id, user_id=job.user_id, recipients=recipients, planned=amounts
        )
    accounts = await rpc.accounts([Pubkey.from_string(r) for r in recipients])
    check_recipient_accounts(recipients, accounts)
    return await ledger.record_plan(
        run_id,
        recipients,
        amounts,
        balances_before=[0 if a is None else a.lamports for a in accounts],
    )


def plan_amounts(job: PremixFundsJob, settings: Settings, wallet_count: int) -> list[int]:
    """The lamports per wallet for `job` (section 4); raises `InvalidParameters`."""
    try:
        return plan_distribution(job.amount_lamports, wallet_count, settings.tier_table())
    except DistributionError as e:
        raise InvalidParameters(f"mixAmount: {e}") from e


def planning_description(job: PremixFundsJob) -> str:
    """Phase 3 as it starts: 'Planning 2 SOL' or 'Planning a top-up of 2 SOL'."""
    kind = "a top-up of " if job.top_up else ""
    return f"Planning {kind}{format_sol(job.amount_lamports)}"


def balance_check_description(job: PremixFundsJob, run: RunRecord) -> str:
    """Phase 4: what the funding wallet must hold (a top-up: only what is missing)."""
    if run.top_up is not None:
        return top_ups.balance_description(run)
    return f"Checking the funding wallet holds {format_sol(job.amount_lamports)} plus fees"
