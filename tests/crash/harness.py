"""One crash scenario with real worker processes, and the proof from the chain that it paid
every wallet exactly once.

`CrashRun(env, scenario)`:
- `execute()`: creates the user (funding wallet airdropped on the localnet, buyer wallets in
  the store), switches the scenario's faults on, enqueues the premix and opens the ledger watch;
  then starts worker 0 armed with the first kill. Each time the kill switch kills a worker, the
  run reaps it, checks the write-ahead rule held at that moment, deletes the job's in-progress
  marker (standing for the job timeout passing: arq redelivers a dead worker's job only then;
  likewise a long-deferred retry of a job no live worker runs comes due), optionally moves
  the chain past the last valid block height of every open attempt while no worker runs, and
  starts the next worker armed with the next kill, until arq holds the job's result. A
  stalled worker (SIGSTOP, not killed) is resumed while the next one runs, once that one wrote
  to the ledger (or when the job has ended), and must then step aside.
- `check_exact()`: every planned wallet holds exactly its amount (fresh wallets start at 0) and
  every other wallet nothing; the funding wallet paid the plan plus 5,000 lamports for each
  transaction that landed (counted from `net.transaction_log`); the ledger's totals and landed
  signatures are the chain's; arq stored a success result with the same totals; the last
  progress event says completed; the user lock is released.
- `reported()`: any failure is re-raised with the scenario, what happened and the workers' logs.

`revision_callbacks` get every ledger revision the watch sees (the kill switch's ledger kills;
the store-kill test adds its own); `read_revision()` reads the stored one synchronously (from
the localnet's request threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from uuid import uuid4

from arq.constants import in_progress_key_prefix, result_key_prefix
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from solders.signature import Signature

from premix.constants import RUNS_COLLECTION
from premix.ledger import Ledger, RunRecord, Totals
from premix.localnet import Commitment, Localnet
from premix.localnet.chain import LAMPORTS_PER_SIGNATURE, MAX_PROCESSING_AGE
from premix.progress import latest_progress
from premix.queue import close_queue, enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from premix.user_lock import user_lock_holder
from tests.crash.kills import KillSwitch
from tests.crash.ledger_watch import LedgerWatch, RevisionCallback, attempt_states
from tests.crash.scenario import SEND_KILLS, Kill, KillKind, Scenario
from tests.crash.workers import WorkerProcess
from tests.worker.helpers import (
    User,
    assert_paid_exactly_once,
    create_user,
    job_result,
    make_settings,
    open_store,
)

SLOT_MS: Final = 25  # localnet slots: a blockhash lives 150 x 25 ms = 3.75 s
USER_ID: Final = "crash-user"
CHAT_ID: Final = 42
WORKER_WAIT_SECONDS: Final = 60.0  # one worker's part of a run; longer means it is stuck
POLL_SECONDS: Final = 0.02
MAX_WORKERS: Final = 12  # kills plus restarts after a worker exits; more means a loop
STEP_ASIDE_WAIT_SECONDS: Final = 30.0
NATURAL_DEFER_SECONDS: Final = 2  # premix's first retry backoffs (1, 2 s) are waited for

# What every scenario of the session did, for the summary line (tests/crash/conftest.py).
SUITE_TALLY: Counter[str] = Counter()


def crash_settings(
    redis_url: str, rpc_url: str, mongodb_uri: str, name: str, priority_fee: int | str = 0
) -> Settings:
    """The settings a scenario's workers get (as PREMIX_* variables) and the test uses: the
    database and the arq queue are named `name`."""
    return make_settings(
        redis_url,
        rpc_url,
        queue_name=name,
        mongodb_uri=mongodb_uri,
        mongodb_database=name,
        worker_poll_delay_seconds=0.02,
        confirm_poll_seconds=0.02,
        slot_seconds=0,
        job_timeout_seconds=60,
        user_lock_ttl_seconds=120,  # above the job timeout + 10 s: a dead worker keeps the lock
        job_max_tries=20,  # 3 kills and a few transient retries never exhaust it
        priority_fee=priority_fee,
        log_level="INFO",
        log_json=True,
    )


@dataclass
class CrashEnv:
    """Where a scenario runs: its localnet, the settings of its workers, the test's own store
    and Redis clients (same servers), and a directory for the workers' logs."""

    net: Localnet
    settings: Settings
    store: Store
    redis: Redis
    log_dir: Path


