"""Transfer engines: execute a distribution plan as System Program transfers from the funding
wallet straight to each buyer wallet, with a write-ahead ledger so nothing is paid twice.

`run_mixer` is the one entry point; `standard` and `fast` are the two modes (SPEC section 5).
"""

from collections.abc import Sequence

import structlog
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.errors import InvalidParameters
from premix.ledger import Ledger, RunStatus
from premix.mixer.engine import MixerRun, ProgressCallback
from premix.mixer.fast import run_fast
from premix.mixer.packing import FeePolicy, estimate_fee_lamports, transaction_count
from premix.mixer.result import (
    MixerFailed,
    MixerProgress,
    MixResult,
    WalletOutcome,
    WalletStatus,
    result_from_record,
)
from premix.mixer.standard import run_standard
from premix.rpc import SolanaRpc
from premix.settings import Settings

__all__ = [
    "FeePolicy",
    "MixResult",
    "MixerFailed",
    "MixerProgress",
    "ProgressCallback",
    "WalletOutcome",
    "WalletStatus",
    "estimate_fee_lamports",
    "run_mixer",
    "transaction_count",
]

MODES = ("standard", "fast")
log = structlog.get_logger(__name__)


async def run_mixer(
    *,
    run_id: str,
    mode: str,
    funding: Keypair,
    recipients: Sequence[Pubkey],
    amounts: Sequence[int],
    rpc: SolanaRpc,
    ledger: Ledger,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
) -> MixResult:
    """Pay `amounts[i]` lamports from `funding` to `recipients[i]` for run `run_id` (opened in
    the ledger beforehand), resuming whatever an earlier execution of the run recorded.

    The ledger's plan wins over the arguments once recorded. Returns the `MixResult` (every
    wallet funded). Raises `MixerFailed` (with `.result`, the per-wallet report, recorded in the
    ledger) when a transfer fails on chain or is refused, `TransientError` when the RPC or
    another worker stands in the way (a re-run resumes), `LedgerError` if the run was never
    opened, `InvalidParameters` for an unknown mode or the funding wallet among the recipients.
    """
    if mode not in MODES:
        raise InvalidParameters(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if funding.pubkey() in recipients:
        raise InvalidParameters("the funding wallet cannot also be a buyer wallet")
    record = await ledger.record_plan(run_id, [str(r) for r in recipients], list(amounts))
    if record.status is RunStatus.COMPLETED:
        return result_from_record(record)
    if [e.recipient for e in record.plan] != [str(r) for r in recipients] or [
        e.lamports for e in record.plan
    ] != list(amounts):
        log.warning("stored_plan_differs", run_id=run_id, detail="the recorded plan is used")
    funding_key = str(funding.pubkey())
    if record.funding is not None and record.funding != funding_key:
        result = result_from_record(record)
        raise MixerFailed.from_result(
            f"the funding wallet changed since run {run_id} started", result
        )
    run = MixerRun(
        record=record,
        funding=funding,
        rpc=rpc,
        ledger=ledger,
        fees=FeePolicy.from_settings(settings),
        poll_seconds=settings.confirm_poll_seconds,
        first_poll_seconds=settings.fast_first_poll_seconds,
        on_progress=on_progress,
    )
    await run.settle_recorded()
    if mode == "fast":
        await run_fast(run)
    else:
        await run_standard(run)
    return await run.complete()
