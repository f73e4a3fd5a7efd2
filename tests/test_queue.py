"""Enqueue: validated JSON jobs on the arq queue, one premix per user, never raises."""

import json
import pickle
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

from premix.constants import JOB_FUNCTION, QUEUE_NAME, USER_LOCK_PREFIX
from premix.jobs import PremixOptions
from premix.queue import (
    QUEUE_MISCONFIGURED,
    QUEUE_UNAVAILABLE,
    QUEUED_JOB_EXPIRY_SECONDS,
    enqueue_premix_funds,
    queue_pool,
)
from premix.serialization import DeserializationError, job_deserializer, job_serializer
from premix.settings import Settings, get_settings
from premix.user_lock import refresh_user_lock, release_user_lock, user_lock_holder
from tests.worker.helpers import create_user, make_settings, open_store

ARQ_JOB_PREFIX = "arq:job:"


pytestmark = pytest.mark.usefixtures("closed_queue_pools")


# Users these tests enqueue for; each has a funding wallet and 20 buyer wallets in the store.
USERS = ("u1", "u2", "user_7", "123456")


@pytest.fixture
async def settings(redis_url: str) -> AsyncIterator[Settings]:
    """Settings on the test Redis and a fresh `memory://` store holding `USERS`' wallets
    (enqueue refuses a user without them; tests/test_queue_wallets.py)."""
    settings = make_settings(redis_url, user_lock_ttl_seconds=600, job_timeout_seconds=300)
    async with open_store(settings) as store:
        for user_id in USERS:
            await create_user(store, None, user_id, buyers=20)
        yield settings


async def queued_job(redis: Redis, job_id: str) -> dict[str, Any]:
    """The raw arq job record as stored in Redis, parsed as JSON."""
    raw = await redis.get(ARQ_JOB_PREFIX + job_id)
    assert raw is not None
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


async def test_valid_job_lands_on_the_queue_as_json(
    settings: Settings, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)

    assert result.success is True
    assert result.job_id is not None
    assert result.message == f"Premix of 0.5 SOL queued as job {result.job_id}"
    record = await queued_job(redis_client, result.job_id)
    assert record["f"] == JOB_FUNCTION
    assert record["a"] == [
        {
            "userId": "u1",
            "userChatId": 42,
            "mixAmount": "0.5",
            "maxWallets": None,
            "mode": "standard",
            "socketUserId": None,
        }
    ]
    assert record["k"] == {}
    assert await redis_client.zrange(QUEUE_NAME, 0, -1) == [result.job_id.encode()]


