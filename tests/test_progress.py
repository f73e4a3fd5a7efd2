"""Progress: the six phases of SPEC section 3, on pub/sub and in a latest-state key."""

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from solders.keypair import Keypair

from premix.constants import PROGRESS_ALL_CHANNEL, PROGRESS_STATE_PREFIX
from premix.jobs import PremixFundsJob
from premix.progress import (
    Phase,
    ProgressEmitter,
    ProgressEvent,
    ProgressStatus,
    latest_progress,
    progress_channel,
    subscribe_progress,
)
from premix.settings import Settings

JOB_ID = "premix-u1-1700000000000"
SPEC_PHASES = [
    (1, "Job Started", 10),
    (2, "Validating Parameters", 20),
    (3, "Calculating Distribution", 35),
    (4, "Checking Balances", 50),
    (5, "Initializing Mixer", 70),
    (6, "Premix Complete", 100),
]


@pytest.fixture
def job() -> PremixFundsJob:
    return PremixFundsJob.from_request("u1", 42, "0.5", {"socketUserId": "sock-1"})


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, progress_ttl_seconds=321)


async def run_all_phases(emitter: ProgressEmitter) -> None:
    await emitter.started()
    await emitter.phase(Phase.VALIDATING_PARAMETERS, description="Checking wallets")
    await emitter.phase(Phase.CALCULATING_DISTRIBUTION, description="Planning 12 wallets")
    await emitter.phase(Phase.CHECKING_BALANCES, description="Funding balance is enough")
    await emitter.phase(Phase.INITIALIZING_MIXER, description="Sending transfers")
    await emitter.completed("Funded 12 wallets", wallets_funded=12)


async def wait_for_subscriber(redis: Redis, channel: str) -> None:
    async with asyncio.timeout(5):
        while dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0) < 1:
            await asyncio.sleep(0.005)


def test_phase_table_matches_the_spec() -> None:
    assert [(p.value, p.title, p.percent) for p in Phase] == SPEC_PHASES


