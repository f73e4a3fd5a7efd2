"""The pure half of `wallet_readiness`: which run is a wallet's last credit (the newest run
whose transfer to it landed; a newer run that only planned it, or whose transaction failed or
may still land, is not) and the report built from balances and credits."""

from datetime import UTC, datetime, timedelta

from premix.readiness import NEVER_FUNDED, last_credits, readiness_report
from premix.runs import Attempt, AttemptState, LedgerTransaction, PlanEntry, RunRecord, RunStatus

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def run(run_id: str, minutes: int, plan: dict[str, int], states: list[AttemptState]) -> RunRecord:
    """A run of user u1 with one transaction per planned address, its attempt in `states`."""
    at = T0 + timedelta(minutes=minutes)
    transactions = [
        LedgerTransaction(
            index, [index], [Attempt(f"sig-{run_id}-{index}", "hash", 100, "wire", at, state)]
        )
        for index, state in enumerate(states)
    ]
    return RunRecord(
        run_id,
        "u1",
        "standard",
        sum(plan.values()),
        at,
        at,
        status=RunStatus.SENDING,
        plan=[
            PlanEntry(position, address, lamports)
            for position, (address, lamports) in enumerate(plan.items())
        ],
        transactions=transactions,
    )


def test_the_newest_run_that_landed_a_transfer_is_the_wallets_last_credit() -> None:
    older = run("job-1", 0, {"A": 5, "B": 6, "C": 7}, [AttemptState.LANDED_OK] * 3)
    newer = run(
        "job-2",
        10,
        {"A": 50, "B": 60, "C": 70},
        [AttemptState.LANDED_OK, AttemptState.LANDED_FAILED, AttemptState.SIGNED],
    )

    credits = last_credits([newer, older])  # newest first, as Ledger.runs_of returns them

    assert {address: (c.job_id, c.lamports) for address, c in credits.items()} == {
        "A": ("job-2", 50),
        "B": ("job-1", 6),  # job-2's transfer to B failed on chain
        "C": ("job-1", 7),  # job-2's transfer to C may still land: not a credit yet
    }


def test_a_run_that_only_planned_a_wallet_is_no_credit() -> None:
    planned = run("job-1", 0, {"A": 5}, [])

    assert last_credits([planned]) == {}


def test_report_ready_is_a_balance_of_at_least_the_planned_amount() -> None:
    credits = last_credits([run("job-1", 0, {"A": 5, "B": 6}, [AttemptState.LANDED_OK] * 2)])

    report = readiness_report("u1", [0, 1, 2], ["A", "B", "C"], [5, 4, 9], credits)

    assert [w["ready"] for w in report["wallets"]] == [True, False, False]
    assert report["wallets"][1]["reason"] == (
        "holds 0.000000004 SOL, below the 0.000000006 SOL premix job-1 sent it"
    )
    assert report["wallets"][2]["reason"] == NEVER_FUNDED
    assert report["wallets"][2]["plannedLamports"] is None
    assert report["totals"] == {
        "wallets": 3,
        "ready": 1,
        "balanceLamports": 18,
        "balanceSol": "0.000000018",
        "plannedLamports": 11,
        "plannedSol": "0.000000011",
    }
