"""Phase 3 of a premix (SPEC sections 3 and 4): the distribution of the job's amount over its
buyer wallets, checked and recorded as the ledger run's plan (the first plan wins: a re-run
keeps it), and what phases 3 and 4 tell the user about it. A top-up (`premix.top_up`) records
only what each wallet lacks of its planned amount.
"""

from collections.abc import Awaitable, Callable

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix import top_up as top_ups
from premix.amounts import format_sol
from premix.distribution import DistributionError, plan_distribution
from premix.errors import InvalidParameters
from premix.jobs import PremixFundsJob
from premix.ledger import Ledger, RunRecord
from premix.mixer import check_recipient_accounts, check_recipients
from premix.rpc import SolanaRpc
from premix.settings import Settings


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
