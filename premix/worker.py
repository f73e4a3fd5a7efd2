"""The arq worker: `WorkerSettings` (run `arq premix.worker.WorkerSettings`), the process's
start-up and shutdown, and the job function arq calls.

A worker process opens its services once (`startup`): the store, the Solana RPC client and its
budget, the Telegram notifier, logging; arq's own Redis pool (`ctx["redis"]`) publishes
progress and holds the user locks. It runs `PREMIX_WORKER_MAX_JOBS` jobs at once;
`premix_funds` runs one execution of a job (`premix.execution`). A worker that cannot run
refuses to start with one line naming what to fix (`refuse_to_start`).
"""

import asyncio
import os
import sys
from _collections_abc import dict_items, dict_keys, dict_values
from collections.abc import Iterator
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urlsplit

from arq.connections import RedisSettings
from arq.worker import func
from pymongo.errors import OperationFailure, PyMongoError
from redis import Redis as SyncRedis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from premix.constants import JOB_FUNCTION
from premix.errors import PremixError, TransientError
from premix.execution import JobExecution
from premix.health import WorkerBeacon
from premix.keys import KeyConfigError, KeyRing
from premix.ledger import Ledger
from premix.logs import configure_logging, get_logger, redact_text
from premix.metrics import MetricsServer, counted_execution, serve_metrics
from premix.mixer import PriorityFees
from premix.notify import Notifier
from premix.payloads import job_of, refuse_payload
from premix.rpc import RpcRequestError, SolanaRpc
from premix.rpc_budget import RpcBudget
from premix.serialization import job_deserializer, job_serializer
from premix.settings import Settings, SettingsInvalid, describe_settings_error, get_settings
from premix.store import Store, StoreConfigError
from premix.sweep import SWEEP_FUNCTION
from premix.sweep_execution import premix_sweep

log = get_logger(__name__)

# A Redis command (and the connection it needs) is tried this many more times, backing off up
# to 1 s: about 30 s in all, so a worker rides through a Redis restart or failover.
REDIS_COMMAND_RETRIES: Final = 32
KEEP_RESULT_SECONDS: Final = 86_400
ARQ_EXTRA_TRIES: Final = 3
REDIS_CHECK_SECONDS: Final = 3.0  # a worker refuses to start when Redis takes longer to answer
# Replaced by PREMIX_PRIORITY_FEE in issue 13; a worker still given it refuses to start.
RETIRED_PRIORITY_FEE_VARIABLE: Final = "PREMIX_PRIORITY_FEE_MICRO_LAMPORTS"


class WorkerStartupError(PremixError):
    """The worker cannot run with its configuration or services; it refuses to start."""

    title = "Worker refused to start"


async def startup(ctx: dict[str, Any]) -> None:
    """Open the process-wide services into `ctx`. `settings`, `rpc` and `notifier` may be
    pre-set there (tests, the demo); what is missing is created from the settings.

    Raises `WorkerStartupError` (naming the variable to fix) when the store is `memory://`
    without `PREMIX_ALLOW_MEMORY_STORE`, the encryption keys are missing or malformed, or
    MongoDB does not answer within `PREMIX_MONGODB_TIMEOUT_SECONDS`."""
    settings: Settings = ctx.setdefault("settings", get_settings())
    configure_logging(settings)
    ctx["store"] = await open_checked_store(settings)
    if "notifier" not in ctx:
        ctx["notifier"] = Notifier(settings)
    if "rpc" not in ctx:
        budget = ctx["rpc_budget"] = RpcBudget.from_settings(settings)  # None: no budget
        if budget is not None:
            budget.start_heartbeat()  # counted as live even while idle
        ctx["rpc"] = SolanaRpc.from_settings(settings, budget)
    await _sync_slot_clock(ctx["rpc"], settings)
    if ctx.get("redis") is not None:  # arq's pool (absent when a tool calls `startup` alone)
        beacon = ctx["beacon"] = WorkerBeacon(ctx["redis"], settings)  # `premix health` counts it
        beacon.start()
    try:
        ctx["metrics_server"] = serve_metrics(settings.metrics_port)
    except OSError as e:
        raise WorkerStartupError(
            f"PREMIX_METRICS_PORT {settings.metrics_port} cannot be served ({e.strerror or e}); "
            "each worker process on a host needs its own port"
        ) from None
    log.info(
        "worker_started",
        queue=settings.queue_name,
        memory_store=ctx["store"].is_memory,
        max_jobs=settings.worker_max_jobs,
        rpc_max_requests_per_second=settings.rpc_max_requests_per_second or None,
    )


