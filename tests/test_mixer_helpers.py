"""Shared pieces of the mixer tests (no tests here): a run harness on localnet and the store,
an RPC client that steps the manual clock, and the "worker killed" exception."""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from premix.ledger import Attempt, Ledger, RunRecord, RunStatus, utc_now
from premix.localnet import Localnet
from premix.mixer import MixerProgress, MixResult, Payout, check_recipients
from premix.mixer.packing import LAMPORTS_PER_SIGNATURE
from premix.rpc import RetryPolicy, SignatureStatus, SolanaRpc
from premix.settings import Settings
from premix.store import Store

FUNDING_LAMPORTS = 1_000 * 10**9
QUICK_RETRIES = RetryPolicy(tries=6, base_delay_seconds=0.001, max_delay_seconds=0.01)
STEP_SECONDS = 0.4  # a SteppingRpc's slot


class WorkerKilled(BaseException):
    """Stands for the worker process dying: nothing after it runs, only store and chain stay."""


class SteppingRpc(SolanaRpc):
    """A `SolanaRpc` on a manual-clock localnet that produces one block before each status
    poll: deterministic time, one slot per poll, no waiting on a clock. Its `clock` (what
    premix times rebroadcasts and blockhash ages by) moves one slot, `STEP_SECONDS`, per poll."""

    def __init__(self, net: Localnet, **kwargs: object) -> None:
        super().__init__(
            net.url,
            retry=QUICK_RETRIES,
            clock=lambda: self.stepped_seconds,
            **kwargs,  # type: ignore[arg-type]
        )
        self.net = net
        self.stepped_seconds = 0.0

    async def signature_statuses(
        self, signatures: Sequence[Signature], *, search_history: bool = False
    ) -> list[SignatureStatus | None]:
        self.net.advance(1)
        self.stepped_seconds += STEP_SECONDS
        return await super().signature_statuses(signatures, search_history=search_history)


class KillAfterSend(SteppingRpc):
    """Dies right after the `kill_at`-th sendTransaction reached the node (1-based)."""

    def __init__(self, net: Localnet, kill_at: int) -> None:
        super().__init__(net)
        self.kill_at = kill_at
        self.sends = 0

    async def send_raw(self, wire: bytes):  # type: ignore[no-untyped-def]
        result = await super().send_raw(wire)
        self.sends += 1
        if self.sends == self.kill_at:
            raise WorkerKilled(f"after send {self.sends}")
        return result


class KillAfterWrite(Ledger):
    """Dies right after the `kill_at`-th ledger write reached the store (1-based)."""

    def __init__(self, store: Store, kill_at: int) -> None:
        super().__init__(store)
        self.kill_at = kill_at
        self.writes = 0

    async def save(self, record: RunRecord) -> RunRecord:
        saved = await super().save(record)
        self.writes += 1
        if self.writes == self.kill_at:
            raise WorkerKilled(f"after write {self.writes}")
        return saved


@dataclass
class MixerHarness:
    """One funding wallet with `FUNDING_LAMPORTS`, fresh recipients, an opened ledger run."""

    net: Localnet
    store: Store
    wallets: int
    mode: str
    run_id: str = "premix-user1-1700000000000"
    funding: Keypair = field(default_factory=Keypair)
    funding_lamports: int = FUNDING_LAMPORTS
    settings: Settings = field(
        # a fixed zero fee: the base-fee assertions below; `auto` is tested in test_mixer_fees.py
        default_factory=lambda: Settings(confirm_poll_seconds=0.001, slot_seconds=0, priority_fee=0)
    )
    progress: list[MixerProgress] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.recipients = [Keypair().pubkey() for _ in range(self.wallets)]
        # distinct, odd amounts: a transfer paid twice or to the wrong wallet shows
        self.amounts = [10_000_000 + 1_000 * i + 7 for i in range(self.wallets)]
        self.net.airdrop(self.funding.pubkey(), self.funding_lamports)

    async def open(self) -> None:
        await Ledger(self.store).open_run(
            self.run_id, user_id="user1", mode=self.mode, amount_lamports=sum(self.amounts)
        )

    async def run(
        self,
        *,
        rpc: SolanaRpc | None = None,
        ledger: Ledger | None = None,
        on_progress: Callable[[MixerProgress], Awaitable[None]] | None = None,
    ) -> MixResult:
        """Record the plan (the first one wins), resume the payout, pay and complete the run;
        a run completed before is only reported."""
        owned = rpc is None
        rpc = rpc or SteppingRpc(self.net)
        ledger = ledger or Ledger(self.store)
        try:
            recipients = [str(r) for r in self.recipients]
            check_recipients(self.funding.pubkey(), recipients)
            run = await ledger.record_plan(self.run_id, recipients, self.amounts)
            payout = await Payout.resume(ledger, run, rpc=rpc, settings=self.settings)
            if run.status is RunStatus.COMPLETED:
                return payout.report()
            await payout.pay(self.funding, on_progress=on_progress or self.record_progress)
            return await payout.complete()
        finally:
            if owned:
                await rpc.close()

    async def record_progress(self, progress: MixerProgress) -> None:
        self.progress.append(progress)

    async def record(self) -> RunRecord:
        return await Ledger(self.store).require(self.run_id)

    def balances(self) -> list[int]:
        return [self.net.balance(r) for r in self.recipients]

    async def assert_each_wallet_paid_exactly_once(self, transactions: int) -> None:
        """Every recipient holds exactly its amount; the funding wallet paid exactly the amounts
        plus 5,000 lamports for each of `transactions` landed transactions, and the ledger
        shows exactly those transactions landed, once each."""
        assert self.balances() == self.amounts
        fees = LAMPORTS_PER_SIGNATURE * transactions
        assert self.net.balance(self.funding.pubkey()) == (
            self.funding_lamports - sum(self.amounts) - fees
        )
        record = await self.record()
        landed = [a for tx in record.transactions for a in tx.attempts if a.landed]
        assert len(landed) == transactions
        assert [len(tx.transfers) for tx in record.transactions if tx.state == "landed_ok"] == [
            len(tx.transfers) for tx in record.transactions
        ]
        assert record.status == "completed"
        assert record.totals.fee_lamports == fees


def drain(net: Localnet, funding: Keypair, keep_lamports: int) -> None:
    """Move all but `keep_lamports` out of `funding`, as the user's own wallet app might."""
    sink = Pubkey.new_unique()
    fee = LAMPORTS_PER_SIGNATURE
    lamports = net.balance(funding.pubkey()) - keep_lamports - fee
    message = Message.new_with_blockhash(
        [transfer(TransferParams(from_pubkey=funding.pubkey(), to_pubkey=sink, lamports=lamports))],
        funding.pubkey(),
        net.chain.block().blockhash,
    )
    net.chain.send_transaction(VersionedTransaction(message, [funding]), skip_preflight=True)
    assert net.balance(funding.pubkey()) == keep_lamports


def run_with_plan(amounts: list[int], mode: str = "fast") -> RunRecord:
    """A ledger run for user u1 planning `amounts` to fresh public keys (no I/O)."""
    now = utc_now()
    run = RunRecord("premix-u1-1", "u1", mode, sum(amounts), now, now)
    run.set_plan([str(Pubkey.new_unique()) for _ in amounts], amounts, now=now)
    return run


def signed_attempt(signature: str) -> Attempt:
    """A signed, unsettled attempt paying the 5,000-lamport base fee."""
    return Attempt(signature, "hash", 100, "wire", utc_now(), fee_lamports=5_000)
