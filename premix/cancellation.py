"""Cancelling a premix (`premix.queue.cancel_premix`, `premix cancel JOB`): the decision, taken
in one Lua script, and how a running job that was asked to stop ends.

- Queued (due now, deferred by a retry or by the user-busy defer: arq's queue entry, with any
  score, and no in-progress key): the script removes arq's queue entry, job record and try
  counter, frees the user lock if this job holds it and stores the cancelled receipt
  (`CANCELLED_JOB_PREFIX + job id`, JSON, kept as long as progress events) that
  `get_premix_result` answers with; then the terminal `cancelled` event is published. arq never
  starts the job. If arq was picking it up at that very moment (its in-progress key set, the
  job record gone), arq ends it as "job expired" without running premix's code.
- Running (arq's in-progress key exists), or queued with attempts of its run that may still
  land (only a worker settles those): the script sets `CANCEL_REQUEST_PREFIX + job id` (same
  lifetime) and, for a queued one, makes it due now. The execution reads that key at its safe
  points (each phase boundary; in phase 5, before each new attempt is signed: per transfer in
  standard mode, per round in fast mode), settles what it signed, marks the run `cancelled`,
  reports exactly what was sent, and frees the user. From phase 6 on it is too late: every
  transfer was sent, the job completes.
- Finished (arq's result or the cancelled receipt exists) or unknown: nothing changes.
"""

import json
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, cast

from arq.connections import ArqRedis
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import DeserializationError, Job, JobDef
from arq.utils import timestamp_ms
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from premix.amounts import format_sol
from premix.constants import CANCEL_REQUEST_PREFIX, CANCELLED_JOB_PREFIX
from premix.errors import PremixError
from premix.jobs import PremixFundsJob
from premix.ledger import FINISHED_STATUSES, Ledger, LedgerError, RunRecord, RunStatus
from premix.logs import get_logger
from premix.mixer import MixResult, Payout
from premix.progress import ProgressEmitter
from premix.receipts import receipt_from_arq
from premix.rpc import SolanaRpc
from premix.serialization import job_deserializer
from premix.settings import Settings
from premix.store import Store
from premix.sweep import SweepJob
from premix.user_lock import user_lock_key

log = get_logger(__name__)

# `premix.queue.new_job_id`, `premix.sweep.new_sweep_job_id`
JOB_USER_PATTERN: Final = re.compile(r"^(?:premix|sweep)-(.+)-[0-9]+$")
DECISION_TRIES: Final = 3  # a job that starts a try while it is being cancelled: read again


class CancelState(StrEnum):
    """Where a job stands after `cancel_premix` (`CancelResult.state`)."""

    CANCELLED = "cancelled"  # removed from the queue before it ran, or ended cancelled before
    CANCELLING = "cancelling"  # running: it stops at its next safe point
    COMPLETED = "completed"  # finished before: nothing was cancelled
    FAILED = "failed"  # finished before: nothing was cancelled
    UNKNOWN = "unknown"  # no queued, running or finished job has that id
    INVALID = "invalid"  # not a premix job id
    UNAVAILABLE = "unavailable"  # Redis or the store could not be reached: nothing changed


@dataclass(frozen=True)
class CancelResult:
    """What `cancel_premix` did: `success` is True when the job was cancelled or will stop;
    `message` is safe to show to the user."""

    success: bool
    message: str
    state: str