async def _sync_slot_clock(rpc: SolanaRpc, settings: Settings) -> None:
    """Learn when the node's slots begin, so a job's first status poll after a send follows the
    chain (best effort, bounded: without it the first poll waits one whole slot)."""
    if settings.slot_seconds <= 0:
        return
    try:
        async with asyncio.timeout(6 * settings.slot_seconds):  # the sync takes up to 4
            await rpc.sync_slot_clock(settings.slot_seconds)
    except (TimeoutError, TransientError, RpcRequestError) as e:
        log.warning("slot_clock_not_synced", error=type(e).__name__)


def check_configuration(settings: Settings) -> None:
    """Raise `WorkerStartupError` (naming the variable) for a configuration no worker can run
    with: a `memory://` store (unless allowed), missing or malformed encryption keys, a
    compute-unit limit too small for premix's transactions. No I/O."""
    if settings.uses_memory_store and not settings.allow_memory_store:
        raise WorkerStartupError(
            "PREMIX_MONGODB_URI is memory://, an in-process store: a worker process sees no "
            "wallet created by another process; point it at MongoDB (or set "
            "PREMIX_ALLOW_MEMORY_STORE=1 where one process creates the wallets and runs the jobs)"
        )
    if os.environ.get(RETIRED_PRIORITY_FEE_VARIABLE) is not None:
        # replaced by PREMIX_PRIORITY_FEE (default auto): ignoring it would change the fees paid
        raise WorkerStartupError(
            f"{RETIRED_PRIORITY_FEE_VARIABLE} is no longer read: set PREMIX_PRIORITY_FEE instead "
            "(auto, the default, or a fixed price in micro-lamports per compute unit)"
        )
    try:
        PriorityFees.from_settings(settings).check()
    except ValueError as e:
        raise WorkerStartupError(str(e)) from None
    if not settings.encryption_keys.get_secret_value().strip():
        raise WorkerStartupError(
            "PREMIX_ENCRYPTION_KEYS is not set; the worker needs the keys the wallets are "
            "encrypted with (comma-separated key_id:base64, see `premix keys generate`)"
        )
    try:
        KeyRing.from_settings(settings)
    except KeyConfigError as e:
        raise WorkerStartupError(e.detail or e.title) from None


async def open_checked_store(settings: Settings) -> Store:
    """The worker's store, open, answering and indexed; raises `WorkerStartupError`."""
    check_configuration(settings)
    try:
        store = await Store.open(settings)
    except (KeyConfigError, StoreConfigError) as e:
        raise WorkerStartupError(e.detail or e.title) from None
    try:
        await store.ping()
        await store.ensure_indexes()
        await Ledger(store).ensure_indexes()
    except (TransientError, PyMongoError, OSError) as e:
        await store.close()
        refused = e.__cause__ if isinstance(e, TransientError) else e
        if isinstance(refused, OperationFailure):  # it answered: credentials or rights
            raise WorkerStartupError(
                f"MongoDB at PREMIX_MONGODB_URI refused premix ({type(refused).__name__}, code "
                f"{refused.code}: check the URI's user, password and database rights)"
            ) from None
        raise WorkerStartupError(
            f"MongoDB at PREMIX_MONGODB_URI did not answer within "
            f"{settings.mongodb_timeout_seconds:g} s (PREMIX_MONGODB_TIMEOUT_SECONDS)"
        ) from None
    return store


