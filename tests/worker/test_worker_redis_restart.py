"""Redis restarts in the middle of a run (SPEC section 9): the queue survives on disk
(append-only file), the worker rides through the outage, and the run finishes with every
balance exactly as planned and nothing paid twice."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.servers import ServerError, ValkeyServer
from premix.settings import Settings
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


def test_worker_redis_commands_are_retried_on_a_closed_connection() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from premix.worker import WorkerSettings

    assert RedisConnectionError in (WorkerSettings.redis_settings.retry_on_error or [])
    assert WorkerSettings.redis_settings.retry is not None
