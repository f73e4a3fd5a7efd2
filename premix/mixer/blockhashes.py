"""The blockhash a run signs with: read once and reused while young, not fetched per transfer.

A reused blockhash changes nothing the money rules rely on: each attempt records the blockhash it
was signed with and that blockhash's own last valid block height, so expiry is decided exactly as
for a fresh one. It is read again once it is `REUSE_SLOTS` slots old (by the slots the node
reported since, or by the clock), after any expiry or "blockhash not found", and whenever the
transaction being signed already has an attempt with it (the same bytes would come out).
"""

from collections.abc import Collection
from typing import Final

from premix.rpc import LatestBlockhash, SolanaRpc

# Of a blockhash's 150 blocks: a transaction signed this late still has 60 blocks (about 24 s of
# 400 ms slots, a dozen rebroadcasts) to land before it expires.
REUSE_SLOTS: Final = 90


class RecentBlockhash:
    """One execution's blockhash for signing (see the module docstring)."""

    def __init__(self, slot_seconds: float) -> None:
        self.slot_seconds = slot_seconds  # 0: age by the node's slots only
        self._latest: LatestBlockhash | None = None
        self._read_at = 0.0

    async def get(self, rpc: SolanaRpc, *, avoid: Collection[str] = ()) -> LatestBlockhash:
        """The blockhash to sign with now: the one read before while it is young and not in
        `avoid` (blockhashes already used by the transactions being signed), else a new one."""
        latest = self._latest
        if latest is not None and str(latest.blockhash) not in avoid and self._young(rpc, latest):
            return latest
        latest = await rpc.latest_blockhash()
        self._latest, self._read_at = latest, rpc.clock()
        return latest

    def forget(self) -> None:
        """Read a new blockhash next time (an attempt expired, or a node did not know it)."""
        self._latest = None

    def _young(self, rpc: SolanaRpc, latest: LatestBlockhash) -> bool:
        seen = rpc.slots.highest("processed", "confirmed")
        age = (latest.context_slot if seen is None else seen) - latest.context_slot
        if self.slot_seconds > 0:  # slots may pass unseen: the clock bounds the age too
            age = max(age, int((rpc.clock() - self._read_at) / self.slot_seconds))
        return age < REUSE_SLOTS
