"""The RPC budget: `PREMIX_RPC_MAX_REQUESTS_PER_SECOND` honoured by every worker together.

`RpcBudget.acquire()` runs before each HTTP request `SolanaRpc` makes (retries included). The
budget is a token bucket in Redis (`RPC_BUDGET_KEY`), shared by every worker on the Redis
database: one Lua script takes a token atomically, or says how long until one is there; a
worker that gets none waits that long and asks again. The bucket's capacity is one request
(no burst), so no 1 s window sees more than N + 1 requests taken.

What a request costs: one HTTP request to the endpoint is one token, whatever it reads (a
getMultipleAccounts of 100 accounts, a getSignatureStatuses of 256 signatures: 1). A JSON-RPC
batch of n calls in one HTTP request would cost n (`acquire(cost=n)`); premix sends none.

The same script records the worker as live (a sorted set, `RPC_BUDGET_WORKERS_KEY`, scored by
when it was last heard of; members older than `LIVE_WORKER_SECONDS` drop out) and returns how
many are live; a worker's heartbeat (`start_heartbeat`, every `HEARTBEAT_SECONDS`) keeps an
idle worker counted too, so its share is right if it starts sending while Redis is down.

With Redis unreachable each worker keeps its share: a local bucket of N / (live workers last
seen, never fewer than `PREMIX_RPC_BUDGET_WORKERS`, default 1). It asks Redis again
`REDIS_RETRY_SECONDS` after a failure and is back on the shared bucket as soon as Redis
answers. Redis is never waited for long: a short timeout, no retries.
"""

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from premix.constants import RPC_BUDGET_KEY, RPC_BUDGET_WORKERS_KEY
from premix.logs import get_logger
from premix.settings import Settings

log = get_logger(__name__)

CAPACITY_REQUESTS: Final = 1.0  # no burst: any 1 s window sees at most N + 1 requests
LIVE_WORKER_SECONDS: Final = 30  # a worker that took no token for this long is not counted
REDIS_RETRY_SECONDS: Final = 1.0  # after a failure, the local share is used this long
HEARTBEAT_SECONDS: Final = 10.0  # well within LIVE_WORKER_SECONDS
REDIS_TIMEOUT_SECONDS: Final = 0.5
BUCKET_EXPIRY_MS: Final = 60_000

# KEYS: the bucket (hash: tokens, at), the live workers (zset). ARGV: rate per second,
# capacity, cost, worker id, live-worker window in ms. Returns {microseconds to wait (0: a
# token was taken), live workers}. Time is the server's (TIME), the same for every worker.
_TAKE_SCRIPT: Final = """
local rate = tonumber(ARGV[1])
local cost = tonumber(ARGV[3])
local capacity = math.max(tonumber(ARGV[2]), cost)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window_us = tonumber(ARGV[5]) * 1000
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window_us)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local live = redis.call('ZCARD', KEYS[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
    tokens, at = capacity, now
end
if at > now then
    at = now -- stamped ahead of this server's clock (a failover, a clock stepped back)
end
tokens = math.min(capacity, tokens + (now - at) * rate / 1000000)
at = now
local wait = 0
if tokens >= cost then
    tokens = tokens - cost
else
    wait = math.ceil((cost - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
    'at', string.format('%.0f', at))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {wait, live}
"""
# KEYS: the live workers (zset). ARGV: worker id, live-worker window in ms. Returns how many
# workers are live, this one included.
_HEARTBEAT_SCRIPT: Final = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]) * 1000)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""


class RequestLimiter(Protocol):
    """What `SolanaRpc` awaits before each HTTP request it makes."""

    async def acquire(self, cost: int = 1) -> None: ...


