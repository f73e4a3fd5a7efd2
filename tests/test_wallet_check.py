"""`CountsBatch`, the shared wallet read of concurrent enqueues, with a stand-in store: a read
stuck past its deadline fails its callers and does not hold up the reads after it; each
caller gets its own user's counts."""

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

import premix.wallet_check
from premix.wallet_check import CountsBatch
from premix.wallets import WalletCounts


class StandInWallets:
    def __init__(self) -> None:
        self.reads: list[list[str]] = []
        self.stuck = True

    async def wallet_counts_of(self, user_ids: Sequence[str]) -> dict[str, WalletCounts]:
        self.reads.append(sorted(user_ids))
        if self.stuck:
            await asyncio.sleep(30)  # a link dropping packets, a URI with long socket timeouts
        return {u: WalletCounts(has_funding=True, buyer_count=int(u[1:])) for u in user_ids}


class StandInStore:
    def __init__(self) -> None:
        self.wallets = StandInWallets()


async def test_a_stuck_read_fails_its_callers_and_the_next_read_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(premix.wallet_check, "_READ_DEADLINE_SECONDS", 0.2)
    store = StandInStore()
    batch = CountsBatch(store)  # type: ignore[arg-type]

    with pytest.raises(TimeoutError):
        await batch.counts("u1")
    store.wallets.stuck = False  # the store answers again
    later: list[Any] = await asyncio.gather(*(batch.counts(f"u{n}") for n in (2, 3, 4)))

    assert [counts.buyer_count for counts in later] == [2, 3, 4]  # each its own user's
    assert store.wallets.reads == [["u1"], ["u2", "u3", "u4"]]
