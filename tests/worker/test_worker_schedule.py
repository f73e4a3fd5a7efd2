"""Scheduled and idempotent premixes (issue 15) run by real arq workers on localnet, on both
stores: a job with `delaySeconds` sends nothing before its time and runs after it, keeping the
user lock from enqueue to its end; a call retried with the same `idempotencyKey` after the
premix completed returns the first job's id, queues nothing, and the wallets are paid once."""

import asyncio
import time

from redis.asyncio import Redis

from premix.constants import QUEUE_NAME, USER_LOCK_PREFIX
from premix.localnet import Localnet
from premix.localnet.intercept import InterceptedRequest, Stage
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import assert_paid_exactly_once, create_user, job_result, run_worker

SOL = 10**9


async def test_a_delayed_premix_sends_nothing_before_its_time_and_runs_after_it(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    sends: list[float] = []

    def record_send(request: InterceptedRequest) -> None:
        if request.stage is Stage.RECEIVED and request.calls("sendTransaction"):
            sends.append(time.time())

    net.intercept(record_send)
    try:
        queued = await enqueue_premix_funds("u1", 42, 1, {"delaySeconds": 1}, settings=settings)
        assert queued.success is True, queued.message
        job_id = str(queued.job_id)
        due_ms = int(await redis_client.zscore(QUEUE_NAME, job_id))
        worker = asyncio.create_task(run_worker(settings))  # burst: it waits for the deferred job

        while time.time() * 1000 < due_ms - 200:  # the worker polls; nothing moves yet
            assert sends == []
            assert user.buyer_balances(net) == [0, 0, 0]
            assert await redis_client.get(USER_LOCK_PREFIX + "u1") == job_id.encode()
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(worker, timeout=60) is True
    finally:
        net.stop_intercepting(record_send)

    assert sends and min(sends) * 1000 >= due_ms  # not before its time
    result = (await job_result(settings, job_id)).result
    assert result["success"] is True, result["message"]
    await assert_paid_exactly_once(store, net, user, job_id, SOL, transactions=len(user.plan(SOL)))
    assert await redis_client.exists(USER_LOCK_PREFIX + "u1") == 0  # released at its end
    assert await redis_client.zcard(QUEUE_NAME) == 0


async def test_a_call_retried_after_the_premix_completed_pays_nothing_twice(
    settings: Settings, store: Store, redis_client: Redis, net: Localnet
) -> None:
    user = await create_user(store, net, "u1", buyers=3)
    options = {"idempotencyKey": "tg-update-81734"}
    first = await enqueue_premix_funds("u1", 42, 1, options, settings=settings)
    assert first.success is True, first.message
    job_id = str(first.job_id)
    await run_worker(settings)
    assert (await job_result(settings, job_id)).result["success"] is True
    await assert_paid_exactly_once(store, net, user, job_id, SOL, transactions=len(user.plan(SOL)))
    transactions = len(net.transaction_log)

    retried = await enqueue_premix_funds("u1", 42, 1, options, settings=settings)
    await run_worker(settings)

    assert (retried.success, retried.job_id) == (True, job_id)
    assert retried.message == f"Premix already accepted as job {job_id}; nothing new was queued"
    assert await redis_client.zcard(QUEUE_NAME) == 0
    assert [key async for key in redis_client.scan_iter("arq:job:*")] == []
    assert len(net.transaction_log) == transactions
    await assert_paid_exactly_once(store, net, user, job_id, SOL, transactions=len(user.plan(SOL)))
