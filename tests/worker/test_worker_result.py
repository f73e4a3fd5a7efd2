"""`get_premix_result`: the receipt of a premix read back from the ledger run, equal to the
chain (each wallet's balance, each signature's slot, the funding wallet's loss), on both
stores; a queued job answers `queued` with no wallets; an unknown job answers None."""

import pickle

import pytest
from arq.constants import result_key_prefix
from redis.asyncio import Redis
from solders.signature import Signature

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds, get_premix_result
from premix.receipts import JobRecordUnreadable
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import TestRpc, create_user, delete_wallets, run_worker

SOL = 10**9
FEE = 5_000


async def test_result_of_a_finished_premix_equals_the_chain(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)

    result = await get_premix_result(queued.job_id, settings=settings)

    assert result is not None
    assert result["jobId"] == queued.job_id
    assert result["status"] == "completed" and result["success"] is True
    assert result["source"] == "ledger"
    wallets = result["wallets"]
    assert [w["position"] for w in wallets] == list(range(6))
    assert [w["publicKey"] for w in wallets] == [str(b.pubkey()) for b in user.buyers]
    assert [w["lamports"] for w in wallets] == user.buyer_balances(net)
    assert {w["status"] for w in wallets} == {"funded"}
    for wallet in wallets:
        landed = net.transaction_log[Signature.from_string(wallet["signature"])]
        assert wallet["slot"] == landed.landed_slot is not None
        assert landed.err is None
    totals = result["totals"]
    funding_loss = user.funding_lamports - net.balance(user.funding.pubkey())
    assert totals["fundedLamports"] == totals["sentLamports"] == 3 * SOL
    assert totals["fundedSol"] == "3"
    assert totals["walletsFunded"] == totals["walletsPlanned"] == 6
    assert totals["feeLamports"] == funding_loss - 3 * SOL
    assert totals["transactions"] == len({w["signature"] for w in wallets})
    assert result["signatures"] == list(dict.fromkeys(w["signature"] for w in wallets))


async def test_result_of_a_queued_job_says_queued_with_no_wallets(
    settings: Settings, store: Store, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=3)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None

    result = await get_premix_result(queued.job_id, settings=settings)

    assert result is not None
    assert result["status"] == "queued" and result["success"] is False
    assert result["source"] == "queue"
    assert result["userId"] == "u1" and result["amountLamports"] == SOL
    assert result["wallets"] == [] and result["signatures"] == []
    assert result["createdAt"] is not None
    assert result["totals"]["transactions"] == 0 and result["totals"]["fundedLamports"] == 0


async def test_result_of_an_unknown_job_is_none(settings: Settings, store: Store) -> None:
    assert await get_premix_result("premix-nobody-1", settings=settings) is None


async def test_result_of_a_job_that_failed_before_sending_names_the_reason(
    settings: Settings, store: Store, net: Localnet
) -> None:
    await create_user(store, net, "u1", buyers=2)
    queued = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert queued.job_id is not None
    await delete_wallets(store, "u1", "buyer")  # after enqueue, which would refuse the job
    await run_worker(settings)

    result = await get_premix_result(queued.job_id, settings=settings)

    assert result is not None
    assert result["status"] == "failed" and result["success"] is False
    assert result["jobStatus"] == "complete"
    assert "No buyer wallets found" in result["message"]
    assert result["wallets"] == [] and result["totals"]["feeLamports"] == 0


async def test_result_counts_priority_fees_in_the_fees_the_funding_wallet_paid(
    settings: Settings, store: Store, net: Localnet
) -> None:
    settings = settings.model_copy(update={"priority_fee": 50_000})
    user = await create_user(store, net, "u1", buyers=4)
    queued = await enqueue_premix_funds("u1", 42, 2, {"mode": "fast"}, settings=settings)
    assert queued.job_id is not None
    await run_worker(settings)

    result = await get_premix_result(queued.job_id, settings=settings)

    assert result is not None and result["status"] == "completed"
    totals = result["totals"]
    funding_loss = user.funding_lamports - net.balance(user.funding.pubkey())
    assert totals["priorityFeeLamports"] > 0
    assert totals["feeLamports"] == FEE * totals["transactions"] + totals["priorityFeeLamports"]
    assert totals["costLamports"] == funding_loss == 2 * SOL + totals["feeLamports"]


async def test_result_of_a_run_whose_worker_died_shows_what_landed_and_what_did_not(
    settings: Settings, store: Store, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=6)
    queued = await enqueue_premix_funds("u1", 42, 3, settings=settings)
    assert queued.job_id is not None
    assert await run_worker(settings, rpc=TestRpc(net.url, kill_on="send", kill_at=3)) is False

    result = await get_premix_result(queued.job_id, settings=settings)

    assert result is not None
    assert result["status"] == "sending" and result["success"] is False
    assert result["jobStatus"] == "in_progress"  # arq's marker outlives the dead worker
    wallets = result["wallets"]
    by_status = {w["status"] for w in wallets}
    assert "funded" in by_status and "not_sent" in by_status
    for wallet, buyer in zip(wallets, user.buyers, strict=True):
        balance = net.balance(buyer.pubkey())
        if wallet["status"] == "funded":
            assert balance == wallet["lamports"]
            landed = net.transaction_log[Signature.from_string(wallet["signature"])]
            assert wallet["slot"] == landed.landed_slot
        elif wallet["status"] == "not_sent":
            assert balance == 0 and wallet["signature"] is None and wallet["slot"] is None
        else:  # sent just before the worker died: may land, its slot is not recorded yet
            assert wallet["status"] == "pending" and wallet["slot"] is None
    funded = [w for w in wallets if w["status"] == "funded"]
    totals = result["totals"]
    assert totals["walletsFunded"] == len(funded)
    assert totals["fundedLamports"] == sum(w["lamports"] for w in funded)
    assert totals["feeLamports"] == FEE * totals["transactions"] == FEE * len(funded)


async def test_result_of_a_job_whose_redis_record_is_not_premix_json_is_refused(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await redis_client.set(result_key_prefix + "premix-u9-1", pickle.dumps({"r": 1}))

    with pytest.raises(JobRecordUnreadable, match="premix-u9-1 has no ledger run"):
        await get_premix_result("premix-u9-1", settings=settings)
