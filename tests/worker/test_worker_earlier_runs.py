"""A user's new premix first settles every open attempt of the user's earlier runs and waits
while any may still land (SPEC section 12): an earlier premix that failed with a transfer still
in flight is reconciled with the chain before the new one checks the balance or sends."""

import asyncio
import base64

from redis.asyncio import Redis
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from premix.ledger import AttemptState, Ledger, RunStatus
from premix.localnet import Localnet
from premix.progress import latest_progress
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import (
    TestRpc,
    create_user,
    expire_in_progress_marker,
    job_result,
    make_settings,
    open_store,
    run_worker,
)
from tests.worker.test_worker_adversarial import enqueue

SOL = 10**9
FEE = 5_000


async def an_earlier_premix_that_failed_with_a_transfer_in_flight(
    settings: Settings, store: Store, redis: Redis, net: Localnet
) -> tuple[str, str]:
    """Job A signs and sends its one transaction, the send is dropped, the worker dies, and
    arq's last delivery gives the job up: run A is failed with its attempt still open. Returns
    A's job id and the signed transaction (base64)."""
    job_id = await enqueue(settings, "u1", 1, mode="fast")
    net.faults.inject("drop_send", count=1)
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send")) is False
    await expire_in_progress_marker(redis, job_id)
    assert await run_worker(settings, rpc=TestRpc(net.url)) is True  # past its last try
    run = await Ledger(store).get(job_id)
    assert run is not None and run.status is RunStatus.FAILED
    [(_, in_flight)] = run.open_attempts()
    return job_id, in_flight.wire


async def test_a_new_premix_waits_for_an_earlier_runs_transfer_and_counts_it_once_landed(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=1)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1", buyers=2)
        earlier, wire = await an_earlier_premix_that_failed_with_a_transfer_in_flight(
            settings, store, redis_client, net
        )
        plan = user.plan(SOL)
        later = await enqueue(settings, "u1", 1, mode="fast")
        worker = asyncio.create_task(run_worker(settings, rpc=TestRpc(net.url)))

        waited = False
        async with asyncio.timeout(15):
            while not waited and not worker.done():
                event = await latest_progress(redis_client, later)
                waited = event is not None and "earlier premix" in event.description
                await asyncio.sleep(0.02)
        assert waited, "the new premix did not wait for the earlier one's transfer"
        assert [net.balance(b.pubkey()) for b in user.buyers] == [0, 0]  # it sent nothing yet
        # the earlier copy reaches the leader now
        transaction = VersionedTransaction.from_bytes(base64.b64decode(wire))
        net.chain.send_transaction(transaction, skip_preflight=True)
        assert await asyncio.wait_for(worker, 30)

        assert (await job_result(settings, later)).result["success"] is True
        # the earlier run's report now says what landed
        earlier_run = await Ledger(store).get(earlier)
        assert earlier_run is not None
        [attempt] = [a for tx in earlier_run.transactions for a in tx.attempts]
        assert attempt.state is AttemptState.LANDED_OK
        assert earlier_run.totals.sent_lamports == SOL
        # each wallet got the earlier premix's amount and the new one's, once each
        assert [net.balance(b.pubkey()) for b in user.buyers] == [2 * a for a in plan]
        assert net.balance(user.funding.pubkey()) == user.funding_lamports - 2 * SOL - 2 * FEE
        landed = net.transaction_log[Signature.from_string(attempt.signature)].landed_slot
        later_run = await Ledger(store).get(later)
        assert later_run is not None
        for tx in later_run.transactions:
            for later_attempt in tx.attempts:
                sent = net.transaction_log[Signature.from_string(later_attempt.signature)]
                assert landed is not None and sent.received_slot >= landed


async def test_an_earlier_runs_transfer_that_expired_is_settled_and_the_new_premix_goes_on(
    redis_url: str, redis_client: Redis, net: Localnet
) -> None:
    settings = make_settings(redis_url, net.url, job_max_tries=1)
    async with open_store(settings) as store:
        user = await create_user(store, net, "u1", buyers=2)
        earlier, _ = await an_earlier_premix_that_failed_with_a_transfer_in_flight(
            settings, store, redis_client, net
        )
        net.expire_blockhashes()  # the dropped copy can never land now
        net.advance(40)  # and the chain has finalized that
        later = await enqueue(settings, "u1", 1, mode="fast")

        assert await run_worker(settings, rpc=TestRpc(net.url))

        assert (await job_result(settings, later)).result["success"] is True
        earlier_run = await Ledger(store).get(earlier)
        assert earlier_run is not None
        assert [a.state for tx in earlier_run.transactions for a in tx.attempts] == [
            AttemptState.EXPIRED
        ]
        assert [net.balance(b.pubkey()) for b in user.buyers] == user.plan(SOL)
