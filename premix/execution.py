"""One execution of a premix job: the six phases of SPEC section 3, their progress events, and
how the execution ends.

Failures: a permanent `PremixError` ends the job (failed event, Telegram message, ledger run
marked failed, user lock released, result with `success: false`); a transient one is retried by
arq with backoff (`settings.retry_backoff_seconds`), keeping the user lock, after a `retrying`
event, and the retry resumes the same ledger run (run id = job id); on the last try it ends the
job like a permanent one. A worker that dies leaves the job in the queue: arq runs it again once
its in-progress marker expires, and the ledger makes that re-run settle what was sent before it
sends anything (nothing is paid twice). arq delivers a job once more than `job_max_tries`: that
delivery sends nothing; it reports what the run sent and fails the job. A cancel request
(`premix.cancellation`) ends it `cancelled` at its next phase boundary or engine safe point.

arq delivers a job at least once: if a stalled process outlives the job's in-progress marker, arq
starts the job again while the first execution still holds it. Money stays exact (every ledger
write is a compare-and-swap); the older execution, seeing arq's try counter move past its own
try, stops at its next event or ending without a word (`JobExecution.step_aside`), so the user
hears only from the newer one.
"""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, NoReturn

from arq.worker import Retry, RetryJob
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from premix import top_up as top_ups
from premix.cancellation import cancel_requested, settle_cancelled_run
from premix.earlier_runs import settle_earlier_runs
from premix.errors import Cancelled, PremixError, TransientError
from premix.jobs import PremixFundsJob
from premix.ledger import Ledger, LedgerError, RunRecord, RunStatus, TopUpEntry
from premix.logs import get_logger, redact_text
from premix.mixer import (
    MixerFailed,
    MixerProgress,
    MixResult,
    Payout,
)
from premix.notify import Notifier
from premix.planning import (
    balance_check_description,
    check_balances,
    load_wallets,
    planning_description,
    record_plan,
)
from premix.progress import Phase, ProgressEmitter
from premix.results import build_result, completion_message
from premix.rpc import RpcRequestError, SolanaRpc
from premix.settings import Settings
from premix.store import Store
from premix.tries import Superseded, TryGuard
from premix.user_lock import HeldUserLock, user_lock_holder

log = get_logger(__name__)

DEADLINE_MARGIN_SECONDS: Final = 10  # our own deadline ends an execution this much before arq's


