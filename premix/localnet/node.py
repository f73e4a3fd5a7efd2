"""`Localnet`: a chain, its slot clock and its JSON-RPC server, started and stopped together."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from types import TracebackType

from solders.account import Account
from solders.pubkey import Pubkey
from solders.signature import Signature

from premix.constants import LOCALNET_SLOT_MS
from premix.localnet.chain import Block, Chain, TransactionRecord
from premix.localnet.faults import Faults
from premix.localnet.intercept import Interceptor, Interceptors
from premix.localnet.server import RpcServer, RpcStats

DEFAULT_SLOT_MS = LOCALNET_SLOT_MS


class SlotClock:
    """A daemon thread producing one block every `slot_ms` milliseconds."""

    def __init__(self, chain: Chain, slot_ms: int) -> None:
        if slot_ms <= 0:
            raise ValueError("slot_ms must be > 0")
        self._chain = chain
        self._interval = slot_ms / 1000
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="localnet-slot-clock", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        next_tick = time.monotonic() + self._interval
        while not self._stopped.wait(max(0.0, next_tick - time.monotonic())):
            self._chain.advance(1)
            next_tick += self._interval


class Localnet:
    """A Solana JSON-RPC node on loopback backed by LiteSVM.

    `slot_ms=None` gives a manual clock (tests call `advance`); otherwise a block is produced
    every `slot_ms` milliseconds. `port=0` picks a free port. Use as a context manager, or call
    `start()` and `stop()`.
    """

    def __init__(
        self,
        *,
        slot_ms: int | None = DEFAULT_SLOT_MS,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if slot_ms is not None and slot_ms <= 0:
            raise ValueError("slot_ms must be > 0 (or None for a manual clock)")
        self.chain = Chain()
        self.faults = Faults(seed=seed)
        self.stats = RpcStats()
        self.interceptors = Interceptors()
        self.slot_ms = slot_ms
        self._address = (host, port)
        self._server: RpcServer | None = None
        self._server_thread: threading.Thread | None = None
        self._clock: SlotClock | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Localnet:
        """Bind the port and start serving (and the slot clock). Returns self.

        After `stop()` it can start again: same port, same chain (a node that was down).
        """
        if self._server is not None:
            raise RuntimeError("localnet already started")
        self._server = RpcServer(
            self._address, self.chain, self.faults, self.stats, self.interceptors
        )
        self._address = (self._address[0], self._server.server_address[1])
        self._server_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="localnet-rpc",
            daemon=True,
        )
        self._server_thread.start()
        if self.slot_ms is not None:
            self._clock = SlotClock(self.chain, self.slot_ms)
            self._clock.start()
        return self

    def stop(self) -> None:
        """Stop the clock and the server, cut open connections, and release the port."""
        if self._clock is not None:
            self._clock.stop()
            self._clock = None
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join()
            self._server_thread = None

    def __enter__(self) -> Localnet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The JSON-RPC endpoint, "http://127.0.0.1:<port>" (kept across stop and start)."""
        host, port = self._address
        if port == 0:
            raise RuntimeError("localnet has not been started")
        return f"http://{host}:{port}"

    # -- test hooks ---------------------------------------------------------------------------

    def intercept(self, callback: Interceptor) -> Interceptor:
        """Call `callback` with every request, when received and again when answered (see
        `premix.localnet.intercept`); returns it, for `stop_intercepting`."""
        return self.interceptors.add(callback)

    def stop_intercepting(self, callback: Interceptor) -> None:
        """Stop calling `callback` (no effect if it is not registered)."""
        self.interceptors.remove(callback)

    # -- the chain, without RPC ---------------------------------------------------------------

    def airdrop(self, pubkey: Pubkey, lamports: int) -> Signature:
        """Credit `pubkey` directly (no RPC round trip); returns the airdrop's signature."""
        return self.chain.airdrop(pubkey, lamports)

    def set_account(self, pubkey: Pubkey, account: Account) -> None:
        """Put `account` at `pubkey` now (no RPC): program-owned or executable accounts."""
        self.chain.set_account(pubkey, account)

    def balance(self, pubkey: Pubkey) -> int:
        """Lamports held by `pubkey` now (processed state)."""
        return self.chain.balance(pubkey)

    @property
    def slot(self) -> int:
        return self.chain.slot

    @property
    def block_height(self) -> int:
        return self.chain.block_height

    def advance(self, slots: int = 1) -> Block:
        """Produce `slots` blocks now; returns the newest."""
        return self.chain.advance(slots)

    def expire_blockhashes(self) -> Block:
        """Advance past the last valid block height of every blockhash handed out so far."""
        return self.chain.expire_blockhashes()

    @property
    def transaction_log(self) -> Mapping[Signature, TransactionRecord]:
        """Every transaction received: slots received and landed, outcome, error."""
        return self.chain.transaction_log


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8899,
    slot_ms: int | None = DEFAULT_SLOT_MS,
    seed: int = 0,
) -> None:
    """Run a localnet in the foreground until interrupted (Ctrl-C); prints its URL first."""
    with Localnet(slot_ms=slot_ms, seed=seed, host=host, port=port) as net:
        clock = f"{slot_ms} ms slots" if slot_ms is not None else "manual clock"
        print(f"localnet listening on {net.url} ({clock}); Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
