"""`get_premix_result`: a job's receipt, read from its ledger run (what equals the chain) with
arq's state of the job (re-exported by `premix.queue`; built by `premix.receipts`)."""

from typing import Any

from arq.jobs import DeserializationError, Job, JobDef, JobResult

from premix.cancellation import cancelled_receipt
from premix.ledger import Ledger
from premix.logs import get_logger
from premix.queue_pool import queue_pool
from premix.receipts import JobRecordUnreadable, receipt_from_arq, receipt_from_run
from premix.serialization import job_deserializer
from premix.settings import Settings, get_settings
from premix.wallet_check import enqueue_store

log = get_logger(__name__)


async def get_premix_result(job_id: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """Return the receipt of job `job_id` (`premix.receipts`: every planned wallet with its
    position, address, lamports, signature, slot and status, and the totals), or None when
    neither the ledger nor arq knows the job.

    Read from the ledger run (what equals the chain), with arq's state of the job; a job with
    no run yet is answered from arq (`status` `queued`, no wallets). `settings` defaults to
    `get_settings()`. Raises `JobRecordUnreadable` when there is no run and arq's record of the
    job is not premix JSON; Redis or PyMongo errors when a store is unreachable.
    """
    settings = settings if settings is not None else get_settings()
    redis = queue_pool(settings.redis_url)
    job = Job(job_id, redis, _queue_name=settings.queue_name, _deserializer=job_deserializer)
    job_status = str((await job.status()).value)
    unreadable: DeserializationError | None = None
    try:
        info = await job.info()
    except DeserializationError as e:  # arq's wrap of premix's: not JSON; the ledger answers
        log.warning("premix_result_job_unreadable", job_id=job_id)
        info, unreadable = None, e
    run = await Ledger(await enqueue_store(settings)).run_of_job(job_id)  # shared, not closed
    if run is not None:
        latest = run.retry_jobs[-1] if run.retry_jobs else run.run_id
        if latest != job_id:  # the run went on in a retry job: its state and result answer
            job = Job(
                latest, redis, _queue_name=settings.queue_name, _deserializer=job_deserializer
            )
            job_status = str((await job.status()).value)
            info = await _job_info_or_none(job)
        stored = info if isinstance(info, JobResult) else None
        return receipt_from_run(job_id, run, job_status, stored)
    cancelled = await cancelled_receipt(redis, job_id)
    if cancelled is not None:  # taken out of the queue by `cancel_premix` before it ran
        return cancelled
    if unreadable is not None:
        raise JobRecordUnreadable(
            f"job {job_id} has no ledger run and its record in Redis is not premix JSON"
        ) from unreadable
    return receipt_from_arq(job_id, job_status, info)


async def _job_info_or_none(job: Job) -> JobDef | None:
    try:
        return await job.info()
    except DeserializationError:
        log.warning("premix_result_job_unreadable", job_id=job.job_id)
        return None
