"""When the node's slots begin, estimated from the context slots it reports (pure, no I/O).

A response served from a bank at slot `s`, for a request sent at `sent_at` and answered at
`received_at` (monotonic seconds), proves that slot `s` had begun by `received_at` and slot
`s + 1` had not begun by `sent_at`. With slots of a known length `L` starting at `phase + k * L`,
each such observation bounds `phase` to `(sent_at - (s + 1) * L, received_at - s * L]`; the
observations of one commitment together narrow it down (a node's banks of one commitment move at
the slot boundaries). Newer observations win: an older one that disagrees (the cluster's slots
drifted from `L`, or a lagging node answered) is ignored.

`slot_end_after(moment, L)` is then the latest time the slot in progress at `moment` can end: a
transaction the node received before `moment` is in that slot or an earlier one, so a status poll
after it sees the slot passed. Without enough observations it is `moment + L`, one whole slot.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

OBSERVATIONS_KEPT: Final = 32  # per commitment: plenty to pin the phase, cheap to scan


@dataclass(frozen=True)
class SlotObservation:
    """One response's context slot and when its request was sent and answered."""

    slot: int
    sent_at: float
    received_at: float


class SlotTimeline:
    """The recent context slots one RPC client saw, per commitment (see the module docstring)."""

    def __init__(self) -> None:
        self._seen: dict[str, deque[SlotObservation]] = {}
        self._highest: dict[str, int] = {}

    def observe(self, commitment: str, slot: int, sent_at: float, received_at: float) -> None:
        """Record that a `commitment` bank at `slot` answered a request sent at `sent_at` and
        answered at `received_at`."""
        seen = self._seen.setdefault(commitment, deque(maxlen=OBSERVATIONS_KEPT))
        seen.append(SlotObservation(slot, sent_at, received_at))
        self._highest[commitment] = max(slot, self._highest.get(commitment, slot))

    def highest(self, *commitments: str) -> int | None:
        """The highest slot a bank of any of `commitments` answered from so far (None: never)."""
        seen = [self._highest[c] for c in commitments if c in self._highest]
        return max(seen, default=None)

    def phase(self, slot_seconds: float) -> tuple[float, float] | None:
        """The narrowest `(low, high]` bound on when slot 0 began, over the commitments seen, as
        the newest mutually consistent observations give it; None without observations."""
        best: tuple[float, float] | None = None
        for seen in self._seen.values():
            low, high = float("-inf"), float("inf")
            for observation in reversed(seen):
                new_low = max(low, observation.sent_at - (observation.slot + 1) * slot_seconds)
                new_high = min(high, observation.received_at - observation.slot * slot_seconds)
                if new_low >= new_high:
                    break  # older than a drift or a lagging node: the newer ones stand
                low, high = new_low, new_high
            if best is None or high - low < best[1] - best[0]:
                best = (low, high)
        return best

    def slot_end_after(self, moment: float, slot_seconds: float) -> float:
        """The latest time the slot in progress at `moment` can end (`moment + slot_seconds`
        when the observations do not pin the slots' phase)."""
        bounds = self.phase(slot_seconds)
        if bounds is None or bounds[1] - bounds[0] >= slot_seconds:
            return moment + slot_seconds
        low, high = bounds
        # the next boundary after `moment` if slots began at `high`: the latest of all phases
        # in (low, high], unless a boundary may fall right at `moment` (then a whole slot)
        until_end = slot_seconds - (moment - high) % slot_seconds
        if until_end < high - low:
            return moment + slot_seconds
        return moment + until_end
