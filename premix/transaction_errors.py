"""Readable sentences for Solana transaction errors, as premix reports them (pure): a solders
`TransactionErrorType` from getSignatureStatuses, or its JSON form from a preflight failure."""

from typing import Any

from solders.transaction_status import (
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
)

_SYSTEM_ERRORS = {
    0: "account already in use",
    1: "insufficient lamports for the transfer",
    2: "invalid program id",
}
_FIELDLESS = {
    "InsufficientFundsForFee": "insufficient funds for the fee",
    "AccountNotFound": "the paying account does not exist (no SOL)",
    "BlockhashNotFound": "blockhash not found",
}


def describe_transaction_error(error: Any) -> str:
    """A short readable sentence for a transaction error: a solders `TransactionErrorType` (from
    getSignatureStatuses) or its JSON form (from a preflight failure)."""
    if isinstance(error, TransactionErrorInstructionError):
        return _describe_instruction_error(error.index, getattr(error.err, "code", None), error.err)
    if isinstance(error, dict) and "InstructionError" in error:
        index, detail = error["InstructionError"]
        code = detail.get("Custom") if isinstance(detail, dict) else None
        return _describe_instruction_error(index, code, detail)
    if isinstance(error, TransactionErrorInsufficientFundsForRent):
        return _below_rent(error.account_index)
    if isinstance(error, dict) and "InsufficientFundsForRent" in error:
        return _below_rent(error["InsufficientFundsForRent"].get("account_index"))
    name = str(error).rsplit(".", 1)[-1] if not isinstance(error, str) else error
    return _FIELDLESS.get(name, name)


def _below_rent(account_index: object) -> str:
    payer = " (the funding wallet)" if account_index == 0 else ""  # premix's payer is first
    return f"account {account_index}{payer} would be left below the rent-exempt minimum"


def _describe_instruction_error(index: object, custom_code: object, detail: object) -> str:
    if isinstance(custom_code, int):
        reason = _SYSTEM_ERRORS.get(custom_code, f"custom program error {custom_code}")
    else:
        reason = str(detail).rsplit(".", 1)[-1]
    return f"instruction {index} failed: {reason}"