@contextlib.asynccontextmanager
async def crash_environment(
    redis_url: str, mongodb_uri: str, log_dir: Path, seed: int, priority_fee: int | str = 0
) -> AsyncIterator[CrashEnv]:
    """A `CrashEnv` for one scenario: a localnet of its own (25 ms slots, faults seeded with
    `seed`), a fresh database on the MongoDB-wire server (dropped afterwards) and a queue of its
    own on the Redis server."""
    name = f"crash_{seed}_{uuid4().hex[:8]}"
    with Localnet(slot_ms=SLOT_MS, seed=seed) as net:
        settings = crash_settings(redis_url, net.url, mongodb_uri, name, priority_fee)
        redis: Redis = Redis.from_url(redis_url)
        try:
            async with open_store(settings) as store:
                yield CrashEnv(net, settings, store, redis, log_dir)
        finally:
            await redis.aclose()
            await close_queue()  # enqueue's pool belongs to this test's event loop


class ScenarioStuck(AssertionError):
    """A worker neither finished the job nor reached its kill in time, or exited on its own."""


@dataclass
class StalledWorker:
    """A worker stopped with SIGSTOP while it held the job, and the ledger revision then. It
    is resumed while the worker after it runs, once that one wrote to the ledger; if that one
    is killed first, only when the job has ended."""

    worker: WorkerProcess
    revision: int
    resumed: bool = False
    stepped_aside: bool = False


