"""Is the service up? `check_health` (`premix health`) asks every service premix needs, each
within `CHECK_SECONDS`: Redis (PING), MongoDB (ping), the Solana RPC node (its processed and
finalized slots: the lag between them; getHealth), the live workers and the queue depth.

Live workers: each worker process keeps a beacon in Redis (`WorkerBeacon`: a key per process,
`premix:worker:<queue>:<host>:<pid>`, refreshed every `BEACON_SECONDS`, expiring after
`BEACON_TTL_SECONDS`), so a worker that died stops counting within half a minute. Each beat
also reads the queue's depth for the worker's metrics (`premix_queue_depth`). arq's own
health-check key is one per queue, whoever wrote it last: it cannot count workers.
"""

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from solana.rpc.commitment import Finalized, Processed

from premix.logs import get_logger, redact_text
from premix.metrics import QUEUE_DEPTH
from premix.rpc import SolanaRpc
from premix.settings import Settings
from premix.store import Store

log = get_logger(__name__)

CHECK_SECONDS: Final = 3.0  # each service answers within this or counts as down
BEACON_SECONDS: Final = 10.0
BEACON_TTL_SECONDS: Final = 30
BEACON_PREFIX: Final = "premix:worker:"

T = TypeVar("T")


def beacon_pattern(queue_name: str) -> str:
    """The keys of the live workers of `queue_name` (a SCAN pattern)."""
    return f"{BEACON_PREFIX}{queue_name}:*"


class WorkerBeacon:
    """One worker process's liveness key in Redis, refreshed until `stop` deletes it."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._queue_name = settings.queue_name
        host = socket.gethostname()
        self.key = f"{BEACON_PREFIX}{settings.queue_name}:{host}:{os.getpid()}"
        self._value = json.dumps(
            {
                "host": host,
                "pid": os.getpid(),
                "startedAt": datetime.now(UTC).isoformat(),
                "maxJobs": settings.worker_max_jobs,
            }
        )
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Write the key once, and read the queue's depth for the metrics (best effort: a Redis
        hiccup is logged, never raised)."""
        try:
            await self._redis.set(self.key, self._value, ex=BEACON_TTL_SECONDS)
            QUEUE_DEPTH.set(await self._redis.zcard(self._queue_name))
        except (RedisError, OSError) as e:
            log.warning("worker_beacon_not_written", error=type(e).__name__)

    def start(self) -> None:
        """Beat now and every `BEACON_SECONDS` until `stop`."""

        async def beat_forever() -> None:
            while True:
                await self.beat()
                await asyncio.sleep(BEACON_SECONDS)

        if self._task is None:
            self._task = asyncio.create_task(beat_forever())

    async def stop(self) -> None:
        """Stop beating and delete the key: this worker no longer counts as live."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self.key)


async def _timed(check: Callable[[], Awaitable[T]]) -> tuple[T | None, dict[str, Any]]:
    """Run `check` within `CHECK_SECONDS`: (its value, {ok, latencyMs[, error]})."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            value = await check()
    except TimeoutError:
        return None, {"ok": False, "error": f"no answer within {CHECK_SECONDS:g} s"}
    except Exception as e:  # any failure of the service is its answer: down
        return None, {"ok": False, "error": redact_text(f"{type(e).__name__}: {e}")[:200]}
    return value, {"ok": True, "latencyMs": round((time.perf_counter() - started) * 1000, 2)}


async def check_health(settings: Settings) -> dict[str, Any]:
    """Ask every service; return {ok, redis, mongodb, rpc, workers, queue} (JSON-safe).

    `ok` is true when Redis, MongoDB and the RPC node answer and at least one worker is live.
    Never raises for a service that is down: its entry says `ok: false` and why."""
    redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=CHECK_SECONDS, socket_timeout=CHECK_SECONDS
    )
    try:
        _, redis_entry = await _timed(redis.ping)
        workers = await _workers(redis, settings) if redis_entry["ok"] else None
        queue = await _queue(redis, settings) if redis_entry["ok"] else None
    finally:
        await redis.aclose()
    mongodb_entry = await _mongodb(settings)
    rpc_entry = await _rpc(settings)
    live = workers["live"] if workers is not None else 0
    ok = redis_entry["ok"] and mongodb_entry["ok"] and rpc_entry["ok"] and live > 0
    return {
        "ok": ok,
        "redis": redis_entry,
        "mongodb": mongodb_entry,
        "rpc": rpc_entry,
        "workers": workers or {"ok": False, "live": 0, "error": "Redis did not answer"},
        "queue": queue or {"ok": False, "error": "Redis did not answer"},
    }


async def _workers(redis: Redis, settings: Settings) -> dict[str, Any]:
    async def read() -> list[dict[str, Any]]:
        keys = [key async for key in redis.scan_iter(beacon_pattern(settings.queue_name))]
        values = await redis.mget(keys) if keys else []
        return [json.loads(value) for value in values if value is not None]

    beacons, entry = await _timed(read)
    if beacons is None:
        return {**entry, "live": 0}
    entry.update(ok=bool(beacons), live=len(beacons), processes=beacons)
    if not beacons:
        entry["error"] = f"no live worker on queue {settings.queue_name}"
    return entry


async def _queue(redis: Redis, settings: Settings) -> dict[str, Any]:
    async def read() -> tuple[int, int]:
        now_ms = time.time_ns() // 1_000_000
        total = await redis.zcard(settings.queue_name)
        due = await redis.zcount(settings.queue_name, "-inf", now_ms)
        return int(total), int(due)

    counts, entry = await _timed(read)
    if counts is not None:
        total, due = counts
        entry.update(name=settings.queue_name, depth=total, due=due, deferred=total - due)
    return entry


async def _mongodb(settings: Settings) -> dict[str, Any]:
    async def ping() -> bool:
        store = await Store.open(settings, decrypts=False, timeout_seconds=CHECK_SECONDS)
        try:
            await store.ping()
        finally:
            await store.close()
        return store.is_memory

    embedded, entry = await _timed(ping)
    if embedded:
        entry["embedded"] = True  # memory://: in this process only
    return entry


async def _rpc(settings: Settings) -> dict[str, Any]:
    async def slots() -> tuple[int, int, str]:
        async with SolanaRpc.from_settings(settings) as rpc:
            processed = (await rpc.client.get_slot(Processed)).value
            finalized = (await rpc.client.get_slot(Finalized)).value
            health = await rpc.client.is_connected()
        return processed, finalized, "ok" if health else "unhealthy"

    answer, entry = await _timed(slots)
    if answer is not None:
        processed, finalized, health = answer
        entry.update(
            slot=processed, finalizedSlot=finalized, lagSlots=processed - finalized, health=health
        )
        entry["ok"] = health == "ok"
    return entry
