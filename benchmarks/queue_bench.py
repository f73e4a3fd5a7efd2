"""Queue: enqueue latency, job pickup latency, throughput with 1/2/4 workers, worker peak RSS.

Everything runs against a private Valkey (see `premix.servers`), flushed between
sections; the machine's Redis is never touched.

- enqueue (`benchmarks.enqueue_bench`): `enqueue_premix_funds` for distinct users, one after
  another, no worker running, each user's 74 wallets in a fresh database on the SecantusDB
  started here (the one the throughput processes share): every call includes enqueue's store
  read; milliseconds per call.
- pickup: a stand-alone worker process (`benchmarks.worker_process`, memory store) is idle;
  the benchmark enqueues one job, times from the enqueue call until the job's phase-1 event
  arrives on the all-jobs progress channel, waits for the job to end, and enqueues the next.
  Enqueue accepts these users (the benchmark's own memory store holds wallets for them), but
  the worker's store has none, so each job ends in the worker's phase-2 check: pickup is all
  that is timed. The RSS user's wallets are in both stores (the worker's are the funded ones).
- worker RSS: the same worker process then runs a 73-wallet fast premix and a 21-wallet
  standard premix for a user it stored wallets for; its peak RSS is read when it stops. The
  localnet runs in the benchmark process, so the figure is the worker alone.
- throughput, measured twice on 10-wallet fast premixes for distinct users:
  - `processes` (how premix is deployed): 1, 2 or 4 separate worker processes
    (`benchmarks.worker_process`: premix's worker settings, max_jobs=1 each) sharing one store,
    a SecantusDB the benchmark starts (`premix.servers`; or the MongoDB at
    `PREMIX_BENCH_MONGODB_URI`), a fresh database per run; the processes start idle, then every
    job is enqueued. Jobs per second from the first enqueue to the last job's terminal event.
  - `in_process`: every job enqueued first, then 1, 2 or 4 arq `Worker` instances start in
    this one process sharing one embedded memory store (one event loop: what a single process
    can overlap). Jobs per second from the workers' start to the last terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from arq.worker import Worker
from pydantic import SecretStr
from redis.asyncio import Redis
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from benchmarks.enqueue_bench import bench_enqueue, seed_wallets
from benchmarks.measure import Progress, Spread
from benchmarks.worker_process import WorkerProcess
from premix.constants import LAMPORTS_PER_SOL, PROGRESS_ALL_CHANNEL
from premix.keys import KeyRing
from premix.localnet import Localnet
from premix.progress import ProgressEvent
from premix.queue import close_queue, enqueue_premix_funds
from premix.servers import ServerError, private_secantus
from premix.settings import Settings
from premix.store import Store, reset_memory_stores
from premix.user_lock import user_lock_holder
from premix.worker import worker_settings

PICKUP_WARMUP = 3
PICKUP_OFFSETS = 10  # distinct arrival offsets within one poll period
JOB_TIMEOUT_SECONDS = 180.0
THROUGHPUT_WALLETS = 10
THROUGHPUT_AMOUNT_SOL = 5  # fills the first 10 wallets of the default table (0.5 SOL caps)
RSS_USER = "bench-rss"
RSS_FUNDING_LAMPORTS = 200 * LAMPORTS_PER_SOL
RSS_JOBS = (  # (amount in SOL, options): one of each engine
    (85, {"mode": "fast"}),
    (12.7, {"mode": "standard", "maxWallets": 21}),
)

# Set: the worker processes share this MongoDB instead of a SecantusDB started here.
MONGODB_URI_ENV = "PREMIX_BENCH_MONGODB_URI"


def base_settings(redis_url: str, rpc_url: str) -> Settings:
    """Settings for the queue benchmarks: the private Redis, the localnet, a throwaway key,
    a fresh memory store, warnings-only logs; everything else premix's defaults."""
    return Settings(
        redis_url=redis_url,
        rpc_url=rpc_url,
        mongodb_uri=f"memory://bench-queue-{uuid.uuid4().hex}",
        allow_memory_store=True,  # each worker stores its own users' wallets in its process
        encryption_keys=SecretStr(KeyRing.generate_key("bench")),
        log_level="WARNING",
    )


