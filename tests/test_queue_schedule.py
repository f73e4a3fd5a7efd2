"""Scheduled premixes (issue 15, SPEC section 13): `runAt` and `delaySeconds` defer the job in
arq (its queue score is the run time in ms), the job record and the user lock outlive the wait,
a time in the past or more than 30 days ahead is refused with nothing on Redis, and the
receipt says when it is due. On `memory://` and on the session's MongoDB-wire server.

That a worker does not start it early: tests/worker/test_worker_schedule.py."""

import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from premix.constants import QUEUE_NAME, USER_LOCK_PREFIX
from premix.queue import (
    QUEUED_JOB_EXPIRY_SECONDS,
    enqueue_premix_funds,
    get_premix_result,
)
from premix.scheduling import format_run_time
from premix.settings import Settings
from premix.store import Store
from tests.worker.helpers import create_user, open_store, settings_on_store

DAY_MS = 86_400_000


pytestmark = pytest.mark.usefixtures("closed_queue_pools")


@pytest.fixture(params=["memory", "mongodb"])
def settings(request: pytest.FixtureRequest, redis_url: str) -> Settings:
    return settings_on_store(request, redis_url, database_prefix="premix_schedule")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with open_store(settings) as opened:
        await create_user(opened, None, "u1", buyers=5)
        yield opened


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def whole_seconds_from_now(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(time.time()) + seconds, UTC)


