"""The arq worker: `WorkerSettings` (run `arq premix.worker.WorkerSettings`) and the premix job.

A worker process opens its services once (`startup`): the store, the Telegram notifier, logging;
arq's own Redis pool (`ctx["redis"]`) publishes progress. `premix_funds` runs the six phases of
SPEC section 3 for one job and returns a JSON-safe result; it emits a progress event per phase.

Failures: a permanent `PremixError` ends the job (failed event, Telegram message, user lock
released, result with `success: false`); a transient one is retried by arq with backoff and the
user lock kept; on the last try it ends the job like a permanent one. A cancelled job (worker
stopped or killed) is re-run by arq and resumes from the ledger.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, NoReturn

from arq.connections import RedisSettings
from arq.worker import Retry, func, get_kwargs
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from solders.keypair import Keypair

from premix.amounts import format_sol
from premix.constants import JOB_FUNCTION, QUEUE_NAME
from premix.distribution import DistributionError, TierTable, plan_distribution
from premix.errors import (
    FundingWalletNotFound,
    InvalidParameters,
    NoBuyerWallets,
    PremixError,
    TransientError,
)
from premix.jobs import PremixFundsJob, describe_validation_error
from premix.ledger import Ledger, LedgerError, RunStatus
from premix.logs import configure_logging, get_logger
from premix.notify import Notifier
from premix.progress import Phase, ProgressEmitter
from premix.queue import refresh_user_lock, release_user_lock, user_lock_holder
from premix.serialization import job_deserializer, job_serializer
from premix.settings import Settings, get_settings
from premix.store import Store

log = get_logger(__name__)

# Seconds before retry n (1-based) of a job that failed transiently; the last value repeats.
RETRY_BACKOFF_SECONDS: Final = (1, 2, 5, 10, 30)
# A job finding another job of the same user running waits this long and tries again.
USER_BUSY_RETRY_SECONDS: Final = 5
KEEP_RESULT_SECONDS: Final = 86_400


async def startup(ctx: dict[str, Any]) -> None:
    """Open the process-wide services into `ctx` (settings may be pre-set there by tests)."""
    settings: Settings = ctx.setdefault("settings", get_settings())
    configure_logging(settings)
    store = await Store.open(settings)
    await store.ensure_indexes()
    ctx["store"] = store
    ctx["notifier"] = Notifier(settings)
    # TODO(lead): ctx["rpc"] = SolanaRpc.from_settings(settings) once premix/rpc.py is committed.
    log.info("worker_started", queue=QUEUE_NAME, memory_store=store.is_memory)


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what `startup` opened."""
    notifier: Notifier | None = ctx.get("notifier")
    if notifier is not None:
        await notifier.aclose()
    store: Store | None = ctx.get("store")
    if store is not None:
        await store.close()
    log.info("worker_stopped")


async def premix_funds(ctx: dict[str, Any], payload: object) -> dict[str, Any]:
    """The arq job `premix_funds`: run the six phases for `payload` (a `PremixFundsJob` on the
    wire). Returns the JSON-safe result; raises arq `Retry` for a transient failure."""
    job_id: str = ctx["job_id"]
    try:
        job = PremixFundsJob.model_validate(payload)
    except ValidationError as e:
        # A payload written to Redis by hand: fail cleanly, nothing to retry.
        message = f"Invalid parameters: {describe_validation_error(e)}"
        log.warning("job_payload_invalid", job_id=job_id, reason=message)
        user_id = payload.get("userId") if isinstance(payload, dict) else None
        if isinstance(user_id, str):
            await _release_quietly(ctx["redis"], user_id, job_id)
        return failure_result(job_id, message)
    return await PremixRun(ctx, job_id, job).execute()


def success_result(
    job_id: str,
    job: PremixFundsJob,
    message: str,
    *,
    wallets: Sequence[dict[str, Any]] = (),
    fee_lamports: int = 0,
    transactions: int = 0,
    signatures: Sequence[str] = (),
) -> dict[str, Any]:
    """The job's result when the premix completed (camelCase, JSON-safe)."""
    sent = sum(int(wallet["lamports"]) for wallet in wallets if wallet.get("funded", True))
    return {
        "success": True,
        "message": message,
        "jobId": job_id,
        "userId": job.user_id,
        "mode": job.mode,
        "amountLamports": job.amount_lamports,
        "wallets": list(wallets),
        "totals": {
            "sentLamports": sent,
            "feeLamports": fee_lamports,
            "transactions": transactions,
            "walletsFunded": len(wallets),
        },
        "signatures": list(signatures),
    }


def failure_result(
    job_id: str,
    message: str,
    *,
    job: PremixFundsJob | None = None,
    funded: Sequence[tuple[str, int]] = (),
) -> dict[str, Any]:
    """The job's result when it ended without completing: the reason and what was sent."""
    return {
        "success": False,
        "message": message,
        "jobId": job_id,
        "userId": job.user_id if job is not None else None,
        "mode": job.mode if job is not None else None,
        "amountLamports": job.amount_lamports if job is not None else None,
        "wallets": [
            {"publicKey": public_key, "lamports": lamports, "funded": True}
            for public_key, lamports in funded
        ],
        "totals": {
            "sentLamports": sum(lamports for _, lamports in funded),
            "walletsFunded": len(funded),
        },
        "signatures": [],
    }


