"""Idempotent enqueue (issue 15, SPEC section 13): the same user and `idempotencyKey` within
24 hours get the first call's job id back and nothing is queued twice, also when 20 calls race;
the key is checked before the user-busy check and the wallet check; the same key with other
parameters is refused. On `memory://` and on the session's MongoDB-wire server.

A call retried after the premix completed: tests/worker/test_worker_schedule.py (on chain)."""

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import premix.queue
from premix.constants import QUEUE_NAME, USER_LOCK_PREFIX
from premix.idempotency import IDEMPOTENCY_KEY_SECONDS, IdempotencyClaim
from premix.jobs import EnqueueResult
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.test_queue import CountingConnection
from tests.worker.helpers import (
    create_user,
    delete_wallets,
    open_store,
    settings_on_store,
)

pytestmark = pytest.mark.usefixtures("closed_queue_pools")


@pytest.fixture(params=["memory", "mongodb"])
def settings(request: pytest.FixtureRequest, redis_url: str) -> Settings:
    return settings_on_store(request, redis_url, database_prefix="premix_idempotency")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with open_store(settings) as opened:
        for user_id in ("u1", "u2"):
            await create_user(opened, None, user_id, buyers=5)
        yield opened


@pytest.fixture
async def counting_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client counting its round trips (`CountingConnection.sent`), the handshake not counted."""
    pool = ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client: Redis = Redis(connection_pool=pool)
    await client.ping()
    CountingConnection.sent = 0
    try:
        yield client
    finally:
        await client.aclose()


def idempotency_key(user_id: str, key: str) -> str:
    return f"premix:idempotency:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def already_accepted(job_id: str | None) -> str:
    return f"Premix already accepted as job {job_id}; nothing new was queued"


async def no_earlier_answer(redis: Redis, claim: IdempotencyClaim) -> EnqueueResult | None:
    return None


async def queued_jobs(redis: Redis) -> list[str]:
    return [member.decode() for member in await redis.zrange(QUEUE_NAME, 0, -1)]


async def test_the_same_key_again_returns_the_first_job_and_queues_nothing(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    options = {"idempotencyKey": "tg-update-81734"}
    first = await enqueue_premix_funds("u1", 42, 2.5, options, settings=settings)

    again = await enqueue_premix_funds("u1", 42, "2.50", options, settings=settings)

    assert first.success is True and first.message.endswith(f"queued as job {first.job_id}")
    assert (again.success, again.job_id) == (True, first.job_id)
    assert again.message == already_accepted(first.job_id)
    assert await queued_jobs(redis_client) == [first.job_id]
    assert len([key async for key in redis_client.scan_iter("arq:job:*")]) == 1
    redis_key = idempotency_key("u1", "tg-update-81734")
    stored = (await redis_client.get(redis_key)).decode()
    assert stored.startswith(f"{first.job_id} ") and len(stored.split(" ")[1]) == 64
    assert IDEMPOTENCY_KEY_SECONDS - 2 <= await redis_client.ttl(redis_key) <= 86_400
    record = json.loads(await redis_client.get(f"arq:job:{first.job_id}"))
    assert record["a"][0]["idempotencyKey"] == "tg-update-81734"


@pytest.mark.parametrize("shortcut", [True, False], ids=["with-read-first", "script-only"])
async def test_twenty_calls_at_once_with_one_key_queue_exactly_one_job(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    monkeypatch: pytest.MonkeyPatch,
    shortcut: bool,
) -> None:
    if not shortcut:  # without enqueue's first read, the Lua script alone must hold
        monkeypatch.setattr(premix.queue, "earlier_answer", no_earlier_answer)
    results = await asyncio.gather(
        *(
            enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k-race"}, settings=settings)
            for _ in range(20)
        )
    )

    job_ids = {result.job_id for result in results}
    assert all(result.success for result in results), [r.message for r in results]
    assert len(job_ids) == 1 and None not in job_ids
    (job_id,) = job_ids
    assert await queued_jobs(redis_client) == [job_id]
    assert len([key async for key in redis_client.scan_iter("arq:job:*")]) == 1
    assert await redis_client.get(USER_LOCK_PREFIX + "u1") == str(job_id).encode()
    messages = sorted(result.message for result in results)
    assert messages.count(already_accepted(job_id)) == 19
    assert f"Premix of 2.5 SOL queued as job {job_id}" in messages


async def test_the_key_answers_before_the_user_busy_check_and_other_keys_are_refused(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    first = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "a"}, settings=settings)

    retried = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "a"}, settings=settings)
    other = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "b"}, settings=settings)
    unkeyed = await enqueue_premix_funds("u1", 42, 2.5, settings=settings)

    assert (retried.success, retried.job_id, retried.message) == (
        True,
        first.job_id,
        already_accepted(first.job_id),
    )
    busy = (
        f"A premix is already queued or running for this user (job {first.job_id}); wait for "
        "it to finish"
    )
    assert (other.success, other.message) == (False, busy)
    assert (unkeyed.success, unkeyed.message) == (False, busy)
    assert await redis_client.exists(idempotency_key("u1", "b")) == 0  # refused: not taken
    assert await queued_jobs(redis_client) == [first.job_id]


async def test_the_same_key_with_other_parameters_is_refused_naming_the_first_job(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    first = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k"}, settings=settings)

    for amount, options in [
        (1, {"idempotencyKey": "k"}),
        (2.5, {"idempotencyKey": "k", "mode": "fast"}),
        (2.5, {"idempotencyKey": "k", "delaySeconds": 60}),
    ]:
        changed = await enqueue_premix_funds("u1", 42, amount, options, settings=settings)

        assert (changed.success, changed.job_id) == (False, None)
        assert changed.message == (
            "Invalid parameters: idempotencyKey was already used with different parameters for "
            f"job {first.job_id}; nothing was enqueued"
        )
    assert await queued_jobs(redis_client) == [first.job_id]


async def test_a_retried_call_gets_its_job_back_even_after_its_wallets_changed(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    first = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k"}, settings=settings)
    await delete_wallets(store, "u1", "buyer")  # a fresh call would now be refused

    retried = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k"}, settings=settings)
    fresh = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k2"}, settings=settings)

    assert (retried.success, retried.job_id) == (True, first.job_id)
    assert fresh.message.startswith("No buyer wallets found: user u1 has no buyer wallets")
    assert await queued_jobs(redis_client) == [first.job_id]


async def test_a_key_is_per_user_and_any_printable_key_is_hashed_into_the_redis_key(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    key = 'a b:c*?[x]{"}\\ '
    one = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": key}, settings=settings)
    two = await enqueue_premix_funds("u2", 43, 2.5, {"idempotency_key": key}, settings=settings)

    assert one.success and two.success and one.job_id != two.job_id
    assert sorted(await queued_jobs(redis_client)) == sorted([one.job_id, two.job_id])
    assert sorted([k.decode() async for k in redis_client.scan_iter("premix:idempotency:*")]) == [
        idempotency_key("u1", key),
        idempotency_key("u2", key),
    ]


async def test_a_scheduled_premix_keeps_its_key_for_its_wait_plus_24_hours(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    options = {"idempotencyKey": "k", "delaySeconds": 3_600}
    first = await enqueue_premix_funds("u1", 42, 2.5, options, settings=settings)

    again = await enqueue_premix_funds("u1", 42, 2.5, options, settings=settings)

    assert again.job_id == first.job_id and again.message == already_accepted(first.job_id)
    ttl = await redis_client.ttl(idempotency_key("u1", "k"))
    assert 3_600 + IDEMPOTENCY_KEY_SECONDS - 2 <= ttl <= 3_600 + IDEMPOTENCY_KEY_SECONDS


async def test_a_refused_call_takes_no_key_and_a_later_one_with_it_is_queued(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    busy = await enqueue_premix_funds("u1", 42, 2.5, settings=settings)
    refused = await enqueue_premix_funds("u1", 42, 1, {"idempotencyKey": "k"}, settings=settings)
    assert refused.success is False and refused.message.startswith("A premix is already queued")
    assert await redis_client.exists(idempotency_key("u1", "k")) == 0
    await redis_client.delete(USER_LOCK_PREFIX + "u1", f"arq:job:{busy.job_id}")
    await redis_client.zrem(QUEUE_NAME, str(busy.job_id))

    later = await enqueue_premix_funds("u1", 42, 1, {"idempotencyKey": "k"}, settings=settings)

    assert (
        later.success is True and later.message == f"Premix of 1 SOL queued as job {later.job_id}"
    )
    assert await queued_jobs(redis_client) == [later.job_id]


async def test_an_enqueue_undone_after_a_lost_reply_frees_its_key_for_the_retry(
    settings: Settings, store: Store, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = premix.queue._lock_and_enqueue

    async def reply_lost(*args: Any, **kwargs: Any) -> tuple[int, str | None]:
        await real(*args, **kwargs)  # the script ran; its answer never arrives
        raise RedisConnectionError("connection lost")

    monkeypatch.setattr(premix.queue, "_lock_and_enqueue", reply_lost)
    lost = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k"}, settings=settings)
    monkeypatch.undo()

    assert (lost.success, lost.message) == (
        False,
        "Queue unavailable: could not reach Redis; nothing was enqueued",
    )
    assert [key async for key in redis_client.scan_iter("premix:*")] == []  # no key, no lock
    assert await queued_jobs(redis_client) == []
    retried = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k"}, settings=settings)
    assert retried.success is True
    assert retried.message == f"Premix of 2.5 SOL queued as job {retried.job_id}"
    assert await queued_jobs(redis_client) == [retried.job_id]


async def test_a_lost_reply_of_a_job_a_worker_already_took_is_answered_queued_not_undone(
    settings: Settings, store: Store, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the script ran and a worker took the job before the undo (arq polls every 50 ms): undoing
    # would free the lock and the key, and the bot's retried call would queue a second premix
    real = premix.queue._lock_and_enqueue
    taken: list[str] = []

    async def reply_lost_after_pickup(*args: Any, **kwargs: Any) -> tuple[int, str | None]:
        await real(*args, **kwargs)
        job_id = args[3]
        await redis_client.set(in_progress_key_prefix + job_id, b"1", px=60_000)  # a worker
        taken.append(job_id)
        raise RedisConnectionError("connection lost")

    monkeypatch.setattr(premix.queue, "_lock_and_enqueue", reply_lost_after_pickup)
    first = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k"}, settings=settings)
    monkeypatch.undo()
    retried = await enqueue_premix_funds("u1", 42, 2.5, {"idempotencyKey": "k"}, settings=settings)
    other = await enqueue_premix_funds("u1", 42, 1, settings=settings)

    [job_id] = taken
    assert (first.success, first.job_id) == (True, job_id)
    assert first.message == f"Premix of 2.5 SOL queued as job {job_id}"
    assert await redis_client.get(f"arq:job:{job_id}") is not None  # left for its worker
    assert await redis_client.get(USER_LOCK_PREFIX + "u1") == job_id.encode()
    assert (retried.success, retried.job_id) == (True, job_id)  # the same premix, not a second
    assert other.success is False and other.message.startswith("A premix is already queued")


async def test_an_idempotent_enqueue_costs_one_read_more_and_a_repeat_only_that_read(
    settings: Settings, store: Store, counting_redis: Redis
) -> None:
    options = {"idempotencyKey": "k"}
    first = await enqueue_premix_funds(
        "u1", 42, 2.5, options, settings=settings, redis=counting_redis
    )
    assert first.success is True
    assert CountingConnection.sent <= 3  # the GET, then the script (EVAL) as without a key
    CountingConnection.sent = 0

    again = await enqueue_premix_funds(
        "u1", 42, 2.5, options, settings=settings, redis=counting_redis
    )

    assert again.job_id == first.job_id
    assert CountingConnection.sent == 1  # answered from the GET: no script, no store read