# KEYS: 1 queue, 2 job record, 3 in-progress, 4 result, 5 try counter, 6 user lock, 7 cancel
# request, 8 cancelled receipt. ARGV: 1 job id, 2 ttl s, 3 receipt JSON, 4 the try counter as
# read with the ledger ("" = none), 5 "settle" when the run has attempts that may still land,
# 6 now (ms). Returns the outcome: finished, cancelled (before), running, changed (a try began
# since the ledger was read: decide again), unknown, removed, settling.
_CANCEL_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[8]) == 1 then return 'cancelled' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('SET', KEYS[7], '1', 'EX', ARGV[2])
    return 'running'
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'unknown' end
if (redis.call('GET', KEYS[5]) or '') ~= ARGV[4] then return 'changed' end
if ARGV[5] == 'settle' then
    redis.call('SET', KEYS[7], '1', 'EX', ARGV[2])
    redis.call('ZADD', KEYS[1], 'XX', ARGV[6], ARGV[1])
    return 'settling'
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[5])
if redis.call('GET', KEYS[6]) == ARGV[1] then redis.call('DEL', KEYS[6]) end
redis.call('SET', KEYS[8], ARGV[3], 'EX', ARGV[2])
return 'removed'
"""


def cancel_request_key(job_id: str) -> str:
    """The Redis key that asks the running job `job_id` to stop at its next safe point."""
    return CANCEL_REQUEST_PREFIX + job_id


def cancelled_receipt_key(job_id: str) -> str:
    """The Redis key holding the receipt of job `job_id`, cancelled while queued."""
    return CANCELLED_JOB_PREFIX + job_id


async def cancel_requested(redis: Redis, job_id: str) -> bool:
    """True when `cancel_premix` asked job `job_id` to stop (one GET); False when Redis cannot
    tell (the job goes on: a cancel never costs money)."""
    try:
        return bool(await redis.exists(cancel_request_key(job_id)))
    except (RedisError, OSError) as e:
        log.warning("cancel_request_unreadable", job_id=job_id, error=type(e).__name__)
        return False


async def cancelled_receipt(redis: Redis, job_id: str) -> dict[str, Any] | None:
    """The receipt stored for job `job_id` cancelled while queued, or None."""
    raw = await redis.get(cancelled_receipt_key(job_id))
    if raw is None:
        return None
    receipt = json.loads(raw)
    return receipt if isinstance(receipt, dict) else None


def cancelled_message(mix: MixResult | None, *, started: bool = True) -> str:
    """'Premix cancelled: sent 1.2 SOL to 27 of 73 wallets in 27 transaction(s), fees
    0.000135 SOL; 46 wallets were not funded' (exactly what the ledger shows landed)."""
    if mix is None or not mix.transactions:
        before = "" if started else " before it started"
        return f"Premix cancelled{before}: nothing was sent"
    total = len(mix.wallets)
    funded = len(mix.funded)
    text = (
        f"Premix cancelled: sent {format_sol(mix.sent_lamports)} to {funded} of {total} wallets "
        f"in {mix.transactions} transaction(s), fees {format_sol(mix.fee_lamports)}"
    )
    if mix.pending:
        text += f"; {len(mix.pending)} transfer(s) may still land (a new premix settles them)"
    unfunded = total - funded - len(mix.pending)
    return text + (f"; {unfunded} wallets were not funded" if unfunded else "")


async def settle_cancelled_run(
    ledger: Ledger,
    run_id: str,
    payout: Payout | None,
    *,
    rpc: SolanaRpc,
    settings: Settings,
) -> tuple[MixResult | None, str]:
    """End the run of a job that stopped for a cancel: every attempt that may still land is
    waited for (`Payout.settle_open`), then the run is marked `cancelled` with the message
    (a run already finished keeps its status). Returns its report (None without a plan) and
    the message."""
    run = payout.record if payout is not None else await ledger.get(run_id)
    if run is None:
        return None, cancelled_message(None)
    if run.open_attempts():
        if payout is None:
            payout = await Payout.resume(ledger, run, rpc=rpc, settings=settings)
        await payout.settle_open()
        run = payout.record
    mix = MixResult.from_record(run) if run.planned else None
    message = cancelled_message(mix)
    if run.status not in FINISHED_STATUSES:
        await ledger.finish(run_id, RunStatus.CANCELLED, error=message)
    return mix, message


async def request_cancel(
    redis: ArqRedis, store: Store, settings: Settings, job_id: str
) -> CancelResult:
    """Cancel job `job_id` (see the module docstring). Raises Redis and PyMongo errors."""
    match = JOB_USER_PATTERN.match(job_id)
    if match is None:
        return CancelResult(False, _invalid(), CancelState.INVALID)
    ledger = Ledger(store)
    for _ in range(DECISION_TRIES):
        tries = await redis.get(retry_key_prefix + job_id)
        run = await ledger.run_of_job(job_id)
        info = await _job_info(redis, settings, job_id)
        settle = run is not None and run.status not in FINISHED_STATUSES and run.open_attempts()
        receipt = receipt_from_arq(job_id, "queued", info) or {"jobId": job_id}
        receipt.update(status="cancelled", jobStatus="not_found", success=False)
        keys = (
            settings.queue_name,
            job_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            result_key_prefix + job_id,
            retry_key_prefix + job_id,
            user_lock_key(match.group(1)),
            cancel_request_key(job_id),
            cancelled_receipt_key(job_id),
        )
        message = _removed_message(run, job_id)
        receipt.update(message=message, error=message)
        outcome = await cast(
            Awaitable[bytes | str],
            redis.eval(
                _CANCEL_SCRIPT,
                len(keys),
                *keys,
                job_id,
                str(settings.progress_ttl_seconds),
                json.dumps(receipt),
                tries.decode() if isinstance(tries, bytes) else (tries or ""),
                "settle" if settle else "",
                str(timestamp_ms()),
            ),
        )
        decided = outcome.decode() if isinstance(outcome, bytes) else outcome
        if decided != "changed":
            return await _answer(redis, store, settings, job_id, decided, run, info, message)
    return CancelResult(
        False,
        f"Premix {job_id} kept changing state; nothing was cancelled, try again",
        CancelState.UNAVAILABLE,
    )


