"""The per-wallet report built from the ledger: a transfer signed and sent but not settled is
reported as pending (it may still land), never as not sent."""

from solders.pubkey import Pubkey

from premix.errors import MixerFailed
from premix.ledger import Attempt, AttemptState, RunRecord, utc_now
from premix.mixer import WalletStatus
from premix.mixer.result import result_from_record

SOL = 10**9


def _run_with_plan(amounts: list[int]) -> RunRecord:
    now = utc_now()
    run = RunRecord("premix-u1-1", "u1", "standard", sum(amounts), now, now)
    run.set_plan([str(Pubkey.new_unique()) for _ in amounts], amounts, now=now)
    return run


def _attempt(signature: str) -> Attempt:
    return Attempt(signature, "hash", 100, "wire", utc_now(), fee_lamports=5_000)


def test_funded_pending_failed_and_not_sent_wallets_are_told_apart() -> None:
    run = _run_with_plan([SOL, SOL, SOL, SOL])
    run.add_transaction([0], _attempt("sig-landed"))
    run.settle("sig-landed", AttemptState.LANDED_OK, now=utc_now(), fee_lamports=5_000)
    run.add_transaction([1], _attempt("sig-in-flight"))
    run.add_transaction([2], _attempt("sig-failed"))
    run.settle("sig-failed", AttemptState.LANDED_FAILED, now=utc_now(), fee_lamports=5_000)

    result = result_from_record(run)

    assert [w.status for w in result.wallets] == [
        WalletStatus.FUNDED,
        WalletStatus.PENDING,
        WalletStatus.FAILED,
        WalletStatus.NOT_SENT,
    ]
    assert [w.signature for w in result.wallets] == [
        "sig-landed",
        "sig-in-flight",
        "sig-failed",
        None,
    ]
    keys = [entry.recipient for entry in run.plan]
    assert result.funded == [(keys[0], SOL)]
    assert result.pending == [(keys[1], SOL)]
    assert result.unfunded == [(keys[2], SOL), (keys[3], SOL)]


def test_a_failure_report_names_the_wallets_that_may_still_be_funded() -> None:
    run = _run_with_plan([SOL, SOL, SOL])
    run.add_transaction([0], _attempt("sig-landed"))
    run.settle("sig-landed", AttemptState.LANDED_OK, now=utc_now(), fee_lamports=5_000)
    run.add_transaction([1], _attempt("sig-in-flight"))

    error = MixerFailed.from_result("the RPC endpoint stopped answering", result_from_record(run))

    assert str(error) == (
        "Mixer operation failed: the RPC endpoint stopped answering. Sent 1 SOL to 1 wallet(s); "
        "1 wallet(s) not funded; 1 wallet(s) pending (sent, may still land)"
    )
