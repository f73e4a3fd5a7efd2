"""A cancel around real worker processes killed with SIGKILL: the worker dies right after a
send reached the node (its transfer open in the ledger), `cancel_premix` asks the job to stop
(arq still holds it in progress), the next worker process settles the open transfer and ends
the job cancelled. The chain shows exactly the transfers the report names, each once, and the
funding wallet paid exactly those plus their fees."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from arq.constants import in_progress_key_prefix, result_key_prefix

from premix.amounts import format_sol
from premix.ledger import Ledger, RunStatus
from premix.progress import ProgressStatus, latest_progress
from premix.queue import cancel_premix, enqueue_premix_funds, get_premix_result
from premix.user_lock import user_lock_holder
from tests.crash.harness import CHAT_ID, USER_ID, WORKER_WAIT_SECONDS, crash_environment
from tests.crash.kills import KillSwitch
from tests.crash.scenario import FEE_LAMPORTS, PLENTY_LAMPORTS, Kill, KillKind
from tests.crash.workers import WorkerProcess
from tests.worker.helpers import create_user, job_result

SOL = 10**9


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {WORKER_WAIT_SECONDS} s")


async def test_a_cancel_after_a_worker_was_killed_mid_send_settles_it_and_pays_nothing_twice(
    redis_url: str, mongodb_url: str, tmp_path: Path
) -> None:
    async with crash_environment(redis_url, mongodb_url, tmp_path, seed=15_001) as env:
        net, settings = env.net, env.settings
        user = await create_user(
            env.store, net, USER_ID, buyers=6, funding_lamports=PLENTY_LAMPORTS
        )
        queued = await enqueue_premix_funds(USER_ID, CHAT_ID, 3, settings=settings)
        job_id = queued.job_id
        assert job_id is not None, queued.message
        plan = user.plan(3 * SOL)
        switch = KillSwitch(net, lambda: -1)
        net.intercept(switch)
        workers: list[WorkerProcess] = []
        try:
            first = WorkerProcess.start(settings, env.log_dir, 0)
            workers.append(first)
            switch.arm(first, Kill(KillKind.AFTER_SEND, 2, expire_while_down=False))

            async def first_killed() -> bool:
                return switch.killed(first) is not None

            await wait_until(first_killed, "the kill after the second send")
            first.kill()

            answer = await cancel_premix(job_id, settings=settings)  # arq: still in progress

            assert (answer.success, answer.state) == (True, "cancelling"), answer
            await env.redis.delete(in_progress_key_prefix + job_id)  # the job timeout passed
            second = WorkerProcess.start(settings, env.log_dir, 1)
            workers.append(second)
            switch.arm(second, None)

            async def ended() -> bool:
                return bool(await env.redis.exists(result_key_prefix + job_id))

            await wait_until(ended, "the job's end")
        finally:
            for worker in workers:
                worker.kill()
            net.stop_intercepting(switch)

        run = await Ledger(env.store).get(job_id)
        assert run is not None
        assert run.status is RunStatus.CANCELLED and not run.open_attempts()
        funded = sorted(run.funded_positions())
        assert funded == [0, 1]  # the two sent before the kill; nothing signed after the cancel
        assert user.buyer_balances(net) == plan[:2] + [0] * (len(user.buyers) - 2)
        signed = {a.signature: a for tx in run.transactions for a in tx.attempts}
        on_chain = {
            str(signature)
            for signature, entry in net.transaction_log.items()
            if entry.landed_slot is not None and str(signature) in signed
        }
        assert on_chain == {s for s, a in signed.items() if a.landed} and len(on_chain) == 2
        sent = sum(plan[:2])
        assert net.balance(user.funding.pubkey()) == (
            user.funding_lamports - sent - 2 * FEE_LAMPORTS
        )
        message = (
            f"Premix cancelled: sent {format_sol(sent)} to 2 of {len(plan)} wallets in 2 "
            f"transaction(s), fees {format_sol(2 * FEE_LAMPORTS)}; {len(plan) - 2} wallets "
            "were not funded"
        )
        result = (await job_result(settings, job_id)).result
        assert (result["success"], result["status"], result["message"]) == (
            False,
            "cancelled",
            message,
        )
        receipt = await get_premix_result(job_id, settings=settings)
        assert receipt is not None and receipt["status"] == "cancelled"
        latest = await latest_progress(env.redis, job_id)
        assert latest is not None and latest.status is ProgressStatus.CANCELLED
        assert await user_lock_holder(env.redis, USER_ID) is None
