"""The arq worker: `WorkerSettings` (run `arq premix.worker.WorkerSettings`) and the premix job.

A worker process opens its services once (`startup`): the store, the Solana RPC client, the
Telegram notifier, logging; arq's own Redis pool (`ctx["redis"]`) publishes progress and holds
the user locks. `premix_funds` runs the six phases of SPEC section 3 for one job, emits a
progress event per phase and returns a JSON-safe result (`build_result`).

Failures: a permanent `PremixError` ends the job (failed event, Telegram message, ledger run
marked failed, user lock released, result with `success: false`); a transient one is retried by
arq with backoff, keeping the user lock, and the retry resumes the same ledger run (run id =
job id); on the last try it ends the job like a permanent one. A worker that dies leaves the job
in the queue: arq runs it again once its in-progress marker expires, and the ledger makes that
re-run settle what was sent before it sends anything (nothing is paid twice). arq delivers a job
once more than `job_max_tries`: that delivery sends nothing; it reports what the run sent and
fails the job.

arq delivers a job at least once: if a stalled process outlives the job's in-progress marker, arq
starts the job again while the first execution still holds it. Money stays exact (every ledger
write is a compare-and-swap); the older execution, seeing arq's try counter move past its own
try, stops at its next event or ending without a word (`PremixRun.step_aside`), so the user
hears only from the newer one.
"""

import asyncio
import contextlib
import re
import sys
from _collections_abc import dict_items, dict_keys, dict_values
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, NoReturn

from arq.connections import RedisSettings
from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix
from arq.worker import Retry, func
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from premix.amounts import format_sol, sol_text
from premix.constants import JOB_FUNCTION
from premix.distribution import DistributionError, plan_distribution
from premix.errors import (
    FundingWalletNotFound,
    InsufficientBalance,
    InvalidParameters,
    NoBuyerWallets,
    PremixError,
    TransientError,
)
from premix.jobs import USER_ID_PATTERN, PremixFundsJob, describe_validation_error
from premix.keys import KeyConfigError
from premix.ledger import Ledger, LedgerError, RunRecord, RunStatus, TransactionState
from premix.logs import configure_logging, get_logger, redact_text
from premix.mixer import (
    FeePolicy,
    MixerFailed,
    MixerProgress,
    MixResult,
    WalletStatus,
    estimate_fee_lamports,
    run_mixer,
    transaction_count,
)
from premix.mixer.engine import MixerRun
from premix.mixer.result import result_from_record
from premix.notify import Notifier
from premix.progress import Phase, ProgressEmitter, ProgressStatus
from premix.queue import refresh_user_lock, release_user_lock_quietly, user_lock_holder
from premix.rpc import RpcRequestError, SolanaRpc
from premix.serialization import job_deserializer, job_serializer
from premix.settings import Settings, describe_settings_error, get_settings
from premix.store import Store, StoreConfigError

log = get_logger(__name__)

# Seconds before retry n (1-based) of a job that failed transiently; the last value repeats.
RETRY_BACKOFF_SECONDS: Final = (1, 2, 5, 10, 30)
# A job finding another job of the same user running waits this long and tries again.
USER_BUSY_RETRY_SECONDS: Final = 5
# A Redis command (and the connection it needs) is tried this many more times, backing off up
# to 1 s: about 30 s in all, so a worker rides through a Redis restart or failover.
REDIS_COMMAND_RETRIES: Final = 32
DEADLINE_MARGIN_SECONDS: Final = 10  # our own deadline ends a run this much before arq's
ARQ_IN_PROGRESS_EXTRA_SECONDS: Final = 10  # arq's in-progress marker outlives the job timeout
KEEP_RESULT_SECONDS: Final = 86_400
# Phase 6 reads the recipients' balances this many times before calling a shortfall real
# (a node may serve balances a moment behind the signature statuses it confirmed).
VERIFY_BALANCE_TRIES: Final = 5

REFUSAL_MESSAGE_LIMIT: Final = 500  # characters of the message refusing a hand-written payload
_JOB_ID = re.compile(r"^premix-(?P<user_id>.+)-\d+$")
_CHAT_ID_RANGE: Final = range(-(2**63), 2**63)


class WorkerStartupError(PremixError):
    """The worker cannot run with its configuration or services; it refuses to start."""

    title = "Worker refused to start"


