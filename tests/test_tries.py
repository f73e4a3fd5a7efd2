"""Which execution of a job may still act: a superseded one waits for the job's end."""

import asyncio
import time

from arq.constants import job_key_prefix
from redis.asyncio import Redis

from premix.tries import TryGuard

JOB_ID = "premix-u1-1700000000000"


async def test_a_superseded_execution_waits_until_arq_deleted_the_jobs_record(
    redis_client: Redis,
) -> None:
    await redis_client.set(job_key_prefix + JOB_ID, b"the job")
    guard = TryGuard(JOB_ID, 1)
    waiting = asyncio.create_task(guard.wait_for_job_end(redis_client, until=time.monotonic() + 30))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # the job still runs elsewhere

    await redis_client.delete(job_key_prefix + JOB_ID)  # it ended: arq deleted its record
    assert await asyncio.wait_for(waiting, 5) is True


async def test_waiting_for_the_jobs_end_stops_at_the_deadline(redis_client: Redis) -> None:
    await redis_client.set(job_key_prefix + JOB_ID, b"the job")
    started = time.monotonic()
    ended = await TryGuard(JOB_ID, 1).wait_for_job_end(redis_client, until=started + 0.2)
    assert ended is False
    assert time.monotonic() - started < 2
