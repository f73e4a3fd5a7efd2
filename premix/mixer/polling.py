"""How the mixer waits: the first status poll timed by the chain's slots, the delays between
later polls, a stalled-chain detector, and all-or-nothing gathering."""

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, Final

from premix.errors import TransientError
from premix.slots import SlotTimeline

# Block-height checks in a row without a new finalized block before a wait for outcomes hands
# the job back (a halted chain or a stuck node) instead of polling until the job times out.
MAX_STALLED_HEIGHT_CHECKS: Final = 25
# The first poll comes this fraction of a slot after the slot's estimated end: the node needs a
# moment to move its banks (confirm the slot) and the estimate a little slack.
SLOT_END_MARGIN: Final = 0.05


class HeightStall:
    """Counts block-height checks in a row that saw no new finalized block."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.checks = 0

    def observe(self, height: int) -> None:
        """Record one check; raises `TransientError` after `MAX_STALLED_HEIGHT_CHECKS` in a row
        without progress (the attempts stay open; a re-run settles them)."""
        if self.highest is None or height > self.highest:
            self.highest, self.checks = height, 0
            return
        self.checks += 1
        if self.checks >= MAX_STALLED_HEIGHT_CHECKS:
            raise TransientError(
                f"the chain is not advancing (finalized block height stuck at {height}); "
                "waiting for confirmations later"
            )


def first_poll_delay(
    slots: SlotTimeline, *, sent_at: float, now: float, slot_seconds: float, poll_seconds: float
) -> float:
    """Seconds from `now` to the first status poll for transactions sent by `sent_at`: right
    after the slot in progress then has passed, as the slots the node reported time it (a
    transaction sent in a slot is confirmed once it passed), or one poll interval when slots
    are not timed (`slot_seconds` 0)."""
    if slot_seconds <= 0:
        return poll_seconds
    end = slots.slot_end_after(sent_at, slot_seconds) + SLOT_END_MARGIN * slot_seconds
    return max(0.0, end - now)


def poll_delays(base_seconds: float, *, backoff: bool) -> Iterator[float]:
    """Seconds between status polls after the first: `base_seconds` each time, or doubling from
    it up to 4x (fewer round trips)."""
    delay = base_seconds
    while True:
        if backoff:
            delay = min(delay * 2, base_seconds * 4)
        yield delay


async def gather_all(coroutines: Sequence[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run `coroutines` concurrently; on the first failure cancel the rest and raise it."""
    if len(coroutines) == 1:
        return [await coroutines[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return [task.result() for task in tasks]
