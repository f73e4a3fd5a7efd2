"""The user lock as a running execution holds it (`premix.user_lock.HeldUserLock`): kept alive
while the execution runs, never taken back once released, never touched by a superseded try."""

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from premix import user_lock as user_lock_module
from premix.tries import Superseded, TryGuard
from premix.user_lock import HeldUserLock, take_user_lock, user_lock_holder

JOB = "premix-u1-1"


async def test_a_refresh_still_retrying_when_the_lock_is_released_never_takes_it_back(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The heartbeat's refresh is held in redis-py's retry backoff (Redis restarting) while the
    # execution ends and frees the user; it must not re-take the lock when it finally runs.
    real_refresh = user_lock_module.refresh_user_lock

    async def slow_refresh(*args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(1.5)
        return await real_refresh(*args, **kwargs)

    monkeypatch.setattr(user_lock_module, "refresh_user_lock", slow_refresh)
    await redis_client.set("arq:retry:" + JOB, "1")
    assert await take_user_lock(redis_client, "u1", JOB, 3)
    lock = HeldUserLock(redis_client, "u1", TryGuard(JOB, 1), ttl_seconds=3)

    async with lock.kept_alive():
        await asyncio.sleep(1.2)  # the heartbeat's refresh is on its way
        await lock.release()
        await asyncio.sleep(2.0)
        holder = await user_lock_holder(redis_client, "u1")

    assert holder is None


async def test_a_superseded_try_neither_refreshes_nor_frees_the_lock(redis_client: Redis) -> None:
    await redis_client.set("arq:retry:" + JOB, "2")  # try 2 began
    assert await take_user_lock(redis_client, "u1", JOB, 60)
    stale = HeldUserLock(redis_client, "u1", TryGuard(JOB, 1), ttl_seconds=3)

    with pytest.raises(Superseded):
        await stale.hold()
    await stale.release()

    assert await user_lock_holder(redis_client, "u1") == JOB
    assert await redis_client.ttl("premix:user-lock:u1") > 3  # not shortened to try 1's TTL
