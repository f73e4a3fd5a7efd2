"""The job's result: what arq stores for a premix job and the bot reads back, the same shape on
success and failure (camelCase, JSON-safe; money as integer lamports plus a SOL string)."""

from collections.abc import Sequence
from typing import Any

from premix.amounts import format_sol, sol_text
from premix.jobs import PremixFundsJob
from premix.mixer import MixResult, WalletStatus


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
                    "evidence": wallet.evidence,  # "balances": its status was not found
                    "balanceLamports": balances[position] if balances is not None else None,
                }
            )
            if funded and wallet.signature is not None and wallet.signature not in signatures:
                signatures.append(wallet.signature)
    sent = mix.sent_lamports if mix is not None else 0
    fees = mix.fee_lamports if mix is not None else 0
    priority_fees = mix.priority_fee_lamports if mix is not None else 0
    return {
        "success": success,
        "message": message,
        "jobId": job_id,
        # the ledger run: the job's own id, or the run a `retry_premix` job continues
        "runId": (job.run_id or job_id) if job is not None else job_id,
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
            "priorityFeeLamports": priority_fees,  # included in feeLamports
            "priorityFeeSol": sol_text(priority_fees),
            "transactions": mix.transactions if mix is not None else 0,
        },
        "signatures": signatures,
    }


def completion_message(mix: MixResult, mode: str) -> str:
    """'Premix complete: sent 2 SOL to 4 wallet(s) in 4 transaction(s) (standard mode), fees
    0.00002 SOL (of which priority fees 0.000001 SOL)'."""
    message = (
        f"Premix complete: sent {format_sol(mix.sent_lamports)} to {len(mix.funded)} "
        f"wallet(s) in {mix.transactions} transaction(s) ({mode} mode), "
        f"fees {format_sol(mix.fee_lamports)}"
    )
    if mix.priority_fee_lamports:
        message += f" (of which priority fees {format_sol(mix.priority_fee_lamports)})"
    return message
