"""Enqueue latency, with the wallet check: `enqueue_premix_funds` for distinct users, one after
another, no worker running; milliseconds per call.

Each user has a funding wallet and 73 buyer wallets stored (the most a user can have: the
largest read) in a MongoDB-wire store, a fresh database on the SecantusDB `queue_bench` starts
(or `PREMIX_BENCH_MONGODB_URI`; `memory://` only when neither is available, and the JSON says
which). So every call makes enqueue's one store read (`premix.wallet_check`) and its one Redis
round trip. A few warm-up calls first open the Redis pool and the store's client. The store
read alone (`wallet_counts` through enqueue's shared store) is timed beside it, for scale.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from solders.keypair import Keypair

from benchmarks.measure import Spread
from premix.constants import MAX_BUYER_WALLETS
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store, reset_memory_stores
from premix.wallet_check import enqueue_store

ENQUEUE_WARMUP = 10
ENQUEUE_BUYERS = MAX_BUYER_WALLETS
# Seeding and dropping ~75,000 wallets can outlast premix's 5 s operation timeout.
SEEDING_TIMEOUT_SECONDS = 300.0


async def seed_wallets(store: Store, users: Iterable[str], buyers: int) -> dict[str, Keypair]:
    """Store a funding wallet and `buyers` buyer wallets per user; return the funding keypairs.

    The enqueue side needs these to accept a user (it reads their roles, never their keys)."""
    funding: dict[str, Keypair] = {}
    for user in users:
        funding[user] = Keypair()
        await store.wallets.set_funding_wallet(user, funding[user])
        if buyers:
            await store.wallets.add_buyer_wallets(user, [Keypair() for _ in range(buyers)])
    return funding


async def bench_enqueue(settings: Settings, count: int, store_description: str) -> dict[str, Any]:
    """Milliseconds per `enqueue_premix_funds` call over `count` distinct users whose wallets
    are in the store `settings` name (a fresh database there, dropped afterwards)."""
    settings = settings.model_copy(
        update={"mongodb_database": f"premix_bench_enqueue_{uuid.uuid4().hex[:12]}"}
    )
    users = [f"bench-enqueue-{i}" for i in range(ENQUEUE_WARMUP + count)]
    store = await Store.open(settings, timeout_seconds=SEEDING_TIMEOUT_SECONDS)
    try:
        await store.ensure_indexes()
        await seed_wallets(store, users, ENQUEUE_BUYERS)
        latencies: list[float] = []
        refused = 0
        for i, user in enumerate(users):
            started = time.perf_counter()
            result = await enqueue_premix_funds(user, 1_000 + i, 0.5, settings=settings)
            elapsed = (time.perf_counter() - started) * 1000
            if i >= ENQUEUE_WARMUP:
                latencies.append(elapsed)
                refused += not result.success
        reads: list[float] = []
        shared = await enqueue_store(settings)
        for user in users[ENQUEUE_WARMUP:]:
            started = time.perf_counter()
            await shared.wallets.wallet_counts(user)
            reads.append((time.perf_counter() - started) * 1000)
    finally:
        await store.drop_database()
        await store.close()
        if store.is_memory:
            reset_memory_stores(settings.mongodb_uri)
    return {
        "count": count,
        "refused": refused,
        "store": store_description,
        "buyer_wallets_per_user": ENQUEUE_BUYERS,
        "milliseconds": Spread.of(latencies).to_dict(),
        "store_read_milliseconds": Spread.of(reads).to_dict(),
    }
