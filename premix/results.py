"""The job's result: what arq stores for a premix job and the bot reads back, the same shape on
success and failure (camelCase, JSON-safe; money as integer lamports plus a SOL string)."""

from collections.abc import Sequence
from typing import Any

from premix import top_up as top_ups
from premix.amounts import format_sol, sol_text
from premix.jobs import PremixFundsJob
from premix.ledger import RunRecord, TopUpEntry
from premix.mixer import MixResult, WalletOutcome, WalletStatus


def build_result(
    job_id: str,
    message: str,
    *,
    success: bool,
    job: PremixFundsJob | None = None,
    mix: MixResult | None = None,
    balances: Sequence[int] | None = None,
    top_up: Sequence[TopUpEntry] | None = None,
) -> dict[str, Any]:
    """The job's result (camelCase, JSON-safe): `success`, the user's `message`, one entry per
    planned wallet (funded or not, with its signature; `balanceLamports` as verified on chain
    on success), totals and the landed signatures. Money is integer lamports plus a SOL string.

    Each wallet shows `plannedLamports` (its amount in the distribution) and `sentLamports`
    (what landed from this run); `lamports` is its transfer. A top-up (`top_up`: the run's
    `RunRecord.top_up`) lists every wallet of its distribution, `lamports` being what it
    lacked, and a wallet that lacked nothing as status `not_needed` with nothing sent.
    """
    outcomes = list(mix.wallets) if mix is not None else []
    verified: dict[str, int] = {}  # plan order, as `Payout.verify` returns them
    if balances is not None:
        verified = dict(zip((o.public_key for o in outcomes), balances, strict=True))
    rows: list[tuple[int, str, int, int | None, WalletOutcome | None]]
    if top_up is not None:
        rows = []
        for wallet in top_ups.top_up_wallets(top_up, mix):
            entry = wallet.entry
            planned, held = entry.planned_lamports, entry.held_lamports
            rows.append((entry.position, entry.recipient, planned, held, wallet.outcome))
    else:
        rows = [(p, o.public_key, o.lamports, None, o) for p, o in enumerate(outcomes)]
    wallets = [
        _wallet(position, address, planned, held, outcome, verified.get(address))
        for position, address, planned, held, outcome in rows
    ]
    signatures = list(
        dict.fromkeys(w["signature"] for w in wallets if w["funded"] and w["signature"])
    )
    sent_total = mix.sent_lamports if mix is not None else 0
    fees = mix.fee_lamports if mix is not None else 0
    priority_fees = mix.priority_fee_lamports if mix is not None else 0
    planned_total = sum(wallet["plannedLamports"] for wallet in wallets)
    return {
        "success": success,
        "message": message,
        "jobId": job_id,
        # the ledger run: the job's own id, or the run a `retry_premix` job continues
        "runId": (job.run_id or job_id) if job is not None else job_id,
        "userId": job.user_id if job is not None else None,
        "mode": job.mode if job is not None else None,
        "topUp": top_up is not None or (job is not None and job.top_up),
        "amountLamports": job.amount_lamports if job is not None else None,
        "amountSol": sol_text(job.amount_lamports) if job is not None else None,
        "wallets": wallets,
        "totals": {
            "walletsPlanned": len(wallets),
            "walletsFunded": sum(1 for wallet in wallets if wallet["funded"]),
            "plannedLamports": planned_total,
            "plannedSol": sol_text(planned_total),
            "sentLamports": sent_total,
            "sentSol": sol_text(sent_total),
            "feeLamports": fees,
            "feeSol": sol_text(fees),
            "priorityFeeLamports": priority_fees,  # included in feeLamports
            "priorityFeeSol": sol_text(priority_fees),
            "transactions": mix.transactions if mix is not None else 0,
        },
        "signatures": signatures,
    }


def _wallet(
    position: int,
    public_key: str,
    planned_lamports: int,
    held_lamports: int | None,
    outcome: WalletOutcome | None,
    balance: int | None,
) -> dict[str, Any]:
    """One wallet of the result; `outcome` None: a top-up's wallet that lacked nothing."""
    funded = outcome is not None and outcome.status is WalletStatus.FUNDED
    lamports = outcome.lamports if outcome is not None else 0
    sent = lamports if funded else 0
    return {
        "position": position,
        "publicKey": public_key,
        "lamports": lamports,  # its transfer (a top-up: what it lacked)
        "sol": sol_text(lamports),
        "plannedLamports": planned_lamports,
        "plannedSol": sol_text(planned_lamports),
        "heldLamports": held_lamports,  # a top-up: its balance when the run was planned
        "sentLamports": sent,
        "sentSol": sol_text(sent),
        "status": outcome.status.value if outcome is not None else top_ups.NOT_NEEDED,
        "funded": funded,
        "signature": outcome.signature if outcome is not None else None,
        "error": outcome.error if outcome is not None else None,
        "evidence": outcome.evidence if outcome is not None else None,  # "balances"
        "balanceLamports": balance,  # verified on chain (success; wallets sent to)
    }


def completion_message(
    mix: MixResult,
    mode: str,
    run: RunRecord | None = None,
    *,
    spent_since: Sequence[tuple[str, int]] = (),
    unchecked: str | None = None,
) -> str:
    """'Premix complete: sent 2 SOL to 4 wallet(s) in 4 transaction(s) (standard mode), fees
    0.00002 SOL (of which priority fees 0.000001 SOL)'; for a top-up `run`, what it sent of
    what was missing (`premix.top_up.completion_message`). Then each wallet that holds less
    than it received (`spent_since`: address, balance), and why the final balance check could
    not run (`unchecked`), if it could not."""
    message = _sent_message(mix, mode, run)
    for wallet, balance in spent_since:
        message += (
            f" (wallet {wallet} now holds {format_sol(balance)}, less than it received: "
            "spent since it was funded)"
        )
    if unchecked:
        message += (
            f" (every transfer confirmed on chain; the final balance check could not run: "
            f"{unchecked})"
        )
    return message


def _sent_message(mix: MixResult, mode: str, run: RunRecord | None) -> str:
    if run is not None and run.top_up is not None:
        return top_ups.completion_message(run, mix, mode)
    message = (
        f"Premix complete: sent {format_sol(mix.sent_lamports)} to {len(mix.funded)} "
        f"wallet(s) in {mix.transactions} transaction(s) ({mode} mode), "
        f"fees {format_sol(mix.fee_lamports)}"
    )
    if mix.priority_fee_lamports:
        message += f" (of which priority fees {format_sol(mix.priority_fee_lamports)})"
    return message
