"""`retry_premix`: a new job continues a failed premix's ledger run, settling what it left open
and funding only the wallets it did not fund (asserted on the chain: every wallet credited
exactly once, the funding wallet debited exactly the amount plus the fees of the transactions
that landed); refused for an unknown or completed premix and while the user is busy; on both
stores."""

import pytest
from redis.asyncio import Redis

from premix.constants import USER_LOCK_PREFIX
from premix.jobs import EnqueueResult
from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.queue import (
    _lock_and_enqueue,
    enqueue_premix_funds,
    get_premix_result,
    queue_pool,
    retry_premix,
)
from premix.retry import retry_job
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import user_lock_holder
from tests.worker.helpers import (
    TestRpc,
    assert_paid_exactly_once,
    create_user,
    expire_in_progress_marker,
    job_result,
    run_worker,
)

SOL = 10**9
FEE = 5_000


async def test_a_retry_after_the_funding_wallet_was_short_funds_every_wallet_once(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4, funding_lamports=SOL // 2)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)
    failed = await job_result(settings, queued.job_id)
    assert failed.result["success"] is False
    assert "Insufficient" in failed.result["message"]
    net.airdrop(user.funding.pubkey(), 3 * SOL)
    user.funding_lamports += 3 * SOL

    retried = await retry_premix(queued.job_id, settings=settings)

    assert retried.success is True, retried.message
    assert retried.job_id is not None and retried.job_id != queued.job_id
    assert retried.message == (
        f"Retry of premix {queued.job_id} queued as job {retried.job_id}: 4 of 4 wallet(s) "
        "still to fund (2 SOL); the 0 funded are not paid again"
    )
    await run_worker(settings)
    outcome = await job_result(settings, retried.job_id)
    assert outcome.result["success"] is True
    assert outcome.result["runId"] == queued.job_id
    await assert_paid_exactly_once(store, net, user, queued.job_id, 2 * SOL, 4)
    for asked in (queued.job_id, retried.job_id):
        receipt = await get_premix_result(asked, settings=settings)
        assert receipt is not None
        assert (receipt["status"], receipt["jobStatus"]) == ("completed", "complete")
        assert receipt["runId"] == queued.job_id
        assert receipt["retryJobs"] == [retried.job_id]
        assert [w["lamports"] for w in receipt["wallets"]] == user.buyer_balances(net)


async def test_a_retry_of_a_run_that_stopped_midway_pays_only_the_wallets_it_did_not_fund(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    settings = settings.model_copy(update={"job_max_tries": 1})
    user = await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    assert queued.job_id is not None
    # the worker dies right after its third send reached the node; arq delivers the job once
    # more than it may try it, and that delivery gives up: the run is failed, part-funded
    dying = TestRpc(net.url, kill_on="send", kill_at=3)
    assert await run_worker(settings, rpc=dying) is False
    await expire_in_progress_marker(redis_client, queued.job_id)
    await run_worker(settings)
    run = await Ledger(store).get(queued.job_id)
    assert run is not None and run.status is RunStatus.FAILED
    funded_before = len(run.funded_positions())
    assert 2 <= funded_before < 6
    balances_before = user.buyer_balances(net)

    retried = await retry_premix(queued.job_id, settings=settings)

    assert retried.success is True, retried.message
    assert f"{6 - funded_before} of 6 wallet(s) still to fund" in retried.message
    assert retried.job_id is not None
    await run_worker(settings)
    assert (await job_result(settings, retried.job_id)).result["success"] is True
    # the wallets funded before were not paid again; each wallet holds exactly its amount
    plan = user.plan(3 * SOL)
    for before, after, amount in zip(balances_before, user.buyer_balances(net), plan, strict=True):
        assert before in (0, amount) and after == amount
    await assert_paid_exactly_once(store, net, user, queued.job_id, 3 * SOL, 6)


async def test_a_retry_is_refused_for_an_unknown_or_completed_premix_with_nothing_queued(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    await create_user(store, net, "u1", buyers=3)
    unknown = await retry_premix("premix-u1-1", settings=settings)
    assert (unknown.success, unknown.job_id) == (False, None)
    assert unknown.message == (
        "Unknown premix premix-u1-1: the ledger has no run for it (it never started, so "
        "nothing was sent); nothing was enqueued"
    )
    invalid = await retry_premix("not a job", settings=settings)
    assert invalid.message == "Invalid job id: expected premix-<userId>-<unix ms>"
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)

    completed = await retry_premix(queued.job_id, settings=settings)

    assert completed.success is False
    assert completed.message == (
        f"Premix {queued.job_id} completed: all 2 wallet(s) were funded; nothing to retry"
    )
    assert await redis_client.zcard(settings.queue_name) == 0
    assert await user_lock_holder(redis_client, "u1") is None
    run = await Ledger(store).get(queued.job_id)
    assert run is not None and run.retry_jobs == []


async def test_a_retry_is_refused_while_a_premix_of_the_user_is_queued(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    await create_user(store, net, "u1", buyers=5, funding_lamports=SOL // 2)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)  # fails: the funding wallet is short
    first = await retry_premix(queued.job_id, settings=settings)
    assert first.success is True

    second = await retry_premix(queued.job_id, settings=settings)
    other = await enqueue_premix_funds("u1", 42, 1, settings=settings)

    busy = (
        f"A premix is already queued or running for this user (job {first.job_id}); wait for it "
        "to finish"
    )
    assert (second.success, second.message) == (False, busy)
    assert (other.success, other.message) == (False, busy)
    assert await redis_client.zcard(settings.queue_name) == 1
    run = await Ledger(store).get(queued.job_id)
    assert run is not None and run.retry_jobs == [first.job_id]


async def test_a_retry_whose_worker_dies_is_retried_again_and_still_pays_once(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    settings = settings.model_copy(update={"job_max_tries": 1})
    user = await create_user(store, net, "u1", buyers=5, funding_lamports=SOL // 2)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)  # fails: the funding wallet is short
    net.airdrop(user.funding.pubkey(), 3 * SOL)
    user.funding_lamports += 3 * SOL
    first = await retry_premix(queued.job_id, settings=settings)
    assert first.job_id is not None
    # the retry's worker dies after its second send; the next delivery gives up
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=2)) is False
    await expire_in_progress_marker(redis_client, first.job_id)
    await run_worker(settings)
    assert (await job_result(settings, first.job_id)).result["success"] is False

    second = await retry_premix(first.job_id, settings=settings)  # either job id names the run

    assert second.success is True, second.message
    assert second.job_id is not None
    await run_worker(settings)
    assert (await job_result(settings, second.job_id)).result["success"] is True
    planned = len(user.plan(2 * SOL))  # standard mode: one transaction per wallet
    await assert_paid_exactly_once(store, net, user, queued.job_id, 2 * SOL, planned)
    run = await Ledger(store).get(queued.job_id)
    assert run is not None and run.retry_jobs == [first.job_id, second.job_id]


async def test_a_job_naming_a_run_that_did_not_queue_it_sends_nothing(
    settings: Settings, store: Store, net: Localnet
) -> None:
    # anyone able to write to Redis could queue a job naming another premix's run: the worker
    # continues a run only for a job the run lists among its retries (set by `retry_premix`)
    user = await create_user(store, net, "u1", buyers=3, funding_lamports=SOL // 2)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)
    net.airdrop(user.funding.pubkey(), 2 * SOL)
    run = await Ledger(store).get(queued.job_id)
    assert run is not None
    forged = retry_job(run)
    await _lock_and_enqueue(
        queue_pool(settings.redis_url), settings.queue_name, forged, "premix-u1-99"
    )

    await run_worker(settings)

    outcome = await job_result(settings, "premix-u1-99")
    assert outcome.result["success"] is False
    assert outcome.result["message"].endswith(
        f"premix {queued.job_id}, which this job retries, cannot be continued"
    )
    assert user.buyer_balances(net) == [0, 0, 0]
    assert net.balance(user.funding.pubkey()) == user.funding_lamports + 2 * SOL


@pytest.mark.parametrize(("mode", "sol"), [("standard", 4), ("fast", 40)])
async def test_a_retry_on_a_hostile_node_still_pays_each_wallet_once(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis, mode: str, sol: int
) -> None:
    stopping = settings.model_copy(update={"job_max_tries": 1})
    user = await create_user(store, net, "u1", buyers=73)  # 40 SOL, fast: 3 transactions
    queued = await enqueue_premix_funds("u1", 42, sol, {"mode": mode}, settings=stopping)
    assert queued.job_id is not None

    # every send is lost in flight (fast mode sends its transactions at once: a fault switched on
    # after the first send would race the others); the worker dies after its second send and the
    # next delivery gives up: a failed run whose signed attempts may still land, or expired
    net.faults.inject("drop_send")
    dying = TestRpc(net.url, kill_on="send", kill_at=2)
    assert await run_worker(stopping, rpc=dying) is False
    await expire_in_progress_marker(redis_client, queued.job_id)
    await run_worker(stopping)
    failed = await Ledger(store).require(queued.job_id)
    assert failed.status is RunStatus.FAILED
    assert sum(len(tx.attempts) for tx in failed.transactions) >= 2  # two were signed and sent
    assert len(failed.funded_positions()) < len(failed.plan)
    net.faults.clear()
    retried = await retry_premix(queued.job_id, settings=settings)
    assert retried.job_id is not None, retried.message
    rules = [
        net.faults.inject("drop_send", probability=0.3),
        net.faults.inject("lose_response", method="sendTransaction", probability=0.3),
        net.faults.inject("stale_read", probability=0.3, slots=3),
        net.faults.inject("no_history", probability=0.5),
        net.faults.inject("http_5xx", probability=0.05, status=503),
    ]

    await run_worker(settings.model_copy(update={"job_max_tries": 20}))

    assert sum(rule.fired for rule in rules) > 0
    assert (await job_result(settings, retried.job_id)).result["success"] is True
    run = await Ledger(store).require(queued.job_id)
    await assert_paid_exactly_once(
        store, net, user, queued.job_id, sol * SOL, run.totals.transactions
    )


async def test_a_retry_of_a_top_up_keeps_its_plan_and_tops_each_wallet_up_once(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=4, funding_lamports=SOL // 2)
    plan = user.plan(2 * SOL)
    net.airdrop(user.buyers[0].pubkey(), plan[0])
    net.airdrop(user.buyers[1].pubkey(), plan[1] // 2)
    missing = [0, plan[1] - plan[1] // 2, plan[2], plan[3]]
    queued = await enqueue_premix_funds("u1", 42, 2, {"topUp": True}, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)
    assert "Insufficient" in (await job_result(settings, queued.job_id)).result["message"]
    net.airdrop(user.funding.pubkey(), 3 * SOL)

    retried = await retry_premix(queued.job_id, settings=settings)

    assert retried.success is True and retried.job_id is not None, retried.message
    await run_worker(settings)
    outcome = await job_result(settings, retried.job_id)
    assert outcome.result["success"] is True, outcome.result["message"]
    assert outcome.result["message"].startswith("Top-up of 2 SOL complete")
    assert user.buyer_balances(net) == plan
    spent = SOL // 2 + 3 * SOL - net.balance(user.funding.pubkey())
    assert spent == sum(missing) + 3 * FEE
    assert [w["sentLamports"] for w in outcome.result["wallets"]] == missing
    assert await retry_premix(queued.job_id, settings=settings) == EnqueueResult(
        False,
        f"Top-up {queued.job_id} completed: all 4 wallet(s) hold their planned amounts; "
        "nothing to retry",
    )


async def test_a_retry_is_refused_while_the_premix_waits_in_arq_after_its_lock_expired(
    settings: Settings, store: Store, net: Localnet, redis_client: Redis
) -> None:
    # its worker died and none came back before the user lock expired: the job is still arq's
    # to deliver again, so a retry would run beside it on the same ledger run
    await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    assert queued.job_id is not None
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=2)) is False
    await expire_in_progress_marker(redis_client, queued.job_id)
    await redis_client.delete(USER_LOCK_PREFIX + "u1")  # expired

    refused = await retry_premix(queued.job_id, settings=settings)

    assert (refused.success, refused.job_id) == (False, None)
    assert refused.message == (
        f"Premix {queued.job_id} is still queued or running as job {queued.job_id}; nothing "
        "was enqueued"
    )
    run = await Ledger(store).get(queued.job_id)
    assert run is not None and run.retry_jobs == []
    await run_worker(settings)  # arq delivers it again: it finishes the run, paid once
    assert (await job_result(settings, queued.job_id)).result["success"] is True
