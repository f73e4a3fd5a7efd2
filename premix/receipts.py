"""A premix's receipt: what `get_premix_result` returns and `premix result` prints - every
planned wallet (position, address, lamports, signature, slot, status) and the totals - and its
CSV form for an accountant. Pure: no I/O (`premix.queue.get_premix_result` reads the sources).

Source of truth: the ledger run (`source: "ledger"`), because it records every signed
transaction, where it landed and the fee it paid: it equals the chain. arq's stored result only
adds the user's message. Without a run, the job is answered from arq: its stored result
(`source: "arq"`, for a job that failed before opening a run, or a store this process cannot
see) or its queue entry (`source: "queue"`: queued, deferred or in progress, no wallets yet).
"""

import csv
import io
from typing import Any, Final

from arq.jobs import JobDef, JobResult
from pydantic import ValidationError

from premix.amounts import sol_text
from premix.errors import PremixError
from premix.jobs import PremixFundsJob
from premix.mixer.result import MixResult, WalletStatus
from premix.runs import AttemptState, RunRecord, RunStatus
from premix.scheduling import format_run_time
from premix.top_up import completion_message as top_up_completion_message
from premix.top_up import top_up_wallets


class JobRecordUnreadable(PremixError):
    """arq's record of a job with no ledger run is not premix JSON (nothing in it is run)."""

    title = "Job record unreadable"


# arq's states as `status` when no run is recorded yet.
QUEUE_MESSAGES: Final = {
    "queued": "queued; nothing sent yet",
    "deferred": "queued to start later; nothing sent yet",
    "in_progress": "picked up by a worker; nothing sent yet",
}


def receipt_from_run(
    job_id: str, run: RunRecord, job_status: str, stored: JobResult | None
) -> dict[str, Any]:
    """The receipt of `job_id` from its ledger run (`job_status`: arq's state of the job)."""
    mix = MixResult.from_record(run)
    if run.top_up is not None:
        wallets = _top_up_wallets(run, mix)
    else:
        wallets = [
            _wallet(
                entry.position,
                outcome.public_key,
                outcome.lamports,
                outcome.status.value,
                outcome.signature,
                _landed_slot(run, entry.position, outcome.status),
                outcome.error,
                outcome.evidence,
            )
            for entry, outcome in zip(run.plan, mix.wallets, strict=True)
        ]
    completed = run.status is RunStatus.COMPLETED
    stored_message = _stored_message(stored)
    message = stored_message or _run_message(run, mix)
    return {
        "success": completed,
        "message": message,
        "jobId": job_id,
        "runId": run.run_id,
        "retryJobs": list(run.retry_jobs),  # jobs `retry_premix` queued to continue the run
        "status": run.status.value,
        "jobStatus": job_status,
        "source": "ledger",
        "userId": run.user_id,
        "mode": run.mode,
        "kind": run.kind,  # "premix" or "sweep" (buyer wallets -> funding wallet)
        "topUp": run.top_up is not None,
        "amountLamports": run.amount_lamports,
        "amountSol": sol_text(run.amount_lamports),
        "fundingPublicKey": run.funding,
        "createdAt": run.created_at.isoformat(),
        "updatedAt": run.updated_at.isoformat(),
        "error": run.error,
        "wallets": wallets,
        "totals": _totals(wallets, mix.fee_lamports, mix.priority_fee_lamports, mix.transactions),
        "signatures": _landed_signatures(wallets),
    }


def _top_up_wallets(run: RunRecord, mix: MixResult) -> list[dict[str, Any]]:
    """Every wallet of a top-up's distribution: its planned amount, what it lacked (its
    transfer, if any: the run's plan holds only those) and what was sent."""
    plan_positions = {entry.recipient: entry.position for entry in run.plan}
    wallets = []
    for wallet in top_up_wallets(run.top_up or [], mix):
        entry, outcome = wallet.entry, wallet.outcome
        position = plan_positions.get(entry.recipient)
        landed_slot = None
        if outcome is not None and position is not None:
            landed_slot = _landed_slot(run, position, outcome.status)
        wallets.append(
            _wallet(
                entry.position,
                entry.recipient,
                entry.missing_lamports,
                wallet.status,
                outcome.signature if outcome is not None else None,
                landed_slot,
                outcome.error if outcome is not None else None,
                outcome.evidence if outcome is not None else None,
                planned_lamports=entry.planned_lamports,
                held_lamports=entry.held_lamports,
            )
        )
    return wallets


