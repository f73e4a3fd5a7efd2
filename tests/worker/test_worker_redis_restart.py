"""Redis restarts (SPEC section 9): the queue survives on disk (append-only file), a worker,
idle or in the middle of a run, rides through the outage (Redis SIGKILLed and back 1-3 s later),
and the run finishes once, with every balance exactly as planned and nothing paid twice."""

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.worker import Worker
from redis.asyncio import Redis

from premix.localnet import Localnet
from premix.progress import latest_progress
from premix.queue import close_queue, enqueue_premix_funds
from premix.servers import ServerError, ValkeyServer
from premix.settings import Settings
from premix.worker import worker_settings
from tests.fixtures import missing_tool
from tests.worker.helpers import (
    TestRpc,
    assert_paid_exactly_once,
    create_user,
    job_result,
    make_settings,
    open_store,
    run_worker,
)

SOL = 10**9


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[ValkeyServer]:
    try:
        server = ValkeyServer(tmp_path, appendonly=True)
    except ServerError as e:
        missing_tool(str(e))
    with server:
        yield server


@pytest.mark.parametrize(("mode", "sol", "transactions"), [("standard", 2, 4), ("fast", 20, 2)])
async def test_redis_restart_mid_run_finishes_with_exact_balances(
    persistent_redis: ValkeyServer,
    fast_localnet: Localnet,
    mode: str,
    sol: int,
    transactions: int,
) -> None:
    settings: Settings = make_settings(persistent_redis.url, fast_localnet.url)
    async with open_store(settings) as store:
        user = await create_user(store, fast_localnet, "u1")
        queued = await enqueue_premix_funds("u1", 42, sol, {"mode": mode}, settings=settings)
        assert queued.success and queued.job_id is not None

        restarts = []

        def restart_redis_after_first_send(method: str, count: int) -> None:
            if (method, count) == ("send", 1):
                persistent_redis.restart()  # blocks the worker's loop, as a real outage would
                restarts.append(method)

        finished = await run_worker(
            settings, rpc=TestRpc(fast_localnet.url, on_call=restart_redis_after_first_send)
        )

        assert finished and restarts == ["send"]
        result = (await job_result(settings, queued.job_id)).result
        assert result["success"] is True, result["message"]
        await assert_paid_exactly_once(
            store, fast_localnet, user, queued.job_id, sol * SOL, transactions
        )


# --- Redis killed (SIGKILL) and back 1-3 s later, with append-only persistence ---


@pytest.fixture(params=["memory", "mongodb"])
def restart_settings(
    request: pytest.FixtureRequest, persistent_redis: ValkeyServer, fast_localnet: Localnet
) -> Settings:
    """Worker settings on the persistent Valkey and localnet, on either store."""
    overrides: dict[str, Any] = {}
    if request.param == "mongodb":
        overrides = {
            "mongodb_uri": request.getfixturevalue("mongodb_url"),
            "mongodb_database": f"premix_restart_{uuid.uuid4().hex[:10]}",
        }
    return make_settings(persistent_redis.url, fast_localnet.url, **overrides)


async def kill_redis_for(server: ValkeyServer, seconds: float) -> None:
    """SIGKILL Redis, leave it down `seconds`, start it again on the same port and files."""
    server.kill()
    await asyncio.sleep(seconds)
    await asyncio.to_thread(server.start)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **ctx: Any) -> AsyncIterator[asyncio.Task[None]]:
    """A real arq worker (not burst) polling in this event loop; `ctx` pre-sets services."""
    worker = Worker(
        **worker_settings(settings), handle_signals=False, ctx={"settings": settings, **ctx}
    )
    task = asyncio.create_task(worker.async_run())
    try:
        yield task
    finally:
        # a job's result is stored before its task ends (arq's on_job_end, the lock release):
        # let it end, or close() cancels it and re-raises the CancelledError here
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while worker.tasks:
                    await asyncio.sleep(0.01)
        await worker.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for_result(settings: Settings, job_id: str, worker: asyncio.Task[None]) -> Any:
    """arq's result of `job_id` once stored; fails if the worker stops first."""
    async with asyncio.timeout(60):
        while True:
            assert not worker.done(), f"the worker stopped: {worker.exception()!r}"
            try:
                return await job_result(settings, job_id)
            except AssertionError:  # no result yet
                await asyncio.sleep(0.05)


@pytest.mark.parametrize("seed", [1, 2])
async def test_an_idle_worker_survives_redis_killed_and_restarted(
    persistent_redis: ValkeyServer,
    restart_settings: Settings,
    fast_localnet: Localnet,
    seed: int,
) -> None:
    down_seconds = random.Random(seed).uniform(1, 3)
    async with open_store(restart_settings) as store, running_worker(restart_settings) as worker:
        user = await create_user(store, fast_localnet, "u1")
        await asyncio.sleep(0.5)  # the worker is polling an empty queue

        await kill_redis_for(persistent_redis, down_seconds)
        await close_queue()  # the bot side reconnects on its next call
        queued = await enqueue_premix_funds("u1", 42, 2, settings=restart_settings)
        assert queued.success and queued.job_id is not None, queued.message
        info = await wait_for_result(restart_settings, queued.job_id, worker)

        assert info.result["success"] is True, info.result["message"]
        assert info.job_try == 1
        await assert_paid_exactly_once(store, fast_localnet, user, queued.job_id, 2 * SOL, 4)


@pytest.mark.parametrize(("mode", "sol", "transactions"), [("standard", 2, 4), ("fast", 20, 2)])
async def test_a_worker_mid_job_survives_redis_killed_and_restarted_and_completes_once(
    persistent_redis: ValkeyServer,
    restart_settings: Settings,
    fast_localnet: Localnet,
    mode: str,
    sol: int,
    transactions: int,
) -> None:
    redis = Redis.from_url(persistent_redis.url)
    try:
        async with open_store(restart_settings) as store:
            user = await create_user(store, fast_localnet, "u1")
            queued = await enqueue_premix_funds(
                "u1", 42, sol, {"mode": mode}, settings=restart_settings
            )
            assert queued.success and queued.job_id is not None, queued.message
            job_id = queued.job_id
            rpc = TestRpc(fast_localnet.url)
            async with running_worker(restart_settings, rpc=rpc) as worker:
                # Redis goes away right after the first transfer is sent.
                async with asyncio.timeout(30):
                    while rpc.seen.get("send", 0) < 1:
                        await asyncio.sleep(0.001)
                await kill_redis_for(persistent_redis, 1.5)
                info = await wait_for_result(restart_settings, job_id, worker)
                final = await latest_progress(redis, job_id)

            assert info.result["success"] is True, info.result["message"]
            assert info.job_try == 1  # the same execution finished: nothing ran twice
            assert final is not None and final.status == "completed"
            assert final.description == info.result["message"]
            await assert_paid_exactly_once(
                store, fast_localnet, user, job_id, sol * SOL, transactions
            )
    finally:
        await redis.aclose()
