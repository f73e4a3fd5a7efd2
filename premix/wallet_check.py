"""The enqueue side's wallet check: before a premix is queued, one read of the user's stored
wallets refuses a user with no funding wallet, no buyer wallets, or too few buyer wallets for
the amount, each with the worker's wording and the limits. The read is a single `find` that
projects each wallet's role only: no key is loaded, none is decrypted. The worker checks again
(phases 2 and 3): wallets may be deleted between enqueue and run.

The MongoDB store is opened once per URI, database and event loop and reused, like the Redis
pool in `premix.queue`, and concurrent enqueues share their reads (`CountsBatch`: one query for
the users asking at once); `close_wallet_stores()` (called by `close_queue()`) closes them. An
embedded `memory://` store holds no client, so it is opened per call: it always sees the
in-process store as it is now, even after a test or the demo reset it.

Bounded: enqueue's client waits at most `ENQUEUE_STORE_TIMEOUT_SECONDS` (2 s, shorter than
the worker's `mongodb_timeout_seconds`) for a server and for its answer, and the whole read is
cut off soon after even when the URI sets longer timeouts of its own: an unreachable store
answers the bot within about 2 s with `STORE_UNAVAILABLE`, never raises and never hangs it.
"""

import asyncio
from dataclasses import dataclass
from typing import Final

from pymongo.errors import OperationFailure, PyMongoError

from premix.amounts import format_sol
from premix.distribution import max_distributable_lamports, wallets_needed
from premix.errors import FundingWalletNotFound, InvalidParameters, NoBuyerWallets, PremixError
from premix.jobs import PremixFundsJob
from premix.logs import get_logger
from premix.settings import Settings
from premix.store import Store, StoreConfigError
from premix.wallets import WalletCounts

log = get_logger(__name__)

ENQUEUE_STORE_TIMEOUT_SECONDS: Final = 2.0
# Past the client's own timeouts, so PyMongo's error normally answers first.
_READ_DEADLINE_SECONDS: Final = ENQUEUE_STORE_TIMEOUT_SECONDS + 0.5
_AUTHENTICATION_CODES: Final = frozenset({13, 18})  # Unauthorized, AuthenticationFailed

NOTHING_ENQUEUED: Final = "; nothing was enqueued"
STORE_UNAVAILABLE: Final = (
    "Queue unavailable: could not reach the wallet store; nothing was enqueued"
)
# Configuration errors are logged in full; the user sees only this (premix.queue's wording).
STORE_MISCONFIGURED: Final = "Queue unavailable: premix is misconfigured; nothing was enqueued"