async def test_each_event_is_published_on_both_channels_and_stored_with_ttl(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    listener = redis_client.pubsub()
    await listener.subscribe(progress_channel(JOB_ID), PROGRESS_ALL_CHANNEL)
    emitter = ProgressEmitter(redis_client, settings, JOB_ID, job)

    event = await emitter.phase(Phase.CHECKING_BALANCES, description="Funding balance is enough")

    received: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(5):
        while len(received) < 2:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                received[message["channel"].decode()] = json.loads(message["data"])
    await listener.aclose()
    assert received[progress_channel(JOB_ID)] == received[PROGRESS_ALL_CHANNEL]
    wire = received[PROGRESS_ALL_CHANNEL]
    assert wire == {
        "jobId": JOB_ID,
        "jobType": "premix_funds",
        "userId": "u1",
        "chatId": 42,
        "socketUserId": "sock-1",
        "phase": 4,
        "totalPhases": 6,
        "title": "Checking Balances",
        "description": "Funding balance is enough",
        "percent": 50,
        "status": "in_progress",
        "timestamp": wire["timestamp"],
        "sequence": 1,
        "details": None,
        "startedAt": wire["timestamp"],  # the job's first event: the job began now
    }
    assert wire["timestamp"].endswith("Z")
    assert ProgressEvent.model_validate(wire) == event

    state_key = PROGRESS_STATE_PREFIX + JOB_ID
    assert json.loads(await redis_client.get(state_key)) == wire
    assert 0 < await redis_client.ttl(state_key) <= 321


async def test_subscriber_receives_the_six_phases_in_order_and_ends_on_completion(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    async def collect() -> list[ProgressEvent]:
        return [event async for event in subscribe_progress(redis_client, JOB_ID)]

    reader = asyncio.create_task(collect())
    await wait_for_subscriber(redis_client, progress_channel(JOB_ID))
    await run_all_phases(ProgressEmitter(redis_client, settings, JOB_ID, job))

    async with asyncio.timeout(5):
        events = await reader
    assert [(e.phase, e.title, e.percent) for e in events] == SPEC_PHASES
    assert [e.status for e in events] == ["started"] + ["in_progress"] * 4 + ["completed"]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].details == {"wallets_funded": 12}


async def test_late_reader_gets_the_latest_state_and_ends_if_the_job_finished(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    await run_all_phases(ProgressEmitter(redis_client, settings, JOB_ID, job))

    latest = await latest_progress(redis_client, JOB_ID)
    assert latest is not None
    assert (latest.phase, latest.status, latest.percent) == (6, ProgressStatus.COMPLETED, 100)
    async with asyncio.timeout(5):
        events = [event async for event in subscribe_progress(redis_client, JOB_ID)]
    assert events == [latest]


async def test_reader_joining_mid_run_starts_at_the_latest_state_without_duplicates(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await emitter.started()
    await emitter.phase(Phase.VALIDATING_PARAMETERS)

    async def collect() -> list[ProgressEvent]:
        return [event async for event in subscribe_progress(redis_client, JOB_ID)]

    reader = asyncio.create_task(collect())
    await wait_for_subscriber(redis_client, progress_channel(JOB_ID))
    await emitter.phase(Phase.CALCULATING_DISTRIBUTION)
    await emitter.failed(None, "Insufficient funding wallet balance: needed 1 SOL, available 0 SOL")

    async with asyncio.timeout(5):
        events = await reader
    assert [(e.phase, e.status) for e in events] == [
        (2, "in_progress"),
        (3, "in_progress"),
        (3, "failed"),
    ]


async def test_unknown_job_has_no_latest_state(redis_client: Redis) -> None:
    assert await latest_progress(redis_client, "premix-nobody-1") is None


async def test_mixer_sub_progress_stays_between_70_and_99(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, settings, JOB_ID, job)
    percents = [(await emitter.mixer_progress(done, 73)).percent for done in (0, 1, 36, 72, 73)]
    assert percents == [70, 70, 84, 98, 99]
    latest = await latest_progress(redis_client, JOB_ID)
    assert latest is not None
    assert latest.details == {"done": 73, "total": 73}
    assert latest.description == "73 of 73 wallets funded"
    noted = await emitter.mixer_progress(73, 73, "transaction 73 confirmed")
    assert noted.description == "73 of 73 wallets funded (transaction 73 confirmed)"


async def test_failed_event_keeps_the_percent_where_the_job_stopped(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await emitter.phase(Phase.INITIALIZING_MIXER)
    await emitter.mixer_progress(10, 20)
    event = await emitter.failed(Phase.INITIALIZING_MIXER, "Mixer operation failed: x")
    assert (event.phase, event.status, event.percent) == (5, ProgressStatus.FAILED, 84)
    assert event.is_terminal


async def test_a_retried_job_continues_the_event_sequence(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    first_attempt = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await first_attempt.started()
    await first_attempt.phase(Phase.VALIDATING_PARAMETERS)

    retry = ProgressEmitter(redis_client, settings, JOB_ID, job)
    event = await retry.started("Resuming")
    assert event.sequence == 3


async def test_percent_never_decreases_within_a_try_or_across_tries(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    first_try = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await first_try.started()
    await first_try.phase(Phase.INITIALIZING_MIXER)
    stopped = await first_try.mixer_progress(55, 73)
    assert stopped.percent == 91
    # within a try: an event of an earlier phase does not pull the percent back
    assert (await first_try.phase(Phase.CHECKING_BALANCES)).percent == 91

    second_try = ProgressEmitter(redis_client, settings, JOB_ID, job)
    resumed = [
        await second_try.started("Resuming premix job"),
        await second_try.phase(Phase.VALIDATING_PARAMETERS),
        await second_try.phase(Phase.CHECKING_BALANCES),
        await second_try.mixer_progress(0, 73),
        await second_try.mixer_progress(70, 73),
    ]
    assert [(e.phase, e.percent) for e in resumed] == [(1, 91), (2, 91), (4, 91), (5, 91), (5, 97)]
    failed = await second_try.failed(None, "Mixer operation failed: x")
    assert (failed.phase, failed.percent) == (5, 97)  # the failure keeps where it stopped

    third_try = ProgressEmitter(redis_client, settings, JOB_ID, job)
    assert (await third_try.phase(Phase.VALIDATING_PARAMETERS)).percent == 97
    assert (await third_try.completed()).percent == 100


async def test_every_event_carries_when_the_job_began_across_tries(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    first_try = ProgressEmitter(redis_client, settings, JOB_ID, job)
    began = await first_try.started()
    later = await first_try.phase(Phase.VALIDATING_PARAMETERS)
    assert began.started_at == began.timestamp
    assert later.started_at == began.timestamp < later.timestamp

    second_try = ProgressEmitter(redis_client, settings, JOB_ID, job)
    resumed = await second_try.started("Resuming premix job")
    finished = await second_try.completed()
    assert resumed.started_at == finished.started_at == began.timestamp
    stored = await latest_progress(redis_client, JOB_ID)
    assert stored is not None and stored.started_at == began.timestamp
    assert json.loads(stored.to_json())["startedAt"].endswith("Z")


async def test_an_event_from_before_started_at_existed_lends_its_timestamp(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    older = await ProgressEmitter(redis_client, settings, JOB_ID, job).started()
    wire = json.loads(older.to_json())
    del wire["startedAt"]  # as an earlier premix version stored it
    await redis_client.set(PROGRESS_STATE_PREFIX + JOB_ID, json.dumps(wire))

    resumed = await ProgressEmitter(redis_client, settings, JOB_ID, job).started("Resuming")
    assert resumed.started_at == older.timestamp


async def test_a_retrying_event_says_which_try_ended_why_and_when_the_next_one_runs(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await emitter.phase(Phase.INITIALIZING_MIXER)
    await emitter.mixer_progress(10, 20)
    next_try_at = datetime(2026, 12, 1, 15, 4, 5, 250_000, tzinfo=UTC)

    event = await emitter.retrying(
        None,
        job_try=1,
        max_tries=3,
        next_try_at=next_try_at,
        reason="Temporary failure: Solana RPC getBalance failed 3 times",
    )

    assert (event.phase, event.title, event.percent) == (5, "Initializing Mixer", 84)
    assert event.status is ProgressStatus.RETRYING and not event.is_terminal
    assert event.description == (
        "Try 1 of 3 ended (Temporary failure: Solana RPC getBalance failed 3 times); "
        "next try at 15:04:05 UTC"
    )
    assert event.details == {
        "jobTry": 1,
        "maxTries": 3,
        "nextTryAt": "2026-12-01T15:04:05.250Z",
    }
    assert json.loads(event.to_json())["status"] == "retrying"


async def test_a_new_tries_retrying_or_failed_event_stays_in_the_phase_the_job_reached(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    first_try = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await first_try.mixer_progress(10, 20)

    retrying = await ProgressEmitter(redis_client, settings, JOB_ID, job).retrying(
        None, job_try=2, max_tries=3, next_try_at=datetime.now(UTC), reason="Temporary failure"
    )
    failed = await ProgressEmitter(redis_client, settings, JOB_ID, job).failed(None, "x")
    assert [(e.phase, e.percent) for e in (retrying, failed)] == [(5, 84), (5, 84)]


async def test_a_subscriber_follows_a_job_through_its_retry_to_the_end(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    async def collect() -> list[ProgressEvent]:
        return [event async for event in subscribe_progress(redis_client, JOB_ID)]

    reader = asyncio.create_task(collect())
    await wait_for_subscriber(redis_client, progress_channel(JOB_ID))
    first_try = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await first_try.phase(Phase.CHECKING_BALANCES)
    await first_try.retrying(
        Phase.CHECKING_BALANCES,
        job_try=1,
        max_tries=2,
        next_try_at=datetime.now(UTC),
        reason="Temporary failure: x",
    )
    await run_all_phases(ProgressEmitter(redis_client, settings, JOB_ID, job))

    async with asyncio.timeout(5):
        events = await reader
    assert [e.status for e in events] == (
        ["in_progress", "retrying", "started"] + ["in_progress"] * 4 + ["completed"]
    )


async def test_event_details_are_redacted(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    emitter = ProgressEmitter(redis_client, settings, JOB_ID, job)
    event = await emitter.phase(
        Phase.VALIDATING_PARAMETERS, details={"private_key": "abc", "wallets": 3}
    )
    assert event.details == {"private_key": "[REDACTED]", "wallets": 3}


async def test_a_secret_in_an_event_description_is_redacted_on_redis(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    secret = str(Keypair())  # base58 of a 64-byte secret key
    emitter = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await emitter.phase(Phase.VALIDATING_PARAMETERS, description=f"bad key {secret}")
    stored = await latest_progress(redis_client, JOB_ID)
    assert stored is not None
    assert secret not in stored.description
    assert stored.description == "bad key [REDACTED]"


async def test_emitting_with_redis_down_does_not_raise(
    unreachable_redis_url: str, job: PremixFundsJob
) -> None:
    settings = Settings(redis_url=unreachable_redis_url, encryption_keys=SecretStr(""))
    client: Redis = Redis.from_url(unreachable_redis_url, socket_connect_timeout=1)
    try:
        event = await ProgressEmitter(client, settings, JOB_ID, job).started()
    finally:
        await client.aclose()
    assert (event.phase, event.status, event.sequence) == (1, ProgressStatus.STARTED, 1)


async def test_a_terminal_event_ends_the_subscription_even_with_a_sequence_already_seen(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    # Two emitters of one job numbering alike (two executions racing): the final word counts.
    older = ProgressEmitter(redis_client, settings, JOB_ID, job)
    await older.started()
    newer = ProgressEmitter(redis_client, settings, JOB_ID, job)

    async def collect() -> list[ProgressEvent]:
        return [event async for event in subscribe_progress(redis_client, JOB_ID)]

    reader = asyncio.create_task(collect())
    await wait_for_subscriber(redis_client, progress_channel(JOB_ID))
    await newer.phase(Phase.VALIDATING_PARAMETERS)  # sequence 2
    await newer.phase(Phase.CALCULATING_DISTRIBUTION)  # sequence 3
    await older.completed("Funded 12 wallets")  # sequence 2 again

    async with asyncio.timeout(5):
        events = await reader
    assert [(e.sequence, e.status) for e in events] == [
        (1, "started"),
        (2, "in_progress"),
        (3, "in_progress"),
        (2, "completed"),
    ]


async def test_a_job_that_arq_ended_without_a_final_event_ends_the_subscription(
    redis_client: Redis, settings: Settings, job: PremixFundsJob
) -> None:
    await ProgressEmitter(redis_client, settings, JOB_ID, job).started()

    async def collect() -> list[ProgressEvent]:
        events = subscribe_progress(redis_client, JOB_ID, poll_interval_seconds=0.01)
        return [event async for event in events]

    reader = asyncio.create_task(collect())
    await wait_for_subscriber(redis_client, progress_channel(JOB_ID))
    await asyncio.sleep(0.05)
    assert not reader.done()  # no result yet: the job may still report
    # arq stored a result (it failed the job itself) and no terminal event will come
    await redis_client.set(f"arq:result:{JOB_ID}", b"{}")

    async with asyncio.timeout(5):
        events = await reader
    assert [e.status for e in events] == ["started"]