class LocalBucket:
    """An in-process token bucket of `rate` requests per second (capacity one request)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = CAPACITY_REQUESTS
        self._at = clock()

    def take(self, cost: int = 1) -> float:
        """Take `cost` tokens and return 0, or return the seconds until they are there."""
        now = self._clock()
        capacity = max(CAPACITY_REQUESTS, float(cost))
        self._tokens = min(capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate


class RpcBudget:
    """`requests_per_second` for every worker sharing `redis` (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        requests_per_second: float,
        *,
        assumed_workers: int = 1,
        worker_id: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("an RPC budget needs a rate above 0 requests per second")
        self.redis = redis
        self.rate = requests_per_second
        self.assumed_workers = assumed_workers
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.live_workers: int | None = None  # as Redis last said; None: never reached
        self.shared = True  # False while Redis is unreachable and the local share is used
        self._sleep = sleep
        self._clock = clock
        self._local = LocalBucket(self.local_rate, clock)
        self._redis_retry_at = 0.0
        self._heartbeat: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "RpcBudget | None":
        """The budget of `PREMIX_RPC_MAX_REQUESTS_PER_SECOND` on `PREMIX_REDIS_URL`, with a
        client of its own (short timeouts, no retries); None when the setting is 0 (no limit)."""
        if not settings.rpc_max_requests_per_second:
            return None
        redis = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(
            redis,
            settings.rpc_max_requests_per_second,
            assumed_workers=settings.rpc_budget_workers,
        )

    @property
    def local_rate(self) -> float:
        """Requests per second this worker allows itself while Redis is unreachable."""
        return self.rate / max(self.live_workers or 1, self.assumed_workers)

    async def acquire(self, cost: int = 1) -> None:
        """Return once `cost` requests may be sent (waiting for the budget as long as it
        takes); never raises for an unreachable Redis."""
        while True:
            wait_seconds = await self._take(cost)
            if wait_seconds <= 0:
                return
            await self._sleep(wait_seconds)

    async def _take(self, cost: int) -> float:
        if self._clock() < self._redis_retry_at:
            return self._local.take(cost)
        try:
            reply = await cast(
                Awaitable[list[Any]],
                self.redis.eval(
                    _TAKE_SCRIPT,
                    2,
                    RPC_BUDGET_KEY,
                    RPC_BUDGET_WORKERS_KEY,
                    repr(self.rate),
                    repr(CAPACITY_REQUESTS),
                    str(cost),
                    self.worker_id,
                    str(LIVE_WORKER_SECONDS * 1000),
                    str(BUCKET_EXPIRY_MS),
                ),
            )
        except (RedisError, OSError) as e:
            self._redis_retry_at = self._clock() + REDIS_RETRY_SECONDS
            if self.shared:
                self.shared = False
                self._local = LocalBucket(self.local_rate, self._clock)
                log.warning(
                    "rpc_budget_local_share",
                    error=type(e).__name__,
                    requests_per_second=self._local.rate,
                )
            return self._local.take(cost)
        wait_microseconds, live = int(reply[0]), int(reply[1])
        self.live_workers = live
        if not self.shared:
            self.shared = True
            log.info("rpc_budget_shared_again", live_workers=live)
        return wait_microseconds / 1_000_000

    async def beat(self) -> None:
        """Record this worker as live and note how many are (quietly: Redis may be down)."""
        try:
            live = await cast(
                Awaitable[int],
                self.redis.eval(
                    _HEARTBEAT_SCRIPT,
                    1,
                    RPC_BUDGET_WORKERS_KEY,
                    self.worker_id,
                    str(LIVE_WORKER_SECONDS * 1000),
                ),
            )
        except (RedisError, OSError):
            return
        self.live_workers = int(live)

    def start_heartbeat(self) -> None:
        """Beat now and every `HEARTBEAT_SECONDS` until `aclose` (a worker process's budget)."""

        async def beat_forever() -> None:
            while True:
                await self.beat()
                await asyncio.sleep(HEARTBEAT_SECONDS)

        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(beat_forever())

    async def aclose(self) -> None:
        """Stop the heartbeat; close the budget's Redis connections."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.redis.aclose()
