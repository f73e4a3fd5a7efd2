"""`wallet_readiness`: is each buyer wallet of a user holding what its last premix put there?

Per buyer wallet (public keys only: no private key is decrypted): its position, address,
on-chain balance (one getMultipleAccounts per 100 wallets), the last premix that credited it
(the newest ledger run of the user whose plan holds the address and whose transfer to it
landed), the amount that premix planned for it, and `ready`: the balance is at least that
amount. A wallet no premix ever credited is not ready. Then the totals.
"""

from dataclasses import dataclass
from typing import Any

from premix.amounts import sol_text
from premix.errors import NoBuyerWallets
from premix.ledger import Ledger, RunRecord
from premix.rpc import SolanaRpc
from premix.settings import Settings, get_settings
from premix.store import Store

NEVER_FUNDED = "never funded by a premix"


@dataclass(frozen=True)
class Credit:
    """The last premix that funded one address: its job (run) id, amount and when it ran."""

    job_id: str
    lamports: int
    created_at: str


def last_credits(runs: list[RunRecord]) -> dict[str, Credit]:
    """Each address's last credit, from the user's runs newest first. Pure."""
    credits: dict[str, Credit] = {}
    for run in runs:
        funded = set(run.funded_positions())
        for entry in run.plan:
            if entry.position in funded and entry.recipient not in credits:
                credits[entry.recipient] = Credit(
                    run.run_id, entry.lamports, run.created_at.isoformat()
                )
    return credits


def readiness_report(
    user_id: str,
    positions: list[int],
    addresses: list[str],
    balances: list[int],
    credits: dict[str, Credit],
) -> dict[str, Any]:
    """The readiness report of the user's buyer wallets (in position order). Pure."""
    wallets: list[dict[str, Any]] = []
    ready_count = 0
    total_planned = 0
    for position, address, balance in zip(positions, addresses, balances, strict=True):
        credit = credits.get(address)
        planned = None if credit is None else credit.lamports
        if credit is None:
            ready, reason = False, NEVER_FUNDED
        elif balance >= credit.lamports:
            ready, reason = True, None
            ready_count += 1
        else:
            ready = False
            reason = (
                f"holds {sol_text(balance)} SOL, below the {sol_text(credit.lamports)} SOL "
                f"premix {credit.job_id} sent it"
            )
        total_planned += planned or 0
        wallets.append(
            {
                "position": position,
                "publicKey": address,
                "balanceLamports": balance,
                "balanceSol": sol_text(balance),
                "lastPremix": None
                if credit is None
                else {"jobId": credit.job_id, "createdAt": credit.created_at},
                "plannedLamports": planned,
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
    return readiness_report(user_id, positions, addresses, balances, last_credits(runs))