async def assert_deferred_until(redis: Redis, job_id: str, run_at_ms: int) -> None:
    """The queue score is the run time; the job record lasts the wait plus arq's 24 h, the
    user lock the wait plus its queued expiry (both counted from the enqueue time)."""
    assert await redis.zscore(QUEUE_NAME, job_id) == run_at_ms
    record = json.loads(await redis.get(f"arq:job:{job_id}"))
    wait_ms = run_at_ms - record["et"]  # `et`: arq's enqueue time in ms
    assert wait_ms > 0
    job_ttl_ms = await redis.pttl(f"arq:job:{job_id}")
    assert wait_ms + DAY_MS - 2_000 <= job_ttl_ms <= wait_ms + DAY_MS
    lock_ttl = await redis.ttl(USER_LOCK_PREFIX + "u1")
    expected_lock_ttl = -(-wait_ms // 1000) + QUEUED_JOB_EXPIRY_SECONDS
    assert expected_lock_ttl - 2 <= lock_ttl <= expected_lock_ttl
    assert await redis.get(USER_LOCK_PREFIX + "u1") == job_id.encode()


async def test_run_at_defers_the_job_until_then_and_the_record_and_lock_outlive_the_wait(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    run_at = whole_seconds_from_now(3 * 86_400)

    result = await enqueue_premix_funds("u1", 42, 2.5, {"runAt": iso(run_at)}, settings=settings)

    assert result.success is True, result.message
    assert result.message == f"Premix of 2.5 SOL scheduled for {iso(run_at)} as job {result.job_id}"
    job_id = str(result.job_id)
    await assert_deferred_until(redis_client, job_id, int(run_at.timestamp()) * 1000)
    record = json.loads(await redis_client.get(f"arq:job:{job_id}"))
    assert record["a"][0]["runAt"] == iso(run_at)
    assert "delaySeconds" not in record["a"][0] and "idempotencyKey" not in record["a"][0]


@pytest.mark.parametrize("zone", ["+01:00", "-05:30"])
async def test_a_run_at_in_another_zone_is_the_same_instant(
    settings: Settings, store: Store, redis_client: Redis, zone: str
) -> None:
    run_at = whole_seconds_from_now(86_400)
    offset = timedelta(hours=int(zone[:3]), minutes=int(zone[0] + zone[4:]))
    local = (run_at + offset).strftime("%Y-%m-%dT%H:%M:%S") + zone

    result = await enqueue_premix_funds("u1", 42, 2.5, {"run_at": local}, settings=settings)

    assert result.message == f"Premix of 2.5 SOL scheduled for {iso(run_at)} as job {result.job_id}"
    await assert_deferred_until(redis_client, str(result.job_id), int(run_at.timestamp()) * 1000)


async def test_run_at_as_epoch_milliseconds(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    run_at_ms = int(time.time() * 1000) + 3_600_000 + 250

    result = await enqueue_premix_funds("u1", 42, "2.5", {"runAt": run_at_ms}, settings=settings)

    assert result.message == (
        f"Premix of 2.5 SOL scheduled for {format_run_time(run_at_ms)} as job {result.job_id}"
    )
    assert format_run_time(run_at_ms).endswith(f".{run_at_ms % 1000:03d}Z")
    await assert_deferred_until(redis_client, str(result.job_id), run_at_ms)


async def test_delay_seconds_defers_the_job_by_that_long_from_the_enqueue(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    before_ms = int(time.time() * 1000)
    result = await enqueue_premix_funds("u1", 42, 2.5, {"delaySeconds": 600}, settings=settings)
    after_ms = int(time.time() * 1000)

    assert result.success is True, result.message
    job_id = str(result.job_id)
    score = int(await redis_client.zscore(QUEUE_NAME, job_id))
    assert before_ms + 600_000 <= score <= after_ms + 600_000 + 1
    assert result.message == (
        f"Premix of 2.5 SOL scheduled for {format_run_time(score)} as job {job_id}"
    )
    await assert_deferred_until(redis_client, job_id, score)
    record = json.loads(await redis_client.get(f"arq:job:{job_id}"))
    assert record["a"][0]["delaySeconds"] == 600 and "runAt" not in record["a"][0]


async def test_a_run_at_within_the_minute_past_is_queued_to_run_now(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    just_past = datetime.now(UTC) - timedelta(seconds=20)
    before_ms = int(time.time() * 1000)

    result = await enqueue_premix_funds(
        "u1", 42, 2.5, {"runAt": just_past.isoformat()}, settings=settings
    )

    assert result.message == f"Premix of 2.5 SOL queued as job {result.job_id}"
    score = await redis_client.zscore(QUEUE_NAME, str(result.job_id))
    assert score is not None and before_ms <= score <= time.time() * 1000  # due now, not earlier
    assert 0 < await redis_client.ttl(USER_LOCK_PREFIX + "u1") <= QUEUED_JOB_EXPIRY_SECONDS


def limit_in(message: str) -> datetime:
    found = re.search(r"\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)$", message)
    assert found is not None, message
    return datetime.fromisoformat(found.group(1))


async def test_a_run_at_more_than_30_days_ahead_is_refused_naming_the_limit(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    before = whole_seconds_from_now(0)
    too_late = datetime.now(UTC) + timedelta(days=30, minutes=5)

    result = await enqueue_premix_funds("u1", 42, 2.5, {"runAt": iso(too_late)}, settings=settings)

    assert (result.success, result.job_id) == (False, None)
    assert result.message.startswith("Invalid parameters: runAt: must be at most 30 days ahead (")
    assert (
        before + timedelta(days=30)
        <= limit_in(result.message)
        <= datetime.now(UTC) + (timedelta(days=30))
    )
    await assert_nothing_on_redis(redis_client)


async def test_a_run_at_in_the_past_is_refused(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    result = await enqueue_premix_funds(
        "u1", 42, 2.5, {"runAt": "2026-01-01T00:00:00Z"}, settings=settings
    )

    assert (result.success, result.job_id) == (False, None)
    assert re.fullmatch(
        r"Invalid parameters: runAt: must not be in the past \(it is "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ now\)",
        result.message,
    ), result.message
    await assert_nothing_on_redis(redis_client)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"runAt": "2026-12-24T18:00:00"},
            "Invalid parameters: runAt: must name its time zone (e.g. 2026-12-24T18:00:00Z or "
            "2026-12-24T19:00:00+01:00)",
        ),
        (
            {"runAt": "2099-12-24T18:00:00Z", "delaySeconds": 60},
            "Invalid parameters: delaySeconds: cannot be combined with runAt; give at most one "
            "of them",
        ),
        (
            {"delaySeconds": True},
            "Invalid parameters: delaySeconds: must be a number of seconds (an int or a float)",
        ),
        ({"delaySeconds": 0}, "Invalid parameters: delaySeconds: must be more than 0 seconds"),
        (
            {"delaySeconds": 31 * 86_400},
            "Invalid parameters: delaySeconds: must be at most 2592000 (30 days)",
        ),
    ],
)
async def test_a_bad_schedule_is_refused_with_nothing_on_redis(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    options: dict[str, Any],
    expected: str,
) -> None:
    result = await enqueue_premix_funds("u1", 42, 2.5, options, settings=settings)

    assert (result.success, result.message, result.job_id) == (False, expected, None)
    await assert_nothing_on_redis(redis_client)


async def test_a_scheduled_premix_keeps_the_user_busy_until_it_ran(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    first = await enqueue_premix_funds("u1", 42, 2.5, {"delaySeconds": 3_600}, settings=settings)

    second = await enqueue_premix_funds("u1", 42, 1, settings=settings)

    assert second.message == (
        f"A premix is already queued or running for this user (job {first.job_id}); wait for "
        "it to finish"
    )
    assert await redis_client.zcard(QUEUE_NAME) == 1


async def test_the_receipt_of_a_scheduled_premix_says_when_it_is_due(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    run_at = whole_seconds_from_now(7 * 86_400)
    result = await enqueue_premix_funds("u1", 42, 2.5, {"runAt": iso(run_at)}, settings=settings)

    receipt = await get_premix_result(str(result.job_id), settings=settings)

    assert receipt is not None
    assert (receipt["status"], receipt["source"]) == ("deferred", "queue")
    assert receipt["message"] == (
        f"Job {result.job_id} is scheduled for {iso(run_at)}; nothing sent yet"
    )


async def assert_nothing_on_redis(redis: Redis) -> None:
    assert await redis.exists(USER_LOCK_PREFIX + "u1") == 0
    assert await redis.zcard(QUEUE_NAME) == 0
    assert [key async for key in redis.scan_iter("arq:*")] == []
    assert [key async for key in redis.scan_iter("premix:idempotency:*")] == []
