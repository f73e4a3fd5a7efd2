"""One execution of a sweep job: the six phases of SPEC section 3 with sweep descriptions, on
`premix.execution.JobExecution`'s machinery (user lock, deadline, retries, failure, giving up,
stepping aside when superseded), which a sweep shares with a premix unchanged.

1 Job Started: the ledger run opened (kind "sweep") or resumed. 2 Validating Parameters: the
funding and buyer wallets exist and decrypt. 3 Calculating Distribution: the user's earlier
runs settled, every buyer wallet read once (getMultipleAccounts, past every slot they landed
in), the amounts recorded as the plan (first plan wins: a re-run never re-plans). 4 Checking
Balances: the funding wallet, every transaction's fee payer, holds their fees and the buffer.
5 Initializing Mixer: the transfers (`premix.mixer.sweeping`). 6 Premix Complete: every swept
wallet's balance verified on chain, the user told.
"""

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.amounts import format_sol
from premix.errors import InsufficientBalance, InvalidParameters, PremixError
from premix.execution import JobExecution
from premix.jobs import describe_validation_error
from premix.ledger import RunRecord, RunStatus
from premix.mixer import MixResult, Payout, check_recipient_accounts, check_recipients
from premix.mixer.sweeping import SWEEP, SweepPayout
from premix.notify import Notifier, failure_message
from premix.payloads import refuse_payload
from premix.planning import load_wallets
from premix.progress import Phase, ProgressEmitter, ProgressEvent
from premix.results import build_result
from premix.sweep import SWEEP_JOB_TYPE, SweepJob, keep_refusal, plan_sweep
from premix.top_up import latest_landed_slot


class SweepProgress(ProgressEmitter):
    """A premix's progress emitter whose events carry `jobType` "sweep"."""

    async def _publish(self, event: ProgressEvent) -> None:
        await super()._publish(event.model_copy(update={"job_type": SWEEP_JOB_TYPE}))


class SweepNotifier(Notifier):
    """The worker's notifier, its failure message headed as a sweep's."""

    def __init__(self, notifier: Notifier) -> None:  # sends through `notifier` (no client)
        self._inner = notifier

    @property
    def enabled(self) -> bool:
        return self._inner.enabled

    async def send(self, chat_id: int, text: str) -> bool:
        return await self._inner.send(chat_id, text)

    async def notify_failed(
        self,
        chat_id: int,
        *,
        job_id: str,
        reason: str,
        amount_lamports: int | None = None,
        funded: Sequence[tuple[str, int]] = (),
        pending: Sequence[tuple[str, int]] = (),
    ) -> bool:
        text = failure_message(job_id=job_id, reason=reason, funded=funded, pending=pending)
        text = text.replace("❌ Premix failed", "❌ Sweep failed", 1)
        text = text.replace("Already sent", "Already moved to the funding wallet")
        return await self.send(chat_id, text)

    async def aclose(self) -> None:
        return None  # the worker's notifier is closed by the worker


def sweep_message(mix: MixResult, skipped: int, keep_lamports: int) -> str:
    """'Sweep complete: moved 2 SOL from 4 wallet(s) to the funding wallet in 1 transaction(s),
    fees 0.000025 SOL; the funding wallet gained 1.999975 SOL'."""
    gained = mix.sent_lamports - mix.fee_lamports
    message = (
        f"Sweep complete: moved {format_sol(mix.sent_lamports)} from {len(mix.funded)} "
        f"wallet(s) to the funding wallet in {mix.transactions} transaction(s), fees "
        f"{format_sol(mix.fee_lamports)}; the funding wallet gained {format_sol(gained)}"
    )
    if keep_lamports:
        message += f"; each swept wallet keeps {format_sol(keep_lamports)}"
    if skipped:
        message += (
            f"; {skipped} wallet(s) skipped (holding no more than {format_sol(keep_lamports)})"
        )
    return message


