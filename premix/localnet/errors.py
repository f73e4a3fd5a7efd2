"""The JSON-RPC errors localnet answers with: the codes of JSON-RPC 2.0 and of agave's
`rpc-client-api/src/custom_error.rs`, and `RpcError`, the error object a method raises."""

from __future__ import annotations

from typing import Any, Final

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SEND_TRANSACTION_PREFLIGHT_FAILURE: Final = -32002
TRANSACTION_SIGNATURE_VERIFICATION_FAILURE: Final = -32003
MIN_CONTEXT_SLOT_NOT_REACHED: Final = -32016


class RpcError(Exception):
    """A JSON-RPC error object: `{"code", "message", "data"?}`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


def min_context_slot_not_reached(context_slot: int) -> RpcError:
    """Agave's `RpcCustomError::MinContextSlotNotReached`: the bank is at `context_slot`."""
    return RpcError(
        MIN_CONTEXT_SLOT_NOT_REACHED,
        "Minimum context slot has not been reached",
        {"contextSlot": context_slot},
    )