async def startup(ctx: dict[str, Any]) -> None:
    """Open the process-wide services into `ctx`. `settings`, `rpc` and `notifier` may be
    pre-set there (tests, the demo); what is missing is created from the settings.

    Raises `WorkerStartupError` (naming the variable to fix) when the store is `memory://`
    without `PREMIX_ALLOW_MEMORY_STORE`, the encryption keys are missing or malformed, or
    MongoDB does not answer within `PREMIX_MONGODB_TIMEOUT_SECONDS`."""
    settings: Settings = ctx.setdefault("settings", get_settings())
    configure_logging(settings)
    ctx["store"] = await open_checked_store(settings)
    if "notifier" not in ctx:
        ctx["notifier"] = Notifier(settings)
    if "rpc" not in ctx:
        ctx["rpc"] = SolanaRpc.from_settings(settings)
    log.info("worker_started", queue=settings.queue_name, memory_store=ctx["store"].is_memory)


async def open_checked_store(settings: Settings) -> Store:
    """The worker's store, open, answering and indexed; raises `WorkerStartupError`."""
    if settings.uses_memory_store and not settings.allow_memory_store:
        raise WorkerStartupError(
            "PREMIX_MONGODB_URI is memory://, an in-process store: a worker process sees no "
            "wallet created by another process; point it at MongoDB (or set "
            "PREMIX_ALLOW_MEMORY_STORE=1 where one process creates the wallets and runs the jobs)"
        )
    if not settings.encryption_keys.get_secret_value().strip():
        raise WorkerStartupError(
            "PREMIX_ENCRYPTION_KEYS is not set; the worker needs the keys the wallets are "
            "encrypted with (comma-separated key_id:base64, see `premix keys generate`)"
        )
    try:
        store = await Store.open(settings)
    except (KeyConfigError, StoreConfigError) as e:
        raise WorkerStartupError(e.detail or e.title) from None
    try:
        await store.ping()
        await store.ensure_indexes()
    except (TransientError, PyMongoError, OSError):
        await store.close()
        raise WorkerStartupError(
            f"MongoDB at PREMIX_MONGODB_URI did not answer within "
            f"{settings.mongodb_timeout_seconds:g} s (PREMIX_MONGODB_TIMEOUT_SECONDS)"
        ) from None
    return store


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what `startup` opened (and what was pre-set in `ctx`)."""
    notifier: Notifier | None = ctx.get("notifier")
    if notifier is not None:
        await notifier.aclose()
    rpc: SolanaRpc | None = ctx.get("rpc")
    if rpc is not None:
        await rpc.close()
    store: Store | None = ctx.get("store")
    if store is not None:
        await store.close()
    log.info("worker_stopped")


async def premix_funds(ctx: dict[str, Any], *args: object, **kwargs: object) -> dict[str, Any]:
    """The arq job `premix_funds`: run the six phases for its one argument, a `PremixFundsJob`
    on the wire. Returns the JSON-safe result (`build_result`); raises arq `Retry` for a
    transient failure. A payload that is not a valid job ends the job at once, untouched."""
    job_id: str = ctx["job_id"]
    if len(args) != 1 or kwargs:
        message = "Invalid parameters: request: a premix job carries exactly one payload object"
        return await _refuse_payload(ctx, job_id, args[0] if args else None, message)
    payload = args[0]
    try:
        job = PremixFundsJob.model_validate(payload)
    except ValidationError as e:
        message = f"Invalid parameters: {describe_validation_error(e)}"
        return await _refuse_payload(ctx, job_id, payload, message)
    named_user = _user_id_from_job_id(job_id)
    if named_user is not None and named_user != job.user_id:
        # enqueue_premix_funds names the job after its user: the payload was changed by hand.
        message = f"Invalid parameters: userId: {job.user_id} is not the user of job {job_id}"
        return await _refuse_payload(ctx, job_id, payload, message)
    return await PremixRun(ctx, job_id, job).execute()


# --- the result ---


def build_result(
    job_id: str,
    message: str,
    *,
    success: bool,
    job: PremixFundsJob | None = None,
    mix: MixResult | None = None,
    balances: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The job's result (camelCase, JSON-safe): `success`, the user's `message`, one entry per
    planned wallet (funded or not, with its signature; `balanceLamports` as verified on chain
    on success), totals and the landed signatures. Money is integer lamports plus a SOL string.
    """
    wallets: list[dict[str, Any]] = []
    signatures: list[str] = []
    if mix is not None:
        for position, wallet in enumerate(mix.wallets):
            funded = wallet.status is WalletStatus.FUNDED
            wallets.append(
                {
                    "position": position,
                    "publicKey": wallet.public_key,
                    "lamports": wallet.lamports,
                    "sol": sol_text(wallet.lamports),
                    "status": wallet.status.value,
                    "funded": funded,
                    "signature": wallet.signature,
                    "error": wallet.error,
                    "balanceLamports": balances[position] if balances is not None else None,
                }
            )
            if funded and wallet.signature is not None and wallet.signature not in signatures:
                signatures.append(wallet.signature)
    sent = mix.sent_lamports if mix is not None else 0
    fees = mix.fee_lamports if mix is not None else 0
    return {
        "success": success,
        "message": message,
        "jobId": job_id,
        "userId": job.user_id if job is not None else None,
        "mode": job.mode if job is not None else None,
        "amountLamports": job.amount_lamports if job is not None else None,
        "amountSol": sol_text(job.amount_lamports) if job is not None else None,
        "wallets": wallets,
        "totals": {
            "walletsPlanned": len(wallets),
            "walletsFunded": sum(1 for wallet in wallets if wallet["funded"]),
            "sentLamports": sent,
            "sentSol": sol_text(sent),
            "feeLamports": fees,
            "feeSol": sol_text(fees),
            "transactions": mix.transactions if mix is not None else 0,
        },
        "signatures": signatures,
    }