def _redis_answers(settings: Settings) -> None:
    """Refuse to start (one line) when Redis does not answer within a few seconds: arq would
    otherwise retry for minutes and end in a traceback that names no variable."""
    client = SyncRedis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CHECK_SECONDS,
        socket_timeout=REDIS_CHECK_SECONDS,
    )
    try:
        client.ping()
    except (RedisError, OSError) as e:
        refuse_to_start(
            f"Redis at PREMIX_REDIS_URL did not answer within {REDIS_CHECK_SECONDS:g} s "
            f"({type(e).__name__})"
        )
    finally:
        client.close()


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what `startup` opened (and what was pre-set in `ctx`)."""
    beacon: WorkerBeacon | None = ctx.get("beacon")
    if beacon is not None:
        await beacon.stop()
    metrics_server: MetricsServer | None = ctx.get("metrics_server")
    if metrics_server is not None:
        metrics_server.close()
    notifier: Notifier | None = ctx.get("notifier")
    if notifier is not None:
        await notifier.aclose()
    rpc: SolanaRpc | None = ctx.get("rpc")
    if rpc is not None:
        await rpc.close()
    budget: RpcBudget | None = ctx.get("rpc_budget")
    if budget is not None:
        await budget.aclose()
    store: Store | None = ctx.get("store")
    if store is not None:
        await store.close()
    log.info("worker_stopped")


async def premix_funds(ctx: dict[str, Any], *args: object, **kwargs: object) -> dict[str, Any]:
    """The arq job `premix_funds`: run the six phases for its one argument, a `PremixFundsJob`
    on the wire (`premix.execution`). Returns the JSON-safe result (`premix.results`); raises
    arq `Retry` for a transient failure. A payload that is not a valid job ends the job at
    once, untouched (`premix.payloads`)."""
    job_id: str = ctx["job_id"]
    job = job_of(job_id, args, kwargs)
    if isinstance(job, str):
        return await refuse_payload(ctx, job_id, args[0] if args else None, job)
    with counted_execution() as counted:
        return counted.record(await JobExecution(ctx, job_id, job).execute())


def arq_redis_settings(redis_url: str) -> RedisSettings:
    """arq's Redis connection for a worker: a command that finds its connection closed, or no
    server to connect to (Redis restarting), is retried with backoff for about 30 s instead of
    stopping the worker. redis-py retries a refused connect only when `OSError` is listed: it
    raises the socket's own error inside its retry and converts it to a redis error after."""
    redis = RedisSettings.from_dsn(redis_url)
    password = urlsplit(redis_url).password
    if password is not None:  # arq keeps it percent-encoded; Redis wants the password itself
        redis.password = unquote(password)
    redis.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    redis.retry = RedisRetry(ExponentialBackoff(cap=1.0, base=0.05), REDIS_COMMAND_RETRIES)
    return redis


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Return arq `Worker` keyword arguments for `settings` (what `WorkerSettings` holds for
    the environment's settings). `on_startup` raises `WorkerStartupError` when the worker
    cannot run (see `startup`)."""
    return {
        "functions": [
            func(premix_funds, name=JOB_FUNCTION),
            func(premix_sweep, name=SWEEP_FUNCTION),  # buyer wallets -> funding (premix.sweep)
        ],
        "queue_name": settings.queue_name,
        # Premixes of different users at once (the user lock keeps one user's apart).
        "max_jobs": settings.worker_max_jobs,
        "job_serializer": job_serializer,  # JSON, never pickle
        "job_deserializer": job_deserializer,
        "poll_delay": settings.worker_poll_delay_seconds,  # low: fast job pickup
        "redis_settings": arq_redis_settings(settings.redis_url),
        "job_timeout": settings.job_timeout_seconds,
        # Deliveries beyond premix's own limit: the first only reports and fails the job (arq
        # would otherwise drop it silently, leaving the user lock and no failed event); the
        # others absorb arq's try counter counting twice when its start-of-job transaction is
        # retried across a Redis restart, which would make arq fail the job past premix.
        "max_tries": settings.job_max_tries + ARQ_EXTRA_TRIES,
        "keep_result": KEEP_RESULT_SECONDS,
        "on_startup": startup,
        "on_shutdown": shutdown,
    }


def refuse_to_start(reason: str) -> NoReturn:
    """End a worker process that cannot run: one line on stderr naming what to fix, exit 1."""
    print(f"premix worker: refusing to start: {redact_text(reason)}", file=sys.stderr, flush=True)
    raise SystemExit(1)


async def _startup_or_exit(ctx: dict[str, Any]) -> None:
    try:
        await startup(ctx)
    except WorkerStartupError as e:
        refuse_to_start(e.detail or e.title)


class _EnvironmentWorkerSettings(dict[str, Any]):
    """`worker_settings(Settings())`, built from the environment on first read rather than at
    import, so importing premix.worker never fails; arq reads a dict as worker settings. A
    setting the worker cannot start with ends the process with one line (`refuse_to_start`)."""

    def _load(self) -> None:
        if super().__len__():
            return
        try:
            settings = get_settings()
        except SettingsInvalid as e:
            refuse_to_start(f"invalid configuration: {describe_settings_error(e)}")
        try:
            check_configuration(settings)  # before arq connects: reported even if Redis is down
        except WorkerStartupError as e:
            refuse_to_start(e.detail or e.title)
        _redis_answers(settings)
        self.update(worker_settings(settings), on_startup=_startup_or_exit)

    def __getattr__(self, name: str) -> Any:  # WorkerSettings.queue_name, as on a class
        if name not in WORKER_SETTING_NAMES:  # a probe (pytest, a debugger): no loading
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, key: str) -> Any:
        self._load()
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def keys(self) -> "dict_keys[str, Any]":
        self._load()
        return super().keys()

    def values(self) -> "dict_values[str, Any]":
        self._load()
        return super().values()

    def items(self) -> "dict_items[str, Any]":  # what arq's get_kwargs reads
        self._load()
        return super().items()


WORKER_SETTING_NAMES: Final = frozenset(worker_settings(Settings.model_construct()))

# `arq premix.worker.WorkerSettings`: values come from the environment (`PREMIX_*`).
WorkerSettings: Final = _EnvironmentWorkerSettings()
