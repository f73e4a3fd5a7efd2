"""A superseded execution (arq started the job again while a stalled worker still held it)
never publishes an event, takes or refreshes the user lock, or stores a result once the newer
execution began (SPEC section 12): it wakes, sees the newer try, and ends without a trace."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from premix.constants import PROGRESS_CHANNEL_PREFIX, QUEUE_NAME
from premix.ledger import Ledger
from premix.localnet import Localnet
from premix.progress import latest_progress
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import HeldUserLock, user_lock_holder
from tests.worker.helpers import (
    TestRpc,
    assert_paid_exactly_once,
    create_user,
    expire_in_progress_marker,
    job_result,
    run_worker,
)
from tests.worker.test_worker_adversarial import RecordingNotifier, enqueue

SOL = 10**9


class Stall:
    """Makes the first call of a patched coroutine wait until `resume()`."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._resume = asyncio.Event()
        self.calls = 0

    def resume(self) -> None:
        self._resume.set()

    def around(self, original: Callable[..., Awaitable[Any]], *, before: bool) -> Any:
        async def stalled(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            first = self.calls == 1
            if first and before:
                await self._stall()
            result = await original(*args, **kwargs)
            if first and not before:
                await self._stall()
            return result

        return stalled

    async def _stall(self) -> None:
        self.reached.set()
        await self._resume.wait()


@contextlib.asynccontextmanager
async def channel_messages(redis: Redis, job_id: str) -> AsyncIterator[list[bytes]]:
    """Every message published on the job's progress channel while the block runs."""
    received: list[bytes] = []
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(PROGRESS_CHANNEL_PREFIX + job_id)

        async def listen() -> None:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    received.append(message["data"])

        task = asyncio.create_task(listen())
        try:
            yield received
            await asyncio.sleep(0.3)  # anything still on its way arrives
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_stalled_then_redelivered(
    settings: Settings, redis: Redis, net: Localnet, job_id: str, stall: Stall
) -> tuple[RecordingNotifier, RecordingNotifier]:
    """The first worker stalls at `stall`; arq redelivers the job to a second worker, which
    completes it; then the first wakes and runs to its end. Returns both notifiers."""
    first_told, second_told = RecordingNotifier(settings), RecordingNotifier(settings)
    first = asyncio.create_task(run_worker(settings, rpc=TestRpc(net.url), notifier=first_told))
    await asyncio.wait_for(stall.reached.wait(), 10)
    await expire_in_progress_marker(redis, job_id)
    assert await run_worker(settings, rpc=TestRpc(net.url), notifier=second_told)
    completed = await latest_progress(redis, job_id)
    assert completed is not None and completed.status == "completed"
    async with channel_messages(redis, job_id) as after_the_end:
        stall.resume()
        assert await asyncio.wait_for(first, 30)
    assert after_the_end == []  # the stalled execution published nothing
    assert await latest_progress(redis, job_id) == completed
    return first_told, second_told


async def assert_the_newer_execution_s_outcome_stands(
    settings: Settings, redis: Redis, job_id: str
) -> None:
    info = await job_result(settings, job_id)
    assert (info.job_try, info.result["success"]) == (2, True), info.result
    assert await redis.zcard(QUEUE_NAME) == 0  # no ghost entry to fail later as "expired"
    assert await user_lock_holder(redis, "u1") is None


@pytest.mark.parametrize(
    ("owner", "name", "before"),
    [
        pytest.param(Ledger, "open_run", False, id="right-after-opening-the-run"),
        pytest.param(HeldUserLock, "hold", True, id="before-its-first-lock-call"),
    ],
)
async def test_a_stalled_execution_leaves_no_trace_and_never_retakes_the_lock(
    settings: Settings,
    store: Store,
    redis_client: Redis,
    net: Localnet,
    monkeypatch: pytest.MonkeyPatch,
    owner: type,
    name: str,
    before: bool,
) -> None:
    user = await create_user(store, net, "u1")
    job_id = await enqueue(settings, "u1", 2)
    stall = Stall()
    monkeypatch.setattr(owner, name, stall.around(getattr(owner, name), before=before))

    told = await run_stalled_then_redelivered(settings, redis_client, net, job_id, stall)

    assert (told[0].told, told[1].told) == ([], ["completed"])
    await assert_paid_exactly_once(store, net, user, job_id, 2 * SOL, 4)
    await assert_the_newer_execution_s_outcome_stands(settings, redis_client, job_id)
