"""`wallet_readiness`: is each buyer wallet of a user holding what its last premix put there?

Per buyer wallet (public keys only: no private key is decrypted): its position, address,
on-chain balance (one getMultipleAccounts per 100 wallets), the last premix that credited it
(the newest ledger run of the user whose plan holds the address and whose transfer to it
landed), the amount planned for it, and `ready`: the balance is at least that amount. A wallet
no premix ever credited or planned is not ready. Then the totals.

The planned amount is the target of the newest run that set one: a premix that credited the
wallet (its amount), or a top-up (`premix.top_up`) that credited it or, completed, found it
holding enough (its planned amount: a top-up's transfer is only what the wallet lacked). A
top-up that sent a wallet nothing is never its last credit.
"""

from dataclasses import dataclass
from typing import Any

from premix.amounts import sol_text
from premix.errors import NoBuyerWallets
from premix.ledger import Ledger, RunRecord, RunStatus
from premix.rpc import SolanaRpc
from premix.settings import Settings, get_settings
from premix.store import Store

NEVER_FUNDED = "never funded by a premix"


@dataclass(frozen=True)
class Credit:
    """A run that planned one address: its job (run) id, the amount it planned for it (a
    top-up: the target), when it ran, and what it sent it."""

    job_id: str
    lamports: int
    created_at: str
    sent_lamports: int | None = None  # None: the whole amount (a plain premix)
    top_up: bool = False


def last_credits(runs: list[RunRecord]) -> dict[str, Credit]:
    """Each address's last credit: the newest run whose transfer to it landed, from the user's
    runs newest first. Pure."""
    return _newest(runs, nothing_sent=False)


def last_targets(runs: list[RunRecord]) -> dict[str, Credit]:
    """Each address's planned amount: the newest run that credited it, or a completed top-up
    that found it holding enough (from the user's runs newest first). Pure."""
    return _newest(runs, nothing_sent=True)


def _newest(runs: list[RunRecord], *, nothing_sent: bool) -> dict[str, Credit]:
    found: dict[str, Credit] = {}
    for run in runs:
        funded = {run.plan[p].recipient for p in run.funded_positions()}
        created = run.created_at.isoformat()
        if run.top_up is None:
            for entry in run.plan:
                if entry.recipient in funded and entry.recipient not in found:
                    found[entry.recipient] = Credit(run.run_id, entry.lamports, created)
            continue
        completed = run.status is RunStatus.COMPLETED
        for wallet in run.top_up:
            sent = wallet.missing_lamports if wallet.recipient in funded else 0
            counts = sent > 0 or (nothing_sent and completed and not wallet.missing_lamports)
            if counts and wallet.recipient not in found:
                found[wallet.recipient] = Credit(
                    run.run_id, wallet.planned_lamports, created, sent, top_up=True
                )
    return found


def readiness_report(
    user_id: str,
    positions: list[int],
    addresses: list[str],
    balances: list[int],
    credits: dict[str, Credit],
    targets: dict[str, Credit] | None = None,
) -> dict[str, Any]:
    """The readiness report of the user's buyer wallets (in position order); `targets` (the
    planned amounts, `last_targets`) default to `credits`. Pure."""
    targets = credits if targets is None else targets
    wallets: list[dict[str, Any]] = []
    ready_count = 0
    total_planned = 0
    for position, address, balance in zip(positions, addresses, balances, strict=True):
        credit = credits.get(address)
        target = targets.get(address, credit)
        planned = None if target is None else target.lamports
        if target is None:
            ready, reason = False, NEVER_FUNDED
        elif balance >= target.lamports:
            ready, reason = True, None
            ready_count += 1
        else:
            ready = False
            kind = "top-up" if target.top_up else "premix"
            how = "planned for it" if target.top_up else "sent it"
            reason = (
                f"holds {sol_text(balance)} SOL, below the {sol_text(target.lamports)} SOL "
                f"{kind} {target.job_id} {how}"
            )
        total_planned += planned or 0
        wallets.append(
            {
                "position": position,
                "publicKey": address,
                "balanceLamports": balance,
                "balanceSol": sol_text(balance),
                "lastPremix": None if credit is None else _premix(credit),
                "plannedLamports": planned,
                "plannedBy": None if target is None else _premix(target),
                "plannedSol": None if planned is None else sol_text(planned),
                "ready": ready,
                "reason": reason,
            }
        )
    total_balance = sum(balances)
    return {
        "userId": user_id,
        "wallets": wallets,
        "totals": {
            "wallets": len(wallets),
            "ready": ready_count,
            "balanceLamports": total_balance,
            "balanceSol": sol_text(total_balance),
            "plannedLamports": total_planned,
            "plannedSol": sol_text(total_planned),
        },
    }


def _premix(credit: Credit) -> dict[str, Any]:
    sent = credit.lamports if credit.sent_lamports is None else credit.sent_lamports
    return {
        "jobId": credit.job_id,
        "createdAt": credit.created_at,
        "topUp": credit.top_up,
        "sentLamports": sent,  # what that run sent the wallet (a top-up: what it lacked)
    }


async def wallet_readiness(user_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Return the readiness of every buyer wallet of `user_id` and the totals (see the module).

    `settings` defaults to `get_settings()`. Raises `NoBuyerWallets` for a user with no buyer
    wallets (an unknown user has none); `TransientError` when the RPC node is unreachable;
    PyMongo errors when the store is.
    """
    settings = settings if settings is not None else get_settings()
    store = await Store.open(settings)
    try:
        documents = await store.wallets.buyer_positions(user_id)
        if not documents:
            raise NoBuyerWallets(user_id)
        runs = await Ledger(store).runs_of(user_id)
    finally:
        await store.close()
    positions = [position for position, _ in documents]
    addresses = [str(public_key) for _, public_key in documents]
    async with SolanaRpc.from_settings(settings) as rpc:
        balances = await rpc.balances([public_key for _, public_key in documents])
    return readiness_report(
        user_id, positions, addresses, balances, last_credits(runs), last_targets(runs)
    )
