"""A ledger run's stored document: `run_to_document` / `run_from_document` (BSON-safe: str,
int64, datetime, lists, dicts). Derived fields (`state`, `totals`) are stored for readers and
recomputed, never trusted, when read back. Pure: no I/O (`premix.ledger` persists runs)."""

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from premix.documents import Document
from premix.runs import (
    Attempt,
    AttemptState,
    LedgerTransaction,
    PlanEntry,
    RunRecord,
    RunStatus,
    TopUpEntry,
)


def attempt_to_document(attempt: Attempt) -> Document:
    return {
        "signature": attempt.signature,
        "blockhash": attempt.blockhash,
        "last_valid_block_height": attempt.last_valid_block_height,
        "wire": attempt.wire,
        "state": attempt.state.value,
        "error": attempt.error,
        "fee_lamports": attempt.fee_lamports,
        "slot": attempt.slot,
        "signed_at": attempt.signed_at,
        "settled_at": attempt.settled_at,
        "evidence": attempt.evidence,
        "compute_unit_price": attempt.compute_unit_price,
        "priority_fee_lamports": attempt.priority_fee_lamports,
    }


def attempt_from_document(document: Mapping[str, Any]) -> Attempt:
    return Attempt(
        signature=str(document["signature"]),
        blockhash=str(document["blockhash"]),
        last_valid_block_height=int(document["last_valid_block_height"]),
        wire=str(document["wire"]),
        state=AttemptState(document["state"]),
        error=document.get("error"),
        fee_lamports=int(document.get("fee_lamports", 0)),
        slot=document.get("slot"),
        signed_at=_utc(document["signed_at"]),
        settled_at=_utc(document.get("settled_at")),
        evidence=document.get("evidence"),
        compute_unit_price=int(document.get("compute_unit_price", 0)),
        priority_fee_lamports=int(document.get("priority_fee_lamports", 0)),
    )


def run_to_document(record: RunRecord) -> Document:
    """The stored shape of `record`; `state` and `totals` are derived, stored for readers."""
    totals = record.totals
    return {
        "_id": record.run_id,
        "user_id": record.user_id,
        "mode": record.mode,
        "amount_lamports": record.amount_lamports,
        "status": record.status.value,
        "funding": record.funding,
        "plan": [_plan_entry_document(e) for e in record.plan],
        "transactions": [
            {
                "index": tx.index,
                "transfers": list(tx.transfers),
                "state": tx.state.value,
                "attempts": [attempt_to_document(a) for a in tx.attempts],
            }
            for tx in record.transactions
        ],
        "totals": {
            "sent_lamports": totals.sent_lamports,
            "fee_lamports": totals.fee_lamports,
            "transactions": totals.transactions,
        },
        "error": record.error,
        "request": record.request,
        "retry_jobs": list(record.retry_jobs),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "revision": record.revision,
        "top_up": None if record.top_up is None else [asdict(e) for e in record.top_up],
        "kind": record.kind,
    }


def run_from_document(document: Mapping[str, Any]) -> RunRecord:
    """The `RunRecord` stored as `document` (derived fields are recomputed, not trusted)."""
    return RunRecord(
        run_id=str(document["_id"]),
        user_id=str(document["user_id"]),
        mode=str(document["mode"]),
        amount_lamports=int(document["amount_lamports"]),
        created_at=_utc(document["created_at"]),
        updated_at=_utc(document["updated_at"]),
        status=RunStatus(document["status"]),
        funding=document.get("funding"),
        plan=[
            PlanEntry(
                position=int(e["position"]),
                recipient=str(e["recipient"]),
                lamports=int(e["lamports"]),
                balance_before=e.get("balance_before"),
                source=None if (source := e.get("source")) is None else str(source),
            )
            for e in document.get("plan", [])
        ],
        transactions=[
            LedgerTransaction(
                index=int(tx["index"]),
                transfers=[int(p) for p in tx["transfers"]],
                attempts=[attempt_from_document(a) for a in tx.get("attempts", [])],
            )
            for tx in document.get("transactions", [])
        ],
        error=document.get("error"),
        revision=int(document.get("revision", 0)),
        request=document.get("request"),
        retry_jobs=[str(job_id) for job_id in document.get("retry_jobs", [])],
        top_up=None
        if (top_up := document.get("top_up")) is None
        else [_top_up_entry(e) for e in top_up],
        kind=str(document.get("kind", "premix")),  # runs stored before sweeps: premixes
    )


def _plan_entry_document(entry: PlanEntry) -> Document:
    document: Document = {
        "position": entry.position,
        "recipient": entry.recipient,
        "lamports": entry.lamports,
        "balance_before": entry.balance_before,
    }
    if entry.source is not None:  # a sweep's (premix entries keep their earlier shape)
        document["source"] = entry.source
    return document


def _top_up_entry(e: Mapping[str, Any]) -> TopUpEntry:
    position, recipient = int(e["position"]), str(e["recipient"])
    return TopUpEntry(position, recipient, int(e["planned_lamports"]), int(e["held_lamports"]))


def _utc(value: Any) -> Any:
    # BSON drops the timezone unless the client is tz-aware; every stored time is UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
