"""A stand-alone premix worker process, so its memory is measured apart from the benchmark's.

    python -m benchmarks.worker_process --user bench-rss --buyers 73

Configured by `PREMIX_*` variables exactly like `arq premix.worker.WorkerSettings` (the
benchmark passes a private Redis, a `memory://` store, the localnet URL and a throwaway key).
It stores a funding wallet and `--buyers` buyer wallets for each `--user` in its own embedded
store, starts a real arq `Worker` with `premix.worker`'s settings, and prints one JSON line
when the worker polls: `{"ready": true, "funding": {user: public key}}` (the benchmark funds
those). On SIGTERM or SIGINT it stops the worker and prints `{"peak_rss_bytes": ...}`: the
process's peak resident set size (VmHWM on Linux, else `resource.getrusage`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from arq.worker import Worker
from solders.keypair import Keypair

from premix.settings import Settings
from premix.store import Store
from premix.worker import worker_settings

STARTUP_TIMEOUT_SECONDS = 30.0


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes.

    On Linux, `VmHWM` from /proc/self/status: `getrusage`'s ru_maxrss survives `execve`, so in a
    child it starts at the size of the parent that forked it (the benchmark process, which is
    far larger than a worker). Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   80832 kB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


async def seed_wallets(settings: Settings, users: list[str], buyers: int) -> dict[str, str]:
    """Store a funding wallet and `buyers` buyer wallets per user; return funding public keys."""
    store = await Store.open(settings)
    await store.ensure_indexes()
    funding: dict[str, str] = {}
    try:
        for user in users:
            keypair = Keypair()
            await store.wallets.set_funding_wallet(user, keypair)
            await store.wallets.add_buyer_wallets(user, [Keypair() for _ in range(buyers)])
            funding[user] = str(keypair.pubkey())
    finally:
        await store.close()
    return funding


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", action="append", default=[], help="user id to store wallets for")
    parser.add_argument("--buyers", type=int, default=73, help="buyer wallets per user")
    args = parser.parse_args(argv)
    settings = Settings()
    funding = await seed_wallets(settings, args.user, args.buyers)
    baseline = peak_rss_bytes()

    started = asyncio.Event()
    options = worker_settings(settings)
    premix_startup = options["on_startup"]

    async def startup(ctx: dict[str, Any]) -> None:
        await premix_startup(ctx)
        started.set()

    options["on_startup"] = startup
    worker = Worker(**options, handle_signals=False, ctx={"settings": settings})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.create_task(worker.main())
    async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
        await asyncio.wait(
            [task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED
        )
    if task.done():
        task.result()  # startup failed: raise its error
    emit({"ready": True, "funding": funding, "baseline_rss_bytes": baseline})
    await stop.wait()
    # let a job that is finishing (result being stored) end, then stop polling
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await worker.close()
    emit({"peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline})


if __name__ == "__main__":
    asyncio.run(main())
