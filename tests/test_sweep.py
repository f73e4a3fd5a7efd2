"""Sweeps without servers: the request, the plan, the packing (measured against serialized
transactions, every signer counted) and the ledger run's document."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.ledger import LedgerError, RunRecord, RunStatus
from premix.memory_store import as_server_sees_it
from premix.mixer.packing import PACKET_DATA_SIZE, FeePolicy, PackingError
from premix.mixer.sweep_packing import (
    build_sweep_message,
    max_sweeps_per_transaction,
    pack_sweep,
    sign_sweep,
    sweep_fee_lamports,
    sweep_size,
)
from premix.run_documents import run_from_document, run_to_document
from premix.sweep import SweepJob, keep_refusal, plan_sweep

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_keep_sol_is_exact_defaults_to_zero_and_accepts_both_spellings() -> None:
    assert SweepJob.from_request("u1", 42).keep_lamports == 0
    assert SweepJob.from_request("u1", 42, {"keepSol": "0.002"}).keep_lamports == 2_000_000
    assert SweepJob.from_request("u1", 42, {"keep_sol": 0}).keep_lamports == 0
    assert SweepJob.from_request("u1", 42, {"keepSol": Decimal("1.5")}).to_wire()["keepSol"] == (
        "1.5"
    )
    for bad in (-1, "x", True, "0.0000000001", float("nan")):
        with pytest.raises(ValidationError, match=r"keepSol|keep_sol"):
            SweepJob.from_request("u1", 42, {"keepSol": bad})


def test_a_keep_between_zero_and_rent_exempt_is_refused() -> None:
    assert keep_refusal(0) is None and keep_refusal(890_880) is None
    refusal = keep_refusal(1)
    assert refusal is not None and "rent-exempt minimum of 0.00089088 SOL" in refusal
    assert keep_refusal(890_879) is not None


def test_the_plan_moves_all_but_keep_and_skips_wallets_holding_no_more() -> None:
    assert plan_sweep([10, 0, 5, 7], 0) == [10, 0, 5, 7]
    assert plan_sweep([10, 0, 5, 7], 5) == [5, 0, 0, 2]


def test_nine_transfers_fit_one_sweep_transaction_eight_with_a_priority_fee() -> None:
    funding = Pubkey.new_unique()
    for fees, fit in ((FeePolicy(), 9), (FeePolicy(compute_unit_price=1), 8)):
        assert max_sweeps_per_transaction(fees) == fit
        transfers = [(Pubkey.new_unique(), 2**64 - 1) for _ in range(fit + 1)]
        assert sweep_size(funding, transfers[:fit], fees) <= PACKET_DATA_SIZE
        assert sweep_size(funding, transfers, fees) > PACKET_DATA_SIZE
    groups = pack_sweep(funding, [(Pubkey.new_unique(), 1) for _ in range(73)])
    assert [len(g) for g in groups] == [9] * 8 + [1]
    assert [i for g in groups for i in g] == list(range(73))


def test_a_sweep_transaction_is_signed_by_the_funding_wallet_and_every_source() -> None:
    funding, sources = Keypair(), [Keypair() for _ in range(9)]
    transfers = [(s.pubkey(), 1_000 + i) for i, s in enumerate(sources)]
    message = build_sweep_message(funding.pubkey(), transfers, Hash.new_unique(), FeePolicy())
    signed = sign_sweep(message, funding, sources)
    assert len(bytes(signed)) == sweep_size(funding.pubkey(), transfers, FeePolicy()) == 1183
    assert signed.message.account_keys[0] == funding.pubkey()  # the fee payer
    assert len(signed.signatures) == 10
    signed.verify()
    assert sweep_fee_lamports(9) == 50_000
    with pytest.raises(PackingError, match="1296-byte"):
        build_sweep_message(
            funding.pubkey(), [*transfers, (Pubkey.new_unique(), 1)], Hash.default(), FeePolicy()
        )
    with pytest.raises(PackingError, match="cannot sweep to itself"):
        build_sweep_message(funding.pubkey(), [(funding.pubkey(), 1)], Hash.default(), FeePolicy())


def sweep_run() -> RunRecord:
    return RunRecord("sweep-u1-1", "u1", "sweep", 0, T0, T0, kind="sweep")


def test_a_sweep_plan_names_each_source_and_round_trips_through_bson() -> None:
    run = sweep_run()
    funding, sources = str(Pubkey.new_unique()), [str(Pubkey.new_unique()) for _ in range(2)]
    assert run.set_sweep_plan(funding, sources, [7, 9], [7, 10], now=T0)
    assert not run.set_sweep_plan(funding, sources, [1, 1], [1, 1], now=T0)  # first plan wins
    entry = run.plan[1]
    assert (entry.source, entry.recipient, entry.watched) == (sources[1], funding, sources[1])
    assert entry.expected_balance == 1 and entry.shows_transfer(1) and not entry.shows_transfer(2)
    document = as_server_sees_it(run_to_document(run))
    assert document["kind"] == "sweep" and document["plan"][1]["source"] == sources[1]
    assert run_from_document(document) == run


def test_a_sweep_with_nothing_to_move_is_planned_empty_and_can_complete() -> None:
    run = sweep_run()
    assert run.set_sweep_plan(str(Pubkey.new_unique()), [], [], [], now=T0)
    assert run.planned and run.plan == []
    run.finish(RunStatus.COMPLETED, now=T0)
    with pytest.raises(LedgerError, match="not a sweep"):
        RunRecord("premix-u1-1", "u1", "fast", 1, T0, T0).set_sweep_plan(
            "f", ["s"], [1], [1], now=T0
        )


def test_runs_stored_before_sweeps_read_back_as_premixes() -> None:
    run = RunRecord("premix-u1-1", "u1", "fast", 1, T0, T0)
    run.set_plan([str(Pubkey.new_unique())], [1], now=T0)
    document = run_to_document(run)
    del document["kind"]
    assert "source" not in document["plan"][0]  # a premix's entries keep their shape
    again = run_from_document(as_server_sees_it(document))
    assert (again.kind, again.plan[0].source) == ("premix", None)