def receipt_from_arq(job_id: str, job_status: str, info: JobDef | None) -> dict[str, Any] | None:
    """The receipt of a job with no ledger run, from arq's stored result or queue entry; None
    when arq holds neither."""
    job = _job_of(info)
    base: dict[str, Any] = {
        "success": False,
        "message": "",
        "jobId": job_id,
        "status": job_status,
        "jobStatus": job_status,
        "source": "queue",
        "userId": job.user_id if job is not None else None,
        "mode": job.mode if job is not None else None,
        "topUp": job.top_up if job is not None else False,
        "amountLamports": job.amount_lamports if job is not None else None,
        "amountSol": sol_text(job.amount_lamports) if job is not None else None,
        "fundingPublicKey": None,
        "createdAt": info.enqueue_time.isoformat() if info is not None else None,  # enqueued
        "updatedAt": None,
        "error": None,
        "wallets": [],
        "totals": _totals([], 0, 0, 0),
        "signatures": [],
    }
    if isinstance(info, JobResult) and isinstance(info.result, dict):
        stored = info.result
        wallets = [
            _wallet(
                int(w.get("position", i)),
                str(w.get("publicKey")),
                int(w.get("lamports", 0)),
                str(w.get("status")),
                w.get("signature"),
                None,  # arq's result does not record slots; the ledger does
                w.get("error"),
                w.get("evidence"),
                planned_lamports=w.get("plannedLamports"),
                held_lamports=w.get("heldLamports"),
            )
            for i, w in enumerate(stored.get("wallets") or [])
        ]
        stored_totals = stored.get("totals") or {}
        success = stored.get("success") is True
        base.update(
            success=success,
            message=str(stored.get("message") or ""),
            status="completed" if success else "failed",
            source="arq",
            error=None if success else stored.get("message"),
            wallets=wallets,
            totals=_totals(
                wallets,
                int(stored_totals.get("feeLamports", 0)),
                int(stored_totals.get("priorityFeeLamports", 0)),
                int(stored_totals.get("transactions", 0)),
            ),
            signatures=_landed_signatures(wallets),
        )
        return base
    if info is None or job_status not in QUEUE_MESSAGES:
        return None
    state = QUEUE_MESSAGES[job_status]
    if job_status == "deferred" and info.score is not None:  # the queue score: when it is due
        state = f"scheduled for {format_run_time(info.score)}; nothing sent yet"
    base["message"] = f"Job {job_id} is {state}"
    return base


def _wallet(
    position: int,
    public_key: str,
    lamports: int,
    status: str,
    signature: str | None,
    slot: int | None,
    error: str | None,
    evidence: str | None = None,
    *,
    planned_lamports: int | None = None,
    held_lamports: int | None = None,
) -> dict[str, Any]:
    """One wallet of a receipt: `lamports` its transfer (a top-up: what it lacked), planned
    (default: its transfer) and sent (its transfer once funded, else 0)."""
    planned = lamports if planned_lamports is None else int(planned_lamports)
    sent = lamports if status == WalletStatus.FUNDED.value else 0
    return {
        "position": position,
        "publicKey": public_key,
        "lamports": lamports,
        "sol": sol_text(lamports),
        "plannedLamports": planned,
        "plannedSol": sol_text(planned),
        "heldLamports": held_lamports,  # a top-up: its balance when the run was planned
        "sentLamports": sent,
        "sentSol": sol_text(sent),
        "status": status,
        "signature": signature,
        "slot": slot,
        "error": error,
        "evidence": evidence,  # "balances": funded, proven by balances (no status, no slot)
    }


def _totals(
    wallets: list[dict[str, Any]], fee_lamports: int, priority_fee_lamports: int, transactions: int
) -> dict[str, Any]:
    funded = [w for w in wallets if w["status"] == WalletStatus.FUNDED.value]
    funded_lamports = sum(w["lamports"] for w in funded)
    planned_lamports = sum(w["plannedLamports"] for w in wallets)
    return {
        "walletsPlanned": len(wallets),
        "walletsFunded": len(funded),
        "plannedLamports": planned_lamports,
        "plannedSol": sol_text(planned_lamports),
        "fundedLamports": funded_lamports,
        "fundedSol": sol_text(funded_lamports),
        "sentLamports": funded_lamports,  # the name the job result uses
        "sentSol": sol_text(funded_lamports),
        "feeLamports": fee_lamports,  # every landed transaction, priority fees included
        "feeSol": sol_text(fee_lamports),
        "priorityFeeLamports": priority_fee_lamports,
        "priorityFeeSol": sol_text(priority_fee_lamports),
        "costLamports": funded_lamports + fee_lamports,  # what left the funding wallet
        "costSol": sol_text(funded_lamports + fee_lamports),
        "transactions": transactions,
    }