class CrashRun:
    """Drives one `Scenario` in a `CrashEnv` (see the module docstring)."""

    def __init__(self, env: CrashEnv, scenario: Scenario) -> None:
        self.env = env
        self.scenario = scenario
        self.net = env.net
        self.ledger = Ledger(env.store)
        self.workers: list[WorkerProcess] = []
        self.story: list[str] = []
        self.user: User | None = None
        self.job_id = ""
        self.known_before: set[Signature] = set()  # the chain's log before the premix (airdrop)
        self._revisions: MongoClient[dict[str, object]] = MongoClient(
            env.settings.mongodb_uri, serverSelectionTimeoutMS=2_000
        )
        self.switch = KillSwitch(self.net, self.read_revision)
        self.watch: LedgerWatch | None = None
        self.revision_callbacks: list[RevisionCallback] = [self.switch.on_revision]
        self.stalled: list[StalledWorker] = []

    # -- running ------------------------------------------------------------------------------

    async def execute(self) -> None:
        """Run the scenario until arq holds the job's result (see the module docstring)."""
        await self._prepare()
        kills = list(self.scenario.kills)
        try:
            while True:
                if len(self.workers) >= MAX_WORKERS:
                    raise ScenarioStuck(f"{MAX_WORKERS} workers started and the job never ended")
                worker = self._start_worker(self._next_kill(kills))
                if await self._worker_done(worker):
                    break
                await self._after_kill(worker)
            self._resume_stalled()
            await self._stalled_stepped_aside()
        finally:
            await self._tear_down()
        self._note_retries()
        print(f"{self.scenario.describe()}\n  {'; '.join(self.story)}")  # shown with -rP or -s
        SUITE_TALLY["scenarios"] += 1
        for record in self.switch.fired:
            SUITE_TALLY[f"kill:{record.kill.kind.value}"] += 1

    async def _prepare(self) -> None:
        scenario, settings = self.scenario, self.env.settings
        self.user = await create_user(
            self.env.store,
            self.net,
            USER_ID,
            buyers=scenario.buyer_wallets,
            funding_lamports=scenario.funding_lamports,
        )
        self.known_before = set(self.net.transaction_log)
        queued = await enqueue_premix_funds(
            USER_ID, CHAT_ID, scenario.amount_sol, {"mode": scenario.mode}, settings=settings
        )
        assert queued.success and queued.job_id is not None, queued.message
        self.job_id = queued.job_id
        self.watch = LedgerWatch(settings.mongodb_uri, settings.mongodb_database, self.job_id)
        self.watch.callbacks.extend(self.revision_callbacks)
        await self.watch.start()
        for fault in scenario.faults:
            self.net.faults.inject(
                fault.kind, fault.method, fault.count, fault.probability, **fault.params
            )
        self.net.intercept(self.switch)

    def _next_kill(self, kills: list[Kill]) -> Kill | None:
        """The next planned kill that can still happen: a send kill needs a transaction left
        to land (its n is capped at how many are left, each needing at least one send)."""
        remaining = self.scenario.transactions - len(self.landed())
        while kills:
            kill = kills.pop(0)
            if kill.kind not in SEND_KILLS:
                return kill
            if remaining > 0:
                return dataclasses.replace(kill, nth=min(kill.nth, remaining))
            self.story.append(f"{kill.describe()} skipped: nothing left to send")
        return None

    def _start_worker(self, kill: Kill | None) -> WorkerProcess:
        worker = WorkerProcess.start(self.env.settings, self.env.log_dir, len(self.workers))
        self.workers.append(worker)
        self.switch.arm(worker, kill)
        aim = kill.describe() if kill is not None else "no kill"
        self.story.append(f"worker {worker.generation} started ({aim})")
        return worker

    async def _worker_done(self, worker: WorkerProcess) -> bool:
        """Wait until the job has a result (True) or the switch killed `worker` (False)."""
        deadline = time.monotonic() + WORKER_WAIT_SECONDS
        while True:
            if await self.env.redis.exists(result_key_prefix + self.job_id):
                self.story.append(f"job ended while worker {worker.generation} ran")
                return True
            # Alive first: the switch kills and records under its lock, so a worker found dead
            # here by its kill is found in the switch's record just after.
            alive = worker.alive
            record = self.switch.killed(worker)
            if record is not None:
                if record.kill.kind is not KillKind.STALL:
                    worker.kill()  # reap it
                self.story.append(record.describe())
                return False
            if not alive:
                raise ScenarioStuck(f"worker {worker.generation} exited on its own")
            self._resume_stalled(successor=worker)
            await self._bring_idle_job_forward(worker)
            if time.monotonic() > deadline:
                raise ScenarioStuck(
                    f"worker {worker.generation}: no result and no kill in {WORKER_WAIT_SECONDS} s"
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _after_kill(self, worker: WorkerProcess) -> None:
        record = self.switch.killed(worker)
        assert record is not None
        run = await self.ledger.get(self.job_id)
        if record.signatures:  # write-ahead: what a worker sends is in the ledger first
            recorded = set() if run is None else set(attempt_states(run))
            missing = {str(s) for s in record.signatures} - recorded
            assert not missing, f"sent but not in the ledger: {sorted(missing)}"
        if record.kill.kind is KillKind.STALL:
            self.stalled.append(StalledWorker(worker, self.read_revision()))
        await self._let_arq_time_pass()
        if record.kill.expire_while_down:
            self._expire_blockhashes(run)

    async def _let_arq_time_pass(self) -> None:
        """What the job timeout (+ 10 s) passing after a worker died or stalled does for arq:
        the job's in-progress marker expires (arq redelivers the job only then)."""
        await self.env.redis.delete(in_progress_key_prefix + self.job_id)

    async def _bring_idle_job_forward(self, worker: WorkerProcess) -> None:
        """While no live worker runs the job, a retry arq holds deferred for longer than
        `NATURAL_DEFER_SECONDS` comes due now: time passing while nothing happens. (A
        superseded execution steps aside deferring the job by the job timeout + 10 s.)"""
        redis = self.env.redis
        now_ms = int(time.time() * 1000)
        queue = self.env.settings.queue_name
        score = await redis.zscore(queue, self.job_id)
        if score is None or score <= now_ms + NATURAL_DEFER_SECONDS * 1000:
            return
        if await redis.exists(in_progress_key_prefix + self.job_id):
            return
        live = [worker, *(s.worker for s in self.stalled if s.resumed)]
        if any(w.alive and w.executing() for w in live):
            return
        await redis.zadd(queue, {self.job_id: now_ms}, xx=True)
        self.story.append(f"a retry deferred {(score - now_ms) / 1000:.0f} s came due")

    def _expire_blockhashes(self, run: RunRecord | None) -> None:
        """With no worker alive, advance the chain until its finalized block height is past
        every open attempt's last valid block height and every blockhash handed out so far."""
        open_attempts = [] if run is None else [attempt for _, attempt in run.open_attempts()]
        open_heights = [attempt.last_valid_block_height for attempt in open_attempts]
        target = max([*open_heights, self.net.block_height + MAX_PROCESSING_AGE])
        while (finalized := self.net.chain.block(Commitment.FINALIZED).height) <= target:
            self.net.advance(target - finalized + 1)
        self.story.append(
            f"chain moved past block height {target} with no worker running "
            f"({len(open_heights)} open attempt(s))"
        )

    def _resume_stalled(self, successor: WorkerProcess | None = None) -> None:
        """Resume each stalled worker whose successor (the next worker) is running `successor`
        and wrote to the ledger since the stall; with no `successor`, every one still stopped."""
        for stalled in self.stalled:
            if stalled.resumed:
                continue
            if successor is not None:
                if successor.generation != stalled.worker.generation + 1:
                    continue
                if self.read_revision() <= stalled.revision:
                    continue
            stalled.worker.resume()
            stalled.resumed = True
            self.story.append(f"worker {stalled.worker.generation} resumed")

    async def _stalled_stepped_aside(self) -> None:
        """Wait until every resumed worker saw it was superseded and stepped aside."""
        deadline = time.monotonic() + STEP_ASIDE_WAIT_SECONDS
        for stalled in self.stalled:
            if not stalled.resumed or stalled.stepped_aside:
                continue
            while not any(e.get("event") == "job_superseded" for e in stalled.worker.events()):
                if time.monotonic() > deadline:
                    raise ScenarioStuck(
                        f"resumed worker {stalled.worker.generation} never stepped aside"
                    )
                await asyncio.sleep(POLL_SECONDS)
            stalled.stepped_aside = True
            self.story.append(f"worker {stalled.worker.generation} stepped aside")

    async def _tear_down(self) -> None:
        self.net.stop_intercepting(self.switch)
        self.net.faults.clear()
        for worker in self.workers:
            worker.kill()
        if self.watch is not None:
            await self.watch.stop()
        self._revisions.close()

    def _note_retries(self) -> None:
        """Add to the story each time a worker handed the job back to arq (a transient error)."""
        for worker in self.workers:
            for event in worker.events():
                if event.get("event") == "job_retrying":
                    self.story.append(f"worker {worker.generation} retried: {event.get('reason')}")

    def read_revision(self) -> int:
        """The run's stored revision (-1 before it exists or while the store is unreachable)."""
        try:
            document = self._revisions[self.env.settings.mongodb_database][
                RUNS_COLLECTION
            ].find_one({"_id": self.job_id}, {"revision": 1})
        except PyMongoError:
            return -1
        return -1 if document is None else int(str(document["revision"]))

    def landed(self) -> dict[Signature, int]:
        """Every premix transaction on chain (landed, ok or not): signature -> fee paid."""
        return {
            signature: record.fee_lamports
            for signature, record in self.net.transaction_log.items()
            if record.landed and signature not in self.known_before
        }

    # -- the proof ----------------------------------------------------------------------------

    async def check_exact(self) -> None:
        """Prove from the chain that the run paid every wallet exactly once (module docstring)."""
        assert self.user is not None
        net, scenario = self.net, self.scenario
        assert self.switch.fired, "the scenario's first kill never happened"
        assert self.switch.fired[0].kill.kind is scenario.kills[0].kind
        landed = self.landed()
        failed = [str(s) for s in landed if net.transaction_log[s].err is not None]
        assert not failed, f"transactions landed with an error: {failed}"
        if scenario.priority_fee == 0:
            assert set(landed.values()) == {LAMPORTS_PER_SIGNATURE}, landed
        fees = sum(landed.values())
        await assert_paid_exactly_once(
            self.env.store,
            net,
            self.user,
            self.job_id,
            scenario.amount_lamports,
            len(landed),
            fee_lamports=fees,
        )
        chain_totals = Totals(
            sent_lamports=sum(scenario.plan),
            fee_lamports=fees,
            transactions=len(landed),
            priority_fee_lamports=fees - LAMPORTS_PER_SIGNATURE * len(landed),
        )
        run = await self.ledger.get(self.job_id)
        assert run is not None
        assert run.totals == chain_totals
        landed_in_ledger = {a.signature for tx in run.transactions for a in tx.attempts if a.landed}
        assert landed_in_ledger == {str(s) for s in landed}
        info = await job_result(self.env.settings, self.job_id)
        assert info.result["success"] is True, info.result["message"]
        totals = info.result["totals"]
        assert (totals["sentLamports"], totals["feeLamports"], totals["transactions"]) == (
            chain_totals.sent_lamports,
            chain_totals.fee_lamports,
            chain_totals.transactions,
        )
        assert totals["priorityFeeLamports"] == chain_totals.priority_fee_lamports
        last_event = await latest_progress(self.env.redis, self.job_id)
        assert last_event is not None
        assert (last_event.phase, last_event.status) == (6, "completed"), last_event
        assert await user_lock_holder(self.env.redis, USER_ID) is None

    # -- reporting ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def reported(self, rerun: str) -> Iterator[None]:
        """Re-raise any failure inside as an AssertionError naming the scenario, how to rerun
        it alone (`rerun`), what happened, and the end of every worker's log."""
        try:
            yield
        except Exception as error:
            logs = "\n".join(worker.log_tail() for worker in self.workers)
            raise AssertionError(
                f"{self.scenario.describe()}\nrerun alone: {rerun}\n"
                f"what happened: {'; '.join(self.story) or 'nothing'}\n"
                f"{type(error).__name__}: {error}\n{logs}"
            ) from error
