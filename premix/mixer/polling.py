"""How the mixer waits: poll delays, a stalled-chain detector, and all-or-nothing gathering."""

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, Final

from premix.errors import TransientError

# Block-height checks in a row without a new finalized block before a wait for outcomes hands
# the job back (a halted chain or a stuck node) instead of polling until the job times out.
MAX_STALLED_HEIGHT_CHECKS: Final = 25


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


def poll_delays(
    base_seconds: float, *, backoff: bool, first_seconds: float = 0.0
) -> Iterator[float]:
    """Seconds before each status poll: `first_seconds` (at least `base_seconds`) before the
    first, then `base_seconds` each time, or doubling up to 4x (fewer round trips)."""
    yield max(first_seconds, base_seconds)
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