async def test_job_id_is_premix_user_unix_ms_and_holds_the_user_lock(
    settings: Settings, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds("user_7", 42, "1", settings=settings)
    assert result.job_id is not None
    assert re.fullmatch(r"premix-user_7-\d{13}", result.job_id)
    assert await user_lock_holder(redis_client, "user_7") == result.job_id
    # While queued the marker lasts as long as arq keeps the job (a backlog cannot outlast it);
    # the worker shortens it to user_lock_ttl_seconds once the job runs.
    ttl = await redis_client.ttl(USER_LOCK_PREFIX + "user_7")
    assert QUEUED_JOB_EXPIRY_SECONDS - 10 < ttl <= QUEUED_JOB_EXPIRY_SECONDS


@pytest.mark.parametrize(
    "options",
    [
        {"maxWallets": 20, "mode": "fast", "socketUserId": "socket123"},
        {"max_wallets": 20, "mode": "fast", "socket_user_id": "socket123"},
        PremixOptions(max_wallets=20, mode="fast", socket_user_id="socket123"),
    ],
)
async def test_options_in_camel_or_snake_case_or_as_a_model_reach_the_payload(
    options: Any, settings: Settings, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds(123456, -1001, 1.0, options, settings=settings)
    assert result.success is True
    assert result.job_id is not None
    (payload,) = (await queued_job(redis_client, result.job_id))["a"]
    assert payload == {
        "userId": "123456",
        "userChatId": -1001,
        "mixAmount": "1",
        "maxWallets": 20,
        "mode": "fast",
        "socketUserId": "socket123",
    }


BAD_INPUTS = [
    (("u1", 42, 0), "mixAmount: must be greater than 0 SOL"),
    (("u1", 42, -1), "mixAmount: must be greater than 0 SOL"),
    (("u1", 42, "abc"), "mixAmount: must be a number of SOL"),
    (("u1", 42, float("nan")), "mixAmount: must be a finite number of SOL"),
    (("u1", 42, float("inf")), "mixAmount: must be a finite number of SOL"),
    (("u1", 42, True), "mixAmount: must be a number of SOL, not a boolean"),
    (("u1", 42, "1.0000000001"), "mixAmount: has more than 9 decimals"),
    (("u1", 42, None), "mixAmount: must be a number of SOL"),
    (("u1", 42, "0.001"), "mixAmount: Amount 0.001 SOL is below the per-wallet minimum"),
    (
        ("u1", 42, 86),
        "mixAmount: Amount 86 SOL is more than 73 buyer wallets can hold (at most 85 SOL)",
    ),
    (
        ("u1", 42, 3, {"maxWallets": 5}),
        "mixAmount: Amount 3 SOL is more than 5 buyer wallets can hold (at most 2.5 SOL)",
    ),
    ((None, 42, 1), "userId: "),
    (("", 42, 1), "userId: "),
    (({"$ne": 1}, 42, 1), "userId: "),
    (("u1", "42", 1), "userChatId: must be an integer Telegram chat id"),
    (("u1", True, 1), "userChatId: must be an integer Telegram chat id"),
    (("u1", 42, 1, {"maxWallets": 0}), "maxWallets: must be a whole number from 1 to 73"),
    (("u1", 42, 1, {"maxWallets": 74}), "maxWallets: must be a whole number from 1 to 73"),
    (("u1", 42, 1, {"max_wallets": "20"}), "maxWallets: must be a whole number from 1 to 73"),
    (("u1", 42, 1, {"mode": "turbo"}), "mode: "),
    (("u1", 42, 1, {"privacy": True}), "privacy: unknown field"),
    (("u1", 42, 1, {"socketUserId": ""}), "socketUserId: "),
    (("u1", 42, 1, [1]), "options must be a PremixOptions or a dict, not list"),
]


@pytest.mark.parametrize(("arguments", "expected"), BAD_INPUTS)
async def test_bad_input_is_refused_naming_the_field_and_enqueues_nothing(
    arguments: tuple[Any, ...], expected: str, settings: Settings, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds(*arguments, settings=settings)
    assert result.success is False
    assert result.job_id is None
    assert result.message.startswith(f"Invalid parameters: {expected}")
    assert await redis_client.dbsize() == 0


async def test_second_enqueue_for_the_same_user_is_refused_until_the_lock_is_released(
    settings: Settings, redis_client: Redis
) -> None:
    first = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)
    assert first.job_id is not None

    second = await enqueue_premix_funds("u1", 42, 1.0, {"mode": "fast"}, settings=settings)
    assert second == type(second)(
        success=False,
        message=f"A premix is already queued or running for this user (job {first.job_id}); "
        "wait for it to finish",
    )
    assert await redis_client.zcard(QUEUE_NAME) == 1

    other_user = await enqueue_premix_funds("u2", 43, 0.5, settings=settings)
    assert other_user.success is True

    assert await release_user_lock(redis_client, "u1", first.job_id) is True
    third = await enqueue_premix_funds("u1", 42, 1.0, settings=settings)
    assert third.success is True
    assert third.job_id != first.job_id
    assert await redis_client.zcard(QUEUE_NAME) == 3


async def test_lock_is_released_only_by_the_job_holding_it(redis_client: Redis) -> None:
    await redis_client.set(USER_LOCK_PREFIX + "u1", "premix-u1-1")
    assert await release_user_lock(redis_client, "u1", "premix-u1-2") is False
    assert await user_lock_holder(redis_client, "u1") == "premix-u1-1"
    assert await release_user_lock(redis_client, "u1", "premix-u1-1") is True
    assert await user_lock_holder(redis_client, "u1") is None


async def test_refresh_extends_the_holders_lock_retakes_an_expired_one_refuses_others(
    redis_client: Redis,
) -> None:
    key = USER_LOCK_PREFIX + "u1"
    await redis_client.set(key, "premix-u1-1", ex=10)
    assert await refresh_user_lock(redis_client, "u1", "premix-u1-1", 500) is True
    assert 10 < await redis_client.ttl(key) <= 500

    assert await refresh_user_lock(redis_client, "u1", "premix-u1-2", 500) is False
    assert await user_lock_holder(redis_client, "u1") == "premix-u1-1"

    await redis_client.delete(key)  # as if it expired while the job ran
    assert await refresh_user_lock(redis_client, "u1", "premix-u1-1", 500) is True
    assert await user_lock_holder(redis_client, "u1") == "premix-u1-1"
    assert 0 < await redis_client.ttl(key) <= 500


async def test_unreachable_redis_returns_a_clear_failure_without_raising(
    unreachable_redis_url: str, settings: Settings
) -> None:
    settings = settings.model_copy(update={"redis_url": unreachable_redis_url})
    result = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)
    assert result.success is False
    assert result.job_id is None
    assert result.message == QUEUE_UNAVAILABLE


async def test_a_redis_url_that_is_not_one_is_refused_without_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("PREMIX_REDIS_URL", "nonsense")
    try:
        result = await enqueue_premix_funds("u1", 42, 0.5)
    finally:
        get_settings.cache_clear()
    assert (result.success, result.job_id, result.message) == (False, None, QUEUE_MISCONFIGURED)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PREMIX_MIN_WALLET_SOL", "0.0001"),  # below the rent-exempt minimum
        ("PREMIX_TIER_CAPS_SOL", "[0.5, 1"),  # JSON pydantic-settings cannot decode
    ],
)
async def test_invalid_environment_settings_are_refused_without_raising(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv(name, value)
    try:
        result = await enqueue_premix_funds("u1", 42, 0.5)
    finally:
        get_settings.cache_clear()
    assert (result.success, result.job_id, result.message) == (False, None, QUEUE_MISCONFIGURED)


async def test_failed_enqueue_after_taking_the_lock_releases_it(
    settings: Settings, redis_client: Redis
) -> None:
    await redis_client.set(QUEUE_NAME, "not a sorted set")  # makes arq's ZADD fail

    result = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)

    assert result.success is False
    assert result.message == (
        "Queue unavailable: Redis refused the job (ResponseError); nothing was enqueued"
    )
    assert await user_lock_holder(redis_client, "u1") is None
    assert await redis_client.keys(ARQ_JOB_PREFIX + "*") == []  # no half-written job left


