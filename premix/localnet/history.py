"""Recent account states, so reads at `confirmed`, `finalized` or on a lagging node see the
accounts as they were at the end of an earlier slot.

LiteSVM holds only the newest state. `AccountHistory` is an undo log beside it: for each slot in
which a transaction or airdrop changed accounts, the state each changed account had before that
slot's first change. The state at the end of slot S is then, for each account, the "before" of
the first later slot that changed it, or the newest state when none did.

Memory stays bounded: only changed accounts are kept, one copy per account per slot, and only
for the last `slots` slots (older entries are dropped as the chain advances); reads further back
than that raise `ValueError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from solders.account import Account
from solders.pubkey import Pubkey

# None: the account did not exist (LiteSVM's `get_account` answer).
AccountState = Account | None


class AccountHistory:
    """An undo log of account states for the last `slots` slots (not thread-safe: the chain's
    lock guards it)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self._slots = slots
        self._horizon = 0  # reads at this slot or later are exact
        self._undo: deque[tuple[int, dict[Pubkey, AccountState]]] = deque()

    @property
    def horizon(self) -> int:
        """The oldest slot whose end state can still be read."""
        return self._horizon

    def record(self, slot: int, before: Mapping[Pubkey, AccountState]) -> None:
        """Remember the state each account in `before` had before `slot` changed it; an account
        already changed earlier in `slot` keeps its first "before"."""
        if not before:
            return
        if self._undo and self._undo[-1][0] > slot:
            raise ValueError(f"slot {slot} is older than the newest recorded slot")
        if not self._undo or self._undo[-1][0] != slot:
            self._undo.append((slot, {}))
        changes = self._undo[-1][1]
        for pubkey, state in before.items():
            changes.setdefault(pubkey, state)

    def state_at(self, pubkey: Pubkey, slot: int, newest: AccountState) -> AccountState:
        """The state of `pubkey` at the end of `slot`, given its `newest` state.

        Raises ValueError when `slot` is older than the horizon (no longer remembered).
        """
        if slot < self._horizon:
            raise ValueError(f"slot {slot} is older than the account history ({self._horizon})")
        for changed_slot, before in self._undo:
            if changed_slot > slot and pubkey in before:
                return before[pubkey]
        return newest

    def advance_to(self, tip: int) -> None:
        """Forget what reads older than the last `slots` slots before `tip` would need."""
        self._horizon = max(self._horizon, tip - self._slots)
        while self._undo and self._undo[0][0] <= self._horizon:
            self._undo.popleft()

    def __len__(self) -> int:
        """Account states held (the memory this history uses, in accounts)."""
        return sum(len(before) for _, before in self._undo)
