"""Priority fees through the whole job: under congestion `auto` completes and the job result,
the message and the ledger show the fee the chain charged; the balance check counts the cap for
transactions not signed yet."""

from typing import Any

from solders.signature import Signature

from premix.amounts import format_sol
from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.mixer import PriorityFees
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import create_user, job_result, run_worker

SOL = 10**9


async def enqueue(settings: Settings, user_id: str, amount: object, **options: Any) -> str:
    queued = await enqueue_premix_funds(user_id, 42, amount, options or None, settings=settings)
    assert queued.success, queued.message
    assert queued.job_id is not None
    return queued.job_id


def with_auto_fees(settings: Settings) -> Settings:
    return settings.model_copy(update={"priority_fee": "auto"})


async def test_auto_under_congestion_completes_and_reports_the_fees_the_chain_charged(
    settings: Settings, store: Store, net: Localnet
) -> None:
    settings = with_auto_fees(settings)
    user = await create_user(store, net, "u1", buyers=73, funding_lamports=100 * SOL)
    net.faults.inject("congestion", min_micro_lamports=50_000, land_probability=0)
    for mode in ("fast", "standard"):
        before = net.balance(user.funding.pubkey())
        job_id = await enqueue(settings, "u1", 3, mode=mode)

        await run_worker(settings)

        result = (await job_result(settings, job_id)).result
        assert result["success"] is True, result["message"]
        run = await Ledger(store).get(job_id)
        assert run is not None and run.status is RunStatus.COMPLETED
        landed = [a for tx in run.transactions for a in tx.attempts if a.landed]
        log = net.transaction_log
        chain_fees = sum(log[Signature.from_string(a.signature)].fee_lamports for a in landed)
        priority = run.totals.priority_fee_lamports
        assert priority == chain_fees - 5_000 * len(landed) > 0
        assert net.balance(user.funding.pubkey()) == before - 3 * SOL - chain_fees
        totals = result["totals"]
        assert (totals["feeLamports"], totals["priorityFeeLamports"]) == (chain_fees, priority)
        assert result["message"].endswith(
            f"fees {format_sol(chain_fees)} (of which priority fees {format_sol(priority)})"
        )
        assert all(a.compute_unit_price >= 50_000 for a in landed)


async def test_with_auto_fees_the_balance_check_counts_up_to_the_cap_per_transaction(
    settings: Settings, store: Store, net: Localnet
) -> None:
    settings = with_auto_fees(settings)
    await create_user(store, net, "u1", buyers=5, funding_lamports=SOL // 2)
    job_id = await enqueue(settings, "u1", "0.5")

    await run_worker(settings)

    cap_fee = PriorityFees.from_settings(settings).max_fee_lamports(1)
    assert cap_fee == 5_000 + 100_000
    assert (await job_result(settings, job_id)).result["message"] == (
        f"Insufficient funding wallet balance: needed {format_sol(SOL // 2 + cap_fee + SOL // 100)}"
        f", available 0.5 SOL (0.5 SOL to 1 wallet(s) + up to {format_sol(cap_fee)} fees for "
        "1 transaction(s) + 0.01 SOL buffer)"
    )


async def test_a_congestion_above_the_cap_fails_the_job_clearly_after_its_last_try(
    settings: Settings, store: Store, net: Localnet
) -> None:
    settings = settings.model_copy(
        update={"priority_fee": "auto", "max_priority_fee_lamports": 1_000, "job_max_tries": 1}
    )
    cap_price = PriorityFees.from_settings(settings).cap_price(1)
    user = await create_user(store, net, "u1", buyers=5, funding_lamports=SOL)
    net.faults.inject("congestion", min_micro_lamports=10 * cap_price, land_probability=0)
    job_id = await enqueue(settings, "u1", "0.5")

    await run_worker(settings)

    result = (await job_result(settings, job_id)).result
    assert result["success"] is False
    assert result["message"] == (
        "Mixer operation failed: the network is congested: transaction 1 did not land even at "
        "the highest priority fee allowed (0.000001 SOL per transaction). Sent 0 SOL "
        "to 0 wallet(s); 1 wallet(s) not funded"
    )
    assert "PREMIX_" not in result["message"]  # the variable is named in the log only
    assert net.balance(user.funding.pubkey()) == SOL  # nothing was paid
    run = await Ledger(store).get(job_id)
    assert run is not None and run.status is RunStatus.FAILED
    [tx] = run.transactions
    assert [a.compute_unit_price for a in tx.attempts] == [cap_price]
    assert tx.attempts[0].priority_fee_lamports <= 1_000
