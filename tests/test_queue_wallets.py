"""Enqueue checks the user's stored wallets (issue 14): no funding wallet, no buyer wallets or
too few for the amount is refused with nothing on Redis; one store read per enqueue, through a
store opened once; an unreachable store is a quick, user-safe refusal.

Each store test runs on `memory://` and on the session's MongoDB-wire server (SecantusDB)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from redis.asyncio import Redis
from solders.keypair import Keypair

import premix.store
from premix.constants import QUEUE_NAME, USER_LOCK_PREFIX
from premix.memory_store import MemoryCollection
from premix.queue import (
    QUEUE_MISCONFIGURED,
    STORE_UNAVAILABLE,
    close_queue,
    enqueue_premix_funds,
)
from premix.servers import SecantusServer, ServerError
from premix.settings import Settings
from premix.store import Store
from tests.fixtures import missing_tool
from tests.test_store_faults import FailPoints, Fault, store_uri
from tests.worker.helpers import create_user, make_settings, open_store, settings_on_store

pytestmark = pytest.mark.usefixtures("closed_queue_pools")


@pytest.fixture(params=["memory", "mongodb"])
def settings(request: pytest.FixtureRequest, redis_url: str) -> Settings:
    return settings_on_store(request, redis_url, database_prefix="premix_enqueue")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with open_store(settings) as opened:
        yield opened


async def assert_nothing_on_redis(redis: Redis, user_id: str) -> None:
    assert await redis.exists(USER_LOCK_PREFIX + user_id) == 0
    assert await redis.zcard(QUEUE_NAME) == 0
    assert [key async for key in redis.scan_iter("arq:*")] == []


async def test_a_user_with_no_funding_wallet_is_refused_and_nothing_is_queued(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await store.wallets.add_buyer_wallets("u1", [Keypair() for _ in range(3)])

    result = await enqueue_premix_funds("u1", 42, 1, settings=settings)

    assert (result.success, result.job_id) == (False, None)
    assert result.message == (
        "Funding wallet not found: user u1 has no funding wallet; create a funding wallet "
        "first; nothing was enqueued"
    )
    await assert_nothing_on_redis(redis_client, "u1")


async def test_an_unknown_user_is_refused_for_the_missing_funding_wallet(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds("nobody", 42, 1, settings=settings)

    assert result.success is False
    assert result.message.startswith("Funding wallet not found: user nobody has no funding")
    await assert_nothing_on_redis(redis_client, "nobody")


async def test_a_user_with_no_buyer_wallets_is_refused_and_nothing_is_queued(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await create_user(store, None, "u1", buyers=0)

    result = await enqueue_premix_funds("u1", 42, 1, settings=settings)

    assert (result.success, result.job_id) == (False, None)
    assert result.message == (
        "No buyer wallets found: user u1 has no buyer wallets; create buyer wallets first; "
        "nothing was enqueued"
    )
    await assert_nothing_on_redis(redis_client, "u1")


@pytest.mark.parametrize(
    ("buyers", "amount", "options", "expected"),
    [
        (
            5,
            3,
            None,
            "Invalid parameters: mixAmount: 3 SOL needs at least 6 buyer wallets; user u1 has "
            "5 buyer wallets, which can hold at most 2.5 SOL; nothing was enqueued",
        ),
        (
            1,
            "0.6",
            None,
            "Invalid parameters: mixAmount: 0.6 SOL needs at least 2 buyer wallets; user u1 has "
            "1 buyer wallet, which can hold at most 0.5 SOL; nothing was enqueued",
        ),
        (  # maxWallets allows more than are stored: the stored ones are the limit
            12,
            "7.5",
            {"maxWallets": 40},
            "Invalid parameters: mixAmount: 7.5 SOL needs at least 14 buyer wallets; user u1 "
            "has 12 buyer wallets, which can hold at most 6.4 SOL; nothing was enqueued",
        ),
    ],
)
async def test_an_amount_the_stored_buyer_wallets_cannot_hold_is_refused_naming_the_limits(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    buyers: int,
    amount: object,
    options: dict[str, Any] | None,
    expected: str,
) -> None:
    await create_user(store, None, "u1", buyers=buyers)

    result = await enqueue_premix_funds("u1", 42, amount, options, settings=settings)

    assert (result.success, result.message, result.job_id) == (False, expected, None)
    await assert_nothing_on_redis(redis_client, "u1")


async def test_an_amount_that_fills_the_stored_wallets_exactly_is_queued(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await create_user(store, None, "u1", buyers=5)

    result = await enqueue_premix_funds("u1", 42, "2.5", settings=settings)

    assert result.success is True, result.message
    assert await redis_client.zrange(QUEUE_NAME, 0, -1) == [str(result.job_id).encode()]


async def test_a_lower_max_wallets_is_still_refused_before_the_store_is_read(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    await create_user(store, None, "u1", buyers=10)

    result = await enqueue_premix_funds("u1", 42, 3, {"maxWallets": 5}, settings=settings)

    assert result.message == (
        "Invalid parameters: mixAmount: Amount 3 SOL is more than 5 buyer wallets can hold "
        "(at most 2.5 SOL)"
    )
    await assert_nothing_on_redis(redis_client, "u1")


async def test_the_wallet_counts_come_from_one_find_that_reads_roles_only(
    settings: Settings, store: Store
) -> None:
    await create_user(store, None, "u1", buyers=7)
    await create_user(store, None, "u2", buyers=0)
    reads: list[tuple[str, tuple[Any, ...]]] = []
    real = store.wallets.collection

    class Counting:
        def __getattr__(self, name: str) -> Any:
            reads.append((name, ()))
            return getattr(real, name)

    store.wallets.collection = Counting()  # type: ignore[assignment]
    try:
        assert (await store.wallets.wallet_counts("u1")).buyer_count == 7
        u2 = await store.wallets.wallet_counts("u2")
        nobody = await store.wallets.wallet_counts("nobody")
    finally:
        store.wallets.collection = real
    assert [name for name, _ in reads] == ["find", "find", "find"]
    assert (u2.has_funding, u2.buyer_count) == (True, 0)
    assert (nobody.has_funding, nobody.buyer_count) == (False, 0)


class CommandLog(monitoring.CommandListener):
    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_each_enqueue_is_one_store_round_trip_on_one_client(
    mongodb_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        redis_url, mongodb_uri=mongodb_url, mongodb_database=f"premix_rt_{uuid.uuid4().hex[:12]}"
    )
    async with open_store(settings) as store:
        for user in ("u1", "u2", "u3"):
            await create_user(store, None, user, buyers=3)
        await create_user(store, None, "u4", buyers=0)
        commands = CommandLog()
        clients: list[object] = []

        def client(*args: Any, **kwargs: Any) -> AsyncMongoClient[Any]:
            opened: AsyncMongoClient[Any] = AsyncMongoClient(
                *args, event_listeners=[commands], **kwargs
            )
            clients.append(opened)
            return opened

        monkeypatch.setattr(premix.store, "AsyncMongoClient", client)

        results = [
            await enqueue_premix_funds(user, 42, 1, settings=settings)
            for user in ("u1", "u2", "u3", "u4", "nobody")
        ]
        await close_queue()

    assert [r.success for r in results] == [True, True, True, False, False]
    assert len(clients) == 1  # opened once, reused by every enqueue
    finds = [event for event in commands.events if event.command_name != "endSessions"]
    assert [event.command_name for event in finds] == ["find"] * 5
    for event, user in zip(finds, ("u1", "u2", "u3", "u4", "nobody"), strict=True):
        assert event.command["find"] == "wallets"
        assert event.command["filter"] == {"user_id": user}
        # roles and owners only: no key material read
        assert event.command["projection"] == {"_id": 0, "role": 1, "user_id": 1}


async def test_concurrent_enqueues_share_their_wallet_reads_and_each_gets_its_own_answer(
    mongodb_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        redis_url, mongodb_uri=mongodb_url, mongodb_database=f"premix_rt_{uuid.uuid4().hex[:12]}"
    )
    ready = [f"ready{n}" for n in range(16)]
    async with open_store(settings) as store:
        for user in ready:
            await create_user(store, None, user, buyers=3)
        await create_user(store, None, "few", buyers=1)  # 1 wallet holds at most 0.5 SOL
        commands = CommandLog()

        def client(*args: Any, **kwargs: Any) -> AsyncMongoClient[Any]:
            return AsyncMongoClient(*args, event_listeners=[commands], **kwargs)

        monkeypatch.setattr(premix.store, "AsyncMongoClient", client)
        users = [*ready, "few", "nobody"]
        results = await asyncio.gather(
            *(enqueue_premix_funds(user, 42, 1, settings=settings) for user in users)
        )
        await close_queue()

    assert [r.success for r in results] == [True] * 16 + [False, False]
    assert results[16].message == (
        "Invalid parameters: mixAmount: 1 SOL needs at least 2 buyer wallets; user few has 1 "
        "buyer wallet, which can hold at most 0.5 SOL; nothing was enqueued"
    )
    assert results[17].message.startswith("Funding wallet not found: user nobody has no")
    finds = [event for event in commands.events if event.command_name == "find"]
    assert 1 <= len(finds) < len(users)  # shared: not one query per caller
    asked = [
        user
        for event in finds
        for user in (
            event.command["filter"]["user_id"]["$in"]
            if isinstance(event.command["filter"]["user_id"], dict)
            else [event.command["filter"]["user_id"]]
        )
    ]
    assert sorted(asked) == sorted(users)  # each caller's user read exactly once


async def test_each_enqueue_on_the_memory_store_is_one_find(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(redis_url)
    async with open_store(settings) as store:
        await create_user(store, None, "u1", buyers=3)
        await create_user(store, None, "u2", buyers=0)
        calls: list[str] = []
        for name in [n for n in vars(MemoryCollection) if not n.startswith("_") and n != "name"]:
            real = getattr(MemoryCollection, name)

            def counted(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
                calls.append(_name)
                return _real(*args, **kwargs)

            monkeypatch.setattr(MemoryCollection, name, counted)

        results = [
            await enqueue_premix_funds(user, 42, 1, settings=settings)
            for user in ("u1", "u2", "nobody")
        ]
        monkeypatch.undo()

    assert [r.success for r in results] == [True, False, False]
    assert calls == ["find", "find", "find"]


BLOCKED_FIND = Fault("blocked", {"blockConnection": True, "blockTimeMS": 6_000}, 2, "")


@pytest.fixture
async def fail_points(failpoint_mongodb_url: str) -> AsyncIterator[FailPoints]:
    points = FailPoints(failpoint_mongodb_url)
    try:
        yield points
    finally:
        await points.off()
        await points.client.close()


async def test_a_store_that_stops_answering_is_cut_off_even_past_the_uris_own_timeout(
    failpoint_mongodb_url: str, fail_points: FailPoints, redis_url: str, redis_client: Redis
) -> None:
    # the URI's 30 s socket timeout wins over enqueue's 2 s: enqueue's own deadline still holds
    uri = store_uri(failpoint_mongodb_url, socket_timeout_ms=30_000)
    settings = make_settings(
        redis_url, mongodb_uri=uri, mongodb_database=f"premix_block_{uuid.uuid4().hex[:12]}"
    )
    async with open_store(settings) as store:
        await create_user(store, None, "u1", buyers=3)
        await fail_points.arm(BLOCKED_FIND, ["find"])

        started = time.monotonic()
        result = await enqueue_premix_funds("u1", 42, 1, settings=settings)
        elapsed = time.monotonic() - started
        await fail_points.off()

    assert (result.success, result.message, result.job_id) == (False, STORE_UNAVAILABLE, None)
    assert elapsed < 4
    await assert_nothing_on_redis(redis_client, "u1")


@pytest.fixture
def stoppable_store(tmp_path: Path) -> Iterator[SecantusServer]:
    try:
        server = SecantusServer(tmp_path / "secantus")
    except ServerError as e:
        missing_tool(str(e))
    with server:
        yield server


async def test_a_store_that_went_down_is_a_quick_refusal_and_nothing_is_queued(
    stoppable_store: SecantusServer, redis_url: str, redis_client: Redis
) -> None:
    settings = make_settings(redis_url, mongodb_uri=stoppable_store.url)
    store = await Store.open(settings)
    await create_user(store, None, "u1", buyers=3)
    await store.close()
    first = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    assert first.success is True  # the shared client is connected
    await redis_client.flushdb()
    stoppable_store.stop()

    started = time.monotonic()
    result = await enqueue_premix_funds("u1", 42, 1, settings=settings)
    elapsed = time.monotonic() - started

    assert (result.success, result.message, result.job_id) == (False, STORE_UNAVAILABLE, None)
    assert result.message == (
        "Queue unavailable: could not reach the wallet store; nothing was enqueued"
    )
    assert elapsed < 5  # bounded by enqueue's 2 s store timeout, not the worker's 5 s
    await assert_nothing_on_redis(redis_client, "u1")


async def test_an_unreachable_store_is_a_refusal_that_never_names_its_uri(
    redis_url: str, redis_client: Redis
) -> None:
    uri = "mongodb://premix:s3cret-pass@127.0.0.1:9/?directConnection=true"
    settings = make_settings(redis_url, mongodb_uri=uri)

    result = await enqueue_premix_funds("u1", 42, 1, settings=settings)

    assert (result.success, result.message) == (False, STORE_UNAVAILABLE)
    await assert_nothing_on_redis(redis_client, "u1")


async def test_a_misconfigured_store_uri_is_a_refusal_that_never_names_it(
    redis_url: str, redis_client: Redis
) -> None:
    settings = make_settings(redis_url, mongodb_uri="mongodb://premix:s3cret@/no-host")

    result = await enqueue_premix_funds("u1", 42, 1, settings=settings)

    assert (result.success, result.message) == (False, QUEUE_MISCONFIGURED)
    assert "s3cret" not in result.message
    await assert_nothing_on_redis(redis_client, "u1")