class PremixRun:
    """One attempt at one job: the six phases, their events, and how the attempt ends."""

    def __init__(self, ctx: dict[str, Any], job_id: str, job: PremixFundsJob) -> None:
        self.settings: Settings = ctx["settings"]
        self.redis: Redis = ctx["redis"]
        self.store: Store = ctx["store"]
        self.notifier: Notifier = ctx["notifier"]
        self.job_id = job_id
        self.job = job
        self.job_try: int = ctx.get("job_try", 1)
        self.progress = ProgressEmitter(self.redis, self.settings, job_id, job)
        self.log = log.bind(job_id=job_id, user_id=job.user_id, job_try=self.job_try)
        self.phase = Phase.JOB_STARTED
        self.ledger = Ledger(self.store)
        self.run_opened = False

    async def execute(self) -> dict[str, Any]:
        """Run the phases; return the result, or raise `Retry` for a transient failure."""
        if not await self._hold_user_lock():
            holder = await user_lock_holder(self.redis, self.job.user_id)
            self.log.info("user_busy_job_deferred", running_job_id=holder)
            raise Retry(defer=USER_BUSY_RETRY_SECONDS)
        try:
            async with self._lock_heartbeat():
                result = await self._phases()
        except PremixError as e:
            if not e.permanent and self.job_try < self.settings.job_max_tries:
                self._retry(e)
            return await self._fail(e)
        except (RedisError, OSError, PyMongoError) as e:
            transient = TransientError(f"{type(e).__name__} while talking to a service")
            if self.job_try < self.settings.job_max_tries:
                self._retry(transient)
            return await self._fail(transient)
        except Exception as e:
            self.log.exception("job_crashed", phase=int(self.phase))
            return await self._fail(PremixError(f"internal error ({type(e).__name__})"))
        await _release_quietly(self.redis, self.job.user_id, self.job_id)
        return result

    async def _phases(self) -> dict[str, Any]:
        # Phase 1: job accepted; the ledger run is opened, or resumed by a re-run.
        run = await self.ledger.open_run(
            self.job_id,
            user_id=self.job.user_id,
            mode=self.job.mode,
            amount_lamports=self.job.amount_lamports,
        )
        self.run_opened = True
        # TODO(lead): a run already COMPLETED (worker died after the last write) should go
        # straight to phase 6 with the ledger's totals instead of planning again.
        await self.progress.started(
            "Resuming premix job" if self.job_try > 1 else "Premix job accepted",
            amount_sol=str(self.job.mix_amount),
            mode=self.job.mode,
            attempt=self.job_try,
        )

        self.phase = Phase.VALIDATING_PARAMETERS
        await self.progress.phase(self.phase, description="Checking funding and buyer wallets")
        funding, buyers = await self._load_wallets()

        self.phase = Phase.CALCULATING_DISTRIBUTION
        await self.progress.phase(
            self.phase, description=f"Planning {format_sol(self.job.amount_lamports)}"
        )
        if run.plan:  # a re-run keeps the plan it started with
            recipients = [entry.recipient for entry in run.plan]
            amounts = [entry.lamports for entry in run.plan]
        else:
            amounts = self._plan(len(buyers))
            recipients = [str(wallet.pubkey()) for wallet in buyers[: len(amounts)]]
            run = await self.ledger.record_plan(self.job_id, recipients, amounts)

        self.phase = Phase.CHECKING_BALANCES
        await self.progress.phase(
            self.phase,
            description=f"Checking the funding wallet holds {format_sol(sum(amounts))} plus fees",
        )
        await self._check_balances(funding, recipients, amounts)

        self.phase = Phase.INITIALIZING_MIXER
        await self.progress.phase(
            self.phase, description=f"Sending {len(amounts)} transfers ({self.job.mode} mode)"
        )
        return await self._run_mixer(funding, recipients, amounts)

    async def _load_wallets(self) -> tuple[Keypair, list[Keypair]]:
        wallets = self.store.wallets
        funding = await wallets.funding_wallet(self.job.user_id)
        if funding is None:
            raise FundingWalletNotFound(self.job.user_id)
        limit = min(self.job.max_wallets or self.settings.max_wallets, self.settings.max_wallets)
        buyers = await wallets.buyer_wallets(self.job.user_id, limit=limit)
        if not buyers:
            raise NoBuyerWallets(self.job.user_id)
        return funding, buyers

    def _plan(self, wallet_count: int) -> list[int]:
        try:
            table = TierTable.from_settings(self.settings)
            return plan_distribution(self.job.amount_lamports, wallet_count, table)
        except DistributionError as e:
            raise InvalidParameters(f"mixAmount: {e}") from e

    async def _check_balances(
        self, funding: Keypair, recipients: Sequence[str], amounts: Sequence[int]
    ) -> None:
        # TODO(lead): needs premix.rpc.SolanaRpc (ctx["rpc"]) and the mixer's fee estimate:
        # needed = sum(amounts) + fees of every transaction + settings.fee_buffer_sol;
        # available = await rpc.balance(funding.pubkey()); if available < needed raise
        # InsufficientBalance(needed_lamports=needed, available_lamports=available, breakdown=...).
        raise NotImplementedError("phase 4 needs premix.rpc, which is not committed yet")

    async def _run_mixer(
        self, funding: Keypair, recipients: Sequence[str], amounts: Sequence[int]
    ) -> dict[str, Any]:
        # TODO(lead): result = await run_mixer(run_id=self.job_id, mode=self.job.mode,
        #   funding=funding, recipients=[Pubkey.from_string(r) for r in recipients],
        #   amounts=amounts, rpc=..., ledger=..., settings=self.settings,
        #   on_progress=lambda done, total: self.progress.mixer_progress(done, total));
        # MixerFailed -> self._fail (permanent, with its funded/unfunded report);
        # then phase 6: verify balances on chain, notifier.notify_completed(...),
        # progress.completed(...), ledger.finish(...), return success_result(...).
        raise NotImplementedError("phase 5 needs premix.mixer, which is not committed yet")

    def _retry(self, error: PremixError) -> NoReturn:
        delay = RETRY_BACKOFF_SECONDS[min(self.job_try, len(RETRY_BACKOFF_SECONDS)) - 1]
        self.log.warning(
            "job_retrying", phase=int(self.phase), reason=error.user_message, retry_in=delay
        )
        raise Retry(defer=delay) from error

    async def _fail(self, error: PremixError) -> dict[str, Any]:
        message = error.user_message
        funded = list(getattr(error, "funded", ()))
        self.log.warning("job_failed", phase=int(self.phase), reason=message)
        await self.progress.failed(self.phase, message)
        if self.run_opened:
            await self._finish_run_failed(message)
        await self.notifier.notify_failed(
            self.job.user_chat_id,
            job_id=self.job_id,
            reason=message,
            amount_lamports=self.job.amount_lamports,
            funded=funded,
        )
        await _release_quietly(self.redis, self.job.user_id, self.job_id)
        return failure_result(self.job_id, message, job=self.job, funded=funded)

    async def _finish_run_failed(self, message: str) -> None:
        try:
            await self.ledger.finish(self.job_id, RunStatus.FAILED, error=message)
        except (LedgerError, PremixError, PyMongoError) as e:
            self.log.warning("ledger_not_marked_failed", error=type(e).__name__)

    async def _hold_user_lock(self) -> bool:
        return await refresh_user_lock(
            self.redis, self.job.user_id, self.job_id, self.settings.user_lock_ttl_seconds
        )

    @contextlib.asynccontextmanager
    async def _lock_heartbeat(self) -> AsyncIterator[None]:
        """Keep the user lock alive while the phases run (it expires only if the worker dies)."""

        async def beat() -> None:
            interval = max(1.0, self.settings.user_lock_ttl_seconds / 3)
            while True:
                await asyncio.sleep(interval)
                try:
                    await self._hold_user_lock()
                except (RedisError, OSError) as e:
                    self.log.warning("user_lock_not_refreshed", error=type(e).__name__)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _release_quietly(redis: Redis, user_id: str, job_id: str) -> None:
    try:
        await release_user_lock(redis, user_id, job_id)
    except (RedisError, OSError) as e:
        log.warning("user_lock_not_released", job_id=job_id, error=type(e).__name__)


