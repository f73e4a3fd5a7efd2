"""The enqueue side's Redis: one arq client (JSON serializer) per Redis URL and event loop,
created on first use and reused by every call of `premix.queue`; `close_queue()` closes them
(and the shared wallet stores)."""

import asyncio
from dataclasses import dataclass
from typing import Final

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis

from premix.serialization import job_deserializer, job_serializer
from premix.settings import Settings
from premix.wallet_check import close_wallet_stores

# Short, so an unreachable Redis answers the bot within about a second instead of hanging it.
CONNECT_TIMEOUT_SECONDS: Final = 1.0
COMMAND_TIMEOUT_SECONDS: Final = 2.0


@dataclass
class _Pool:
    loop: asyncio.AbstractEventLoop
    connections: ConnectionPool
    redis: ArqRedis


_pools: dict[str, _Pool] = {}


def arq_client(connections: ConnectionPool) -> ArqRedis:
    """An arq client on `connections` speaking premix's JSON (never pickle)."""
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
        pool = _Pool(loop, connections, arq_client(connections))
        _pools[redis_url] = pool
    return pool.redis


async def close_queue() -> None:
    """Close every pool and store `enqueue_premix_funds` opened in this event loop (and forget
    others)."""
    loop = asyncio.get_running_loop()
    pools = list(_pools.values())
    _pools.clear()
    for pool in pools:
        if pool.loop is loop:
            await pool.connections.disconnect()
    await close_wallet_stores()


def queue_client(settings: Settings, redis: Redis | None) -> ArqRedis:
    """The arq client for `redis` (JSON serializer), or the shared pool for the settings' URL;
    raises `ValueError` for a URL that is not a Redis URL."""
    if redis is None:
        return queue_pool(settings.redis_url)
    if isinstance(redis, ArqRedis) and redis.job_serializer is job_serializer:
        return redis
    return arq_client(redis.connection_pool)  # same connections, JSON serializer