class JobExecution:
    """One execution (try) of one job: the six phases, their events, and how it ends."""

    def __init__(self, ctx: dict[str, Any], job_id: str, job: PremixFundsJob) -> None:
        self.settings: Settings = ctx["settings"]
        self.redis: Redis = ctx["redis"]
        self.store: Store = ctx["store"]
        self.rpc: SolanaRpc = ctx["rpc"]
        self.notifier: Notifier = ctx["notifier"]
        self.job_id = job_id
        self.job = job
        # The ledger run: the job's own id, or the run a `retry_premix` job continues.
        self.run_id = job.run_id or job_id
        self.job_try: int = ctx.get("job_try", 1)
        self.guard = TryGuard(job_id, self.job_try)
        self.progress = ProgressEmitter(self.redis, self.settings, job_id, job, guard=self.guard)
        self.log = log.bind(job_id=job_id, user_id=job.user_id, job_try=self.job_try)
        self.phase = Phase.JOB_STARTED
        self.ledger = Ledger(self.store)
        self.run_opened = False
        self.payout: Payout | None = None  # the engine's payout, once phase 4 or an ending made it
        self.top_up: list[TopUpEntry] | None = None  # a top-up's wallets, once phase 3 read them
        self.lock = HeldUserLock(
            self.redis, job.user_id, self.guard, self.settings.user_lock_ttl_seconds
        )
        self.started = time.monotonic()

    async def execute(self) -> dict[str, Any]:
        """Run the phases; return the result, or raise `Retry` for a transient failure (arq's
        `RetryJob` when a newer execution took the job over: see `step_aside`)."""
        try:
            return await self._execute()
        except Superseded:
            return await self.step_aside()

    async def _execute(self) -> dict[str, Any]:
        if self.job_try > self.settings.job_max_tries:
            return await self._give_up()
        try:
            holds_lock = await self.lock.hold()
        except (RedisError, OSError) as e:
            return await self._retry(
                TransientError(f"{type(e).__name__} while taking the user lock")
            )
        if not holds_lock and await self._stopping():
            return await self._cancelled()  # cancelled while it waited for the user's premix
        if not holds_lock:
            holder = await user_lock_holder(self.redis, self.job.user_id)
            self.log.info("user_busy_job_deferred", running_job_id=holder)
            raise Retry(defer=self.settings.user_busy_retry_seconds)
        try:
            async with self.lock.kept_alive(), asyncio.timeout(self._deadline_seconds()):
                result = await self._phases()
        except Superseded:
            raise
        except TimeoutError:
            # Our own deadline, just under arq's job timeout (which would fail the job silently):
            # hand the job back so a re-run resumes the same ledger run.
            timeout = TransientError(f"the run took longer than {self._deadline_seconds():g} s")
            if self.job_try < self.settings.job_max_tries:
                return await self._retry(timeout)
            return await self._fail(timeout)
        except PremixError as e:
            if not e.permanent and self.job_try < self.settings.job_max_tries:
                return await self._retry(e)
            return await self._fail(e)
        except (RedisError, OSError, PyMongoError) as e:
            transient = TransientError(f"{type(e).__name__} while talking to a service")
            if self.job_try < self.settings.job_max_tries:
                return await self._retry(transient)
            return await self._fail(transient)
        except RpcRequestError as e:
            detail = f"the Solana RPC endpoint refused a request ({redact_text(str(e))})"
            return await self._fail(PremixError(detail))
        except Cancelled:
            return await self._cancelled()
        except Exception as e:
            self.log.exception("job_crashed", phase=int(self.phase))
            return await self._fail(PremixError(f"internal error ({type(e).__name__})"))
        return result

    async def _phases(self) -> dict[str, Any]:
        # Phase 1: job accepted; the ledger run is opened, or resumed by a re-run.
        run = await self._open_run()
        self.run_opened = True
        resumed = self.job_try > 1 or run.status is not RunStatus.OPENED
        await self.progress.started(
            "Resuming premix job" if resumed else "Premix job accepted",
            amountSol=str(self.job.mix_amount),
            mode=self.job.mode,
            jobTry=self.job_try,
        )
        if run.status is RunStatus.COMPLETED:
            # Delivered again after the run completed (the worker died at the very end):
            # nothing is sent; only phase 6 runs.
            self.log.info("run_already_completed")
            return await self._complete(await self._payout(run))

        await self._enter(Phase.VALIDATING_PARAMETERS, "Checking funding and buyer wallets")
        funding, buyers = await load_wallets(self.store, self.settings, self.job)

        await self._enter(Phase.CALCULATING_DISTRIBUTION, planning_description(self.job))
        if not run.planned:  # a re-run keeps the plan it started with
            run = await record_plan(
                self.ledger,
                self.rpc,
                self.settings,
                self.job,
                run_id=self.run_id,
                funding=funding,
                buyers=buyers,
                settle_earlier_runs=partial(
                    self._settle_earlier_runs, Phase.CALCULATING_DISTRIBUTION
                ),
            )
        self.top_up = run.top_up
        if run.top_up is not None:  # both figures: planned and missing
            await self.progress.phase(
                Phase.CALCULATING_DISTRIBUTION, description=top_ups.planning_description(run)
            )

        await self._enter(Phase.CHECKING_BALANCES, balance_check_description(self.job, run))
        payout = await self._payout(run)  # settles what an earlier execution left open
        await self._settle_earlier_runs()
        await check_balances(self.rpc, self.settings, funding, payout, self.log)
        if not run.plan:  # a top-up whose every wallet holds its planned amount: nothing to send
            return await self._complete(payout)

        self.phase = Phase.INITIALIZING_MIXER
        funded = len(payout.record.funded_positions())  # a resumed run counts what it funded
        await self.progress.mixer_progress(funded, len(run.plan), f"{self.job.mode} mode")
        await payout.pay(funding, on_progress=self._mixer_progress, should_stop=self._stopping)
        return await self._complete(payout)

    async def _open_run(self) -> RunRecord:
        """Open the job's run (a re-run gets the stored one); a retry job's run must exist,
        belong to the job's user and name the job among its retries."""
        if self.run_id == self.job_id:
            return await self.ledger.open_run(
                self.run_id,
                user_id=self.job.user_id,
                mode=self.job.mode,
                amount_lamports=self.job.amount_lamports,
                request=self.job.to_wire(),
            )
        run = await self.ledger.get(self.run_id)
        if run is None or run.user_id != self.job.user_id or self.job_id not in run.retry_jobs:
            raise PremixError(f"premix {self.run_id}, which this job retries, cannot be continued")
        return run

    # --- phase 4 ---

    async def _settle_earlier_runs(self, phase: Phase = Phase.CHECKING_BALANCES) -> None:
        """Settle the open attempts of the user's earlier runs, waiting (in `phase`) while any
        may land."""

        async def waiting(open_attempts: int) -> None:
            self.log.info("waiting_for_earlier_runs", open_attempts=open_attempts)
            await self.progress.phase(
                phase,
                description=(
                    f"Waiting for {open_attempts} transaction(s) of an earlier premix of "
                    "this user to land or expire"
                ),
            )

        await settle_earlier_runs(
            self.ledger,
            user_id=self.job.user_id,
            run_id=self.run_id,
            rpc=self.rpc,
            settings=self.settings,
            on_wait=waiting,
        )

    async def _payout(self, run: RunRecord) -> Payout:
        """The engine's payout of `run`, its open attempts settled (kept for the ending)."""
        self.payout = await Payout.resume(self.ledger, run, rpc=self.rpc, settings=self.settings)
        return self.payout

    # --- phase 5 ---

    async def _mixer_progress(self, progress: MixerProgress) -> None:
        await self.progress.mixer_progress(
            progress.done_wallets,
            progress.total_wallets,
            progress.message,
            sentLamports=progress.sent_lamports,
        )

    # --- phase 6 ---

    async def _complete(self, payout: Payout, *, unchecked: str | None = None) -> dict[str, Any]:
        """Verify every recipient's balance on chain, mark the run completed, tell the user.

        `unchecked`: why the final balance check cannot run (it is skipped and the message says
        so); only for a run whose every transfer the ledger holds as confirmed on chain."""
        self.phase = Phase.PREMIX_COMPLETE
        balances = None if unchecked else await payout.verify()
        await self._check_not_superseded()
        mix = await payout.complete()
        # Free the user before the final event: whoever sees it may enqueue the next premix.
        await self.lock.release()
        funded = len(mix.funded)
        message = completion_message(
            mix,
            self.job.mode,
            payout.record,
            spent_since=payout.spent_since,
            unchecked=unchecked,
        )
        await self.progress.completed(
            message,
            sentLamports=mix.sent_lamports,
            feeLamports=mix.fee_lamports,
            priorityFeeLamports=mix.priority_fee_lamports,
            transactions=mix.transactions,
            walletsFunded=funded,
        )
        await self.notifier.notify_completed(
            self.job.user_chat_id,
            job_id=self.job_id,
            amount_lamports=mix.sent_lamports,
            wallets_funded=funded,
            mode=self.job.mode,
            transactions=mix.transactions,
            fee_lamports=mix.fee_lamports,
            top_up=message if payout.record.top_up is not None else None,
        )
        self.log.info(
            "job_completed",
            sent_lamports=mix.sent_lamports,
            fee_lamports=mix.fee_lamports,
            transactions=mix.transactions,
        )
        return build_result(
            self.job_id,
            message,
            success=True,
            job=self.job,
            mix=mix,
            balances=balances,
            top_up=payout.record.top_up,
        )

    # --- how an execution ends ---

    async def _give_up(self) -> dict[str, Any]:
        """End a job delivered once more than `job_max_tries` allows (its earlier executions
        died or were stopped): report what its run sent and fail it, sending nothing."""
        run = await self.ledger.get(self.run_id)
        self.run_opened = run is not None
        if run is not None and run.open_attempts():
            try:
                run = (await self._payout(run)).record
            except (PremixError, RpcRequestError, PyMongoError, OSError) as e:
                self.log.warning("open_attempts_not_settled", error=type(e).__name__)
        if run is not None and (run.status is RunStatus.COMPLETED or _all_funded(run)):
            # The money went out; only the ending was lost (the worker died after sending).
            try:
                return await self._complete(await self._payout(run))
            except PremixError as e:
                return await self._fail(e)
        tries = self.job_try - 1
        if run is None:
            return await self._fail(
                PremixError(
                    f"the job could not start in {tries} {'try' if tries == 1 else 'tries'} "
                    "(another premix of this "
                    "user was running, or its worker stopped); nothing was sent"
                )
            )
        if run.transactions:
            self.phase = Phase.INITIALIZING_MIXER
        return await self._fail(
            PremixError(f"the job stopped {tries} time(s) before finishing; it is not run again")
        )

    async def _retry(self, error: PremixError) -> dict[str, Any]:
        """Hand the job back to arq for a later try (raises `Retry`), unless a newer execution
        of it took over (`step_aside`)."""
        if await self._superseded():
            return await self.step_aside()
        delay = self.settings.retry_delay_seconds(self.job_try)
        self.log.warning(
            "job_retrying", phase=int(self.phase), reason=error.user_message, retry_in=delay
        )
        await self.progress.retrying(
            self.phase,
            job_try=self.job_try,
            max_tries=self.settings.job_max_tries,
            next_try_at=datetime.now(UTC) + timedelta(seconds=delay),
            reason=error.user_message,
        )
        raise Retry(defer=delay) from error

    async def _cancelled(self) -> dict[str, Any]:
        """End a job `cancel_premix` stopped at a safe point: what its run left open settled,
        the run marked cancelled, the user told exactly what was sent (`premix.cancellation`)."""
        if await self._superseded():
            return await self.step_aside()
        try:
            mix, message = await settle_cancelled_run(
                self.ledger, self.run_id, self.payout, rpc=self.rpc, settings=self.settings
            )
        except (PremixError, RpcRequestError, PyMongoError, RedisError, OSError) as e:
            # what it sent is not settled yet: the next try settles it, then stops again
            return await self._retry(TransientError(f"{type(e).__name__} while stopping"))
        self.log.info("job_cancelled", phase=int(self.phase), reason=message)
        await self.lock.release()
        sent = mix.sent_lamports if mix is not None else 0
        funded = len(mix.funded) if mix is not None else 0
        await self.progress.cancelled(self.phase, message, sentLamports=sent, walletsFunded=funded)
        await self.notifier.notify_cancelled(
            self.job.user_chat_id, job_id=self.job_id, message=message
        )
        result = build_result(
            self.job_id, message, success=False, job=self.job, mix=mix, top_up=self.top_up
        )
        return {**result, "status": "cancelled"}

    async def _fail(self, error: PremixError) -> dict[str, Any]:
        if await self._superseded():
            return await self.step_aside()
        if not error.permanent and self.phase is Phase.PREMIX_COMPLETE:
            run = await self._ledger_run()
            if run is not None and (run.status is RunStatus.COMPLETED or _all_funded(run)):
                # Every transfer landed; only the final check failed: the premix is complete.
                payout = await self._payout(run)
                return await self._complete(payout, unchecked=error.user_message)
        mix = error.result if isinstance(error, MixerFailed) else None
        if mix is None:
            mix = await self._ledger_report()
        if (
            self.phase >= Phase.INITIALIZING_MIXER
            and not isinstance(error, MixerFailed)
            and mix is not None
        ):
            # Once transfers may have gone out, the user is told exactly what was sent.
            error = MixerFailed.from_result(error.detail or error.title, mix)
        message = error.user_message
        funded = mix.funded if mix is not None else []
        # The operator's detail (key ids, variable names) goes to the log, never to the user.
        detail = str(error) if str(error) != message else None
        self.log.warning("job_failed", phase=int(self.phase), reason=message, detail=detail)
        if self.run_opened:
            await self._finish_run_failed(message)
        await self.lock.release()
        await self.progress.failed(
            self.phase,
            message,
            sentLamports=mix.sent_lamports if mix is not None else 0,
            walletsFunded=len(funded),
        )
        await self.notifier.notify_failed(
            self.job.user_chat_id,
            job_id=self.job_id,
            reason=message,
            amount_lamports=self.job.amount_lamports,
            funded=funded,
            pending=mix.pending if mix is not None else [],
        )
        return build_result(
            self.job_id, message, success=False, job=self.job, mix=mix, top_up=self.top_up
        )

    async def _enter(self, phase: Phase, description: str) -> None:
        """Start `phase`: its progress event (`Superseded` once a newer execution took over);
        `Cancelled` instead when `cancel_premix` asked the job to stop (a phase boundary)."""
        if await self._stopping():
            raise Cancelled(self.job_id)
        self.phase = phase
        await self.progress.phase(phase, description=description)

    async def _stopping(self) -> bool:
        return await cancel_requested(self.redis, self.job_id)

    async def _check_not_superseded(self) -> None:
        if await self._superseded():
            raise Superseded(self.job_id)

    async def _superseded(self) -> bool:
        """True when arq started this job again after this execution began (its process
        stalled past the in-progress marker) or the job has already ended elsewhere (see
        `premix.tries`); False when Redis cannot tell (the ledger keeps the money exact)."""
        try:
            return await self.guard.superseded(self.redis)
        except (RedisError, OSError):
            return False

    async def step_aside(self) -> NoReturn:
        """End a superseded execution without a trace: no event, message, lock change, ledger
        ending or arq result; the newer execution does those. Waits (until this execution's
        own deadline) for the job to end elsewhere, because arq, ending any execution, deletes
        the job's in-progress marker, which by then is the newer execution's; then raises
        arq's `RetryJob`, for which arq stores no result and moves no queue entry (a `Retry`
        would re-create an entry that arq later fails as "job expired")."""
        self.log.warning("job_superseded", phase=int(self.phase))
        await self.guard.wait_for_job_end(self.redis, until=self.started + self._deadline_seconds())
        raise RetryJob()

    async def _ledger_report(self) -> MixResult | None:
        """The per-wallet report of the run as the ledger stands, if it has a plan."""
        if not self.run_opened:
            return None
        run = await self._ledger_run()
        return MixResult.from_record(run) if run is not None and run.planned else None

    async def _ledger_run(self) -> RunRecord | None:
        """The run as the ledger stands, or None when it is missing or unreadable."""
        try:
            return await self.ledger.get(self.run_id)
        except (PyMongoError, PremixError, OSError) as e:
            self.log.warning("ledger_unreadable", error=type(e).__name__)
            return None

    async def _finish_run_failed(self, message: str) -> None:
        try:
            await self.ledger.finish(self.run_id, RunStatus.FAILED, error=message)
        except (LedgerError, PremixError, PyMongoError, OSError) as e:
            self.log.warning("ledger_not_marked_failed", error=type(e).__name__)

    def _deadline_seconds(self) -> float:
        """A little under arq's job timeout, so the job ends through our failure handling."""
        timeout = self.settings.job_timeout_seconds
        return max(timeout * 0.9, timeout - DEADLINE_MARGIN_SECONDS)


def _all_funded(run: RunRecord) -> bool:
    """True when the ledger shows every planned wallet funded (the run only lacks its end)."""
    return run.planned and MixResult.from_record(run).complete