_ENV_SETTINGS = get_settings()


class WorkerSettings:
    """`arq premix.worker.WorkerSettings`; values come from the environment (`PREMIX_*`)."""

    functions: Final = [func(premix_funds, name=JOB_FUNCTION)]
    queue_name: Final = QUEUE_NAME
    max_jobs: Final = 1  # one run per process; scale with more processes
    job_serializer: Final = job_serializer  # JSON, never pickle
    job_deserializer: Final = job_deserializer
    poll_delay: Final = _ENV_SETTINGS.worker_poll_delay_seconds  # low: fast job pickup
    redis_settings: Final = RedisSettings.from_dsn(_ENV_SETTINGS.redis_url)
    job_timeout: Final = _ENV_SETTINGS.job_timeout_seconds
    max_tries: Final = _ENV_SETTINGS.job_max_tries
    keep_result: Final = KEEP_RESULT_SECONDS
    on_startup: Final = startup
    on_shutdown: Final = shutdown


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Return arq `Worker` keyword arguments: `WorkerSettings` with values from `settings`."""
    return {
        **get_kwargs(dict(vars(WorkerSettings))),
        "poll_delay": settings.worker_poll_delay_seconds,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "job_timeout": settings.job_timeout_seconds,
        "max_tries": settings.job_max_tries,
    }
