"""The RPC budget (SPEC sections 9 and 12): one token bucket in Redis for all workers, each
HTTP request one token; with Redis unreachable each worker keeps its share; no budget set means
no Redis at all."""

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from solders.pubkey import Pubkey

from premix.constants import RPC_BUDGET_KEY, RPC_BUDGET_WORKERS_KEY
from premix.localnet import Localnet
from premix.rpc import RetryPolicy, SolanaRpc
from premix.rpc_budget import LocalBucket, RpcBudget
from premix.servers import ServerError, ValkeyServer, private_valkey
from premix.settings import Settings
from tests.budget.windows import request_clock, tolerance
from tests.fixtures import missing_tool

RATE = 20.0
QUICK = RetryPolicy(tries=3, base_delay_seconds=0.01, max_delay_seconds=0.05)


@pytest.fixture
def valkey() -> Iterator[ValkeyServer]:
    try:
        with private_valkey() as server:
            yield server
    except ServerError as e:
        missing_tool(str(e))


def budget_on(redis_url: str, rate: float = RATE, **kwargs: object) -> RpcBudget | None:
    settings = Settings(redis_url=redis_url, rpc_max_requests_per_second=rate, **kwargs)
    return RpcBudget.from_settings(settings)


async def read_balances(rpc: SolanaRpc, calls: int) -> list[int]:
    key = Pubkey.new_unique()
    return [await rpc.balance(key) for _ in range(calls)]


def test_a_local_bucket_gives_one_request_at_once_then_one_per_interval() -> None:
    now = [100.0]
    bucket = LocalBucket(4.0, clock=lambda: now[0])
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.25)
    now[0] += 0.25
    assert bucket.take() == 0.0
    now[0] += 10  # idle: the bucket holds one request, never a burst
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.25)
    assert bucket.take(cost=3) == pytest.approx(0.75)  # a batch of 3 costs 3