async def _answer(
    redis: ArqRedis,
    store: Store,
    settings: Settings,
    job_id: str,
    decided: str,
    run: RunRecord | None,
    info: JobDef | None,
    message: str,
) -> CancelResult:
    bound_log = log.bind(job_id=job_id, outcome=decided)
    if decided in ("running", "settling"):
        bound_log.info("premix_cancel_requested")
        return CancelResult(
            True,
            f"Cancelling premix {job_id}: it stops at its next safe point (once the transfer "
            "or round in flight has settled) and reports exactly what was sent",
            CancelState.CANCELLING,
        )
    if decided == "removed":
        mix = MixResult.from_record(run) if run is not None and run.planned else None
        if run is not None and run.status not in FINISHED_STATUSES:
            # an earlier try stopped (transiently) with nothing left open: the run ends here
            try:
                await Ledger(store).finish(run.run_id, RunStatus.CANCELLED, error=message)
            except (PremixError, LedgerError, PyMongoError, OSError) as e:
                # the job is out of the queue either way; the run stays resumable by a retry
                bound_log.warning("cancelled_run_not_marked", error=type(e).__name__)
        bound_log.info("premix_cancelled_in_queue")
        job = _job_of(info)
        if job is not None:
            await ProgressEmitter(redis, settings, job_id, job).cancelled(
                None,
                message,
                sentLamports=mix.sent_lamports if mix is not None else 0,
                walletsFunded=len(mix.funded) if mix is not None else 0,
            )
        return CancelResult(True, message, CancelState.CANCELLED)
    state = await _finished_state(redis, settings, job_id, decided, run)
    if state is None:
        return CancelResult(
            False,
            f"Unknown premix {job_id}: no queued, running or finished job has that id; "
            "nothing was cancelled",
            CancelState.UNKNOWN,
        )
    return CancelResult(False, f"Premix {job_id} already {state}; nothing was cancelled", state)


async def _finished_state(
    redis: ArqRedis, settings: Settings, job_id: str, decided: str, run: RunRecord | None
) -> CancelState | None:
    """How the finished job `job_id` ended (None: no trace of it)."""
    if decided == "cancelled":
        return CancelState.CANCELLED
    if decided == "finished":
        job = Job(job_id, redis, _queue_name=settings.queue_name, _deserializer=job_deserializer)
        try:
            stored = await job.result_info()
        except DeserializationError:
            stored = None
        result = stored.result if stored is not None else None
        if isinstance(result, dict) and result.get("status") == CancelState.CANCELLED:
            return CancelState.CANCELLED
        if isinstance(result, dict) and result.get("success") is True:
            return CancelState.COMPLETED
        return CancelState.FAILED
    latest = (run.retry_jobs[-1] if run.retry_jobs else run.run_id) if run is not None else None
    if run is not None and latest == job_id and run.status in FINISHED_STATUSES:
        return CancelState(run.status.value)  # arq's result expired; the ledger remembers
    return None


async def _job_info(redis: ArqRedis, settings: Settings, job_id: str) -> JobDef | None:
    job = Job(job_id, redis, _queue_name=settings.queue_name, _deserializer=job_deserializer)
    try:
        return await job.info()
    except DeserializationError:
        return None


def _job_of(info: JobDef | None) -> PremixFundsJob | None:
    if info is None or not info.args or not isinstance(info.args[0], dict):
        return None
    try:
        return PremixFundsJob.model_validate(info.args[0])
    except ValidationError:
        pass
    try:  # a sweep: what its progress events need of it
        return SweepJob.model_validate(info.args[0]).as_premix_job()
    except ValidationError:
        return None


def _removed_message(run: RunRecord | None, job_id: str) -> str:
    """What the user is told of a job taken out of the queue before this try ran."""
    if run is None:
        return cancelled_message(None, started=False)
    if run.status in FINISHED_STATUSES:  # a retry job that never started: its run is as it was
        return f"Premix cancelled before it started: nothing more was sent for {run.run_id}"
    return cancelled_message(MixResult.from_record(run) if run.planned else None)


def _invalid() -> str:
    return "Invalid job id: expected premix-<userId>-<unix ms>; nothing was cancelled"