class EventWatcher:
    """Listens on the all-jobs progress channel and notes when each job's events arrive."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.events: dict[str, list[tuple[float, ProgressEvent]]] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> EventWatcher:
        self._task = asyncio.create_task(self._listen())
        await self._subscribed.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        async with self.redis.pubsub() as pubsub:
            await pubsub.subscribe(PROGRESS_ALL_CHANNEL)
            self._subscribed.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                arrived = time.perf_counter()
                event = ProgressEvent.model_validate_json(message["data"])
                self.events.setdefault(event.job_id, []).append((arrived, event))
                async with self._changed:
                    self._changed.notify_all()

    def first(
        self, job_id: str, match: Callable[[ProgressEvent], bool]
    ) -> tuple[float, ProgressEvent] | None:
        """Like `wait_for`, without waiting: None when no such event has arrived yet."""
        return next(((t, e) for t, e in self.events.get(job_id, []) if match(e)), None)

    async def wait_for(
        self, job_id: str, match: Callable[[ProgressEvent], bool], timeout: float
    ) -> tuple[float, ProgressEvent]:
        """When (perf_counter) the job's first event matching `match` arrived, and the event."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.first(job_id, match) is not None)
        found = self.first(job_id, match)
        assert found is not None
        return found


def _is_phase_1(event: ProgressEvent) -> bool:
    return event.phase == 1


def _is_terminal(event: ProgressEvent) -> bool:
    return event.is_terminal


