"""Which execution of a job may still act.

arq delivers a job at least once: a worker that stalls past the job's in-progress marker finds,
when it wakes, that arq started the job again. arq counts tries in `arq:retry:<job id>` (bumped
when an execution starts, deleted with the job when it ends, its result kept under
`arq:result:<job id>`). An execution of try n is superseded once that counter is above n, or
once the counter is gone and a result is stored (the job ended elsewhere). A superseded
execution must not publish, take or refresh the user lock, or store a result: `TryGuard.LUA`
makes the check and the action one atomic Redis script, so no newer try can start in between.
"""

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final, cast

from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

JOB_END_POLL_SECONDS: Final = 0.5  # a superseded execution looks this often for the job's end


class Superseded(Exception):
    """arq started this job again (or ended it) after this execution began: the newer one acts
    and reports; this one ends without a trace."""


@dataclass(frozen=True)
class TryGuard:
    """Execution `job_try` of job `job_id`: the keys and the check that tell whether it may
    still act."""

    job_id: str
    job_try: int

    # Lua, to open a script: KEYS[1] = arq's try counter, KEYS[2] = arq's result, ARGV[1] = the
    # execution's try ("" = no guard). Returns -1 when a newer try began or the job ended.
    LUA: Final = """
if ARGV[1] ~= '' then
    local tries = redis.call('GET', KEYS[1])
    if tries then
        if tonumber(tries) > tonumber(ARGV[1]) then return -1 end
    elseif redis.call('EXISTS', KEYS[2]) == 1 then
        return -1
    end
end
"""

    @property
    def keys(self) -> tuple[str, str]:
        """The keys `LUA` reads, in order (pass them first to the script)."""
        return retry_key_prefix + self.job_id, result_key_prefix + self.job_id

    @property
    def argument(self) -> str:
        """The argument `LUA` reads (pass it first)."""
        return str(self.job_try)

    async def superseded(self, redis: Redis) -> bool:
        """True when a newer try of the job began or the job ended elsewhere. Raises
        `RedisError` and `OSError`. With no counter and no result (Redis lost its data), the
        execution may go on: the ledger keeps the money exact either way."""
        checked = await cast(
            Awaitable[int], redis.eval(self.LUA + "return 0", 2, *self.keys, self.argument)
        )
        return int(checked) == -1

    async def wait_for_job_end(self, redis: Redis, *, until: float) -> bool:
        """Wait until arq deleted the job's record (the job ended elsewhere: True) or until
        `time.monotonic()` reaches `until` (False). Redis errors are waited through."""
        while time.monotonic() < until:
            try:
                if not await redis.exists(job_key_prefix + self.job_id):
                    return True
            except (RedisError, OSError):
                pass
            await asyncio.sleep(JOB_END_POLL_SECONDS)
        return False


NO_GUARD: Final = ("", "")  # keys that never exist and no try: `TryGuard.LUA` lets it act
