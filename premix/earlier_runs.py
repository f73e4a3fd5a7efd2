"""Before a new premix checks the funding balance, the user's earlier runs must be settled:
every attempt they left open (landed, expired, or still able to land) is looked up and their
reports updated with what landed. While any may still land, the funding balance is not what it
will be and the wallets may yet receive what those runs sent, so the new premix waits.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from premix.ledger import Ledger
from premix.mixer import Payout
from premix.rpc import SolanaRpc
from premix.settings import Settings

EARLIER_RUNS_POLL_SECONDS: Final = 1.0  # how often an earlier run's open attempts are looked up


async def settle_earlier_runs(
    ledger: Ledger,
    *,
    user_id: str,
    run_id: str,
    rpc: SolanaRpc,
    settings: Settings,
    on_wait: Callable[[int], Awaitable[None]],
) -> None:
    """Settle every attempt the user's runs other than `run_id` left open; wait while any may
    still land, calling `on_wait(open_attempts)` once, when the first wait begins."""
    told = False
    while True:
        runs = await ledger.open_runs_of(user_id, excluding=run_id)
        open_attempts = 0
        for run in runs:
            settled = await Payout.resume(ledger, run, rpc=rpc, settings=settings)
            open_attempts += len(settled.record.open_attempts())
        if not open_attempts:
            return
        if not told:
            await on_wait(open_attempts)
            told = True
        await asyncio.sleep(EARLIER_RUNS_POLL_SECONDS)