def _landed_slot(run: RunRecord, position: int, status: WalletStatus) -> int | None:
    tx = run.transaction_of(position)
    if tx is None:
        return None
    if status is WalletStatus.FUNDED:
        wanted = AttemptState.LANDED_OK
    elif status is WalletStatus.FAILED:
        wanted = AttemptState.LANDED_FAILED
    else:
        return None
    landed = [a for a in tx.attempts if a.state is wanted]
    return landed[-1].slot if landed else None


def _landed_signatures(wallets: list[dict[str, Any]]) -> list[str]:
    funded = (w["signature"] for w in wallets if w["status"] == WalletStatus.FUNDED.value)
    return list(dict.fromkeys(s for s in funded if s is not None))


def _stored_message(stored: JobResult | None) -> str | None:
    if stored is None or not isinstance(stored.result, dict):
        return None
    message = stored.result.get("message")
    return message if isinstance(message, str) and message else None


def _run_message(run: RunRecord, mix: MixResult) -> str:
    if run.status is RunStatus.COMPLETED and run.top_up is not None:
        return top_up_completion_message(run, mix, run.mode)
    what = "Sweep" if run.kind == "sweep" else "Premix"
    if run.status is RunStatus.COMPLETED:
        return f"{what} complete"
    if run.status is RunStatus.FAILED:
        return f"{what} failed: {run.error}" if run.error else f"{what} failed"
    if run.status is RunStatus.CANCELLED:
        return run.error or f"{what} cancelled"
    return f"{what} {run.status.value}; the ledger shows what has landed so far"


def _job_of(info: JobDef | None) -> PremixFundsJob | None:
    if info is None or not info.args or not isinstance(info.args[0], dict):
        return None
    try:
        return PremixFundsJob.model_validate(info.args[0])
    except ValidationError:
        return None


# --- CSV ---

CSV_HEADER: Final = (
    "position",
    "address",
    "amount_sol",
    "amount_lamports",
    "status",
    "signature",
    "slot",
    "error",
    "planned_sol",  # the wallet's amount in the distribution (a top-up: its target)
    "planned_lamports",
    "sent_sol",  # what landed in it from this premix (a top-up: what it lacked, or 0)
    "sent_lamports",
)


def receipt_csv(receipt: dict[str, Any]) -> str:
    """The receipt as CSV: a header row, one row per wallet (its transfer, then its planned
    amount and what was sent), an empty row, then a summary block (`item,sol,lamports,detail`:
    job, status, a top-up's planned total, funded, fees, priority fees, total cost,
    transactions landed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for w in receipt["wallets"]:
        writer.writerow(
            (
                w["position"],
                w["publicKey"],
                w["sol"],
                w["lamports"],
                w["status"],
                w["signature"] or "",
                "" if w["slot"] is None else w["slot"],
                w["error"] or "",
                w["plannedSol"],
                w["plannedLamports"],
                w["sentSol"],
                w["sentLamports"],
            )
        )
    totals = receipt["totals"]
    writer.writerow(())
    writer.writerow(("item", "sol", "lamports", "detail"))
    writer.writerow(("job", "", "", receipt["jobId"]))
    writer.writerow(("status", "", "", receipt["status"]))
    if receipt.get("topUp"):
        writer.writerow(
            ("planned", totals["plannedSol"], totals["plannedLamports"], "top-up: wallets' target")
        )
    writer.writerow(
        (
            "funded",
            totals["fundedSol"],
            totals["fundedLamports"],
            f"{totals['walletsFunded']} of {totals['walletsPlanned']} wallets",
        )
    )
    writer.writerow(
        ("fees", totals["feeSol"], totals["feeLamports"], "network fees incl. priority fees")
    )
    writer.writerow(
        ("priority fees", totals["priorityFeeSol"], totals["priorityFeeLamports"], "in fees")
    )
    writer.writerow(("total cost", totals["costSol"], totals["costLamports"], "funded + fees"))
    writer.writerow(("transactions landed", "", "", totals["transactions"]))
    return out.getvalue()