# --- phase 4: what the funding wallet must hold ---


@dataclass(frozen=True)
class BalanceNeed:
    """What the funding wallet must hold for the transfers of a run that are not done yet."""

    transfer_lamports: int  # still to send
    wallets: int  # still to fund
    fee_lamports: int  # fees of the transactions still to land
    transactions: int
    buffer_lamports: int  # settings.fee_buffer_sol
    already_sent_lamports: int  # landed in an earlier execution of the run: not needed again

    @property
    def total_lamports(self) -> int:
        """Lamports needed in the funding wallet (0 when nothing is left to send)."""
        if self.wallets == 0:
            return 0
        return self.transfer_lamports + self.fee_lamports + self.buffer_lamports

    def describe(self) -> str:
        """'0.5 SOL to 1 wallet(s) + 0.000005 SOL fees for 1 transaction(s) + 0.01 SOL buffer'."""
        text = (
            f"{format_sol(self.transfer_lamports)} to {self.wallets} wallet(s) + "
            f"{format_sol(self.fee_lamports)} fees for {self.transactions} transaction(s) + "
            f"{format_sol(self.buffer_lamports)} buffer"
        )
        if self.already_sent_lamports:
            text += f"; {format_sol(self.already_sent_lamports)} already sent"
        return text


def balance_needed(
    run: RunRecord,
    mode: str,
    fees: FeePolicy,
    buffer_lamports: int,
    *,
    landed_ok: Collection[str] = (),
) -> BalanceNeed:
    """Return what the funding wallet must still hold to finish `run` (its plan recorded).

    Transfers whose transaction landed (in the ledger, or an open attempt whose signature is in
    `landed_ok`, found on chain) are already paid and not needed again. Every other recorded
    transaction needs its transfers and one more fee; transfers never signed are packed as
    `mode` packs them.
    """
    done = set(run.funded_positions())
    fee_lamports = transactions = 0
    for tx in run.transactions:
        if tx.state is TransactionState.LANDED_OK:
            continue
        attempt = tx.open_attempt
        if attempt is not None and attempt.signature in landed_ok:
            done.update(tx.transfers)
            continue
        fee_lamports += fees.fee_lamports(len(tx.transfers))
        transactions += 1
    uncovered = len(run.uncovered_positions())
    if uncovered:
        fee_lamports += estimate_fee_lamports(mode, uncovered, fees)
        transactions += transaction_count(mode, uncovered, fees)
    outstanding = [entry.lamports for entry in run.plan if entry.position not in done]
    return BalanceNeed(
        transfer_lamports=sum(outstanding),
        wallets=len(outstanding),
        fee_lamports=fee_lamports,
        transactions=transactions,
        buffer_lamports=buffer_lamports,
        already_sent_lamports=sum(e.lamports for e in run.plan if e.position in done),
    )


