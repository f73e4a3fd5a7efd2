"""Fault rules for localnet: what goes wrong, for which JSON-RPC method, how often.

A rule names a kind, optionally one JSON-RPC method (None: every method), and when it fires:
on each matching call (default), on the next `count` matching calls, and/or with `probability`
drawn from a `random.Random(seed)` so runs repeat. Rules are switched on and off at run time
from the process that owns the `Localnet`.

Kinds (params):
- `latency` (ms): the HTTP response is delayed by `ms` milliseconds.
- `http_429` (retry_after, seconds, default 1): HTTP 429 with a `Retry-After` header; the
  request is not processed.
- `http_5xx` (status, default 503): that HTTP status; the request is not processed.
- `drop_send`: sendTransaction returns the signature but the transaction never lands.
- `lose_response`: the request is processed (a transaction lands) but the connection is closed
  without a response, so the client sees a connection error.
- `expire_blockhash`: before the request is processed the chain jumps 151 blocks ahead, so every
  blockhash handed out so far has expired (block height > its last valid block height).

HTTP-level kinds (latency, 429, 5xx, lose_response) fire once per HTTP request when any call in
it matches; `drop_send` and `expire_blockhash` fire per JSON-RPC call.
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass
from typing import Any


class FaultKind(enum.Enum):
    LATENCY = "latency"
    HTTP_429 = "http_429"
    HTTP_5XX = "http_5xx"
    DROP_SEND = "drop_send"
    LOSE_RESPONSE = "lose_response"
    EXPIRE_BLOCKHASH = "expire_blockhash"


_PARAMS: dict[FaultKind, dict[str, Any]] = {
    FaultKind.LATENCY: {"ms": None},
    FaultKind.HTTP_429: {"retry_after": 1},
    FaultKind.HTTP_5XX: {"status": 503},
    FaultKind.DROP_SEND: {},
    FaultKind.LOSE_RESPONSE: {},
    FaultKind.EXPIRE_BLOCKHASH: {},
}

# Kinds that only make sense for one method when the rule names none.
_DEFAULT_METHOD: dict[FaultKind, str] = {FaultKind.DROP_SEND: "sendTransaction"}


@dataclass
class FaultRule:
    """One injected fault. `remaining` counts down the calls left (None: unlimited)."""

    kind: FaultKind
    method: str | None
    remaining: int | None
    probability: float | None
    params: dict[str, Any]
    fired: int = 0  # how many times it took effect

    def matches(self, method: str) -> bool:
        return self.method is None or self.method == method

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


class Faults:
    """The active fault rules of one localnet (thread-safe)."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def inject(
        self,
        kind: str | FaultKind,
        method: str | None = None,
        count: int | None = None,
        probability: float | None = None,
        **params: Any,
    ) -> FaultRule:
        """Add a rule and return it (pass it to `remove` to switch it off).

        Raises ValueError for an unknown kind or parameter, a count below 1, or a probability
        outside 0..1.
        """
        fault_kind = FaultKind(kind)
        if count is not None and count < 1:
            raise ValueError("count must be >= 1")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        defaults = _PARAMS[fault_kind]
        unknown = set(params) - set(defaults)
        if unknown:
            raise ValueError(f"unknown parameter(s) for {fault_kind.value}: {sorted(unknown)}")
        merged = {**defaults, **params}
        missing = [name for name, value in merged.items() if value is None]
        if missing:
            raise ValueError(f"{fault_kind.value} needs parameter(s): {missing}")
        if fault_kind is FaultKind.HTTP_5XX and not 500 <= int(merged["status"]) <= 599:
            raise ValueError("http_5xx status must be between 500 and 599")
        rule = FaultRule(
            kind=fault_kind,
            method=method if method is not None else _DEFAULT_METHOD.get(fault_kind),
            remaining=count,
            probability=probability,
            params=merged,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self._rules.clear()

    def take(self, kind: FaultKind, methods: list[str]) -> FaultRule | None:
        """The first rule of `kind` that fires for a request calling `methods`, counted as used."""
        with self._lock:
            for rule in self._rules:
                if rule.kind is not kind or not any(rule.matches(m) for m in methods):
                    continue
                if rule.probability is not None and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.exhausted:
                        self._rules.remove(rule)
                return rule
            return None