async def bench_pickup_and_rss(
    settings: Settings, net: Localnet, watcher: EventWatcher, pickups: int, progress: Progress
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pickup latency over `pickups` jobs, then the worker's peak RSS after two real premixes."""
    worker = WorkerProcess(settings, [RSS_USER], buyers=73)
    enqueue_side = await Store.open(settings)  # wallets enqueue sees; the worker has its own
    try:
        pickup_users = [f"bench-pickup-{i}" for i in range(PICKUP_WARMUP + pickups)]
        await seed_wallets(enqueue_side, pickup_users, buyers=1)
        await seed_wallets(enqueue_side, [RSS_USER], buyers=73)
        ready = await worker.start()
        net.airdrop(Pubkey.from_string(ready["funding"][RSS_USER]), RSS_FUNDING_LAMPORTS)
        if progress is not None:
            progress(f"queue: pickup latency over {pickups} jobs (worker process)")
        latencies: list[float] = []
        poll_seconds = settings.worker_poll_delay_seconds
        for i in range(PICKUP_WARMUP + pickups):
            # arrivals at offsets spread evenly over the worker's poll period, as requests
            # from users are; back to back, every job would land just after a poll
            await asyncio.sleep(poll_seconds * (i % PICKUP_OFFSETS) / PICKUP_OFFSETS)
            started = time.perf_counter()
            result = await enqueue_premix_funds(pickup_users[i], 2_000 + i, 0.5, settings=settings)
            if result.job_id is None:
                raise RuntimeError(f"pickup job refused: {result.message}")
            picked, _ = await watcher.wait_for(result.job_id, _is_phase_1, JOB_TIMEOUT_SECONDS)
            await watcher.wait_for(result.job_id, _is_terminal, JOB_TIMEOUT_SECONDS)
            if i >= PICKUP_WARMUP:
                latencies.append((picked - started) * 1000)
        pickup = {"count": pickups, "milliseconds": Spread.of(latencies).to_dict()}

        if progress is not None:
            progress("queue: worker RSS (73-wallet fast and 21-wallet standard premix)")
        jobs: list[dict[str, Any]] = []
        for amount_sol, options in RSS_JOBS:
            # the terminal event goes out just before the worker frees the user
            await _wait_until_user_free(watcher.redis, RSS_USER)
            result = await enqueue_premix_funds(
                RSS_USER, 3_000, amount_sol, options, settings=settings
            )
            if result.job_id is None:
                raise RuntimeError(f"RSS job refused: {result.message}")
            _, event = await watcher.wait_for(result.job_id, _is_terminal, JOB_TIMEOUT_SECONDS)
            jobs.append(
                {
                    "amount_sol": amount_sol,
                    **options,
                    "status": str(event.status),
                    "message": event.description,
                }
            )
        report = await worker.stop()
    finally:
        await worker.kill()
        await enqueue_side.close()
    rss = {
        "measured_in": "a separate worker process (benchmarks.worker_process), memory store",
        "jobs": jobs,
        "peak_rss_bytes": report["peak_rss_bytes"],
        "baseline_rss_bytes": report["baseline_rss_bytes"],  # after imports and seeding
    }
    return pickup, rss


async def _wait_until_user_free(redis: Redis, user_id: str) -> None:
    async with asyncio.timeout(JOB_TIMEOUT_SECONDS):
        # the lock lives in Redis: nothing to await but another look
        while await user_lock_holder(redis, user_id) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


IN_PROCESS = "arq Worker instances in one process"
PROCESSES = "separate worker processes"


async def bench_throughput(
    settings: Settings,
    net: Localnet,
    watcher: EventWatcher,
    redis: Redis,
    *,
    worker_counts: list[int],
    jobs: int,
    repeat: int,
    mongodb: tuple[str, str] | None,
    progress: Progress,
) -> dict[str, Any]:
    """Jobs per second for each worker count, `repeat` times (interleaved), in worker processes
    sharing `mongodb` (URI, description; None: not measured) and in one process sharing a
    memory store."""
    result: dict[str, Any] = {"wallets_per_job": THROUGHPUT_WALLETS, "mode": "fast"}
    for kind in (PROCESSES, IN_PROCESS):
        if kind == PROCESSES and mongodb is None:
            result["processes"] = None
            continue
        samples: dict[int, list[float]] = {k: [] for k in worker_counts}
        completed: dict[int, list[int]] = {k: [] for k in worker_counts}
        for round_number in range(repeat):
            for workers in worker_counts:
                if progress is not None:
                    progress(
                        f"queue: throughput, {workers} {kind}, {jobs} jobs, "
                        f"run {round_number + 1}/{repeat}"
                    )
                if mongodb is not None and kind == PROCESSES:
                    seconds, done = await _throughput_processes(
                        settings, net, watcher, workers, jobs, mongodb[0]
                    )
                else:
                    seconds, done = await _throughput_in_process(
                        settings, net, watcher, workers, jobs
                    )
                await redis.flushdb()
                samples[workers].append(jobs / seconds)
                completed[workers].append(done)
        medians = [Spread.of(samples[k]).median for k in worker_counts]
        result["processes" if kind == PROCESSES else "in_process"] = {
            "measured_in": kind,
            "store": mongodb[1] if mongodb is not None and kind == PROCESSES else "memory://",
            "by_workers": [
                {
                    "workers": k,
                    "jobs": jobs,
                    "completed": completed[k],
                    "jobs_per_second": Spread.of(samples[k]).to_dict(),
                }
                for k in worker_counts
            ],
            "speedup_over_one_worker": [m / medians[0] for m in medians],
        }
    return result


async def _seed_users(store: Store, net: Localnet, jobs: int) -> list[str]:
    """Distinct users, each with a funded funding wallet and 10 buyer wallets."""
    tag = uuid.uuid4().hex[:8]
    users = [f"bench-tp-{tag}-{i}" for i in range(jobs)]
    for user in users:
        funding = Keypair()
        await store.wallets.set_funding_wallet(user, funding)
        await store.wallets.add_buyer_wallets(user, [Keypair() for _ in range(THROUGHPUT_WALLETS)])
        net.airdrop(funding.pubkey(), (THROUGHPUT_AMOUNT_SOL + 1) * LAMPORTS_PER_SOL)
    return users


async def _enqueue_all(settings: Settings, users: list[str]) -> list[str]:
    job_ids = []
    for i, user in enumerate(users):
        result = await enqueue_premix_funds(
            user,
            4_000 + i,
            THROUGHPUT_AMOUNT_SOL,
            {"mode": "fast", "maxWallets": THROUGHPUT_WALLETS},
            settings=settings,
        )
        if result.job_id is None:
            raise RuntimeError(f"throughput job refused: {result.message}")
        job_ids.append(result.job_id)
    return job_ids


async def _all_ended(
    watcher: EventWatcher, job_ids: list[str], started: float
) -> tuple[float, int]:
    """Seconds from `started` until the last job's terminal event; jobs completed."""
    ended = [await watcher.wait_for(j, _is_terminal, JOB_TIMEOUT_SECONDS) for j in job_ids]
    seconds = max(t for t, _ in ended) - started
    return seconds, sum(1 for _, event in ended if event.status == "completed")


async def _throughput_in_process(
    base: Settings, net: Localnet, watcher: EventWatcher, workers: int, jobs: int
) -> tuple[float, int]:
    """Enqueue every job, then start `workers` burst-mode arq Workers in this process."""
    memory_uri = f"memory://bench-throughput-{uuid.uuid4().hex}"
    settings = base.model_copy(update={"mongodb_uri": memory_uri})
    store = await Store.open(settings)
    await store.ensure_indexes()
    try:
        job_ids = await _enqueue_all(settings, await _seed_users(store, net, jobs))
        pool = [
            Worker(
                **worker_settings(settings),
                burst=True,
                handle_signals=False,
                ctx={"settings": settings},
            )
            for _ in range(workers)
        ]
        started = time.perf_counter()
        running = asyncio.gather(*(w.main() for w in pool))
        seconds, done = await _all_ended(watcher, job_ids, started)
        await running
        for w in pool:
            await w.close()
    finally:
        await store.close()
        reset_memory_stores(memory_uri)
    return seconds, done


async def _throughput_processes(
    base: Settings,
    net: Localnet,
    watcher: EventWatcher,
    workers: int,
    jobs: int,
    mongodb_uri: str,
) -> tuple[float, int]:
    """Start `workers` worker processes on a fresh MongoDB database, then enqueue every job."""
    settings = base.model_copy(
        update={
            "mongodb_uri": mongodb_uri,
            "mongodb_database": f"premix_bench_{uuid.uuid4().hex[:12]}",
        }
    )
    store = await Store.open(settings)
    await store.ensure_indexes()
    pool = [WorkerProcess(settings, [], buyers=0) for _ in range(workers)]
    try:
        users = await _seed_users(store, net, jobs)
        await asyncio.gather(*(p.start() for p in pool))
        started = time.perf_counter()
        job_ids = await _enqueue_all(settings, users)
        seconds, done = await _all_ended(watcher, job_ids, started)
        await asyncio.gather(*(p.stop() for p in pool))
    finally:
        for p in pool:
            await p.kill()
        await store.drop_database()
        await store.close()
    return seconds, done


def throughput_store(services: contextlib.ExitStack) -> tuple[str, str] | None:
    """The MongoDB the worker processes share (URI, what it is): `PREMIX_BENCH_MONGODB_URI`,
    else a SecantusDB started here (kept until `services` closes); None without either."""
    uri = os.environ.get(MONGODB_URI_ENV)
    if uri:
        return uri, f"MongoDB at {MONGODB_URI_ENV}"
    try:
        server = services.enter_context(private_secantus())
    except ServerError:  # the dev extra (secantusdb) is not installed
        return None
    return server.url, "SecantusDB (--sync-on-commit), started by the benchmark"


async def bench_queue(
    *,
    redis_url: str,
    slot_ms: int,
    enqueues: int,
    pickups: int,
    worker_counts: list[int],
    throughput_jobs: int,
    repeat: int,
    progress: Progress = None,
) -> dict[str, Any]:
    """Return the JSON section `queue` (the Redis at `redis_url` is flushed: a private one)."""
    redis = Redis.from_url(redis_url)
    services = contextlib.ExitStack()
    try:
        mongodb = throughput_store(services)
        await redis.flushdb()
        with Localnet(slot_ms=slot_ms, seed=0) as net:
            settings = base_settings(redis_url, net.url)
            if progress is not None:
                progress(f"queue: enqueue latency over {enqueues} enqueues")
            if mongodb is not None:
                on_mongodb = settings.model_copy(update={"mongodb_uri": mongodb[0]})
                enqueue = await bench_enqueue(on_mongodb, enqueues, mongodb[1])
            else:
                enqueue = await bench_enqueue(settings, enqueues, "memory:// (no MongoDB-wire)")
            await redis.flushdb()
            async with EventWatcher(redis) as watcher:
                pickup, rss = await bench_pickup_and_rss(settings, net, watcher, pickups, progress)
                await redis.flushdb()
                throughput = await bench_throughput(
                    settings,
                    net,
                    watcher,
                    redis,
                    worker_counts=worker_counts,
                    jobs=throughput_jobs,
                    repeat=repeat,
                    mongodb=mongodb,
                    progress=progress,
                )
            reset_memory_stores(settings.mongodb_uri)
    finally:
        services.close()
        await close_queue()
        await redis.flushdb()
        await redis.aclose()
    return {
        "slot_ms": slot_ms,
        "worker_poll_delay_seconds": settings.worker_poll_delay_seconds,
        "enqueue": enqueue,
        "pickup": pickup,
        "worker_rss": rss,
        "throughput": throughput,
    }
