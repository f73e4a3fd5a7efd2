"""Capacity: the shared RPC budget, several premixes per worker process, concurrent enqueues.

Everything runs against a private Valkey and, for the worker processes, a shared SecantusDB
(or `PREMIX_BENCH_MONGODB_URI`), like `benchmarks.queue_bench`; the localnet runs in this
process and counts every HTTP request it receives, by arrival time.

- budget: 4 worker processes (`benchmarks.worker_process`) sharing
  `PREMIX_RPC_MAX_REQUESTS_PER_SECOND` = N drain a backlog of 10-wallet fast premixes for
  distinct users: the most requests the localnet saw in any 1 s window against N, the drain
  time (first enqueue to last terminal event), and the same backlog without a budget.
- concurrency: one worker process with `PREMIX_WORKER_MAX_JOBS` = 8 (and = 1, beside it) on a
  backlog of 10-wallet fast premixes for distinct users: jobs per second (first enqueue to last
  terminal event), the process's peak RSS, and whether every wallet holds exactly its plan.
- enqueue: 50 concurrent callers of `enqueue_premix_funds` (distinct users): calls per second
  and latency percentiles, beside the way enqueue worked before (SET NX for the lock, then arq's
  `enqueue_job`: 4 round trips), measured the same way on the same Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from bisect import bisect_right
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis
from solders.keypair import Keypair

from benchmarks.enqueue_bench import SEEDING_TIMEOUT_SECONDS, seed_wallets
from benchmarks.measure import Progress, Spread
from benchmarks.queue_bench import (
    JOB_TIMEOUT_SECONDS,
    THROUGHPUT_AMOUNT_SOL,
    THROUGHPUT_WALLETS,
    EventWatcher,
    base_settings,
)
from benchmarks.worker_process import WorkerProcess
from premix.constants import JOB_FUNCTION, LAMPORTS_PER_SOL
from premix.distribution import plan_distribution
from premix.jobs import PremixFundsJob
from premix.ledger import Ledger, RunStatus
from premix.localnet import Localnet
from premix.localnet.intercept import InterceptedRequest, Stage
from premix.queue import (
    QUEUED_JOB_EXPIRY_SECONDS,
    close_queue,
    enqueue_premix_funds,
    new_job_id,
    queue_pool,
)
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import take_user_lock

BUDGET_WORKERS = 4
CONCURRENT_MAX_JOBS = 8
ENQUEUE_CALLERS = 50
FUNDING_LAMPORTS = (THROUGHPUT_AMOUNT_SOL + 1) * LAMPORTS_PER_SOL
AMOUNT_LAMPORTS = THROUGHPUT_AMOUNT_SOL * LAMPORTS_PER_SOL
# Before this change (issue 13, measured on this machine): enqueue at 50 concurrent callers.
ENQUEUE_BEFORE = {"calls_per_second": 2_700, "p99_ms": 21.0}


class RequestClock:
    """Notes the arrival time of every HTTP request the localnet receives (any thread)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, request: InterceptedRequest) -> None:
        if request.stage is Stage.RECEIVED:
            with self._lock:
                self.arrivals.append(time.perf_counter())

    def busiest_second(self) -> int:
        """The most requests that arrived in any 1 s window."""
        with self._lock:
            times = sorted(self.arrivals)
        return max((bisect_right(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


async def _seed(store: Store, net: Localnet, jobs: int) -> list[tuple[str, Keypair, list[Keypair]]]:
    """Distinct users with a funded funding wallet and 10 buyer wallets each."""
    tag = uuid.uuid4().hex[:8]
    users = []
    for i in range(jobs):
        user, funding = f"bench-cap-{tag}-{i}", Keypair()
        buyers = [Keypair() for _ in range(THROUGHPUT_WALLETS)]
        await store.wallets.set_funding_wallet(user, funding)
        await store.wallets.add_buyer_wallets(user, buyers)
        net.airdrop(funding.pubkey(), FUNDING_LAMPORTS)
        users.append((user, funding, buyers))
    return users


async def _backlog(
    settings: Settings,
    net: Localnet,
    watcher: EventWatcher,
    *,
    processes: int,
    jobs: int,
) -> dict[str, Any]:
    """Start `processes` worker processes on a fresh database, enqueue `jobs` premixes for
    distinct users, wait for every terminal event; the figures and the money check."""
    settings = settings.model_copy(update={"mongodb_database": f"bench_{uuid.uuid4().hex[:12]}"})
    store = await Store.open(settings)
    await store.ensure_indexes()
    pool = [WorkerProcess(settings, [], buyers=0) for _ in range(processes)]
    clock = RequestClock()
    try:
        users = await _seed(store, net, jobs)
        await asyncio.gather(*(p.start() for p in pool))
        net.intercept(clock)
        started = time.perf_counter()
        job_ids = []
        for i, (user, _, _) in enumerate(users):
            queued = await enqueue_premix_funds(
                user, 5_000 + i, THROUGHPUT_AMOUNT_SOL, {"mode": "fast"}, settings=settings
            )
            if queued.job_id is None:
                raise RuntimeError(f"capacity job refused: {queued.message}")
            job_ids.append(queued.job_id)
        ended = [
            await watcher.wait_for(j, lambda e: e.is_terminal, JOB_TIMEOUT_SECONDS) for j in job_ids
        ]
        seconds = max(t for t, _ in ended) - started
        net.stop_intercepting(clock)
        reports = await asyncio.gather(*(p.stop() for p in pool))
        exact = await _paid_exactly_once(store, net, users, job_ids, settings)
    finally:
        net.stop_intercepting(clock)
        for p in pool:
            await p.kill()
        await store.drop_database()
        await store.close()
    return {
        "jobs": jobs,
        "completed": sum(1 for _, event in ended if event.status == "completed"),
        "seconds": seconds,
        "jobs_per_second": jobs / seconds,
        "rpc_requests": len(clock.arrivals),
        "busiest_second_requests": clock.busiest_second(),
        "paid_exactly_once": exact,
        "peak_rss_bytes": max(report["peak_rss_bytes"] for report in reports),
    }


async def _paid_exactly_once(
    store: Store,
    net: Localnet,
    users: list[tuple[str, Keypair, list[Keypair]]],
    job_ids: list[str],
    settings: Settings,
) -> bool:
    """Every buyer wallet holds exactly its planned amount (paid once), every funding wallet
    paid exactly the amount plus its run's fees: 5,000 lamports per landed transaction plus the
    priority fees its ledger recorded."""
    ledger = Ledger(store)
    tiers = settings.tier_table()
    plan = plan_distribution(AMOUNT_LAMPORTS, THROUGHPUT_WALLETS, tiers)
    for (_, funding, buyers), job_id in zip(users, job_ids, strict=True):
        run = await ledger.get(job_id)
        if run is None or run.status is not RunStatus.COMPLETED:
            return False
        if [net.balance(b.pubkey()) for b in buyers] != plan + [0] * (len(buyers) - len(plan)):
            return False
        totals = run.totals
        if totals.fee_lamports != 5_000 * totals.transactions + totals.priority_fee_lamports:
            return False
        spent = AMOUNT_LAMPORTS + totals.fee_lamports
        if net.balance(funding.pubkey()) != FUNDING_LAMPORTS - spent:
            return False
    return True


async def bench_budget(
    settings: Settings,
    net: Localnet,
    watcher: EventWatcher,
    redis: Redis,
    *,
    requests_per_second: float,
    jobs: int,
    progress: Progress,
) -> dict[str, Any]:
    """4 worker processes with and without a shared budget of `requests_per_second`."""
    runs = {}
    for budget in (requests_per_second, 0.0):
        if progress is not None:
            shown = f"{budget:g} requests/s" if budget else "no budget"
            progress(f"capacity: {BUDGET_WORKERS} worker processes, {jobs} jobs, {shown}")
        budgeted = settings.model_copy(update={"rpc_max_requests_per_second": budget})
        runs["budgeted" if budget else "unbudgeted"] = await _backlog(
            budgeted, net, watcher, processes=BUDGET_WORKERS, jobs=jobs
        )
        await redis.flushdb()
    return {"workers": BUDGET_WORKERS, "requests_per_second": requests_per_second, **runs}


async def bench_concurrency(
    settings: Settings,
    net: Localnet,
    watcher: EventWatcher,
    redis: Redis,
    *,
    jobs: int,
    progress: Progress,
) -> dict[str, Any]:
    """One worker process with `PREMIX_WORKER_MAX_JOBS` = 8, and = 1 beside it."""
    runs = []
    for max_jobs in (CONCURRENT_MAX_JOBS, 1):
        if progress is not None:
            progress(f"capacity: one worker process, max_jobs={max_jobs}, {jobs} jobs")
        concurrent = settings.model_copy(update={"worker_max_jobs": max_jobs})
        run = await _backlog(concurrent, net, watcher, processes=1, jobs=jobs)
        runs.append({"max_jobs": max_jobs, **run})
        await redis.flushdb()
    return {"wallets_per_job": THROUGHPUT_WALLETS, "mode": "fast", "runs": runs}


async def _enqueue_before(settings: Settings, user_id: str, chat_id: int) -> bool:
    """Enqueue as premix did before: validate, SET NX the user lock, arq's `enqueue_job`."""
    job = PremixFundsJob.from_request(user_id, chat_id, 0.5, None)
    redis: ArqRedis = queue_pool(settings.redis_url)
    job_id = new_job_id(job.user_id)
    if not await take_user_lock(redis, job.user_id, job_id, QUEUED_JOB_EXPIRY_SECONDS):
        return False
    queued = await redis.enqueue_job(
        JOB_FUNCTION,
        job.to_wire(),
        _job_id=job_id,
        _queue_name=settings.queue_name,
        _expires=QUEUED_JOB_EXPIRY_SECONDS,
    )
    return queued is not None


async def _concurrent_enqueues(settings: Settings, calls: int, *, before: bool) -> dict[str, Any]:
    latencies: list[float] = []
    refused = 0
    tag = uuid.uuid4().hex[:6]

    async def caller(number: int) -> None:
        nonlocal refused
        for i in range(number, calls, ENQUEUE_CALLERS):
            user = f"bench-ce-{tag}-{i}"
            started = time.perf_counter()
            if before:
                ok = await _enqueue_before(settings, user, 6_000 + i)
            else:
                ok = (await enqueue_premix_funds(user, 6_000 + i, 0.5, settings=settings)).success
            latencies.append((time.perf_counter() - started) * 1000)
            refused += not ok

    if not before:  # enqueue refuses users without wallets (the way before never looked)
        store = await Store.open(settings, timeout_seconds=SEEDING_TIMEOUT_SECONDS)
        try:
            await store.ensure_indexes()  # as a worker's start-up does: the read uses them
            users = [f"bench-ce-{tag}-{i}" for i in range(calls)]
            await seed_wallets(store, [f"bench-ce-{tag}-warm", *users], buyers=1)
        finally:
            await store.close()
    await enqueue_premix_funds(f"bench-ce-{tag}-warm", 1, 0.5, settings=settings)  # the pool
    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(ENQUEUE_CALLERS)))
    seconds = time.perf_counter() - started
    return {
        "calls": calls,
        "refused": refused,
        "calls_per_second": calls / seconds,
        "milliseconds": Spread.of(latencies).to_dict(),
    }


async def bench_concurrent_enqueue(
    settings: Settings, redis: Redis, *, calls: int, mongodb_uri: str | None, progress: Progress
) -> dict[str, Any]:
    """`calls` enqueues from 50 concurrent callers: premix's one script (with its wallet check,
    on a fresh database at `mongodb_uri`, else the memory store), and the way before."""
    if progress is not None:
        progress(f"capacity: {calls} enqueues from {ENQUEUE_CALLERS} concurrent callers")
    store = "memory://"
    if mongodb_uri is not None:
        store = "the shared MongoDB-wire store"
        database = f"bench_enqueue_{uuid.uuid4().hex[:12]}"
        settings = settings.model_copy(
            update={"mongodb_uri": mongodb_uri, "mongodb_database": database}
        )
    try:
        now = await _concurrent_enqueues(settings, calls, before=False)
    finally:
        if mongodb_uri is not None:
            dropping = await Store.open(settings, timeout_seconds=SEEDING_TIMEOUT_SECONDS)
            await dropping.drop_database()
            await dropping.close()
    await redis.flushdb()
    before = await _concurrent_enqueues(settings, calls, before=True)
    await redis.flushdb()
    return {
        "callers": ENQUEUE_CALLERS,
        "store": f"{store}, one buyer wallet per user",
        "one_script": now,
        "lock_then_arq_enqueue": before,
        "before_issue_13": ENQUEUE_BEFORE,
    }


async def bench_capacity(
    *,
    redis_url: str,
    mongodb_uri: str | None,
    slot_ms: int,
    budget_requests_per_second: float,
    budget_jobs: int,
    concurrent_jobs: int,
    enqueue_calls: int,
    progress: Progress = None,
) -> dict[str, Any]:
    """Return the JSON section `capacity` (the Redis at `redis_url` is flushed: a private one;
    without `mongodb_uri` the worker-process parts are None)."""
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
        with Localnet(slot_ms=slot_ms, seed=0) as net:
            settings = base_settings(redis_url, net.url)
            enqueue = await bench_concurrent_enqueue(
                settings, redis, calls=enqueue_calls, mongodb_uri=mongodb_uri, progress=progress
            )
            budget = concurrency = None
            if mongodb_uri is not None:
                shared = settings.model_copy(update={"mongodb_uri": mongodb_uri})
                async with EventWatcher(redis) as watcher:
                    budget = await bench_budget(
                        shared,
                        net,
                        watcher,
                        redis,
                        requests_per_second=budget_requests_per_second,
                        jobs=budget_jobs,
                        progress=progress,
                    )
                    concurrency = await bench_concurrency(
                        shared, net, watcher, redis, jobs=concurrent_jobs, progress=progress
                    )
    finally:
        await close_queue()
        await redis.flushdb()
        await redis.aclose()
    return {
        "slot_ms": slot_ms,
        "budget": budget,
        "concurrency": concurrency,
        "enqueue": enqueue,
    }
