"""Prometheus metrics (`PREMIX_METRICS_PORT`): a real worker serving them while it runs a
demo-sized premix (25 SOL to 36 of 73 wallets, fast mode) on a localnet answering some requests with
503; the scrape before and after shows exactly what the chain shows (lamports sent, fees
paid, transfers funded), one completed job, and the RPC requests by method and outcome; on
both stores. Off by default: no port is served."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from arq.jobs import Job
from arq.worker import Worker
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds, queue_pool
from premix.serialization import job_deserializer
from premix.servers import free_port
from premix.settings import Settings
from premix.store import Store
from premix.worker import WorkerStartupError, shutdown, startup, worker_settings
from tests.worker.helpers import create_user, job_result

SOL = 10**9
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample the worker serves, by (name, labels)."""
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@contextlib.asynccontextmanager
async def serving_worker(settings: Settings) -> AsyncIterator[None]:
    """A real arq worker (not burst) serving its metrics until the block ends."""
    worker = Worker(**worker_settings(settings), handle_signals=False, ctx={"settings": settings})
    task = asyncio.create_task(worker.async_run())
    try:
        async with asyncio.timeout(30):
            while "metrics_server" not in worker.ctx:
                await asyncio.sleep(0.02)
        yield
    finally:
        await worker.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def test_a_scrape_after_a_demo_sized_premix_shows_what_the_chain_shows(
    settings: Settings, store: Store, net: Localnet
) -> None:
    port = free_port()
    settings = settings.model_copy(update={"metrics_port": port, "job_max_tries": 10})
    user = await create_user(store, net, "u1", buyers=73)
    async with serving_worker(settings):
        before = scrape(port)
        rule = net.faults.inject("http_5xx", method="getSignatureStatuses", count=2, status=503)
        queued = await enqueue_premix_funds("u1", 42, 25, {"mode": "fast"}, settings=settings)
        assert queued.job_id is not None
        async with asyncio.timeout(60):
            while (await job_result_or_none(settings, queued.job_id)) is None:
                await asyncio.sleep(0.05)
        after = scrape(port)

    result = (await job_result(settings, queued.job_id)).result
    assert result["success"] is True and rule.fired == 2
    totals = result["totals"]
    funding_loss = user.funding_lamports - net.balance(user.funding.pubkey())
    assert sum(user.buyer_balances(net)) == 25 * SOL
    assert delta(before, after, "premix_lamports_sent_total") == 25 * SOL
    assert delta(before, after, "premix_fees_lamports_total") == funding_loss - 25 * SOL
    assert totals["feeLamports"] == funding_loss - 25 * SOL
    funded = delta(before, after, "premix_transfers_total", mode="fast", status="funded")
    assert funded == totals["walletsFunded"] == len(user.plan(25 * SOL))
    assert delta(before, after, "premix_transfers_total", mode="fast", status="failed") == 0
    assert delta(before, after, "premix_jobs_total", outcome="completed") == 1
    assert delta(before, after, "premix_jobs_total", outcome="failed") == 0
    assert delta(before, after, "premix_job_duration_seconds_count") == 1
    assert delta(before, after, "premix_job_duration_seconds_sum") > 0
    rpc = "premix_rpc_requests_total"
    sends = delta(before, after, rpc, method="sendTransaction", outcome="ok")
    assert sends >= totals["transactions"]
    assert delta(before, after, rpc, method="getSignatureStatuses", outcome="transient") == 2
    assert delta(before, after, rpc, method="getSignatureStatuses", outcome="ok") >= 1
    assert delta(before, after, "premix_ledger_conflicts_total") == 0
    assert after[("premix_queue_depth", ())] >= 0


async def job_result_or_none(settings: Settings, job_id: str) -> object:
    """arq's stored result of the job (stored after the ledger run completed: the worker must
    not be closed before it, or the job's ending is cancelled), or None while there is none."""
    job = Job(job_id, queue_pool(settings.redis_url), _deserializer=job_deserializer)
    return await job.result_info()


async def test_metrics_are_off_by_default_and_a_busy_port_refuses_the_start(
    settings: Settings, store: Store, redis_client: Redis
) -> None:
    assert Settings().metrics_port is None
    quiet: dict[str, object] = {"settings": settings, "redis": redis_client}
    await startup(quiet)
    assert quiet["metrics_server"] is None
    await shutdown(quiet)
    port = free_port()
    holder = await asyncio.start_server(lambda r, w: None, "0.0.0.0", port)
    busy: dict[str, object] = {
        "settings": settings.model_copy(update={"metrics_port": port}),
        "redis": redis_client,
    }
    try:
        with pytest.raises(WorkerStartupError) as refused:
            await startup(busy)
    finally:
        await shutdown(busy)
        holder.close()
        await holder.wait_closed()

    assert str(refused.value) == (
        f"Worker refused to start: PREMIX_METRICS_PORT {port} cannot be served "
        "(Address already in use); each worker process on a host needs its own port"
    )
