"""The benchmark command runs end to end at tiny sizes and reports what it promises.

Only exact, non-timing figures are checked (transactions, fees, counts, keys), never a time:
this keeps `python -m benchmarks.run` from rotting without making the suite flaky.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [
    "--quick",
    "--repeat=1",
    "--slot-ms=20",
    "--confirm-poll-seconds=0.01",
    "--wallets=1,21",
    "--enqueues=5",
    "--pickups=3",
    "--workers=1,2",
    "--throughput-jobs=2",
    "--plan-number=10",
    "--congestion-wallets=3",
    "--congestion-budget-slots=250",
    "--budget-rps=20",
    "--budget-jobs=2",
    "--concurrent-jobs=3",
    "--concurrent-enqueues=100",
]


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    """One tiny benchmark run as a subprocess: its JSON document, stdout and Markdown."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    out = tmp_path_factory.mktemp("bench")
    json_path, markdown_path = out / "results.json", out / "results.md"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            *TINY_RUN,
            f"--json-out={json_path}",
            f"--markdown-out={markdown_path}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(json_path.read_text()), completed.stdout, markdown_path.read_text()


def case(document: dict[str, Any], design: str, wallets: int) -> dict[str, Any]:
    [found] = [
        c for c in document["engines"]["cases"] if c["design"] == design and c["wallets"] == wallets
    ]
    return found