class CountsBatch:
    """The wallet counts of concurrent enqueues in few queries: one read is in flight at a
    time, and the callers that ask meanwhile wait for the next, which reads all of their users
    at once (`WalletStore.wallet_counts_of`). A lone caller's read is a query of its own, as
    before; 50 callers at once cost a few queries, not 50. Each caller's user is read once."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[str, list[asyncio.Future[WalletCounts]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def counts(self, user_id: str) -> WalletCounts:
        """The user's counts, read with those of every user asking meanwhile."""
        future: asyncio.Future[WalletCounts] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(user_id, []).append(future)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_while_asked())
        return await future

    async def _read_while_asked(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # the callers already running in this turn join
                waiting, self._waiting = self._waiting, {}
                await self._read(waiting)
        finally:
            self._reader = None
            left, self._waiting = self._waiting, {}  # only if this task was cancelled
            for futures in left.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(TimeoutError("the wallet read was cancelled"))

    async def _read(self, waiting: dict[str, list[asyncio.Future[WalletCounts]]]) -> None:
        try:
            # bounded itself: a read stuck past the callers' deadline (a URI with long socket
            # timeouts, a link dropping packets) must not hold up every later enqueue
            async with asyncio.timeout(_READ_DEADLINE_SECONDS):
                counts = await self._store.wallets.wallet_counts_of(list(waiting))
        except Exception as e:  # every caller hears it (and answers its own way)
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(e)
            return
        for user_id, futures in waiting.items():
            for future in futures:
                if not future.done():  # a caller whose own deadline passed is gone
                    future.set_result(counts[user_id])


@dataclass
class _OpenStore:
    loop: asyncio.AbstractEventLoop
    store: Store
    batch: CountsBatch


_stores: dict[tuple[str, str], _OpenStore] = {}


async def enqueue_store(settings: Settings) -> Store:
    """Return the store enqueue reads wallets from (shared per URI, database and event loop).

    Raises `StoreConfigError` for an unusable URI. Opening does not connect.
    """
    if settings.uses_memory_store:
        return await Store.open(settings, decrypts=False)
    loop = asyncio.get_running_loop()
    key = (settings.mongodb_uri, settings.mongodb_database)
    opened = _stores.get(key)
    if opened is None or opened.loop is not loop:
        # A client belongs to the loop it was first used in (tests run one loop per test).
        store = await Store.open(
            settings, decrypts=False, timeout_seconds=ENQUEUE_STORE_TIMEOUT_SECONDS
        )
        opened = _stores.get(key)
        if opened is not None and opened.loop is loop:  # another enqueue opened one meanwhile
            await store.close()
        else:
            opened = _OpenStore(loop, store, CountsBatch(store))
            _stores[key] = opened
    return opened.store


async def _wallet_counts(settings: Settings, user_id: str) -> WalletCounts:
    """The user's wallet counts: through the shared store's batch (MongoDB), or one query of
    its own on an embedded store (opened per call)."""
    store = await enqueue_store(settings)
    opened = _stores.get((settings.mongodb_uri, settings.mongodb_database))
    if opened is not None and opened.store is store:
        return await opened.batch.counts(user_id)
    return await store.wallets.wallet_counts(user_id)


async def close_wallet_stores() -> None:
    """Close every store `enqueue_store` opened in this event loop (and forget others)."""
    loop = asyncio.get_running_loop()
    opened = list(_stores.values())
    _stores.clear()
    for entry in opened:
        if entry.loop is loop:
            await entry.store.close()


async def wallet_check_refusal(job: PremixFundsJob, settings: Settings) -> str | None:
    """Return why `job` must not be queued for the user's stored wallets (a message safe to
    show), or None when they can take it. One store read; never raises for a store that is
    unreachable or misconfigured (the message says so and the log has the detail)."""
    bound_log = log.bind(user_id=job.user_id)
    try:
        async with asyncio.timeout(_READ_DEADLINE_SECONDS):
            counts = await _wallet_counts(settings, job.user_id)
    except StoreConfigError as e:  # its message never repeats the URI
        bound_log.error("enqueue_store_misconfigured", error=str(e))
        return STORE_MISCONFIGURED
    except OperationFailure as e:
        bound_log.error("enqueue_store_refused", error=type(e).__name__, code=e.code)
        return STORE_MISCONFIGURED if e.code in _AUTHENTICATION_CODES else STORE_UNAVAILABLE
    except (PyMongoError, OSError, TimeoutError) as e:
        bound_log.warning("enqueue_store_unavailable", error=type(e).__name__)
        return STORE_UNAVAILABLE
    refusal = refusal_for_wallets(job, settings, counts)
    if refusal is not None:
        bound_log.info(
            "premix_refused_wallets",
            has_funding=counts.has_funding,
            buyer_wallets=counts.buyer_count,
            amount_lamports=job.amount_lamports,
        )
    return refusal


def refusal_for_wallets(
    job: PremixFundsJob, settings: Settings, counts: WalletCounts
) -> str | None:
    """Why `counts` (the user's stored wallets) cannot take `job`, or None. Pure.

    Assumes the amount already fits the wallets allowed (`settings.wallet_limit`): only the
    stored wallets can make it too large here (the per-wallet minimum does not depend on them).
    """
    if not counts.has_funding:
        return _refused(FundingWalletNotFound(job.user_id))
    if counts.buyer_count == 0:
        return _refused(NoBuyerWallets(job.user_id))
    table = settings.tier_table()
    allowed = settings.wallet_limit(job.max_wallets)
    usable = min(counts.buyer_count, allowed)
    most = max_distributable_lamports(usable, table)
    if job.amount_lamports <= most:
        return None
    needed = wallets_needed(job.amount_lamports, allowed, table)
    return _refused(
        InvalidParameters(
            f"mixAmount: {format_sol(job.amount_lamports)} needs at least "
            f"{_buyer_wallets(needed)}; user {job.user_id} has "
            f"{_buyer_wallets(counts.buyer_count)}, which can hold at most {format_sol(most)}"
        )
    )


def _refused(error: PremixError) -> str:
    return error.user_message + NOTHING_ENQUEUED


def _buyer_wallets(count: int) -> str:
    return f"{count} buyer wallet" + ("" if count == 1 else "s")
