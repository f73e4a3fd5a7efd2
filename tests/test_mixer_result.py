"""The per-wallet report built from the ledger: a transfer signed and sent but not settled is
reported as pending (it may still land), never as not sent."""

from premix.ledger import AttemptState, utc_now
from premix.mixer import MixerFailed, MixResult, WalletStatus
from tests.test_mixer_helpers import run_with_plan, signed_attempt

SOL = 10**9


def test_funded_pending_failed_and_not_sent_wallets_are_told_apart() -> None:
    run = run_with_plan([SOL, SOL, SOL, SOL], "standard")
    run.add_transaction([0], signed_attempt("sig-landed"))
    run.settle("sig-landed", AttemptState.LANDED_OK, now=utc_now(), fee_lamports=5_000)
    run.add_transaction([1], signed_attempt("sig-in-flight"))
    run.add_transaction([2], signed_attempt("sig-failed"))
    run.settle("sig-failed", AttemptState.LANDED_FAILED, now=utc_now(), fee_lamports=5_000)

    result = MixResult.from_record(run)

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
    run = run_with_plan([SOL, SOL, SOL], "standard")
    run.add_transaction([0], signed_attempt("sig-landed"))
    run.settle("sig-landed", AttemptState.LANDED_OK, now=utc_now(), fee_lamports=5_000)
    run.add_transaction([1], signed_attempt("sig-in-flight"))

    error = MixerFailed.from_result(
        "the RPC endpoint stopped answering", MixResult.from_record(run)
    )

    assert str(error) == (
        "Mixer operation failed: the RPC endpoint stopped answering. Sent 1 SOL to 1 wallet(s); "
        "1 wallet(s) not funded; 1 wallet(s) pending (sent, may still land)"
    )