async def test_a_plain_redis_client_still_enqueues_json(
    settings: Settings, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds("u1", 42, 0.5, settings=settings, redis=redis_client)
    assert result.job_id is not None
    assert (await queued_job(redis_client, result.job_id))["a"][0]["mixAmount"] == "0.5"


async def test_the_pool_is_created_once_and_reused(settings: Settings) -> None:
    first = queue_pool(settings.redis_url)
    await enqueue_premix_funds("u1", 42, 0.5, settings=settings)
    await enqueue_premix_funds("u2", 42, 0.5, settings=settings)
    assert queue_pool(settings.redis_url) is first
    assert first.job_serializer is job_serializer


class _CreatesFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (str(self.path),))  # type: ignore[return-value]


def test_pickle_payload_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(
        {"f": JOB_FUNCTION, "a": [_CreatesFileWhenUnpickled(marker)], "k": {}, "t": 1, "et": 0}
    )
    # The payload is a real exploit: unpickling it would create the file.
    pickle.loads(pickle.dumps(_CreatesFileWhenUnpickled(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()

    with pytest.raises(DeserializationError) as raised:
        job_deserializer(payload)
    assert raised.value.__cause__ is not None
    assert not marker.exists()


@pytest.mark.parametrize(
    "raw", [b"[1, 2]", b'"text"', b"{not json", b'{"a": NaN}', b"\xff\xfe\x00"]
)
def test_anything_but_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(DeserializationError):
        job_deserializer(raw)


def test_job_records_and_failed_results_round_trip_as_json() -> None:
    record = {"t": 1, "f": JOB_FUNCTION, "a": [{"userId": "u1"}], "k": {}, "et": 1}
    assert job_deserializer(job_serializer(record)) == record
    failed = job_deserializer(job_serializer({"s": False, "r": RuntimeError("rpc down")}))
    assert failed == {"s": False, "r": {"error": "RuntimeError", "message": "rpc down"}}


class CountingConnection(Connection):
    """A Redis connection counting what it sends: each send is one round trip."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counting_redis(redis_url: str) -> AsyncIterator[Redis]:
    client: Redis = Redis(
        connection_pool=ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    )
    await client.ping()  # connected: the handshake is not counted
    CountingConnection.sent = 0
    try:
        yield client
    finally:
        await client.aclose()


async def test_an_enqueue_takes_the_lock_and_queues_the_job_in_at_most_2_round_trips(
    settings: Settings, counting_redis: Redis, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds("u1", 42, 0.5, settings=settings, redis=counting_redis)

    assert result.success, result.message
    assert CountingConnection.sent <= 2
    assert result.job_id is not None
    assert await user_lock_holder(redis_client, "u1") == result.job_id
    record = await queued_job(redis_client, result.job_id)
    assert (record["f"], record["t"], record["k"]) == (JOB_FUNCTION, None, {})
    assert await redis_client.zscore(QUEUE_NAME, result.job_id) == record["et"]
    ttl_ms = await redis_client.pttl(ARQ_JOB_PREFIX + result.job_id)
    assert QUEUED_JOB_EXPIRY_SECONDS * 1000 - 60_000 < ttl_ms <= QUEUED_JOB_EXPIRY_SECONDS * 1000


async def test_a_refused_enqueue_names_the_holder_in_at_most_2_round_trips(
    settings: Settings, counting_redis: Redis
) -> None:
    first = await enqueue_premix_funds("u1", 42, 0.5, settings=settings, redis=counting_redis)
    CountingConnection.sent = 0

    second = await enqueue_premix_funds("u1", 42, 0.5, settings=settings, redis=counting_redis)

    assert CountingConnection.sent <= 2
    assert second.success is False
    assert second.message == (
        f"A premix is already queued or running for this user (job {first.job_id}); "
        "wait for it to finish"
    )


async def test_a_job_id_arq_already_knows_is_refused_without_taking_the_lock(
    settings: Settings, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("premix.queue.new_job_id", lambda user_id: "premix-u1-1")
    await redis_client.set("arq:result:premix-u1-1", b"{}")

    result = await enqueue_premix_funds("u1", 42, 0.5, settings=settings)

    assert result.success is False
    assert result.message == "A job with id premix-u1-1 already exists; nothing was enqueued"
    assert await user_lock_holder(redis_client, "u1") is None
    assert await redis_client.zcard(QUEUE_NAME) == 0