def test_no_budget_is_the_default_and_makes_no_limiter(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    assert settings.rpc_max_requests_per_second == 0
    assert RpcBudget.from_settings(settings) is None
    assert SolanaRpc.from_settings(settings).limiter is None


@pytest.mark.parametrize("value", ["-1", "fast"])
def test_an_invalid_budget_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from premix.settings import SettingsInvalid, describe_settings_error

    monkeypatch.setenv("PREMIX_RPC_MAX_REQUESTS_PER_SECOND", value)
    with pytest.raises(SettingsInvalid) as refused:
        Settings()
    assert describe_settings_error(refused.value).startswith("PREMIX_RPC_MAX_REQUESTS_PER_SECOND:")


async def test_clients_in_separate_tasks_share_one_budget_at_the_node(
    localnet: Localnet, redis_url: str, redis_client: Redis
) -> None:
    budgets = [budget_on(redis_url) for _ in range(4)]
    clients = [SolanaRpc(localnet.url, retry=QUICK, limiter=b) for b in budgets]
    with request_clock(localnet) as clock:
        results = await asyncio.gather(*(read_balances(rpc, 15) for rpc in clients))
    for rpc, budget in zip(clients, budgets, strict=True):
        await rpc.close()
        assert budget is not None
        assert budget.live_workers == 4  # each saw the others in the live-worker set
        await budget.aclose()

    assert [len(r) for r in results] == [15] * 4
    assert clock.count == 60
    assert clock.busiest_second() <= RATE + tolerance(RATE)
    assert await redis_client.exists(RPC_BUDGET_KEY, RPC_BUDGET_WORKERS_KEY) == 2


async def test_without_a_budget_no_request_touches_redis(
    localnet: Localnet, redis_url: str, redis_client: Redis
) -> None:
    async with SolanaRpc.from_settings(Settings(redis_url=redis_url, rpc_url=localnet.url)) as rpc:
        await read_balances(rpc, 5)
    assert await redis_client.dbsize() == 0


async def test_retries_take_tokens_too(localnet: Localnet, redis_url: str) -> None:
    budget = budget_on(redis_url, rate=1000)
    assert budget is not None
    localnet.faults.inject("http_5xx", method="getBalance", count=2)
    async with SolanaRpc(localnet.url, retry=QUICK, limiter=budget) as rpc:
        await rpc.balance(Pubkey.new_unique())
    assert rpc.calls["getBalance"] == 3
    budget_state = await budget.redis.hgetall(RPC_BUDGET_KEY)
    assert budget_state  # the bucket was taken from
    await budget.aclose()


async def test_redis_killed_mid_run_leaves_each_worker_its_share_and_nothing_fails(
    localnet: Localnet, valkey: ValkeyServer
) -> None:
    budgets = [budget_on(valkey.url) for _ in range(2)]
    clients = [SolanaRpc(localnet.url, retry=QUICK, limiter=b) for b in budgets]
    with request_clock(localnet) as clock:
        await asyncio.gather(*(read_balances(rpc, 10) for rpc in clients))  # shared: 2 live
        valkey.kill()
        killed_at = time.monotonic()
        during = await asyncio.gather(*(read_balances(rpc, 12) for rpc in clients))
        local_shares = [b.local_rate for b in budgets if b is not None]
        shared_during = [b.shared for b in budgets if b is not None]
        valkey.restart()
        # longer than REDIS_RETRY_SECONDS at the local share: Redis is asked again meanwhile
        after = await asyncio.gather(*(read_balances(rpc, 20) for rpc in clients))
    for rpc, budget in zip(clients, budgets, strict=True):
        await rpc.close()
        assert budget is not None
        assert budget.shared  # back on the shared bucket once Redis answered
        await budget.aclose()

    assert [len(r) for r in during + after] == [12, 12, 20, 20]
    assert clock.count == 20 + 24 + 40
    assert shared_during == [False, False]
    assert local_shares == [RATE / 2, RATE / 2]
    assert clock.busiest_second(since=killed_at) <= RATE + tolerance(RATE)
    assert clock.busiest_second() <= RATE + tolerance(RATE)


async def test_a_worker_that_never_reached_redis_assumes_the_configured_workers(
    localnet: Localnet, unreachable_redis_url: str
) -> None:
    budget = budget_on(unreachable_redis_url, rpc_budget_workers=4)
    assert budget is not None
    with request_clock(localnet) as clock:
        async with SolanaRpc(localnet.url, retry=QUICK, limiter=budget) as rpc:
            await read_balances(rpc, 6)
    assert (budget.shared, budget.live_workers, budget.local_rate) == (False, None, RATE / 4)
    assert clock.count == 6
    assert clock.busiest_second() <= RATE / 4 + tolerance(RATE / 4)
    await budget.aclose()


async def test_an_idle_worker_with_a_heartbeat_is_counted_in_every_share(
    localnet: Localnet, redis_url: str
) -> None:
    idle, busy = budget_on(redis_url), budget_on(redis_url)
    assert idle is not None and busy is not None
    idle.start_heartbeat()
    while idle.live_workers is None:  # its first beat
        await asyncio.sleep(0.01)
    async with SolanaRpc(localnet.url, retry=QUICK, limiter=busy) as rpc:
        await read_balances(rpc, 2)
    await idle.aclose()
    assert (busy.live_workers, busy.local_rate) == (2, RATE / 2)
    await busy.aclose()


async def test_a_worker_process_with_a_budget_beats_and_closes_it(redis_url: str) -> None:
    from premix.worker import shutdown, startup
    from tests.worker.helpers import make_settings, restored_logging

    settings = make_settings(redis_url, rpc_max_requests_per_second=RATE)
    ctx: dict[str, object] = {"settings": settings}
    async with restored_logging():
        await startup(ctx)
        budget = ctx["rpc_budget"]
        assert isinstance(budget, RpcBudget)
        assert ctx["rpc"].limiter is budget  # type: ignore[attr-defined]
        while budget.live_workers is None:
            await asyncio.sleep(0.01)
        await shutdown(ctx)
    assert budget.live_workers == 1
