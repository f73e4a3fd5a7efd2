"""The enqueue side's Redis: the shared arq pools, and the one Lua script that takes a user's
lock and writes arq's job record and queue entry (one round trip, atomic), for every job that
holds the user lock (a premix, its retry, a sweep: never two at once for one user).

The Redis connection pool is created on first use and reused (one per Redis URL and event
loop); `close_queue()` closes them.
"""

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, cast

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from premix.logs import get_logger
from premix.serialization import job_deserializer, job_serializer
from premix.settings import Settings
from premix.user_lock import release_user_lock_quietly, user_lock_key

log = get_logger(__name__)

# arq drops a job not started within this long; the user's marker lasts as long while it waits.
QUEUED_JOB_EXPIRY_SECONDS: Final = 86_400
# Short, so an unreachable Redis answers the bot within about a second instead of hanging it.
CONNECT_TIMEOUT_SECONDS: Final = 1.0
COMMAND_TIMEOUT_SECONDS: Final = 2.0

QUEUE_UNAVAILABLE: Final = "Queue unavailable: could not reach Redis; nothing was enqueued"
# Configuration errors are logged in full; the user sees only this.
QUEUE_MISCONFIGURED: Final = "Queue unavailable: premix is misconfigured; nothing was enqueued"
LEDGER_UNAVAILABLE: Final = "Queue unavailable: could not read the ledger; nothing was enqueued"


ENQUEUED, USER_BUSY, JOB_EXISTS = 1, 0, -1
# The user lock and arq's enqueue in one script (one round trip, atomic), writing exactly what
# `ArqRedis.enqueue_job` writes: the job record (`arq:job:<id>`, PSETEX its expiry) and its
# queue entry (ZADD, score = enqueue time in ms), refused like arq when the job or its result
# exists. KEYS: lock, job, result, queue; ARGV: job id, lock ttl s, job bytes, job expiry ms,
# score. Returns {1} (queued), {0, holder} (user busy) or {-1} (job id known). The ZADD goes
# first: a queue key of the wrong type fails the script before anything is written.
_ENQUEUE_SCRIPT: Final = """
local holder = redis.call('GET', KEYS[1])
if holder then
    return {0, holder}
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then
    return {-1}
end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('PSETEX', KEYS[2], ARGV[4], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1}
"""


@dataclass
class _Pool:
    loop: asyncio.AbstractEventLoop
    connections: ConnectionPool
    redis: ArqRedis


_pools: dict[str, _Pool] = {}


def _arq_redis(connections: ConnectionPool) -> ArqRedis:
    # Every call names its queue (`settings.queue_name`): no default queue is relied on.
    return ArqRedis(connections, job_serializer=job_serializer, job_deserializer=job_deserializer)


def queue_pool(redis_url: str) -> ArqRedis:
    """Return the shared arq client for `redis_url` in this event loop (created on first use).

    Creating it does not connect; the first command does.
    """
    loop = asyncio.get_running_loop()
    pool = _pools.get(redis_url)
    if pool is None or pool.loop is not loop:
        # A pool belongs to the loop it was created in (tests run one loop per test).
        connections = ConnectionPool.from_url(
            redis_url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
        )
        pool = _Pool(loop, connections, _arq_redis(connections))
        _pools[redis_url] = pool
    return pool.redis


async def close_queue() -> None:
    """Close every pool `enqueue_premix_funds` opened in this event loop (and forget others)."""
    loop = asyncio.get_running_loop()
    pools = list(_pools.values())
    _pools.clear()
    for pool in pools:
        if pool.loop is loop:
            await pool.connections.disconnect()


def queue_client(settings: Settings, redis: Redis | None) -> ArqRedis:
    """The arq client for `redis` (JSON serializer), or the shared pool for the settings' URL;
    raises `ValueError` for a URL that is not a Redis URL."""
    if redis is None:
        return queue_pool(settings.redis_url)
    if isinstance(redis, ArqRedis) and redis.job_serializer is job_serializer:
        return redis
    return _arq_redis(redis.connection_pool)  # same connections, JSON serializer


def job_exists_message(job_id: str) -> str:
    return f"A job with id {job_id} already exists; nothing was enqueued"


def user_busy_message(holder: str | None) -> str:
    running = f" (job {holder})" if holder else ""
    return f"A premix is already queued or running for this user{running}; wait for it to finish"


async def lock_and_enqueue(
    redis: Redis,
    queue_name: str,
    *,
    user_id: str,
    job_id: str,
    function: str,
    payload: dict[str, Any],
) -> tuple[int, str | None]:
    """Take `user_id`'s lock and queue arq job `job_id` (`function` with the one argument
    `payload`) in one round trip; return (outcome, holder): `ENQUEUED`, `USER_BUSY` with the
    job holding the lock, or `JOB_EXISTS`."""
    enqueue_time_ms = timestamp_ms()
    job_bytes = serialize_job(
        function, (payload,), {}, None, enqueue_time_ms, serializer=job_serializer
    )
    keys = (user_lock_key(user_id), job_key_prefix + job_id, result_key_prefix + job_id)
    arguments: tuple[Any, ...] = (
        job_id,
        str(QUEUED_JOB_EXPIRY_SECONDS),
        job_bytes,
        str(QUEUED_JOB_EXPIRY_SECONDS * 1000),  # arq's `_expires`
        str(enqueue_time_ms),  # the score: due now
    )
    reply = await cast(
        Awaitable[list[Any]],
        redis.eval(_ENQUEUE_SCRIPT, 4, *keys, queue_name, *arguments),
    )
    holder = reply[1] if len(reply) > 1 else None
    return int(reply[0]), holder.decode() if isinstance(holder, bytes) else holder


def queue_error_message(error: BaseException) -> str:
    if isinstance(error, RedisConnectionError | RedisTimeoutError | OSError):
        return QUEUE_UNAVAILABLE
    return (
        f"Queue unavailable: Redis refused the job ({type(error).__name__}); nothing was enqueued"
    )


async def undo_enqueue(redis: Redis, queue_name: str, user_id: str, job_id: str) -> None:
    # A Redis MULTI is not rolled back when one command fails: arq's job record may have been
    # written without its queue entry. Remove both, then the lock, so nothing is left behind.
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(job_key_prefix + job_id)
            pipe.zrem(queue_name, job_id)
            await pipe.execute()
    except (RedisError, OSError) as e:
        log.warning("enqueue_not_undone", job_id=job_id, error=type(e).__name__)
    await release_user_lock_quietly(redis, user_id, job_id)