def test_document_names_the_run_the_machine_and_every_section(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    document, _, _ = benchmark_run
    assert set(document) == {
        "date",
        "command",
        "machine",
        "config",
        "engines",
        "congestion",
        "queue",
        "planner",
        "capacity",
        "targets",
    }
    assert document["command"].startswith("python -m benchmarks.run --quick")
    assert {"nproc", "python", "platform"} <= set(document["machine"])
    assert document["config"]["wallets"] == [1, 21]


def test_fast_mode_funds_21_wallets_in_one_transaction_for_5000_lamports(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    document, _, _ = benchmark_run
    fast = case(document, "premix-fast", 21)
    assert (fast["transactions"], fast["fee_lamports"], fast["funded_exactly"]) == (1, 5_000, True)
    assert fast["amount_sol"] == "12.7"
    assert fast["rpc_round_trips"]["count"] == 1
    assert fast["runs"][0]["rpc_calls"]["sendTransaction"] == 1
    assert fast["confirm_slots_after_send"]["minimum"] >= 1  # confirmed one slot after landing


def test_standard_mode_and_the_sequential_reference_send_one_transaction_per_wallet(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    document, _, _ = benchmark_run
    for design in ("premix-standard", "sequential"):
        standard = case(document, design, 21)
        assert (standard["transactions"], standard["fee_lamports"]) == (21, 105_000)
        assert standard["funded_exactly"] is True
        assert standard["runs"][0]["rpc_calls"]["sendTransaction"] == 21


def test_under_congestion_a_zero_fee_never_lands_and_auto_funds_every_wallet(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    congestion = benchmark_run[0]["congestion"]
    cases = {(c["mode"], c["priority_fee"]): c for c in congestion["cases"]}
    assert set(cases) == {(m, f) for m in ("fast", "standard") for f in ("0", "auto")}
    for mode in ("fast", "standard"):
        zero, auto = cases[(mode, "0")], cases[(mode, "auto")]
        assert (zero["completed"], zero["fee_lamports"], zero["funded_exactly"]) == (
            False,
            0,
            False,
        )
        assert zero["slots"] >= congestion["budget_slots"]
        assert (auto["completed"], auto["within_deadline"], auto["funded_exactly"]) == (True,) * 3
        assert auto["re_signs"] == 0 and auto["priority_fee_lamports"] > 0
        assert auto["rpc_calls"]["getRecentPrioritizationFees"] >= 1
    assert cases[("fast", "auto")]["transactions"] == 1
    assert cases[("standard", "auto")]["transactions"] == 3


def test_typescript_estimates_follow_the_old_formulas(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    document, _, _ = benchmark_run
    estimates = {
        (e["design"], e["wallets"]): e["seconds"] for e in document["engines"]["estimates"]
    }
    assert estimates == {
        ("ts-estimate-fast", 1): 3.0,  # max(3, min(15, 1 + 0.25))
        ("ts-estimate-standard", 1): 15.0,  # max(15, min(120, 5 + 1))
        ("ts-estimate-fast", 21): 15.0,  # min(15, 21 + 6.35)
        ("ts-estimate-standard", 21): 120.0,  # min(120, 105 + 25.4)
    }
    assert [r["wallets"] for r in document["engines"]["ratios"]] == [1, 21]


def test_queue_section_counts_every_job_and_measures_a_worker_process(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    queue = benchmark_run[0]["queue"]
    assert (queue["enqueue"]["count"], queue["enqueue"]["refused"]) == (5, 0)
    assert queue["enqueue"]["milliseconds"]["count"] == 5
    # every timed enqueue read a user's 74 wallets from a real MongoDB-wire store
    assert not queue["enqueue"]["store"].startswith("memory://")
    assert queue["enqueue"]["buyer_wallets_per_user"] == 73
    assert queue["enqueue"]["store_read_milliseconds"]["count"] == 5
    assert queue["pickup"]["milliseconds"]["count"] == 3
    assert [job["status"] for job in queue["worker_rss"]["jobs"]] == ["completed", "completed"]
    assert queue["worker_rss"]["peak_rss_bytes"] > 0
    throughput = queue["throughput"]
    processes, in_process = throughput["processes"], throughput["in_process"]
    assert (processes["measured_in"], processes["store"]) == (
        "separate worker processes",
        "SecantusDB (--sync-on-commit), started by the benchmark",
    )
    assert (in_process["measured_in"], in_process["store"]) == (
        "arq Worker instances in one process",
        "memory://",
    )
    for run in (processes, in_process):
        assert [(row["workers"], row["completed"]) for row in run["by_workers"]] == [
            (1, [2]),
            (2, [2]),
        ]


def test_capacity_section_pays_every_backlog_exactly_once_and_counts_every_enqueue(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    capacity = benchmark_run[0]["capacity"]
    budget = capacity["budget"]
    assert (budget["workers"], budget["requests_per_second"]) == (4, 20.0)
    runs = [budget["budgeted"], budget["unbudgeted"], *capacity["concurrency"]["runs"]]
    assert [(run["jobs"], run["completed"], run["paid_exactly_once"]) for run in runs] == [
        (2, 2, True),
        (2, 2, True),
        (3, 3, True),
        (3, 3, True),
    ]
    assert [run["max_jobs"] for run in capacity["concurrency"]["runs"]] == [8, 1]
    assert all(run["rpc_requests"] >= run["busiest_second_requests"] > 0 for run in runs)
    enqueue = capacity["enqueue"]
    for key in ("one_script", "lock_then_arq_enqueue"):
        assert (enqueue[key]["calls"], enqueue[key]["refused"]) == (100, 0)
        assert enqueue[key]["milliseconds"]["count"] == 100


def test_planner_plans_85_sol_over_all_73_wallets(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    planner = benchmark_run[0]["planner"]
    assert (planner["plan_wallets"], planner["plan_sum_lamports"]) == (73, 85 * 10**9)
    assert planner["microseconds_per_plan"]["count"] >= 5


def test_every_spec_target_is_listed_and_73_wallet_bars_are_not_measured_without_73_wallets(
    benchmark_run: tuple[dict[str, Any], str, str],
) -> None:
    document, stdout, markdown = benchmark_run
    targets = {t["name"]: t for t in document["targets"]}
    assert set(targets) == {
        "fast 73 wallets: transactions",
        "fast 73 wallets: fees",
        "fast 73 wallets: RPC round trips",
        "fast 73 wallets: confirmed after the send",
        "fast 73 wallets: RPC calls (issue 13)",
        "fast 73 wallets: median wall time",
        "standard 73 wallets: RPC calls per transfer",
        "standard 73 wallets: wall time",
        "congestion 73 wallets: auto completes within the job deadline",
        "plan for 73 wallets",
        "enqueue p99",
        "pickup p99 (enqueue to phase-1 event)",
        "worker peak RSS",
        "throughput: 4 worker processes vs 1",
        "4 worker processes, one RPC budget: busiest 1 s window",
        "max_jobs=8: jobs/s, one process",
        "max_jobs=8: worker peak RSS",
        "enqueue, 50 concurrent callers: calls/s",
        "enqueue, 50 concurrent callers: p99",
    }
    assert targets["fast 73 wallets: transactions"]["passed"] is None
    assert targets["standard 73 wallets: wall time"]["passed"] is None
    assert targets["plan for 73 wallets"]["passed"] is not None
    assert (
        targets["congestion 73 wallets: auto completes within the job deadline"]["passed"] is None
    )
    # the tables come first on stdout, then the same JSON document
    assert "Targets (SPEC section 9)" in stdout
    assert json.loads(stdout[stdout.index("\n{") :]) == document
    assert "### Targets (SPEC section 9)" in markdown
    assert "| premix fast (fee 0) |" in markdown
    assert "| premix fast (auto fee) |" in markdown
