"""The pure half of `wallet_readiness`: which run is a wallet's last credit (the newest run
whose transfer to it landed; a newer run that only planned it, or whose transaction failed or
may still land, is not), which sets its planned amount (a top-up: its target, also for a wallet
it sent nothing) and the report built from balances, credits and targets."""

from datetime import UTC, datetime, timedelta

from premix.readiness import NEVER_FUNDED, last_credits, last_targets, readiness_report
from premix.runs import (
    Attempt,
    AttemptState,
    LedgerTransaction,
    PlanEntry,
    RunRecord,
    RunStatus,
    TopUpEntry,
)

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


def top_up_run(
    run_id: str, minutes: int, planned: dict[str, int], held: dict[str, int], landed: bool
) -> RunRecord:
    """A completed (or, unless `landed`, still sending) top-up of user u1: each address's
    planned and held lamports, one transaction per address that lacked some."""
    at = T0 + timedelta(minutes=minutes)
    record = RunRecord(run_id, "u1", "standard", sum(planned.values()), at, at)
    entries = [
        TopUpEntry(position, address, lamports, held.get(address, 0))
        for position, (address, lamports) in enumerate(planned.items())
    ]
    assert record.set_top_up(entries, now=at)
    state = AttemptState.LANDED_OK
    for entry in record.plan:
        record.add_transaction(
            [entry.position], Attempt(f"sig-{run_id}-{entry.position}", "hash", 100, "wire", at)
        )
        if landed:
            record.settle(f"sig-{run_id}-{entry.position}", state, now=at)
    if landed:
        record.finish(RunStatus.COMPLETED, now=at)
    return record


def test_a_top_up_plans_the_target_and_credits_only_the_wallets_it_sent_something() -> None:
    older = run("job-1", 0, {"A": 5, "B": 6}, [AttemptState.LANDED_OK] * 2)
    top_up = top_up_run("job-2", 10, {"A": 50, "B": 6, "C": 7}, {"A": 5, "B": 6}, landed=True)
    runs = [top_up, older]

    credits, targets = last_credits(runs), last_targets(runs)

    assert {a: (c.job_id, c.lamports, c.sent_lamports) for a, c in credits.items()} == {
        "A": ("job-2", 50, 45),  # credited with what it lacked; its target is 50
        "B": ("job-1", 6, None),  # the top-up sent B nothing: not its last credit
        "C": ("job-2", 7, 7),
    }
    assert {a: (t.job_id, t.lamports) for a, t in targets.items()} == {
        "A": ("job-2", 50),
        "B": ("job-2", 6),  # ... but its target
        "C": ("job-2", 7),
    }
    report = readiness_report("u1", [0, 1, 2], ["A", "B", "C"], [50, 6, 3], credits, targets)
    assert [w["ready"] for w in report["wallets"]] == [True, True, False]
    assert [w["lastPremix"]["jobId"] for w in report["wallets"]] == ["job-2", "job-1", "job-2"]
    assert [w["plannedBy"]["jobId"] for w in report["wallets"]] == ["job-2"] * 3
    assert report["wallets"][2]["reason"] == (
        "holds 0.000000003 SOL, below the 0.000000007 SOL top-up job-2 planned for it"
    )


def test_a_top_up_still_sending_sets_no_target_for_a_wallet_it_has_not_funded() -> None:
    older = run("job-1", 0, {"A": 5, "B": 6}, [AttemptState.LANDED_OK] * 2)
    sending = top_up_run("job-2", 10, {"A": 50, "B": 6}, {"A": 5, "B": 6}, landed=False)

    targets = last_targets([sending, older])

    assert {a: (t.job_id, t.lamports) for a, t in targets.items()} == {
        "A": ("job-1", 5),  # its transfer may still land: the older premix's amount holds
        "B": ("job-1", 6),  # the top-up has not completed: no target from it yet
    }
