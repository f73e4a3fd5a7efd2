"""Separate worker processes (`arq premix.worker.WorkerSettings` on SecantusDB and a private
Valkey) share one RPC budget: the localnet never sees more than N requests (plus a small
tolerance) in any 1 s window, also while Redis is down (each worker then keeps its share), and
every premix is paid exactly once."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from uuid import uuid4

import pytest
from arq.constants import result_key_prefix
from redis.asyncio import Redis

from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.queue import close_queue, enqueue_premix_funds
from premix.servers import ServerError, ValkeyServer, private_valkey
from tests.budget.windows import request_clock, tolerance
from tests.crash.harness import crash_settings
from tests.crash.workers import WorkerProcess
from tests.fixtures import missing_tool
from tests.worker.helpers import create_user, open_store

RATE: Final = 20.0
WORKERS: Final = 3
USERS: Final = 10
WAIT_SECONDS: Final = 120.0


@pytest.fixture
def persistent_valkey() -> Iterator[ValkeyServer]:
    try:
        with private_valkey(appendonly=True) as server:  # the queue survives its restart
            yield server
    except ServerError as e:
        missing_tool(str(e))


async def all_ended(redis: Redis, job_ids: list[str], workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not all([await redis.exists(result_key_prefix + job_id) for job_id in job_ids]):
        dead = [w for w in workers if not w.alive]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(w.log_tail() for w in workers)
            raise AssertionError(f"the premixes did not all end:\n{logs}")
        await asyncio.sleep(0.1)


def logged(workers: list[WorkerProcess], event: str) -> int:
    return sum(1 for w in workers for e in w.events() if e.get("event") == event)


@pytest.mark.parametrize("kill_redis", [False, True], ids=["shared", "redis-killed-mid-run"])
async def test_worker_processes_stay_within_one_budget_and_pay_every_premix_once(
    persistent_valkey: ValkeyServer, mongodb_url: str, tmp_path: Path, kill_redis: bool
) -> None:
    with Localnet(slot_ms=25, seed=7) as net:
        name = f"budget_{uuid4().hex[:8]}"
        settings = crash_settings(persistent_valkey.url, net.url, mongodb_url, name).model_copy(
            update={"rpc_max_requests_per_second": RATE, "worker_max_jobs": 2}
        )
        redis: Redis = Redis.from_url(settings.redis_url)
        workers: list[WorkerProcess] = []
        try:
            async with open_store(settings) as store:
                users = [await create_user(store, net, f"b{n}", buyers=10) for n in range(USERS)]
                job_ids = []
                for user in users:
                    queued = await enqueue_premix_funds(
                        user.user_id, 42, 1, {"mode": "fast"}, settings=settings
                    )
                    assert queued.job_id is not None, queued.message
                    job_ids.append(queued.job_id)
                await redis.aclose()  # reopened after any restart below
                with request_clock(net) as clock:
                    workers = [WorkerProcess.start(settings, tmp_path, n) for n in range(WORKERS)]
                    if kill_redis:
                        while clock.count < 25:
                            await asyncio.sleep(0.01)
                        persistent_valkey.kill()
                        await asyncio.sleep(2.0)
                        persistent_valkey.start()
                    redis = Redis.from_url(settings.redis_url)
                    await all_ended(redis, job_ids, workers)

                ledger = Ledger(store)
                for user, job_id in zip(users, job_ids, strict=True):
                    run = await ledger.require(job_id)
                    assert run.status is RunStatus.COMPLETED, run.error
                    plan = [entry.lamports for entry in run.plan]
                    assert user.buyer_balances(net) == plan + [0] * (len(user.buyers) - len(plan))
                    spent = run.amount_lamports + 5_000 * run.totals.transactions
                    assert net.balance(user.funding.pubkey()) == user.funding_lamports - spent
        finally:
            for worker in workers:
                worker.kill()
            await redis.aclose()
            await close_queue()

    assert clock.busiest_second() <= RATE + tolerance(RATE)
    if kill_redis:  # the workers went on at their local share, and back to the shared bucket
        assert logged(workers, "rpc_budget_local_share") >= 1
        assert logged(workers, "rpc_budget_shared_again") >= 1