# --- one job ---


class Superseded(Exception):
    """arq started this job again while this execution still ran: the newer one reports."""


class PremixRun:
    """One attempt at one job: the six phases, their events, and how the attempt ends."""

    def __init__(self, ctx: dict[str, Any], job_id: str, job: PremixFundsJob) -> None:
        self.settings: Settings = ctx["settings"]
        self.redis: Redis = ctx["redis"]
        self.store: Store = ctx["store"]
        self.rpc: SolanaRpc = ctx["rpc"]
        self.notifier: Notifier = ctx["notifier"]
        self.job_id = job_id
        self.job = job
        self.job_try: int = ctx.get("job_try", 1)
        self.progress = ProgressEmitter(self.redis, self.settings, job_id, job)
        self.log = log.bind(job_id=job_id, user_id=job.user_id, job_try=self.job_try)
        self.phase = Phase.JOB_STARTED
        self.ledger = Ledger(self.store)
        self.run_opened = False
        self.lock_released = False

    async def execute(self) -> dict[str, Any]:
        """Run the phases; return the result, or raise `Retry` for a transient failure."""
        if self.job_try > self.settings.job_max_tries:
            return await self._give_up()
        try:
            holds_lock = await self._hold_user_lock()
        except (RedisError, OSError) as e:
            return await self._retry(
                TransientError(f"{type(e).__name__} while taking the user lock")
            )
        if not holds_lock:
            holder = await user_lock_holder(self.redis, self.job.user_id)
            self.log.info("user_busy_job_deferred", running_job_id=holder)
            raise Retry(defer=USER_BUSY_RETRY_SECONDS)
        try:
            async with self._lock_heartbeat(), asyncio.timeout(self._deadline_seconds()):
                result = await self._phases()
        except Superseded:
            return await self.step_aside()
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
        except Exception as e:
            self.log.exception("job_crashed", phase=int(self.phase))
            return await self._fail(PremixError(f"internal error ({type(e).__name__})"))
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
        resumed = self.job_try > 1 or run.status is not RunStatus.OPENED
        await self.progress.started(
            "Resuming premix job" if resumed else "Premix job accepted",
            amountSol=str(self.job.mix_amount),
            mode=self.job.mode,
            attempt=self.job_try,
        )
        if run.status is RunStatus.COMPLETED:
            # Delivered again after the run completed (the worker died at the very end):
            # nothing is sent; only phase 6 runs.
            self.log.info("run_already_completed")
            return await self._complete(result_from_record(run))

        await self._enter(Phase.VALIDATING_PARAMETERS, "Checking funding and buyer wallets")
        funding, buyers = await self._load_wallets()

        await self._enter(
            Phase.CALCULATING_DISTRIBUTION, f"Planning {format_sol(self.job.amount_lamports)}"
        )
        if not run.plan:  # a re-run keeps the plan it started with
            amounts = self._plan(len(buyers))
            recipients = [str(wallet.pubkey()) for wallet in buyers[: len(amounts)]]
            run = await self.ledger.record_plan(self.job_id, recipients, amounts)

        await self._enter(
            Phase.CHECKING_BALANCES,
            f"Checking the funding wallet holds {format_sol(self.job.amount_lamports)} plus fees",
        )
        await self._check_balances(funding, run)

        await self._enter(
            Phase.INITIALIZING_MIXER, f"Sending {len(run.plan)} transfers ({self.job.mode} mode)"
        )
        mix = await run_mixer(
            run_id=self.job_id,
            mode=self.job.mode,
            funding=funding,
            recipients=[Pubkey.from_string(entry.recipient) for entry in run.plan],
            amounts=[entry.lamports for entry in run.plan],
            rpc=self.rpc,
            ledger=self.ledger,
            settings=self.settings,
            on_progress=self._mixer_progress,
        )
        return await self._complete(mix)

    # --- phases 2 and 3 ---

    async def _load_wallets(self) -> tuple[Keypair, list[Keypair]]:
        wallets = self.store.wallets
        funding = await wallets.funding_wallet(self.job.user_id)
        if funding is None:
            raise FundingWalletNotFound(self.job.user_id)
        limit = self.settings.wallet_limit(self.job.max_wallets)
        buyers = await wallets.buyer_wallets(self.job.user_id, limit=limit)
        if not buyers:
            raise NoBuyerWallets(self.job.user_id)
        return funding, buyers

    def _plan(self, wallet_count: int) -> list[int]:
        try:
            table = self.settings.tier_table()
            return plan_distribution(self.job.amount_lamports, wallet_count, table)
        except DistributionError as e:
            raise InvalidParameters(f"mixAmount: {e}") from e

    # --- phase 4 ---

    async def _check_balances(self, funding: Keypair, run: RunRecord) -> None:
        """Raise `InsufficientBalance` unless the funding wallet holds what is still to send,
        its fees and the buffer. A resumed run needs only what did not go out yet."""
        landed_ok: set[str] = set()
        if run.open_attempts():
            # An earlier execution died after a send: settle what it left open first, so what
            # landed counts as sent, in the check and in the report.
            run = await self._settle_open_attempts(run, funding)
            still_open = [attempt for _, attempt in run.open_attempts()]
            if still_open:
                # Seen on chain but not yet confirmed: as good as gone from the balance.
                statuses = await self.rpc.signature_statuses(
                    [Signature.from_string(a.signature) for a in still_open]
                )
                landed_ok = {
                    attempt.signature
                    for attempt, status in zip(still_open, statuses, strict=True)
                    if status is not None and status.error is None
                }
        need = balance_needed(
            run,
            self.job.mode,
            FeePolicy.from_settings(self.settings),
            self.settings.fee_buffer_lamports,
            landed_ok=landed_ok,
        )
        if need.total_lamports == 0:
            self.log.info("nothing_left_to_send")
            return
        available = await self.rpc.balance(funding.pubkey())
        self.log.info(
            "funding_balance_checked",
            needed_lamports=need.total_lamports,
            available_lamports=available,
            already_sent_lamports=need.already_sent_lamports,
        )
        if available < need.total_lamports:
            raise InsufficientBalance(
                needed_lamports=need.total_lamports,
                available_lamports=available,
                breakdown=need.describe(),
            )

    async def _settle_open_attempts(self, run: RunRecord, funding: Keypair) -> RunRecord:
        """Settle the attempts an earlier execution left open (landed or expired), by the
        mixer's own rule, and return the run as the ledger now holds it."""
        settling = MixerRun(
            record=run,
            funding=funding,
            rpc=self.rpc,
            ledger=self.ledger,
            fees=FeePolicy.from_settings(self.settings),
            poll_seconds=self.settings.confirm_poll_seconds,
            on_progress=None,
        )
        await settling.settle_recorded()
        return settling.record

    # --- phase 5 ---

    async def _mixer_progress(self, progress: MixerProgress) -> None:
        await self._check_not_superseded()
        await self.progress.mixer_progress(
            progress.done_wallets,
            progress.total_wallets,
            f"{progress.done_wallets} of {progress.total_wallets} wallets funded "
            f"({progress.message})",
            sentLamports=progress.sent_lamports,
        )

    # --- phase 6 ---

    async def _complete(self, mix: MixResult, *, unchecked: str | None = None) -> dict[str, Any]:
        """Verify every recipient's balance on chain, mark the run completed, tell the user.

        `unchecked`: why the final balance check cannot run (it is skipped and the message says
        so); only for a run whose every transfer the ledger holds as confirmed on chain."""
        self.phase = Phase.PREMIX_COMPLETE
        run = await self.ledger.require(self.job_id)
        balances = None if unchecked else await self._verify_recipients(run, mix)
        await self._check_not_superseded()
        if run.status is not RunStatus.COMPLETED:
            await self.ledger.finish(self.job_id, RunStatus.COMPLETED)
        # Free the user before the final event: whoever sees it may enqueue the next premix.
        await self._release_lock()
        funded = len(mix.funded)
        message = self._completion_message(mix)
        if unchecked:
            message += (
                f" (every transfer confirmed on chain; the final balance check could not run: "
                f"{unchecked})"
            )
        await self.progress.completed(
            message,
            sentLamports=mix.sent_lamports,
            feeLamports=mix.fee_lamports,
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
        )
        self.log.info(
            "job_completed",
            sent_lamports=mix.sent_lamports,
            fee_lamports=mix.fee_lamports,
            transactions=mix.transactions,
        )
        return build_result(
            self.job_id, message, success=True, job=self.job, mix=mix, balances=balances
        )

    def _completion_message(self, mix: MixResult) -> str:
        return (
            f"Premix complete: sent {format_sol(mix.sent_lamports)} to {len(mix.funded)} "
            f"wallet(s) in {mix.transactions} transaction(s) ({self.job.mode} mode), "
            f"fees {format_sol(mix.fee_lamports)}"
        )

    async def _verify_recipients(self, run: RunRecord, mix: MixResult) -> list[int]:
        """Return the recipients' balances (one getMultipleAccounts per 100); raises
        `MixerFailed` if one holds less than its balance before the run plus its amount."""
        keys = [Pubkey.from_string(entry.recipient) for entry in run.plan]
        expected = [(entry.balance_before or 0) + entry.lamports for entry in run.plan]
        short: list[tuple[int, int]] = []
        for attempt in range(VERIFY_BALANCE_TRIES):
            balances = await self.rpc.balances(keys)
            short = [
                (position, balance)
                for position, balance in enumerate(balances)
                if balance < expected[position]
            ]
            if not short:
                return balances
            if attempt + 1 < VERIFY_BALANCE_TRIES:
                await asyncio.sleep(self.settings.confirm_poll_seconds)
        position, balance = short[0]
        raise MixerFailed.from_result(
            f"wallet {run.plan[position].recipient} holds {format_sol(balance)} after the "
            f"premix, expected at least {format_sol(expected[position])}",
            mix,
        )

    # --- how an attempt ends ---

    async def _give_up(self) -> dict[str, Any]:
        """End a job delivered once more than `job_max_tries` allows (its earlier executions
        died or were stopped): report what its run sent and fail it, sending nothing."""
        run = await self.ledger.get(self.job_id)
        self.run_opened = run is not None
        if run is not None and run.open_attempts():
            try:
                funding = await self.store.wallets.funding_wallet(self.job.user_id)
                if funding is not None:
                    run = await self._settle_open_attempts(run, funding)
            except (PremixError, RpcRequestError, PyMongoError, OSError) as e:
                self.log.warning("open_attempts_not_settled", error=type(e).__name__)
        if run is not None and (run.status is RunStatus.COMPLETED or _all_funded(run)):
            # The money went out; only the ending was lost (the worker died after sending).
            try:
                return await self._complete(result_from_record(run))
            except Superseded:
                return await self.step_aside()
            except PremixError as e:
                return await self._fail(e)
        tries = self.job_try - 1
        if run is None:
            return await self._fail(
                PremixError(
                    f"the job could not start in {tries} attempt(s) (another premix of this "
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
        delay = RETRY_BACKOFF_SECONDS[min(self.job_try, len(RETRY_BACKOFF_SECONDS)) - 1]
        self.log.warning(
            "job_retrying", phase=int(self.phase), reason=error.user_message, retry_in=delay
        )
        raise Retry(defer=delay) from error

    async def _fail(self, error: PremixError) -> dict[str, Any]:
        if await self._superseded():
            return await self.step_aside()
        if not error.permanent and self.phase is Phase.PREMIX_COMPLETE:
            run = await self._ledger_run()
            if run is not None and run.status is RunStatus.COMPLETED:
                # Every transfer landed; only the final check failed: the premix is complete.
                return await self._complete(result_from_record(run), unchecked=error.user_message)
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
        self.log.warning("job_failed", phase=int(self.phase), reason=message)
        if self.run_opened:
            await self._finish_run_failed(message)
        await self._release_lock()
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
        )
        return build_result(self.job_id, message, success=False, job=self.job, mix=mix)

    async def _enter(self, phase: Phase, description: str) -> None:
        """Start `phase`: its progress event, unless a newer execution took the job over."""
        self.phase = phase
        await self._check_not_superseded()
        await self.progress.phase(phase, description=description)

    async def _check_not_superseded(self) -> None:
        if await self._superseded():
            raise Superseded(self.job_id)

    async def _superseded(self) -> bool:
        """True when arq started this job again after this execution began (its process
        stalled past the in-progress marker) or the job has already ended elsewhere."""
        try:
            tries = await self.redis.get(retry_key_prefix + self.job_id)
            if tries is not None:
                return int(tries) > self.job_try
            # No try counter: the job ended elsewhere (arq kept its result), or Redis lost its
            # data (a restart without persistence) and this execution is all that is left.
            return bool(await self.redis.exists(result_key_prefix + self.job_id))
        except (RedisError, OSError):
            return False  # cannot tell: carry on, the ledger keeps the money exact either way

    async def step_aside(self) -> dict[str, Any]:
        """End a superseded execution without a word: no event, message, lock change or ledger
        ending; the newer execution does those. Raises `Retry`, delayed past any execution that
        may still hold the job, while arq still has it (so nothing runs alongside the newer
        one); once the job has ended, returns the ledger's account of the run as the result
        (an arq `Retry` now would leave a ghost entry that arq later fails as "expired")."""
        self.log.warning("job_superseded", phase=int(self.phase))
        try:
            queued = bool(await self.redis.exists(job_key_prefix + self.job_id))
        except (RedisError, OSError):
            queued = True
        if queued:
            delay = self.settings.job_timeout_seconds + ARQ_IN_PROGRESS_EXTRA_SECONDS
            raise Retry(defer=delay)
        run = await self._ledger_run()
        mix = result_from_record(run) if run is not None and run.plan else None
        if run is not None and run.status is RunStatus.COMPLETED and mix is not None:
            message = self._completion_message(mix)
            return build_result(self.job_id, message, success=True, job=self.job, mix=mix)
        message = (run.error if run is not None else None) or "Premix failed: the job ended"
        return build_result(self.job_id, message, success=False, job=self.job, mix=mix)

    async def _ledger_report(self) -> MixResult | None:
        """The per-wallet report of the run as the ledger stands, if it has a plan."""
        if not self.run_opened:
            return None
        run = await self._ledger_run()
        return result_from_record(run) if run is not None and run.plan else None

    async def _ledger_run(self) -> RunRecord | None:
        """The run as the ledger stands, or None when it is missing or unreadable."""
        try:
            return await self.ledger.get(self.job_id)
        except (PyMongoError, PremixError, OSError) as e:
            self.log.warning("ledger_unreadable", error=type(e).__name__)
            return None

    async def _finish_run_failed(self, message: str) -> None:
        try:
            await self.ledger.finish(self.job_id, RunStatus.FAILED, error=message)
        except (LedgerError, PremixError, PyMongoError, OSError) as e:
            self.log.warning("ledger_not_marked_failed", error=type(e).__name__)

    def _deadline_seconds(self) -> float:
        """A little under arq's job timeout, so the job ends through our failure handling."""
        timeout = self.settings.job_timeout_seconds
        return max(timeout * 0.9, timeout - DEADLINE_MARGIN_SECONDS)

    async def _release_lock(self) -> None:
        self.lock_released = True  # the heartbeat must not take it back
        await release_user_lock_quietly(self.redis, self.job.user_id, self.job_id)

    async def _hold_user_lock(self) -> bool:
        if self.lock_released:
            return False
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


# --- payloads that are not a job ---


async def _refuse_payload(
    ctx: dict[str, Any], job_id: str, payload: object, message: str
) -> dict[str, Any]:
    """End a job whose payload is not a valid premix job (written to Redis by hand): nothing
    is retried and the ledger is not touched; the failed event goes out under the job id, the
    user lock is released and the chat told, as far as the payload or job id name them."""
    if len(message) > REFUSAL_MESSAGE_LIMIT:  # a payload with thousands of bad fields
        message = message[: REFUSAL_MESSAGE_LIMIT - 1] + "…"
    fields = payload if isinstance(payload, dict) else {}
    user_ids = [
        user_id
        for user_id in (_user_id_or_none(fields.get("userId")), _user_id_from_job_id(job_id))
        if user_id is not None
    ]
    chat_id = _chat_id_or_none(fields.get("userChatId"))
    log.warning("job_payload_invalid", job_id=job_id, reason=message)
    # Stands in for the job the payload should have been (fields known to be valid, or blank).
    stand_in = PremixFundsJob.model_construct(
        user_id=user_ids[0] if user_ids else "",
        user_chat_id=chat_id if chat_id is not None else 0,
        mix_amount=Decimal(0),
        max_wallets=None,
        mode="standard",
        socket_user_id=None,
    )
    emitter = ProgressEmitter(ctx["redis"], ctx["settings"], job_id, stand_in)
    await emitter.phase(Phase.VALIDATING_PARAMETERS, ProgressStatus.FAILED, message)
    for user_id in dict.fromkeys(user_ids):
        await release_user_lock_quietly(ctx["redis"], user_id, job_id)
    if chat_id is not None:
        notifier: Notifier = ctx["notifier"]
        await notifier.notify_failed(chat_id, job_id=job_id, reason=message)
    return build_result(job_id, message, success=False)


def _user_id_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(USER_ID_PATTERN, value) else None


def _user_id_from_job_id(job_id: str) -> str | None:
    match = _JOB_ID.fullmatch(job_id)
    return _user_id_or_none(match.group("user_id")) if match is not None else None


def _chat_id_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value in _CHAT_ID_RANGE:
        return value
    return None


def _all_funded(run: RunRecord) -> bool:
    """True when the ledger shows every planned wallet funded (the run only lacks its end)."""
    return bool(run.plan) and result_from_record(run).complete


# --- arq ---


def arq_redis_settings(redis_url: str) -> RedisSettings:
    """arq's Redis connection for a worker: a command that finds its connection closed, or no
    server to connect to (Redis restarting), is retried with backoff for about 30 s instead of
    stopping the worker. redis-py retries a refused connect only when `OSError` is listed: it
    raises the socket's own error inside its retry and converts it to a redis error after."""
    redis = RedisSettings.from_dsn(redis_url)
    redis.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    redis.retry = RedisRetry(ExponentialBackoff(cap=1.0, base=0.05), REDIS_COMMAND_RETRIES)
    return redis


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Return arq `Worker` keyword arguments for `settings` (what `WorkerSettings` holds for
    the environment's settings). `on_startup` raises `WorkerStartupError` when the worker
    cannot run (see `startup`)."""
    return {
        "functions": [func(premix_funds, name=JOB_FUNCTION)],
        "queue_name": settings.queue_name,
        "max_jobs": 1,  # one run per process; scale with more processes
        "job_serializer": job_serializer,  # JSON, never pickle
        "job_deserializer": job_deserializer,
        "poll_delay": settings.worker_poll_delay_seconds,  # low: fast job pickup
        "redis_settings": arq_redis_settings(settings.redis_url),
        "job_timeout": settings.job_timeout_seconds,
        # One delivery more than premix's own limit: that last one only reports and fails the
        # job (arq would otherwise drop it silently, leaving the user lock and no failed event).
        "max_tries": settings.job_max_tries + 1,
        "keep_result": KEEP_RESULT_SECONDS,
        "on_startup": startup,
        "on_shutdown": shutdown,
    }


def refuse_to_start(reason: str) -> NoReturn:
    """End a worker process that cannot run: one line on stderr naming what to fix, exit 1."""
    print(f"premix worker: refusing to start: {redact_text(reason)}", file=sys.stderr, flush=True)
    raise SystemExit(1)


async def _startup_or_exit(ctx: dict[str, Any]) -> None:
    try:
        await startup(ctx)
    except WorkerStartupError as e:
        refuse_to_start(e.detail or e.title)


class _EnvironmentWorkerSettings(dict[str, Any]):
    """`worker_settings(Settings())`, built from the environment on first read rather than at
    import, so importing premix.worker never fails; arq reads a dict as worker settings. A
    setting the worker cannot start with ends the process with one line (`refuse_to_start`)."""

    def _load(self) -> None:
        if super().__len__():
            return
        try:
            settings = get_settings()
        except ValidationError as e:
            refuse_to_start(f"invalid configuration: {describe_settings_error(e)}")
        self.update(worker_settings(settings), on_startup=_startup_or_exit)

    def __getattr__(self, name: str) -> Any:  # WorkerSettings.queue_name, as on a class
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        self._load()
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def keys(self) -> "dict_keys[str, Any]":
        self._load()
        return super().keys()

    def values(self) -> "dict_values[str, Any]":
        self._load()
        return super().values()

    def items(self) -> "dict_items[str, Any]":  # what arq's get_kwargs reads
        self._load()
        return super().items()


# `arq premix.worker.WorkerSettings`: values come from the environment (`PREMIX_*`).
WorkerSettings: Final = _EnvironmentWorkerSettings()
