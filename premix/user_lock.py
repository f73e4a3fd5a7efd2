"""One premix per user at a time: the user lock, a Redis marker `USER_LOCK_PREFIX + user_id`
holding the id of the job that owns the user.

Enqueueing takes it for as long as arq keeps a job waiting (in the same script that queues the
job, `premix.queue`; `take_user_lock` alone takes it), so a long backlog never lets a second
premix in. The running job shortens it to
`settings.user_lock_ttl_seconds` and keeps it alive (`HeldUserLock.kept_alive`), and releases it
when its execution ends; if a worker dies, the marker expires on its own. Every operation
compares the job id first (in a Lua script), so a job never frees or extends a marker another
job holds.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from premix.constants import USER_LOCK_PREFIX
from premix.logs import get_logger
from premix.tries import Superseded, TryGuard

log = get_logger(__name__)

# Both scripts: KEYS = arq's try counter and result (`TryGuard.keys`), the lock key; ARGV = the
# execution's try ("" = unguarded), the job id. They return -1, changing nothing, once a newer
# try of the job began or the job ended (`TryGuard.LUA`).
# Delete the lock only if this job holds it.
_RELEASE_SCRIPT: Final = (
    TryGuard.LUA
    + """
if redis.call('GET', KEYS[3]) == ARGV[2] then
    return redis.call('DEL', KEYS[3])
end
return 0
"""
)
# ARGV[3] = ttl seconds, ARGV[4] = "1" to take the lock again if it expired meanwhile: extend
# the lock if this job holds it; refuse (0) if another job holds it (or none, without "1").
_REFRESH_SCRIPT: Final = (
    TryGuard.LUA
    + """
local holder = redis.call('GET', KEYS[3])
if holder == false and ARGV[4] == '1' then
    redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
    return 1
end
if holder == ARGV[2] then
    redis.call('EXPIRE', KEYS[3], ARGV[3])
    return 1
end
return 0
"""
)


def user_lock_key(user_id: str) -> str:
    """Return the Redis key of a user's one-premix-at-a-time marker."""
    return USER_LOCK_PREFIX + user_id


async def user_lock_holder(redis: Redis, user_id: str) -> str | None:
    """Return the id of the job holding the user's marker, or None if no premix holds it."""
    holder = await redis.get(user_lock_key(user_id))
    return holder.decode() if isinstance(holder, bytes) else holder


async def _run(redis: Redis, script: str, user_id: str, guard: TryGuard | None, *args: str) -> int:
    lock_key = user_lock_key(user_id)
    keys = guard.keys if guard is not None else (lock_key, lock_key)
    argument = guard.argument if guard is not None else ""
    return int(await cast(Awaitable[int], redis.eval(script, 3, *keys, lock_key, argument, *args)))


async def release_user_lock(
    redis: Redis, user_id: str, job_id: str, *, guard: TryGuard | None = None
) -> bool:
    """Delete the user's marker if `job_id` holds it; return True if it was deleted. With
    `guard`, raises `Superseded` (deleting nothing) once a newer try of the job began."""
    released = await _run(redis, _RELEASE_SCRIPT, user_id, guard, job_id)
    if released == -1:
        raise Superseded(job_id)
    return bool(released)


async def refresh_user_lock(
    redis: Redis,
    user_id: str,
    job_id: str,
    ttl_seconds: int,
    *,
    guard: TryGuard | None = None,
    retake: bool = True,
) -> bool:
    """Extend the user's marker to `ttl_seconds` for `job_id` (re-taking it if it expired,
    unless `retake` is False).

    Returns False when another job holds the marker: the caller must not run. With `guard`,
    raises `Superseded` (taking nothing) once a newer try of the job began or the job ended.
    """
    refreshed = await _run(
        redis, _REFRESH_SCRIPT, user_id, guard, job_id, str(ttl_seconds), "1" if retake else "0"
    )
    if refreshed == -1:
        raise Superseded(job_id)
    return bool(refreshed)


async def take_user_lock(redis: Redis, user_id: str, job_id: str, ttl_seconds: int) -> bool:
    """Take the user's marker for `job_id` for `ttl_seconds`; False when a job holds it."""
    return bool(await redis.set(user_lock_key(user_id), job_id, nx=True, ex=ttl_seconds))


async def release_user_lock_quietly(
    redis: Redis, user_id: str, job_id: str, *, guard: TryGuard | None = None
) -> None:
    """`release_user_lock`, logging instead of raising when Redis is unreachable (a superseded
    execution's release does nothing: the lock is the newer execution's)."""
    try:
        await release_user_lock(redis, user_id, job_id, guard=guard)
    except Superseded:
        log.info("user_lock_left_to_the_newer_execution", job_id=job_id, user_id=user_id)
    except (RedisError, OSError) as e:
        # The marker then expires on its own.
        log.warning(
            "user_lock_not_released", job_id=job_id, user_id=user_id, error=type(e).__name__
        )


class HeldUserLock:
    """A running execution's hold on its user's marker: refreshed by `hold` and, while the
    execution runs, by `kept_alive`; released once by `release`, after which it is never taken
    back. Guarded by the execution's try: once a newer try began, it neither refreshes nor
    releases the marker (that try holds it now)."""

    def __init__(self, redis: Redis, user_id: str, guard: TryGuard, ttl_seconds: int) -> None:
        self.redis = redis
        self.user_id = user_id
        self.guard = guard
        self.job_id = guard.job_id
        self.ttl_seconds = ttl_seconds
        self.released = False
        self._heartbeat: asyncio.Task[None] | None = None
        self.log: Any = log.bind(job_id=self.job_id, user_id=user_id)

    async def hold(self, *, retake: bool = True) -> bool:
        """Extend the marker for this job (re-taking it if it expired, unless `retake` is
        False); False when another job holds it or this hold was released. Raises `Superseded`
        once a newer try began, `RedisError` and `OSError`."""
        if self.released:
            return False
        return await refresh_user_lock(
            self.redis,
            self.user_id,
            self.job_id,
            self.ttl_seconds,
            guard=self.guard,
            retake=retake,
        )

    async def release(self) -> None:
        """Free the user (quietly: the marker expires if Redis cannot be reached). The
        heartbeat is stopped first, so no refresh still retrying can take the marker back."""
        self.released = True
        await self._stop_heartbeat()
        await release_user_lock_quietly(self.redis, self.user_id, self.job_id, guard=self.guard)

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Refresh the marker every third of its lifetime while the block runs (it expires only
        if the worker dies)."""

        async def beat() -> None:
            interval = max(1.0, self.ttl_seconds / 3)
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.hold(retake=False)  # only the execution's start re-takes it
                except Superseded:
                    return  # the newer try keeps the marker; this one stops at its next step
                except (RedisError, OSError) as e:
                    self.log.warning("user_lock_not_refreshed", error=type(e).__name__)

        self._heartbeat = asyncio.create_task(beat())
        try:
            yield
        finally:
            await self._stop_heartbeat()

    async def _stop_heartbeat(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