class SweepExecution(JobExecution):
    """One execution (try) of one sweep job."""

    def __init__(self, ctx: dict[str, Any], job_id: str, sweep: SweepJob) -> None:
        super().__init__(ctx, job_id, sweep.as_premix_job())
        self.sweep = sweep
        self.notifier = SweepNotifier(ctx["notifier"])
        self.progress = SweepProgress(self.redis, self.settings, job_id, self.job, guard=self.guard)
        self.buyers: list[Keypair] = []
        self.log = self.log.bind(kind=SWEEP)

    async def _phases(self) -> dict[str, Any]:
        run = await self._open_run()
        self.run_opened = True
        resumed = self.job_try > 1 or run.status is not RunStatus.OPENED
        await self.progress.started(
            "Resuming sweep job" if resumed else "Sweep job accepted",
            keepSol=str(self.sweep.keep_sol),
            jobTry=self.job_try,
        )
        if run.status is RunStatus.COMPLETED:
            self.log.info("run_already_completed")
            return await self._complete(await self._payout(run))

        await self._enter(Phase.VALIDATING_PARAMETERS, "Checking funding and buyer wallets")
        funding, self.buyers = await load_wallets(self.store, self.settings, self.job)

        keep = format_sol(self.sweep.keep_lamports)
        await self._enter(
            Phase.CALCULATING_DISTRIBUTION,
            f"Reading {len(self.buyers)} buyer wallet balance(s): each moves all but {keep} "
            "back to the funding wallet",
        )
        if not run.planned:  # a re-run keeps the plan it started with
            run = await self._record_plan(funding)

        wallets = len(run.plan)
        await self._enter(
            Phase.CHECKING_BALANCES,
            f"Checking the funding wallet holds the fees of sweeping {wallets} wallet(s)",
        )
        payout = await self._payout(run)
        await self._settle_earlier_runs()
        transactions = await self._check_fees(funding, payout)
        if not run.plan:  # no wallet held more than it keeps: nothing to move
            return await self._complete(payout)

        self.phase = Phase.INITIALIZING_MIXER
        funded = len(payout.record.funded_positions())
        await self.progress.mixer_progress(
            funded, wallets, f"sweeping {wallets} wallet(s) in {transactions} transaction(s)"
        )
        assert isinstance(payout, SweepPayout)
        await payout.pay(
            funding,
            on_progress=self._mixer_progress,
            should_stop=self._stopping,
            sources=self.buyers,
        )
        return await self._complete(payout)

    async def _open_run(self) -> RunRecord:
        run = await self.ledger.open_run(
            self.run_id,
            user_id=self.sweep.user_id,
            mode=SWEEP,
            amount_lamports=0,  # what moves is read from the wallets: the plan's total
            request=self.sweep.to_wire(),
            kind=SWEEP,
        )
        if run.kind != SWEEP:
            raise InvalidParameters(f"run {self.run_id} is a {run.kind}, not a sweep")
        return run

    async def _record_plan(self, funding: Keypair) -> RunRecord:
        """Settle the user's earlier runs, read every buyer wallet once past the slots they
        landed in, and record what each moves (first plan wins)."""
        await self._settle_earlier_runs(Phase.CALCULATING_DISTRIBUTION)
        sources = [str(k.pubkey()) for k in self.buyers]
        check_recipients(funding.pubkey(), sources)  # the funding wallet is no buyer wallet
        rent_exempt = await self.rpc.minimum_balance_for_rent_exemption(0)
        refusal = keep_refusal(self.sweep.keep_lamports, rent_exempt)
        if refusal is not None:
            raise InvalidParameters(refusal)
        landed = latest_landed_slot(await self.ledger.runs_of(self.sweep.user_id))
        keys = [Pubkey.from_string(s) for s in sources]
        accounts = await self.rpc.accounts(keys, min_context_slot=landed)
        check_recipient_accounts(sources, accounts)
        balances = [0 if a is None else a.lamports for a in accounts]
        amounts = plan_sweep(balances, self.sweep.keep_lamports)
        moving = [i for i, amount in enumerate(amounts) if amount > 0]
        self.log.info("sweep_planned", wallets=len(moving), skipped=len(amounts) - len(moving))
        return await self.ledger.record_sweep_plan(
            self.run_id,
            funding=str(funding.pubkey()),
            sources=[sources[i] for i in moving],
            amounts=[amounts[i] for i in moving],
            balances=[balances[i] for i in moving],
        )

    async def _payout(self, run: RunRecord) -> Payout:
        """The sweep's payout of `run`, its open attempts settled (kept for the ending)."""
        self.payout = await SweepPayout.resume(
            self.ledger, run, rpc=self.rpc, settings=self.settings
        )
        return self.payout

    async def _check_fees(self, funding: Keypair, payout: Payout) -> int:
        """Raise `InsufficientBalance` unless the funding wallet holds the fees of what is
        still to sweep and the buffer; return how many transactions are still to land."""
        assert isinstance(payout, SweepPayout)
        need = payout.sweep_need(self.settings.fee_buffer_lamports)
        if need.total_lamports == 0:
            return 0
        available = await self.rpc.balance(funding.pubkey(), min_context_slot=payout.landed_slot)
        self.log.info(
            "funding_balance_checked",
            needed_lamports=need.total_lamports,
            available_lamports=available,
        )
        if available < need.total_lamports:
            fees = "up to " if need.fees_at_most else ""
            raise InsufficientBalance(
                needed_lamports=need.total_lamports,
                available_lamports=available,
                breakdown=(
                    f"{fees}{format_sol(need.fee_lamports)} fees for {need.transactions} "
                    f"sweep transaction(s) + {format_sol(need.buffer_lamports)} buffer"
                ),
            )
        return need.transactions

    async def _complete(self, payout: Payout, *, unchecked: str | None = None) -> dict[str, Any]:
        """Verify every swept wallet on chain, mark the run completed, tell the user."""
        self.phase = Phase.PREMIX_COMPLETE
        balances = None if unchecked else await payout.verify()
        await self._check_not_superseded()
        mix = await payout.complete()
        await self.lock.release()  # before the final event: whoever sees it may enqueue
        buyers = len(self.buyers) or len(mix.wallets)
        message = sweep_message(mix, buyers - len(mix.wallets), self.sweep.keep_lamports)
        if unchecked:
            message += f" (every transfer confirmed; the final check could not run: {unchecked})"
        await self.progress.completed(
            message,
            sentLamports=mix.sent_lamports,
            feeLamports=mix.fee_lamports,
            transactions=mix.transactions,
            walletsSwept=len(mix.funded),
        )
        told = message.removeprefix("Sweep complete: moved")
        await self.notifier.send(
            self.sweep.user_chat_id, f"✅ Sweep complete\nMoved{told}.\nJob {self.job_id}"
        )
        self.log.info(
            "job_completed",
            sent_lamports=mix.sent_lamports,
            fee_lamports=mix.fee_lamports,
            transactions=mix.transactions,
        )
        result = build_result(
            self.job_id, message, success=True, job=self.job, mix=mix, balances=balances
        )
        return self._as_sweep(result)

    async def _fail(self, error: PremixError) -> dict[str, Any]:
        return self._as_sweep(await super()._fail(error))

    def _as_sweep(self, result: dict[str, Any]) -> dict[str, Any]:
        """A premix's result shape, said as a sweep's: its kind, mode and what it keeps."""
        result.update(
            kind=SWEEP,
            mode=SWEEP,
            topUp=False,
            amountLamports=result["totals"]["plannedLamports"],
            amountSol=result["totals"]["plannedSol"],
            keepLamports=self.sweep.keep_lamports,
        )
        result["totals"]["fundingGainedLamports"] = (
            result["totals"]["sentLamports"] - result["totals"]["feeLamports"]
        )
        return result


async def premix_sweep(ctx: dict[str, Any], *args: object, **kwargs: object) -> dict[str, Any]:
    """The arq job `premix_sweep`: run a sweep's six phases for its one argument, a `SweepJob`
    on the wire. Returns the JSON-safe result; raises arq `Retry` for a transient failure. A
    payload that is not a sweep job (or names another user than its job id) ends the job at
    once, untouched (`premix.payloads.refuse_payload`)."""
    job_id: str = ctx["job_id"]
    payload = args[0] if args else None
    if len(args) != 1 or kwargs:
        message = "Invalid parameters: request: a sweep job carries exactly one payload object"
        return await refuse_payload(ctx, job_id, payload, message)
    try:
        sweep = SweepJob.model_validate(payload)
    except ValidationError as e:
        message = f"Invalid parameters: {describe_validation_error(e)}"
        return await refuse_payload(ctx, job_id, payload, message)
    if not job_id.startswith(f"sweep-{sweep.user_id}-"):
        message = f"Invalid parameters: userId: {sweep.user_id} is not the user of job {job_id}"
        return await refuse_payload(ctx, job_id, payload, message)
    return await SweepExecution(ctx, job_id, sweep).execute()
